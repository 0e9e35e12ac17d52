//! The writers of a load: probing for the primary, pacing, one `INSERT` per write, and the
//! classification of every outcome into the ledger.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::InstanceAddr;
use probe::{ProbeError, ProbeOptions, Session};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ledger::{
    merge_outages, row_id, Ack, InDoubt, Ledger, Outage, PinnedWriter, SplitBrain,
};
use super::{LoadOptions, MAX_WRITERS, MAX_WRITES_PER_WRITER};

/// Server errors after which a statement's outcome is unknown: the server stopped or cut
/// the connection while the statement ran, possibly after it committed. Every other server
/// error means the autocommit statement was rolled back.
const IN_DOUBT_SERVER_ERRORS: [u16; 5] = [
    1053, // ER_SERVER_SHUTDOWN
    1317, // ER_QUERY_INTERRUPTED
    1927, // ER_CONNECTION_KILLED
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
];

/// Why an attempt certainly wrote nothing. The `Display` form keys
/// [`Ledger::failure_reasons`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// No candidate answered with `read_only=0`.
    NoWritablePrimary,
    /// The server refused the connection.
    ConnectRefused,
    /// The server refused the statement.
    Server(u16),
    /// The stale client's connect failed without a refusal (a timeout, a reset): nothing
    /// was sent.
    Unreachable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoWritablePrimary => f.write_str("no writable primary"),
            Self::ConnectRefused => f.write_str("connection refused"),
            Self::Server(1290) => f.write_str("server error 1290 (read_only)"),
            Self::Server(code) => write!(f, "server error {code}"),
            Self::Unreachable => f.write_str("cannot connect"),
        }
    }
}

/// How a failed `INSERT` ended.
enum Failure {
    Refused(Refusal),
    InDoubt,
}

fn classify(e: &ProbeError) -> Failure {
    match e {
        ProbeError::Server { code, .. } | ProbeError::Auth { code, .. }
            if !IN_DOUBT_SERVER_ERRORS.contains(code) =>
        {
            Failure::Refused(Refusal::Server(*code))
        }
        // A refusal happens only at connect, before anything was sent.
        ProbeError::Refused => Failure::Refused(Refusal::ConnectRefused),
        _ => Failure::InDoubt,
    }
}

/// Wall-clock milliseconds read once, advanced by the monotonic clock.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    start_ms: u64,
}

impl Clock {
    fn start() -> Self {
        let start_ms = model::clock::now_ms();
        Self {
            start: Instant::now(),
            start_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

/// What every writer shares.
struct Shared {
    opts: LoadOptions,
    clock: Clock,
    run_tag: u64,
    deadline: Instant,
    /// Ids handed out so far, for `max_writes`.
    issued: AtomicU64,
    cancel: CancellationToken,
}

/// A random run tag in 1..=900,000, so ids stay below `i64::MAX`.
fn random_tag() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() % 900_000 + 1
}

pub(super) async fn run(opts: LoadOptions, cancel: CancellationToken) -> Ledger {
    let clock = Clock::start();
    let pinned = opts.pinned.clone();
    // The stale client is one more writer, with the last index.
    let writers = opts
        .writers
        .min(MAX_WRITERS - usize::from(pinned.is_some()));
    let total = writers + usize::from(pinned.is_some());
    let max_writes = opts
        .max_writes
        .min(MAX_WRITES_PER_WRITER.saturating_mul(total as u64));
    let table = opts.table.clone();
    let sh = Arc::new(Shared {
        deadline: clock.start + opts.duration,
        opts: LoadOptions {
            writers,
            max_writes,
            ..opts
        },
        clock,
        run_tag: random_tag(),
        issued: AtomicU64::new(0),
        cancel,
    });
    let mut set = JoinSet::new();
    for w in 0..total {
        set.spawn(writer(w, Arc::clone(&sh)));
    }
    let mut logs = Vec::with_capacity(total);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(log) => logs.push(log),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    let ended_ms = sh.clock.now_ms();

    let mut ledger = Ledger {
        table,
        run_tag: sh.run_tag,
        writers: total,
        started_ms: sh.clock.start_ms,
        ended_ms,
        acked: Vec::new(),
        in_doubt: Vec::new(),
        failed_attempts: 0,
        failure_reasons: BTreeMap::new(),
        outages: Vec::new(),
        writer_outages: Vec::new(),
        split_brain: Vec::new(),
        pinned: pinned.map(|addr| PinnedWriter {
            writer: writers,
            addr,
        }),
    };
    for log in logs {
        ledger.acked.extend(log.acked);
        ledger.in_doubt.extend(log.in_doubt);
        ledger.failed_attempts += log.failed;
        for (k, v) in log.reasons {
            *ledger.failure_reasons.entry(k).or_default() += v;
        }
        ledger.writer_outages.extend(log.outages);
        ledger.split_brain.extend(log.split_brain);
    }
    ledger.acked.sort_by_key(|a| (a.at_ms, a.id));
    ledger.in_doubt.sort_by_key(|a| (a.at_ms, a.id));
    ledger
        .writer_outages
        .sort_by_key(|o| (o.first_failure_ms, o.writers.clone()));
    ledger.split_brain.sort_by_key(|s| (s.at_ms, s.writer));
    ledger.outages = merge_outages(&ledger.writer_outages, ended_ms);
    ledger
}

/// One writer's part of the ledger.
struct WriterLog {
    writer: usize,
    /// The stale client: it opens no outage, and its refusals are counted apart.
    pinned: bool,
    acked: Vec<Ack>,
    in_doubt: Vec<InDoubt>,
    failed: u64,
    reasons: BTreeMap<String, u64>,
    outages: Vec<Outage>,
    split_brain: Vec<SplitBrain>,
    open: Option<Outage>,
    last_server: Option<InstanceAddr>,
}

impl WriterLog {
    fn new(writer: usize, pinned: bool) -> Self {
        Self {
            writer,
            pinned,
            acked: Vec::new(),
            in_doubt: Vec::new(),
            failed: 0,
            reasons: BTreeMap::new(),
            outages: Vec::new(),
            split_brain: Vec::new(),
            open: None,
            last_server: None,
        }
    }

    /// An attempt that started at `at_ms` was not acknowledged.
    fn not_acked(&mut self, at_ms: u64) {
        if self.open.is_none() && !self.pinned {
            debug!(writer = self.writer, from = ?self.last_server, "writes fail");
            self.open = Some(Outage {
                first_failure_ms: at_ms,
                recovered_ms: None,
                from: self.last_server.clone(),
                to: None,
                writers: vec![self.writer],
            });
        }
    }

    fn refused(&mut self, at_ms: u64, why: Refusal) {
        self.failed += 1;
        let key = if self.pinned {
            format!("stale client: {why}")
        } else {
            why.to_string()
        };
        *self.reasons.entry(key).or_default() += 1;
        self.not_acked(at_ms);
    }

    fn ack(&mut self, ack: Ack) {
        if let Some(mut o) = self.open.take() {
            debug!(writer = self.writer, to = %ack.server, "writes recovered");
            o.recovered_ms = Some(ack.at_ms);
            o.to = Some(ack.server.clone());
            self.outages.push(o);
        }
        self.last_server = Some(ack.server.clone());
        self.acked.push(ack);
    }

    fn finish(mut self) -> Self {
        if let Some(o) = self.open.take() {
            self.outages.push(o);
        }
        self
    }
}

/// The writer's connection to the server it believes is the primary.
struct Conn {
    session: Session,
    /// Where it connected: the server, or a proxy in front of it.
    addr: InstanceAddr,
    /// The server that answers, which acknowledgements are attributed to: `addr`, or
    /// the server behind the proxy ([`LoadOptions::via_proxy`]).
    server: InstanceAddr,
}

impl Conn {
    async fn close(self) {
        self.session.close().await;
    }
}

/// Sleep until `t`; false when the run must stop first (cancelled, or `t` is past the
/// deadline).
async fn pause_until(sh: &Shared, t: Instant) -> bool {
    tokio::select! {
        _ = sh.cancel.cancelled() => false,
        _ = tokio::time::sleep_until(t.min(sh.deadline)) => t < sh.deadline,
    }
}

fn must_stop(sh: &Shared) -> bool {
    sh.cancel.is_cancelled() || Instant::now() >= sh.deadline
}

#[tracing::instrument(skip_all, fields(writer = w))]
async fn writer(w: usize, sh: Arc<Shared>) -> WriterLog {
    // The stale client has the index after the last discovering writer.
    let pinned = sh.opts.pinned.clone().filter(|_| w == sh.opts.writers);
    let mut log = WriterLog::new(w, pinned.is_some());
    // `run` clamped the count; a discovering writer is one of them, so it is at least 1
    // (the stale client alone: 0 others, and it takes a whole writer's share).
    let writers = (sh.opts.writers as u32).max(1);
    // Each writer's share of the rate, staggered so writers do not fire together.
    let interval = (sh.opts.rate_per_s > 0)
        .then(|| Duration::from_secs_f64(f64::from(writers) / f64::from(sh.opts.rate_per_s)));
    let mut next_at = Instant::now() + interval.unwrap_or_default() * w as u32 / writers;
    let mut conn: Option<Conn> = None;
    let mut seq = 0u64;
    let probe_opts = ProbeOptions {
        connect_timeout: sh.opts.connect_timeout,
        query_timeout: if pinned.is_some() {
            sh.opts.pinned_write_timeout
        } else {
            sh.opts.write_timeout
        },
    };
    let table = sh.opts.table.quoted();

    loop {
        if must_stop(&sh) {
            break;
        }
        if let Some(iv) = interval {
            if !pause_until(&sh, next_at).await {
                break;
            }
            next_at = (next_at + iv).max(Instant::now());
        }
        let attempt_ms = sh.clock.now_ms();

        let c = match conn.as_mut() {
            Some(c) => c,
            None if pinned.is_some() => {
                let Some(addr) = pinned.clone() else { break };
                let connected = tokio::select! {
                    _ = sh.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(sh.deadline) => break,
                    r = Session::connect(&addr, &sh.opts.creds, probe_opts) => r,
                };
                match connected {
                    Ok(session) => conn.insert(Conn {
                        session,
                        server: addr.clone(),
                        addr,
                    }),
                    Err(e) => {
                        debug!(server = %addr, error = %e, "stale client: connect failed");
                        let why = match classify(&e) {
                            Failure::Refused(r) => r,
                            Failure::InDoubt => Refusal::Unreachable,
                        };
                        log.refused(attempt_ms, why);
                        if !pause_until(&sh, Instant::now() + sh.opts.retry_pause).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            None => {
                let found = tokio::select! {
                    _ = sh.cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(sh.deadline) => break,
                    found = find_primary(&sh.opts.candidates, &sh.opts.creds, probe_opts, sh.opts.via_proxy) => found,
                };
                if found.writable.len() > 1 {
                    warn!(writable = ?found.writable, "more than one candidate is writable");
                    log.split_brain.push(SplitBrain {
                        at_ms: attempt_ms,
                        writer: w,
                        writable: found.writable,
                    });
                }
                match found.chosen {
                    Some(c) => conn.insert(c),
                    None => {
                        log.refused(attempt_ms, Refusal::NoWritablePrimary);
                        if !pause_until(&sh, Instant::now() + sh.opts.retry_pause).await {
                            break;
                        }
                        continue;
                    }
                }
            }
        };

        if sh.issued.fetch_add(1, Ordering::Relaxed) >= sh.opts.max_writes {
            break;
        }
        seq += 1;
        let id = row_id(sh.run_tag, w, seq);
        let sent_ms = sh.clock.now_ms();
        let sql = format!(
            "INSERT INTO {table} (id, writer, acked_at_ms, payload) \
             VALUES ({id}, {w}, {sent_ms}, 'drt {tag} w{w} s{seq}')",
            tag = sh.run_tag
        );
        let server = c.server.clone();
        match c.session.exec("insert", &sql).await {
            Ok(()) => {
                let at_ms = sh.clock.now_ms();
                let gtid = match c
                    .session
                    .query_rows("last gtid", "SELECT @@last_gtid")
                    .await
                {
                    Ok(rows) => rows
                        .into_iter()
                        .next()
                        .and_then(|r| r.into_values().next().flatten())
                        .filter(|g| !g.is_empty()),
                    Err(e) => {
                        // The write is acknowledged all the same; only its GTID is unknown.
                        debug!(%server, error = %e, "read last_gtid");
                        if let Some(c) = conn.take() {
                            c.close().await;
                        }
                        None
                    }
                };
                if let Some(feed) = &sh.opts.ack_feed {
                    let _ = feed.send(id);
                }
                log.ack(Ack {
                    id,
                    writer: w,
                    at_ms,
                    sent_ms,
                    gtid,
                    server,
                });
            }
            Err(e) => {
                let at_ms = sh.clock.now_ms();
                debug!(%server, id, error = %e, "insert failed");
                match classify(&e) {
                    Failure::Refused(why) => log.refused(sent_ms, why),
                    Failure::InDoubt => {
                        log.not_acked(sent_ms);
                        log.in_doubt.push(InDoubt {
                            id,
                            writer: w,
                            sent_ms,
                            at_ms,
                            server,
                            error: e.to_string(),
                        });
                    }
                }
                if let Some(c) = conn.take() {
                    c.close().await;
                }
                if !pause_until(&sh, Instant::now() + sh.opts.retry_pause).await {
                    break;
                }
            }
        }
    }
    if let Some(c) = conn.take() {
        c.close().await;
    }
    log.finish()
}

/// The outcome of one probe round.
struct Found {
    /// A session to the first writable candidate.
    chosen: Option<Conn>,
    /// Every writable candidate, in candidate order.
    writable: Vec<InstanceAddr>,
}

/// Probe every candidate at once as the application account and keep a session to the first
/// writable one. Read-only and surplus sessions are closed. With `via_proxy`, each session
/// also learns the server behind the candidate.
async fn find_primary(
    candidates: &[InstanceAddr],
    creds: &probe::Credentials,
    opts: ProbeOptions,
    via_proxy: bool,
) -> Found {
    let mut set = JoinSet::new();
    for (i, addr) in candidates.iter().enumerate() {
        let (addr, creds) = (addr.clone(), creds.clone());
        set.spawn(async move {
            let r = async {
                let mut s = Session::connect(&addr, &creds, opts).await?;
                let rows = s
                    .query_rows(
                        "read_only",
                        "SELECT @@read_only AS ro, @@port AS port, @@report_host AS host",
                    )
                    .await?;
                let row = rows.into_iter().next().unwrap_or_default();
                let get = |k: &str| row.get(k).cloned().flatten();
                let read_only = get("ro").is_none_or(|v| v != "0");
                if read_only {
                    s.close().await;
                    return Ok(None);
                }
                let server = if via_proxy {
                    let host = get("host")
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| addr.host.clone());
                    match get("port").and_then(|p| p.parse().ok()) {
                        Some(port) => InstanceAddr::new(host, port),
                        None => addr.clone(),
                    }
                } else {
                    addr.clone()
                };
                Ok(Some((s, server)))
            }
            .await;
            (i, addr, r)
        });
    }
    let mut writable: Vec<(usize, Conn)> = Vec::new();
    while let Some(r) = set.join_next().await {
        let Ok((i, addr, r)) = r else { continue };
        match r {
            Ok(Some((session, server))) => writable.push((
                i,
                Conn {
                    session,
                    addr,
                    server,
                },
            )),
            Ok(None) => debug!(server = %addr, "read_only"),
            Err::<_, ProbeError>(e) => debug!(server = %addr, error = %e, "probe failed"),
        }
    }
    writable.sort_by_key(|(i, _)| *i);
    let addrs = writable.iter().map(|(_, c)| c.addr.clone()).collect();
    let mut conns = writable.into_iter().map(|(_, c)| c);
    let chosen = conns.next();
    for c in conns {
        c.close().await;
    }
    Found {
        chosen,
        writable: addrs,
    }
}
