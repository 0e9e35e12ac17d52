//! All SQL that dbfleet speaks to managed servers: observe (read) and commands (write), per
//! flavor, every call under a timeout. Nothing else in the workspace opens a connection to a
//! managed server.

pub mod commands;
mod error;
pub mod parse;
mod session;

pub use error::ProbeError;
pub use session::{
    now_us, observe, observe_with, sql_escape, ChangeSource, Credentials, IoStop, ObserveOptions,
    ProbeOptions, Session, FULL_REPLICA_READ_EVERY,
};

/// The `MASTER_HEARTBEAT_PERIOD` dbfleet gives replicas when it points them at a source
/// (the sandbox, failover, switchover, rejoin): a source sends a heartbeat after this long
/// without events, so a stream silent for much longer comes from a source that stopped
/// sending (see `model::stream`). Well below the default `stall_confirm` of 1.5 s.
pub const HEARTBEAT_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);
