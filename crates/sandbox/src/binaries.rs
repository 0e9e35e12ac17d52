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
    let dirs: Vec<PathBuf> = match std::env::var_os("DBFLEET_MARIADB_BINDIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(
                    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                        .map(PathBuf::from),
                )
                .collect()
        }
    };
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| SandboxError::MissingProgram {
            program: name.to_string(),
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
