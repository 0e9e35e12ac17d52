//! The store file's health and safety: what is at the path (missing, empty, without schema,
//! damaged, sound) through `PRAGMA quick_check`, the files' mode (0600), the creation of a
//! new store (whole or not at all), and a checked copy of a live store (`VACUUM INTO`).

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::migrations::{self, SCHEMA_VERSION};
use crate::error::StoreError;

/// The mode of every store file: the database, its `-wal` and its `-shm`.
pub const STORE_FILE_MODE: u32 = 0o600;

/// The most findings of `PRAGMA quick_check` kept in a report.
const MAX_FINDINGS: usize = 20;

/// What a store file is found to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// No file at the path.
    Missing,
    /// A file of 0 bytes.
    Empty,
    /// A SQLite database without dbfleet's schema (`user_version` 0).
    NoSchema,
    /// `PRAGMA quick_check` found damage, or the file is not a SQLite database.
    Damaged,
    /// A store of a newer dbfleet (schema version above this binary's).
    TooNew,
    /// Sound: quick_check passed and the schema is one this binary knows.
    Sound,
}

impl FileState {
    /// The name of the state, as `store check --json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Empty => "empty",
            Self::NoSchema => "no_schema",
            Self::Damaged => "damaged",
            Self::TooNew => "too_new",
            Self::Sound => "ok",
        }
    }
}

/// What [`crate::SqliteStore::check_file`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    /// The store file.
    pub path: PathBuf,
    /// What it is.
    pub state: FileState,
    /// Its size, without the `-wal`.
    pub size_bytes: u64,
    /// `PRAGMA user_version`, when it could be read.
    pub schema_version: Option<i64>,
    /// What `quick_check` reported (at most 20 lines), or why it could not run; empty when
    /// the file is sound.
    pub findings: Vec<String>,
}

impl CheckReport {
    /// Whether the store can be used as it is.
    pub fn is_sound(&self) -> bool {
        self.state == FileState::Sound
    }

    /// The report as the error that refuses the store, or `None` when it is sound.
    pub fn refusal(&self) -> Option<StoreError> {
        let path = self.path.clone();
        let what = match self.state {
            FileState::Sound => return None,
            FileState::Missing => "is missing".to_string(),
            FileState::Empty => "is an empty file (0 bytes)".to_string(),
            FileState::NoSchema => "is a SQLite database without dbfleet's schema".to_string(),
            FileState::TooNew => {
                return Some(StoreError::SchemaTooNew {
                    path,
                    found: self.schema_version.unwrap_or_default(),
                    known: SCHEMA_VERSION,
                })
            }
            FileState::Damaged => {
                return Some(StoreError::Damaged {
                    path,
                    detail: self.findings.join("; "),
                })
            }
        };
        Some(StoreError::Uninitialized { path, what })
    }
}

/// Whether a SQLite error says the file is damaged or not a database at all.
pub(super) fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Look at the store file at `path` without changing it: its size, `PRAGMA quick_check` and
/// the schema version. Fails only when the file cannot be looked at (no permission, an IO
/// error); every finding about its content is in the report.
pub(super) fn check_file(path: &Path) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport {
        path: path.to_path_buf(),
        state: FileState::Missing,
        size_bytes: 0,
        schema_version: None,
        findings: Vec::new(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(open_error(path, e)),
    };
    report.size_bytes = meta.len();
    if meta.len() == 0 {
        report.state = FileState::Empty;
        return Ok(report);
    }
    // Read-only, so that a check changes nothing. A read-only connection cannot rebuild the
    // WAL index of a store that was not closed cleanly: then read-write, without create.
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| probe_read(&c).map(|()| c))
    {
        Ok(c) => c,
        Err(e) if is_damage(&e) => {
            report.state = FileState::Damaged;
            report.findings.push(e.to_string());
            return Ok(report);
        }
        Err(_) => Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?,
    };
    conn.busy_timeout(super::BUSY_TIMEOUT)
        .map_err(|e| open_error(path, e))?;
    inspect(&conn, &mut report).map_err(|e| open_error(path, e))?;
    Ok(report)
}

/// Read the first page, so that opening a file that is not a database fails here.
fn probe_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
}

/// Fill `report` from an open connection: quick_check, then the schema version. A finding
/// about the content goes in the report; only other failures (busy, IO) are errors.
pub(super) fn inspect(conn: &Connection, report: &mut CheckReport) -> rusqlite::Result<()> {
    match quick_check(conn) {
        Ok(findings) if findings.is_empty() => {}
        Ok(findings) => {
            report.state = FileState::Damaged;
            report.findings = findings;
            return Ok(());
        }
        Err(e) if is_damage(&e) => {
            report.state = FileState::Damaged;
            report.findings = vec![e.to_string()];
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let version: i64 = match conn.query_row("PRAGMA user_version", [], |r| r.get(0)) {
        Ok(v) => v,
        Err(e) if is_damage(&e) => {
            report.state = FileState::Damaged;
            report.findings = vec![e.to_string()];
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    report.schema_version = Some(version);
    report.state = match version {
        0 => FileState::NoSchema,
        v if v > SCHEMA_VERSION => FileState::TooNew,
        v if v < 0 => {
            report.findings = vec![format!("user_version is {v}")];
            FileState::Damaged
        }
        _ => FileState::Sound,
    };
    Ok(())
}

/// `PRAGMA quick_check`: the lines it reports, none when it says `ok`.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({MAX_FINDINGS})"))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(if lines.len() == 1 && lines[0] == "ok" {
        Vec::new()
    } else {
        lines
    })
}

/// The `-wal` and `-shm` files of the store file `path`.
pub(super) fn side_files(path: &Path) -> [PathBuf; 2] {
    let name = path.as_os_str();
    let with = |suffix: &str| {
        let mut s = name.to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    [with("-wal"), with("-shm")]
}

/// Make the store file and its `-wal` and `-shm`, those that exist, readable by the owner
/// only. A store made by an older dbfleet had SQLite's default 0644.
pub(super) fn make_private(path: &Path) -> Result<(), StoreError> {
    let [wal, shm] = side_files(path);
    for p in [path, &wal, &shm] {
        let mode = match std::fs::metadata(p) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(open_error(p, e)),
        };
        if mode != STORE_FILE_MODE {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(STORE_FILE_MODE)).map_err(
                |e| StoreError::Open {
                    path: p.to_path_buf(),
                    message: format!("cannot make it private (mode 0600, it is {mode:o}): {e}"),
                },
            )?;
        }
    }
    Ok(())
}

/// Create a new store at `path` whole: a file of mode 0600 beside it gets the schema, and is
/// renamed into place only then, so a store file that exists always has the schema (a crash
/// during a first start leaves no empty store to be refused at the next).
pub(super) fn create_new(path: &Path) -> Result<(), StoreError> {
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".new");
    let tmp = PathBuf::from(tmp_name);
    // What a crashed creation left is ours to remove.
    remove_with_side_files(&tmp).map_err(|e| open_error(&tmp, e))?;
    let file = create_private(&tmp).map_err(|e| open_error(&tmp, e))?;
    drop(file);
    let made = (|| -> Result<(), StoreError> {
        let open_err = |e: rusqlite::Error| open_error(&tmp, e);
        let mut conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        migrations::migrate(&mut conn, path)?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(open_err)?;
        conn.close().map_err(|(_, e)| open_err(e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| open_error(&tmp, e))?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = remove_with_side_files(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| open_error(path, e))?;
    let [wal, shm] = side_files(&tmp);
    let _ = std::fs::remove_file(wal);
    let _ = std::fs::remove_file(shm);
    sync_dir(path)
}

/// A new, empty file of mode 0600; fails if `path` exists.
pub(super) fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(STORE_FILE_MODE)
        .open(path)
}

fn remove_with_side_files(path: &Path) -> std::io::Result<()> {
    let [wal, shm] = side_files(path);
    for p in [path, &wal, &shm] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// fsync the directory holding `path`, so that a rename into it is durable.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| open_error(dir, e))
}

/// Copy the store at `src` to the new file `dest` while the daemon may be writing it, and
/// check the copy. `VACUUM INTO` reads one consistent snapshot (one read transaction, which
/// the WAL lets run beside the writer) and writes a compact copy; it goes to `DEST.partial`
/// (mode 0600) and is renamed to `dest` only once quick_check passed on it and it has the
/// source's schema version. Refuses a `dest` that exists and a source that is not sound.
pub(super) fn backup(src: &Path, dest: &Path) -> Result<CheckReport, StoreError> {
    let source = check_file(src)?;
    if let Some(refusal) = source.refusal() {
        return Err(refusal);
    }
    if dest.symlink_metadata().is_ok() {
        return Err(StoreError::InvalidArgument(format!(
            "{} exists; a backup never overwrites a file",
            dest.display()
        )));
    }
    let mut partial = dest.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    create_private(&partial).map_err(|e| {
        open_error(
            &partial,
            format!("{e} (a backup of the same name under way, or left by one that failed?)"),
        )
    })?;
    let copied = (|| -> Result<CheckReport, StoreError> {
        let conn = Connection::open_with_flags(
            src,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_error(src, e))?;
        conn.busy_timeout(super::BUSY_TIMEOUT)
            .map_err(|e| open_error(src, e))?;
        let target = partial.to_str().ok_or_else(|| {
            StoreError::InvalidArgument(format!("{} is not valid UTF-8", partial.display()))
        })?;
        conn.execute("VACUUM INTO ?1", [target])
            .map_err(|e| StoreError::Backend(format!("VACUUM INTO {}: {e}", partial.display())))?;
        drop(conn);
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| open_error(&partial, e))?;
        let copy = check_file(&partial)?;
        if let Some(refusal) = copy.refusal() {
            return Err(refusal);
        }
        if copy.schema_version != source.schema_version {
            return Err(StoreError::Damaged {
                path: partial.clone(),
                detail: format!(
                    "the copy has schema version {:?}, the store {:?}",
                    copy.schema_version, source.schema_version
                ),
            });
        }
        Ok(copy)
    })();
    let mut copy = match copied {
        Ok(c) => c,
        Err(e) => {
            let _ = remove_with_side_files(&partial);
            return Err(e);
        }
    };
    // A hard link never replaces a file that appeared at `dest` meanwhile; rename would.
    let linked = std::fs::hard_link(&partial, dest).map_err(|e| open_error(dest, e));
    let _ = remove_with_side_files(&partial);
    linked?;
    sync_dir(dest)?;
    copy.path = dest.to_path_buf();
    Ok(copy)
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
