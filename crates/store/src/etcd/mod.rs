//! `EtcdStore`: the etcd backend of [`Store`], for several control-plane nodes that share one
//! etcd cluster. Every trait method has the SQLite backend's semantics; where etcd forces a
//! difference (the clock of locks and leases, the size of one transaction), it is written down
//! on [`EtcdStore`]. [`testing`] starts a real etcd for tests.
//!
//! # Key layout
//!
//! Under the namespace prefix `P` (e.g. `/dbfleet/`):
//!
//! | key                               | value (JSON)                             |
//! |-----------------------------------|------------------------------------------|
//! | `P clusters/{cluster}`            | [`ClusterRecord`]                        |
//! | `P instances/{cluster}/{addr}`    | [`InstanceRecord`]                       |
//! | `P observations/{addr}`           | `{cluster, observation}`: the last one   |
//! | `P problems/all/{id}`             | [`ProblemRecord`], as opened or cleared  |
//! | `P problems/open/{cluster}/{key}` | [`ProblemRecord`], as last seen          |
//! | `P problems/sync/{cluster}`       | the `now_ms` of the cluster's last sync  |
//! | `P events/{id}`                   | [`EventRecord`]                          |
//! | `P operations/{id}`               | [`OperationRecord`]                      |
//! | `P locks/{cluster}`               | `{holder, expires_ms}`, on a lease       |
//! | `P leader`                        | `{node, term, ttl_s}`, on a lease        |
//! | `P counters/{name}`               | the last id or term given out: `events`, `problems`, `operations`, `term` |
//! | `P settings/{key}`                | the setting's value                      |
//!
//! `{cluster}`, `{addr}` and `{key}` are escaped (`%` as `%25`, `/` as `%2F`) so that no name can reach into
//! another's keys (a problem key holds `/`); settings keys are not escaped, so that a
//! settings prefix is a key prefix. Ids are zero-padded to 20 digits, so key order is id
//! order.
//!
//! `etcdctl get --prefix /dbfleet/` shows it all. The key layout is built in `keys.rs`; the
//! etcd primitives (paged reads, compare-and-swap, counters, leases) are in `kv.rs`.

mod keys;
mod kv;
pub mod testing;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, Txn, TxnOp};
use model::{ClusterSpec, InstanceAddr, Observation, Problem};
use serde::{Deserialize, Serialize};

use crate::api::Store;
use crate::coord::{
    ClusterLock, Leadership, NewOperation, OperationQuery, OperationRecord, OperationUpdate,
};
use crate::error::StoreError;
use crate::event::{EventQuery, EventRecord, NewEvent, MAX_EVENT_LIMIT};
use crate::record::{ClusterRecord, InstanceQuery, InstanceRecord, ProblemChanges, ProblemRecord};

use keys::{prefix_end, Counter, Keys};
use kv::{
    contended, counter_value, decode, encode, gets, put_json, put_json_leased, Cas, MAX_ATTEMPTS,
};

/// etcd's own default for `--max-txn-ops`: the most operations one transaction may hold.
pub const ETCD_DEFAULT_MAX_TXN_OPS: usize = 128;

/// The most bytes of values [`Store::save_observations`] puts in one transaction: below etcd's
/// default `--max-request-bytes` of 1.5 MiB, with room for keys and framing.
const MAX_TXN_VALUE_BYTES: usize = 1 << 20;

/// How many of [`Store::save_observations`]'s transactions are sent at once.
const OBSERVATION_TXNS_IN_FLIGHT: usize = 4;

/// How an [`EtcdStore`] talks to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The bound on each store call, its retries included: past it the call fails with
    /// [`StoreError::Backend`]. Default 5 s.
    pub timeout: Duration,
    /// The bound on opening a connection to one endpoint. Default 2 s.
    pub connect_timeout: Duration,
    /// The most operations one transaction may hold: set it to the etcd server's
    /// `--max-txn-ops` (etcd's default is [`ETCD_DEFAULT_MAX_TXN_OPS`]). It is the size of
    /// [`Store::save_observations`]'s chunks. A call that needs a larger transaction fails
    /// with a message that says so instead of sending it; only [`Store::sync_problems`] can
    /// (one operation per problem still open in the cluster, three per opening or clearing,
    /// and up to three more). At least 8.
    pub max_txn_ops: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_txn_ops: ETCD_DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// The etcd metadata store, shared by several control-plane nodes.
///
/// Everything lives under one key prefix, as JSON (see [the key layout](crate::etcd#key-layout)).
///
/// - **Atomicity.** Each method is one etcd transaction, or a compare-and-swap loop of them:
///   read, then write only if what was read is unchanged (`mod_revision` compares), else read
///   again in the same round trip and retry. Reads of several keys or pages are at one
///   revision, so they are a consistent snapshot.
/// - **Ids.** Events, problems and operations take ids from counter keys bumped in the same
///   transaction as the record, so ids grow strictly and with no gaps across every node.
/// - **[`Store::sync_problems`]** is one transaction: its size is one operation per problem
///   still open plus three per opening or clearing, plus a few. etcd refuses transactions
///   over `--max-txn-ops` (default 128): a cluster with more than about 120 open problems
///   needs etcd started with a larger `--max-txn-ops`, and [`EtcdOptions::max_txn_ops`] set to
///   match; otherwise the call fails with a message saying so, and changes nothing.
/// - **[`Store::save_observations`]** is the one write that is not atomic as a whole: it is
///   split into transactions of at most `max_txn_ops` observations (and 1 MiB), each applied
///   whole. Each observation is independent and only the last one per address is kept, so a
///   failure half-way leaves some instances with this round's observation and the rest with
///   the previous one, which the next round overwrites.
/// - **Locks and the leader lease use etcd's clock, not the caller's.** A lock or the leader
///   key is put on an etcd lease of `ttl_ms` rounded up to whole seconds (at least 1 s; etcd
///   itself raises a TTL below 1.5 election timeouts, 2 s with its defaults). The key is gone
///   when the lease lapses on etcd's clock; `now_ms` is only used for the informational
///   [`ClusterLock::expires_ms`]. A lock renewal puts the key again on a fresh lease; a
///   leader renewal keeps the same lease alive.
/// - **Terms.** The leader's term is a counter bumped in the same transaction that creates
///   the leader key, so a new leader always has a larger term. Unlike SQLite, a node whose own
///   lease lapsed before it renewed gets a new term when it leads again.
/// - **Reads** go page by page (500 keys) at one revision. Lists with no key of their own
///   scan: [`Store::last_observations`] of one cluster reads every observation (about 0.1 s
///   for 5,000); [`Store::events`] and [`Store::problem_history`] with a filter, and
///   [`Store::operations`], read newest-first windows of ids, from just below the page's
///   cursor (`before_id`), until they have `limit` matches. [`Store::instance_page`] of one
///   cluster is a keyset scan from the cursor's key; of every cluster it reads the instance
///   records (not their observations) and cuts the page, because keys do not sort as
///   cluster names do.
/// - **Event log.** Events are only ever put at a new id: nothing here updates or deletes an
///   event key. etcd itself cannot refuse such a write from another client.
/// - **Durability.** etcd acknowledges a write once a quorum has it in its fsynced WAL, so
///   [`Store::flush`] has nothing to do.
/// - **Failures.** A call that cannot reach etcd fails with [`StoreError::Backend`] naming the
///   endpoints, after at most [`EtcdOptions::timeout`]; nothing panics.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    opts: EtcdOptions,
    endpoints: String,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.keys.root())
            .field("opts", &self.opts)
            .finish()
    }
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (URLs such as `http://127.0.0.1:2379`) and keep every
    /// key under `prefix` (e.g. `/dbfleet/`; a `/` is added when missing). Checks that etcd
    /// answers, within `opts.timeout`: a store that connects is one that works.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        opts: EtcdOptions,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "the etcd store needs at least one endpoint".into(),
            ));
        }
        if prefix.is_empty() {
            return Err(StoreError::InvalidArgument(
                "the etcd store needs a key prefix, such as /dbfleet/".into(),
            ));
        }
        if opts.max_txn_ops < 8 {
            return Err(StoreError::InvalidArgument(format!(
                "max_txn_ops {} is below 8, too few for the store's transactions",
                opts.max_txn_ops
            )));
        }
        let joined = endpoints.join(",");
        let connect = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.timeout);
        let client =
            match tokio::time::timeout(opts.timeout, Client::connect(endpoints, Some(connect)))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(StoreError::Backend(format!(
                        "cannot connect to etcd at {joined}: {e}"
                    )))
                }
                Err(_) => {
                    return Err(StoreError::Backend(format!(
                        "cannot connect to etcd at {joined}: no answer within {} ms",
                        opts.timeout.as_millis()
                    )))
                }
            };
        let store = Self {
            client,
            keys: Keys::new(prefix),
            opts,
            endpoints: joined,
        };
        // The client connects lazily: read one key to know etcd is there.
        let probe = store.keys.leader();
        match tokio::time::timeout(store.opts.timeout, store.get(&probe)).await {
            Ok(Ok(_)) => {}
            Ok(Err(StoreError::Backend(e))) => {
                return Err(StoreError::Backend(format!(
                    "cannot reach etcd at {}: {e}",
                    store.endpoints
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "cannot reach etcd at {}: no answer within {} ms",
                    store.endpoints,
                    store.opts.timeout.as_millis()
                )))
            }
        }
        Ok(store)
    }

    /// The key prefix everything is stored under, ending with `/`.
    pub fn prefix(&self) -> &str {
        self.keys.root()
    }

    /// Run one store call under [`EtcdOptions::timeout`].
    async fn bounded<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.opts.timeout, call).await {
            Ok(Err(StoreError::Backend(m))) => Err(StoreError::Backend(format!(
                "{m} (etcd at {})",
                self.endpoints
            ))),
            Ok(r) => r,
            Err(_) => Err(StoreError::Backend(format!(
                "etcd at {} did not answer {what} within {} ms",
                self.endpoints,
                self.opts.timeout.as_millis()
            ))),
        }
    }

    /// The current value and revision of a counter.
    async fn counter(&self, c: Counter) -> Result<(i64, i64), StoreError> {
        let (kv, rev) = self.get(&self.keys.counter(c)).await?;
        Ok((counter_value(kv.as_ref())?, rev))
    }
}

/// An observation as stored under its address, with its cluster.
#[derive(Deserialize)]
struct StoredObservation {
    cluster: String,
    observation: Observation,
}

#[derive(Serialize)]
struct StoredObservationRef<'a> {
    cluster: &'a str,
    observation: &'a Observation,
}

/// The value of a lock key.
#[derive(Serialize, Deserialize)]
struct LockValue {
    holder: String,
    /// The caller's `now_ms` at the last take or renewal plus the TTL etcd granted.
    expires_ms: u64,
}

/// The value of the leader key.
#[derive(Serialize, Deserialize)]
struct LeaderValue {
    node: String,
    term: u64,
    /// The TTL asked for, in seconds: a renewal asking for another TTL takes a new lease.
    ttl_s: i64,
}

/// Wait for one of the transactions in flight (dropping the set aborts the others).
async fn join_one(
    set: &mut tokio::task::JoinSet<Result<etcd_client::TxnResponse, StoreError>>,
) -> Result<(), StoreError> {
    match set.join_next().await {
        Some(Ok(r)) => r.map(drop),
        Some(Err(e)) => Err(StoreError::Task(e.to_string())),
        None => Ok(()),
    }
}

/// A TTL in ms as a lease TTL: whole seconds, rounded up, at least 1.
fn lease_secs(ttl_ms: u64) -> i64 {
    i64::try_from(ttl_ms.div_ceil(1000))
        .unwrap_or(i64::MAX)
        .max(1)
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn upsert_cluster(
        &self,
        spec: &ClusterSpec,
        now_ms: u64,
    ) -> Result<ClusterRecord, StoreError> {
        if spec.name.is_empty() {
            return Err(StoreError::InvalidArgument(
                "a cluster spec needs a name".into(),
            ));
        }
        self.bounded("upsert_cluster", async {
            let key = self.keys.cluster(&spec.name);
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let writer = match &cur {
                    Some(kv) => decode::<ClusterRecord>(kv)?.writer,
                    None => None,
                };
                let rec = ClusterRecord {
                    name: spec.name.clone(),
                    spec: spec.clone(),
                    writer,
                    updated_ms: now_ms,
                };
                match self
                    .cas(
                        "upsert_cluster",
                        &[(key.clone(), cur)],
                        vec![put_json(&key, &rec)?],
                    )
                    .await?
                {
                    Cas::Applied => return Ok(rec),
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("upsert_cluster"))
        })
        .await
    }

    async fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.bounded("clusters", async {
            let mut out = self
                .range_all(&self.keys.clusters())
                .await?
                .iter()
                .map(decode::<ClusterRecord>)
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.bounded("cluster", async {
            let (kv, _) = self.get(&self.keys.cluster(name)).await?;
            kv.as_ref().map(decode).transpose()
        })
        .await
    }

    async fn set_writer(
        &self,
        name: &str,
        writer: Option<InstanceAddr>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.bounded("set_writer", async {
            let key = self.keys.cluster(name);
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let Some(kv) = &cur else {
                    return Err(StoreError::NotFound(format!("cluster {name:?}")));
                };
                let mut rec: ClusterRecord = decode(kv)?;
                rec.writer = writer.clone();
                rec.updated_ms = now_ms;
                match self
                    .cas(
                        "set_writer",
                        &[(key.clone(), cur)],
                        vec![put_json(&key, &rec)?],
                    )
                    .await?
                {
                    Cas::Applied => return Ok(()),
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("set_writer"))
        })
        .await
    }

    async fn upsert_instance(&self, instance: &InstanceRecord) -> Result<bool, StoreError> {
        self.bounded("upsert_instance", async {
            let key = self
                .keys
                .instance(&instance.cluster, &instance.addr.to_string());
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let rec = match &cur {
                    None => instance.clone(),
                    Some(kv) => {
                        let old: InstanceRecord = decode(kv)?;
                        InstanceRecord {
                            first_seen_ms: old.first_seen_ms,
                            ..instance.clone()
                        }
                    }
                };
                let inserted = cur.is_none();
                match self
                    .cas(
                        "upsert_instance",
                        &[(key.clone(), cur)],
                        vec![put_json(&key, &rec)?],
                    )
                    .await?
                {
                    Cas::Applied => return Ok(inserted),
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("upsert_instance"))
        })
        .await
    }

    async fn instances(&self, cluster: Option<&str>) -> Result<Vec<InstanceRecord>, StoreError> {
        self.bounded("instances", async {
            let mut out = self
                .range_all(&self.keys.instances(cluster))
                .await?
                .iter()
                .map(decode::<InstanceRecord>)
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by(|a, b| (&a.cluster, &a.addr).cmp(&(&b.cluster, &b.addr)));
            Ok(out)
        })
        .await
    }

    async fn instance_page(
        &self,
        query: &InstanceQuery,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let limit = query.limit.min(MAX_EVENT_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.bounded("instance_page", async {
            let mut out: Vec<InstanceRecord> = Vec::new();
            match &query.cluster {
                // One cluster's keys sort as its addresses do (no address byte is escaped):
                // a keyset scan from just past the cursor, stopped at `limit`.
                Some(c) => {
                    let prefix = self.keys.instances(Some(c));
                    let start = match &query.after {
                        Some((ac, aa)) if ac == c => {
                            let mut k = self.keys.instance(c, &aa.to_string()).into_bytes();
                            k.push(0);
                            k
                        }
                        // A cursor in a cluster after this one: nothing is left.
                        Some((ac, _)) if ac.as_str() > c.as_str() => return Ok(out),
                        _ => prefix.clone().into_bytes(),
                    };
                    self.scan(start, prefix_end(&prefix), 0, |kv| {
                        let rec: InstanceRecord = decode(&kv)?;
                        if query.is_after_cursor(&rec) {
                            out.push(rec);
                        }
                        Ok(out.len() < limit)
                    })
                    .await?;
                }
                // Across clusters the keys' order is not the clusters' (`-` and `.` sort
                // before the `/` that ends a cluster's segment): the records (small; the
                // observations are elsewhere) are read and the page is cut here.
                None => {
                    self.scan(
                        self.keys.instances(None).into_bytes(),
                        prefix_end(&self.keys.instances(None)),
                        0,
                        |kv| {
                            let rec: InstanceRecord = decode(&kv)?;
                            if query.is_after_cursor(&rec) {
                                out.push(rec);
                            }
                            Ok(true)
                        },
                    )
                    .await?;
                    out.sort_by_cached_key(|r| (r.cluster.clone(), r.addr.to_string()));
                    out.truncate(limit);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn remove_instance(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
    ) -> Result<bool, StoreError> {
        self.bounded("remove_instance", async {
            let addr = addr.to_string();
            let ikey = self.keys.instance(cluster, &addr);
            let okey = self.keys.observation(&addr);
            let mut cur = self.get_many(&[ikey.clone(), okey.clone()]).await?;
            for _ in 0..MAX_ATTEMPTS {
                let (inst, obs) = (cur[0].take(), cur[1].take());
                let mut ops = Vec::new();
                if inst.is_some() {
                    ops.push(TxnOp::delete(ikey.as_str(), None));
                }
                // The last observation goes too, when it is of this cluster's instance.
                if let Some(kv) = &obs {
                    if decode::<StoredObservation>(kv)?.cluster == cluster {
                        ops.push(TxnOp::delete(okey.as_str(), None));
                    }
                }
                if ops.is_empty() {
                    return Ok(false);
                }
                let existed = inst.is_some();
                let watched = [(ikey.clone(), inst), (okey.clone(), obs)];
                match self.cas("remove_instance", &watched, ops).await? {
                    Cas::Applied => return Ok(existed),
                    Cas::Changed(now) => cur = now,
                }
            }
            Err(contended("remove_instance"))
        })
        .await
    }

    async fn save_observations(
        &self,
        observations: &[(String, Observation)],
    ) -> Result<(), StoreError> {
        // One put per address, the last given winning (etcd refuses a key twice in one
        // transaction), in the order given.
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, (_, o)) in observations.iter().enumerate() {
            last.insert(o.addr.to_string(), i);
        }
        let mut puts: Vec<(String, Vec<u8>)> = Vec::with_capacity(last.len());
        for (i, (cluster, o)) in observations.iter().enumerate() {
            let addr = o.addr.to_string();
            if last.get(&addr) == Some(&i) {
                let value = encode(&StoredObservationRef {
                    cluster,
                    observation: o,
                })?;
                puts.push((self.keys.observation(&addr), value));
            }
        }
        self.bounded("save_observations", async {
            // Chunks go out a few at a time: etcd commits concurrent transactions together,
            // one WAL fsync for several.
            let mut in_flight = tokio::task::JoinSet::new();
            let mut chunk: Vec<TxnOp> = Vec::new();
            let mut bytes = 0;
            let mut puts = puts.into_iter().peekable();
            while let Some((key, value)) = puts.next() {
                bytes += value.len();
                chunk.push(TxnOp::put(key, value, None));
                let full = puts.peek().is_none_or(|(_, next)| {
                    chunk.len() == self.opts.max_txn_ops || bytes + next.len() > MAX_TXN_VALUE_BYTES
                });
                if !full {
                    continue;
                }
                if in_flight.len() == OBSERVATION_TXNS_IN_FLIGHT {
                    join_one(&mut in_flight).await?;
                }
                let txn = Txn::new().and_then(std::mem::take(&mut chunk));
                let store = self.clone();
                in_flight.spawn(async move { store.txn("save_observations", txn).await });
                bytes = 0;
            }
            while !in_flight.is_empty() {
                join_one(&mut in_flight).await?;
            }
            Ok(())
        })
        .await
    }

    async fn last_observations(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<(String, Observation)>, StoreError> {
        self.bounded("last_observations", async {
            let mut out = Vec::new();
            self.scan(
                self.keys.observations().into_bytes(),
                prefix_end(&self.keys.observations()),
                0,
                |kv| {
                    let s: StoredObservation = decode(&kv)?;
                    if cluster.is_none_or(|c| c == s.cluster) {
                        out.push((s.cluster, s.observation));
                    }
                    Ok(true)
                },
            )
            .await?;
            out.sort_by(|a, b| (&a.0, &a.1.addr).cmp(&(&b.0, &b.1.addr)));
            Ok(out)
        })
        .await
    }

    async fn last_observation(
        &self,
        addr: &InstanceAddr,
    ) -> Result<Option<Observation>, StoreError> {
        self.bounded("last_observation", async {
            let (kv, _) = self.get(&self.keys.observation(&addr.to_string())).await?;
            Ok(kv
                .as_ref()
                .map(decode::<StoredObservation>)
                .transpose()?
                .map(|s| s.observation))
        })
        .await
    }

    async fn sync_problems(
        &self,
        cluster: &str,
        current: &[Problem],
        now_ms: u64,
    ) -> Result<ProblemChanges, StoreError> {
        if let Some(p) = current.iter().find(|p| p.cluster != cluster) {
            return Err(StoreError::InvalidArgument(format!(
                "problem {} belongs to cluster {:?}, not to {cluster:?}",
                p.key(),
                p.cluster
            )));
        }
        self.bounded("sync_problems", async {
            for _ in 0..MAX_ATTEMPTS {
                if let Some(changes) = self.try_sync_problems(cluster, current, now_ms).await? {
                    return Ok(changes);
                }
            }
            Err(contended("sync_problems"))
        })
        .await
    }

    async fn open_problems(&self, cluster: Option<&str>) -> Result<Vec<ProblemRecord>, StoreError> {
        self.bounded("open_problems", async {
            let mut out = self
                .range_all(&self.keys.open_problems(cluster))
                .await?
                .iter()
                .map(decode::<ProblemRecord>)
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by_key(|r| r.id);
            Ok(out)
        })
        .await
    }

    async fn problem_history(
        &self,
        cluster: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProblemRecord>, StoreError> {
        let limit = limit.min(MAX_EVENT_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.bounded("problem_history", async {
            let (max_id, rev) = self.counter(Counter::Problems).await?;
            // Keyset paging: the scan starts just below the cursor.
            let top = before_id.map_or(max_id, |b| max_id.min(b.saturating_sub(1)));
            let mut out: Vec<ProblemRecord> = Vec::new();
            self.scan_ids_desc(&self.keys.problems(), top, rev, |kv| {
                let rec: ProblemRecord = decode(&kv)?;
                if cluster.is_none_or(|c| c == rec.cluster) {
                    out.push(rec);
                }
                Ok(out.len() < limit)
            })
            .await?;
            // The history holds an open problem as opened; its latest state is in the open
            // index, read at the same revision.
            if out.iter().any(ProblemRecord::is_open) {
                let prefix = self.keys.open_problems(cluster);
                let mut open: HashMap<i64, ProblemRecord> = HashMap::new();
                self.scan(
                    prefix.clone().into_bytes(),
                    prefix_end(&prefix),
                    rev,
                    |kv| {
                        let rec: ProblemRecord = decode(&kv)?;
                        open.insert(rec.id, rec);
                        Ok(true)
                    },
                )
                .await?;
                for rec in &mut out {
                    if let Some(latest) = open.remove(&rec.id) {
                        *rec = latest;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<EventRecord, StoreError> {
        self.bounded("append_event", async {
            self.with_next_id("append_event", Counter::Events, |id| {
                let rec = event_record(id, event.clone());
                Ok((vec![put_json(&self.keys.event(id), &rec)?], rec))
            })
            .await
        })
        .await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let limit = query.limit.min(MAX_EVENT_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keep = |e: &EventRecord| {
            query
                .cluster
                .as_ref()
                .is_none_or(|c| e.cluster.as_ref() == Some(c))
                && (query.kinds.is_empty() || query.kinds.contains(&e.kind))
        };
        self.bounded("events", async {
            let mut out: Vec<EventRecord> = Vec::new();
            let prefix = self.keys.events();
            match query.after_id {
                // Paging forward: the oldest events past the cursor.
                Some(after) => {
                    let start = self.keys.event(after.max(0).saturating_add(1));
                    self.scan(start.into_bytes(), prefix_end(&prefix), 0, |kv| {
                        let e: EventRecord = decode(&kv)?;
                        if keep(&e) {
                            out.push(e);
                        }
                        Ok(out.len() < limit)
                    })
                    .await?;
                }
                // No cursor: the newest ones, reversed into ascending order.
                None => {
                    let (max_id, rev) = self.counter(Counter::Events).await?;
                    self.scan_ids_desc(&prefix, max_id, rev, |kv| {
                        let e: EventRecord = decode(&kv)?;
                        if keep(&e) {
                            out.push(e);
                        }
                        Ok(out.len() < limit)
                    })
                    .await?;
                    out.reverse();
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_operation(&self, op: &NewOperation) -> Result<OperationRecord, StoreError> {
        self.bounded("create_operation", async {
            self.with_next_id("create_operation", Counter::Operations, |id| {
                let rec = OperationRecord {
                    id,
                    cluster: op.cluster.clone(),
                    kind: op.kind.clone(),
                    trigger: op.trigger.clone(),
                    state: op.state,
                    step: op.step.clone(),
                    data: op.data.clone(),
                    error: None,
                    owner: op.owner.clone(),
                    created_ms: op.created_ms,
                    updated_ms: op.created_ms,
                    finished_ms: op.state.is_final().then_some(op.created_ms),
                };
                Ok((vec![put_json(&self.keys.operation(id), &rec)?], rec))
            })
            .await
        })
        .await
    }

    async fn update_operation(
        &self,
        id: i64,
        update: &OperationUpdate,
    ) -> Result<OperationRecord, StoreError> {
        self.bounded("update_operation", async {
            if id < 1 {
                return Err(StoreError::NotFound(format!("operation {id}")));
            }
            let key = self.keys.operation(id);
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let Some(kv) = &cur else {
                    return Err(StoreError::NotFound(format!("operation {id}")));
                };
                let old: OperationRecord = decode(kv)?;
                if old.state.is_final() && old.state != update.state {
                    return Err(StoreError::InvalidArgument(format!(
                        "operation {id} is {} and final: it cannot become {}",
                        old.state, update.state
                    )));
                }
                let finished_ms = match (old.finished_ms, update.state.is_final()) {
                    (Some(f), _) => Some(f),
                    (None, true) => Some(update.now_ms),
                    (None, false) => None,
                };
                let rec = OperationRecord {
                    state: update.state,
                    step: update.step.clone(),
                    data: update.data.clone().unwrap_or(old.data),
                    error: update.error.clone().or(old.error),
                    owner: update.owner.clone().unwrap_or(old.owner),
                    updated_ms: update.now_ms,
                    finished_ms,
                    ..old
                };
                match self
                    .cas(
                        "update_operation",
                        &[(key.clone(), cur)],
                        vec![put_json(&key, &rec)?],
                    )
                    .await?
                {
                    Cas::Applied => return Ok(rec),
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("update_operation"))
        })
        .await
    }

    async fn operation(&self, id: i64) -> Result<Option<OperationRecord>, StoreError> {
        if id < 1 {
            return Ok(None);
        }
        self.bounded("operation", async {
            let (kv, _) = self.get(&self.keys.operation(id)).await?;
            kv.as_ref().map(decode).transpose()
        })
        .await
    }

    async fn operations(&self, query: &OperationQuery) -> Result<Vec<OperationRecord>, StoreError> {
        let limit = match query.limit {
            0 => MAX_EVENT_LIMIT,
            n => n.min(MAX_EVENT_LIMIT),
        };
        self.bounded("operations", async {
            let (max_id, rev) = self.counter(Counter::Operations).await?;
            // Keyset paging: the scan starts just below the cursor.
            let top = query
                .before_id
                .map_or(max_id, |b| max_id.min(b.saturating_sub(1)));
            let mut out: Vec<OperationRecord> = Vec::new();
            self.scan_ids_desc(&self.keys.operations(), top, rev, |kv| {
                let op: OperationRecord = decode(&kv)?;
                if query.cluster.as_ref().is_none_or(|c| *c == op.cluster)
                    && query.kind.as_ref().is_none_or(|k| *k == op.kind)
                    && (query.states.is_empty() || query.states.contains(&op.state))
                {
                    out.push(op);
                }
                Ok(out.len() < limit)
            })
            .await?;
            Ok(out)
        })
        .await
    }

    async fn try_lock_cluster(
        &self,
        cluster: &str,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.bounded("try_lock_cluster", async {
            let key = self.keys.lock(cluster);
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                if let Some(kv) = &cur {
                    if decode::<LockValue>(kv)?.holder != holder {
                        return Ok(false);
                    }
                }
                // Free, or ours: put it (again) on a fresh lease.
                let (lease, granted_s) = self.grant(lease_secs(ttl_ms)).await?;
                let value = LockValue {
                    holder: holder.to_owned(),
                    expires_ms: now_ms
                        .saturating_add(u64::try_from(granted_s).unwrap_or(0).saturating_mul(1000)),
                };
                let old_lease = cur.as_ref().map_or(0, |kv| kv.lease());
                let ops = vec![put_json_leased(&key, &value, lease)?];
                match self
                    .cas("try_lock_cluster", &[(key.clone(), cur)], ops)
                    .await?
                {
                    Cas::Applied => {
                        self.revoke_quietly(old_lease).await;
                        return Ok(true);
                    }
                    Cas::Changed(mut now) => {
                        self.revoke_quietly(lease).await;
                        cur = now.pop().flatten();
                    }
                }
            }
            Err(contended("try_lock_cluster"))
        })
        .await
    }

    async fn unlock_cluster(&self, cluster: &str, holder: &str) -> Result<bool, StoreError> {
        self.bounded("unlock_cluster", async {
            let key = self.keys.lock(cluster);
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let Some(kv) = &cur else {
                    return Ok(false);
                };
                if decode::<LockValue>(kv)?.holder != holder {
                    return Ok(false);
                }
                let lease = kv.lease();
                let ops = vec![TxnOp::delete(key.as_str(), None)];
                match self
                    .cas("unlock_cluster", &[(key.clone(), cur)], ops)
                    .await?
                {
                    Cas::Applied => {
                        self.revoke_quietly(lease).await;
                        return Ok(true);
                    }
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("unlock_cluster"))
        })
        .await
    }

    async fn cluster_lock(&self, cluster: &str) -> Result<Option<ClusterLock>, StoreError> {
        self.bounded("cluster_lock", async {
            let (kv, _) = self.get(&self.keys.lock(cluster)).await?;
            Ok(kv
                .as_ref()
                .map(decode::<LockValue>)
                .transpose()?
                .map(|v| ClusterLock {
                    cluster: cluster.to_owned(),
                    holder: v.holder,
                    expires_ms: v.expires_ms,
                }))
        })
        .await
    }

    async fn campaign(
        &self,
        node: &str,
        ttl_ms: u64,
        _now_ms: u64,
    ) -> Result<Leadership, StoreError> {
        self.bounded("campaign", async {
            for _ in 0..MAX_ATTEMPTS {
                if let Some(l) = self.try_campaign(node, lease_secs(ttl_ms)).await? {
                    return Ok(l);
                }
            }
            Err(contended("campaign"))
        })
        .await
    }

    async fn resign(&self, node: &str) -> Result<(), StoreError> {
        self.bounded("resign", async {
            let key = self.keys.leader();
            let (mut cur, _) = self.get(&key).await?;
            for _ in 0..MAX_ATTEMPTS {
                let Some(kv) = &cur else {
                    return Ok(());
                };
                if decode::<LeaderValue>(kv)?.node != node {
                    return Ok(());
                }
                let lease = kv.lease();
                let ops = vec![TxnOp::delete(key.as_str(), None)];
                match self.cas("resign", &[(key.clone(), cur)], ops).await? {
                    Cas::Applied => {
                        self.revoke_quietly(lease).await;
                        return Ok(());
                    }
                    Cas::Changed(mut now) => cur = now.pop().flatten(),
                }
            }
            Err(contended("resign"))
        })
        .await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.bounded("kv_get", async {
            let (kv, _) = self.get(&self.keys.setting(key)).await?;
            kv.as_ref().map(decode).transpose()
        })
        .await
    }

    async fn kv_put(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let op = put_json(&self.keys.setting(key), value)?;
        self.bounded("kv_put", async {
            self.txn("kv_put", Txn::new().and_then(vec![op])).await?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, StoreError> {
        self.bounded("kv_delete", async {
            let resp = self
                .txn(
                    "kv_delete",
                    Txn::new().and_then(vec![TxnOp::delete(self.keys.setting(key), None)]),
                )
                .await?;
            Ok(resp
                .op_responses()
                .into_iter()
                .any(|r| matches!(r, etcd_client::TxnOpResponse::Delete(d) if d.deleted() > 0)))
        })
        .await
    }

    async fn kv_list(&self, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.bounded("kv_list", async {
            self.range_all(&self.keys.setting(prefix))
                .await?
                .iter()
                .map(|kv| {
                    let full = String::from_utf8_lossy(kv.key());
                    let name = self.keys.setting_name(&full).unwrap_or(&full).to_owned();
                    Ok((name, decode(kv)?))
                })
                .collect()
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // etcd acknowledged every write only once it was in a quorum's fsynced WAL.
        Ok(())
    }
}

impl EtcdStore {
    /// One try of [`Store::sync_problems`]: `None` when another writer changed the cluster's
    /// problems or took an id in between, so the caller tries again from a fresh read.
    async fn try_sync_problems(
        &self,
        cluster: &str,
        current: &[Problem],
        now_ms: u64,
    ) -> Result<Option<ProblemChanges>, StoreError> {
        let sync_key = self.keys.problem_sync(cluster);
        let pc_key = self.keys.counter(Counter::Problems);
        let ec_key = self.keys.counter(Counter::Events);
        let open_prefix = self.keys.open_problems(Some(cluster));
        // One read, at one revision: the cluster's sync marker, both counters, and its open
        // problems (a few per cluster, so one reply holds them).
        let read = Txn::new().and_then(vec![
            TxnOp::get(sync_key.as_str(), None),
            TxnOp::get(pc_key.as_str(), None),
            TxnOp::get(ec_key.as_str(), None),
            TxnOp::get(
                open_prefix.as_str(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            ),
        ]);
        let mut got = gets(&self.txn("sync_problems", read).await?).into_iter();
        let mut one = || got.next().and_then(|kvs| kvs.into_iter().next());
        let (sync_kv, pc_kv, ec_kv) = (one(), one(), one());
        let open_kvs = got.next().unwrap_or_default();

        let mut open: HashMap<String, ProblemRecord> = HashMap::new();
        for kv in &open_kvs {
            let rec: ProblemRecord = decode(kv)?;
            open.insert(rec.key.clone(), rec);
        }
        let mut next_problem = counter_value(pc_kv.as_ref())?;
        let mut seen: HashSet<String> = HashSet::new();
        let mut opened_keys: Vec<String> = Vec::new();
        for p in current {
            let key = p.key();
            if let Some(rec) = open.get_mut(&key) {
                rec.problem = p.clone();
                rec.last_seen_ms = now_ms;
            } else {
                next_problem += 1;
                open.insert(
                    key.clone(),
                    ProblemRecord {
                        id: next_problem,
                        cluster: cluster.to_owned(),
                        key: key.clone(),
                        problem: p.clone(),
                        first_seen_ms: now_ms,
                        last_seen_ms: now_ms,
                        cleared_ms: None,
                    },
                );
                opened_keys.push(key.clone());
            }
            seen.insert(key);
        }
        if open.is_empty() {
            // Nothing was open and nothing is: nothing to write.
            return Ok(Some(ProblemChanges::default()));
        }

        let mut changes = ProblemChanges {
            opened: opened_keys.iter().map(|k| open[k].clone()).collect(),
            cleared: Vec::new(),
        };
        let mut ops: Vec<TxnOp> = Vec::new();
        let mut cleared: Vec<ProblemRecord> = Vec::new();
        for (key, rec) in open {
            if seen.contains(&key) {
                ops.push(put_json(&self.keys.open_problem(cluster, &key), &rec)?);
            } else {
                cleared.push(rec);
            }
        }
        cleared.sort_by_key(|rec| rec.id);
        for rec in &mut cleared {
            rec.cleared_ms = Some(now_ms);
            ops.push(TxnOp::delete(
                self.keys.open_problem(cluster, &rec.key),
                None,
            ));
            ops.push(put_json(&self.keys.problem(rec.id), rec)?);
        }
        changes.cleared = cleared;
        for rec in &changes.opened {
            ops.push(put_json(&self.keys.problem(rec.id), rec)?);
        }

        let mut next_event = counter_value(ec_kv.as_ref())?;
        let events = changes
            .opened
            .iter()
            .map(crate::event::problem_opened_event)
            .chain(
                changes
                    .cleared
                    .iter()
                    .map(|r| crate::event::problem_cleared_event(r, now_ms)),
            );
        for ev in events {
            next_event += 1;
            ops.push(put_json(
                &self.keys.event(next_event),
                &event_record(next_event, ev),
            )?);
        }

        // Syncs of one cluster are serialized by its marker; ids by their counters, watched
        // only when this round takes ids.
        let mut watched = vec![(sync_key.clone(), sync_kv)];
        ops.push(put_json(&sync_key, &now_ms)?);
        if !changes.opened.is_empty() {
            watched.push((pc_key.clone(), pc_kv));
            ops.push(put_json(&pc_key, &next_problem)?);
        }
        if !changes.is_empty() {
            watched.push((ec_key.clone(), ec_kv));
            ops.push(put_json(&ec_key, &next_event)?);
        }
        match self.cas("sync_problems", &watched, ops).await? {
            Cas::Applied => Ok(Some(changes)),
            Cas::Changed(_) => Ok(None),
        }
    }

    /// One try of [`Store::campaign`]: `None` when the leader key changed under it.
    async fn try_campaign(&self, node: &str, ttl_s: i64) -> Result<Option<Leadership>, StoreError> {
        let key = self.keys.leader();
        let term_key = self.keys.counter(Counter::Term);
        let mut cur = self.get_many(&[key.clone(), term_key.clone()]).await?;
        let (leader_kv, term_kv) = (cur[0].take(), cur[1].take());
        let Some(kv) = leader_kv else {
            // Nobody leads: take the key on a new lease, with the next term, in one
            // transaction that holds only if nobody took it first.
            let term = u64::try_from(counter_value(term_kv.as_ref())?).unwrap_or(0) + 1;
            let (lease, _) = self.grant(ttl_s).await?;
            let value = LeaderValue {
                node: node.to_owned(),
                term,
                ttl_s,
            };
            let ops = vec![
                put_json_leased(&key, &value, lease)?,
                put_json(&term_key, &term)?,
            ];
            let watched = [(key.clone(), None), (term_key, term_kv)];
            return match self.cas("campaign", &watched, ops).await? {
                Cas::Applied => Ok(Some(Leadership {
                    leader: Some(node.to_owned()),
                    term,
                    is_leader: true,
                })),
                Cas::Changed(_) => {
                    self.revoke_quietly(lease).await;
                    Ok(None)
                }
            };
        };
        let v: LeaderValue = decode(&kv)?;
        if v.node != node {
            return Ok(Some(Leadership {
                leader: Some(v.node),
                term: v.term,
                is_leader: false,
            }));
        }
        let ours = Leadership {
            leader: Some(v.node.clone()),
            term: v.term,
            is_leader: true,
        };
        if v.ttl_s == ttl_s {
            // Ours: renew the lease, then check the key is still the one read, so the lease
            // renewed is the one that holds it.
            if !self.keep_alive_once(kv.lease()).await? {
                return Ok(None);
            }
            let (now, _) = self.get(&key).await?;
            let same = now.is_some_and(|n| n.mod_revision() == kv.mod_revision());
            return Ok(same.then_some(ours));
        }
        // Ours, but with another TTL asked for: move the key to a lease of that TTL.
        let (lease, _) = self.grant(ttl_s).await?;
        let value = LeaderValue { ttl_s, ..v };
        let old_lease = kv.lease();
        let ops = vec![put_json_leased(&key, &value, lease)?];
        match self.cas("campaign", &[(key, Some(kv))], ops).await? {
            Cas::Applied => {
                self.revoke_quietly(old_lease).await;
                Ok(Some(ours))
            }
            Cas::Changed(_) => {
                self.revoke_quietly(lease).await;
                Ok(None)
            }
        }
    }
}

/// An appended event as stored with its id.
fn event_record(id: i64, ev: NewEvent) -> EventRecord {
    EventRecord {
        id,
        at_ms: ev.at_ms,
        cluster: ev.cluster,
        instance: ev.instance,
        kind: ev.kind,
        level: ev.level,
        message: ev.message,
        data: ev.data,
    }
}
