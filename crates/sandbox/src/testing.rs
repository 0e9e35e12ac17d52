//! Test support: a guard that kills a sandbox's servers when a test ends, even by panic, and
//! a sandbox made for one test in a temporary directory under that guard.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use model::InstanceAddr;
use probe::Credentials;

use crate::{Sandbox, Tuning, UpOptions};

/// Kills every server of the sandbox `name` under `root` on drop, by PID, and removes the
/// directory. When the test panicked, the directory is kept and its path printed, so the
/// servers' error logs can be read.
#[derive(Debug)]
pub struct SandboxGuard {
    root: PathBuf,
    name: String,
}

impl SandboxGuard {
    /// Guard the sandbox `name` under `root` (it need not exist yet).
    pub fn new(root: &Path, name: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            name: name.to_string(),
        }
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let Ok(sb) = Sandbox::open(&self.root, &self.name) else {
            return;
        };
        // A frozen filesystem would keep the kill from completing: thaw first, then detach.
        crate::loopfs::thaw_under(sb.dir());
        sb.kill_all();
        crate::loopfs::release_under(sb.dir());
        if std::thread::panicking() {
            eprintln!(
                "sandbox {} kept for inspection at {} (servers killed)",
                self.name,
                sb.dir().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(sb.dir());
        }
    }
}

/// A sandbox for one test: made in a temporary directory, its servers killed and the directory
/// removed when it is dropped (kept, with the path printed, when the test panicked).
pub struct TestSandbox {
    sb: Sandbox,
    _guard: SandboxGuard,
    root: Option<tempfile::TempDir>,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        // The guard (dropped after this) kills the servers; on a panic the directory stays.
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                let _ = root.keep();
            }
        }
    }
}

impl TestSandbox {
    /// Make and start the sandbox `name`: a primary on `base_port` and `replicas` replicas
    /// on the ports after it, no semi-sync. Panics when it cannot, as a test would.
    pub async fn up(name: &str, replicas: usize, base_port: u16) -> Self {
        Self::up_with(name, replicas, base_port, false).await
    }

    /// [`TestSandbox::up`], with semi-sync replication on or off.
    pub async fn up_with(name: &str, replicas: usize, base_port: u16, semi_sync: bool) -> Self {
        Self::up_tuned(name, replicas, base_port, semi_sync, Tuning::default()).await
    }

    /// [`TestSandbox::up_with`], with server settings beyond the defaults (e.g. MariaDB's
    /// default `slave_net_timeout` of 60 s, or a semi-sync timeout that falls back).
    pub async fn up_tuned(
        name: &str,
        replicas: usize,
        base_port: u16,
        semi_sync: bool,
        tuning: Tuning,
    ) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("dbfleet-test-{name}-"))
            .tempdir()
            .expect("tempdir");
        let guard = SandboxGuard::new(root.path(), name);
        let up = UpOptions {
            name: name.into(),
            replicas,
            semi_sync,
            base_port,
            root: root.path().to_path_buf(),
            tuning,
        };
        // The sandbox bootstraps accounts under a 1 s statement timeout, which a machine
        // busy with other builds sometimes misses; a failed `up` removes what it made, so it
        // can be run again.
        let mut attempt = 1;
        let sb = loop {
            match Sandbox::up(&up).await {
                Ok((sb, _)) => break sb,
                Err(e) if attempt < 3 => {
                    eprintln!("sandbox {name} up, attempt {attempt}: {e:#}");
                    attempt += 1;
                }
                Err(e) => panic!("sandbox {name} up: {e:#}"),
            }
        };
        Self {
            sb,
            _guard: guard,
            root: Some(root),
        }
    }

    /// The address of member `name` (`m1` is the first primary).
    pub fn addr(&self, member: &str) -> InstanceAddr {
        self.sb.member(member).expect("member").addr()
    }

    /// The admin account.
    pub fn admin(&self) -> Credentials {
        self.sb
            .credentials()
            .expect("credentials")
            .admin
            .credentials()
    }
}

impl Deref for TestSandbox {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

/// A member frozen with SIGSTOP, as a hung VM or process is; SIGCONT when dropped, even
/// when the test panics.
pub struct Frozen {
    pid: i32,
    member: String,
    /// When the SIGSTOP was sent.
    pub at: std::time::Instant,
    /// The same, in ms since the Unix epoch (the time base of observations and rounds).
    pub at_unix_ms: u64,
}

impl Frozen {
    /// SIGSTOP `member` of `sb`. Panics when it cannot, as a test would.
    pub fn freeze(sb: &Sandbox, member: &str) -> Self {
        Self::try_freeze(sb, member).unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGSTOP `member` of `sb`, or say why not.
    pub fn try_freeze(sb: &Sandbox, member: &str) -> Result<Self, String> {
        let pid = sb
            .status()
            .into_iter()
            .find(|m| m.name == member)
            .and_then(|m| m.pid)
            .ok_or_else(|| format!("{member} does not run"))?;
        let at_unix_ms = model::clock::now_ms();
        let at = std::time::Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .map_err(|e| format!("SIGSTOP {member} (pid {pid}): {e}"))?;
        Ok(Self {
            pid,
            member: member.to_string(),
            at,
            at_unix_ms,
        })
    }

    /// SIGCONT now (also done on drop).
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGCONT,
        ) {
            eprintln!("SIGCONT {} (pid {}): {e}", self.member, self.pid);
        }
    }
}

/// Whether this machine can run a disk-fault test (root, the tools, a free loop device; see
/// [`crate::loopfs::available`]). When it cannot, the test fails with the reason, unless
/// `DBFLEET_DISK_FAULTS=skip` is set: then this prints `SKIPPED <test>: <reason>` and returns
/// `false`, and the test returns at once. `scripts/test.sh` leaves the `disk_fault` tests out
/// of the run (nextest counts them as skipped) and prints the reason when the machine
/// cannot run them, so a test never passes without running.
pub fn disk_faults_available(test: &str) -> bool {
    match crate::loopfs::available() {
        Ok(()) => true,
        Err(e) if std::env::var("DBFLEET_DISK_FAULTS").as_deref() == Ok("skip") => {
            eprintln!("SKIPPED {test}: {e}");
            false
        }
        Err(e) => panic!(
            "{test} needs a loop-mounted filesystem: {e} (set DBFLEET_DISK_FAULTS=skip to \
             skip it, or run scripts/test.sh, which leaves it out and says why)"
        ),
    }
}
