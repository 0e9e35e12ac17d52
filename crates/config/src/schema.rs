//! The validated config, section by section: what `Config::load` returns.
//!
//! Relative paths are already resolved against the config file's directory and every
//! cross-reference has been checked. No type here holds a secret: credentials say where a
//! password is (a file, an environment variable), never what it is, so `Debug` and
//! `Serialize` are safe to show.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use model::{InstanceAddr, PromotionRule};
use serde::{Deserialize, Serialize};

use crate::serde_util;

/// The shortest allowed `probe.interval`.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The whole of `dbfleet.toml`, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// `strict_permissions`: refuse a secret file (password, credentials, tokens, notifier
    /// secrets) that others may read or write, or its group may write, instead of warning.
    pub strict_permissions: bool,
    /// `[store]`: where dbfleet keeps its state.
    pub store: StoreConfig,
    /// `[api]`: the HTTP API the daemon serves.
    pub api: ApiConfig,
    /// `[probe]`: how often, how patiently and how widely managed servers are probed.
    pub probe: ProbeConfig,
    /// `[credentials.NAME]`: the accounts dbfleet logs in to managed servers with, by name.
    /// Only where each password is kept is recorded here, never the password.
    pub credentials: BTreeMap<String, CredentialsConfig>,
    /// `[node]`: this control-plane node.
    pub node: NodeConfig,
    /// `[[cluster]]`: the clusters dbfleet manages, in file order.
    #[serde(rename = "cluster")]
    pub clusters: Vec<ClusterConfig>,
    /// `[drt]`: scheduled disaster-recovery tests.
    pub drt: DrtConfig,
    /// `[monitor]`: heartbeat lag and the in-memory metrics history.
    pub monitor: MonitorConfig,
    /// `[alert]`: alert rules, notifiers and their queue (docs/ALERTING.md). Secret file
    /// paths are resolved against the config file's directory; the files are read only by
    /// `check_secrets` and when the daemon builds its notifiers.
    pub alert: alert::AlertConfig,
}

/// `[monitor]`: what the watch loop measures besides the probe itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Write a heartbeat row (`dbfleet.heartbeat`) on each cluster's primary every probe
    /// interval and read it in every probe, for replication lag below a second that keeps
    /// growing while replication is stopped. The schema is created on the primary on
    /// demand. Default `true`.
    pub heartbeat: bool,
    /// How much probe history each instance keeps in memory for the API, at probe
    /// resolution (`history / probe.interval` samples of 12 bytes). Default `1h`; at least
    /// `probe.interval`.
    #[serde(with = "serde_util::duration")]
    pub history: Duration,
    /// How long an instance's stored observation may go without being written again while
    /// nothing that matters changed: role, source, threads, errors, a lag class, GTID mode,
    /// semi-sync, reachability. Such a change is written at the round that sees it. The
    /// API serves the watch loop's own fresh observations; the store's copy is what a
    /// restart or another node reads. Default `10s`; `0s` writes every round (costly at
    /// thousands of instances).
    #[serde(with = "serde_util::duration")]
    pub persist_every: Duration,
    /// The heartbeat write's own deadline, apart from the read probe's timeouts: a write on
    /// the primary still waiting after it (or failing) is the evidence of
    /// `PrimaryWritesStalled` / `PrimaryDiskFull`, and the cluster is analysed at once.
    /// Default `500ms`; between `50ms` and `1s`.
    #[serde(with = "serde_util::duration")]
    pub write_timeout: Duration,
    /// A discovered instance (one not declared in `[[cluster.instance]]`) that stays
    /// unreachable this long is forgotten: no longer probed, removed from the store, with an
    /// `instance_forgotten` event (discovery finds it again if it comes back as a replica).
    /// Counted from its first failed probe since the daemon started. Declared instances are
    /// never aged out: removing one from the config forgets it at the next start. Default
    /// `24h`; `0s` never forgets; otherwise at least `probe.interval`.
    #[serde(with = "serde_util::duration")]
    pub forget_unreachable_after: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            heartbeat: true,
            history: Duration::from_secs(3600),
            persist_every: Duration::from_secs(10),
            write_timeout: Duration::from_millis(500),
            forget_unreachable_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl MonitorConfig {
    /// How many samples per instance `history` is at a probe `interval`.
    pub fn history_samples(&self, interval: Duration) -> usize {
        let n = self.history.as_nanos() / interval.as_nanos().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }
}

/// `[drt]`: disaster-recovery tests the daemon runs by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrtConfig {
    /// `[[drt.schedule]]`: game days, in file order.
    pub schedule: Vec<DrtSchedule>,
}

/// `[[drt.schedule]]`: run a scenario on a cluster every so often. Only the leader runs
/// them, one at a time; a run that fails an expectation raises an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrtSchedule {
    /// A built-in scenario's name, or a scenario file (relative to the config's directory).
    pub scenario: String,
    /// The cluster, which must be declared with `drt_allowed = true`.
    pub cluster: String,
    /// How often, e.g. `"168h"` for a weekly game day. At least 1s.
    #[serde(with = "serde_util::duration")]
    pub every: Duration,
    /// The first run this long after the daemon starts. Default: `every`.
    #[serde(with = "serde_util::opt_duration")]
    pub first_after: Option<Duration>,
    /// The local sandbox that holds the cluster: process faults need its processes.
    pub sandbox: String,
    /// The directory that holds sandboxes. Default: dbfleet's default sandbox directory.
    #[serde(serialize_with = "serde_util::opt_path")]
    pub sandbox_dir: Option<PathBuf>,
    /// Overrides the scenario's load duration.
    #[serde(with = "serde_util::opt_duration")]
    pub duration: Option<Duration>,
}

/// `[store]`: dbfleet's own state on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The directory dbfleet keeps its state in. Required. A relative path is resolved
    /// against the config file's directory.
    #[serde(serialize_with = "serde_util::path")]
    pub data_dir: PathBuf,
    /// Where the metadata lives: `sqlite` (the default, one node, a file under `data_dir`)
    /// or `etcd` (several control-plane nodes sharing one etcd cluster).
    #[serde(default)]
    pub backend: StoreBackend,
    /// The etcd endpoints (`http://127.0.0.1:2379`), for `backend = "etcd"`.
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix every dbfleet key in etcd lives under.
    #[serde(default = "default_etcd_prefix")]
    pub etcd_prefix: String,
}

fn default_etcd_prefix() -> String {
    "/dbfleet/".to_string()
}

/// The metadata store backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// SQLite, embedded: one control-plane node.
    #[default]
    Sqlite,
    /// etcd: several control-plane nodes; one leads and acts, all observe.
    Etcd,
}

/// `[node]`: this control-plane node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name, unique among the nodes sharing a store. Defaults to
    /// `HOSTNAME:PORT` of the API listener.
    pub id: Option<String>,
    /// How long the leader lease lasts without renewal; another node takes over after it.
    /// The leader renews it every third of it.
    #[serde(with = "serde_util::duration")]
    pub lease_ttl: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            lease_ttl: Duration::from_secs(3),
        }
    }
}

/// What the control plane does when a cluster's primary dies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverMode {
    /// Fail over at once, within the anti-flapping rules.
    Auto,
    /// Record a proposed failover and page; a human runs `dbfleet failover CLUSTER`.
    #[default]
    Approve,
    /// Alert only.
    Off,
}

impl std::fmt::Display for FailoverMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Off => "off",
        })
    }
}

/// What the control plane does with a fenced former primary that answers again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejoinMode {
    /// Keep it read-only and out; a human runs `dbfleet rejoin CLUSTER HOST:PORT`.
    #[default]
    Manual,
    /// Rejoin it as a replica of the writer when it has no errant GTIDs; one with errant
    /// GTIDs is kept out for a human, as in `manual`.
    Auto,
}

impl std::fmt::Display for RejoinMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Manual => "manual",
            Self::Auto => "auto",
        })
    }
}

/// Whether a failover waits for its `fence_command` (STONITH) before it opens writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FencePolicy {
    /// Run `fence_command` at step `fence_old`, after writes opened, when the old primary
    /// did not answer; a failure is a critical event, not a stop.
    #[default]
    BestEffort,
    /// Run `fence_command` before promotion, always; writes open only if it succeeded,
    /// else the failover ends `needs_human`.
    Required,
}

impl std::fmt::Display for FencePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BestEffort => "best_effort",
            Self::Required => "required",
        })
    }
}

/// What a failover does when a replica it cannot use or read holds (or, by its last
/// observation, held) transactions no usable replica has: acknowledged writes may be lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PossibleLossPolicy {
    /// Do not promote: end `needs_human`, naming the possibly lost GTIDs.
    #[default]
    Page,
    /// Promote the best replica anyway, with a critical `failover_possible_loss` event
    /// naming the possibly lost GTIDs.
    Promote,
}

impl std::fmt::Display for PossibleLossPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Page => "page",
            Self::Promote => "promote",
        })
    }
}

/// What a failover does when it leaves the new primary fewer semi-sync replicas than
/// `min_semi_sync_replicas`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemiSyncShortfallPolicy {
    /// Keep semi-sync on: with no semi-sync replica, writes wait (nothing is acknowledged
    /// without a second copy). A critical `semi_sync_shortfall` event says so.
    #[default]
    Page,
    /// With no semi-sync replica at all, turn semi-sync off on the new primary, so writes
    /// go on without a second copy; a critical `semi_sync_shortfall` event says so.
    Relax,
}

impl std::fmt::Display for SemiSyncShortfallPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Page => "page",
            Self::Relax => "relax",
        })
    }
}

/// What the control plane does when a primary's writes stall (`PrimaryWritesStalled`,
/// `PrimaryDiskFull`) while it still answers reads. Either way it pages at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStallPolicy {
    /// Fail over once the stall has lasted `write_stall_failover_after`, losslessly: the
    /// old primary's clients are killed first, it is fenced (read-only, or `fence_command`
    /// when it cannot be made read-only in time) and semi-sync on it is never relaxed.
    /// Needs `mode = "auto"`; with `approve` a failover is proposed.
    #[default]
    Failover,
    /// Page only.
    Page,
}

impl std::fmt::Display for WriteStallPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Failover => "failover",
            Self::Page => "page",
        })
    }
}

/// `[cluster.failover]`: the cluster's failover policy and hooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// `auto`, `approve` (the default) or `off`.
    pub mode: FailoverMode,
    /// After an automatic failover, no other automatic failover of this cluster runs for
    /// this long, unless a human runs `dbfleet recoveries ack CLUSTER`.
    #[serde(with = "serde_util::duration")]
    pub block_window: Duration,
    /// How long replicas may take to apply their relay logs before the candidate is chosen.
    #[serde(with = "serde_util::duration")]
    pub relay_apply_timeout: Duration,
    /// How long a preferred candidate may take to catch up from the most advanced replica.
    #[serde(with = "serde_util::duration")]
    pub catch_up_timeout: Duration,
    /// How long a switchover waits for its target to catch up, with writes blocked, before
    /// it rolls back.
    #[serde(with = "serde_util::duration")]
    pub switchover_catch_up_timeout: Duration,
    /// Shell commands (`sh -c`) run before promotion; one that fails or times out stops the
    /// failover before anything changed. Environment: see docs/HOOKS.md.
    pub pre_failover: Vec<String>,
    /// Shell commands run after the new primary is writable; a failure is an alert, not a
    /// rollback.
    pub post_failover: Vec<String>,
    /// How long one hook may run before it is killed.
    #[serde(with = "serde_util::duration")]
    pub hook_timeout: Duration,
    /// `manual` (the default) or `auto`: whether a fenced former primary that answers
    /// again, with no errant GTIDs, is rejoined as a replica without a human.
    pub rejoin: RejoinMode,
    /// With `rejoin = "auto"`: how many automatic rejoins of one instance are tried
    /// before it is left to a human.
    pub rejoin_attempts: u32,
    /// With `rejoin = "auto"`: the wait between two automatic rejoins of one instance.
    #[serde(with = "serde_util::duration")]
    pub rejoin_retry: Duration,
    /// The longest one SQL statement of a failover step may take before the step goes on
    /// without it. A statement that stops replication keeps running on its server (a
    /// replica's IO thread stuck on a frozen primary takes up to 2 s to stop; it receives
    /// nothing more once asked). Also the deadline of each attempt to reach the old primary
    /// while the failover runs.
    #[serde(with = "serde_util::duration")]
    pub statement_timeout: Duration,
    /// STONITH: a shell command (`sh -c`) that makes sure the old primary cannot accept
    /// writes (power it off, cut it off at a firewall or cloud API). Same environment as the
    /// hooks (docs/HOOKS.md), with `DBFLEET_PHASE=fence`. Default: none.
    pub fence_command: Option<String>,
    /// `best_effort` (default): `fence_command` runs at step `fence_old` when the old
    /// primary did not answer, and a failure is a critical event. `required`: it runs before
    /// promotion, and writes open only if it succeeded.
    pub fence: FencePolicy,
    /// `page` (default) or `promote`: what a failover does when a replica it cannot use or
    /// read may hold acknowledged writes no usable replica has.
    pub on_possible_loss: PossibleLossPolicy,
    /// With `semi_sync = true`: how many semi-sync replicas the new primary needs after a
    /// failover; fewer is a shortfall. Default 1.
    pub min_semi_sync_replicas: u32,
    /// `page` (default) or `relax`: what a failover that leaves fewer semi-sync replicas
    /// than `min_semi_sync_replicas` does.
    pub semi_sync_shortfall: SemiSyncShortfallPolicy,
    /// With `mode = "auto"`: the wait before an automatic failover that was refused, or
    /// failed before promotion, is tried again while the primary stays dead. It doubles
    /// after each attempt up to `retry_backoff_max`. Default `1s`; at least `100ms`.
    #[serde(with = "serde_util::duration")]
    pub retry_backoff: Duration,
    /// The longest wait between two attempts of an automatic failover. Default `30s`; at
    /// least `retry_backoff`, at most `1h`.
    #[serde(with = "serde_util::duration")]
    pub retry_backoff_max: Duration,
    /// `failover` (default) or `page`: what to do when the primary answers reads but its
    /// writes stall (a frozen or full disk). Pages at once either way.
    pub on_write_stall: WriteStallPolicy,
    /// With `on_write_stall = "failover"`: how long writes must have been stalled (as the
    /// heartbeat write measures it) before the failover starts; a shorter stall only pages.
    /// Default `5s`; between `1s` and `1h`.
    #[serde(with = "serde_util::duration")]
    pub write_stall_failover_after: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            mode: FailoverMode::default(),
            block_window: Duration::from_secs(3600),
            relay_apply_timeout: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(5),
            switchover_catch_up_timeout: Duration::from_secs(5),
            pre_failover: Vec::new(),
            post_failover: Vec::new(),
            hook_timeout: Duration::from_secs(10),
            rejoin: RejoinMode::default(),
            rejoin_attempts: 3,
            rejoin_retry: Duration::from_secs(30),
            statement_timeout: Duration::from_millis(250),
            fence_command: None,
            fence: FencePolicy::default(),
            on_possible_loss: PossibleLossPolicy::default(),
            min_semi_sync_replicas: 1,
            semi_sync_shortfall: SemiSyncShortfallPolicy::default(),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(30),
            on_write_stall: WriteStallPolicy::default(),
            write_stall_failover_after: Duration::from_secs(5),
        }
    }
}

/// `[cluster.haproxy]`: the HAProxy in front of the cluster that dbfleet tells at once when
/// a failover or switchover moves the primary (the push; the route checks are the pull).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxyConfig {
    /// HAProxy's Runtime API: the `stats socket … level admin` of its config, a Unix
    /// socket path (relative to the config file's directory) or `HOST:PORT`. Default:
    /// none, no push.
    pub runtime_api: Option<String>,
    /// How long one Runtime API command may take. Default `1s`.
    #[serde(with = "serde_util::duration")]
    pub timeout: Duration,
}

impl Default for HaproxyConfig {
    fn default() -> Self {
        Self {
            runtime_api: None,
            timeout: Duration::from_secs(1),
        }
    }
}

/// `[cluster.detection]`: how a primary's death is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// How long every direct replica's received stream (events and heartbeats: its
    /// `Slave_received_heartbeats`, `Gtid_IO_Pos`, `Read_Master_Log_Pos`) must have been
    /// silent, beyond one heartbeat period, to confirm that an unreachable primary is dead
    /// while the replicas' IO threads still say `Yes`: a frozen primary, or one whose
    /// packets are dropped, is then confirmed without waiting for `slave_net_timeout`. A
    /// freeze shorter than this never confirms a death. Needs the replicas' heartbeat
    /// period (`MASTER_HEARTBEAT_PERIOD`, 500 ms when dbfleet repoints them) well below it.
    /// Default `1.5s`; `0s` turns this off; otherwise between `1s` and `1h`.
    #[serde(with = "serde_util::duration")]
    pub stall_confirm: Duration,
    /// `DiskSpaceLow` (warning) when an instance's datadir filesystem has less than this
    /// percentage of its space available, read through MariaDB's `disks` plugin
    /// (`INSTALL SONAME 'disks'`; the account needs the `FILE` privilege). Default `10`;
    /// `0` turns the warning off.
    pub disk_free_warning_percent: u32,
    /// `DiskSpaceLow` becomes an error below this percentage. Default `5`; at most
    /// `disk_free_warning_percent`.
    pub disk_free_error_percent: u32,
    /// `ReplicaWritesStalled` when a replica's applied position has not moved for this long
    /// while it has received more than it applied (both threads may say `Yes`). Default
    /// `10s`; `0s` turns it off.
    #[serde(with = "serde_util::duration")]
    pub apply_stall: Duration,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        let storage = model::StorageSpec::default();
        Self {
            stall_confirm: model::DEFAULT_STALL_CONFIRM,
            disk_free_warning_percent: storage.disk_free_warning_permille / 10,
            disk_free_error_percent: storage.disk_free_error_permille / 10,
            apply_stall: storage.apply_stall,
        }
    }
}

/// `[api]`: the daemon's HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The IP address and port the API listens on. Default `127.0.0.1:7070`.
    #[serde(with = "serde_util::listen")]
    pub listen: SocketAddr,
    /// A file of API tokens, one per line; blank lines and lines starting with `#` are
    /// ignored. Mutating calls need one of these tokens; without the file they are refused.
    /// Read when the daemon starts (see `ApiConfig::load_tokens`). A relative path is resolved
    /// against the config file's directory. Default: none.
    #[serde(
        serialize_with = "serde_util::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub tokens_file: Option<PathBuf>,
    /// Whether read-only calls need a token too. Needs `tokens_file`. Default `false`.
    pub require_token_for_reads: bool,
    /// The most API connections served at once; more wait in the accept queue. Default 256;
    /// at least 1. The daemon lowers it at start-up when its file-descriptor limit cannot
    /// hold it beside the descriptors kept for probes (docs/API.md#connections).
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, and may stay idle between
    /// requests, before it is closed. Default `10s`; above zero.
    #[serde(with = "serde_util::duration")]
    pub header_timeout: Duration,
    /// PEM file of the API's TLS certificate (chain): with `tls_key_file`, the API serves
    /// HTTPS only (rustls). Re-read when a SIGHUP restarts the daemon. Default: none.
    #[serde(
        serialize_with = "serde_util::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of that certificate's private key (a secret file).
    #[serde(
        serialize_with = "serde_util::opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Whether plain HTTP may listen on an address other than loopback. Default `false`:
    /// such a config is refused, since tokens would cross the network in clear.
    pub allow_plaintext: bool,
}

impl ApiConfig {
    /// Whether the API serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7070)),
            tokens_file: None,
            require_token_for_reads: false,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            tls_cert_file: None,
            tls_key_file: None,
            allow_plaintext: false,
        }
    }
}

/// `[probe]`: how managed servers are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// How often every instance is probed. Default `1s`; at least `50ms`.
    #[serde(with = "serde_util::duration")]
    pub interval: Duration,
    /// The longest a connect plus handshake may take before the probe counts as failed.
    /// Default `500ms`.
    #[serde(with = "serde_util::duration")]
    pub connect_timeout: Duration,
    /// The longest one probe query may take. Default `500ms`.
    #[serde(with = "serde_util::duration")]
    pub query_timeout: Duration,
    /// How many probes may run at once, across all clusters, at least. Default `256`; at
    /// least 1. The watch loop allows `max(concurrency, instances / 2)`, raised as discovery
    /// adds instances (`monitor::watch::probe_permits`).
    pub concurrency: usize,
    /// How often the topology is crawled again from the declared instances, to find
    /// replicas that were added or moved. Default `10s`; at least `interval`.
    #[serde(with = "serde_util::duration")]
    pub discovery_interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(500),
            query_timeout: Duration::from_millis(500),
            concurrency: 256,
            discovery_interval: Duration::from_secs(10),
        }
    }
}

/// `[credentials.NAME]`: where one account's user name and password come from. The password
/// is read only when the credentials are resolved (`Config::resolve_credentials`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CredentialsConfig {
    /// `credentials_file = "…"`: a TOML file holding `user = "…"` and `password = "…"`, the
    /// format `dbfleet probe --credentials` reads and a sandbox writes as `admin.toml`.
    File {
        /// The file, resolved against the config file's directory.
        #[serde(serialize_with = "serde_util::path")]
        credentials_file: PathBuf,
    },
    /// `user = "…"` plus one of `password_file` or `password_env`.
    User {
        /// The account name.
        user: String,
        /// Where the password is.
        #[serde(flatten)]
        password: PasswordSource,
    },
}

/// Where a password is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordSource {
    /// `password_file = "…"`: a file holding only the password. Trailing line breaks are
    /// dropped. Resolved against the config file's directory.
    PasswordFile(#[serde(serialize_with = "serde_util::path")] PathBuf),
    /// `password_env = "…"`: the name of an environment variable holding the password.
    PasswordEnv(String),
}

/// `[[cluster]]`: one replication cluster dbfleet manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterConfig {
    /// The cluster's name, unique in the file: 1 to 64 letters, digits, `-`, `_` or `.`.
    pub name: String,
    /// The name of the `[credentials.NAME]` entry dbfleet logs in to this cluster's
    /// instances with.
    pub credentials: String,
    /// How many replicas the primary should have. Default: the number of declared instances
    /// minus one. It may exceed that, since discovery can find undeclared replicas.
    pub expected_replicas: usize,
    /// Whether semi-sync replication should be on. Default `false`.
    pub semi_sync: bool,
    /// Replication lag above which a replica counts as lagging. Default `10s`.
    #[serde(with = "serde_util::duration")]
    pub max_lag: Duration,
    /// Whether disaster-recovery tests may break this cluster on purpose (`dbfleet drt
    /// run`, scheduled DRTs). Default `false`: a DRT refuses the cluster.
    pub drt_allowed: bool,
    /// The `[credentials]` entry replicas use to replicate (`CHANGE MASTER ... MASTER_USER`)
    /// when failover or switchover repoints them. Without it, those operations refuse.
    pub replication_credentials: Option<String>,
    /// TLS to its servers (`tls`, `tls_ca_file`, `tls_cert_file`, `tls_key_file`): every
    /// connection dbfleet makes over TCP, and the replication a failover or switchover
    /// sets up (`MASTER_SSL`).
    #[serde(flatten)]
    pub tls: model::TlsSettings,
    /// `[cluster.failover]`: the failover policy and hooks.
    pub failover: FailoverConfig,
    /// `[cluster.detection]`: how a primary's death is confirmed.
    pub detection: DetectionConfig,
    /// `[cluster.haproxy]`: the proxy a primary change is pushed to.
    pub haproxy: HaproxyConfig,
    /// `[[cluster.instance]]`: the instances the operator declares; discovery starts from
    /// them. At least one.
    #[serde(rename = "instance")]
    pub instances: Vec<InstanceConfig>,
}

/// `[[cluster.instance]]`: one declared instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceConfig {
    /// Its `host:port`; unique across all clusters.
    pub addr: InstanceAddr,
    /// Whether failover may promote it: `prefer`, `neutral` or `must_not`. Default
    /// `neutral`.
    pub promotion: PromotionRule,
    /// The site (data centre, zone) the instance is in; failover prefers a candidate in
    /// the dead primary's site.
    pub site: Option<String>,
}

impl ClusterConfig {
    /// The cluster as a `model::ClusterSpec`.
    pub fn spec(&self) -> model::ClusterSpec {
        model::ClusterSpec {
            name: self.name.clone(),
            instances: self
                .instances
                .iter()
                .map(|i| model::InstanceSpec {
                    addr: i.addr.clone(),
                    promotion: i.promotion,
                    site: i.site.clone(),
                })
                .collect(),
            expected_replicas: self.expected_replicas,
            semi_sync: self.semi_sync,
            max_lag: self.max_lag,
            stall_confirm: self.detection.stall_confirm,
            storage: model::StorageSpec {
                disk_free_warning_permille: self.detection.disk_free_warning_percent * 10,
                disk_free_error_permille: self.detection.disk_free_error_percent * 10,
                apply_stall: self.detection.apply_stall,
            },
        }
    }
}
