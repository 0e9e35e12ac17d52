//! The runner's guardrails, checked while the load runs. A broken invariant ends the run at
//! once (the runner then heals every fault):
//!
//! - **two writable primaries**: every member is probed every [`EVERY`]; more than one with
//!   `read_only=OFF`, of which more than one can acknowledge a write ([`mute`] says which
//!   cannot), is a split brain. With a stale client the run goes on instead, so that what
//!   the old primary acknowledges meanwhile is measured: each sighting is recorded and
//!   judged afterwards. A look that sees a second writable member that cannot acknowledge
//!   (a frozen old primary in the milliseconds between its resume and its fence, with
//!   lossless semi-sync and no replica left) is recorded apart and never aborts the run;
//! - **lost writes above the allowance**: about every [`LOST_EVERY`], the acknowledged ids
//!   not yet checked are looked up on the one writable primary; all of them again when the
//!   primary changed and every [`FULL_EVERY`]. An acknowledged id it lacks is lost: a writable primary must hold every
//!   write any primary acknowledged;
//! - **no writable primary after the max RTO**: with `max_rto` set, no writable member for
//!   longer than `max_rto` plus [`RTO_GRACE`] (two probe periods, so that the guard's own
//!   sampling cannot abort a run the judge would pass).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{InstanceAddr, IoThreadState, SEMI_SYNC_NEVER_FALLS_BACK_MS};
use probe::{Credentials, Session};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::{join, look_all_since, Look, LOOK};
use crate::report::MuteLook;

/// How often every member is probed.
pub(crate) const EVERY: Duration = Duration::from_millis(200);
/// How often acknowledged ids are checked on the primary.
pub(crate) const LOST_EVERY: Duration = Duration::from_secs(1);
/// How often every acknowledged id is checked again, not only the new ones.
pub(crate) const FULL_EVERY: Duration = Duration::from_secs(3);
/// Slack on the max RTO, for the guard's sampling.
pub(crate) const RTO_GRACE: Duration = Duration::from_millis(400);
/// Ids per lookup query.
const CHUNK: usize = 1000;
/// Lost ids named in an abort reason.
const NAMED: usize = 10;

/// What the guard watches and the bounds it enforces.
pub(crate) struct Guardrails {
    pub members: Vec<InstanceAddr>,
    pub admin: Credentials,
    /// The ledger table, quoted for SQL.
    pub table: String,
    pub lost_allowed: u64,
    pub max_rto: Option<Duration>,
    /// Whether two writable primaries abort the run; when not, every sighting is recorded
    /// in `split_brain` (epoch ms, the writable members).
    pub split_brain_aborts: bool,
    pub split_brain: Sightings,
    /// Looks that saw more than one writable member, of which at most one could acknowledge
    /// a write (see [`mute`]). Never abort the run.
    pub mute: Arc<Mutex<Vec<MuteLook>>>,
}

/// The guard's sightings of two writable primaries: epoch ms, the writable members.
pub(crate) type Sightings = Arc<Mutex<Vec<(u64, Vec<InstanceAddr>)>>>;

/// Watch until `stop`; return why the run must abort, if it must.
pub(crate) async fn watch(
    g: Guardrails,
    mut acks: UnboundedReceiver<u64>,
    stop: CancellationToken,
) -> Option<String> {
    let mut acked: Vec<u64> = Vec::new();
    // `acked[..checked]` were found on `checked_on`.
    let mut checked = 0usize;
    let mut checked_on: Option<InstanceAddr> = None;
    let mut lost: HashSet<u64> = HashSet::new();
    let mut last_lost_check = Instant::now();
    let mut last_full_check = Instant::now();
    let mut last_writable = Instant::now();
    // The previous look, for [`mute`]: what the replicas replicated from before this one.
    let mut prev: Vec<Look> = Vec::new();
    // When the previous look started: a mute look proves nothing replicated from the mute
    // members from then on.
    let mut prev_started = crate::faults::now_ms();
    loop {
        if stop.is_cancelled() {
            return None;
        }
        // Ids acknowledged before this look: whichever member is the one writable primary
        // now must hold them all. (Ids acknowledged after it may be on a newer primary.)
        let due = last_lost_check.elapsed() >= LOST_EVERY;
        if due {
            while let Ok(id) = acks.try_recv() {
                acked.push(id);
            }
        }
        let (started, now) = look_all_since(&g.members, &g.admin).await;
        if stop.is_cancelled() {
            return None;
        }
        let w: Vec<InstanceAddr> = now
            .iter()
            .filter(|l| l.writable())
            .map(|l| l.addr.clone())
            .collect();
        // More than one writable, but at most one of them can acknowledge a write.
        let silent: Vec<InstanceAddr> = now
            .iter()
            .filter(|l| l.writable() && mute(l, &prev, &now))
            .map(|l| l.addr.clone())
            .collect();
        let mute_look = w.len() > 1 && w.len() - silent.len() <= 1;
        let before_prev = std::mem::replace(&mut prev, now);
        let since = std::mem::replace(&mut prev_started, started);
        if mute_look {
            last_writable = Instant::now();
            crate::faults::lock(&g.mute).push(MuteLook {
                since_ms: since,
                at_ms: crate::faults::now_ms(),
                writable: w,
                mute: silent,
            });
        } else {
            match w.len() {
                0 => {
                    if let Some(max) = g.max_rto {
                        let none_for = last_writable.elapsed();
                        if none_for > max + RTO_GRACE {
                            return Some(format!(
                                "no writable primary for {} (max RTO {})",
                                humantime::format_duration(round_ms(none_for)),
                                humantime::format_duration(max)
                            ));
                        }
                    }
                }
                1 => {
                    last_writable = Instant::now();
                    if due {
                        last_lost_check = Instant::now();
                        let primary = &w[0];
                        let full = checked_on.as_ref() != Some(primary)
                            || last_full_check.elapsed() >= FULL_EVERY;
                        let from = if full { 0 } else { checked };
                        let upto = acked.len();
                        // A failed lookup is tried again at the next check.
                        if let Ok(missing) = missing(primary, &g, &acked[from..upto]).await {
                            if full {
                                lost.clear();
                                last_full_check = Instant::now();
                            }
                            lost.extend(missing);
                            checked = upto;
                            checked_on = Some(primary.clone());
                            if lost.len() as u64 > g.lost_allowed {
                                let mut ids: Vec<u64> = lost.iter().copied().collect();
                                ids.sort_unstable();
                                let named: Vec<String> =
                                    ids.iter().take(NAMED).map(u64::to_string).collect();
                                return Some(format!(
                                    "{} acknowledged write(s) missing on the primary {primary} \
                                 (allowed {}): ids {}{}",
                                    ids.len(),
                                    g.lost_allowed,
                                    named.join(", "),
                                    if ids.len() > NAMED { ", …" } else { "" }
                                ));
                            }
                        }
                    }
                }
                _ if g.split_brain_aborts => {
                    let why: Vec<String> = prev
                        .iter()
                        .filter(|l| l.writable())
                        .filter_map(|l| {
                            why_not_mute(l, &before_prev, &prev)
                                .map(|r| format!("{} can acknowledge: {r}", l.addr))
                        })
                        .collect();
                    return Some(format!(
                        "two writable primaries: {} ({})",
                        join(&w),
                        why.join("; ")
                    ));
                }
                _ => {
                    last_writable = Instant::now();
                    crate::faults::lock(&g.split_brain).push((crate::faults::now_ms(), w));
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Whether `x`, seen writable in the look `now`, cannot acknowledge a write that no other
/// member holds: it runs lossless semi-sync (enabled and on, `wait_no_slave=ON`, a timeout
/// of seven days or more, so every commit waits for a replica's ack, with no replica
/// connected too), and no other member replicated from it with its IO thread running (and
/// not killed: a killed one, on its way out, acknowledges nothing more),
/// neither in the previous look `prev` (each member reachable there) nor in `now`; or,
/// whoever was attached at `prev`, nobody is attached in `now`, it counts no semi-sync
/// client in `now`, and its `Rpl_semi_sync_master_yes_tx` did not move from `prev` to
/// `now` (it acknowledged nothing since `prev`).
///
/// Why the previous look: during a run nothing attaches a replica to a replaced primary
/// while it is writable (dbfleet's rejoin fences it first), so a member that did not
/// replicate from `x` at the previous look does not at `now` either, whatever the order in
/// which the members answered. A commit on `x` then waits for an ack that no member can
/// send: it is killed by the fence, or waits. The one thing `x` can still acknowledge is a
/// commit whose ack a replica sent before it left `x`: a write that replica holds (see
/// [`crate::report::StaleAcks`]). The members must be every server that replicates, as
/// in a sandbox.
pub fn mute(x: &Look, prev: &[Look], now: &[Look]) -> bool {
    why_not_mute(x, prev, now).is_none()
}

/// Why `x` may acknowledge a write (see [`mute`]); `None` when it cannot. For the
/// guardrail's abort message.
pub fn why_not_mute(x: &Look, prev: &[Look], now: &[Look]) -> Option<String> {
    // A member whose full read hung is judged by its write gate alone.
    let Some(ss) = x.semi_sync() else {
        return Some("not read".into());
    };
    let lossless = ss.source_enabled
        && ss.source_active
        && ss.source_wait_no_replica == Some(true)
        && ss
            .source_timeout_ms
            .is_some_and(|t| t >= SEMI_SYNC_NEVER_FALLS_BACK_MS);
    if !lossless {
        return Some(format!(
            "semi-sync not lossless (enabled {}, on {}, wait_no_slave {:?}, timeout {:?} ms)",
            ss.source_enabled, ss.source_active, ss.source_wait_no_replica, ss.source_timeout_ms
        ));
    }
    // A killed IO thread still says `Yes` until it exits, but acknowledges nothing more.
    let attached = |l: &Look| {
        !l.io_killed
            && l.state
                .as_ref()
                .and_then(|s| s.replication.as_ref())
                .is_some_and(|r| r.source == x.addr && r.io_thread != IoThreadState::No)
    };
    let others = |looks: &[Look]| -> Vec<Look> {
        looks.iter().filter(|l| l.addr != x.addr).cloned().collect()
    };
    let before = others(prev);
    let members = others(now).len();
    if before.len() != members {
        return Some(format!(
            "the previous look saw {} other member(s), this one {members}",
            before.len()
        ));
    }
    if let Some(l) = before.iter().find(|l| l.state.is_none()) {
        return Some(format!("{} was not read in the previous look", l.addr));
    }
    let io = |l: &Look| {
        l.state
            .as_ref()
            .and_then(|s| s.replication.as_ref())
            .map(|r| format!("IO thread {:?}", r.io_thread))
            .unwrap_or_default()
    };
    if let Some(l) = others(now).iter().find(|l| attached(l)) {
        return Some(format!("{} replicates from it ({})", l.addr, io(l)));
    }
    // Nobody is attached now, and it counts no semi-sync replica connected: no ack can
    // come after this read (nothing attaches a replica to it while it is writable). Its
    // count of acknowledged commits unchanged since the previous look proves that it
    // acknowledged nothing in between either, whoever was attached then (a replica whose
    // IO thread the failover killed after that look).
    let yes_tx = |looks: &[Look]| {
        looks
            .iter()
            .find(|l| l.addr == x.addr)
            .and_then(Look::semi_sync)
            .and_then(|s| s.source_yes_tx)
    };
    if let (Some(a), Some(b)) = (yes_tx(prev), ss.source_yes_tx) {
        if a == b && ss.source_clients == 0 {
            return None;
        }
    }
    if let Some(l) = before.iter().find(|l| attached(l)) {
        return Some(format!(
            "{} replicated from it in the previous look ({})",
            l.addr,
            io(l)
        ));
    }
    None
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// The ids among `ids` that `primary` lacks.
async fn missing(primary: &InstanceAddr, g: &Guardrails, ids: &[u64]) -> Result<Vec<u64>, ()> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut s = Session::connect(primary, &g.admin, LOOK)
        .await
        .map_err(|_| ())?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for chunk in ids.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
        let sql = format!(
            "SELECT id FROM {} WHERE id IN ({})",
            g.table,
            list.join(",")
        );
        match s.query_rows("ledger lookup", &sql).await {
            Ok(rows) => {
                let present: HashSet<u64> = rows
                    .iter()
                    .filter_map(|r| r.get("id").cloned().flatten())
                    .filter_map(|v| v.parse().ok())
                    .collect();
                out.extend(chunk.iter().copied().filter(|id| !present.contains(id)));
            }
            Err(_) => {
                result = Err(());
                break;
            }
        }
    }
    s.close().await;
    result.map(|()| out)
}
