//! The daemon's watch loop: discovery from seeds, a probe task per instance under timeouts,
//! a round per interval that analyses each cluster and records problems and events, and a
//! fast path that confirms a dead primary between rounds. It never blocks on one slow
//! server: each instance is probed by its own task.
//!
//! # Rounds
//!
//! Every analysis of a cluster syncs its problems to the store and is offered to the caller
//! as a [`ClusterRound`] on the channel given to [`run`] (`try_send`: a full channel drops
//! the round and counts it in [`Stats::rounds_dropped`], so a slow consumer never slows
//! probing). A round says why it ran ([`RoundTrigger::Tick`], [`RoundTrigger::Suspect`], or
//! [`RoundTrigger::Refresh`] when the caller notified the cluster's refresh trigger),
//! what it read, the primary it named and every problem. Rounds of one cluster are analysed
//! and published one at a time, in order.
//!
//! # The suspect fast path
//!
//! A dead primary should be acted on within a fraction of a second, not at the next tick.
//! Two signs of death start the fast path of the primary's cluster at once:
//!
//! - the primary's probe fails right after a successful one (the primary as the previous
//!   analysis named it; a replica's death is not urgent and waits for the tick);
//! - the primary's liveness connection closes: one extra connection per cluster, on the
//!   primary only, that sits in `SELECT /* dbfleet liveness */ SLEEP(n)` so that a read is
//!   always pending and a killed server is noticed when its kernel closes the socket, even
//!   between probes. It follows the primary the analysis names and reconnects with a
//!   backoff up to the probe interval while the server is down.
//!
//! The fast path then probes every member of that cluster concurrently with fresh
//! connections (so the dead server shows as `refused`, not as a closed connection), records
//! the observations, analyses the cluster, syncs its problems and publishes a round with
//! trigger `Suspect`. Replicas notice a killed primary within about 40 ms on loopback, so
//! the first attempt often still sees their IO thread running (`UnreachablePrimary`): the
//! fast path re-checks every [`FastPathOptions::recheck_every`] (50 ms) until
//! [`FastPathOptions::confirm_within`] (500 ms) has passed, and stops as soon as the
//! analysis says `DeadPrimary`, the primary answers, or another primary is named. One fast
//! path runs per cluster at a time, signs that arrive meanwhile are dropped, and so are
//! signs about a primary already found dead. Fast-path probes have their own budget of
//! `concurrency` permits and the probe timeouts; the other clusters' probes and ticks never
//! wait for them.
//!
//! Measured on loopback (a shared 2-core machine, a 3-server sandbox): kill -9 of the primary
//! to `DeadPrimary` in the store took 8–38 ms, p50 14 ms, over 10 kills at a 1 s interval,
//! and p50 16 ms at a 5 s interval (`dbfleet bench detection`). The liveness connection and
//! the replicas' IO threads see the same closed sockets, so the first attempt usually
//! confirms. Without the liveness connection the primary's next probe gives the sign: up to
//! one interval.

mod fast;
pub mod heartbeat;
mod sentinel;
mod stats;

/// The rounds it publishes (in `model`, which the engine and the alerting share).
pub use model::{ClusterRound, RoundTrigger};
pub use stats::{LatestObservations, Stats, StatsSnapshot};
pub mod watch;

pub use heartbeat::HeartbeatOptions;
pub use watch::{now_ms, run, run_with, ClusterWatch, FastPathOptions, WatchOptions};
