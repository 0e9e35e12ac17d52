//! `Sandbox`: make, start, stop, kill and remove a local replication set.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{ClusterSpec, InstanceAddr, InstanceSpec, PromotionRule};
use nix::sys::signal::Signal;
use probe::{ChangeSource, Credentials, ProbeOptions, Session};
use serde::{Deserialize, Serialize};

use crate::binaries::Binaries;
use crate::manifest::{Manifest, Member, Role, MANIFEST_FILE};
use crate::process;

/// How long a server may take to accept connections after launch.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replica may take to catch up during `up`.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// The replicas' `MASTER_HEARTBEAT_PERIOD`: a primary sends a heartbeat after this long
/// without events, so a replica whose stream is silent for longer has lost it (see
/// `model::stream`). dbfleet's operations set the same when they repoint replicas.
pub const HEARTBEAT_PERIOD: Duration = probe::HEARTBEAT_PERIOD;
/// How long a SIGTERM shutdown may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Errors of sandbox commands, each worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A MariaDB program is not installed.
    #[error(
        "{program} not found in PATH or /usr/sbin: install the Debian packages \
         mariadb-server, mariadb-client and mariadb-backup \
         (apt-get install -y mariadb-server mariadb-client mariadb-backup)"
    )]
    MissingProgram {
        /// The program looked for.
        program: String,
    },
    /// A port the sandbox needs is taken by another process.
    #[error(
        "port {port} on {host} is already in use by another process: choose another \
         --base-port, or stop what listens there"
    )]
    PortInUse {
        /// The loopback address.
        host: String,
        /// The port.
        port: u16,
    },
    /// No sandbox of that name exists.
    #[error("no sandbox named {name:?} in {root}")]
    NotFound {
        /// The name asked for.
        name: String,
        /// The directory searched.
        root: PathBuf,
    },
    /// The sandbox has no member of that name.
    #[error("sandbox {sandbox:?} has no member {member:?}; its members are {members}")]
    NoSuchMember {
        /// The sandbox.
        sandbox: String,
        /// The member asked for.
        member: String,
        /// The members it has, comma separated.
        members: String,
    },
    /// Bad input on the command line.
    #[error("{0}")]
    Invalid(String),
    /// A server failed to start; the error log's tail is attached.
    #[error("{member} did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    StartFailed {
        /// The member.
        member: String,
        /// What was seen.
        reason: String,
        /// The error log path.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// Any other failure, with context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// The default directory that holds sandboxes: `$DBFLEET_SANDBOX_DIR`, else
/// `$XDG_DATA_HOME/dbfleet/sandboxes`, else `~/.local/share/dbfleet/sandboxes`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("DBFLEET_SANDBOX_DIR") {
        return PathBuf::from(d);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    data.join("dbfleet/sandboxes")
}

/// Options of `sandbox up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The sandbox name: letters, digits, `-` and `_`.
    pub name: String,
    /// The number of replicas beside the primary.
    pub replicas: usize,
    /// Switch semi-sync on (AFTER_SYNC).
    pub semi_sync: bool,
    /// The primary's port; member `i` listens on `base_port + i`.
    pub base_port: u16,
    /// The directory that holds sandboxes.
    pub root: PathBuf,
    /// Server settings beyond the defaults.
    pub tuning: Tuning,
}

/// Server settings of a sandbox that tests and benches change. Kept in the manifest, so a
/// member restarted later gets the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// `slave_net_timeout` in seconds: how long a replica's IO thread waits on a silent
    /// source before it reconnects. Default 4 (MariaDB's own default is 60).
    pub slave_net_timeout_s: u32,
    /// With semi-sync: `rpl_semi_sync_master_timeout` in milliseconds. Default lossless
    /// ([`model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS`], with `rpl_semi_sync_master_wait_no_slave=ON`):
    /// a primary never acknowledges a commit that no replica has. A test that needs the
    /// fallback to async sets a short one.
    pub semi_sync_timeout_ms: u64,
    /// Each member's datadir on a loop-mounted ext4 filesystem of its own of this many MiB
    /// (`sandbox up --loop-datadirs`), which the disk-fault DR tests freeze and fill; 0 (the
    /// default): plain directories. Needs root and free loop devices (see
    /// [`crate::loopfs`]).
    pub loop_datadir_mb: u32,
    /// TLS everywhere (`sandbox up --tls`): a CA and a server certificate made by the
    /// sandbox (`DIR/tls`), every member with `require_secure_transport=ON` (no plain TCP
    /// connection, replication included), and accounts that connect with
    /// `verify_identity` against that CA.
    pub tls: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            slave_net_timeout_s: 4,
            semi_sync_timeout_ms: model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS,
            loop_datadir_mb: 0,
            tls: false,
        }
    }
}

/// What `up` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpOutcome {
    /// A new sandbox was made and started.
    Created,
    /// It existed; members that were down were started.
    Started,
    /// It existed and every member ran.
    AlreadyRunning,
}

/// Accounts made on every member. Stored in the sandbox directory, mode 0600.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSet {
    /// The control plane's account: all privileges.
    pub admin: Account,
    /// The replication account.
    pub repl: Account,
    /// An application account: DML on the `app` schema only, so `read_only` stops it.
    pub app: Account,
}

/// A user and password, and the TLS its connections use (a `--tls` sandbox).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// TLS of its connections; `None`: plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<model::TlsSettings>,
}

impl Account {
    /// As probe credentials.
    pub fn credentials(&self) -> Credentials {
        let c = Credentials::new(&self.user, &self.password);
        match &self.tls {
            Some(t) => c.with_tls(t.clone()),
            None => c,
        }
    }
}

/// The state of one member, for `sandbox status`.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// Member name.
    pub name: String,
    /// Its address.
    pub addr: InstanceAddr,
    /// Its role when the sandbox was made.
    pub initial_role: Role,
    /// Its `server_id`.
    pub server_id: u32,
    /// Whether its process runs.
    pub running: bool,
    /// Its PID, when it runs.
    pub pid: Option<i32>,
    /// Its directory, which holds the datadir and `error.log`.
    pub dir: PathBuf,
}

/// A sandbox found on disk.
#[derive(Clone, Debug)]
pub struct Sandbox {
    dir: PathBuf,
    manifest: Manifest,
}

fn credentials_path(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

impl Sandbox {
    /// Open the sandbox `name` under `root`.
    pub fn open(root: &Path, name: &str) -> Result<Self> {
        validate_name(name)?;
        let dir = root.join(name);
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SandboxError::NotFound {
                    name: name.to_string(),
                    root: root.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("read {}", path.display()))
                    .into())
            }
        };
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a sandbox manifest: {e}", path.display()))?;
        Ok(Self { dir, manifest })
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The sandbox as a cluster to watch: every member with neutral promotion, all but one
    /// expected as replicas, the sandbox's semi-sync, a 10 s lag threshold, no
    /// `DiskSpaceLow` thresholds.
    pub fn cluster_spec(&self) -> ClusterSpec {
        let members = &self.manifest.members;
        ClusterSpec {
            name: self.manifest.name.clone(),
            instances: members
                .iter()
                .map(|m| InstanceSpec {
                    addr: m.addr(),
                    promotion: PromotionRule::Neutral,
                    site: None,
                })
                .collect(),
            expected_replicas: members.len().saturating_sub(1),
            semi_sync: self.manifest.semi_sync,
            max_lag: Duration::from_secs(10),
            stall_confirm: model::DEFAULT_STALL_CONFIRM,
            // No DiskSpaceLow: a sandbox's datadirs share the host's disk (unless on loop
            // filesystems), whose free space says nothing about the cluster and would open
            // a problem on every member of every test sandbox on a full build machine. A
            // full disk is still `PrimaryDiskFull` (`is_full`).
            storage: model::StorageSpec {
                disk_free_warning_permille: 0,
                disk_free_error_permille: 0,
                ..Default::default()
            },
        }
    }

    /// The accounts made on every member.
    pub fn credentials(&self) -> Result<CredentialSet> {
        let path = credentials_path(&self.dir);
        let text = fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is malformed: {e}", path.display()))?)
    }

    /// The path of a member's credentials file for `dbfleet probe --credentials`.
    pub fn admin_credentials_file(&self) -> PathBuf {
        self.dir.join("admin.toml")
    }

    /// The replication account's credentials file (`user`, `password`), for the
    /// `[credentials.repl]` entry failover and switchover use to repoint replicas.
    pub fn repl_credentials_file(&self) -> PathBuf {
        self.dir.join("repl.toml")
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Result<&Member> {
        self.manifest
            .members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| SandboxError::NoSuchMember {
                sandbox: self.manifest.name.clone(),
                member: name.to_string(),
                members: self
                    .manifest
                    .members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The member that was made primary.
    pub fn initial_primary(&self) -> &Member {
        self.manifest
            .members
            .iter()
            .find(|m| m.role == Role::Primary)
            .unwrap_or(&self.manifest.members[0])
    }

    fn pid(&self, m: &Member) -> Option<i32> {
        process::running_pid(
            &m.dir(&self.dir).join("mariadbd.pid"),
            &m.datadir(&self.dir),
        )
    }

    /// Every member's state.
    pub fn status(&self) -> Vec<MemberStatus> {
        self.manifest
            .members
            .iter()
            .map(|m| {
                let pid = self.pid(m);
                MemberStatus {
                    name: m.name.clone(),
                    addr: m.addr(),
                    initial_role: m.role,
                    server_id: m.server_id,
                    running: pid.is_some(),
                    pid,
                    dir: m.dir(&self.dir),
                }
            })
            .collect()
    }

    /// Make and start a sandbox, or start the members of an existing one that are down.
    pub async fn up(opts: &UpOptions) -> Result<(Self, UpOutcome)> {
        validate_name(&opts.name)?;
        if opts.replicas > 9 {
            return Err(SandboxError::Invalid(format!(
                "--replicas {} is too many for a sandbox: at most 9",
                opts.replicas
            )));
        }
        let bins = Binaries::find()?;
        match Self::open(&opts.root, &opts.name) {
            Ok(sb) => {
                let outcome = sb.start_all(&bins).await?;
                Ok((sb, outcome))
            }
            Err(SandboxError::NotFound { .. }) => {
                let sb = Self::create(opts, &bins).await?;
                Ok((sb, UpOutcome::Created))
            }
            Err(e) => Err(e),
        }
    }

    async fn create(opts: &UpOptions, bins: &Binaries) -> Result<Self> {
        let count = opts.replicas + 1;
        let last = u32::from(opts.base_port) + count as u32 - 1;
        if opts.base_port < 1024 || last > u32::from(u16::MAX) {
            return Err(SandboxError::Invalid(format!(
                "--base-port {} does not leave room for {count} members between 1024 and 65535",
                opts.base_port
            )));
        }
        let members: Vec<Member> = (0..count)
            .map(|i| Member {
                name: format!("m{}", i + 1),
                host: "127.0.0.1".to_string(),
                port: opts.base_port + i as u16,
                server_id: i as u32 + 1,
                role: if i == 0 { Role::Primary } else { Role::Replica },
            })
            .collect();
        for m in &members {
            ensure_port_free(&m.host, m.port)?;
        }
        let dir = opts.root.join(&opts.name);
        if dir.exists() {
            return Err(SandboxError::Invalid(format!(
                "{} exists but holds no sandbox manifest: remove it or choose another --name",
                dir.display()
            )));
        }
        let manifest = Manifest {
            name: opts.name.clone(),
            semi_sync: opts.semi_sync,
            tuning: opts.tuning,
            members,
        };
        let sb = Self { dir, manifest };
        match sb.build(bins).await {
            Ok(()) => Ok(sb),
            Err(e) => {
                // Leave nothing half made behind: a retry of `up` must start clean.
                crate::loopfs::thaw_under(&sb.dir);
                sb.kill_all();
                crate::loopfs::release_under(&sb.dir);
                let _ = fs::remove_dir_all(&sb.dir);
                Err(e)
            }
        }
    }

    async fn build(&self, bins: &Binaries) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", self.dir.display()))?;
        let tls = if self.manifest.tuning.tls {
            let host = &self.manifest.members[0].host;
            let ip = host.parse().map_err(|_| {
                SandboxError::Invalid(format!("--tls needs members on an IP address, not {host}"))
            })?;
            crate::tls::make(&self.dir, ip)?;
            Some(model::TlsSettings {
                mode: model::TlsMode::VerifyIdentity,
                ca_file: Some(crate::tls::ca_file(&self.dir)),
                cert_file: None,
                key_file: None,
            })
        } else {
            None
        };
        let creds = CredentialSet {
            admin: Account {
                user: "dbfleet".into(),
                password: random_password()?,
                tls: tls.clone(),
            },
            repl: Account {
                user: "repl".into(),
                password: random_password()?,
                tls: tls.clone(),
            },
            app: Account {
                user: "app".into(),
                password: random_password()?,
                tls,
            },
        };
        write_private(
            &credentials_path(&self.dir),
            &serde_json::to_string_pretty(&creds).map_err(anyhow::Error::new)?,
        )?;
        write_private(
            &self.admin_credentials_file(),
            &format!(
                "# dbfleet credentials file: the sandbox's admin account\nuser = {:?}\npassword = {:?}\n",
                creds.admin.user, creds.admin.password
            ),
        )?;
        write_private(
            &self.repl_credentials_file(),
            &format!(
                "# dbfleet credentials file: the sandbox's replication account\nuser = {:?}\npassword = {:?}\n",
                creds.repl.user, creds.repl.password
            ),
        )?;
        write_private(
            &self.dir.join(MANIFEST_FILE),
            &serde_json::to_string_pretty(&self.manifest).map_err(anyhow::Error::new)?,
        )?;

        let inits = self
            .manifest
            .members
            .iter()
            .map(|m| self.init_datadir(bins, m));
        for r in futures_join_all(inits).await {
            r?;
        }
        let starts = self
            .manifest
            .members
            .iter()
            .map(|m| self.start_member(bins, m, true));
        for r in futures_join_all(starts).await {
            r?;
        }
        let boots = self
            .manifest
            .members
            .iter()
            .map(|m| self.bootstrap(m, &creds));
        for r in futures_join_all(boots).await {
            r?;
        }
        let primary = self.initial_primary().clone();
        let mut psess = self.root_session(&primary).await?;
        // One binlogged write, so that every replica proves it replicates.
        psess
            .exec("create app schema", "CREATE DATABASE IF NOT EXISTS app")
            .await
            .map_err(|e| anyhow::anyhow!("{}: create app schema: {e}", primary.name))?;
        for m in self
            .manifest
            .members
            .iter()
            .filter(|m| m.role == Role::Replica)
        {
            let mut s = self.root_session(m).await?;
            s.change_source(&ChangeSource {
                source: &primary.addr(),
                creds: &creds.repl.credentials(),
                connect_retry_s: 1,
                heartbeat: HEARTBEAT_PERIOD,
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}: change master: {e}", m.name))?;
            s.exec("start slave", "START SLAVE")
                .await
                .map_err(|e| anyhow::anyhow!("{}: start slave: {e}", m.name))?;
            s.close().await;
        }
        self.wait_replicating().await?;
        if self.manifest.semi_sync {
            psess
                .exec(
                    "enable semi-sync",
                    "SET GLOBAL rpl_semi_sync_master_enabled=ON",
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: enable semi-sync: {e}", primary.name))?;
        }
        psess.close().await;
        Ok(())
    }

    /// Start every member that is down, then wait until every replica replicates.
    async fn start_all(&self, bins: &Binaries) -> Result<UpOutcome> {
        let down: Vec<&Member> = self
            .manifest
            .members
            .iter()
            .filter(|m| self.pid(m).is_none())
            .collect();
        for m in &down {
            ensure_port_free(&m.host, m.port)?;
        }
        let mut boots = Vec::new();
        for m in &down {
            boots.push(self.safe_boot(m, false).await.0);
        }
        let starts = down
            .iter()
            .zip(boots)
            .map(|(m, boot)| self.start_member_with(bins, m, boot));
        for r in futures_join_all(starts).await {
            r?;
        }
        self.wait_replicating().await?;
        Ok(if down.is_empty() {
            UpOutcome::AlreadyRunning
        } else {
            UpOutcome::Started
        })
    }

    /// Wait until every running initial replica has both threads running and has applied
    /// the initial primary's binlog position.
    pub async fn wait_replicating(&self) -> Result<()> {
        let primary = self.initial_primary().clone();
        if self.pid(&primary).is_none() {
            return Ok(());
        }
        let mut psess = self.root_session(&primary).await?;
        let rows = psess
            .query_rows("binlog pos", "SELECT @@gtid_binlog_pos AS pos")
            .await
            .map_err(|e| anyhow::anyhow!("{}: read gtid_binlog_pos: {e}", primary.name))?;
        psess.close().await;
        let pos = rows
            .first()
            .and_then(|r| r.get("pos").cloned().flatten())
            .unwrap_or_default();
        for m in self
            .manifest
            .members
            .iter()
            .filter(|m| m.role == Role::Replica)
        {
            if self.pid(m).is_none() {
                continue;
            }
            let mut s = self.root_session(m).await?;
            let deadline = Instant::now() + CATCH_UP_TIMEOUT;
            loop {
                let caught_up = s
                    .wait_for_gtid(&pos, Duration::from_millis(500))
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: wait for {pos}: {e}", m.name))?;
                let rows = s
                    .query_rows("slave status", "SHOW SLAVE STATUS")
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: show slave status: {e}", m.name))?;
                let status = rows.first().map(probe::parse::replication_status);
                let healthy = matches!(&status, Some(Ok(Some(r))) if r.is_healthy());
                if caught_up && healthy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!(
                        "{} does not replicate from {} after {:?}: {:?}",
                        m.name,
                        primary.name,
                        CATCH_UP_TIMEOUT,
                        status
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            s.close().await;
        }
        Ok(())
    }

    async fn init_datadir(&self, bins: &Binaries, m: &Member) -> Result<()> {
        let mdir = m.dir(&self.dir);
        let tmp = mdir.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| anyhow::anyhow!("create {}: {e}", tmp.display()))?;
        let mb = self.manifest.tuning.loop_datadir_mb;
        if mb > 0 {
            // Kept mounted: `down` (or a test's guard) unmounts it.
            crate::loopfs::LoopFs::create(
                &m.name,
                &mdir.join(crate::loopfs::IMAGE_FILE),
                &m.datadir(&self.dir),
                u64::from(mb) * 1024 * 1024,
            )
            .map_err(|e| anyhow::anyhow!("{}: datadir on a loop filesystem: {e}", m.name))?
            .keep();
        }
        let mut cmd = tokio::process::Command::new(&bins.install_db);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", m.datadir(&self.dir).display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve")
            .arg("--innodb-log-file-size=8M")
            // Parallel bootstraps collide on temporary table names in a shared /tmp.
            .arg(format!("--tmpdir={}", tmp.display()))
            .stdin(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("run {}: {e}", bins.install_db.display()))?;
        if !out.status.success() {
            return Err(SandboxError::StartFailed {
                member: m.name.clone(),
                reason: format!("mariadb-install-db exited with {}", out.status),
                log: "mariadb-install-db output".into(),
                tail: tail_text(&String::from_utf8_lossy(&out.stderr), 20),
            });
        }
        Ok(())
    }

    /// The server's command line. `first_boot` leaves semi-sync off on the primary: its first
    /// write would otherwise wait for acks from replicas that are not attached yet.
    fn server_args(&self, m: &Member, boot: Boot) -> Vec<String> {
        let Boot {
            first: first_boot,
            read_only,
            as_replica,
            skip_slave_start,
        } = boot;
        let d = m.dir(&self.dir);
        let data = m.datadir(&self.dir);
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", m.socket(&self.dir).display()),
            format!("--tmpdir={}", d.join("tmp").display()),
            format!("--port={}", m.port),
            format!("--bind-address={}", m.host),
            format!("--pid-file={}", d.join("mariadbd.pid").display()),
            format!("--log-error={}", d.join("error.log").display()),
            format!("--server-id={}", m.server_id),
            format!("--log-bin={}", data.join("binlog").display()),
            format!("--relay-log={}", data.join("relay").display()),
            "--log-slave-updates".into(),
            "--binlog-format=ROW".into(),
            "--gtid-strict-mode=1".into(),
            "--sync-binlog=1".into(),
            "--innodb-flush-log-at-trx-commit=1".into(),
            format!(
                "--slave-net-timeout={}",
                self.manifest.tuning.slave_net_timeout_s
            ),
            format!("--report-host={}", m.host),
            format!("--report-port={}", m.port),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=16M".into(),
            "--innodb-log-file-size=8M".into(),
            "--performance-schema=OFF".into(),
            "--max-connections=300".into(),
        ];
        if is_root() {
            args.push("--user=root".into());
        }
        if m.role == Role::Replica || read_only {
            args.push("--read-only=ON".into());
        }
        if skip_slave_start {
            args.push("--skip-slave-start".into());
        }
        if as_replica {
            // Crash recovery as a replica: a transaction prepared in the engine but never
            // committed (semi-sync AFTER_SYNC, killed waiting for the ack that would have
            // let it answer its client) is rolled back and cut from the binlog, instead of
            // committed and left as an errant GTID. MariaDB 10.6.18/10.11.8 and later.
            args.push("--init-rpl-role=SLAVE".into());
        }
        if self.manifest.tuning.tls {
            let (cert, key) = crate::tls::server_files(&self.dir);
            args.push(format!(
                "--ssl-ca={}",
                crate::tls::ca_file(&self.dir).display()
            ));
            args.push(format!("--ssl-cert={}", cert.display()));
            args.push(format!("--ssl-key={}", key.display()));
            args.push("--require-secure-transport=ON".into());
        }
        if self.manifest.semi_sync {
            args.push("--rpl-semi-sync-slave-enabled=ON".into());
            args.push("--rpl-semi-sync-master-wait-point=AFTER_SYNC".into());
            args.push(format!(
                "--rpl-semi-sync-master-timeout={}",
                self.manifest.tuning.semi_sync_timeout_ms
            ));
            args.push("--rpl-semi-sync-master-wait-no-slave=ON".into());
            if m.role == Role::Primary && !first_boot {
                args.push("--rpl-semi-sync-master-enabled=ON".into());
            }
        }
        args
    }

    /// Launch a member's server detached from this process, and wait until it accepts
    /// connections.
    async fn start_member(&self, bins: &Binaries, m: &Member, first_boot: bool) -> Result<()> {
        let boot = Boot {
            first: first_boot,
            ..Boot::default()
        };
        self.start_member_with(bins, m, boot).await
    }

    async fn start_member_with(&self, bins: &Binaries, m: &Member, boot: Boot) -> Result<()> {
        self.ensure_loop_datadir(m)?;
        let d = m.dir(&self.dir);
        let log = d.join("error.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("stdout.log"))
            .map_err(|e| anyhow::anyhow!("open {}: {e}", d.join("stdout.log").display()))?;
        let err = out.try_clone().map_err(anyhow::Error::new)?;
        let mut child = Command::new(&bins.mariadbd)
            .args(self.server_args(m, boot))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C at the terminal that ran `up` must not stop it.
            .process_group(0)
            .spawn()
            .map_err(|e| anyhow::anyhow!("run {}: {e}", bins.mariadbd.display()))?;
        let creds = root_credentials();
        let socket = m.socket(&self.dir).display().to_string();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SandboxError::StartFailed {
                    member: m.name.clone(),
                    reason: format!("mariadbd exited with {status}"),
                    log: log.display().to_string(),
                    tail: start_errors(&log, 15),
                });
            }
            if let Ok(s) = Session::connect_socket(&socket, &creds, quick()).await {
                s.close().await;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(SandboxError::StartFailed {
                    member: m.name.clone(),
                    reason: format!("no connection after {READY_TIMEOUT:?}"),
                    log: log.display().to_string(),
                    tail: tail_file(&log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// With loop datadirs: mount the member's image on its datadir again when it is not
    /// mounted (after a reboot), so the server never starts on an empty directory.
    fn ensure_loop_datadir(&self, m: &Member) -> Result<()> {
        if self.manifest.tuning.loop_datadir_mb == 0 {
            return Ok(());
        }
        let found = crate::loopfs::LoopFs::find(self, &m.name)
            .map_err(|e| anyhow::anyhow!("{}: find its loop filesystem: {e}", m.name))?;
        if found.is_none() {
            let image = m.dir(&self.dir).join(crate::loopfs::IMAGE_FILE);
            crate::loopfs::LoopFs::remount(&m.name, &image, &m.datadir(&self.dir))
                .map_err(|e| anyhow::anyhow!("{}: mount its loop filesystem again: {e}", m.name))?
                .keep();
        }
        Ok(())
    }

    async fn bootstrap(&self, m: &Member, creds: &CredentialSet) -> Result<()> {
        let mut s = self.root_session(m).await?;
        let q = |a: &Account| {
            format!(
                "'{}'@'127.0.0.1' IDENTIFIED BY '{}'",
                probe::sql_escape(&a.user),
                probe::sql_escape(&a.password)
            )
        };
        let mut sql = vec![
            "SET sql_log_bin=0".to_string(),
            format!("CREATE USER {}", q(&creds.admin)),
            format!(
                "GRANT ALL PRIVILEGES ON *.* TO '{}'@'127.0.0.1' WITH GRANT OPTION",
                creds.admin.user
            ),
            format!("CREATE USER {}", q(&creds.repl)),
            format!(
                "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SLAVE MONITOR ON *.* TO '{}'@'127.0.0.1'",
                creds.repl.user
            ),
            format!("CREATE USER {}", q(&creds.app)),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON `app`.* TO '{}'@'127.0.0.1'",
                creds.app.user
            ),
            "SET sql_log_bin=1".to_string(),
            "RESET MASTER".to_string(),
        ];
        if m.role == Role::Replica {
            sql.push("SET GLOBAL gtid_slave_pos=''".into());
        }
        s.exec("bootstrap accounts", &sql.join(";\n"))
            .await
            .map_err(|e| anyhow::anyhow!("{}: create accounts: {e}", m.name))?;
        // Free space per member through SQL (`information_schema.DISKS`): dbfleet names
        // `DiskSpaceLow` and a full disk with it. Optional: a server without the plugin's
        // library works on, with no disk data.
        if let Err(e) = s
            .exec("install disks plugin", "INSTALL SONAME 'disks'")
            .await
        {
            tracing::debug!(member = %m.name, error = %e, "disks plugin not installed");
        }
        s.close().await;
        Ok(())
    }

    async fn root_session(&self, m: &Member) -> Result<Session> {
        let socket = m.socket(&self.dir).display().to_string();
        // Setup statements (account bootstrap, CHANGE MASTER) can take seconds on a busy
        // machine: give them more than a probe's timeouts.
        let opts = ProbeOptions {
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(15),
        };
        Session::connect_socket(&socket, &root_credentials(), opts)
            .await
            .map_err(|e| anyhow::anyhow!("{}: connect as root over {socket}: {e}", m.name).into())
    }

    /// Start a stopped member and wait until it accepts connections. A running member is
    /// left alone.
    ///
    /// *Invariant*: this never makes a second writable primary. A replica comes up
    /// read-only, and so does the sandbox's first primary when another member is writable
    /// now (a failover happened while it was down) or cannot be asked. It comes up
    /// writable only when every other running member answers `read_only = 1`, which puts
    /// back the set `up` made.
    pub async fn start(&self, member: &str) -> Result<Started> {
        Ok(match self.start_by(member, StartRule::Safe).await? {
            None => Started::AlreadyRunning,
            Some((boot, why)) if boot.read_only => Started::ReadOnly { why },
            Some(_) => Started::Writable,
        })
    }

    /// Start `member` if it is stopped, booted as `rule` says, and wait until it accepts
    /// connections. `None` when it already ran; else how it booted and why a primary was
    /// kept read-only.
    async fn start_by(&self, member: &str, rule: StartRule) -> Result<Option<(Boot, Vec<String>)>> {
        let m = self.member(member)?.clone();
        if self.pid(&m).is_some() {
            return Ok(None);
        }
        ensure_port_free(&m.host, m.port)?;
        let (boot, why) = match rule {
            StartRule::Safe => self.safe_boot(&m, false).await,
            StartRule::ReadOnly => self.safe_boot(&m, true).await,
            StartRule::ReadOnlyReplicationStopped => {
                let (mut boot, why) = self.safe_boot(&m, true).await;
                boot.skip_slave_start = true;
                (boot, why)
            }
            StartRule::AsConfigured => (Boot::default(), Vec::new()),
        };
        self.start_member_with(&Binaries::find()?, &m, boot).await?;
        Ok(Some((boot, why)))
    }

    /// How to boot `m` so that it is never a second writable primary (see
    /// [`Sandbox::start`]), and why a primary is kept read-only. A member boots as a
    /// replica (`--init-rpl-role=SLAVE`) whenever another member is writable, so that a
    /// former primary does not keep a write it never acknowledged as an errant transaction.
    async fn safe_boot(&self, m: &Member, read_only: bool) -> (Boot, Vec<String>) {
        let others = self.others_writable(&m.name).await;
        let boot = Boot {
            first: false,
            read_only: read_only
                || m.role == Role::Replica
                || !others.writable.is_empty()
                || !others.unanswered.is_empty(),
            // Whatever its first role: a replica promoted by a failover and then killed is
            // a former primary too.
            as_replica: !others.writable.is_empty(),
            skip_slave_start: false,
        };
        if m.role == Role::Replica {
            return (boot, Vec::new());
        }
        let why = others
            .writable
            .iter()
            .map(|n| format!("{n} is writable"))
            .chain(others.unanswered.iter().cloned())
            .collect();
        (boot, why)
    }

    /// [`Sandbox::start`] with the member's command line as its manifest role says, as a
    /// production server whose configuration still names it primary would come back: a
    /// former primary returns writable. Tests of fencing use it; nothing else should.
    pub async fn start_as_configured(&self, member: &str) -> Result<bool> {
        Ok(self
            .start_by(member, StartRule::AsConfigured)
            .await?
            .is_some())
    }

    /// The running members other than `except` that are writable, and those that could
    /// not be asked (with the reason): either keeps a starting primary read-only.
    async fn others_writable(&self, except: &str) -> Others {
        let mut found = Others::default();
        for m in &self.manifest.members {
            if m.name == except || self.pid(m).is_none() {
                continue;
            }
            let answer = match self.root_session(m).await {
                Ok(mut s) => {
                    let rows = s.query_rows("read_only", "SELECT @@read_only AS ro").await;
                    s.close().await;
                    rows.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(rows) if first_value(&rows, "ro") == Some("1") => {}
                Ok(_) => found.writable.push(m.name.clone()),
                Err(e) => found
                    .unanswered
                    .push(format!("{} did not answer ({e})", m.name)),
            }
        }
        found
    }

    /// [`Sandbox::start`], but the server comes up with `read_only=ON` whatever its role, as a
    /// production server configured to start read-only does: a crashed primary that returns
    /// takes no writes until the control plane decides. Disaster-recovery tests restart
    /// killed members this way. A former primary another member has replaced boots as a
    /// replica, as in [`Sandbox::start`].
    pub async fn start_read_only(&self, member: &str) -> Result<bool> {
        Ok(self.start_by(member, StartRule::ReadOnly).await?.is_some())
    }

    /// Start a stopped member the way docs/HA.md tells operators to start a replica that
    /// crashed: read-only, with `skip_slave_start`, so that the relay log it had not
    /// applied survives (any `START SLAVE` in GTID mode deletes it); then `START SLAVE`
    /// only when its source answers. A replica of a dead source is left with replication
    /// stopped, for the control plane's failover to apply its relay log (SQL thread only).
    /// `None` when it ran already; else whether replication was started, and why not.
    pub async fn start_replica_as_recommended(
        &self,
        member: &str,
    ) -> Result<Option<Result<(), String>>> {
        if self
            .start_by(member, StartRule::ReadOnlyReplicationStopped)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let m = self.member(member)?.clone();
        let mut s = self.root_session(&m).await?;
        let rows = s.query_rows("replica status", "SHOW SLAVE STATUS").await;
        let source = match &rows {
            Ok(rows) => first_value(rows, "Master_Host")
                .zip(first_value(rows, "Master_Port"))
                .map(|(h, p)| format!("{h}:{p}")),
            Err(e) => {
                s.close().await;
                return Ok(Some(Err(format!("read its replica status: {e}"))));
            }
        };
        let Some(source) = source else {
            s.close().await;
            return Ok(Some(Err("it is not a replica".into())));
        };
        let alive = match self
            .manifest
            .members
            .iter()
            .find(|o| o.addr().to_string() == source)
        {
            Some(o) if self.pid(o).is_some() => match self.root_session(o).await {
                Ok(t) => {
                    t.close().await;
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        let out = if alive {
            s.exec("start slave", "START SLAVE")
                .await
                .map_err(|e| format!("START SLAVE: {e}"))
        } else {
            Err(format!(
                "its source {source} does not run: replication left stopped, relay log kept"
            ))
        };
        s.close().await;
        Ok(Some(out))
    }

    /// Stop a member with SIGTERM (SIGKILL after a grace period). Returns whether it ran.
    pub fn stop(&self, member: &str) -> Result<bool> {
        let m = self.member(member)?;
        Ok(match self.pid(m) {
            Some(pid) => {
                process::terminate(pid, &m.datadir(&self.dir), STOP_GRACE);
                true
            }
            None => false,
        })
    }

    /// SIGKILL a member, as a crash would. Returns whether it ran.
    pub fn kill(&self, member: &str) -> Result<bool> {
        let m = self.member(member)?;
        Ok(match self.pid(m) {
            Some(pid) => {
                process::signal_and_wait(
                    pid,
                    &m.datadir(&self.dir),
                    Signal::SIGKILL,
                    Duration::from_secs(10),
                );
                true
            }
            None => false,
        })
    }

    /// SIGKILL every member, and the HAProxy in front of them. Used when `up` fails half way
    /// and by test guards.
    pub fn kill_all(&self) {
        crate::haproxy::stop(&self.dir, Duration::ZERO);
        for m in &self.manifest.members {
            if let Some(pid) = self.pid(m) {
                process::signal_and_wait(
                    pid,
                    &m.datadir(&self.dir),
                    Signal::SIGKILL,
                    Duration::from_secs(10),
                );
            }
        }
    }

    /// Stop every member and remove the directory. Returns whether the sandbox existed.
    pub fn down(root: &Path, name: &str) -> Result<bool> {
        let sb = match Self::open(root, name) {
            Ok(sb) => sb,
            Err(SandboxError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // A member's datadir on a loop filesystem (disk-fault DR tests) left frozen by an
        // interrupted run would hang the stop: thaw it first, unmount it after.
        crate::loopfs::thaw_under(&sb.dir);
        // The proxy first: no client is routed to a member that is stopping.
        crate::haproxy::stop(&sb.dir, STOP_GRACE);
        for m in &sb.manifest.members {
            if let Some(pid) = sb.pid(m) {
                process::terminate(pid, &m.datadir(&sb.dir), STOP_GRACE);
            }
            let sock = m.socket(&sb.dir);
            if !sock.starts_with(&sb.dir) {
                let _ = fs::remove_file(sock);
            }
        }
        crate::loopfs::release_under(&sb.dir);
        fs::remove_dir_all(&sb.dir)
            .map_err(|e| anyhow::anyhow!("remove {}: {e}", sb.dir.display()))?;
        Ok(true)
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Invalid(format!(
            "sandbox name {name:?} is not valid: use 1 to 40 letters, digits, '-' or '_'"
        )))
    }
}

fn ensure_port_free(host: &str, port: u16) -> Result<()> {
    TcpListener::bind((host, port))
        .map(drop)
        .map_err(|_| SandboxError::PortInUse {
            host: host.to_string(),
            port,
        })
}

fn root_credentials() -> Credentials {
    Credentials::new("root", "")
}

fn quick() -> ProbeOptions {
    ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_millis(500),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn random_password() -> Result<String> {
    let mut buf = [0u8; 16];
    let mut f =
        fs::File::open("/dev/urandom").map_err(|e| anyhow::anyhow!("open /dev/urandom: {e}"))?;
    std::io::Read::read_exact(&mut f, &mut buf)
        .map_err(|e| anyhow::anyhow!("read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("chmod {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("write {}: {e}", path.display()))?;
    Ok(())
}

fn tail_text(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a failed start wrote: the `[ERROR]`, assertion and signal lines of the last start
/// in the error log (a crash report ends in resource limits and kernel details, so its tail
/// alone does not say why), then its last `n` lines.
fn start_errors(path: &Path, n: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return tail_file(path, n);
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("[Note] Starting MariaDB"))
        .unwrap_or(0);
    let errors: Vec<&str> = lines[start..]
        .iter()
        .filter(|l| {
            l.contains("[ERROR]")
                || l.contains("Assertion")
                || l.contains("got signal")
                || l.contains("InnoDB: Failing")
        })
        .take(n)
        .copied()
        .collect();
    let tail = tail_text(&text, n);
    if errors.is_empty() {
        tail
    } else {
        format!("{}\n--- … ---\n{tail}", errors.join("\n"))
    }
}

fn tail_file(path: &Path, n: usize) -> String {
    fs::read_to_string(path)
        .map(|t| tail_text(&t, n))
        .unwrap_or_else(|e| format!("(cannot read: {e})"))
}

/// Run futures concurrently on this task and collect their results in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// How [`Sandbox::start`] brought a member up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// Its process already ran; nothing was done.
    AlreadyRunning,
    /// Writable: the sandbox's first primary, with every other member read-only.
    Writable,
    /// Read-only: a replica, or a primary kept read-only for the reasons given (another
    /// member is writable, or did not answer).
    ReadOnly {
        /// Why a primary was kept read-only; empty for a replica.
        why: Vec<String>,
    },
}

impl Started {
    /// Whether a process was started.
    pub fn started(&self) -> bool {
        !matches!(self, Self::AlreadyRunning)
    }
}

/// The first row's `column`, when it is there and not NULL.
fn first_value<'a>(rows: &'a [probe::parse::RowMap], column: &str) -> Option<&'a str> {
    rows.first()?.get(column)?.as_deref()
}

/// Which boot a stopped member gets from [`Sandbox::start_by`].
#[derive(Clone, Copy, Debug)]
enum StartRule {
    /// Never a second writable primary ([`Sandbox::safe_boot`]).
    Safe,
    /// As `Safe`, and read-only whatever its role.
    ReadOnly,
    /// As its manifest role says: a former primary returns writable.
    AsConfigured,
    /// As `ReadOnly`, with replication left stopped (`--skip-slave-start`).
    ReadOnlyReplicationStopped,
}

/// How a member's server is started.
#[derive(Clone, Copy, Debug, Default)]
struct Boot {
    /// The set's first boot: semi-sync stays off on the primary until replicas attach.
    first: bool,
    /// `read_only=ON` whatever the member's role (a replica is always read-only).
    read_only: bool,
    /// Crash recovery as a replica (`--init-rpl-role=SLAVE`).
    as_replica: bool,
    /// `--skip-slave-start`: replication stays stopped until someone starts it, and the
    /// relay log it had not applied is kept (see [`Sandbox::start_replica_as_recommended`]).
    skip_slave_start: bool,
}

/// What the other running members said when asked for `@@read_only`.
#[derive(Debug, Default)]
struct Others {
    /// Names of the writable ones.
    writable: Vec<String>,
    /// Those that did not answer, with the reason.
    unanswered: Vec<String>,
}
