//! The metadata store of dbfleet: the [`Store`] trait, its embedded SQLite backend and its
//! etcd backend.
//!
//! The store keeps what the control plane knows between restarts: the clusters and their
//! specs and writer endpoints, the instances (declared and discovered), the last observation
//! of every instance, the problems analysis found (with first-seen, last-seen and cleared
//! times), and an append-only event (audit) log.
//!
//! The trait speaks only model types and the small record structs of this crate, never SQL or
//! etcd, so that two backends implement it alike: [`SqliteStore`], the default, which keeps
//! everything in one file under the data directory, and [`EtcdStore`].
//!
//! [`EtcdStore`] is the backend for several control-plane nodes: everything lives in an etcd
//! cluster under one key prefix, as JSON; each method is one etcd transaction (or a
//! compare-and-swap loop of them), ids come from counters bumped in the same transaction,
//! and cluster locks and the leader key sit on etcd leases, so they lapse on etcd's clock
//! rather than the caller's `now_ms`. [`Store::sync_problems`] is one transaction and may need
//! etcd's `--max-txn-ops` raised for clusters with many open problems;
//! [`Store::save_observations`] is split into transactions of at most that many. The details
//! are on [`EtcdStore`]; [`etcd::testing`] starts a real etcd for tests.
//!
//! Timestamps are `u64` milliseconds since the Unix epoch, always passed in by the caller: the
//! store never reads the clock, so tests are deterministic.
//!
//! Credentials are never stored: [`model::ClusterSpec`] holds none, and nothing else here takes
//! any.

mod api;
pub mod contract;
mod coord;
mod error;
pub mod etcd;
mod event;
mod record;
pub mod settings;
mod sqlite;

pub use api::Store;
pub use coord::{
    ClusterLock, Leadership, NewOperation, OperationQuery, OperationRecord, OperationState,
    OperationUpdate,
};
pub use error::StoreError;
pub use etcd::{EtcdOptions, EtcdStore, ETCD_DEFAULT_MAX_TXN_OPS};
pub use event::{kinds, EventLevel, EventQuery, EventRecord, NewEvent, MAX_EVENT_LIMIT};
pub use record::{
    ClusterRecord, InstanceQuery, InstanceRecord, Origin, ProblemChanges, ProblemRecord,
};
pub use settings::{FencedMark, Settings};
pub use sqlite::{
    CheckReport, FileState, OpenOptions, SqliteStore, DB_FILE_NAME, READERS as SQLITE_READERS,
    SCHEMA_VERSION, STORE_FILE_MODE,
};
