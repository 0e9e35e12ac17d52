//! The JSON wire types of `/api/v1`: what the daemon answers and what its clients read.
//! The server converts model and store types to them at the edge (`server::convert`).
//!
//! Field names are stable snake_case. Within `/api/v1` a field may be added, never renamed or
//! removed. Addresses are `host:port` strings, times are milliseconds since the Unix epoch
//! (`*_ms`), and an unknown value is `null`, never a zero. `docs/API.md` documents each type.

use model::{
    ClusterSpec, GtidState, InstanceAddr, IoThreadState, Observation, ProbeFailureKind,
    PromotionRule, Severity,
};
use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, naming the parameter, cluster or instance at fault.
    pub error: String,
    /// The operation the error is about, when an operation ended other than succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<serde_json::Value>,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the metadata store answered, `degraded` when it did not (the daemon still
    /// answers: `/healthz` is 200 either way; `/readyz` is the one that says 503).
    pub status: String,
    /// The daemon's version.
    pub version: String,
    /// The metadata store, as one cheap read just now saw it.
    #[serde(default)]
    pub store: Option<StoreHealth>,
    /// The leader lease as this node last saw it; `null` without an operations engine.
    #[serde(default)]
    pub leader: Option<LeaseHealth>,
}

/// The metadata store in `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Whether the read answered in time.
    pub ok: bool,
    /// How long it took, ms (the timeout when it did not answer).
    pub latency_ms: u64,
    /// Why not, when not `ok`.
    pub error: Option<String>,
}

/// The leader lease in `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHealth {
    /// This node.
    pub node: String,
    /// Whether this node holds the lease (as of its last campaign).
    pub is_leader: bool,
    /// The holder as this node last saw it.
    pub leader: Option<String>,
    /// The lease's term.
    pub term: u64,
}

/// `GET /api/v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// The daemon's clock now, so clients can age the `*_ms` times.
    pub now_ms: u64,
    /// The watch loop's counters.
    pub stats: Stats,
}

/// The watch loop's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// When the daemon started.
    pub started_ms: u64,
    /// Analysis rounds completed.
    pub rounds: u64,
    /// When the last round finished; 0 before the first.
    pub last_round_ms: u64,
    /// Probes completed, successful or not.
    pub probes: u64,
    /// Probes that failed.
    pub probe_errors: u64,
    /// Instances being probed now.
    pub instances: u64,
    /// Suspect fast paths started (a failed probe of a primary, or a lost liveness
    /// connection).
    #[serde(default)]
    pub fast_paths: u64,
    /// Analyses run by the fast path.
    #[serde(default)]
    pub fast_path_rounds: u64,
    /// Analyses run at once after an operation on the cluster finished.
    #[serde(default)]
    pub refresh_rounds: u64,
    /// Lost liveness connections reported as suspects.
    #[serde(default)]
    pub sentinel_signals: u64,
    /// Liveness connections up now (one per primary).
    #[serde(default)]
    pub sentinels_armed: u64,
    /// Analysis rounds the engine did not get because it fell behind.
    #[serde(default)]
    pub rounds_dropped: u64,
    /// Observations the rounds wrote to the store.
    #[serde(default)]
    pub observations_persisted: u64,
    /// Observations the rounds did not write: shape unchanged and the stored copy younger
    /// than `monitor.persist_every`.
    #[serde(default)]
    pub observations_persist_skipped: u64,
}

/// `GET /api/v1/clusters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterList {
    /// Every cluster, by name.
    pub clusters: Vec<ClusterSummary>,
}

/// One cluster at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// The cluster's name.
    pub name: String,
    /// The primary as the last observations name it (reachable or not); `null` when none
    /// or several can be named.
    pub primary: Option<String>,
    /// Where the cluster's writes go, as the store records it; `null` when unset.
    pub writer: Option<String>,
    /// Instances the store knows, declared and discovered.
    pub instance_count: usize,
    /// Instances whose last probe succeeded.
    pub reachable_count: usize,
    /// Open problems.
    pub open_problem_count: usize,
    /// The most urgent open problem's severity (`warning`, `error`, `critical`); `null`
    /// when none is open.
    pub worst_severity: Option<String>,
}

/// `GET /api/v1/clusters/{name}`: the summary, plus the declared spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDetail {
    /// The same fields as in the list.
    #[serde(flatten)]
    pub summary: ClusterSummary,
    /// When the spec or the writer last changed.
    pub updated_ms: u64,
    /// What the operator declared.
    pub spec: Spec,
}

/// A cluster's declared spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// How many replicas the primary should have.
    pub expected_replicas: usize,
    /// Whether semi-sync replication should be on.
    pub semi_sync: bool,
    /// Lag above which a replica is lagging, as humantime (`10s`, `1m 30s`).
    pub max_lag: String,
    /// The declared instances, in config order.
    pub instances: Vec<SpecInstance>,
}

/// One declared instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInstance {
    /// Its address.
    pub addr: String,
    /// Whether failover may promote it: `prefer`, `neutral` or `must_not`.
    pub promotion: String,
}

impl From<&ClusterSpec> for Spec {
    fn from(spec: &ClusterSpec) -> Self {
        Self {
            expected_replicas: spec.expected_replicas,
            semi_sync: spec.semi_sync,
            max_lag: humantime::format_duration(spec.max_lag).to_string(),
            instances: spec
                .instances
                .iter()
                .map(|i| SpecInstance {
                    addr: i.addr.to_string(),
                    promotion: promotion(i.promotion).to_string(),
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/clusters/{name}/topology`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The cluster's name.
    pub cluster: String,
    /// The primary's address; `null` when none or several can be named.
    pub primary: Option<String>,
    /// The primary's tree depth-first (children by address), then every other instance.
    pub nodes: Vec<Node>,
}

/// An instance's place in the topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The primary as the observations name it, reachable or not.
    Primary,
    /// Reachable and replicating from a source.
    Replica,
    /// Reachable with no source but not the primary, or not observed yet.
    Unknown,
    /// Its last probe failed.
    Unreachable,
}

/// One instance in the topology. Fields from the server's state are `null` when it is
/// unreachable or not observed; replication fields are `null` when it has no source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its address.
    pub addr: String,
    /// Its role.
    pub role: Role,
    /// `config` or `discovered`; `null` when the store does not list it (e.g. a primary
    /// known only from its replicas).
    pub origin: Option<String>,
    /// Whether it is outside the primary's tree (or there is no primary).
    pub orphan: bool,
    /// Its depth: 0 for the primary and for each orphan root, 1 for their direct replicas.
    pub depth: usize,
    /// Whether its last probe succeeded.
    pub reachable: bool,
    /// Why the last probe failed.
    pub failure: Option<Failure>,
    /// The source it replicates from.
    pub source: Option<String>,
    /// `mariadb` or `mysql`.
    pub flavor: Option<String>,
    /// `@@read_only`.
    pub read_only: Option<bool>,
    /// The IO thread: `yes`, `connecting` or `no`.
    pub io_thread: Option<String>,
    /// Whether the SQL thread runs.
    pub sql_running: Option<bool>,
    /// `Seconds_Behind_Master`; also `null` when the server reports NULL.
    pub seconds_behind_source: Option<u64>,
    /// The configured `MASTER_DELAY`, in seconds.
    pub sql_delay_s: Option<u64>,
    /// The IO thread's last error number; `null` when none.
    pub last_io_errno: Option<u32>,
    /// The IO thread's last error text; `null` when none.
    pub last_io_error: Option<String>,
    /// The SQL thread's last error number; `null` when none.
    pub last_sql_errno: Option<u32>,
    /// The SQL thread's last error text; `null` when none.
    pub last_sql_error: Option<String>,
    /// The current GTID position: MariaDB `@@gtid_current_pos`, MySQL `@@gtid_executed`;
    /// `null` when empty.
    pub gtid: Option<String>,
    /// `@@server_id`.
    pub server_id: Option<u32>,
    /// `@@version`.
    pub version: Option<String>,
    /// When the last probe started; `null` when never probed.
    pub observed_at_ms: Option<u64>,
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// `refused`, `timeout`, `auth` or `other`.
    pub kind: String,
    /// The error text.
    pub message: String,
}

impl Node {
    /// A node with what its observation (if any) shows; the caller sets its place.
    /// `origin` is `config` or `discovered`, when the store lists the instance.
    pub fn new(
        addr: &InstanceAddr,
        role: Role,
        origin: Option<&str>,
        observation: Option<&Observation>,
    ) -> Self {
        let mut node = Self {
            addr: addr.to_string(),
            role,
            origin: origin.map(str::to_string),
            orphan: false,
            depth: 0,
            reachable: false,
            failure: None,
            source: None,
            flavor: None,
            read_only: None,
            io_thread: None,
            sql_running: None,
            seconds_behind_source: None,
            sql_delay_s: None,
            last_io_errno: None,
            last_io_error: None,
            last_sql_errno: None,
            last_sql_error: None,
            gtid: None,
            server_id: None,
            version: None,
            observed_at_ms: observation.map(|o| o.at_unix_ms),
        };
        let Some(obs) = observation else {
            return node;
        };
        if let Some(f) = obs.failure() {
            node.failure = Some(Failure {
                kind: failure_kind(f.kind).to_string(),
                message: f.message.clone(),
            });
        }
        let Some(state) = obs.state() else {
            return node;
        };
        node.reachable = true;
        node.flavor = Some(flavor(state.flavor).to_string());
        node.read_only = Some(state.read_only);
        node.server_id = Some(state.server_id);
        node.version = Some(state.version.clone());
        node.gtid = Some(current_gtid(&state.gtid)).filter(|g| !g.is_empty());
        if let Some(r) = &state.replication {
            node.source = Some(r.source.to_string());
            node.io_thread = Some(io_thread(r.io_thread).to_string());
            node.sql_running = Some(r.sql_running);
            node.seconds_behind_source = r.seconds_behind_source;
            node.sql_delay_s = Some(r.sql_delay_s);
            node.last_io_errno = Some(r.last_io_errno).filter(|n| *n != 0);
            node.last_io_error = Some(r.last_io_error.clone()).filter(|e| !e.is_empty());
            node.last_sql_errno = Some(r.last_sql_errno).filter(|n| *n != 0);
            node.last_sql_error = Some(r.last_sql_error.clone()).filter(|e| !e.is_empty());
        }
        node
    }
}

/// `GET /api/v1/instances`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceList {
    /// The instances, by cluster, then address as text (`host:port`, byte-wise).
    pub instances: Vec<Instance>,
    /// When the page is full: the path (with its query) of the next page
    /// (`/api/v1/instances?after=CLUSTER/ADDR&limit=N`, with the same `cluster`). Absent on
    /// the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One instance of one cluster, with its last observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The cluster it belongs to.
    pub cluster: String,
    /// Its address.
    pub addr: String,
    /// `config` or `discovered`.
    pub origin: String,
    /// When the store first recorded it.
    pub first_seen_ms: u64,
    /// When config load or discovery last saw it.
    pub last_seen_ms: u64,
    /// Its last observation, as the probe recorded it; `null` when never probed.
    pub observation: Option<Observation>,
}

/// `GET /api/v1/problems`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemList {
    /// Open problems oldest first, or with `history=true` the newest openings first.
    pub problems: Vec<Problem>,
    /// With `history=true`, when the page is full: the path (with its query) of the page
    /// of older openings (`/api/v1/problems?history=true&before_id=LAST&limit=N`, with the
    /// same `cluster`). Absent on the last page, and on open problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One problem, from first seen until cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The record's id; a problem that clears and comes back gets a new one.
    pub id: i64,
    /// The cluster.
    pub cluster: String,
    /// The problem's identity across rounds: `Kind` or `Kind/host:port`.
    pub key: String,
    /// What is wrong, e.g. `ReplicaNotReplicating` (the stable names of `docs/API.md`).
    pub kind: String,
    /// The instance it is about, if any.
    pub instance: Option<String>,
    /// `warning`, `error` or `critical`.
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    /// The facts behind it.
    pub evidence: Vec<Evidence>,
    /// When analysis first reported it.
    pub first_seen_ms: u64,
    /// When analysis last reported it.
    pub last_seen_ms: u64,
    /// When it cleared; `null` while open.
    pub cleared_ms: Option<u64>,
}

/// One fact behind a problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The instance whose observation showed it.
    pub instance: String,
    /// What was seen.
    pub fact: String,
}

/// `GET /api/v1/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    /// The events, ascending by id.
    pub events: Vec<Event>,
    /// When the events were read forward (`after_id`) and fill the page: the path (with
    /// its query) of the next page. Absent on the last page, and on the newest events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One event of the append-only log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its id, growing in append order: page with `after_id`.
    pub id: i64,
    /// When it happened.
    pub at_ms: u64,
    /// The cluster it is about, if any.
    pub cluster: Option<String>,
    /// The instance it is about, if any.
    pub instance: Option<String>,
    /// Its kind, a stable snake_case name, e.g. `problem_opened`.
    pub kind: String,
    /// `info`, `warning`, `error` or `critical`.
    pub level: String,
    /// One line for humans.
    pub message: String,
    /// Structured details; `null` when none.
    pub data: serde_json::Value,
}

/// The body of `POST /api/v1/events`: an operator's note for the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    /// The note, one line for humans; not empty, at most [`NewNote::MAX_LEN`] bytes.
    pub message: String,
    /// The cluster it is about; it must exist.
    #[serde(default)]
    pub cluster: Option<String>,
}

impl NewNote {
    /// The longest note, in bytes.
    pub const MAX_LEN: usize = 4096;
}

/// The wire text of a severity.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Warning => "warning",
        Severity::Error => "error",
        Severity::Critical => "critical",
    }
}

fn promotion(p: PromotionRule) -> &'static str {
    match p {
        PromotionRule::Prefer => "prefer",
        PromotionRule::Neutral => "neutral",
        PromotionRule::MustNot => "must_not",
    }
}

fn failure_kind(k: ProbeFailureKind) -> &'static str {
    match k {
        ProbeFailureKind::Refused => "refused",
        ProbeFailureKind::Timeout => "timeout",
        ProbeFailureKind::Auth => "auth",
        ProbeFailureKind::Other => "other",
    }
}

fn flavor(f: model::Flavor) -> &'static str {
    match f {
        model::Flavor::Mariadb => "mariadb",
        model::Flavor::Mysql => "mysql",
    }
}

fn io_thread(s: IoThreadState) -> &'static str {
    match s {
        IoThreadState::Yes => "yes",
        IoThreadState::Connecting => "connecting",
        IoThreadState::No => "no",
    }
}

/// The position to compare servers by: MariaDB `gtid_current_pos`, MySQL `gtid_executed`.
fn current_gtid(g: &GtidState) -> String {
    match g {
        GtidState::Mariadb { current_pos, .. } => current_pos.to_string(),
        GtidState::Mysql { executed, .. } => executed.to_string(),
    }
}
