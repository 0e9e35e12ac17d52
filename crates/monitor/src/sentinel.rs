//! The liveness connection ("sentinel"): one extra connection per cluster, on the primary the
//! last analysis named, that always has a read pending, so that a primary that dies between
//! probes is noticed the moment its connection closes.
//!
//! mysql_async reads a socket only while a statement runs, so an idle connection cannot tell
//! that the server went away. The sentinel therefore sits in
//! `SELECT /* dbfleet liveness */ SLEEP(n)` (n = thirty probe intervals, clamped to 5–60 s)
//! and reissues it when it returns. Death is seen when the socket closes, whatever n is, so
//! n only sets how often the statement is sent: at 10,000 servers (3,334 primaries) and a
//! 1 s interval, n = 3 s cost 1,100 statements a second, n = 30 s costs 110. A killed server's kernel closes the socket, the pending
//! read fails at once, and the sentinel reports a suspect to the main loop. What does not
//! count as a sign of death: the sentinel being moved or cancelled (the statement's future
//! is dropped), the statement ending normally, a server error on it (for example a
//! `max_statement_time`, which the sentinel also switches off for its session), and its own
//! client-side timeout (`n` plus the probe query timeout: a hang is the probes' business).
//! A connect that fails never signals either: only the loss of a connection that was up.
//!
//! At most [`CONNECTS_AT_ONCE`] liveness connects run at once, fleet-wide; the wait for one
//! comes before the connect timeout starts.
//! While the primary is down the sentinel reconnects with a backoff from 100 ms doubling to
//! the probe interval; so it does when its statement keeps failing or returning early (a
//! server that does not sleep), so that it never spins. When the analysis names another
//! primary the sentinel moves there; when it names none the sentinel idles. A server thread
//! left sleeping by a move or a shutdown ends on its own within `n`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::InstanceAddr;
use probe::{ProbeError, ProbeOptions, Session};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::watch::{ClusterCell, Ctx, PrimaryView};
use crate::Stats;

/// The first reconnect delay after a loss or a failed connect.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Server errors that mean the connection is going away, not that the statement failed:
/// `ER_SERVER_SHUTDOWN`, MariaDB's `ER_CONNECTION_KILLED`, MySQL's `ER_SESSION_WAS_KILLED`.
const GOING_AWAY: [u16; 3] = [1053, 1927, 3169];

/// How many liveness connections may be opening at once, fleet-wide. A connect (handshake,
/// authentication, two queries) costs the control plane several probes' worth of CPU, and a
/// start with thousands of clusters would otherwise open thousands at once, on top of the
/// probes' own connects; on a loaded machine they then outlast the connect timeout and are
/// retried. Queued here, a start's liveness connections arm one batch after another.
pub(crate) const CONNECTS_AT_ONCE: usize = 32;

/// How long one liveness statement sleeps.
pub(crate) fn sleep_for(interval: Duration) -> Duration {
    (interval * 30).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Follow the cluster's primary until cancelled, holding a liveness connection on it.
pub(crate) async fn run(ctx: Arc<Ctx>, cell: Arc<ClusterCell>, cancel: CancellationToken) {
    let mut view = cell.primary.subscribe();
    loop {
        let target = view.borrow_and_update().addr.clone();
        match target {
            None => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = view.changed() => if r.is_err() { return },
                }
            }
            Some(addr) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    moved = moved_from(&mut view, &addr) => if !moved { return },
                    _ = guard(&ctx, &cell, &addr) => {}
                }
            }
        }
    }
}

/// Resolves when the named primary is no longer `addr` (true), or when the cluster is gone
/// (false).
async fn moved_from(
    view: &mut tokio::sync::watch::Receiver<PrimaryView>,
    addr: &InstanceAddr,
) -> bool {
    loop {
        if view.changed().await.is_err() {
            return false;
        }
        if view.borrow_and_update().addr.as_ref() != Some(addr) {
            return true;
        }
    }
}

/// How one liveness connection ended.
enum Ended {
    /// The connection went away under a pending statement: a sign of death.
    Lost(ProbeError),
    /// Anything else; reconnect quietly.
    Other(ProbeError),
}

/// Counts an armed liveness connection while it lives.
struct Armed<'a>(&'a Stats);

impl<'a> Armed<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.sentinels_armed.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.sentinels_armed.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keep a liveness connection on `addr` forever, reporting each loss. Only ever ends by
/// being dropped.
async fn guard(ctx: &Ctx, cell: &ClusterCell, addr: &InstanceAddr) {
    let sleep = sleep_for(ctx.opts.interval);
    let opts = ProbeOptions {
        connect_timeout: ctx.opts.probe.connect_timeout,
        query_timeout: sleep + ctx.opts.probe.query_timeout,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        // At most CONNECTS_AT_ONCE liveness connects run at once; the statement itself holds
        // no permit.
        let connected = {
            let _permit = ctx.sentinel_connects.acquire().await;
            Session::connect(addr, &cell.watch.credentials, opts).await
        };
        match connected {
            Err(e) => {
                debug!(cluster = %cell.name, instance = %addr, error = %e, ?backoff, "liveness connect failed")
            }
            Ok(mut session) => {
                let up = Instant::now();
                let armed = Armed::new(&ctx.stats);
                debug!(cluster = %cell.name, instance = %addr, "liveness connection up");
                let ended = hold(&mut session, sleep).await;
                // A connection that held for a while earns a quick reconnect; one that keeps
                // failing at once backs off to the interval like a failed connect.
                if up.elapsed() >= Duration::from_secs(1) {
                    backoff = FIRST_BACKOFF;
                }
                match ended {
                    Ended::Lost(e) => {
                        drop(armed);
                        ctx.stats.sentinel_signals.fetch_add(1, Ordering::Relaxed);
                        debug!(cluster = %cell.name, instance = %addr, error = %e, "liveness connection lost");
                        cell.suspect(ctx, addr, format!("liveness connection lost: {e}"));
                    }
                    Ended::Other(e) => {
                        debug!(cluster = %cell.name, instance = %addr, error = %e, "liveness statement ended; reconnecting")
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(ctx.opts.interval.max(FIRST_BACKOFF));
    }
}

/// Reissue the liveness statement until it fails, or until it returns well before its
/// sleep (a server that does not sleep would make this loop spin).
async fn hold(session: &mut Session, sleep: Duration) -> Ended {
    // A server-wide statement time limit would end the sleep early; it is not a sign.
    if let Err(e) = session.no_statement_time_limit().await {
        if is_loss(&e) {
            return Ended::Lost(e);
        }
        debug!(error = %e, "liveness setup");
    }
    loop {
        let started = Instant::now();
        match session.liveness(sleep).await {
            Ok(_) if started.elapsed() < sleep / 2 => {
                return Ended::Other(ProbeError::Reply {
                    what: "liveness",
                    detail: format!("returned after {:?} of {sleep:?}", started.elapsed()),
                })
            }
            Ok(_) => continue,
            Err(e) if is_loss(&e) => return Ended::Lost(e),
            Err(e) => return Ended::Other(e),
        }
    }
}

/// Whether a failed statement means the connection went away.
fn is_loss(e: &ProbeError) -> bool {
    match e {
        ProbeError::Refused | ProbeError::Other(_) => true,
        ProbeError::Server { code, .. } => GOING_AWAY.contains(code),
        ProbeError::Timeout { .. } | ProbeError::Auth { .. } | ProbeError::Reply { .. } => false,
    }
}
