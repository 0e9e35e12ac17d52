//! The suspect fast path: after a first sign that a cluster's primary died, probe every
//! member again with fresh connections and analyse the cluster at once, re-checking at short
//! spacing until the replicas confirm the death, the primary answers, or the time is up.
//! When the primary's probe times out (a freeze, dropped packets), the replicas' IO
//! threads keep saying `Yes` and only their silent streams can confirm: the fast path then
//! re-probes the replicas alone, for long enough to cover the cluster's `stall_confirm`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{InstanceAddr, Observation, ProbeFailure, ProbeFailureKind, Reachability};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::watch::{analyse, now_ms, Ctx, FastRunning, Suspect};
use model::{ClusterRound, RoundTrigger};

/// Extra probes of the suspect when its fresh probe is neither refused nor timed out.
const SUSPECT_RETRIES: u32 = 2;
/// The spacing of those probes.
const SUSPECT_RETRY_AFTER: Duration = Duration::from_millis(5);

/// How one attempt of the fast path ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The analysis says `DeadPrimary` on the suspect.
    Confirmed,
    /// The suspect answered a fresh probe.
    Answered,
    /// The analysis names another primary, or none.
    PrimaryChanged,
    /// Not yet: typically a replica still shows its IO thread running from the suspect.
    Unconfirmed,
}

fn verdict(round: &ClusterRound, suspect: &InstanceAddr) -> Verdict {
    if round.dead_primary() == Some(suspect) {
        Verdict::Confirmed
    } else if round
        .observation(suspect)
        .is_some_and(|o| o.state().is_some())
    {
        Verdict::Answered
    } else if round.primary.as_ref() != Some(suspect) {
        Verdict::PrimaryChanged
    } else {
        Verdict::Unconfirmed
    }
}

/// Run the fast path for the cluster in `running` (which clears its flag when dropped).
/// Publishes a round with trigger `Suspect` per attempt. Never runs longer than
/// `confirm_within` plus one attempt, and each attempt is bounded by the probe timeouts.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    running: FastRunning,
    suspect: Suspect,
    cancel: CancellationToken,
) {
    let cell = running.0.clone();
    let opts = ctx.opts.fast_path;
    let started = Instant::now();
    let trigger = RoundTrigger::Suspect {
        instance: suspect.instance.clone(),
        reason: suspect.reason,
    };
    // A primary that times out may be frozen or cut off: see `FastPathOptions::stall_*`.
    let stall_confirm = cell.watch.spec.stall_confirm;
    let mut stalling = false;
    for attempt in 1.. {
        let skip = stalling.then_some(&suspect.instance);
        let round = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe_and_analyse(&ctx, &cell, Some(&suspect.instance), skip, trigger.clone()) => r,
        };
        cell.suspect_handled();
        let round = match round {
            Ok(round) => round,
            Err(e) => {
                warn!(cluster = %cell.name, error = %e, "fast-path analysis failed");
                return;
            }
        };
        ctx.stats.fast_path_rounds.fetch_add(1, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let (instance, after_ms) = (&suspect.instance, elapsed.as_millis() as u64);
        match verdict(&round, instance) {
            Verdict::Confirmed => {
                info!(cluster = %cell.name, %instance, attempt, after_ms, "fast path confirmed the primary dead");
                return;
            }
            v @ (Verdict::Answered | Verdict::PrimaryChanged) => {
                info!(cluster = %cell.name, %instance, attempt, after_ms, verdict = ?v, "fast path: the primary is not dead");
                return;
            }
            Verdict::Unconfirmed => {}
        }
        if !stalling && !stall_confirm.is_zero() {
            stalling = round
                .observation(instance)
                .and_then(Observation::failure)
                .is_some_and(|f| f.kind == ProbeFailureKind::Timeout);
            if stalling {
                debug!(cluster = %cell.name, %instance, attempt, "fast path: the primary times out; watching its replicas' streams");
            }
        }
        let (within, every) = if stalling {
            (
                opts.confirm_within.max(stall_confirm + opts.stall_slack),
                opts.stall_recheck_every,
            )
        } else {
            (opts.confirm_within, opts.recheck_every)
        };
        if elapsed + every > within {
            info!(cluster = %cell.name, %instance, attempt, after_ms, "fast path: the replicas did not confirm the death; the ticks take over");
            return;
        }
        debug!(cluster = %cell.name, %instance, attempt, "fast path: not confirmed yet");
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Wait for `refresh` and then probe every member of the cluster at once with fresh
/// connections and analyse it (trigger [`RoundTrigger::Refresh`]), until `cancel`. Several
/// notifications while one refresh runs make one more.
pub(crate) async fn refresh(
    ctx: Arc<Ctx>,
    cell: Arc<crate::watch::ClusterCell>,
    refresh: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = refresh.notified() => {}
        }
        let round = tokio::select! {
            _ = cancel.cancelled() => return,
            r = probe_and_analyse(&ctx, &cell, None, None, RoundTrigger::Refresh) => r,
        };
        match round {
            Ok(round) => {
                ctx.stats.refresh_rounds.fetch_add(1, Ordering::Relaxed);
                debug!(cluster = %cell.name, primary = ?round.primary, "cluster refreshed");
            }
            Err(e) => warn!(cluster = %cell.name, error = %e, "refresh analysis failed"),
        }
    }
}

/// Probe every member of the cluster afresh ([`probe_members`]) but `skip` (whose latest
/// observation stands), record what they said (the live view and the metrics history: this
/// is what the fleet looked like at that moment), analyse the cluster with `trigger`, and
/// save the round's observations to the store.
pub(crate) async fn probe_and_analyse(
    ctx: &Arc<Ctx>,
    cell: &crate::watch::ClusterCell,
    suspect: Option<&InstanceAddr>,
    skip: Option<&InstanceAddr>,
    trigger: RoundTrigger,
) -> anyhow::Result<ClusterRound> {
    let members = cell.members().into_iter().filter(|a| Some(a) != skip);
    let fresh = probe_members(ctx, &cell.watch.credentials, members, suspect).await;
    for obs in fresh {
        ctx.stats.fleet.record(&cell.name, &obs);
        ctx.record(obs);
    }
    let round = analyse(ctx, cell, trigger).await?;
    let batch: Vec<_> = round
        .observations
        .iter()
        .map(|o| (cell.name.clone(), o.clone()))
        .collect();
    if let Err(e) = ctx.store.save_observations(&batch).await {
        warn!(cluster = %cell.name, error = %e, "save the observations of a fresh round");
    }
    Ok(round)
}

/// Probe every member at once, each with a fresh connection (so that a killed server shows
/// as refused, not as a closed connection), under the fast path's probe budget and the
/// probe timeouts.
///
/// A server killed a moment ago may still be tearing down: its listening socket can accept
/// a connection and then reset it. So when the suspect's probe fails with anything but a
/// refusal or a timeout, it is probed again, up to [`SUSPECT_RETRIES`] times
/// [`SUSPECT_RETRY_AFTER`] apart; on loopback the second try is refused.
async fn probe_members(
    ctx: &Arc<Ctx>,
    creds: &probe::Credentials,
    members: impl IntoIterator<Item = InstanceAddr>,
    suspect: Option<&InstanceAddr>,
) -> Vec<Observation> {
    let popts = ctx.opts.probe;
    // Connect, version, observe and close: the last two can be cut short here.
    let limit = popts.connect_timeout + popts.query_timeout * 2 + Duration::from_millis(50);
    let mut set = JoinSet::new();
    for addr in members {
        let ctx = ctx.clone();
        let creds = creds.clone();
        let tries = if Some(&addr) == suspect {
            1 + SUSPECT_RETRIES
        } else {
            1
        };
        set.spawn(async move {
            let _permit = ctx.fast_permits.acquire().await;
            let mut obs = probe_one(&ctx, &addr, &creds, limit).await;
            for _ in 1..tries {
                if !obs
                    .failure()
                    .is_some_and(|f| f.kind == ProbeFailureKind::Other)
                {
                    break;
                }
                tokio::time::sleep(SUSPECT_RETRY_AFTER).await;
                obs = probe_one(&ctx, &addr, &creds, limit).await;
            }
            obs
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(obs) => out.push(obs),
            Err(e) => warn!(error = %e, "fast-path probe task failed"),
        }
    }
    out
}

/// One fresh probe of `addr`, never longer than `limit`.
async fn probe_one(
    ctx: &Ctx,
    addr: &InstanceAddr,
    creds: &probe::Credentials,
    limit: Duration,
) -> Observation {
    let at_unix_ms = now_ms();
    let started = Instant::now();
    // The heartbeat row too, as the regular probes read it: these observations replace
    // theirs, in the API and in the metrics history.
    let what = probe::ObserveOptions {
        heartbeat: ctx.heartbeat.enabled,
        lazy_replica_status: false,
    };
    let observed = probe::observe_with(addr, creds, ctx.opts.probe, what);
    let obs = match tokio::time::timeout(limit, observed).await {
        Ok(obs) => obs,
        Err(_) => Observation {
            addr: addr.clone(),
            at_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            write: None,
            reachability: Reachability::Unreachable(ProbeFailure::new(
                ProbeFailureKind::Timeout,
                format!("fast-path probe timed out after {limit:?}"),
            )),
        },
    };
    ctx.stats.probes.fetch_add(1, Ordering::Relaxed);
    if obs.failure().is_some() {
        ctx.stats.probe_errors.fetch_add(1, Ordering::Relaxed);
    }
    obs
}
