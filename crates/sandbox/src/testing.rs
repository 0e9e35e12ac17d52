//! Test support: a guard that kills a sandbox's servers when a test ends, even by panic.

use std::path::{Path, PathBuf};

use crate::Sandbox;

/// Kills every server of the sandbox `name` under `root` on drop, by PID, and removes the
/// directory. When the test panicked, the directory is kept and its path printed, so the
/// servers' error logs can be read.
#[derive(Debug)]
pub struct SandboxGuard {
    root: PathBuf,
    name: String,
}

impl SandboxGuard {
    /// Guard the sandbox `name` under `root` (it need not exist yet).
    pub fn new(root: &Path, name: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            name: name.to_string(),
        }
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let Ok(sb) = Sandbox::open(&self.root, &self.name) else {
            return;
        };
        sb.kill_all();
        if std::thread::panicking() {
            eprintln!(
                "sandbox {} kept for inspection at {} (servers killed)",
                self.name,
                sb.dir().display()
            );
        } else {
            let _ = std::fs::remove_dir_all(sb.dir());
        }
    }
}
