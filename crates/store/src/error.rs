//! `StoreError`: every way a metadata-store call can fail, backend-neutral.

use std::path::PathBuf;

/// Why a metadata-store call failed.
///
/// Each message is whole on its own (it includes the underlying error's text), so printing it
/// with `{}` is enough; no variant chains a `source()`.
///
/// The variants name no backend type: a SQLite (or, later, etcd) error is carried as its text
/// in [`StoreError::Backend`], so the [`crate::Store`] trait stays free of SQL types.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {cause}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The store file could not be opened or configured.
    #[error("cannot open the metadata store {path}: {message}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// The backend's error text.
        message: String,
    },
    /// The store was written by a newer dbfleet whose schema this binary does not know.
    #[error(
        "the metadata store {path} has schema version {found}, but this dbfleet knows schema \
         versions up to {known} only: it was written by a newer dbfleet; run that version or \
         a newer one, or restore a backup of the store"
    )]
    SchemaTooNew {
        /// The store file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this binary knows.
        known: i64,
    },
    /// The store file is there but holds nothing of dbfleet's: 0 bytes, or a database
    /// without the schema. Its data (operations, fenced marks, the recoveries switch, block
    /// windows) is gone, so it is not silently made anew; see `OpenOptions::init`.
    #[error(
        "the metadata store {path} {what}: the operations, fenced marks, recoveries switch \
         and block windows it should hold are not there"
    )]
    Uninitialized {
        /// The store file.
        path: PathBuf,
        /// What it is, e.g. `is an empty file (0 bytes)`.
        what: String,
    },
    /// The store file is damaged: `PRAGMA quick_check` found faults, or it is not a SQLite
    /// database.
    #[error("the metadata store {path} is damaged: {detail}")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What quick_check or SQLite reported.
        detail: String,
    },
    /// A schema migration failed; the store stays at the version before it.
    #[error("migrating the metadata store to schema version {version} failed: {message}")]
    Migration {
        /// The schema version the failed migration leads to.
        version: usize,
        /// The backend's error text.
        message: String,
    },
    /// The backend failed a read or a write.
    #[error("metadata store backend error: {0}")]
    Backend(String),
    /// A value could not be encoded as JSON for storage.
    #[error("cannot encode {what} as JSON: {cause}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        cause: serde_json::Error,
    },
    /// A stored value could not be read back: the store holds something this binary cannot
    /// decode.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// What was being read, e.g. `observation of 10.0.0.1:3306`.
        what: String,
        /// Why it could not be decoded.
        detail: String,
    },
    /// The named record does not exist.
    #[error("{0} not found in the metadata store")]
    NotFound(String),
    /// The caller passed a value the store refuses.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The blocking task that ran the call panicked or was cancelled.
    #[error("metadata store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether the store file itself is refused: damaged, unexpectedly empty, or of a newer
    /// dbfleet. No retry helps; an operator must restore a backup or say to start anew.
    pub fn is_refused_store(&self) -> bool {
        matches!(
            self,
            Self::Uninitialized { .. } | Self::Damaged { .. } | Self::SchemaTooNew { .. }
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Backend(e.to_string())
    }
}
