//! DRT results and their judgement: a [`RunResult`] per run (built from the load's ledger,
//! its verification and the timeline the runner saw), [`judge`] for a verdict per
//! expectation, [`aggregate`] over repeated runs, and the reports: [`render_text`] for the
//! CLI and [`render_html`], one self-contained page with an SVG timeline per run.
//!
//! Everything here is pure: no IO, no clock. Results serialize with serde (JSON for storage).
//!
//! # Times
//!
//! [`RunResult::started_ms`] and [`RunResult::ended_ms`] are milliseconds since the Unix
//! epoch. Every other `*_ms` time in a result is milliseconds since the load started, so a
//! timeline reads from 0.

mod html;
mod text;
mod timeline;

use std::collections::BTreeMap;

use model::InstanceAddr;
use serde::{Deserialize, Serialize};

use crate::load::{Ledger, Verification};
use crate::scenario::{FailoverExpectation, FaultKind, Scenario};

pub use html::render_html;
pub use text::render_text;

/// What one run of a scenario did and measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// The scenario's name.
    pub scenario: String,
    /// The cluster it ran on.
    pub cluster: String,
    /// When the load started, in ms since the Unix epoch. The origin of every other time.
    pub started_ms: u64,
    /// When the run ended (after healing and verification), in ms since the Unix epoch.
    pub ended_ms: u64,
    /// What the clients experienced.
    pub load: LoadSummary,
    /// Whether the acknowledged writes could be checked on the servers afterwards.
    pub verification: Verified,
    /// Acknowledged writes missing on the primary afterwards, by id.
    pub lost: Vec<LostWrite>,
    /// Faults, the control plane's steps and the clients' recoveries, by time.
    pub timeline: Vec<TimelineEvent>,
    /// The measured figures.
    pub figures: Figures,
    /// Acknowledged writes over time, for the chart.
    pub throughput: Throughput,
    /// Why the run was aborted (a guardrail, `dbfleet drt abort`, a signal), if it was.
    pub aborted: Option<String>,
    /// What the old primary acknowledged after the new one opened (a report stored before
    /// this was measured reads as none).
    #[serde(default)]
    pub stale: StaleAcks,
}

/// Writes the old primary acknowledged after a new primary opened: a second primary that
/// acknowledges. Measured on every run; a stale client (`[load] stale_client`) makes it
/// likely to be caught, since it stays on the old primary's address.
///
/// One kind of OK after the opening is not a second primary's: a *late acknowledgement*
/// (`late_after_open`). The `INSERT` was sent before the first fault, and the write is on
/// the primary the run ended with, which is not the old one. When a primary freezes after
/// a semi-sync replica received a commit and sent its ack, the ack waits in the frozen
/// server's socket buffer; the server reads it the moment it resumes and sends the client
/// its OK, before any fence can reach it. The replica had the write before the failover,
/// so the new primary holds it: nothing diverges, the OK only comes late. The write reached
/// the new primary before the failover (during the run nothing replicates from the old
/// primary to the new one afterwards), and the run's lost-write check proves it is there.
/// Such writes are counted and named apart and are not judged as stale; any other write
/// the old primary acknowledged after the opening is.
///
/// The old primary is the stale client's address, else the server of the run's first
/// acknowledged write. The new primary opened at the earlier of the control plane's first
/// [`EventKind::Writable`] event after the first fault and the first write another server
/// acknowledged after it. Only the first move of the primary is judged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleAcks {
    /// The old primary.
    pub old_primary: Option<InstanceAddr>,
    /// The server clients first wrote to after the fault, when they did.
    pub new_primary: Option<InstanceAddr>,
    /// When the new primary opened (ms since the load started); `None`: it never did.
    pub opened_ms: Option<u64>,
    /// Who saw it first: `control plane` or `clients`.
    pub opened_seen_by: Option<String>,
    /// Writes the old primary acknowledged after `opened_ms`, late acknowledgements left
    /// out: what a second primary acknowledged. Judged by `stale_acks_allowed`.
    pub acked_after_open: u64,
    /// Late acknowledgements after `opened_ms`: writes sent before the first fault that the
    /// run's final primary (not the old one) holds. Not judged; see the type's doc.
    #[serde(default)]
    pub late_after_open: u64,
    /// Their ids, the first ten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_ids: Vec<u64>,
    /// When the first and the last of them were acknowledged.
    pub first_ms: Option<u64>,
    /// See `first_ms`.
    pub last_ms: Option<u64>,
    /// Their ids, the first ten.
    pub ids: Vec<u64>,
    /// The stale client's writer index, when the load had one.
    pub pinned_writer: Option<usize>,
    /// Writes the stale client had acknowledged in all (before and after the fault).
    pub pinned_acked: u64,
}

/// The client side of a run: a summary of the load's [`Ledger`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadSummary {
    /// Concurrent writers.
    pub writers: usize,
    /// How long the load ran.
    pub duration_ms: u64,
    /// Acknowledged writes.
    pub acked: u64,
    /// Writes whose outcome the client cannot know; never counted as lost.
    pub in_doubt: u64,
    /// Attempts that certainly wrote nothing.
    pub failed_attempts: u64,
    /// `failed_attempts` by reason.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Cluster-level unavailability windows, by start.
    pub outages: Vec<Window>,
    /// Probe rounds that found more than one writable primary.
    pub split_brain: SplitBrainSummary,
}

impl LoadSummary {
    /// The longest outage (the first of equals): the one that sets the client RTO.
    pub fn longest_outage(&self) -> Option<&Window> {
        self.outages
            .iter()
            .max_by_key(|w| (w.length_ms(self.duration_ms), std::cmp::Reverse(w.from_ms)))
    }
}

/// One unavailability window (see [`Ledger`] for how windows are computed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The start of the first attempt that was not acknowledged.
    pub from_ms: u64,
    /// When the first write after it was acknowledged; `None`: the load ended first.
    pub to_ms: Option<u64>,
    /// The server written to before.
    pub from: Option<InstanceAddr>,
    /// The server written to after.
    pub to: Option<InstanceAddr>,
    /// The writers it covers.
    pub writers: Vec<usize>,
}

impl Window {
    /// Its length; an open window lasts until `load_end_ms`.
    pub fn length_ms(&self, load_end_ms: u64) -> u64 {
        self.to_ms
            .unwrap_or(load_end_ms)
            .saturating_sub(self.from_ms)
    }
}

/// The probe rounds that saw two writable primaries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrainSummary {
    /// How many of the writers' probe rounds saw more than one writable candidate.
    pub rounds: u64,
    /// When the first did (a writer's or the guard's).
    pub first_at_ms: Option<u64>,
    /// Every server seen writable in such a round.
    pub servers: Vec<InstanceAddr>,
    /// How many of the guard's looks (every 200 ms) saw more than one writable member
    /// without aborting the run (a run with a stale client goes on, to measure what the old
    /// primary acknowledges).
    #[serde(default)]
    pub guard_rounds: u64,
    /// When the guard saw it last.
    #[serde(default)]
    pub guard_last_at_ms: Option<u64>,
    /// How many of the guard's looks saw more than one writable member of which at most
    /// one could acknowledge a write: the others ran lossless semi-sync with no member
    /// replicating from them (a replaced primary in the milliseconds between its resume and
    /// its fence; see `runner::guard::mute`). Not a split brain: counted, not judged. Not in
    /// `guard_rounds`, `first_at_ms` or `servers`.
    #[serde(default)]
    pub guard_mute_rounds: u64,
    /// When the guard saw such a look last.
    #[serde(default)]
    pub guard_mute_last_at_ms: Option<u64>,
    /// How many of the writers' probe rounds (which read only `read_only`) saw more than
    /// one writable candidate while a look of the guard proved all but one of them mute:
    /// the round started after the start of the look before that guard look (from then
    /// on nothing replicated from the mute members, and nothing attaches to a writable
    /// replaced primary), and at most one second after it. Not in `rounds`, `first_at_ms`
    /// or `servers`: counted, not judged.
    #[serde(default)]
    pub mute_rounds: u64,
}

/// One look of the guard that saw more than one writable member, at most one of which
/// could acknowledge a write (see `runner::guard::mute`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuteLook {
    /// When the guard's look before it started (epoch ms): no member replicated from the
    /// mute ones from then on.
    pub since_ms: u64,
    /// When this look ended (epoch ms).
    pub at_ms: u64,
    /// Every member it saw writable.
    pub writable: Vec<InstanceAddr>,
    /// Those of them that could not acknowledge.
    pub mute: Vec<InstanceAddr>,
}

/// How long after a mute look of the guard a writers' round is still judged by it.
const MUTE_CARRY_MS: u64 = 1000;

impl MuteLook {
    /// Whether this look proves that at most one of `writable`, seen by a writers' round
    /// started at `at_ms`, could acknowledge.
    fn covers(&self, at_ms: u64, writable: &[InstanceAddr]) -> bool {
        self.since_ms <= at_ms
            && at_ms <= self.at_ms + MUTE_CARRY_MS
            && writable.iter().filter(|a| !self.mute.contains(a)).count() <= 1
    }
}

/// Whether the acknowledged writes were checked on the servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verified {
    /// They were: `writer` must hold them all; `instances` says what each server holds.
    Checked {
        /// The primary after the run.
        writer: InstanceAddr,
        /// One entry per server, the writer first.
        instances: Vec<InstanceSummary>,
    },
    /// They could not be: lost writes are unknown, and the lost-writes verdict fails.
    NotChecked {
        /// Why.
        reason: String,
    },
}

/// What one server holds of a run's writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSummary {
    /// The server.
    pub addr: InstanceAddr,
    /// Whether its rows could be read.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// Why the first read failed, when it was read again (see [`crate::load::verify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<String>,
    /// Rows of the run it holds.
    pub rows: usize,
    /// Acknowledged ids it lacks.
    pub missing: usize,
    /// In-doubt writes it holds: they committed although the client never heard.
    pub present_in_doubt: usize,
}

/// One acknowledged write missing on the primary afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    /// The row's id.
    pub id: u64,
    /// The GTID its commit got, when the client could read it.
    pub gtid: Option<String>,
    /// The server that acknowledged it.
    pub server: InstanceAddr,
    /// The writer.
    pub writer: usize,
    /// When it was acknowledged.
    pub acked_at_ms: u64,
}

/// Something that happened during a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Milliseconds since the load started.
    pub at_ms: u64,
    /// What kind of thing.
    pub kind: EventKind,
    /// What happened, for people, e.g. "killed 127.0.0.1:3306".
    pub label: String,
    /// The index of the scenario's fault it is about, for [`EventKind::FaultInjected`] and
    /// [`EventKind::FaultHealed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<usize>,
}

impl TimelineEvent {
    /// An event at `at_ms` since the load started.
    pub fn new(at_ms: u64, kind: EventKind, label: impl Into<String>) -> Self {
        Self {
            at_ms,
            kind,
            label: label.into(),
            fault: None,
        }
    }

    /// An event at `epoch_ms` (since the Unix epoch), for a load that started at
    /// `load_started_ms`. An event before the start is put at 0.
    pub fn from_epoch(
        load_started_ms: u64,
        epoch_ms: u64,
        kind: EventKind,
        label: impl Into<String>,
    ) -> Self {
        Self::new(epoch_ms.saturating_sub(load_started_ms), kind, label)
    }

    /// The same event, about the scenario's fault `index`.
    pub fn for_fault(mut self, index: usize) -> Self {
        self.fault = Some(index);
        self
    }
}

/// The kinds of [`TimelineEvent`]. `Detected`, `FailoverStarted`, `Promoted`, `Repointed`
/// and `Writable` come from the control plane's events; a run without any has client-side
/// figures only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The runner injected a fault (a switchover too).
    FaultInjected,
    /// The runner healed a fault.
    FaultHealed,
    /// The control plane detected the problem.
    Detected,
    /// The control plane started a failover (never a switchover): each counts as one.
    FailoverStarted,
    /// A replica was promoted (by a failover or a switchover).
    Promoted,
    /// Replicas were repointed to the new primary.
    Repointed,
    /// The new primary was made writable.
    Writable,
    /// The first acknowledged write after an outage (added from the ledger).
    FirstWrite,
    /// The control plane handed a failover to a human (it ended `needs_human`); it does not
    /// count as a failover.
    NeedsHuman,
    /// A failover failed; it does not count as a failover.
    FailoverFailed,
    /// The run was aborted.
    Aborted,
    /// Anything else worth showing.
    Note,
}

impl EventKind {
    /// Every kind, in legend order.
    pub const ALL: [EventKind; 12] = [
        Self::FaultInjected,
        Self::FaultHealed,
        Self::Detected,
        Self::FailoverStarted,
        Self::Promoted,
        Self::Repointed,
        Self::Writable,
        Self::FirstWrite,
        Self::NeedsHuman,
        Self::FailoverFailed,
        Self::Aborted,
        Self::Note,
    ];

    /// A name for people, e.g. "fault injected".
    pub fn name(&self) -> &'static str {
        match self {
            Self::FaultInjected => "fault injected",
            Self::FaultHealed => "fault healed",
            Self::Detected => "detected",
            Self::FailoverStarted => "failover started",
            Self::Promoted => "promoted",
            Self::Repointed => "repointed",
            Self::Writable => "writable",
            Self::FirstWrite => "first write",
            Self::NeedsHuman => "needs human",
            Self::FailoverFailed => "failover failed",
            Self::Aborted => "aborted",
            Self::Note => "note",
        }
    }

    /// Whether the control plane reports it.
    pub fn from_control_plane(&self) -> bool {
        matches!(
            self,
            Self::Detected
                | Self::FailoverStarted
                | Self::Promoted
                | Self::Repointed
                | Self::Writable
                | Self::NeedsHuman
                | Self::FailoverFailed
        )
    }
}

/// The figures a run measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Client-side RTO: the longest outage (0 when there was none).
    pub rto_ms: u64,
    /// Whether that outage was still open when the load ended.
    pub rto_open: bool,
    /// From the first fault's injection (the first fault on the primary, when the scenario
    /// has one) to the control plane's first detection after it.
    pub detection_ms: Option<u64>,
    /// From the first failover's start to the new primary being writable (or, without that
    /// event, promoted).
    pub failover_ms: Option<u64>,
    /// Failovers: the control plane's `FailoverStarted` events less those that ended
    /// `needs_human` or failed, or client-side the moves of the primary less the
    /// switchovers injected.
    pub failovers: u32,
    /// Moves of the writable primary as the clients saw them.
    pub primary_changes: u32,
    /// From the first fault's injection to the new primary opening (see
    /// [`StaleAcks::opened_ms`]): the control plane's `writable` event or the clients' first
    /// write on another server, whichever came first. `None`: no new primary opened.
    #[serde(default)]
    pub writable_ms: Option<u64>,
    /// The servers that acknowledged writes, in the order the clients moved between them.
    pub primaries: Vec<InstanceAddr>,
    /// Where detection and failover figures came from.
    pub source: FigureSource,
}

/// Where a run's figures came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureSource {
    /// The timeline has the control plane's events: detection and failover are measured.
    ControlPlane,
    /// Only the clients' view (e.g. a cluster failed over by another tool).
    ClientOnly,
}

/// Acknowledged writes per time bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    /// The bucket width.
    pub bucket_ms: u64,
    /// Acknowledged writes in each bucket, from the load's start.
    pub acked: Vec<u32>,
}

/// What a runner hands to [`RunResult::build`].
#[derive(Debug)]
pub struct RunParts<'a> {
    /// The scenario that ran.
    pub scenario: &'a Scenario,
    /// The cluster it ran on.
    pub cluster: String,
    /// The load's ledger.
    pub ledger: &'a Ledger,
    /// The verification afterwards, or why it could not be done.
    pub verification: Result<&'a Verification, String>,
    /// Faults and the control plane's events, at ms since the load started (see
    /// [`TimelineEvent::from_epoch`]). First writes after outages are added from the ledger.
    pub events: Vec<TimelineEvent>,
    /// When the run ended, in ms since the Unix epoch.
    pub ended_ms: u64,
    /// Why the run was aborted, if it was.
    pub aborted: Option<String>,
    /// What the guard saw writable when it saw more than one member writable, more than
    /// one of which could acknowledge, and the run went on (epoch ms, the writable members).
    pub guard_split_brain: Vec<(u64, Vec<InstanceAddr>)>,
    /// The guard's looks that saw more than one member writable but at most one that could
    /// acknowledge.
    pub guard_mute: Vec<MuteLook>,
}

/// At most this many buckets in [`Throughput`].
const MAX_BUCKETS: u64 = 200;

impl RunResult {
    /// Summarize a run: outages, lost writes, timeline and figures.
    pub fn build(p: RunParts<'_>) -> RunResult {
        let l = p.ledger;
        let t0 = l.started_ms;
        let rel = |ms: u64| ms.saturating_sub(t0);
        let load_end = rel(l.ended_ms);

        let outages: Vec<Window> = l
            .outages
            .iter()
            .map(|o| Window {
                from_ms: rel(o.first_failure_ms),
                to_ms: o.recovered_ms.map(rel),
                from: o.from.clone(),
                to: o.to.clone(),
                writers: o.writers.clone(),
            })
            .collect();
        // The writers' rounds that a mute look of the guard explains, and the others.
        let (writers_mute, writers_split): (Vec<_>, Vec<_>) = l
            .split_brain
            .iter()
            .partition(|s| p.guard_mute.iter().any(|m| m.covers(s.at_ms, &s.writable)));
        let mut split_servers: Vec<InstanceAddr> = Vec::new();
        let guard_seen = p.guard_split_brain.iter().map(|(_, w)| w);
        for w in writers_split.iter().map(|s| &s.writable).chain(guard_seen) {
            for a in w {
                if !split_servers.contains(a) {
                    split_servers.push(a.clone());
                }
            }
        }
        let guard_first = p.guard_split_brain.iter().map(|(at, _)| rel(*at)).min();
        let load = LoadSummary {
            writers: l.writers,
            duration_ms: load_end,
            acked: l.acked.len() as u64,
            in_doubt: l.in_doubt.len() as u64,
            failed_attempts: l.failed_attempts,
            failure_reasons: l.failure_reasons.clone(),
            outages,
            split_brain: SplitBrainSummary {
                rounds: writers_split.len() as u64,
                first_at_ms: writers_split
                    .iter()
                    .map(|s| rel(s.at_ms))
                    .chain(guard_first)
                    .min(),
                servers: split_servers,
                guard_rounds: p.guard_split_brain.len() as u64,
                guard_last_at_ms: p.guard_split_brain.iter().map(|(at, _)| rel(*at)).max(),
                guard_mute_rounds: p.guard_mute.len() as u64,
                guard_mute_last_at_ms: p.guard_mute.iter().map(|m| rel(m.at_ms)).max(),
                mute_rounds: writers_mute.len() as u64,
            },
        };

        let (verification, mut lost) = match p.verification {
            Ok(v) => (
                Verified::Checked {
                    writer: v.writer.clone(),
                    instances: v
                        .per_instance
                        .iter()
                        .map(|c| InstanceSummary {
                            addr: c.addr.clone(),
                            reachable: c.reachable,
                            error: c.error.clone(),
                            retried: c.retried.clone(),
                            rows: c.rows,
                            missing: c.missing.len(),
                            present_in_doubt: c.present_in_doubt,
                        })
                        .collect(),
                },
                v.lost
                    .iter()
                    .map(|a| LostWrite {
                        id: a.id,
                        gtid: a.gtid.clone(),
                        server: a.server.clone(),
                        writer: a.writer,
                        acked_at_ms: rel(a.at_ms),
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(reason) => (Verified::NotChecked { reason }, Vec::new()),
        };
        lost.sort_by_key(|w| w.id);

        let mut timeline = p.events;
        for w in &load.outages {
            if let Some(to_ms) = w.to_ms {
                let label = match (&w.from, &w.to) {
                    (Some(a), Some(b)) if a != b => format!("writes resume on {b} (was {a})"),
                    (_, Some(b)) => format!("writes resume on {b}"),
                    _ => "writes resume".to_string(),
                };
                timeline.push(TimelineEvent::new(to_ms, EventKind::FirstWrite, label));
            }
        }
        if let Some(at) = load.split_brain.first_at_ms {
            let sb = &load.split_brain;
            let guard = match (sb.guard_rounds, sb.guard_last_at_ms) {
                (0, _) | (_, None) => String::new(),
                (n, Some(last)) => format!(
                    "; the guard saw it {n} time{} until {}",
                    plural(n),
                    fmt_ms(last)
                ),
            };
            timeline.push(TimelineEvent::new(
                at,
                EventKind::Note,
                format!(
                    "two writable primaries: {} ({} probe round{}{guard})",
                    join(&sb.servers),
                    sb.rounds,
                    plural(sb.rounds)
                ),
            ));
        }
        if let Some(reason) = &p.aborted {
            if !timeline.iter().any(|e| e.kind == EventKind::Aborted) {
                timeline.push(TimelineEvent::new(
                    rel(p.ended_ms),
                    EventKind::Aborted,
                    format!("aborted: {reason}"),
                ));
            }
        }
        timeline.sort_by_key(|e| e.at_ms);

        let mut figures = figures(p.scenario, l, &load, &timeline);
        let held = match &verification {
            Verified::Checked { writer, .. } => Some(Held {
                writer,
                lost: lost.iter().map(|w| w.id).collect(),
            }),
            Verified::NotChecked { .. } => None,
        };
        let stale = stale_acks(
            l,
            &timeline,
            first_fault(p.scenario, &timeline),
            held.as_ref(),
        );
        figures.writable_ms = match (stale.opened_ms, first_fault(p.scenario, &timeline)) {
            (Some(o), Some(f)) => Some(o.saturating_sub(f)),
            _ => None,
        };
        let throughput = throughput(l, load_end);
        RunResult {
            scenario: p.scenario.name.clone(),
            cluster: p.cluster,
            started_ms: t0,
            ended_ms: p.ended_ms,
            load,
            verification,
            lost,
            timeline,
            figures,
            throughput,
            aborted: p.aborted,
            stale,
        }
    }

    /// Whether the acknowledged writes were checked.
    pub fn verified(&self) -> bool {
        matches!(self.verification, Verified::Checked { .. })
    }
}

fn figures(
    scenario: &Scenario,
    l: &Ledger,
    load: &LoadSummary,
    timeline: &[TimelineEvent],
) -> Figures {
    let longest = load.longest_outage();
    let rto_ms = longest.map_or(0, |w| w.length_ms(load.duration_ms));
    let rto_open = longest.is_some_and(|w| w.to_ms.is_none());

    let first_at = |kind: EventKind, from: u64| {
        timeline
            .iter()
            .filter(|e| e.kind == kind && e.at_ms >= from)
            .map(|e| e.at_ms)
            .min()
    };
    let first_fault = first_fault(scenario, timeline);
    let detection_ms = first_fault.and_then(|f| first_at(EventKind::Detected, f).map(|d| d - f));
    let failover_ms = first_at(EventKind::FailoverStarted, 0).and_then(|s| {
        first_at(EventKind::Writable, s)
            .or_else(|| first_at(EventKind::Promoted, s))
            .map(|e| e - s)
    });

    let mut acks: Vec<&crate::load::Ack> = l.acked.iter().collect();
    acks.sort_by_key(|a| a.at_ms);
    let mut primaries: Vec<InstanceAddr> =
        acks.first().map(|a| a.server.clone()).into_iter().collect();
    let mut primary_changes = 0u32;
    for w in &load.outages {
        if let Some(to) = &w.to {
            if primaries.last() != Some(to) {
                if !primaries.is_empty() {
                    primary_changes += 1;
                }
                primaries.push(to.clone());
            }
        }
    }

    let control_plane = timeline.iter().any(|e| e.kind.from_control_plane());
    let (source, failovers) = if control_plane {
        let count = |k: EventKind| timeline.iter().filter(|e| e.kind == k).count();
        let n = count(EventKind::FailoverStarted)
            .saturating_sub(count(EventKind::NeedsHuman) + count(EventKind::FailoverFailed));
        (FigureSource::ControlPlane, n as u32)
    } else {
        let injected: Vec<usize> = timeline
            .iter()
            .filter(|e| e.kind == EventKind::FaultInjected)
            .filter_map(|e| e.fault)
            .collect();
        let switchovers = if injected.is_empty() {
            scenario.switchovers()
        } else {
            injected
                .iter()
                .filter(|i| {
                    scenario
                        .faults
                        .get(**i)
                        .is_some_and(|f| f.kind == FaultKind::Switchover)
                })
                .count()
        };
        (
            FigureSource::ClientOnly,
            primary_changes.saturating_sub(switchovers as u32),
        )
    };
    Figures {
        rto_ms,
        rto_open,
        detection_ms,
        failover_ms,
        failovers,
        primary_changes,
        writable_ms: None,
        primaries,
        source,
    }
}

/// When the first fault was injected (ms since the load started), the origin of detection
/// and fault→writable: the first injection of a fault on the primary when the scenario has
/// one (a delayed or stalled replica set up before it is not what is detected), else the
/// first injection; from the plan when the timeline has none.
fn first_fault(scenario: &Scenario, timeline: &[TimelineEvent]) -> Option<u64> {
    let on_primary = |i: usize| scenario.faults.get(i).is_some_and(|f| f.on_primary());
    let injected = || {
        timeline
            .iter()
            .filter(|e| e.kind == EventKind::FaultInjected)
    };
    injected()
        .filter(|e| e.fault.is_some_and(on_primary))
        .map(|e| e.at_ms)
        .min()
        .or_else(|| injected().map(|e| e.at_ms).min())
        .or_else(|| {
            let plan = scenario.plan();
            plan.iter()
                .find(|s| on_primary(s.fault))
                .or(plan.first())
                .map(|s| s.at.as_millis() as u64)
        })
}

/// Ids of stale acknowledgements listed in [`StaleAcks::ids`].
const STALE_IDS: usize = 10;

/// What the primary a run ended with holds: every acknowledged write but the lost ones.
struct Held<'a> {
    writer: &'a InstanceAddr,
    lost: std::collections::HashSet<u64>,
}

/// What the old primary acknowledged after the new one opened; see [`StaleAcks`].
fn stale_acks(
    l: &Ledger,
    timeline: &[TimelineEvent],
    first_fault: Option<u64>,
    held: Option<&Held<'_>>,
) -> StaleAcks {
    let rel = |ms: u64| ms.saturating_sub(l.started_ms);
    let pinned = l.pinned.as_ref();
    let mut acks: Vec<&crate::load::Ack> = l.acked.iter().collect();
    acks.sort_by_key(|a| (a.at_ms, a.id));
    let old = pinned
        .map(|p| p.addr.clone())
        .or_else(|| acks.first().map(|a| a.server.clone()));
    let mut out = StaleAcks {
        old_primary: old.clone(),
        pinned_writer: pinned.map(|p| p.writer),
        pinned_acked: pinned.map_or(0, |p| {
            l.acked.iter().filter(|a| a.writer == p.writer).count() as u64
        }),
        ..StaleAcks::default()
    };
    let (Some(old), Some(fault)) = (old, first_fault) else {
        return out;
    };
    let by_control_plane = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Writable && e.at_ms >= fault)
        .map(|e| e.at_ms)
        .min();
    let by_clients = acks
        .iter()
        .filter(|a| pinned.is_none_or(|p| p.writer != a.writer))
        .find(|a| a.server != old && rel(a.at_ms) >= fault);
    out.new_primary = by_clients.map(|a| a.server.clone());
    let opened = match (by_control_plane, by_clients.map(|a| rel(a.at_ms))) {
        (Some(c), Some(w)) if w < c => Some((w, "clients")),
        (Some(c), _) => Some((c, "control plane")),
        (None, Some(w)) => Some((w, "clients")),
        (None, None) => None,
    };
    let Some((opened_ms, seen_by)) = opened else {
        return out;
    };
    out.opened_ms = Some(opened_ms);
    out.opened_seen_by = Some(seen_by.to_string());
    let after: Vec<&&crate::load::Ack> = acks
        .iter()
        .filter(|a| a.server == old && rel(a.at_ms) > opened_ms)
        .collect();
    // A late acknowledgement: sent before the fault (a ledger without send times has
    // none), and on the final primary, which is not the old one.
    let late = |a: &crate::load::Ack| {
        a.sent_ms != 0
            && rel(a.sent_ms) < fault
            && held.is_some_and(|h| *h.writer != old && !h.lost.contains(&a.id))
    };
    let (late_acks, stale): (Vec<&&crate::load::Ack>, Vec<&&crate::load::Ack>) =
        after.into_iter().partition(|a| late(a));
    out.late_after_open = late_acks.len() as u64;
    out.late_ids = late_acks.iter().take(STALE_IDS).map(|a| a.id).collect();
    out.acked_after_open = stale.len() as u64;
    out.first_ms = stale.first().map(|a| rel(a.at_ms));
    out.last_ms = stale.last().map(|a| rel(a.at_ms));
    out.ids = stale.iter().take(STALE_IDS).map(|a| a.id).collect();
    out
}

fn throughput(l: &Ledger, load_end: u64) -> Throughput {
    let per = load_end.div_ceil(MAX_BUCKETS).max(100);
    let bucket_ms = per.div_ceil(100) * 100;
    let n = load_end.div_ceil(bucket_ms).max(1) as usize;
    let mut acked = vec![0u32; n];
    for a in &l.acked {
        let i = (a.at_ms.saturating_sub(l.started_ms) / bucket_ms) as usize;
        acked[i.min(n - 1)] += 1;
    }
    Throughput { bucket_ms, acked }
}

/// The judgement of one expectation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The expectation, e.g. "at most 0 lost writes".
    pub expectation: String,
    /// Whether it held.
    pub pass: bool,
    /// What was measured, and the ids of lost writes.
    pub detail: String,
}

/// Lost ids listed in a verdict's detail before "and N more".
const LOST_IN_DETAIL: usize = 10;

/// Judge a run against its scenario: one verdict per expectation the scenario sets, plus
/// the invariants every run must keep (it was not aborted, and never two writable
/// primaries). The list depends only on the scenario, so repeated runs line up.
pub fn judge(s: &Scenario, r: &RunResult) -> Vec<Verdict> {
    let e = &s.expect;
    let mut out = Vec::new();
    let mut verdict = |expectation: String, pass: bool, detail: String| {
        out.push(Verdict {
            expectation,
            pass,
            detail,
        })
    };

    let allowed = e.lost_writes_allowed;
    let lost_expectation = format!(
        "at most {allowed} lost write{}",
        if allowed == 1 { "" } else { "s" }
    );
    match &r.verification {
        Verified::NotChecked { reason } => verdict(
            lost_expectation,
            false,
            format!("not verified, so lost writes are unknown: {reason}"),
        ),
        Verified::Checked { writer, .. } => {
            let n = r.lost.len() as u64;
            let detail = if n == 0 {
                format!(
                    "none of {} acknowledged writes is missing on {writer}",
                    r.load.acked
                )
            } else {
                let mut ids: Vec<String> = r
                    .lost
                    .iter()
                    .take(LOST_IN_DETAIL)
                    .map(|w| match &w.gtid {
                        Some(g) => format!("{} (GTID {g})", w.id),
                        None => w.id.to_string(),
                    })
                    .collect();
                if r.lost.len() > LOST_IN_DETAIL {
                    ids.push(format!("and {} more", r.lost.len() - LOST_IN_DETAIL));
                }
                format!(
                    "{n} of {} acknowledged writes missing on {writer}: {}",
                    r.load.acked,
                    ids.join(", ")
                )
            };
            verdict(lost_expectation, n <= allowed, detail);
        }
    }

    if let Some(max) = e.max_rto {
        let max_ms = max.as_millis() as u64;
        let longest = r.load.longest_outage();
        let detail = match longest {
            None => "no outage".to_string(),
            Some(w) => {
                let mut d = format!(
                    "longest outage {} (from {}",
                    fmt_ms(r.figures.rto_ms),
                    fmt_ms(w.from_ms)
                );
                match w.to_ms {
                    Some(to) => d.push_str(&format!(" to {})", fmt_ms(to))),
                    None => d.push_str(", still open when the load ended)"),
                }
                if let (Some(a), Some(b)) = (&w.from, &w.to) {
                    if a != b {
                        d.push_str(&format!(", {a} → {b}"));
                    }
                }
                d
            }
        };
        verdict(
            format!("client RTO at most {}", fmt_ms(max_ms)),
            r.figures.rto_ms <= max_ms,
            format!("{detail}; limit {}", fmt_ms(max_ms)),
        );
    }

    let moved = describe_moves(r);
    match e.failover {
        FailoverExpectation::Must => verdict(
            "a failover happens".into(),
            r.figures.failovers >= 1,
            moved.clone(),
        ),
        FailoverExpectation::MustNot => verdict(
            "no failover".into(),
            r.figures.failovers == 0,
            moved.clone(),
        ),
        FailoverExpectation::Any => {}
    }
    if let Some(n) = e.failovers {
        verdict(
            format!("exactly {n} failover{}", plural(n as u64)),
            r.figures.failovers == n,
            moved.clone(),
        );
    }
    if let Some(n) = e.primary_changes {
        verdict(
            format!("the primary moves exactly {n} time{}", plural(n as u64)),
            r.figures.primary_changes == n,
            moved,
        );
    }
    if let Some(max) = e.max_detection {
        let max_ms = max.as_millis() as u64;
        let (pass, detail) = match r.figures.detection_ms {
            Some(d) => (d <= max_ms, format!("detected after {}", fmt_ms(d))),
            None if r.figures.source == FigureSource::ClientOnly => (
                false,
                "not measured: no control-plane events (a cluster managed by another tool \
                 gives client-side figures only)"
                    .to_string(),
            ),
            None => (false, "no detection after the first fault".to_string()),
        };
        verdict(
            format!("detection within {}", fmt_ms(max_ms)),
            pass,
            format!("{detail}; limit {}", fmt_ms(max_ms)),
        );
    }

    let st = &r.stale;
    let allowed = e.stale_acks_allowed;
    verdict(
        format!(
            "at most {allowed} write{} acknowledged by the old primary after the new one opened",
            plural(allowed)
        ),
        st.acked_after_open <= allowed,
        stale_detail(st),
    );
    if e.needs_human == Some(true) {
        let handed = r
            .timeline
            .iter()
            .find(|ev| ev.kind == EventKind::NeedsHuman);
        let (pass, detail) = match handed {
            Some(ev) => (true, format!("at {}: {}", fmt_ms(ev.at_ms), ev.label)),
            None if r.figures.source == FigureSource::ClientOnly => (
                false,
                "not measured: no control-plane events (run with --api)".to_string(),
            ),
            None => (
                false,
                "no operation of the control plane ended needs_human".to_string(),
            ),
        };
        verdict(
            "the control plane hands the failover to a human".into(),
            pass,
            detail,
        );
    }

    let sb = &r.load.split_brain;
    let mut mute = match (sb.guard_mute_rounds, sb.guard_mute_last_at_ms) {
        (0, _) | (_, None) => String::new(),
        (n, Some(last)) => format!(
            "; {n} look{} of the guard (last at {}) found a second writable server that could \
             not acknowledge (lossless semi-sync, no member replicating from it)",
            plural(n),
            fmt_ms(last)
        ),
    };
    if sb.mute_rounds > 0 {
        mute += &format!(
            "; {} probe round{} of the writers saw a second writable server that such a look \
             proved mute",
            sb.mute_rounds,
            plural(sb.mute_rounds)
        );
    }
    verdict(
        "never two writable primaries that can acknowledge".into(),
        sb.rounds == 0 && sb.guard_rounds == 0,
        if sb.rounds == 0 && sb.guard_rounds == 0 {
            format!(
                "every probe round found at most one writable server that can acknowledge{mute}"
            )
        } else {
            format!(
                "{} probe round{} of the writers and {} look{} of the guard found several \
                 writable servers ({}), first at {}{}",
                sb.rounds,
                plural(sb.rounds),
                sb.guard_rounds,
                plural(sb.guard_rounds),
                join(&sb.servers),
                fmt_ms(sb.first_at_ms.unwrap_or(0)),
                sb.guard_last_at_ms
                    .map(|l| format!(", last seen by the guard at {}", fmt_ms(l)))
                    .unwrap_or_default()
            ) + &mute
        },
    );
    verdict(
        "the run completes without abort".into(),
        r.aborted.is_none(),
        match &r.aborted {
            None => format!("ran {}", fmt_ms(r.ended_ms.saturating_sub(r.started_ms))),
            Some(reason) => format!("aborted: {reason}"),
        },
    );
    out
}

fn stale_detail(st: &StaleAcks) -> String {
    let client = match (st.pinned_writer, &st.old_primary) {
        (Some(w), Some(a)) => format!(
            "; the stale client (writer {w}) stayed on {a} and had {} write{} acknowledged",
            st.pinned_acked,
            plural(st.pinned_acked)
        ),
        _ => String::new(),
    };
    let Some(opened) = st.opened_ms else {
        return format!("no new primary opened{client}");
    };
    let new = st
        .new_primary
        .as_ref()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    let seen = st.opened_seen_by.as_deref().unwrap_or("?");
    let old = st
        .old_primary
        .as_ref()
        .map_or("?".to_string(), |a| a.to_string());
    let late = if st.late_after_open == 0 {
        String::new()
    } else {
        let ids: Vec<String> = st.late_ids.iter().map(u64::to_string).collect();
        format!(
            "; {} late acknowledgement{} not counted (sent before the fault, held by the new \
             primary: its replica's ack was waiting in the frozen server): ids {}{}",
            st.late_after_open,
            plural(st.late_after_open),
            ids.join(", "),
            if st.late_after_open as usize > st.late_ids.len() {
                ", …"
            } else {
                ""
            }
        )
    };
    if st.acked_after_open == 0 {
        format!(
            "the new primary{new} opened at {} (seen by the {seen}); {old} acknowledged \
             nothing after it{late}{client}",
            fmt_ms(opened)
        )
    } else {
        let ids: Vec<String> = st.ids.iter().map(u64::to_string).collect();
        format!(
            "the new primary{new} opened at {} (seen by the {seen}); {old} acknowledged {} \
             write{} after it, from {} to {}: ids {}{}{late}{client}",
            fmt_ms(opened),
            st.acked_after_open,
            plural(st.acked_after_open),
            fmt_ms(st.first_ms.unwrap_or(0)),
            fmt_ms(st.last_ms.unwrap_or(0)),
            ids.join(", "),
            if st.acked_after_open as usize > st.ids.len() {
                ", …"
            } else {
                ""
            }
        )
    }
}

/// Whether every verdict passed.
pub fn passed(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.pass)
}

fn describe_moves(r: &RunResult) -> String {
    let f = &r.figures;
    let path = if f.primaries.len() > 1 {
        format!("; clients wrote to {}", join_arrow(&f.primaries))
    } else if let Some(p) = f.primaries.first() {
        format!("; clients wrote to {p} throughout")
    } else {
        "; no write was acknowledged".to_string()
    };
    match f.source {
        FigureSource::ControlPlane => format!(
            "{} failover{} in the control plane's events{path}",
            f.failovers,
            plural(f.failovers as u64)
        ),
        FigureSource::ClientOnly => format!(
            "{} failover{} seen by clients ({} move{} of the primary, less switchovers){path}",
            f.failovers,
            plural(f.failovers as u64),
            f.primary_changes,
            plural(f.primary_changes as u64)
        ),
    }
}

/// Summary statistics of one figure over runs, by the nearest-rank method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Runs that measured it.
    pub samples: usize,
    /// The smallest.
    pub min_ms: u64,
    /// The median (nearest rank: the ⌈n/2⌉-th smallest).
    pub p50_ms: u64,
    /// The 95th percentile (the ⌈0.95·n⌉-th smallest).
    pub p95_ms: u64,
    /// The largest.
    pub max_ms: u64,
}

impl Stats {
    /// Statistics of `values`; `None` when empty.
    pub fn of(values: &[u64]) -> Option<Stats> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let n = v.len();
        let rank = |p: usize| v[(p * n).div_ceil(100).clamp(1, n) - 1];
        Some(Stats {
            samples: n,
            min_ms: v[0],
            p50_ms: rank(50),
            p95_ms: rank(95),
            max_ms: v[n - 1],
        })
    }
}

/// Figures over repeated runs of one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Runs.
    pub runs: usize,
    /// Runs that were aborted.
    pub aborted: usize,
    /// Client RTO over every run.
    pub rto: Option<Stats>,
    /// Detection time over the runs that measured it.
    pub detection: Option<Stats>,
    /// Failover duration over the runs that measured it.
    pub failover: Option<Stats>,
    /// From the first fault to the new primary opening ([`Figures::writable_ms`]), over
    /// the runs where one opened.
    #[serde(default)]
    pub writable: Option<Stats>,
    /// Writes the old primary acknowledged after the new one opened, over every run
    /// (late acknowledgements left out, see [`StaleAcks`]).
    #[serde(default)]
    pub stale_acks_total: u64,
    /// Late acknowledgements after the new primary opened, over every run.
    #[serde(default)]
    pub late_acks_total: u64,
    /// Lost writes over every run.
    pub lost_total: u64,
    /// Acknowledged writes over every run.
    pub acked_total: u64,
    /// In-doubt writes over every run.
    pub in_doubt_total: u64,
    /// Failovers over every run.
    pub failovers_total: u64,
    /// Runs whose writes could not be verified.
    pub unverified: usize,
}

/// Aggregate repeated runs: p50, p95 and max of RTO, detection and failover duration, and
/// totals.
pub fn aggregate(runs: &[RunResult]) -> Aggregate {
    let pick =
        |f: fn(&RunResult) -> Option<u64>| -> Vec<u64> { runs.iter().filter_map(f).collect() };
    Aggregate {
        runs: runs.len(),
        aborted: runs.iter().filter(|r| r.aborted.is_some()).count(),
        rto: Stats::of(&pick(|r| Some(r.figures.rto_ms))),
        detection: Stats::of(&pick(|r| r.figures.detection_ms)),
        failover: Stats::of(&pick(|r| r.figures.failover_ms)),
        writable: Stats::of(&pick(|r| r.figures.writable_ms)),
        stale_acks_total: runs.iter().map(|r| r.stale.acked_after_open).sum(),
        late_acks_total: runs.iter().map(|r| r.stale.late_after_open).sum(),
        lost_total: runs.iter().map(|r| r.lost.len() as u64).sum(),
        acked_total: runs.iter().map(|r| r.load.acked).sum(),
        in_doubt_total: runs.iter().map(|r| r.load.in_doubt).sum(),
        failovers_total: runs.iter().map(|r| r.figures.failovers as u64).sum(),
        unverified: runs.iter().filter(|r| !r.verified()).count(),
    }
}

/// A stored DRT report: the scenario as it ran, every run with its verdicts, and the
/// aggregate. This is what `dbfleet drt report ID` reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario, with overrides applied.
    pub scenario: Scenario,
    /// The runs, in order.
    pub runs: Vec<RunResult>,
    /// Each run's verdicts, in the same order.
    pub verdicts: Vec<Vec<Verdict>>,
    /// Figures over the runs.
    pub aggregate: Aggregate,
    /// Whether every run passed every verdict (false with no run).
    pub pass: bool,
}

impl Report {
    /// Judge and aggregate `runs` of `scenario`.
    pub fn new(scenario: Scenario, runs: Vec<RunResult>) -> Report {
        let verdicts: Vec<Vec<Verdict>> = runs.iter().map(|r| judge(&scenario, r)).collect();
        let pass = !runs.is_empty() && verdicts.iter().all(|v| passed(v));
        let aggregate = aggregate(&runs);
        Report {
            scenario,
            runs,
            verdicts,
            aggregate,
            pass,
        }
    }

    /// [`render_text`] of this report.
    pub fn text(&self) -> String {
        render_text(&self.scenario, &self.runs, &self.aggregate)
    }

    /// [`render_html`] of this report.
    pub fn html(&self) -> String {
        render_html(&self.scenario, &self.runs, &self.aggregate)
    }
}

/// A duration in ms for people: `850ms`, `3.21s`, `2.5s`, `10s`, `2m 5s`.
pub(crate) fn fmt_ms(ms: u64) -> String {
    fn secs(ms: u64) -> String {
        let text = format!("{:.2}", ms as f64 / 1000.0);
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    }
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        secs(ms)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}m {}", ms / 60_000, secs(ms % 60_000))
    }
}

/// An epoch time in ms as RFC 3339, to the second, UTC.
pub(crate) fn fmt_epoch(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn join(addrs: &[InstanceAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn join_arrow(addrs: &[InstanceAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=10).collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!((s.min_ms, s.p50_ms, s.p95_ms, s.max_ms), (1, 5, 10, 10));
        let v: Vec<u64> = (1..=20).rev().collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!((s.p50_ms, s.p95_ms, s.max_ms), (10, 19, 20));
        let s = Stats::of(&[7]).unwrap();
        assert_eq!((s.p50_ms, s.p95_ms, s.max_ms), (7, 7, 7));
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(fmt_ms(850), "850ms");
        assert_eq!(fmt_ms(3210), "3.21s");
        assert_eq!(fmt_ms(2500), "2.5s");
        assert_eq!(fmt_ms(10_000), "10s");
        assert_eq!(fmt_ms(120_000), "2m");
        assert_eq!(fmt_ms(125_000), "2m 5s");
        assert_eq!(fmt_ms(125_250), "2m 5.25s");
    }
}
