//! `Ledger`: the outcome of every write of a load, and the outage windows computed from
//! them. Pure data; no IO.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use model::InstanceAddr;
use serde::{Deserialize, Serialize};

use super::TableName;

/// What the clients of one load experienced.
///
/// # Outcomes
///
/// - [`Ledger::acked`]: the `INSERT` returned OK. The row must exist on the primary that
///   acknowledged it and on every server that has its GTID.
/// - [`Ledger::in_doubt`]: the `INSERT` was sent but its outcome is unknown (the connection
///   broke, the statement timed out, the server shut down or killed the connection). The
///   row may or may not exist; it is never counted as lost.
/// - [`Ledger::failed_attempts`]: attempts that certainly wrote nothing: the server refused
///   the statement (e.g. 1290, `read_only`), or the writer found no writable primary among
///   the candidates (one failed attempt per probe round). [`Ledger::failure_reasons`]
///   counts them by reason.
///
/// # Outages
///
/// A writer's outage opens at the start of its first attempt that is not acknowledged (in
/// doubt or failed) while it is not already in one, and closes when its next write is
/// acknowledged. `from` is the server of the writer's last acknowledged write before (none
/// if it never had one), `to` the server that acknowledged the write that closed it. An
/// outage still open when the load ends has no `recovered_ms`. These are
/// [`Ledger::writer_outages`].
///
/// [`Ledger::outages`] are the cluster-level windows: the union of the writers' windows,
/// where overlapping (or touching) windows merge into one. A window is unavailability for
/// *some* client, which is the conservative reading. Its `from` is the `from` of the window
/// that opened first, its `to` the `to` of the one that closed last, and it is open if any
/// of its members is. The client-side RTO is [`Ledger::max_outage`], the longest merged
/// window; an open one counts up to [`Ledger::ended_ms`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The table written to.
    pub table: TableName,
    /// This run's tag: every id of the run is in [`Ledger::id_range`].
    pub run_tag: u64,
    /// The number of writers.
    pub writers: usize,
    /// When the run started.
    pub started_ms: u64,
    /// When the last writer stopped.
    pub ended_ms: u64,
    /// Acknowledged writes, by acknowledgement time.
    pub acked: Vec<Ack>,
    /// Writes whose outcome is unknown, by the time their failure was seen.
    pub in_doubt: Vec<InDoubt>,
    /// Attempts that certainly wrote nothing.
    pub failed_attempts: u64,
    /// `failed_attempts` by reason, e.g. `"server error 1290"`, `"no writable primary"`.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Cluster-level unavailability windows (merged across writers), by start.
    pub outages: Vec<Outage>,
    /// Each writer's own outages, by start.
    pub writer_outages: Vec<Outage>,
    /// Probe rounds that found more than one writable candidate.
    pub split_brain: Vec<SplitBrain>,
    /// The stale client, when the load had one ([`super::LoadOptions::pinned`]): its
    /// writes are in [`Ledger::acked`] and [`Ledger::in_doubt`] like any other, but it
    /// opens no outage and never probes, so it is in neither the outages nor the split-brain
    /// rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedWriter>,
}

/// The stale client of a load: one writer that always writes to the same address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedWriter {
    /// Its writer index (the last one: [`Ledger::writers`] counts it).
    pub writer: usize,
    /// The address it stays on.
    pub addr: InstanceAddr,
}

/// One acknowledged write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The row's id.
    pub id: u64,
    /// The writer's index.
    pub writer: usize,
    /// When the OK arrived.
    pub at_ms: u64,
    /// When the `INSERT` was sent (0 in a ledger stored before this was recorded).
    #[serde(default)]
    pub sent_ms: u64,
    /// `@@last_gtid` after the commit; `None` when it could not be read (the connection broke
    /// right after the OK) or was empty.
    pub gtid: Option<String>,
    /// The server that acknowledged it.
    pub server: InstanceAddr,
}

/// One write whose outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InDoubt {
    /// The row's id.
    pub id: u64,
    /// The writer's index.
    pub writer: usize,
    /// When the `INSERT` was sent.
    pub sent_ms: u64,
    /// When its failure was seen.
    pub at_ms: u64,
    /// The server it was sent to.
    pub server: InstanceAddr,
    /// The error, as the client saw it.
    pub error: String,
}

/// One window during which writes were not acknowledged. See [`Ledger`] for how windows are
/// computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    /// The start of the first attempt that was not acknowledged.
    pub first_failure_ms: u64,
    /// When the first write after it was acknowledged; `None` if the load ended first.
    pub recovered_ms: Option<u64>,
    /// The server written to before the window.
    pub from: Option<InstanceAddr>,
    /// The server written to after it.
    pub to: Option<InstanceAddr>,
    /// The writers the window covers.
    pub writers: Vec<usize>,
}

impl Outage {
    /// The window's length; an open window counts up to `ended_ms`.
    pub fn length(&self, ended_ms: u64) -> Duration {
        let end = self.recovered_ms.unwrap_or(ended_ms);
        Duration::from_millis(end.saturating_sub(self.first_failure_ms))
    }

    fn end(&self, ended_ms: u64) -> u64 {
        self.recovered_ms.unwrap_or(ended_ms)
    }
}

/// A probe round that found more than one writable candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrain {
    /// When the probe round started.
    pub at_ms: u64,
    /// The writer that probed.
    pub writer: usize,
    /// Every candidate with `read_only=0`, in candidate order; the writer used the first.
    pub writable: Vec<InstanceAddr>,
}

/// The first id of a run's tag.
pub(crate) fn id_base(run_tag: u64) -> u64 {
    run_tag * 10_000_000_000_000
}

/// The id of a writer's `seq`th write.
pub(crate) fn row_id(run_tag: u64, writer: usize, seq: u64) -> u64 {
    id_base(run_tag) + writer as u64 * 1_000_000_000 + seq
}

impl Ledger {
    /// The longest cluster-level window: the client-side RTO. Zero when there was none.
    pub fn max_outage(&self) -> Duration {
        self.outages
            .iter()
            .map(|o| o.length(self.ended_ms))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Every attempt to write: acknowledged, in doubt and failed.
    pub fn total_writes(&self) -> u64 {
        self.acked.len() as u64 + self.in_doubt.len() as u64 + self.failed_attempts
    }

    /// How long the run lasted.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.ended_ms.saturating_sub(self.started_ms))
    }

    /// Acknowledged writes per second over the whole run.
    pub fn acked_per_s(&self) -> f64 {
        let s = self.elapsed().as_secs_f64();
        if s > 0.0 {
            self.acked.len() as f64 / s
        } else {
            0.0
        }
    }

    /// Every id this run can have used.
    pub fn id_range(&self) -> RangeInclusive<u64> {
        id_base(self.run_tag)..=id_base(self.run_tag + 1) - 1
    }
}

/// Merge writers' outages into cluster-level windows (see [`Ledger`]).
pub(crate) fn merge_outages(writer_outages: &[Outage], ended_ms: u64) -> Vec<Outage> {
    let mut sorted: Vec<&Outage> = writer_outages.iter().collect();
    sorted.sort_by_key(|o| (o.first_failure_ms, o.end(ended_ms)));
    let mut merged: Vec<Outage> = Vec::new();
    // The end of the current merged window, counting an open member as ending at `ended_ms`.
    let mut cur_end = 0u64;
    let mut cur_last_close = 0u64;
    for o in sorted {
        match merged.last_mut() {
            Some(cur) if o.first_failure_ms <= cur_end => {
                cur_end = cur_end.max(o.end(ended_ms));
                cur.recovered_ms = match (cur.recovered_ms, o.recovered_ms) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                if cur.from.is_none() {
                    cur.from = o.from.clone();
                }
                if let Some(r) = o.recovered_ms {
                    if r >= cur_last_close {
                        cur_last_close = r;
                        cur.to = o.to.clone();
                    }
                }
                cur.writers.extend(&o.writers);
                cur.writers.sort_unstable();
                cur.writers.dedup();
            }
            _ => {
                cur_end = o.end(ended_ms);
                cur_last_close = o.recovered_ms.unwrap_or(0);
                merged.push(o.clone());
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> InstanceAddr {
        InstanceAddr::new("127.0.0.1", port)
    }

    fn outage(w: usize, start: u64, end: Option<u64>, to: u16) -> Outage {
        Outage {
            first_failure_ms: start,
            recovered_ms: end,
            from: Some(addr(1)),
            to: end.map(|_| addr(to)),
            writers: vec![w],
        }
    }

    #[test]
    fn overlapping_windows_merge_and_disjoint_ones_do_not() {
        let w = vec![
            outage(0, 100, Some(400), 2),
            outage(1, 120, Some(450), 3),
            outage(2, 450, Some(460), 2),
            outage(0, 1000, Some(1010), 2),
        ];
        let m = merge_outages(&w, 2000);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].first_failure_ms, 100);
        assert_eq!(m[0].recovered_ms, Some(460));
        assert_eq!(m[0].to, Some(addr(2)));
        assert_eq!(m[0].writers, vec![0, 1, 2]);
        assert_eq!(m[1].first_failure_ms, 1000);
        assert_eq!(m[1].writers, vec![0]);
    }

    #[test]
    fn an_open_window_stays_open_and_counts_to_the_end() {
        let w = vec![outage(0, 100, Some(300), 2), outage(1, 200, None, 0)];
        let m = merge_outages(&w, 900);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].recovered_ms, None);
        assert_eq!(m[0].to, Some(addr(2)));
        assert_eq!(m[0].length(900), Duration::from_millis(800));
        // A window starting after an open one's start merges into it.
        let w = vec![outage(1, 100, None, 0), outage(0, 500, Some(600), 2)];
        assert_eq!(merge_outages(&w, 900).len(), 1);
    }

    #[test]
    fn ids_of_a_run_stay_in_its_range() {
        let tag = 900_000;
        let last = row_id(tag, 9_999, 999_999_999);
        let range = id_base(tag)..=id_base(tag + 1) - 1;
        assert!(range.contains(&row_id(tag, 0, 1)) && range.contains(&last));
        assert!(last < i64::MAX as u64);
    }
}
