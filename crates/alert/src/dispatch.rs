//! The dispatcher: hands transitions to every configured notifier without blocking the
//! caller. Each notifier has a bounded queue and a worker task, so a slow or failing
//! receiver delays only itself; a full queue drops the notification and counts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::eval::Transition;
use crate::notify::{Notification, Notifier, NotifyError};
use crate::rule::Severity;

/// How the dispatcher queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatchOptions {
    /// Notifications waiting per notifier before new ones are dropped.
    pub queue_capacity: usize,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
        }
    }
}

/// One notifier's delivery counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifierStats {
    /// The notifier's name.
    pub name: String,
    /// Notifications delivered.
    pub sent: u64,
    /// Notifications given up on (rejected, out of retries, or cancelled by shutdown).
    pub failed: u64,
    /// Notifications dropped because its queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// A cheap handle on the dispatcher's counts, e.g. for `/metrics`.
#[derive(Clone, Debug)]
pub struct DispatchStats {
    notifiers: Arc<Vec<(String, Arc<Counters>)>>,
}

impl DispatchStats {
    /// The counts of every notifier, in configuration order.
    pub fn snapshot(&self) -> Vec<NotifierStats> {
        self.notifiers
            .iter()
            .map(|(name, c)| NotifierStats {
                name: name.clone(),
                sent: c.sent.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
                dropped: c.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

struct Queue {
    name: String,
    min_severity: Severity,
    tx: mpsc::Sender<Notification>,
    counters: Arc<Counters>,
}

/// Owns the notifier workers. Shut it down with [`Dispatcher::shutdown`].
pub struct Dispatcher {
    queues: Vec<Queue>,
    stats: DispatchStats,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl Dispatcher {
    /// Start one worker per notifier. Must be called inside a tokio runtime.
    pub fn start(notifiers: Vec<Notifier>, options: DispatchOptions) -> Self {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut queues = Vec::new();
        for notifier in notifiers {
            let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
            let counters = Arc::new(Counters::default());
            queues.push(Queue {
                name: notifier.name().to_string(),
                min_severity: notifier.min_severity(),
                tx,
                counters: counters.clone(),
            });
            tasks.spawn(worker(notifier, rx, counters, cancel.clone()));
        }
        let stats = DispatchStats {
            notifiers: Arc::new(
                queues
                    .iter()
                    .map(|q| (q.name.clone(), q.counters.clone()))
                    .collect(),
            ),
        };
        Self {
            queues,
            stats,
            cancel,
            tasks,
        }
    }

    /// Queue every transition that pages for every notifier whose `min_severity` it meets.
    /// Never waits: a full queue drops the notification (counted and logged).
    pub fn submit(&self, transitions: &[Transition]) {
        for n in transitions.iter().filter_map(Notification::from_transition) {
            for q in self.queues.iter().filter(|q| n.severity >= q.min_severity) {
                if let Err(e) = q.tx.try_send(n.clone()) {
                    q.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "queue full",
                        mpsc::error::TrySendError::Closed(_) => "worker stopped",
                    };
                    tracing::error!(notifier = %q.name, key = %n.key, reason = why, "notification dropped");
                }
            }
        }
    }

    /// The counts handle.
    pub fn stats(&self) -> DispatchStats {
        self.stats.clone()
    }

    /// Stop taking notifications, let the workers deliver what is queued for up to `grace`,
    /// then cancel what is left (counted as failed) and wait for the workers.
    pub async fn shutdown(mut self, grace: Duration) {
        self.queues.clear();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.cancel.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // Dropped without `shutdown`: stop the workers rather than leave them running.
        self.cancel.cancel();
    }
}

async fn worker(
    notifier: Notifier,
    mut rx: mpsc::Receiver<Notification>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    loop {
        let n = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            n = rx.recv() => match n {
                Some(n) => n,
                None => break,
            },
        };
        let result = notifier.send(&n, &cancel).await;
        record(&notifier, &n, &counters, &result);
    }
    // Whatever is still queued after a cancel is lost: count it.
    rx.close();
    while rx.try_recv().is_ok() {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One delivery's outcome: counted and logged here only.
fn record(
    notifier: &Notifier,
    n: &Notification,
    counters: &Counters,
    result: &Result<(), NotifyError>,
) {
    match result {
        Ok(()) => {
            counters.sent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(notifier = %notifier.name(), key = %n.key, status = ?n.status, "notification sent");
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(notifier = %notifier.name(), key = %n.key, status = ?n.status, error = %e, "notification not delivered");
        }
    }
}
