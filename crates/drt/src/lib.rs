//! Disaster-recovery testing: measure what a database client experiences while a cluster
//! fails, and check afterwards that no acknowledged write was lost.
//!
//! For now the crate holds one module, [`load`]: a write load run by several writers that
//! behave like an application (they find the writable primary by probing, as an unprivileged
//! account that `read_only` stops), a ledger of every write's outcome (acknowledged, in doubt
//! or refused) with the client-side outage windows, and [`load::verify`], which reads the
//! servers back and names every acknowledged id that is missing. Failover tests,
//! `dbfleet bench failover` and, later, fault injection and DRT scenarios build on it.
//!
//! *Invariant*: a write is counted as acknowledged only when the server returned OK for it,
//! and a write whose outcome the client cannot know is never counted as lost.
//! *Boundary*: opens connections only through `probe`; never changes a cluster's topology or
//! its servers' settings (the admin account only creates the ledger table and reads it).

mod error;
pub mod faults;
pub mod load;
pub mod report;
pub mod runner;
pub mod scenario;

pub use error::DrtError;
