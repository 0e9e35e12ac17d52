//! Heartbeat lag, as pt-heartbeat measures it: the daemon stamps a row on each cluster's
//! primary every interval, and every probe reads the row back, so a replica's lag is the
//! daemon's clock minus the newest stamp it has applied. It is accurate below a second, true
//! at any depth of a replication chain, and keeps growing while replication is stopped
//! (when `Seconds_Behind_Master` is NULL).
//!
//! The writer is one task per cluster with its own connection, so a write that blocks (a
//! semi-sync primary waiting for an acknowledgement) never delays a probe. It writes only on
//! the primary the last analysis named, while that analysis does not find it dead and its last
//! observation shows it writable with no source, and the write itself is conditional:
//! `REPLACE … SELECT … WHERE @@read_only = 0` writes nothing (0 rows affected) on a
//! read-only server. The admin account ignores `read_only` on MariaDB, and a stamp written on
//! a replica or on a demoted primary would be an errant transaction; the condition is read
//! by the write itself, in one round trip, so no `SET GLOBAL read_only = 1` can fall between
//! a check and the write. A switchover sets `read_only` and then kills client connections,
//! this one included, so no stamp lands after its position is read. The connection is kept
//! while the server is read-only; the schema is created at the first writable moment.
//!
//! Schema, created on the primary when the writer connects (and so replicated):
//!
//! ```sql
//! CREATE DATABASE IF NOT EXISTS dbfleet;
//! CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
//!   ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL);
//! ```
//!
//! The probe reads it with `SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1` in its batch
//! ([`probe::ObserveOptions::heartbeat`]); a missing table is "no heartbeat yet".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{InstanceAddr, WriteFailure, WriteProbe, MAX_HUNG_WRITES};
use probe::{Credentials, ProbeError, ProbeOptions, Session};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::watch::{ClusterCell, Ctx};
use model::RoundTrigger;

/// The statement that reads the row; the probe appends it to its batch.
pub const READ_SQL: &str = probe::parse::HEARTBEAT_READ_SQL;

/// Whether and how the daemon measures heartbeat lag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatOptions {
    /// Write the heartbeat row on each cluster's primary every probe interval, and read it
    /// in every probe.
    pub enabled: bool,
    /// The write's own deadline, apart from the read probe's: a write still waiting after
    /// it is evidence that the primary's writes stall (`PrimaryWritesStalled`).
    pub write_timeout: Duration,
}

/// The default [`HeartbeatOptions::write_timeout`].
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

impl Default for HeartbeatOptions {
    /// Off, with a 500 ms write deadline.
    fn default() -> Self {
        Self {
            enabled: false,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// What one attempt to write did.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The row was stamped.
    Written,
    /// The server is read-only now: nothing was written.
    ReadOnly,
}

/// A connection that stamps the heartbeat row on one server.
pub struct HeartbeatWriter {
    addr: InstanceAddr,
    session: Session,
    schema_ready: bool,
    /// The connection's id on the server (0 when it could not be read), to kill a write
    /// that hangs.
    conn_id: u64,
}

impl HeartbeatWriter {
    /// Connect to `addr`. The schema is created by the first write that finds the server
    /// writable.
    pub async fn connect(
        addr: &InstanceAddr,
        creds: &Credentials,
        opts: ProbeOptions,
    ) -> Result<Self, ProbeError> {
        let mut session = Session::connect(addr, creds, opts).await?;
        let conn_id = session.connection_id().await.unwrap_or(0);
        Ok(Self {
            addr: addr.clone(),
            session,
            schema_ready: false,
            conn_id,
        })
    }

    /// The server this writer stamps.
    pub fn addr(&self) -> &InstanceAddr {
        &self.addr
    }

    /// Stamp the row with the daemon's clock now, unless the server is read-only.
    pub async fn write(&mut self) -> Result<WriteOutcome, ProbeError> {
        if !self.schema_ready {
            // Creating the schema on a read-only server would be an errant transaction.
            if self.session.is_read_only().await? {
                return Ok(WriteOutcome::ReadOnly);
            }
            self.session.create_heartbeat_schema().await?;
            self.schema_ready = true;
        }
        match self.session.write_heartbeat(probe::now_us()).await? {
            0 => Ok(WriteOutcome::ReadOnly),
            _ => Ok(WriteOutcome::Written),
        }
    }

    /// Close the connection.
    pub async fn close(self) {
        self.session.close().await;
    }
}

/// How long a heartbeat write may hang before it is abandoned: its connection killed on
/// the server (`KILL CONNECTION`, from a fresh connection) and dropped. A write on a frozen
/// filesystem cannot be killed until the thaw; it then counts as hung
/// ([`model::WriteProbe::hung`]) until its thread is gone.
pub const ABANDON_AFTER: Duration = Duration::from_secs(10);

/// What the watch loop knows of the heartbeat writes on one server, kept while dbfleet
/// writes there ([`WriteState::snapshot`] is what observations carry).
#[derive(Debug)]
pub(crate) struct WriteState {
    deadline: Duration,
    last_ok: Option<Instant>,
    pending_since: Option<Instant>,
    /// Whether the write in flight was already counted as timed out.
    pending_timed_out: bool,
    failures: u32,
    last_error: Option<WriteFailure>,
    /// Connection ids of abandoned writes whose threads were still on the server.
    hung: Vec<u64>,
    /// The server's read probe failed last: its writes' failures prove nothing of its disk
    /// (the control plane may be cut from it), and no stall is claimed.
    reads_lost: bool,
    /// While `reads_lost`: whether a failure since then could not reach the server at all
    /// (a connect that failed or timed out, a reset). Without one, every lost read was a
    /// query that timed out on a kept connection, and a read that then hangs on a fresh
    /// connection shows the same server hung all along, not a link back.
    lost_reach: bool,
    /// When its reads answered again after failing: a write that was already pending then,
    /// and failures before it, are not evidence of a stall.
    reads_back_at: Option<Instant>,
    /// The first write started after `reads_back_at`: the stall clock starts there.
    first_after_back: Option<Instant>,
}

impl WriteState {
    fn new(deadline: Duration) -> Self {
        Self {
            deadline,
            last_ok: None,
            pending_since: None,
            pending_timed_out: false,
            failures: 0,
            last_error: None,
            hung: Vec::new(),
            reads_lost: false,
            lost_reach: false,
            reads_back_at: None,
            first_after_back: None,
        }
    }

    /// Whether a write started at `started` began before the server's reads last came back:
    /// its fate says nothing of the disk (the control plane may have been cut from the
    /// server then). The writer abandons such a write at once and starts a fresh one,
    /// whose progress is the evidence: on a stalled disk it hangs too, and the stall clock
    /// starts with it.
    pub(crate) fn stale_write(&self, started: Instant) -> bool {
        self.reads_back_at.is_some_and(|b| started < b)
    }

    /// A write starts now.
    pub(crate) fn start_write(&mut self, now: Instant) {
        self.pending_since = Some(now);
        if self.reads_back_at.is_some() && self.first_after_back.is_none() {
            self.first_after_back = Some(now);
        }
    }

    /// Note what the server's read probe said at `now`. A write stall is claimed only while
    /// reads answer: a control plane cut from the server (a partition between it and
    /// dbfleet) sees its reads and writes fail alike, and once reads answer again, the
    /// writes that were pending or failed meanwhile are not counted. A read that hangs on a
    /// connection the server just accepted counts as answered (the server runs and its
    /// link carries packets); and when every lost read since the last answer only timed
    /// out on a kept connection, such a read shows the server hung all along: the writes
    /// meanwhile stay evidence (measured with a frozen datadir: the first read to time
    /// out is on the kept connection, every later one hangs on a fresh one).
    pub(crate) fn note_reads(&mut self, read: ReadOutcome, now: Instant) {
        match read {
            ReadOutcome::Lost { reach } => {
                self.reads_lost = true;
                self.lost_reach |= reach;
            }
            ReadOutcome::HungOnFreshConnection if self.reads_lost && !self.lost_reach => {
                self.reads_lost = false;
            }
            ReadOutcome::Answered | ReadOutcome::HungOnFreshConnection => {
                if self.reads_lost {
                    self.reads_lost = false;
                    self.lost_reach = false;
                    self.reads_back_at = Some(now);
                    self.first_after_back = None;
                    self.failures = 0;
                    self.last_error = None;
                }
            }
        }
    }

    /// The write history as of `now`, for an observation.
    pub(crate) fn snapshot(&self, now: Instant) -> WriteProbe {
        let ms = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let deadline_ms = self.deadline.as_millis() as u64;
        if self.reads_lost {
            return WriteProbe {
                deadline_ms,
                hung: self.hung.len() as u32,
                ..WriteProbe::default()
            };
        }
        let back = self.reads_back_at;
        let stale = |t: Instant| back.is_some_and(|b| t < b);
        // After reads came back, writes have failed at most since the first one started.
        let since_ok_ms = match (back, self.first_after_back) {
            (None, _) => self.last_ok.map(ms),
            (Some(_), None) => None,
            (Some(_), Some(first)) => {
                Some(self.last_ok.map_or(ms(first), |t| ms(t).min(ms(first))))
            }
        };
        WriteProbe {
            deadline_ms,
            since_ok_ms,
            pending_ms: self.pending_since.filter(|&t| !stale(t)).map(ms),
            failures: self.failures,
            last_error: self.last_error.clone(),
            hung: self.hung.len() as u32,
        }
    }

    fn succeeded(&mut self) {
        self.last_ok = Some(Instant::now());
        self.reads_back_at = None;
        self.first_after_back = None;
        self.pending_since = None;
        self.pending_timed_out = false;
        self.failures = 0;
        self.last_error = None;
    }

    fn failed(&mut self, e: &ProbeError) {
        self.pending_since = None;
        if !std::mem::take(&mut self.pending_timed_out) {
            self.failures += 1;
        }
        let (code, timed_out) = match e {
            ProbeError::Server { code, .. } | ProbeError::Auth { code, .. } => (Some(*code), false),
            ProbeError::Timeout { .. } => (None, true),
            _ => (None, false),
        };
        self.last_error = Some(WriteFailure {
            code,
            timed_out,
            message: e.to_string(),
        });
    }

    /// The write in flight passed its deadline: counted once as a failure. Returns whether
    /// this is the first time for this write.
    fn timed_out(&mut self) -> bool {
        if self.pending_timed_out {
            return false;
        }
        self.pending_timed_out = true;
        self.failures += 1;
        self.last_error = Some(WriteFailure {
            code: None,
            timed_out: true,
            message: format!("heartbeat write timed out after {:?}", self.deadline),
        });
        true
    }
}

/// What a read probe of the server said, for [`WriteState::note_reads`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// It answered.
    Answered,
    /// Its query timed out on a connection opened for it
    /// ([`model::ProbeFailure::hung_on_fresh_connection`]).
    HungOnFreshConnection,
    /// It failed; `reach` when it may not have reached the server at all (anything but a
    /// query that timed out on a kept connection).
    Lost { reach: bool },
}

impl ReadOutcome {
    /// The outcome an observation records.
    pub(crate) fn of(obs: &model::Observation) -> Self {
        match obs.failure() {
            None => Self::Answered,
            Some(f) if f.hung_on_fresh_connection() => Self::HungOnFreshConnection,
            Some(f) => Self::Lost {
                reach: !(f.kind == model::ProbeFailureKind::Timeout
                    && !f.fresh_connection
                    && !f.message.starts_with("connect")
                    && !f.message.starts_with("fast-path")),
            },
        }
    }
}

/// A write in flight: the task that owns the writer's connection and returns it.
struct InFlight {
    task: tokio::task::JoinHandle<(Option<HeartbeatWriter>, Result<WriteOutcome, ProbeError>)>,
    started: Instant,
    /// The writer connection's id on the server, once known.
    conn_id: Arc<std::sync::atomic::AtomicU64>,
}

/// Stamp the heartbeat row on the cluster's primary every probe interval until cancelled.
///
/// Each write runs on a task of its own, under its own deadline
/// ([`HeartbeatOptions::write_timeout`]), apart from the read probe: a write that hangs delays
/// neither the probes nor the next round. While it hangs no other write starts; past the
/// deadline it counts as a failure, and the cluster is probed and analysed at once
/// (`PrimaryWritesStalled` within the deadline of the write that hangs). After
/// [`ABANDON_AFTER`] it is killed and dropped; while [`MAX_HUNG_WRITES`] abandoned writes
/// are still on the server, no new one starts.
pub(crate) async fn run(ctx: Arc<Ctx>, cell: Arc<ClusterCell>, cancel: CancellationToken) {
    let mut writer: Option<HeartbeatWriter> = None;
    let mut in_flight: Option<InFlight> = None;
    let mut target: Option<InstanceAddr> = None;
    let mut ticker = tokio::time::interval(ctx.opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = ctx.heartbeat.write_timeout;
    loop {
        let wake = in_flight.as_ref().map(|f| {
            let limit = if ctx.write_state(target.as_ref(), |w| w.pending_timed_out) {
                ABANDON_AFTER
            } else {
                deadline
            };
            tokio::time::Instant::from_std(f.started + limit)
        });
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
            _ = async { tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)).await }, if wake.is_some() => {}
            done = async { (&mut in_flight.as_mut().map(|f| &mut f.task).unwrap()).await }, if in_flight.is_some() => {
                in_flight = None;
                let Some(addr) = target.clone() else { continue };
                match done {
                    Ok((w, r)) => {
                        writer = w;
                        finish(&ctx, &cell, &addr, r);
                    }
                    Err(e) => {
                        writer = None;
                        debug!(cluster = %cell.name, error = %e, "heartbeat write task ended");
                    }
                }
                continue;
            }
        }
        let view = cell.primary.borrow().clone();
        // The primary as last named, not found dead, and writable with no source when last
        // seen answering (a timed-out read keeps the target: its write state is evidence).
        let want = match view.addr {
            Some(addr) if !view.dead && ctx.may_write_heartbeat(&addr) => Some(addr),
            _ => None,
        };
        if want != target {
            if let Some(f) = in_flight.take() {
                f.task.abort();
            }
            if let Some(w) = writer.take() {
                w.close().await;
            }
            if let Some(old) = target.take() {
                ctx.writes_lock().remove(&old);
            }
            if let Some(addr) = &want {
                ctx.writes_lock()
                    .insert(addr.clone(), WriteState::new(deadline));
            }
            target = want;
        }
        let Some(addr) = target.clone() else { continue };
        if let Some(f) = &in_flight {
            let waited = f.started.elapsed();
            // Pending from before the reads came back: abandoned now, not after
            // ABANDON_AFTER, so that a fresh write tells whether the disk stalls (found by
            // the stall-primary-disk DRT: a write hung on a frozen filesystem from before
            // one failed read probe, never counted and never replaced, hid the stall).
            let stale = ctx.write_state(Some(&addr), |w| w.stale_write(f.started));
            if waited >= ABANDON_AFTER || stale {
                let f = in_flight.take().expect("in flight");
                f.task.abort();
                writer = None;
                let id = f.conn_id.load(Ordering::Relaxed);
                let gone = kill(&addr, &cell.watch.credentials, ctx.opts.probe, &[id]).await;
                ctx.with_write(&addr, |w| {
                    w.pending_since = None;
                    w.pending_timed_out = false;
                    if id != 0 && !gone.contains(&id) {
                        w.hung.push(id);
                    }
                });
                warn!(cluster = %cell.name, instance = %addr, waited_ms = waited.as_millis() as u64, stale, "heartbeat write abandoned");
            } else if waited >= deadline
                && ctx.with_write(&addr, WriteState::timed_out) == Some(true)
            {
                warn!(cluster = %cell.name, instance = %addr, deadline_ms = deadline.as_millis() as u64, "heartbeat write timed out: probing the cluster now");
                ctx.stats
                    .heartbeat_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                if let Err(e) =
                    crate::fast::probe_and_analyse(&ctx, &cell, None, None, RoundTrigger::Refresh)
                        .await
                {
                    warn!(cluster = %cell.name, error = %e, "analysis after a heartbeat write timeout failed");
                }
            }
            continue;
        }
        let hung: Vec<u64> = ctx.write_state(Some(&addr), |w| w.hung.clone());
        if hung.len() as u32 >= MAX_HUNG_WRITES {
            // Still there? A thread of a frozen disk's write stays until the thaw.
            let gone = kill(&addr, &cell.watch.credentials, ctx.opts.probe, &hung).await;
            let left = ctx
                .with_write(&addr, |w| {
                    w.hung.retain(|id| !gone.contains(id));
                    w.hung.len()
                })
                .unwrap_or(0);
            if left as u32 >= MAX_HUNG_WRITES {
                continue;
            }
        }
        let opts = ProbeOptions {
            connect_timeout: ctx.opts.probe.connect_timeout,
            query_timeout: ABANDON_AFTER + Duration::from_secs(1),
        };
        let creds = cell.watch.credentials.clone();
        let conn_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let id_slot = conn_id.clone();
        let mut w = writer.take();
        let a = addr.clone();
        ctx.with_write(&addr, |s| s.start_write(Instant::now()));
        in_flight = Some(InFlight {
            started: Instant::now(),
            conn_id,
            task: tokio::spawn(async move {
                if w.is_none() {
                    match HeartbeatWriter::connect(&a, &creds, opts).await {
                        Ok(x) => w = Some(x),
                        Err(e) => return (None, Err(e)),
                    }
                }
                let Some(mut x) = w else {
                    return (
                        None,
                        Err(ProbeError::Other("no heartbeat connection".into())),
                    );
                };
                id_slot.store(x.conn_id, Ordering::Relaxed);
                let r = x.write().await;
                let keep = r.is_ok() || matches!(r, Err(ProbeError::Server { .. }));
                (keep.then_some(x), r)
            }),
        });
    }
    if let Some(f) = in_flight.take() {
        f.task.abort();
    }
    if let Some(old) = target.take() {
        ctx.writes_lock().remove(&old);
    }
    if let Some(w) = writer {
        w.close().await;
    }
}

/// Record how a write ended.
fn finish(
    ctx: &Ctx,
    cell: &ClusterCell,
    addr: &InstanceAddr,
    result: Result<WriteOutcome, ProbeError>,
) {
    match result {
        Ok(WriteOutcome::Written) => {
            ctx.stats.heartbeat_writes.fetch_add(1, Ordering::Relaxed);
            ctx.with_write(addr, WriteState::succeeded);
        }
        Ok(WriteOutcome::ReadOnly) => {
            // Nothing to write on a read-only server; the statement completed.
            ctx.with_write(addr, WriteState::succeeded);
            debug!(cluster = %cell.name, instance = %addr, "heartbeat not written: read-only");
        }
        Err(e) => {
            ctx.stats
                .heartbeat_write_errors
                .fetch_add(1, Ordering::Relaxed);
            debug!(cluster = %cell.name, instance = %addr, error = %e, "heartbeat write failed");
            ctx.with_write(addr, |w| w.failed(&e));
        }
    }
}

/// Kill the connections `ids` on `addr` (0 is skipped) from a fresh connection, and return
/// those that are gone afterwards. Best effort, under the probe's timeouts: a server that
/// does not answer reports none gone.
async fn kill(
    addr: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
    ids: &[u64],
) -> Vec<u64> {
    let ids: Vec<u64> = ids.iter().copied().filter(|&i| i != 0).collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(mut s) = Session::connect(addr, creds, opts).await else {
        return Vec::new();
    };
    for id in &ids {
        // Unknown thread (already gone) is fine.
        let _ = s.kill_connection(*id).await;
    }
    let still = s
        .connections_alive(&ids)
        .await
        .unwrap_or_else(|_| ids.clone());
    s.close().await;
    ids.into_iter().filter(|i| !still.contains(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control plane cut from the primary: its writes fail while its reads fail too,
    /// which proves nothing of its disk; once reads answer again, the write still pending
    /// from before and the failures meanwhile are no evidence either. A write that then
    /// hangs past its deadline is.
    #[test]
    fn writes_that_failed_while_reads_failed_are_no_stall() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = WriteState::new(Duration::from_millis(500));
        w.succeeded();
        w.note_reads(ReadOutcome::Answered, at(0));
        w.pending_since = Some(at(100));
        assert!(w.timed_out(), "the pending write passes its deadline");
        assert!(
            w.snapshot(at(700)).stalled_ms().is_some(),
            "reads answer: a stall"
        );
        // The reads fail too: no stall claimed.
        w.note_reads(ReadOutcome::Lost { reach: true }, at(1_000));
        assert_eq!(w.snapshot(at(3_000)).stalled_ms(), None);
        // Reads answer again; the old write still hangs: not evidence, and stale, so the
        // writer abandons it at once for a fresh one.
        w.note_reads(ReadOutcome::Answered, at(4_000));
        assert_eq!(w.snapshot(at(4_100)).stalled_ms(), None);
        assert!(
            w.stale_write(at(100)),
            "the write from before the reads' return"
        );
        assert!(!w.stale_write(at(4_050)), "a write started after it");
        assert_eq!(w.snapshot(at(9_000)).stalled_ms(), None);
        // A new write after that hangs past its deadline: a stall, counted from reads'
        // return at the most.
        w.pending_timed_out = false;
        w.start_write(at(9_100));
        assert!(w.timed_out());
        assert_eq!(
            w.snapshot(at(9_700)).stalled_ms(),
            Some(600),
            "counted from the first write after reads' return"
        );
    }

    /// A frozen datadir: the first read to time out is on the kept connection, the next
    /// ones hang on fresh connections. The server was hung all along: the write pending
    /// from before stays evidence, and is not stale.
    #[test]
    fn reads_that_only_hung_keep_the_writes_as_evidence() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = WriteState::new(Duration::from_millis(500));
        w.succeeded();
        w.note_reads(ReadOutcome::Answered, at(0));
        w.start_write(at(100));
        w.note_reads(ReadOutcome::Lost { reach: false }, at(600));
        assert_eq!(w.snapshot(at(700)).stalled_ms(), None, "not known yet");
        assert!(w.timed_out());
        w.note_reads(ReadOutcome::HungOnFreshConnection, at(1_600));
        assert!(!w.stale_write(at(100)), "the server was hung all along");
        let stalled = w.snapshot(at(1_700)).stalled_ms();
        assert!(
            stalled.is_some_and(|ms| ms >= 1_600),
            "at least since the write that hangs started: {stalled:?}"
        );
        // A connect that failed in between (a cut link) makes the return a new start.
        w.note_reads(ReadOutcome::Lost { reach: false }, at(2_600));
        w.note_reads(ReadOutcome::Lost { reach: true }, at(3_600));
        w.note_reads(ReadOutcome::HungOnFreshConnection, at(4_600));
        assert!(w.stale_write(at(100)));
        assert_eq!(w.snapshot(at(4_700)).stalled_ms(), None);
    }
}
