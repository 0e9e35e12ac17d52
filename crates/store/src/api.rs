//! The [`Store`] trait: the metadata-store contract every backend implements.

use model::{ClusterSpec, InstanceAddr, Observation, Problem};

use crate::coord::{
    ClusterLock, Leadership, NewOperation, OperationQuery, OperationRecord, OperationUpdate,
};
use crate::error::StoreError;
use crate::event::{EventQuery, EventRecord, NewEvent};
use crate::record::{ClusterRecord, InstanceQuery, InstanceRecord, ProblemChanges, ProblemRecord};

/// The control plane's metadata store.
///
/// Every method is async and speaks only model types and this crate's records: no SQL, no
/// backend types. [`crate::SqliteStore`] is the embedded default; an etcd backend for several
/// control-plane nodes can implement the same trait. Use it as `Arc<dyn Store>`.
///
/// Timestamps (`*_ms`) are milliseconds since the Unix epoch, passed in by the caller; a
/// backend never reads the clock.
///
/// Each method is atomic: it applies whole or not at all. Methods that write several rows
/// ([`Store::save_observations`], [`Store::sync_problems`]) do so in one transaction.
///
/// # The event log is append-only
///
/// Events are only ever appended ([`Store::append_event`], and the events
/// [`Store::sync_problems`] writes). No method updates or deletes an event, and the SQLite
/// backend also refuses such statements with triggers. A retention policy, if one is ever
/// needed, is a schema migration of its own and must be written down as such.
///
/// # Cluster locks and the leader lease
///
/// Two operations must never run on one cluster at once, and only the leader control-plane
/// node may act (ARCHITECTURE.md, invariant 2):
///
/// - a cluster lock ([`Store::try_lock_cluster`], [`Store::unlock_cluster`]) is held by an
///   operation for its whole run and renewed while it runs; it lapses after its TTL if its
///   holder dies;
/// - the leader lease ([`Store::campaign`], [`Store::resign`]) is taken or renewed by each
///   node every tick; it carries a term, a fencing token that grows with each new leader.
///
/// SQLite (one node) backs both with a table and the single writer connection, on the
/// caller's clock; etcd backs them with leases and transactions, on etcd's clock.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- clusters ----

    /// Insert a cluster from its spec, or replace the spec of the cluster of that name.
    ///
    /// The cluster's writer endpoint is kept: only [`Store::set_writer`] changes it, so a
    /// config reload never undoes a failover. Returns the record as stored.
    async fn upsert_cluster(
        &self,
        spec: &ClusterSpec,
        now_ms: u64,
    ) -> Result<ClusterRecord, StoreError>;

    /// Every cluster, by name.
    async fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError>;

    /// The cluster of that name, if there is one.
    async fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError>;

    /// Set (or, with `None`, forget) the cluster's writer endpoint; failover and switchover
    /// call it. Fails with [`StoreError::NotFound`] for an unknown cluster.
    async fn set_writer(
        &self,
        name: &str,
        writer: Option<InstanceAddr>,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    // ---- instances ----

    /// Insert an instance, or update the one with the same cluster and address: its origin
    /// and `last_seen_ms` are replaced, its `first_seen_ms` is kept. Returns `true` when the
    /// instance was new (the caller may then log an `instance_discovered` event).
    async fn upsert_instance(&self, instance: &InstanceRecord) -> Result<bool, StoreError>;

    /// The instances of one cluster, or of every cluster with `None`; by cluster, then
    /// address.
    async fn instances(&self, cluster: Option<&str>) -> Result<Vec<InstanceRecord>, StoreError>;

    /// One page of instances (of one cluster, or of every cluster), by cluster, then
    /// address as text (`host:port`, byte-wise): the first `limit` (capped at
    /// [`crate::MAX_EVENT_LIMIT`]) after the query's cursor; see [`InstanceQuery`]. Keyset
    /// paging: a page costs its own size, wherever it starts.
    async fn instance_page(&self, query: &InstanceQuery)
        -> Result<Vec<InstanceRecord>, StoreError>;

    /// Remove an instance from a cluster, with its last observation. Returns `true` when it
    /// was there.
    async fn remove_instance(&self, cluster: &str, addr: &InstanceAddr)
        -> Result<bool, StoreError>;

    // ---- observations ----

    /// Save a round of observations, each with the cluster of its instance, in one
    /// transaction. Each replaces the instance's previous last observation: the store keeps
    /// one observation per address. Built for thousands of rows per call.
    async fn save_observations(
        &self,
        observations: &[(String, Observation)],
    ) -> Result<(), StoreError>;

    /// The last observation of every instance of one cluster, or of every cluster with
    /// `None`, each with its cluster; by cluster, then address.
    async fn last_observations(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<(String, Observation)>, StoreError>;

    /// The last observation of one instance, if there is one.
    async fn last_observation(
        &self,
        addr: &InstanceAddr,
    ) -> Result<Option<Observation>, StoreError>;

    // ---- problems ----

    /// Bring the cluster's problems in line with one round of analysis, in one transaction:
    ///
    /// - a problem whose [`Problem::key`] is not open is opened (first and last seen at
    ///   `now_ms`), and a `problem_opened` event is appended;
    /// - an open problem that is in `current` gets `last_seen_ms = now_ms` and its latest
    ///   severity, summary and evidence;
    /// - an open problem of this cluster absent from `current` is cleared at `now_ms`, and a
    ///   `problem_cleared` event is appended.
    ///
    /// Every problem in `current` must belong to `cluster`
    /// ([`StoreError::InvalidArgument`] otherwise). A key given twice counts once; its last
    /// occurrence wins.
    async fn sync_problems(
        &self,
        cluster: &str,
        current: &[Problem],
        now_ms: u64,
    ) -> Result<ProblemChanges, StoreError>;

    /// The open problems of one cluster, or of every cluster with `None`; oldest opening
    /// first.
    async fn open_problems(&self, cluster: Option<&str>) -> Result<Vec<ProblemRecord>, StoreError>;

    /// Problems open and cleared, of one cluster or of every cluster with `None`; the newest
    /// `limit` openings (capped at [`crate::MAX_EVENT_LIMIT`]) with an id below `before_id`
    /// when it is given, newest first. Page back through the history by passing the last
    /// id of a page as the next page's `before_id` (keyset paging: no page costs more than
    /// its own size).
    async fn problem_history(
        &self,
        cluster: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProblemRecord>, StoreError>;

    // ---- events ----

    /// Append an event to the log and return it as stored, with its id.
    async fn append_event(&self, event: &NewEvent) -> Result<EventRecord, StoreError>;

    /// Events matching the query, in ascending id order; see [`EventQuery`].
    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError>;

    // ---- operations ----

    /// Record a new operation and return it with its id.
    async fn create_operation(&self, op: &NewOperation) -> Result<OperationRecord, StoreError>;

    /// Change an operation's state, step, context or error, and return it as stored. Moving
    /// an operation out of a final state fails with [`StoreError::InvalidArgument`]; an
    /// unknown id with [`StoreError::NotFound`]. Reaching a final state sets `finished_ms`.
    async fn update_operation(
        &self,
        id: i64,
        update: &OperationUpdate,
    ) -> Result<OperationRecord, StoreError>;

    /// The operation with that id, if any.
    async fn operation(&self, id: i64) -> Result<Option<OperationRecord>, StoreError>;

    /// Operations matching the query, newest first.
    async fn operations(&self, query: &OperationQuery) -> Result<Vec<OperationRecord>, StoreError>;

    // ---- cluster locks ----

    /// Take the cluster's lock for `holder`, or renew it when `holder` has it already, for
    /// `ttl_ms` from `now_ms`. Returns `false` when someone else holds a lock that has not
    /// lapsed.
    async fn try_lock_cluster(
        &self,
        cluster: &str,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Release the cluster's lock if `holder` has it; returns whether it did.
    async fn unlock_cluster(&self, cluster: &str, holder: &str) -> Result<bool, StoreError>;

    /// Who holds the cluster's lock (even a lapsed one, with its expiry), if anyone.
    async fn cluster_lock(&self, cluster: &str) -> Result<Option<ClusterLock>, StoreError>;

    // ---- leader lease ----

    /// Become the leader, or stay it, for `ttl_ms` from `now_ms`: succeeds when nobody leads,
    /// the lease lapsed, or `node` leads already. Returns who leads afterwards.
    async fn campaign(
        &self,
        node: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Leadership, StoreError>;

    /// Give up leadership if `node` has it, so another node can take it at once.
    async fn resign(&self, node: &str) -> Result<(), StoreError>;

    // ---- settings ----

    /// A small JSON value stored under `key` (switches such as recoveries on/off, recovery
    /// acknowledgements, fenced instances), if any.
    async fn kv_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// Store `value` under `key`, replacing any.
    async fn kv_put(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError>;

    /// Remove `key`; returns whether it was there.
    async fn kv_delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Every key starting with `prefix`, with its value, in key order.
    async fn kv_list(&self, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError>;

    // ---- lifecycle ----

    /// Make everything written so far durable and compact; the daemon calls it at shutdown.
    /// For SQLite this is a WAL checkpoint.
    async fn flush(&self) -> Result<(), StoreError>;
}
