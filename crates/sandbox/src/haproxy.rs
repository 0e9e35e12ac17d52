//! HAProxy in front of a sandbox (`dbfleet sandbox up --haproxy`): Debian's `haproxy`
//! started detached on loopback with a config the caller renders (the CLI's
//! `config::haproxy_config`), kept in `DIR/haproxy/` beside the members: `haproxy.cfg`, the
//! pid file and the Runtime API's socket `admin.sock`. Its process is the one whose pid file
//! names it and whose command line names that config, so a reused PID is never signalled.
//! `Sandbox::down` and `Sandbox::kill_all` (the test guard) stop it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::sandbox::SandboxError;

type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Where a sandbox keeps its HAProxy.
pub fn dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("haproxy")
}

/// The config `start` writes and runs.
pub fn config_path(sandbox_dir: &Path) -> PathBuf {
    dir(sandbox_dir).join("haproxy.cfg")
}

/// The Runtime API's unix socket (the config's `stats socket`).
pub fn socket_path(sandbox_dir: &Path) -> PathBuf {
    dir(sandbox_dir).join("admin.sock")
}

fn pid_file(sandbox_dir: &Path) -> PathBuf {
    dir(sandbox_dir).join("haproxy.pid")
}

/// The longest unix socket path Linux takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The address of the writer frontend in the sandbox's HAProxy config (the `bind` of the
/// frontend whose name ends in `_writer`), or `None` when it has none. What an application
/// behind the proxy connects to for writes.
pub fn writer_addr(sandbox_dir: &Path) -> Option<model::InstanceAddr> {
    let text = std::fs::read_to_string(config_path(sandbox_dir)).ok()?;
    let mut in_writer = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("frontend ") {
            in_writer = name.trim().ends_with("_writer");
        } else if line.starts_with("backend ") || line.starts_with("defaults") {
            in_writer = false;
        } else if in_writer {
            if let Some(bind) = line.strip_prefix("bind ") {
                return bind.split_whitespace().next()?.parse().ok();
            }
        }
    }
    None
}

/// The PID of the sandbox's running HAProxy, or `None`.
pub fn running_pid(sandbox_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(sandbox_dir))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let cfg = config_path(sandbox_dir);
    crate::process::runs_with_arg(pid, cfg.as_os_str().as_encoded_bytes()).then_some(pid)
}

/// Write `config` and start HAProxy with it, detached (`-D`), unless it runs already.
/// The config is checked first (`haproxy -c`); a refused one is an error with HAProxy's
/// words. Returns the PID.
pub fn start(sandbox_dir: &Path, config: &str) -> Result<i32> {
    if let Some(pid) = running_pid(sandbox_dir) {
        return Ok(pid);
    }
    let bin = crate::locate_in_path("haproxy").ok_or_else(|| {
        SandboxError::Invalid(
            "haproxy not found in PATH or /usr/sbin: install the Debian package haproxy \
             (scripts/install-deps.sh)"
                .into(),
        )
    })?;
    let sock = socket_path(sandbox_dir);
    if sock.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(SandboxError::Invalid(format!(
            "the HAProxy stats socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter --dir",
            sock.display()
        )));
    }
    let d = dir(sandbox_dir);
    std::fs::create_dir_all(&d).map_err(|e| anyhow::anyhow!("create {}: {e}", d.display()))?;
    let cfg = config_path(sandbox_dir);
    std::fs::write(&cfg, config).map_err(|e| anyhow::anyhow!("write {}: {e}", cfg.display()))?;
    let check = Command::new(&bin)
        .args(["-c", "-q", "-f"])
        .arg(&cfg)
        .output()
        .map_err(|e| anyhow::anyhow!("run {} -c: {e}", bin.display()))?;
    if !check.status.success() {
        return Err(SandboxError::Invalid(format!(
            "haproxy refused {}: {}{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        )));
    }
    let pid_path = pid_file(sandbox_dir);
    let _ = std::fs::remove_file(&pid_path);
    let log = d.join("haproxy.log");
    let out = std::fs::File::create(&log)
        .map_err(|e| anyhow::anyhow!("create {}: {e}", log.display()))?;
    // `-D` forks into the background and the first process exits once the proxy listens
    // (or failed to), having written the pid file.
    let status = Command::new(&bin)
        .arg("-D")
        .arg("-p")
        .arg(&pid_path)
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(
            out.try_clone()
                .map_err(|e| anyhow::anyhow!("open {}: {e}", log.display()))?,
        )
        .stderr(out)
        .status()
        .map_err(|e| anyhow::anyhow!("start {}: {e}", bin.display()))?;
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        return Err(SandboxError::StartFailed {
            member: "haproxy".into(),
            reason: format!("haproxy exited with {status}"),
            log: log.display().to_string(),
            tail: tail(),
        });
    }
    running_pid(sandbox_dir).ok_or_else(|| SandboxError::StartFailed {
        member: "haproxy".into(),
        reason: format!("no running haproxy named in {}", pid_path.display()),
        log: log.display().to_string(),
        tail: tail(),
    })
}

/// Stop the sandbox's HAProxy: SIGTERM, SIGKILL after `grace`. Returns whether one ran.
pub fn stop(sandbox_dir: &Path, grace: Duration) -> bool {
    let Some(pid) = running_pid(sandbox_dir) else {
        return false;
    };
    let cfg = config_path(sandbox_dir);
    let arg = cfg.as_os_str().as_encoded_bytes();
    if !crate::process::signal_and_wait_arg(pid, arg, Signal::SIGTERM, grace) {
        crate::process::signal_and_wait_arg(pid, arg, Signal::SIGKILL, Duration::from_secs(10));
    }
    let _ = std::fs::remove_file(pid_file(sandbox_dir));
    true
}
