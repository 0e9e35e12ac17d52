//! DRT scenarios: what load to run, which faults to inject when, and what to expect. Parsed
//! from TOML, validated with errors that name the field, and a built-in library.
//!
//! # The file
//!
//! ```toml
//! name = "kill-primary"
//! description = "SIGKILL the primary under load: one failover, no lost write."
//! # cluster = "demo"          # the target; `--cluster` overrides it
//! # max_duration = "2m"       # guardrail: the whole run, load and verification, is aborted after it
//!
//! [load]                      # every key optional
//! writers = 4                 # default 4
//! rate_per_s = 200            # total writes per second; 0 = as fast as possible; default 1000
//! duration = "8s"             # default 10s
//! # stale_client = false      # one more writer, pinned to the first primary's address
//! # via = "direct"             # or "haproxy": write through the sandbox's HAProxy
//!
//! [[fault]]
//! kind = "kill_primary"
//! target = "primary"          # "primary", "replica" (any) or a member's name or host:port
//! at = "2s"                   # offset from the load's start
//! # heal_after = "3s"         # default: heal when the load ends
//!
//! [expect]                    # every key optional
//! failover = "must"           # "must", "must_not" or "any" (default)
//! max_rto = "10s"             # the longest client-side outage
//! lost_writes_allowed = 0     # default 0
//! # failovers = 1             # exactly this many failovers
//! # primary_changes = 1       # exactly this many moves of the writable primary
//! # max_detection = "2s"      # needs the control plane's events
//! # stale_acks_allowed = 0    # writes the old primary acknowledges after the new one opened; judged on every run
//! # needs_human = true        # the control plane must hand the failover to a human (needs its events);
//! #                           # with failover = "must", one must succeed afterwards
//! ```
//!
//! Fault kinds: `kill_primary`, `pause_primary`, `partition_primary` (from everyone),
//! `partition_control_plane_from_primary`, `kill_replica`, `stop_replica_sql_thread`,
//! `slow_replica` (with `latency_ms` and optional `jitter_ms`), `switchover` (its target is
//! the replica to promote; it heals nothing), `errant_write_on_replica`, `delay_replica` (with
//! `delay`, e.g. `"30s"`: `MASTER_DELAY`), `break_replica_sql` (an errant write that the next
//! replicated write breaks the SQL thread on, error 1950 under `gtid_strict_mode`),
//! `stall_replica_stream` (every packet of the replica's replication connection dropped),
//! `stall_disk` (the member's datadir filesystem frozen with `fsfreeze` until healed) and
//! `fill_disk` (that filesystem filled to ENOSPC with `fallocate` until healed); the disk
//! kinds need the member's datadir on a loop filesystem (`sandbox up --loop-datadirs`).
//!
//! Targets: `"primary"` for the `*_primary` kinds; `"replica"` (any), `"best_replica"` (the
//! replica that received the most, when the fault fires) or a member for the others; the
//! disk kinds take either (default `"primary"`).
//!
//! This module only describes a scenario; running it (and injecting its faults) is the
//! runner's job. A scenario is plain data: [`Scenario::plan`] turns its faults into a
//! timetable and [`LoadSpec::apply_to`] into [`LoadOptions`].

mod builtin;
mod error;
mod file;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::load::{LoadOptions, MAX_WRITERS};

pub use builtin::{builtin_names, builtins};
pub use error::ScenarioError;

/// The default [`Scenario::max_duration`].
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(120);
/// The highest latency `slow_replica` may add.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);
/// The longest `MASTER_DELAY` `delay_replica` may set.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A validated DRT scenario. Build it with [`Scenario::from_toml`], [`Scenario::load`] or
/// [`Scenario::builtin`]; after changing fields by hand, call [`Scenario::validate`].
///
/// It serializes (e.g. into JSON) in the same shape as its TOML file, and deserializing
/// validates it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "file::FileScenario", try_from = "file::FileScenario")]
pub struct Scenario {
    /// A short name: 1 to 64 ASCII letters, digits, `-` or `_`. It names report files.
    pub name: String,
    /// What the scenario does and why, for people.
    pub description: String,
    /// The target cluster. The CLI's `--cluster` overrides it; a run needs one of the two.
    pub cluster: Option<String>,
    /// The write load.
    pub load: LoadSpec,
    /// The faults, in file order (see [`Scenario::plan`] for the timetable).
    pub faults: Vec<Fault>,
    /// What must hold for the run to pass.
    pub expect: Expect,
    /// Guardrail: the longest a whole run (load, healing and verification) may take before
    /// it is aborted and healed. Default [`DEFAULT_MAX_DURATION`]; longer than the load.
    pub max_duration: Duration,
}

/// The write load of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSpec {
    /// Concurrent writers. Default 4; 1 to [`MAX_WRITERS`].
    pub writers: usize,
    /// Writes per second in total; 0 means as fast as each writer can. Default 1000.
    pub rate_per_s: u32,
    /// How long the load runs; every fault is injected (and healed, with `heal_after`)
    /// within it. Default 10 s.
    pub duration: Duration,
    /// Stale-client mode: one more writer that stays pinned to the address of the primary
    /// the load started on. It never looks for the primary again, so it keeps writing to
    /// the old primary after a failover, as an application with a cached address or a
    /// long-lived pool does; what that address acknowledges after the new primary opened
    /// is counted (see [`Expect::stale_acks_allowed`]). Default false.
    pub stale_client: bool,
    /// Where the writers connect (`via`): to the members directly (`direct`, the default:
    /// each writer looks for the writable one), or to the sandbox's HAProxy writer
    /// frontend only (`haproxy`: `sandbox up --haproxy`), as an application behind the
    /// proxy does. The outage measured is then what such an application sees. The stale
    /// client, when on, still pins the old primary's own address.
    pub via: LoadVia,
}

/// How the load's writers reach the primary ([`LoadSpec::via`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadVia {
    /// Straight to the members, finding the writable one.
    #[default]
    Direct,
    /// Through the sandbox's HAProxy writer frontend.
    Haproxy,
}

impl Default for LoadSpec {
    /// The defaults of [`LoadOptions::new`].
    fn default() -> Self {
        Self {
            writers: 4,
            rate_per_s: 1000,
            duration: Duration::from_secs(10),
            stale_client: false,
            via: LoadVia::Direct,
        }
    }
}

impl LoadSpec {
    /// Set the writers, rate and duration of `opts`; every other option is kept. The stale
    /// client's address is the runner's to set ([`LoadOptions::pinned`]): it is the primary
    /// when the load starts.
    pub fn apply_to(&self, opts: &mut LoadOptions) {
        opts.writers = self.writers;
        opts.rate_per_s = self.rate_per_s;
        opts.duration = self.duration;
    }
}

/// One fault: what, on which server, when, and when it is healed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What is done.
    pub kind: FaultKind,
    /// To which server. Must suit the kind (see [`FaultKind::default_target`]).
    pub target: Target,
    /// When, as an offset from the load's start; before the load ends.
    pub at: Duration,
    /// When it is healed.
    pub heal: Heal,
}

impl Fault {
    /// Whether it acts on whichever server is the primary when it fires: a `*_primary` kind,
    /// or a disk fault whose target is `"primary"`.
    pub fn on_primary(&self) -> bool {
        self.kind.on_primary() || (self.kind.on_disk() && self.target == Target::Primary)
    }

    /// When the fault is healed, as an offset from the load's start, for a load of
    /// `load_duration`; `None` when it heals nothing (a switchover).
    pub fn heal_at(&self, load_duration: Duration) -> Option<Duration> {
        match self.heal {
            Heal::After(d) => Some(self.at + d),
            Heal::AtLoadEnd => Some(load_duration),
            Heal::Nothing => None,
        }
    }
}

/// What a fault does. The runner maps each to its injection and its heal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// SIGKILL the primary's server. Heal: start it again.
    KillPrimary,
    /// SIGSTOP the primary's server. Heal: SIGCONT.
    PausePrimary,
    /// Cut the primary off from everyone: replicas, clients and the control plane.
    PartitionPrimary,
    /// Cut only the control plane off from the primary; replicas and clients still reach
    /// it, so no failover should happen.
    PartitionControlPlaneFromPrimary,
    /// SIGKILL a replica's server. Heal: start it again.
    KillReplica,
    /// `STOP SLAVE SQL_THREAD` on a replica. Heal: start it.
    StopReplicaSqlThread,
    /// Add latency to a replica's replication stream through a fault-injecting proxy.
    SlowReplica {
        /// Added to each packet's delivery.
        latency: Duration,
        /// Random extra delay, up to this much; at most `latency`.
        jitter: Duration,
    },
    /// A planned switchover to the target replica, through the control plane. It heals
    /// nothing, and it is not a failover.
    Switchover,
    /// Write a transaction directly on a replica, giving it an errant GTID.
    ErrantWriteOnReplica,
    /// `CHANGE MASTER TO MASTER_DELAY` on a replica: it receives at once but applies each
    /// transaction only this long after its commit on the source. Heal: delay 0.
    DelayReplica {
        /// The delay; whole seconds, 1 s to [`MAX_DELAY`].
        delay: Duration,
    },
    /// Break a replica's SQL thread: an errant write on it, which the next replicated
    /// write collides with (error 1950 under `gtid_strict_mode`). Heal: the errant
    /// transaction is removed as a DBA would (sandbox only) and replication started again.
    BreakReplicaSql,
    /// Drop every packet of a replica's replication connection to its source (iptables,
    /// no RST): its stream stalls as when a host loses power mid-send, while the source
    /// and every other connection go on. Heal: the rules are removed.
    StallReplicaStream,
    /// Freeze the member's datadir filesystem (`fsfreeze -f`): its process, sockets and
    /// reads go on, every write blocks in the kernel. Heal: `fsfreeze -u`. Needs the
    /// datadir on a loop filesystem; a primary or a replica.
    StallDisk,
    /// Fill the member's datadir filesystem with `fallocate` up to its last free block
    /// (root's reserve too): its writes fail or wait with ENOSPC. Heal: the space freed.
    /// Needs the datadir on a loop filesystem; a primary or a replica.
    FillDisk,
}

impl FaultKind {
    /// The kind's name in a scenario file, e.g. `kill_primary`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::KillPrimary => "kill_primary",
            Self::PausePrimary => "pause_primary",
            Self::PartitionPrimary => "partition_primary",
            Self::PartitionControlPlaneFromPrimary => "partition_control_plane_from_primary",
            Self::KillReplica => "kill_replica",
            Self::StopReplicaSqlThread => "stop_replica_sql_thread",
            Self::SlowReplica { .. } => "slow_replica",
            Self::Switchover => "switchover",
            Self::ErrantWriteOnReplica => "errant_write_on_replica",
            Self::DelayReplica { .. } => "delay_replica",
            Self::BreakReplicaSql => "break_replica_sql",
            Self::StallReplicaStream => "stall_replica_stream",
            Self::StallDisk => "stall_disk",
            Self::FillDisk => "fill_disk",
        }
    }

    /// Whether it acts on a member's disk: its datadir must be on a loop filesystem, and it
    /// may target the primary or a replica.
    pub fn on_disk(&self) -> bool {
        matches!(self, Self::StallDisk | Self::FillDisk)
    }

    /// Whether it acts on whichever server is the primary when it fires. Such a fault's
    /// target is always [`Target::Primary`]; every other kind's is a replica.
    pub fn on_primary(&self) -> bool {
        matches!(
            self,
            Self::KillPrimary
                | Self::PausePrimary
                | Self::PartitionPrimary
                | Self::PartitionControlPlaneFromPrimary
        )
    }

    /// The target when a fault names none: the primary for the `*_primary` and disk kinds,
    /// any replica for the others.
    pub fn default_target(&self) -> Target {
        if self.on_primary() || self.on_disk() {
            Target::Primary
        } else {
            Target::Replica
        }
    }

    /// Whether it leaves something to heal (everything but a switchover).
    pub fn heals(&self) -> bool {
        !matches!(self, Self::Switchover)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SlowReplica { latency, jitter } if jitter.is_zero() => {
                write!(
                    f,
                    "slow_replica (+{})",
                    humantime::format_duration(*latency)
                )
            }
            Self::SlowReplica { latency, jitter } => write!(
                f,
                "slow_replica (+{} ±{})",
                humantime::format_duration(*latency),
                humantime::format_duration(*jitter)
            ),
            Self::DelayReplica { delay } => {
                write!(f, "delay_replica ({})", humantime::format_duration(*delay))
            }
            other => f.write_str(other.name()),
        }
    }
}

/// The server a fault acts on, resolved by the runner when the fault fires.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Whichever server is the primary then. Written `"primary"`.
    Primary,
    /// Any replica then. Written `"replica"`.
    Replica,
    /// The replica that received the most from its source then (its received GTID
    /// position, else its applied one). Written `"best_replica"`.
    BestReplica,
    /// One member, by its name or `host:port` as the cluster's config knows it.
    Member(String),
}

impl Target {
    fn parse(s: &str) -> Self {
        match s.trim() {
            "primary" => Self::Primary,
            "replica" => Self::Replica,
            "best_replica" => Self::BestReplica,
            other => Self::Member(other.to_string()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Primary => f.write_str("primary"),
            Self::Replica => f.write_str("replica"),
            Self::BestReplica => f.write_str("best_replica"),
            Self::Member(m) => f.write_str(m),
        }
    }
}

/// When a fault is healed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heal {
    /// This long after it was injected (`heal_after`); within the load.
    After(Duration),
    /// When the load ends (no `heal_after`).
    AtLoadEnd,
    /// Never: nothing to heal (a switchover).
    Nothing,
}

/// What must hold for a run to pass. Every bound is checked by [`crate::report::judge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The longest client-side outage allowed (the first failed write to the first
    /// acknowledged one after it). `None`: not judged.
    pub max_rto: Option<Duration>,
    /// Acknowledged writes that may be missing on the primary afterwards. Default 0.
    pub lost_writes_allowed: u64,
    /// Whether a failover must, or must not, happen. Default [`FailoverExpectation::Any`].
    pub failover: FailoverExpectation,
    /// Exactly this many failovers, e.g. 1 when a second one must be blocked by
    /// anti-flapping. `None`: not judged.
    pub failovers: Option<u32>,
    /// Exactly this many moves of the writable primary as clients see it (failovers and
    /// switchovers). `None`: not judged.
    pub primary_changes: Option<u32>,
    /// The longest time from the first fault to the control plane's detection. Needs the
    /// control plane's events: a cluster failed over by another tool fails it. `None`: not
    /// judged.
    pub max_detection: Option<Duration>,
    /// Writes the old primary may acknowledge after the new primary opened: judged on every
    /// run, default 0. The old primary is the one the load started on (the stale client's
    /// address); the new one opened at the control plane's first `writable` event, or, if
    /// the clients saw it first, at the first write another server acknowledged.
    pub stale_acks_allowed: u64,
    /// `Some(true)`: the control plane must hand the failover to a human (an operation that
    /// ends `needs_human`), e.g. when promoting would lose acknowledged writes. Needs the
    /// control plane's events. `None`: not judged. With `failover = "must"`, a failover must
    /// also succeed after that (e.g. once the scenario brings back what the human would).
    pub needs_human: Option<bool>,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            max_rto: None,
            lost_writes_allowed: 0,
            failover: FailoverExpectation::Any,
            failovers: None,
            primary_changes: None,
            max_detection: None,
            stale_acks_allowed: 0,
            needs_human: None,
        }
    }
}

/// Whether a failover must happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverExpectation {
    /// At least one failover.
    Must,
    /// No failover (a switchover is not one).
    MustNot,
    /// Either.
    Any,
}

impl FailoverExpectation {
    /// The name in a scenario file: `must`, `must_not` or `any`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Must => "must",
            Self::MustNot => "must_not",
            Self::Any => "any",
        }
    }
}

/// Changes to a scenario from the command line. `None` keeps the scenario's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The target cluster (`--cluster`).
    pub cluster: Option<String>,
    /// [`LoadSpec::writers`].
    pub writers: Option<usize>,
    /// [`LoadSpec::rate_per_s`].
    pub rate_per_s: Option<u32>,
    /// [`LoadSpec::duration`]. The faults keep their offsets, so a shorter load may no
    /// longer fit them: that is a validation error.
    pub duration: Option<Duration>,
    /// [`Scenario::max_duration`].
    pub max_duration: Option<Duration>,
    /// [`LoadSpec::stale_client`] (`--stale-client`).
    pub stale_client: Option<bool>,
    /// [`LoadSpec::via`] (`--via-haproxy`).
    pub via: Option<LoadVia>,
}

/// One step of a scenario's timetable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Offset from the load's start.
    pub at: Duration,
    /// The fault's index in [`Scenario::faults`].
    pub fault: usize,
    /// Inject or heal it.
    pub action: StepAction,
}

/// What a [`Step`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepAction {
    /// Heal the fault.
    Heal,
    /// Inject the fault.
    Inject,
}

impl Scenario {
    /// Parse and validate scenario text; `origin` (a file name, or `builtin:NAME`) is named
    /// in parse errors. Every problem is reported, not only the first.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let parsed: file::FileScenario =
            toml::from_str(text).map_err(|e| file::parse_error(text, origin, &e))?;
        Self::try_from(parsed)
    }

    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// A built-in scenario by name (see [`builtin_names`]).
    pub fn builtin(name: &str) -> Result<Self, ScenarioError> {
        builtin::get(name)
    }

    /// A built-in's name, or else a file's path: what `dbfleet drt run SCENARIO` takes.
    pub fn resolve(name_or_path: &str) -> Result<Self, ScenarioError> {
        if builtin_names().contains(&name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            return Self::load(path);
        }
        Self::builtin(name_or_path)
    }

    /// The scenario as TOML, in the file format; parsing it gives this scenario back.
    pub fn to_toml(&self) -> String {
        toml::to_string(&file::FileScenario::from(self.clone()))
            .expect("a scenario always serializes to TOML: plain strings, numbers and tables")
    }

    /// Apply command-line overrides and validate the result.
    pub fn with_overrides(mut self, o: &Overrides) -> Result<Self, ScenarioError> {
        if let Some(c) = &o.cluster {
            self.cluster = Some(c.clone());
        }
        if let Some(w) = o.writers {
            self.load.writers = w;
        }
        if let Some(r) = o.rate_per_s {
            self.load.rate_per_s = r;
        }
        if let Some(d) = o.duration {
            self.load.duration = d;
        }
        if let Some(d) = o.max_duration {
            self.max_duration = d;
        }
        if let Some(s) = o.stale_client {
            self.load.stale_client = s;
        }
        if let Some(v) = o.via {
            self.load.via = v;
        }
        self.validate()?;
        Ok(self)
    }

    /// The faults' injections and heals, by time. At the same instant, heals come before
    /// injections, then file order.
    pub fn plan(&self) -> Vec<Step> {
        let mut steps = Vec::with_capacity(self.faults.len() * 2);
        for (i, f) in self.faults.iter().enumerate() {
            steps.push(Step {
                at: f.at,
                fault: i,
                action: StepAction::Inject,
            });
            if let Some(at) = f.heal_at(self.load.duration) {
                steps.push(Step {
                    at,
                    fault: i,
                    action: StepAction::Heal,
                });
            }
        }
        steps.sort_by_key(|s| (s.at, s.action, s.fault));
        steps
    }

    /// The number of switchovers among the faults.
    pub fn switchovers(&self) -> usize {
        self.faults
            .iter()
            .filter(|f| f.kind == FaultKind::Switchover)
            .count()
    }

    /// Check every rule, collecting every problem, each naming its field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut errs = Vec::new();
        let mut bad = |field: String, message: String| {
            errs.push(ScenarioError::Invalid { field, message });
        };
        let d = |d: Duration| humantime::format_duration(d).to_string();

        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            bad(
                "name".into(),
                format!(
                    "{:?} is not a valid name: use 1 to 64 ASCII letters, digits, '-' or '_'",
                    self.name
                ),
            );
        }
        if self.description.trim().is_empty() {
            bad(
                "description".into(),
                "must say what the scenario does".into(),
            );
        }
        if let Some(c) = &self.cluster {
            if c.trim().is_empty() || c.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad(
                    "cluster".into(),
                    format!("{c:?} is not a cluster name: it is empty or has spaces"),
                );
            }
        }

        let load = &self.load;
        if load.writers == 0 || load.writers > MAX_WRITERS {
            bad(
                "load.writers".into(),
                format!("{} is out of range: use 1 to {MAX_WRITERS}", load.writers),
            );
        }
        if load.duration.is_zero() {
            bad("load.duration".into(), "must be longer than zero".into());
        }
        if self.max_duration <= load.duration {
            bad(
                "max_duration".into(),
                format!(
                    "{} leaves no time after the load of {} to heal and verify: make it longer",
                    d(self.max_duration),
                    d(load.duration)
                ),
            );
        }

        for (i, f) in self.faults.iter().enumerate() {
            let at = format!("fault[{i}]");
            let kind = f.kind.name();
            if f.at >= load.duration {
                let when = if f.at > load.duration {
                    "after"
                } else {
                    "when"
                };
                bad(
                    format!("{at}.at"),
                    format!(
                        "{} is {when} the load ends at {}: a fault must fire during the load",
                        d(f.at),
                        d(load.duration)
                    ),
                );
            }
            match (&f.target, f.kind.on_primary()) {
                (Target::Primary, true) => {}
                (Target::Primary, false) if f.kind.on_disk() => {}
                (_, true) => bad(
                    format!("{at}.target"),
                    format!(
                        "{kind} acts on whichever server is the primary when it fires: write \
                         \"primary\" or leave target out, not {:?}",
                        f.target.to_string()
                    ),
                ),
                (Target::Primary, false) => bad(
                    format!("{at}.target"),
                    format!(
                        "{kind} acts on a replica: write \"replica\" (any), \"best_replica\" \
                         or a member's name or host:port"
                    ),
                ),
                (Target::Member(m), false) if m.is_empty() || m.contains(char::is_whitespace) => {
                    bad(
                        format!("{at}.target"),
                        format!("{m:?} is not a member's name or host:port"),
                    )
                }
                _ => {}
            }
            match f.heal {
                Heal::After(_) if !f.kind.heals() => bad(
                    format!("{at}.heal_after"),
                    format!("a {kind} is an operation, not a fault: it has nothing to heal"),
                ),
                Heal::After(h) if h.is_zero() => bad(
                    format!("{at}.heal_after"),
                    "must be longer than zero".into(),
                ),
                Heal::After(h) if f.at + h > load.duration => bad(
                    format!("{at}.heal_after"),
                    format!(
                        "heals at {}, after the load ends at {}: leave heal_after out to heal \
                         when the load ends",
                        d(f.at + h),
                        d(load.duration)
                    ),
                ),
                Heal::Nothing if f.kind.heals() => bad(
                    format!("{at}.heal_after"),
                    format!("a {kind} must be healed"),
                ),
                Heal::AtLoadEnd if !f.kind.heals() => bad(
                    format!("{at}.heal_after"),
                    format!("a {kind} has nothing to heal"),
                ),
                _ => {}
            }
            if let FaultKind::SlowReplica { latency, jitter } = f.kind {
                if latency.is_zero() || latency > MAX_LATENCY {
                    bad(
                        format!("{at}.latency_ms"),
                        format!(
                            "{} is out of range: use 1 to {}",
                            latency.as_millis(),
                            MAX_LATENCY.as_millis()
                        ),
                    );
                }
                if jitter > latency {
                    bad(
                        format!("{at}.jitter_ms"),
                        format!(
                            "{} is more than latency_ms ({}): a delay cannot be negative",
                            jitter.as_millis(),
                            latency.as_millis()
                        ),
                    );
                }
            }
            if let FaultKind::DelayReplica { delay } = f.kind {
                if delay < Duration::from_secs(1) || delay > MAX_DELAY || delay.subsec_nanos() != 0
                {
                    bad(
                        format!("{at}.delay"),
                        format!(
                            "{} is out of range: MASTER_DELAY takes whole seconds, 1s to {}",
                            d(delay),
                            d(MAX_DELAY)
                        ),
                    );
                }
            }
        }

        let e = &self.expect;
        if let Some(rto) = e.max_rto {
            if rto.is_zero() {
                bad("expect.max_rto".into(), "must be longer than zero".into());
            } else if rto >= self.max_duration {
                bad(
                    "expect.max_rto".into(),
                    format!(
                        "{} is not shorter than max_duration ({}), which aborts the run first",
                        d(rto),
                        d(self.max_duration)
                    ),
                );
            }
        }
        if e.max_detection.is_some_and(|m| m.is_zero()) {
            bad(
                "expect.max_detection".into(),
                "must be longer than zero".into(),
            );
        }
        match (e.failover, e.failovers) {
            (FailoverExpectation::Must, Some(0)) => bad(
                "expect.failovers".into(),
                "0 contradicts failover = \"must\"".into(),
            ),
            (FailoverExpectation::MustNot, Some(n)) if n > 0 => bad(
                "expect.failovers".into(),
                format!("{n} contradicts failover = \"must_not\""),
            ),
            _ => {}
        }
        if e.failover == FailoverExpectation::Must && e.primary_changes == Some(0) {
            bad(
                "expect.primary_changes".into(),
                "0 contradicts failover = \"must\": a failover moves the primary".into(),
            );
        }
        if let (Some(f), Some(p)) = (e.failovers, e.primary_changes) {
            if p < f {
                bad(
                    "expect.primary_changes".into(),
                    format!("{p} is fewer than failovers ({f}): each failover moves the primary"),
                );
            }
        }
        match ScenarioError::from_list(errs) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}
