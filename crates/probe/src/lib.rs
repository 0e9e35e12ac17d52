//! All SQL that dbfleet speaks to managed servers: observe (read) and commands (write), per
//! flavor, every call under a timeout. Nothing else in the workspace opens a connection to a
//! managed server.

mod error;
pub mod parse;
mod session;

pub use error::ProbeError;
pub use session::{
    now_us, observe, observe_with, sql_escape, ChangeSource, Credentials, ObserveOptions,
    ProbeOptions, Session, FULL_REPLICA_READ_EVERY,
};
