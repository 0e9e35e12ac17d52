//! The metadata store of dbfleet: the [`Store`] trait and its embedded SQLite backend.
//!
//! The store keeps what the control plane knows between restarts: the clusters and their
//! specs and writer endpoints, the instances (declared and discovered), the last observation
//! of every instance, the problems analysis found (with first-seen, last-seen and cleared
//! times), and an append-only event (audit) log.
//!
//! The trait speaks only model types and the small record structs of this crate, never SQL, so
//! that an etcd backend (several control-plane nodes) can implement it later beside
//! [`SqliteStore`], the default, which keeps everything in one file under the data directory.
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
mod event;
mod record;
mod sqlite;

pub use api::Store;
pub use coord::{
    ClusterLock, Leadership, NewOperation, OperationQuery, OperationRecord, OperationState,
    OperationUpdate,
};
pub use error::StoreError;
pub use event::{kinds, EventLevel, EventQuery, EventRecord, NewEvent, MAX_EVENT_LIMIT};
pub use record::{ClusterRecord, InstanceRecord, Origin, ProblemChanges, ProblemRecord};
pub use sqlite::{SqliteStore, DB_FILE_NAME, SCHEMA_VERSION};
