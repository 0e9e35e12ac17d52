//! The route checks a proxy calls to find where writes and reads go (the pull path,
//! `docs/ROUTING.md`): `GET /api/v1/route/{cluster}/{addr}/writer` and `…/reader`.
//!
//! They answer from [`RouteTable`], an in-memory table, never from the store: the daemon
//! hands it every round the watch loop publishes ([`RouteTable::on_round`]), and a task of
//! its own ([`RouteTable::spawn_refresher`]) reads from the store what a round does not
//! carry (the cluster's writer, its fenced instances, its `max_lag`), off the request path,
//! when a round shows that something may have changed, when an operation on the cluster
//! ends, and every [`STORE_REFRESH`]. The checks need no token, are rate-limited
//! ([`RouteOptions::checks_per_second`]) and answer nothing but the role and the verdict.
//!
//! Invariant: at most one address of a cluster answers 200 to `writer` at a time (the
//! writer the store records), and a check never waits on the store or a managed server.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use model::{ClusterRound, InstanceAddr, IoThreadState, Observation};
use serde::Serialize;
use store::settings::Settings as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, AppState};

/// How often the store's part of a cluster's entry is read again even when no round asked
/// for it (another control-plane node's failover, a rejoin that removed a fenced mark).
pub const STORE_REFRESH: Duration = Duration::from_secs(10);

/// How the route checks behave.
#[derive(Clone, Copy, Debug)]
pub struct RouteOptions {
    /// A cluster whose latest round is older than this answers 503 to every check: the
    /// table no longer knows. The daemon sets three probe intervals plus the probe's
    /// timeouts, the age at which the watch loop itself treats an observation as a timeout.
    pub stale_after: Duration,
    /// Route checks answered per second, all clients together, with a burst of one second's
    /// worth; past it a check gets 429. Default 5,000 (2,500 servers checked every 500 ms).
    pub checks_per_second: f64,
    /// How many checks the bucket holds (the burst). Default: one second's worth.
    pub burst: f64,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(5),
            checks_per_second: 5_000.0,
            burst: 5_000.0,
        }
    }
}

/// The role a check asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteRole {
    /// The one instance writes go to.
    Writer,
    /// An instance reads may go to.
    Reader,
}

/// What a check answers: the role asked about and whether the instance may take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RouteAnswer {
    /// The role asked about.
    pub role: RouteRole,
    /// Whether the instance may take it now (200), or not (503).
    pub ok: bool,
}

/// A member as the latest round saw it, reduced to what the checks read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Member {
    /// Reachable, writable (`read_only = 0`) and replicating from no one.
    writable_primary: bool,
    /// Reachable, both replication threads running, with this lag (seconds behind its
    /// source; `None` when the server does not know it).
    replica_lag: Option<Option<u64>>,
}

impl Member {
    fn of(o: &Observation) -> Self {
        let Some(s) = o.state() else {
            return Self::default();
        };
        match &s.replication {
            None => Self {
                writable_primary: !s.read_only,
                replica_lag: None,
            },
            Some(r) => Self {
                writable_primary: false,
                replica_lag: (r.io_thread == IoThreadState::Yes && r.sql_running)
                    .then_some(r.seconds_behind_source),
            },
        }
    }
}

/// What the store says of a cluster, as last read.
#[derive(Clone, Debug)]
struct StorePart {
    writer: Option<InstanceAddr>,
    fenced: HashSet<InstanceAddr>,
    max_lag: Duration,
    read_at: Instant,
}

/// One cluster's entry.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// `None` until the refresher first read the store for this cluster.
    store: Option<StorePart>,
    /// The latest round's members, and when it was handed over.
    members: HashMap<InstanceAddr, Member>,
    round_at: Option<Instant>,
    /// Addresses the store lists for the cluster (known before any round).
    listed: HashSet<InstanceAddr>,
}

impl Entry {
    fn knows(&self, addr: &InstanceAddr) -> bool {
        self.members.contains_key(addr)
            || self.listed.contains(addr)
            || self
                .store
                .as_ref()
                .is_some_and(|s| s.writer.as_ref() == Some(addr))
    }

    /// The verdict for `addr` in `role` at `now`.
    fn verdict(&self, addr: &InstanceAddr, role: RouteRole, now: Instant, stale: Duration) -> bool {
        let (Some(store), Some(round_at)) = (&self.store, self.round_at) else {
            return false;
        };
        if now.saturating_duration_since(round_at) > stale || store.fenced.contains(addr) {
            return false;
        }
        let Some(m) = self.members.get(addr) else {
            return false;
        };
        match role {
            RouteRole::Writer => store.writer.as_ref() == Some(addr) && m.writable_primary,
            RouteRole::Reader => {
                store.writer.as_ref() != Some(addr)
                    && m.replica_lag
                        .flatten()
                        .is_some_and(|lag| Duration::from_secs(lag) <= store.max_lag)
            }
        }
    }
}

/// A token bucket for the checks, all clients together.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner {
    opts: RouteOptions,
    clusters: RwLock<HashMap<String, Entry>>,
    /// Clusters whose store part is to be read again.
    dirty: Mutex<HashSet<String>>,
    wake: Notify,
    bucket: Mutex<Bucket>,
}

/// The in-memory table the route checks answer from. Cloning shares it.
#[derive(Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new(RouteOptions::default())
    }
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl RouteTable {
    /// An empty table.
    pub fn new(opts: RouteOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                clusters: RwLock::new(HashMap::new()),
                dirty: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                bucket: Mutex::new(Bucket {
                    tokens: opts.burst,
                    at: Instant::now(),
                }),
            }),
        }
    }

    /// Take the round the watch loop published: its members replace the cluster's. The
    /// store's part is marked to be read again when the round names another primary than
    /// the recorded writer, shows the writer not writable, or the part is older than
    /// [`STORE_REFRESH`]. Never waits on IO.
    pub fn on_round(&self, round: &ClusterRound) {
        let members: HashMap<InstanceAddr, Member> = round
            .observations
            .iter()
            .map(|o| (o.addr.clone(), Member::of(o)))
            .collect();
        let now = Instant::now();
        let stale_store = {
            let mut clusters = write(&self.inner.clusters);
            let e = clusters.entry(round.cluster.clone()).or_default();
            e.members = members;
            e.round_at = Some(now);
            match &e.store {
                None => true,
                Some(s) => {
                    s.writer != round.primary
                        || s.writer
                            .as_ref()
                            .is_none_or(|w| !e.members.get(w).is_some_and(|m| m.writable_primary))
                        || now.saturating_duration_since(s.read_at) > STORE_REFRESH
                }
            }
        };
        if stale_store {
            self.mark(&round.cluster);
        }
    }

    /// Have the refresher read `cluster`'s store part again.
    pub fn mark(&self, cluster: &str) {
        let fresh = lock(&self.inner.dirty).insert(cluster.to_string());
        if fresh {
            self.inner.wake.notify_one();
        }
    }

    /// The answer to a check, or why there is none (404 for an unknown cluster or address).
    pub fn check(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
        role: RouteRole,
    ) -> Result<RouteAnswer, ApiError> {
        let clusters = read(&self.inner.clusters);
        let e = clusters
            .get(cluster)
            .ok_or_else(|| ApiError::NotFound(format!("no cluster named {cluster:?}")))?;
        if !e.knows(addr) {
            return Err(ApiError::NotFound(format!(
                "no instance {addr} in cluster {cluster:?}"
            )));
        }
        let ok = e.verdict(addr, role, Instant::now(), self.inner.opts.stale_after);
        Ok(RouteAnswer { role, ok })
    }

    /// Take one check from the bucket; `false` when it is empty.
    fn admit(&self) -> bool {
        let opts = &self.inner.opts;
        let mut b = lock(&self.inner.bucket);
        let now = Instant::now();
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * opts.checks_per_second;
        b.tokens = (b.tokens + refill).min(opts.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Read the store's part of one cluster into the table (or drop the cluster when the
    /// store no longer has it).
    async fn refresh_one(
        &self,
        store: &dyn store::Store,
        cluster: &str,
    ) -> Result<(), store::StoreError> {
        let record = store.cluster(cluster).await?;
        let Some(record) = record else {
            write(&self.inner.clusters).remove(cluster);
            return Ok(());
        };
        let fenced: HashSet<InstanceAddr> = store
            .fenced(cluster)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        let part = StorePart {
            writer: record.writer,
            fenced,
            max_lag: record.spec.max_lag,
            read_at: Instant::now(),
        };
        let mut clusters = write(&self.inner.clusters);
        let e = clusters.entry(cluster.to_string()).or_default();
        e.listed
            .extend(record.spec.instances.iter().map(|i| i.addr.clone()));
        e.store = Some(part);
        Ok(())
    }

    /// Load every cluster and instance the store lists (the table then answers 503, not
    /// 404, for them before their first round), then read the store part of each cluster
    /// marked, until `cancel`. `finished` (the engine's finished operations) marks each
    /// operation's cluster. A store that fails is logged and read again a second later.
    pub fn spawn_refresher(
        &self,
        store: Arc<dyn store::Store>,
        mut finished: Option<tokio::sync::broadcast::Receiver<store::OperationRecord>>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let table = self.clone();
        tokio::spawn(async move {
            match store.instances(None).await {
                Ok(list) => {
                    let mut clusters = write(&table.inner.clusters);
                    for i in list {
                        clusters.entry(i.cluster).or_default().listed.insert(i.addr);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "route checks: list the instances"),
            }
            match store.clusters().await {
                Ok(list) => {
                    for c in list {
                        table.mark(&c.name);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "route checks: list the clusters"),
            }
            let mut retry = tokio::time::interval(Duration::from_secs(1));
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due: Vec<String> = lock(&table.inner.dirty).drain().collect();
                for cluster in due {
                    if let Err(e) = table.refresh_one(store.as_ref(), &cluster).await {
                        tracing::warn!(%cluster, error = %e, "route checks: read the cluster's writer");
                        lock(&table.inner.dirty).insert(cluster);
                    }
                }
                let op = async {
                    match finished.as_mut() {
                        Some(rx) => Some(rx.recv().await),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = table.inner.wake.notified() => {}
                    _ = retry.tick() => {}
                    r = op => match r {
                        Some(Ok(op)) => table.mark(&op.cluster),
                        Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                            let names: Vec<String> = read(&table.inner.clusters).keys().cloned().collect();
                            for n in names {
                                table.mark(&n);
                            }
                        }
                        Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => finished = None,
                        None => {}
                    },
                }
            }
        })
    }
}

/// An address as a check names it: `host:port`, or an IPv6 address without its brackets
/// (`::1:3306`), since HAProxy's server names, which the generated config puts in the
/// check's path, cannot hold brackets.
fn check_addr(text: &str) -> Option<InstanceAddr> {
    if let Ok(a) = text.parse() {
        return Some(a);
    }
    let (host, port) = text.rsplit_once(':')?;
    host.contains(':')
        .then(|| format!("[{host}]:{port}").parse().ok())
        .flatten()
}

/// `GET /api/v1/route/{cluster}/{addr}/{role}`: 200 or 503 with `{"role", "ok"}`; 404 for
/// an unknown cluster, address or role; 429 past the rate limit.
pub async fn route_check(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    if !state.routing.admit() {
        return Err(ApiError::Rejected {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "too many route checks: at most {} a second",
                state.routing.inner.opts.checks_per_second
            ),
        });
    }
    let Ok(Path((cluster, addr, role))) = path else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let role = match role.as_str() {
        "writer" => RouteRole::Writer,
        "reader" => RouteRole::Reader,
        _ => {
            return Err(ApiError::NotFound(
                "no such route: the role is `writer` or `reader`".into(),
            ))
        }
    };
    let addr = check_addr(&addr)
        .ok_or_else(|| ApiError::NotFound(format!("no instance {addr:?}: not a host:port")))?;
    let answer = state.routing.check(&cluster, &addr, role)?;
    let status = if answer.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(answer)).into_response())
}

/// The route checks' routes: outside the token check (a proxy sends none).
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/route/{cluster}/{addr}/{role}", get(route_check))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::gtid::MariadbGtidList;
    use model::{
        Flavor, GtidState, ProbeFailure, ProbeFailureKind, Reachability, ReplicationStatus,
        SemiSyncState, ServerState,
    };

    fn addr(s: &str) -> InstanceAddr {
        s.parse().unwrap()
    }

    fn observation(
        a: &str,
        read_only: bool,
        replication: Option<ReplicationStatus>,
    ) -> Observation {
        Observation {
            addr: addr(a),
            at_unix_ms: 1_000,
            duration_us: 500,
            write: None,
            reachability: Reachability::Reachable(Box::new(ServerState {
                flavor: Flavor::Mariadb,
                version: "10.11.6-MariaDB".into(),
                server_id: 1,
                read_only,
                log_bin: true,
                log_replica_updates: true,
                replication,
                gtid: GtidState::Mariadb {
                    current_pos: MariadbGtidList::new(),
                    binlog_pos: MariadbGtidList::new(),
                    slave_pos: MariadbGtidList::new(),
                    binlog_state: Default::default(),
                    strict_mode: true,
                },
                semi_sync: SemiSyncState::default(),
                uptime_s: 1,
                threads_connected: 1,
                threads_running: 1,
                disk: None,
                metrics: None,
            })),
        }
    }

    fn primary(a: &str, read_only: bool) -> Observation {
        observation(a, read_only, None)
    }

    fn replica(a: &str, lag: Option<u64>, sql: bool) -> Observation {
        observation(
            a,
            true,
            Some(ReplicationStatus {
                source: addr("127.0.0.1:1"),
                io_thread: IoThreadState::Yes,
                sql_running: sql,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind_source: lag,
                sql_delay_s: 0,
                using_gtid: true,
                received_gtid: String::new(),
                stream: Default::default(),
            }),
        )
    }

    fn down(a: &str) -> Observation {
        Observation {
            addr: addr(a),
            at_unix_ms: 1_000,
            duration_us: 500,
            write: None,
            reachability: Reachability::Unreachable(ProbeFailure::new(
                ProbeFailureKind::Refused,
                "refused",
            )),
        }
    }

    fn entry(writer: Option<&str>, fenced: &[&str], obs: &[Observation]) -> Entry {
        Entry {
            store: Some(StorePart {
                writer: writer.map(addr),
                fenced: fenced.iter().map(|a| addr(a)).collect(),
                max_lag: Duration::from_secs(2),
                read_at: Instant::now(),
            }),
            members: obs
                .iter()
                .map(|o| (o.addr.clone(), Member::of(o)))
                .collect(),
            round_at: Some(Instant::now()),
            listed: HashSet::new(),
        }
    }

    const STALE: Duration = Duration::from_secs(5);

    #[test]
    fn only_the_recorded_writable_unfenced_writer_is_the_writer() {
        let obs = [
            primary("127.0.0.1:1", false),
            primary("127.0.0.1:2", false),
            replica("127.0.0.1:3", Some(0), true),
        ];
        let now = Instant::now();
        let e = entry(Some("127.0.0.1:1"), &[], &obs);
        let w = |a: &str| e.verdict(&addr(a), RouteRole::Writer, now, STALE);
        assert!(w("127.0.0.1:1"));
        assert!(!w("127.0.0.1:2"), "writable but not the recorded writer");
        assert!(!w("127.0.0.1:3"));
        let fenced = entry(Some("127.0.0.1:1"), &["127.0.0.1:1"], &obs);
        assert!(!fenced.verdict(&addr("127.0.0.1:1"), RouteRole::Writer, now, STALE));
        let ro = entry(Some("127.0.0.1:1"), &[], &[primary("127.0.0.1:1", true)]);
        assert!(!ro.verdict(&addr("127.0.0.1:1"), RouteRole::Writer, now, STALE));
        let down = entry(Some("127.0.0.1:1"), &[], &[down("127.0.0.1:1")]);
        assert!(!down.verdict(&addr("127.0.0.1:1"), RouteRole::Writer, now, STALE));
        let none = entry(None, &[], &obs);
        assert!(!none.verdict(&addr("127.0.0.1:1"), RouteRole::Writer, now, STALE));
        let later = now + STALE + Duration::from_millis(1);
        assert!(
            !e.verdict(&addr("127.0.0.1:1"), RouteRole::Writer, later, STALE),
            "a stale round"
        );
    }

    #[test]
    fn a_reader_is_a_running_replica_within_max_lag() {
        let obs = [
            primary("127.0.0.1:1", false),
            replica("127.0.0.1:2", Some(2), true),
            replica("127.0.0.1:3", Some(3), true),
            replica("127.0.0.1:4", None, true),
            replica("127.0.0.1:5", Some(0), false),
            replica("127.0.0.1:6", Some(0), true),
        ];
        let now = Instant::now();
        let e = entry(Some("127.0.0.1:1"), &["127.0.0.1:6"], &obs);
        let r = |a: &str| e.verdict(&addr(a), RouteRole::Reader, now, STALE);
        assert!(!r("127.0.0.1:1"), "the writer");
        assert!(r("127.0.0.1:2"), "at max_lag");
        assert!(!r("127.0.0.1:3"), "past max_lag");
        assert!(!r("127.0.0.1:4"), "lag unknown");
        assert!(!r("127.0.0.1:5"), "SQL thread stopped");
        assert!(!r("127.0.0.1:6"), "fenced");
    }

    #[test]
    fn check_addresses_take_ipv6_without_brackets() {
        assert_eq!(check_addr("127.0.0.1:3306"), Some(addr("127.0.0.1:3306")));
        assert_eq!(check_addr("::1:3306"), Some(addr("[::1]:3306")));
        assert_eq!(check_addr("[::1]:3306"), Some(addr("[::1]:3306")));
        assert_eq!(check_addr("junk"), None);
        assert_eq!(check_addr("a:b:c"), None);
        assert_eq!(check_addr(""), None);
    }

    #[test]
    fn the_bucket_refuses_past_its_burst() {
        let t = RouteTable::new(RouteOptions {
            stale_after: STALE,
            checks_per_second: 0.001,
            burst: 3.0,
        });
        assert!(t.admit() && t.admit() && t.admit());
        assert!(!t.admit());
    }
}
