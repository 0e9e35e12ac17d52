//! Process faults on a sandbox member: SIGKILL, or SIGSTOP until healed.
//!
//! A member's process is the live PID from its pid file whose command line names the
//! member's datadir, as the sandbox finds it; a paused process is resumed only if that PID
//! still runs with that datadir, so a reused PID is never signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandbox::Sandbox;

use super::{block_on_fresh, guard_methods, FaultError, FaultHandle, FaultKind};

/// How long a stop or a continue may take to show in `/proc`.
const STATE_WAIT: Duration = Duration::from_secs(2);

/// What a [`ProcessFault`] does to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessSpec {
    /// SIGKILL, as a crash would.
    Kill {
        /// Start the member again on heal (and wait until it accepts connections); else
        /// healing leaves it stopped.
        restart_on_heal: bool,
    },
    /// SIGKILL of a replica. Healing starts it again as docs/HA.md tells operators to
    /// start a crashed replica: read-only with `skip_slave_start`, and `START SLAVE` only
    /// when its source answers; with a dead source, replication stays stopped and its
    /// relay log is kept for the control plane's failover
    /// ([`Sandbox::start_replica_as_recommended`]).
    KillReplica,
    /// SIGSTOP: the server holds its connections but answers nothing. Healed by SIGCONT.
    Pause,
}

/// How a killed member starts again on heal.
#[derive(Clone, Copy, Debug)]
enum Restart {
    /// [`Sandbox::start_read_only`].
    ReadOnly,
    /// [`Sandbox::start_replica_as_recommended`].
    Replica,
}

/// A killed or paused sandbox member.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct ProcessFault {
    handle: FaultHandle,
    member: String,
    pid: i32,
}

impl ProcessFault {
    /// Kill or pause `member` of `sb`. Fails when the member does not run.
    pub fn inject(sb: &Sandbox, member: &str, spec: ProcessSpec) -> Result<Self, FaultError> {
        let m = sb.member(member).map_err(|error| FaultError::Sandbox {
            member: member.to_string(),
            error,
        })?;
        let datadir = m.datadir(sb.dir());
        let pid = sb
            .status()
            .into_iter()
            .find(|s| s.name == member)
            .and_then(|s| s.pid)
            .ok_or_else(|| FaultError::NotRunning {
                member: member.to_string(),
            })?;
        match spec {
            ProcessSpec::Kill { restart_on_heal } => Self::kill(
                sb,
                member,
                pid,
                restart_on_heal.then_some(Restart::ReadOnly),
            ),
            ProcessSpec::KillReplica => Self::kill(sb, member, pid, Some(Restart::Replica)),
            ProcessSpec::Pause => Self::pause(member, pid, datadir),
        }
    }

    fn kill(
        sb: &Sandbox,
        member: &str,
        pid: i32,
        restart_on_heal: Option<Restart>,
    ) -> Result<Self, FaultError> {
        // Registered after the kill: a failed kill must not start a member on heal.
        let at = super::now_ms();
        let ran = sb.kill(member).map_err(|error| FaultError::Sandbox {
            member: member.to_string(),
            error,
        })?;
        if !ran {
            return Err(FaultError::NotRunning {
                member: member.to_string(),
            });
        }
        let sb2 = sb.clone();
        let name = member.to_string();
        let handle = FaultHandle::register(
            FaultKind::Kill,
            format!("kill -9 {member} (pid {pid})"),
            Box::new(move || {
                let sandbox_error = |error| FaultError::Sandbox {
                    member: name.clone(),
                    error,
                };
                match restart_on_heal {
                    None => Ok(Some(format!("{name} left stopped"))),
                    Some(Restart::ReadOnly) => {
                        let started =
                            block_on_fresh(sb2.start_read_only(&name))?.map_err(sandbox_error)?;
                        Ok(Some(if started {
                            format!("{name} started again")
                        } else {
                            format!("{name} was running already")
                        }))
                    }
                    Some(Restart::Replica) => {
                        let r = block_on_fresh(sb2.start_replica_as_recommended(&name))?
                            .map_err(sandbox_error)?;
                        Ok(Some(match r {
                            None => format!("{name} was running already"),
                            Some(Ok(())) => format!(
                                "{name} started again (skip_slave_start), replication started"
                            ),
                            Some(Err(why)) => {
                                format!("{name} started again (skip_slave_start): {why}")
                            }
                        }))
                    }
                }
            }),
        );
        handle.set_injected_ms(at);
        Ok(Self {
            handle,
            member: member.to_string(),
            pid,
        })
    }

    fn pause(member: &str, pid: i32, datadir: PathBuf) -> Result<Self, FaultError> {
        let name = member.to_string();
        let dd = datadir.clone();
        let handle = FaultHandle::register(
            FaultKind::Pause,
            format!("pause {member} (pid {pid})"),
            Box::new(move || {
                if !is_our_process(pid, &dd) {
                    return Ok(Some(format!(
                        "{name} (pid {pid}) no longer runs; nothing to resume"
                    )));
                }
                kill(Pid::from_raw(pid), Signal::SIGCONT).map_err(|e| FaultError::Io {
                    what: format!("SIGCONT {name} (pid {pid})"),
                    error: e.into(),
                })?;
                if !wait_state(pid, false) {
                    return Err(FaultError::Precondition(format!(
                        "{name} (pid {pid}) still stopped {STATE_WAIT:?} after SIGCONT"
                    )));
                }
                Ok(None)
            }),
        );
        let fault = Self {
            handle,
            member: member.to_string(),
            pid,
        };
        if !is_our_process(pid, &datadir) {
            return Err(FaultError::NotRunning {
                member: member.to_string(),
            });
        }
        kill(Pid::from_raw(pid), Signal::SIGSTOP).map_err(|e| FaultError::Io {
            what: format!("SIGSTOP {member} (pid {pid})"),
            error: e.into(),
        })?;
        if !wait_state(pid, true) {
            return Err(FaultError::Precondition(format!(
                "{member} (pid {pid}) not stopped {STATE_WAIT:?} after SIGSTOP"
            )));
        }
        fault.handle.mark_injected();
        Ok(fault)
    }

    /// The member.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The PID that was signalled.
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

guard_methods!(ProcessFault);

/// Wait until every thread of `pid` is stopped (`stopped`) or none is; `true` when it got
/// there or the process is gone.
fn wait_state(pid: i32, stopped: bool) -> bool {
    let deadline = Instant::now() + STATE_WAIT;
    loop {
        let states = thread_states(pid);
        if states.is_empty() {
            return true;
        }
        let done = if stopped {
            states.iter().all(|s| matches!(s, 'T' | 't' | 'Z' | 'X'))
        } else {
            !states.iter().any(|s| matches!(s, 'T'))
        };
        if done {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state letter of every thread of `pid` (`R`, `S`, `T`, …); empty when it is gone.
fn thread_states(pid: i32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // The state is the first field after the parenthesised command name.
            stat.rsplit_once(") ")?.1.chars().next()
        })
        .collect()
}

/// Whether `pid` is alive (some thread not a zombie) and runs with `--datadir=<datadir>`.
fn is_our_process(pid: i32, datadir: &Path) -> bool {
    if pid <= 0 {
        return false;
    }
    let states = thread_states(pid);
    if !states.iter().any(|s| !matches!(s, 'Z' | 'X')) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let want = format!("--datadir={}", datadir.display());
    cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
}
