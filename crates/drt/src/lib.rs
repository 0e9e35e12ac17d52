//! Disaster-recovery testing: measure what a database client experiences while a cluster
//! fails, and check afterwards that no acknowledged write was lost.
//!
//! - [`load`]: a write load run by several writers that behave like an application (they find
//!   the writable primary by probing, as an unprivileged account that `read_only` stops), a
//!   ledger of every write's outcome (acknowledged, in doubt or refused) with the client-side
//!   outage windows, and [`load::verify`], which reads the servers back and names every
//!   acknowledged id that is missing.
//! - [`faults`]: fault guards (kill, pause, iptables partitions, a latency proxy, replication
//!   faults), each healed explicitly, on drop, and on SIGINT/SIGTERM.
//! - [`scenario`]: scenarios as TOML, with the built-in library.
//! - [`report`]: run results, verdicts, aggregates, text and HTML reports.
//! - [`runner`]: runs a scenario against a local sandbox (`dbfleet drt run`).
//!
//! *Invariant*: a write is counted as acknowledged only when the server returned OK for it,
//! and a write whose outcome the client cannot know is never counted as lost; every fault is
//! healed on every path.
//! *Boundary*: opens connections to servers only through `probe`; changes only the sandbox it
//! is pointed at, and only to inject and heal the scenario's faults.

pub mod between;
mod error;
pub mod faults;
pub mod load;
pub mod report;
pub mod runner;
pub mod scenario;

pub use error::DrtError;
