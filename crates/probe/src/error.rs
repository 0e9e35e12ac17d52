//! `ProbeError`: typed failures of a connect or a query.

use std::io;
use std::time::Duration;

use model::{ProbeFailure, ProbeFailureKind};

/// A failed call to a managed server. Callers branch on the variant: holistic detection
/// treats a refusal differently from a timeout.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens on the port.
    #[error("connection refused")]
    Refused,
    /// The connect or query did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The call that timed out: "connect", or the query's short name.
        what: &'static str,
        /// The timeout that passed.
        after: Duration,
    },
    /// Bad credentials or a missing privilege.
    #[error("access denied (error {code}): {message}")]
    Auth {
        /// The server's error number.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// A server error other than access.
    #[error("server error {code}: {message}")]
    Server {
        /// The server's error number.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The reply did not have the shape the probe expects.
    #[error("unexpected reply to {what}: {detail}")]
    Reply {
        /// The query.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Any other client or network error.
    #[error("{0}")]
    Other(String),
}

/// Server errors that mean the account cannot do what the probe asks.
const ACCESS_ERRORS: [u16; 5] = [
    1044, // ER_DBACCESS_DENIED_ERROR
    1045, // ER_ACCESS_DENIED_ERROR
    1142, // ER_TABLEACCESS_DENIED_ERROR
    1227, // ER_SPECIFIC_ACCESS_DENIED_ERROR
    1698, // ER_ACCESS_DENIED_NO_PASSWORD_ERROR
];

impl ProbeError {
    /// The kind recorded in an observation.
    pub fn kind(&self) -> ProbeFailureKind {
        match self {
            Self::Refused => ProbeFailureKind::Refused,
            Self::Timeout { .. } => ProbeFailureKind::Timeout,
            Self::Auth { .. } => ProbeFailureKind::Auth,
            Self::Server { .. } | Self::Reply { .. } | Self::Other(_) => ProbeFailureKind::Other,
        }
    }

    /// The failure as recorded in an observation.
    pub fn to_failure(&self) -> ProbeFailure {
        ProbeFailure::new(self.kind(), self.to_string())
    }

    pub(crate) fn timeout(what: &'static str, after: Duration) -> Self {
        Self::Timeout { what, after }
    }
}

impl From<mysql_async::Error> for ProbeError {
    fn from(e: mysql_async::Error) -> Self {
        match e {
            mysql_async::Error::Server(s) if ACCESS_ERRORS.contains(&s.code) => Self::Auth {
                code: s.code,
                message: s.message,
            },
            mysql_async::Error::Server(s) => Self::Server {
                code: s.code,
                message: s.message,
            },
            mysql_async::Error::Io(mysql_async::IoError::Io(io))
                if io.kind() == io::ErrorKind::ConnectionRefused =>
            {
                Self::Refused
            }
            mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => {
                Self::Other(format!("TLS: {t}"))
            }
            other => {
                let text = other.to_string();
                // rustls's refusal reaches us wrapped twice in io errors.
                let inner = text.trim_start_matches("Input/output error: ");
                if inner.starts_with("invalid peer certificate") {
                    Self::Other(format!("TLS: {inner}"))
                } else {
                    Self::Other(text)
                }
            }
        }
    }
}
