//! `DrtError`: why preparing or verifying a load failed.

use model::InstanceAddr;
use probe::ProbeError;

/// A failure of [`crate::load::prepare`] or [`crate::load::verify`]. A running load never
/// fails: every failed write is recorded in its ledger instead.
#[derive(Debug, thiserror::Error)]
pub enum DrtError {
    /// The ledger table's name cannot be used.
    #[error(
        "table name {0:?} is not valid: write it as database.table, each part 1 to 64 \
         ASCII letters, digits or '_'"
    )]
    BadTable(String),
    /// A statement to a server failed; `error` says how (callers branch on its variant).
    #[error("{step} on {addr}: {error}")]
    Sql {
        /// What was being done, e.g. "create ledger table".
        step: &'static str,
        /// The server.
        addr: InstanceAddr,
        /// The typed failure.
        error: ProbeError,
    },
    /// A server's rows could not be read, nor on the retry after a pause (see
    /// [`crate::load::VerifyOptions::retry_pause`]).
    #[error("{first}; retried after {} ms: {last}", pause.as_millis())]
    Retried {
        /// The first attempt's failure.
        first: Box<DrtError>,
        /// The retry's failure.
        last: Box<DrtError>,
        /// The pause between them.
        pause: std::time::Duration,
    },
}

impl DrtError {
    /// The typed failure of the last attempt, when a statement failed.
    pub fn probe_error(&self) -> Option<&ProbeError> {
        match self {
            Self::Sql { error, .. } => Some(error),
            Self::Retried { last, .. } => last.probe_error(),
            Self::BadTable(_) => None,
        }
    }

    pub(crate) fn sql(step: &'static str, addr: &InstanceAddr) -> impl FnOnce(ProbeError) -> Self {
        let addr = addr.clone();
        move |error| Self::Sql { step, addr, error }
    }
}
