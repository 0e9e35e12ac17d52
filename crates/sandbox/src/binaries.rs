//! Finding the MariaDB programs, with an error that names the Debian package.

use std::path::{Path, PathBuf};

use crate::SandboxError;

/// Paths of the MariaDB programs a sandbox runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `mariadbd`, the server.
    pub mariadbd: PathBuf,
    /// `mariadb-install-db`, which initialises a datadir.
    pub install_db: PathBuf,
}

impl Binaries {
    /// Look the programs up in `$DBFLEET_MARIADB_BINDIR` when it is set (and only there),
    /// else in `PATH`, then in `/usr/sbin` and `/usr/bin`, where Debian puts them (root's
    /// `PATH` has `/usr/sbin`; a user's may not).
    pub fn find() -> Result<Self, SandboxError> {
        Ok(Self {
            mariadbd: find_program("mariadbd")?,
            install_db: find_program("mariadb-install-db")?,
        })
    }
}

fn find_program(name: &str) -> Result<PathBuf, SandboxError> {
    locate(name).ok_or_else(|| SandboxError::MissingProgram {
        program: name.to_string(),
    })
}

/// Where the MariaDB program `name` is, looked up as [`Binaries::find`] does: in
/// `$DBFLEET_MARIADB_BINDIR` when it is set (and only there), else as [`locate_in_path`].
/// `None` when it is nowhere, or not executable.
pub fn locate(name: &str) -> Option<PathBuf> {
    match std::env::var_os("DBFLEET_MARIADB_BINDIR") {
        Some(dir) => Some(PathBuf::from(dir).join(name)).filter(|p| is_executable(p)),
        None => locate_in_path(name),
    }
}

/// Where the program `name` is in `PATH`, then in `/usr/sbin`, `/usr/bin` and
/// `/usr/local`'s, where Debian puts programs (root's `PATH` has `/usr/sbin`; a user's may
/// not). `None` when it is nowhere, or not executable.
pub fn locate_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
