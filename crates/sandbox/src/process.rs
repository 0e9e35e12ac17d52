//! Processes of a sandbox: find, signal and wait for the `mariadbd` a member runs.
//!
//! A PID alone is not proof: it may have been reused. A member's process is the one whose
//! command line names the member's datadir.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The PID of the live `mariadbd` that serves `datadir`, from its pid file, or `None`.
pub fn running_pid(pid_file: &Path, datadir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_our_process(pid, datadir).then_some(pid)
}

/// Whether any thread of `pid` is still running. A multi-threaded server's main thread turns
/// zombie before its other threads have exited and closed the sockets, so every thread is
/// checked.
fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return false;
        };
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        !matches!(state, Some('Z') | Some('X') | None)
    })
}

/// Whether `pid` is alive (not a zombie) and runs with `--datadir=<datadir>`.
pub fn is_our_process(pid: i32, datadir: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = format!("--datadir={}", datadir.display());
    cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
}

/// Whether `pid` is alive (not a zombie) and has `arg` among its command-line arguments.
pub fn runs_with_arg(pid: i32, arg: &[u8]) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|b| *b == 0).any(|a| a == arg)
}

/// [`signal_and_wait`] for a process told by one of its arguments (not a datadir).
pub fn signal_and_wait_arg(pid: i32, arg: &[u8], sig: Signal, wait: Duration) -> bool {
    if !runs_with_arg(pid, arg) {
        return true;
    }
    let _ = kill(Pid::from_raw(pid), sig);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    !is_alive(pid)
}

/// Send `sig` to `pid` and wait up to `wait` for the process to be gone. Returns whether it
/// went. "Gone" means exited (a zombie or reaped), not just that its command line vanished:
/// an exiting process clears its command line before it closes its sockets.
pub fn signal_and_wait(pid: i32, datadir: &Path, sig: Signal, wait: Duration) -> bool {
    if !is_our_process(pid, datadir) {
        return true;
    }
    let _ = kill(Pid::from_raw(pid), sig);
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    !is_alive(pid)
}

/// Stop a server: SIGTERM, and SIGKILL if it has not exited after `grace`.
pub fn terminate(pid: i32, datadir: &Path, grace: Duration) {
    if !signal_and_wait(pid, datadir, Signal::SIGTERM, grace) {
        signal_and_wait(pid, datadir, Signal::SIGKILL, Duration::from_secs(10));
    }
}
