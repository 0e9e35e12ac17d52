//! The old primary while a failover runs: tried again and again, each attempt under a short
//! deadline, and fenced the moment it answers.
//!
//! A frozen (SIGSTOP) primary accepts TCP connections in its kernel but never greets; a
//! silently cut one never completes the handshake. Either way an attempt simply times out,
//! and the failover never waits on it: before `promote` and before `open_writes` it only
//! looks at what the watch saw. An attempt left pending when the server resumes completes
//! at once, so a primary that comes back mid-failover is fenced within milliseconds (its
//! clients killed, then `read_only=ON`), before writes open elsewhere.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conns::Conns;

/// What the watch has seen of the old primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// It has not answered since the watch started.
    Silent,
    /// It answered `at_ms`; the fence's outcome (client connections killed), or why it
    /// failed.
    Answered {
        at_ms: u64,
        fenced: Result<usize, String>,
    },
}

/// A running watch; stop it with [`OldPrimaryWatch::stop`].
pub(crate) struct OldPrimaryWatch {
    seen: Arc<Mutex<Seen>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for OldPrimaryWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The least time between two attempts, so that a refused connect does not spin.
const MIN_GAP: Duration = Duration::from_millis(20);
/// How long one fence of a primary that answered may take.
const FENCE_WITHIN: Duration = Duration::from_secs(2);

impl OldPrimaryWatch {
    /// Start watching `addr`, each attempt within `attempt`. With `keep_semi_sync` (a
    /// stalled primary), its fence never switches semi-sync off.
    pub(crate) fn start(
        addr: InstanceAddr,
        creds: Credentials,
        attempt: Duration,
        keep_semi_sync: bool,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Seen::Silent));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(
            addr,
            creds,
            attempt,
            keep_semi_sync,
            seen.clone(),
            cancel.clone(),
        ));
        Self {
            seen,
            cancel,
            task: Some(task),
        }
    }

    /// What it has seen so far.
    pub(crate) fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop the watch and wait for its task; returns what it saw.
    pub(crate) async fn stop(mut self) -> Seen {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.seen()
    }
}

async fn watch(
    addr: InstanceAddr,
    creds: Credentials,
    attempt: Duration,
    keep_semi_sync: bool,
    seen: Arc<Mutex<Seen>>,
    cancel: CancellationToken,
) {
    let opts = ProbeOptions {
        connect_timeout: attempt,
        query_timeout: FENCE_WITHIN,
    };
    loop {
        let started = Instant::now();
        let answered = tokio::select! {
            _ = cancel.cancelled() => return,
            r = Session::connect(&addr, &creds, opts) => r.is_ok(),
        };
        if answered {
            let at_ms = crate::now_ms();
            let mut conns = Conns::new(creds.clone(), opts);
            let fence = async {
                if keep_semi_sync {
                    conns.fence_keep_semi_sync(&addr).await
                } else {
                    conns.fence(&addr).await
                }
            };
            let fenced = match tokio::time::timeout(FENCE_WITHIN, fence).await {
                Ok(Ok(n)) => Ok(n),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("the fence did not finish within {FENCE_WITHIN:?}")),
            };
            let done = fenced.is_ok();
            tracing::warn!(instance = %addr, fenced = ?fenced, "the old primary answered during the failover");
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Seen::Answered { at_ms, fenced };
            if done {
                return;
            }
        }
        let gap = MIN_GAP.saturating_sub(started.elapsed());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(gap) => {}
        }
    }
}
