//! `Observation`: what one probe saw on one server at one moment.
//!
//! "Unknown" is explicit: a value the server did not report is `None`, and an unreachable
//! server carries a typed [`ProbeFailure`] instead of a zeroed state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::addr::InstanceAddr;
use crate::gtid::{MariadbBinlogState, MariadbGtidList, MysqlGtidSet};

/// One probe of one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The server probed.
    pub addr: InstanceAddr,
    /// When the probe started, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// How long the probe took, in microseconds, connect included.
    pub duration_us: u64,
    /// What the probe found.
    #[serde(flatten)]
    pub reachability: Reachability,
    /// What dbfleet's own heartbeat write on this server did lately, when dbfleet writes
    /// there (the primary the last analysis named). Attached by the watch loop from the
    /// heartbeat writer, which runs apart from the read probe: also on an observation whose
    /// probe timed out. `None` where dbfleet does not write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteProbe>,
}

/// The heartbeat write's recent history on one server, as of one observation: whether
/// writes complete there. A server whose reads answer while this write hangs or fails has
/// stalled writes (a frozen or full disk, a global read lock).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteProbe {
    /// The write's own deadline, in milliseconds: a write still waiting after it counts as
    /// timed out.
    pub deadline_ms: u64,
    /// How long before this observation the last write that completed ended; `None` when
    /// none completed since the writer started on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ok_ms: Option<u64>,
    /// How long the write in flight had been waiting at this observation; `None` when no
    /// write was in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_ms: Option<u64>,
    /// Attempts in a row that timed out or failed since the last one that completed.
    #[serde(default)]
    pub failures: u32,
    /// The last attempt that timed out or failed since the last one that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<WriteFailure>,
    /// Earlier writes that hung and were abandoned (their connection killed and dropped),
    /// whose server threads were still there when last checked: a frozen disk keeps them
    /// until it thaws. The writer starts no new write while [`MAX_HUNG_WRITES`] are.
    #[serde(default)]
    pub hung: u32,
}

/// How many abandoned heartbeat writes may hang on one server before the writer stops
/// starting new ones (each holds a connection on the server until its disk thaws).
pub const MAX_HUNG_WRITES: u32 = 2;

/// How one heartbeat write failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFailure {
    /// The server's error number; `None` for a timeout or a network error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Whether the write ran past its deadline.
    pub timed_out: bool,
    /// The error, for humans. Never holds credentials.
    pub message: String,
}

/// `ENOSPC`, as MariaDB reports it (`Errcode: 28`, `Got error 28`).
pub const ERR_NO_SPACE: u16 = 28;
/// `ER_DISK_FULL` (1021): "Disk full (%s); waiting for someone to free some space...".
pub const ER_DISK_FULL: u16 = 1021;

impl WriteFailure {
    /// Whether the failure says the disk is full: error 28 or 1021, or a message naming
    /// `ENOSPC` (MariaDB wraps it, e.g. error 3 `Error writing file ... (Errcode: 28 "No
    /// space left on device")`).
    pub fn disk_full(&self) -> bool {
        if matches!(self.code, Some(ERR_NO_SPACE | ER_DISK_FULL)) {
            return true;
        }
        let m = self.message.to_ascii_lowercase();
        m.contains("no space left")
            || m.contains("errcode: 28")
            || m.contains("errno: 28")
            || m.contains("error 28 ")
            || m.ends_with("error 28")
            || m.contains("disk full")
    }
}

impl WriteProbe {
    /// How long writes have not completed, when they are stalled: the write in flight is
    /// past its deadline, or the last attempt timed out or failed. The figure is the time
    /// since the last write that completed, or, when none did, since the write in flight
    /// started (at least the deadline). `None` while writes complete.
    pub fn stalled_ms(&self) -> Option<u64> {
        let pending = self.pending_ms.filter(|&p| p >= self.deadline_ms);
        if pending.is_none() && self.failures == 0 {
            return None;
        }
        Some(
            self.since_ok_ms
                .or(pending)
                .unwrap_or(self.deadline_ms)
                .max(pending.unwrap_or(0)),
        )
    }

    /// Whether the last failure says the disk is full.
    pub fn disk_full_error(&self) -> bool {
        self.failures > 0
            && self
                .last_error
                .as_ref()
                .is_some_and(WriteFailure::disk_full)
    }
}

/// Free space on the filesystem of a server's datadir, from MariaDB's `disks` plugin
/// (`information_schema.DISKS`, installed with `INSTALL SONAME 'disks'`; reading it needs
/// the `FILE` privilege).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// `@@datadir`.
    pub datadir: String,
    /// The mount point that holds it (`DISKS.Path`, the longest that is a prefix).
    pub path: String,
    /// The device (`DISKS.Disk`).
    pub disk: String,
    /// `DISKS.Total`, in bytes.
    pub total_bytes: u64,
    /// `DISKS.Used`, in bytes.
    pub used_bytes: u64,
    /// `DISKS.Available`, in bytes: what an unprivileged user may still write (the
    /// filesystem's reserved blocks left out).
    pub available_bytes: u64,
    /// When it was read, in ms since the Unix epoch (it is read less often than the probe).
    pub read_at_ms: u64,
}

/// Below this many bytes available, a filesystem counts as full.
pub const DISK_FULL_BYTES: u64 = 1 << 20;

impl DiskSpace {
    /// `available / total`; `None` for a filesystem of size 0.
    pub fn free_ratio(&self) -> Option<f64> {
        (self.total_bytes > 0).then(|| self.available_bytes as f64 / self.total_bytes as f64)
    }

    /// Whether it is full: less than [`DISK_FULL_BYTES`] available.
    pub fn is_full(&self) -> bool {
        self.total_bytes > 0 && self.available_bytes < DISK_FULL_BYTES
    }
}

/// Either the server answered, or the probe failed in a named way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reachable", content = "state")]
pub enum Reachability {
    /// The server answered every query of the probe.
    #[serde(rename = "yes")]
    Reachable(Box<ServerState>),
    /// The probe could not complete.
    #[serde(rename = "no")]
    Unreachable(ProbeFailure),
}

impl Observation {
    /// The server state, when the server answered.
    pub fn state(&self) -> Option<&ServerState> {
        match &self.reachability {
            Reachability::Reachable(s) => Some(s),
            Reachability::Unreachable(_) => None,
        }
    }

    /// The failure, when the server did not answer.
    pub fn failure(&self) -> Option<&ProbeFailure> {
        match &self.reachability {
            Reachability::Reachable(_) => None,
            Reachability::Unreachable(f) => Some(f),
        }
    }
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailure {
    /// The kind, which callers branch on.
    pub kind: ProbeFailureKind,
    /// The error text, for humans. Never holds credentials.
    pub message: String,
    /// The failing call ran on a connection opened for this probe: the connect and the
    /// login succeeded, so the server runs and the network carries its packets (a query
    /// that then times out hangs inside the server, e.g. behind a frozen disk). False for a
    /// kept connection, whose timeout may be a cut link.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_connection: bool,
}

impl ProbeFailure {
    /// A failure of `kind` with `message`, not known to be on a fresh connection.
    pub fn new(kind: ProbeFailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            fresh_connection: false,
        }
    }

    /// A query (not the connect) that timed out on a connection opened for this probe.
    pub fn hung_on_fresh_connection(&self) -> bool {
        self.kind == ProbeFailureKind::Timeout
            && self.fresh_connection
            && !self.message.starts_with("connect")
    }
}

/// The kinds of probe failure. Holistic dead-primary detection treats them differently: a
/// refusal is a strong sign of death, a timeout may be a pause or a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeFailureKind {
    /// The TCP connection was refused: nothing listens on the port.
    Refused,
    /// A connect or a query did not finish within its timeout.
    Timeout,
    /// The server rejected the credentials or lacks a privilege the probe needs.
    Auth,
    /// Anything else: a reset connection, an unexpected reply, a server error.
    Other,
}

impl fmt::Display for ProbeFailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::Other => "other",
        })
    }
}

/// The server family, which decides the SQL dialect and GTID format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// MariaDB: `domain-server-seq` GTIDs, `SHOW SLAVE STATUS`, built-in semi-sync.
    Mariadb,
    /// Oracle MySQL: `uuid:1-5` GTID sets, `SHOW REPLICA STATUS` from 8.0.22.
    Mysql,
}

impl Flavor {
    /// The flavor a `@@version` string names: MariaDB puts "MariaDB" in it.
    pub fn from_version(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Self::Mariadb
        } else {
            Self::Mysql
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mariadb => "MariaDB",
            Self::Mysql => "MySQL",
        })
    }
}

/// What a reachable server reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerState {
    /// MariaDB or MySQL.
    pub flavor: Flavor,
    /// `@@version`, e.g. `10.11.6-MariaDB-0+deb12u1`.
    pub version: String,
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@read_only`.
    pub read_only: bool,
    /// `@@log_bin`: whether the server writes a binlog, which a promotable server needs.
    pub log_bin: bool,
    /// `@@log_slave_updates` (`log_replica_updates`).
    pub log_replica_updates: bool,
    /// The replication this server runs as a replica, or `None` when it replicates from no
    /// one (no source configured).
    pub replication: Option<ReplicationStatus>,
    /// Every GTID position the server reports.
    pub gtid: GtidState,
    /// Semi-synchronous replication settings and status.
    pub semi_sync: SemiSyncState,
    /// `Uptime`, in seconds.
    pub uptime_s: u64,
    /// `Threads_connected`.
    pub threads_connected: u64,
    /// `Threads_running`.
    pub threads_running: u64,
    /// Counters and gauges for monitoring, and the heartbeat row; `None` in observations
    /// stored before they were collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<crate::metrics::InstanceMetrics>,
    /// Free space on the datadir's filesystem, when the `disks` plugin is installed and
    /// readable; read every few probes, so it may be a little older than the probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskSpace>,
}

/// Replication from one source, as `SHOW SLAVE STATUS` / `SHOW REPLICA STATUS` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The source (primary) this server replicates from.
    pub source: InstanceAddr,
    /// The IO (receiver) thread.
    pub io_thread: IoThreadState,
    /// Whether the SQL (applier) thread runs.
    pub sql_running: bool,
    /// The IO thread's last error number, 0 when none.
    pub last_io_errno: u32,
    /// The IO thread's last error text, empty when none.
    pub last_io_error: String,
    /// The SQL thread's last error number, 0 when none.
    pub last_sql_errno: u32,
    /// The SQL thread's last error text, empty when none.
    pub last_sql_error: String,
    /// `Seconds_Behind_Master`; `None` when the server reports NULL (a thread stopped).
    pub seconds_behind_source: Option<u64>,
    /// `SQL_Delay`: a configured delay (`MASTER_DELAY`) in seconds.
    pub sql_delay_s: u64,
    /// Whether replication positions by GTID (`Using_Gtid` / `Auto_Position`).
    pub using_gtid: bool,
    /// The GTIDs received by the IO thread: MariaDB `Gtid_IO_Pos`, MySQL
    /// `Retrieved_Gtid_Set`. Empty when unknown.
    pub received_gtid: String,
    /// What the IO thread receives, and how long it has received nothing.
    #[serde(default, skip_serializing_if = "StreamProgress::is_empty")]
    pub stream: StreamProgress,
}

/// The IO thread's received stream: the counters that move whenever anything arrives from
/// the source (an event or a heartbeat), and how long they have not moved.
///
/// A source sends a heartbeat after `heartbeat_period` without events, so a stream that
/// has not moved for longer than that (plus a margin) comes from a source that stopped
/// sending: frozen, or cut off silently, even while the IO thread still says `Yes` (it says
/// so until `slave_net_timeout`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamProgress {
    /// `Slave_received_heartbeats` (MariaDB, default connection): heartbeats received since
    /// the IO thread started. `None` when not reported (MySQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_heartbeats: Option<u64>,
    /// `Slave_heartbeat_period` in milliseconds (MariaDB, default connection). `None` when
    /// not reported; 0 when heartbeats are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_period_ms: Option<u64>,
    /// `Master_Log_File` / `Source_Log_File`: the source binlog the IO thread reads.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_log_file: String,
    /// `Read_Master_Log_Pos` / `Read_Source_Log_Pos`: how far it has read in that file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_source_log_pos: Option<u64>,
    /// How long, in milliseconds, the applied position (`gtid_slave_pos`) had not moved
    /// while the replica had received more than it applied, as far as dbfleet saw. Set by
    /// [`crate::stream::StreamTracker`]; `None` when unknown or when it has applied all it
    /// received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_stalled_ms: Option<u64>,
    /// How long, in milliseconds, the stream had not moved when this observation was taken,
    /// as far as dbfleet saw (at least this long). Set by [`crate::stream::StreamTracker`]
    /// from successive observations, never by a probe alone. `None` when unknown: no
    /// earlier observation, the IO thread not `Yes`, or no heartbeat counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_ms: Option<u64>,
}

impl StreamProgress {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl ReplicationStatus {
    /// Both threads run and no error is pending.
    pub fn is_healthy(&self) -> bool {
        self.io_thread == IoThreadState::Yes && self.sql_running
    }
}

/// The IO thread's state: MariaDB and MySQL both say Yes, Connecting or No.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoThreadState {
    /// Connected to the source and receiving.
    Yes,
    /// Running but not connected: the source is gone or refuses.
    Connecting,
    /// Stopped.
    No,
}

impl IoThreadState {
    /// Parse `Slave_IO_Running` / `Replica_IO_Running`. MariaDB says `Preparing` for a
    /// moment after `START SLAVE`, while the thread sets up and before it connects (seen
    /// on 10.11 right after `CHANGE MASTER TO MASTER_DELAY`): running but not receiving,
    /// as `Connecting`. Unknown text is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yes" => Some(Self::Yes),
            "connecting" | "preparing" => Some(Self::Connecting),
            "no" => Some(Self::No),
            _ => None,
        }
    }
}

impl fmt::Display for IoThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yes => "Yes",
            Self::Connecting => "Connecting",
            Self::No => "No",
        })
    }
}

/// GTID positions, per flavor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flavor", rename_all = "lowercase")]
pub enum GtidState {
    /// MariaDB's four GTID variables.
    Mariadb {
        /// `@@gtid_current_pos`: the last GTID applied or written, per domain. Compare
        /// servers by this one: a promoted replica's `gtid_slave_pos` goes stale.
        current_pos: MariadbGtidList,
        /// `@@gtid_binlog_pos`: the last GTID in the binlog, per domain.
        binlog_pos: MariadbGtidList,
        /// `@@gtid_slave_pos`: the last GTID applied by replication, per domain.
        slave_pos: MariadbGtidList,
        /// `@@gtid_binlog_state`: the last seq per (domain, server_id); the errant check
        /// reads it.
        binlog_state: MariadbBinlogState,
        /// `@@gtid_strict_mode`.
        strict_mode: bool,
    },
    /// MySQL's GTID sets.
    Mysql {
        /// `@@gtid_mode` is ON.
        enabled: bool,
        /// `@@gtid_executed`.
        executed: MysqlGtidSet,
        /// `@@gtid_purged`.
        purged: MysqlGtidSet,
    },
}

/// Semi-sync replication, from both roles' variables and status counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SemiSyncState {
    /// `rpl_semi_sync_master_enabled` (`source` on MySQL): this server waits for acks.
    pub source_enabled: bool,
    /// `Rpl_semi_sync_master_status`: on, or fallen back to async.
    pub source_active: bool,
    /// `Rpl_semi_sync_master_clients`: replicas that ack.
    pub source_clients: u64,
    /// `rpl_semi_sync_master_timeout` in milliseconds, when known: how long a commit waits
    /// for an ack before the primary falls back to async and commits alone. Lossless
    /// semi-sync sets it effectively infinite ([`SEMI_SYNC_LOSSLESS_TIMEOUT_MS`]).
    pub source_timeout_ms: Option<u64>,
    /// `rpl_semi_sync_master_wait_no_slave` (`rpl_semi_sync_source_wait_no_replica` on
    /// MySQL): whether commits still wait when no semi-sync replica is connected. `OFF`
    /// lets the primary commit alone at once. `None` when not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_wait_no_replica: Option<bool>,
    /// `Rpl_semi_sync_master_wait_sessions`: sessions waiting for an ack now.
    #[serde(default)]
    pub source_wait_sessions: u64,
    /// `Rpl_semi_sync_master_yes_tx`: commits a replica acknowledged since start-up. Two
    /// reads with the same figure prove that no commit was acknowledged between them (under
    /// lossless semi-sync, no commit completed at all). `None` when not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_yes_tx: Option<u64>,
    /// `rpl_semi_sync_slave_enabled` (`replica` on MySQL): this server acks.
    pub replica_enabled: bool,
    /// `Rpl_semi_sync_slave_status`: the IO thread acks now.
    pub replica_active: bool,
}

/// The `rpl_semi_sync_master_timeout` dbfleet sets for lossless semi-sync, in
/// milliseconds: 2^32-1, about 49.7 days, the largest MariaDB 10.11 keeps. It accepts larger
/// values on the command line and in `SET GLOBAL`, but stores 4294967295 (measured here), so
/// a larger constant would read back as a different value.
pub const SEMI_SYNC_LOSSLESS_TIMEOUT_MS: u64 = 4_294_967_295;

/// A `rpl_semi_sync_master_timeout` at or above this (seven days, in milliseconds) counts as
/// effectively infinite: no commit waits that long in practice, and a human is paged long
/// before (`LockedSemiSyncPrimary`).
pub const SEMI_SYNC_NEVER_FALLS_BACK_MS: u64 = 7 * 24 * 3600 * 1000;

impl SemiSyncState {
    /// Whether this server, as a semi-sync primary, could fall back to async and commit
    /// alone: its timeout is known and finite in practice, or `wait_no_slave` is `OFF`.
    pub fn can_fall_back(&self) -> bool {
        self.source_timeout_ms
            .is_some_and(|t| t < SEMI_SYNC_NEVER_FALLS_BACK_MS)
            || self.source_wait_no_replica == Some(false)
    }
}

impl Observation {
    /// A hash of what this observation says about the server's shape: reachable or not (and
    /// how it failed), identity, `read_only`, binlog settings, the replication source, its
    /// threads and error numbers, a coarse lag bucket, GTID modes and semi-sync. It leaves out
    /// what changes on every probe of a busy server: GTID positions, counters, metrics,
    /// timestamps, exact lag and error texts. The watch loop persists an observation at once
    /// when this changes, and otherwise only now and then.
    pub fn shape_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.addr.hash(&mut h);
        match &self.reachability {
            Reachability::Unreachable(f) => {
                0u8.hash(&mut h);
                f.kind.hash(&mut h);
            }
            Reachability::Reachable(s) => {
                1u8.hash(&mut h);
                s.shape_hash(&mut h);
            }
        }
        h.finish()
    }
}

impl ServerState {
    fn shape_hash<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        self.flavor.hash(h);
        self.version.hash(h);
        self.server_id.hash(h);
        self.read_only.hash(h);
        self.log_bin.hash(h);
        self.log_replica_updates.hash(h);
        match &self.replication {
            None => 0u8.hash(h),
            Some(r) => {
                1u8.hash(h);
                r.source.hash(h);
                r.io_thread.hash(h);
                r.sql_running.hash(h);
                r.last_io_errno.hash(h);
                r.last_sql_errno.hash(h);
                r.sql_delay_s.hash(h);
                r.using_gtid.hash(h);
                lag_bucket(r.seconds_behind_source).hash(h);
            }
        }
        match &self.gtid {
            GtidState::Mariadb { strict_mode, .. } => (0u8, *strict_mode).hash(h),
            GtidState::Mysql { enabled, .. } => (1u8, *enabled).hash(h),
        }
        let ss = &self.semi_sync;
        // Not `source_wait_sessions`: it changes on every probe of a busy primary. Whether
        // sessions wait at all is shape.
        (
            ss.source_enabled,
            ss.source_active,
            ss.source_clients,
            ss.source_timeout_ms,
            ss.source_wait_no_replica,
            ss.source_wait_sessions > 0,
            ss.replica_enabled,
            ss.replica_active,
        )
            .hash(h);
    }
}

/// `Seconds_Behind_Master` coarsened so that a lag that starts or ends counts as a change of
/// shape, but a lag that wobbles by a second does not.
fn lag_bucket(lag: Option<u64>) -> u8 {
    match lag {
        None => 0,
        Some(0) => 1,
        Some(1..=4) => 2,
        Some(5..=29) => 3,
        Some(30..=299) => 4,
        Some(_) => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::{IoThreadState, ProbeFailure, ProbeFailureKind};

    #[test]
    fn only_a_query_that_hangs_on_a_fresh_connection_proves_the_server_runs() {
        let mut f = ProbeFailure::new(ProbeFailureKind::Timeout, "observe timed out after 1s");
        assert!(
            !f.hung_on_fresh_connection(),
            "a kept connection may be a cut link"
        );
        f.fresh_connection = true;
        assert!(f.hung_on_fresh_connection());
        let mut c = ProbeFailure::new(ProbeFailureKind::Timeout, "connect timed out after 1s");
        c.fresh_connection = true;
        assert!(
            !c.hung_on_fresh_connection(),
            "the connect itself timed out"
        );
        let mut r = ProbeFailure::new(ProbeFailureKind::Refused, "connection refused");
        r.fresh_connection = true;
        assert!(!r.hung_on_fresh_connection());
        // Older records without the field read as not fresh.
        let old: ProbeFailure =
            serde_json::from_str(r#"{"kind":"timeout","message":"observe timed out"}"#).unwrap();
        assert!(!old.fresh_connection);
    }

    #[test]
    fn io_thread_states_mariadb_reports() {
        assert_eq!(IoThreadState::parse("Yes"), Some(IoThreadState::Yes));
        assert_eq!(IoThreadState::parse("No"), Some(IoThreadState::No));
        assert_eq!(
            IoThreadState::parse("Connecting"),
            Some(IoThreadState::Connecting)
        );
        assert_eq!(
            IoThreadState::parse("Preparing"),
            Some(IoThreadState::Connecting)
        );
        assert_eq!(IoThreadState::parse("Maybe"), None);
    }
}
