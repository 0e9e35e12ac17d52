//! `Manifest`: the sandbox's description on disk, `sandbox.json`.

use std::path::{Path, PathBuf};

use model::InstanceAddr;
use serde::{Deserialize, Serialize};

/// The file name of the manifest inside a sandbox directory.
pub const MANIFEST_FILE: &str = "sandbox.json";

/// What a sandbox is made of. Written once by `up`; members' roles are their initial roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The sandbox name.
    pub name: String,
    /// Whether semi-sync replication was switched on.
    pub semi_sync: bool,
    /// Server settings beyond the defaults; a manifest written before they existed gets
    /// the defaults.
    #[serde(default)]
    pub tuning: crate::sandbox::Tuning,
    /// The members, the primary first.
    pub members: Vec<Member>,
}

/// One server of a sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Member name: `m1`, `m2`, …
    pub name: String,
    /// The loopback address it listens on.
    pub host: String,
    /// Its TCP port.
    pub port: u16,
    /// Its `server_id`.
    pub server_id: u32,
    /// Its role when the sandbox was made. Failovers do not change it.
    pub role: Role,
}

impl Member {
    /// The member's address.
    pub fn addr(&self) -> InstanceAddr {
        InstanceAddr::new(self.host.clone(), self.port)
    }

    /// The member's own directory.
    pub fn dir(&self, sandbox_dir: &Path) -> PathBuf {
        sandbox_dir.join(&self.name)
    }

    /// The member's data directory.
    pub fn datadir(&self, sandbox_dir: &Path) -> PathBuf {
        self.dir(sandbox_dir).join("data")
    }

    /// The member's Unix socket. Unix socket paths are limited to 107 bytes, so a deep
    /// sandbox directory puts the socket in /tmp under a name made from the port.
    pub fn socket(&self, sandbox_dir: &Path) -> PathBuf {
        let p = self.dir(sandbox_dir).join("mysql.sock");
        if p.as_os_str().len() < 100 {
            p
        } else {
            std::env::temp_dir().join(format!("dbfleet-sandbox-{}.sock", self.port))
        }
    }
}

/// A member's role when the sandbox was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writable; the others replicate from it.
    Primary,
    /// Read-only; replicates from the primary.
    Replica,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}
