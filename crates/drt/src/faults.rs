//! Fault injection for DR tests: process, network, latency and replication faults on a local
//! sandbox, each held by a guard that heals it when healed explicitly, when dropped (a
//! scenario's end, an early return, a panic) or when the process is interrupted.
//!
//! # Faults
//!
//! - [`ProcessFault`]: SIGKILL a member (heal: optionally start it again) or SIGSTOP it
//!   (heal: SIGCONT to the same PID, checked against the member's datadir so a reused PID is
//!   never signalled).
//! - [`NetworkFault`]: iptables rules on loopback in a chain of their own
//!   (`DBFLEET-DRT-<pid>-<n>`) that OUTPUT jumps to: a [`NetworkSpec::Partition`] drops every
//!   packet to and from a member's port, [`NetworkSpec::CutFrom`] only packets a given group
//!   id sends to it. [`sweep`] removes chains that crashed runs left behind.
//! - [`LatencyProxy`]: a TCP proxy of our own that adds latency, jitter and connection drops
//!   (the kernel has no `netem`), changeable at run time through [`ProxyControl`].
//! - [`ReplicationFault`]: `STOP SLAVE SQL_THREAD` (heal: start it again), an errant write
//!   on a replica (recorded; it cannot be healed), a `MASTER_DELAY` (heal: 0), or a SQL
//!   thread broken by an errant write (heal: the errant transaction removed, sandbox only).
//! - [`stall_replication_stream`]: a [`NetworkFault`] that drops every packet of one
//!   replica's replication connection, found in `/proc` (heal: the rules removed).
//! - [`SlowReplica`]: a replica pointed at its source through a [`LatencyProxy`] (heal:
//!   point it back, then close the proxy).
//! - [`DiskFault`]: a member's datadir filesystem (a loop filesystem, see
//!   `sandbox::loopfs`) frozen with `fsfreeze` (heal: thawed) or filled with `fallocate`
//!   (heal: freed, after a thaw).
//! - [`CustomFault`]: a heal action of the caller's own, e.g. "point the replica back at its
//!   source", so it is healed in order with the rest.
//!
//! A [`FaultSet`] holds any number of guards and heals them newest first, collecting every
//! failure instead of stopping at the first. Every fault records a [`FaultEvent`] for
//! reports.
//!
//! # Healing on interruption
//!
//! Every fault's heal action is also kept in a process-wide registry until it has healed.
//! [`install_signal_heal`] starts a thread that, on SIGINT, SIGTERM or SIGHUP, heals every
//! registered fault and then exits the process with `128 + signal`; [`heal_registered`] does
//! the same healing for a caller that handles signals itself. A heal that fails when its
//! guard is dropped stays registered, so both try it again.
//!
//! Heal actions are blocking functions. [`FaultHandle::heal`] runs one on tokio's blocking
//! pool, so a scenario's load keeps running while, say, a killed member starts again; the
//! guards' `Drop` runs it in place. Actions that need async code (SQL, starting a server)
//! run it on a runtime of their own in a thread of their own, so they work from any context.
//!
//! # Safety
//!
//! Nothing here sends traffic off this machine: every address is checked to be in
//! 127.0.0.0/8, firewall rules match only the `lo` interface and 127.0.0.0/8, and the proxy
//! listens and connects on loopback only.

mod disk;
mod network;
mod process;
mod proxy;
mod replication;
mod slow;
mod stall;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use model::InstanceAddr;
use probe::ProbeError;
use sandbox::SandboxError;
use serde::Serialize;

pub use disk::{member_loopfs, DiskFault, DiskSpec};
pub use network::{
    loopback_addr, may_change_firewall, sweep, NetworkFault, NetworkSpec, SweepReport, CHAIN_PREFIX,
};
pub use process::{ProcessFault, ProcessSpec};
pub use proxy::{LatencyProxy, ProxyControl, ProxyFaults, ProxyOptions, ProxyStats};
pub use replication::{ReplicationFault, ReplicationSpec, BREAK_SCHEMA, ERRANT_SCHEMA};
pub use slow::SlowReplica;
pub use stall::{replication_connections, stall_replication_stream};

/// Why a fault could not be injected or healed. Every message says what to do or what was
/// refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// An address outside 127.0.0.0/8 (or not IPv4) was given.
    #[error(
        "refusing {addr}: faults act only on IPv4 loopback addresses (127.0.0.0/8), so no \
         traffic can leave this machine"
    )]
    NotLoopback {
        /// The address as given.
        addr: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The fault cannot be injected in the current state, e.g. a SQL thread that is not
    /// running.
    #[error("{0}")]
    Precondition(String),
    /// Network faults need root or `CAP_NET_ADMIN`, which this process lacks (the dbfleet
    /// service runs unprivileged).
    #[error(
        "network faults change iptables rules, which needs root or CAP_NET_ADMIN, and this \
         process (uid {uid}) has neither: run this DRT from a root shell (the dbfleet service \
         runs unprivileged and keeps it so)"
    )]
    NeedsNetAdmin {
        /// The effective user id.
        uid: u32,
    },
    /// An iptables command failed.
    #[error("iptables {args}: {detail}")]
    Iptables {
        /// The arguments given.
        args: String,
        /// Its standard error, or why it could not run.
        detail: String,
    },
    /// A sandbox command failed.
    #[error("sandbox member {member}: {error}")]
    Sandbox {
        /// The member.
        member: String,
        /// The sandbox's error.
        #[source]
        error: SandboxError,
    },
    /// The member has no running server.
    #[error("sandbox member {member} is not running")]
    NotRunning {
        /// The member.
        member: String,
    },
    /// A statement to a server failed.
    #[error("{step} on {addr}: {error}")]
    Sql {
        /// What was being done.
        step: &'static str,
        /// The server.
        addr: InstanceAddr,
        /// The typed failure.
        #[source]
        error: ProbeError,
    },
    /// A system call or socket failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        error: std::io::Error,
    },
    /// A heal action panicked; the fault stays registered.
    #[error("healing panicked: {0}")]
    Panicked(String),
    /// A [`CustomFault`]'s heal action failed.
    #[error("{0}")]
    Custom(String),
}

impl FaultError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |error| Self::Io { what, error }
    }

    pub(crate) fn sql(step: &'static str, addr: &InstanceAddr) -> impl FnOnce(ProbeError) -> Self {
        let addr = addr.clone();
        move |error| Self::Sql { step, addr, error }
    }
}

/// One fault that failed to heal.
#[derive(Debug)]
pub struct HealFailure {
    /// The fault's description.
    pub description: String,
    /// Why it failed.
    pub error: FaultError,
}

/// Every fault of a [`FaultSet`] that failed to heal, in the order they were tried.
#[derive(Debug, thiserror::Error)]
#[error("{} fault(s) did not heal: {}", .0.len(), summary(.0))]
pub struct HealErrors(pub Vec<HealFailure>);

fn summary(failures: &[HealFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.description, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What kind of fault an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A member was SIGKILLed.
    Kill,
    /// A member was SIGSTOPped.
    Pause,
    /// Every packet to and from a port is dropped.
    Partition,
    /// One group id's packets to a port are dropped.
    CutFrom,
    /// A latency proxy ran.
    LatencyProxy,
    /// A replica's SQL thread was stopped.
    StopSqlThread,
    /// A write was made on a replica with the binlog on.
    ErrantWrite,
    /// A replica replicated through a latency proxy.
    SlowReplica,
    /// A replica's `MASTER_DELAY` was set.
    Delay,
    /// A replica's SQL thread was broken by an errant write.
    BreakSql,
    /// Every packet of one TCP connection is dropped (a replica's replication stream).
    Stall,
    /// A member's datadir filesystem was frozen (`fsfreeze`).
    DiskStall,
    /// A member's datadir filesystem was filled to ENOSPC.
    DiskFill,
    /// A caller's own fault.
    Custom,
}

/// A fault's line in a scenario's timeline. Times are milliseconds since the Unix epoch, as
/// in [`crate::load`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultEvent {
    /// Unique in this process, in injection order.
    pub id: u64,
    /// What kind of fault.
    pub kind: FaultKind,
    /// What was done, e.g. "pause m1 (pid 4242)".
    pub description: String,
    /// When the fault took effect.
    pub injected_ms: u64,
    /// When it was healed; `None` while it holds.
    pub healed_ms: Option<u64>,
    /// What healing found or left, e.g. "errant GTID 0-2-7 remains".
    pub note: Option<String>,
    /// The last heal failure, while the fault still holds.
    pub heal_error: Option<String>,
}

/// Milliseconds since the Unix epoch: the wall clock read once, advanced by the monotonic
/// clock, so that a clock step cannot reorder a timeline.
pub fn now_ms() -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (at, ms) = ANCHOR.get_or_init(|| {
        let ms = model::clock::now_ms();
        (Instant::now(), ms)
    });
    ms + at.elapsed().as_millis() as u64
}

/// A heal action: returns an optional note for the timeline. It may be called again after
/// it failed, so it must be idempotent.
pub(crate) type HealFn = Box<dyn FnMut() -> Result<Option<String>, FaultError> + Send>;

struct Entry {
    event: Mutex<FaultEvent>,
    /// `None` once healed. Held while the action runs, so the signal hook waits for a heal in
    /// progress instead of running it twice at once.
    heal: Mutex<Option<HealFn>>,
}

/// Faults not yet healed, in injection order.
static REGISTRY: Mutex<Vec<Arc<Entry>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Lock a mutex even when a panicking thread poisoned it: healing must go on during panics.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared handle of one fault: its timeline event and its heal action. Cloning it is
/// cheap; every clone heals the same fault, and healing twice does nothing the second time.
#[derive(Clone)]
pub struct FaultHandle {
    entry: Arc<Entry>,
}

impl std::fmt::Debug for FaultHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultHandle")
            .field("event", &self.event())
            .finish()
    }
}

impl FaultHandle {
    /// Register a heal action before the fault is injected, so an interruption in the middle
    /// of injecting still heals what was done. [`Self::mark_injected`] sets the time.
    pub(crate) fn register(kind: FaultKind, description: String, heal: HealFn) -> Self {
        let entry = Arc::new(Entry {
            event: Mutex::new(FaultEvent {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                kind,
                description,
                injected_ms: now_ms(),
                healed_ms: None,
                note: None,
                heal_error: None,
            }),
            heal: Mutex::new(Some(heal)),
        });
        lock(&REGISTRY).push(entry.clone());
        Self { entry }
    }

    /// Record that the fault now holds.
    pub(crate) fn mark_injected(&self) {
        lock(&self.entry.event).injected_ms = now_ms();
    }

    /// Set the injection time to a time taken before the fault was registered.
    pub(crate) fn set_injected_ms(&self, ms: u64) {
        lock(&self.entry.event).injected_ms = ms;
    }

    /// The fault's timeline event.
    pub fn event(&self) -> FaultEvent {
        lock(&self.entry.event).clone()
    }

    /// Whether the fault has been healed.
    pub fn is_healed(&self) -> bool {
        lock(&self.entry.heal).is_none()
    }

    /// Heal the fault in this thread, blocking until done. Healing a healed fault does
    /// nothing. On failure the fault stays registered and may be healed again.
    pub fn heal_blocking(&self) -> Result<(), FaultError> {
        let mut slot = lock(&self.entry.heal);
        let Some(action) = slot.as_mut() else {
            return Ok(());
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(action))
            .unwrap_or_else(|p| Err(FaultError::Panicked(panic_text(&*p))));
        match result {
            Ok(note) => {
                *slot = None;
                drop(slot);
                lock(&REGISTRY).retain(|e| !Arc::ptr_eq(e, &self.entry));
                let mut ev = lock(&self.entry.event);
                ev.healed_ms = Some(now_ms());
                ev.note = note;
                ev.heal_error = None;
                Ok(())
            }
            Err(e) => {
                lock(&self.entry.event).heal_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Heal the fault on tokio's blocking pool, so the caller's runtime keeps running.
    /// Needs a tokio runtime.
    pub async fn heal(&self) -> Result<(), FaultError> {
        let h = self.clone();
        tokio::task::spawn_blocking(move || h.heal_blocking())
            .await
            .unwrap_or_else(|e| Err(FaultError::Panicked(e.to_string())))
    }

    /// Heal on drop: a failure is logged and the fault stays registered.
    pub(crate) fn heal_on_drop(&self) {
        if let Err(e) = self.heal_blocking() {
            let ev = self.event();
            tracing::error!(fault = %ev.description, error = %e, "fault not healed on drop; it stays registered for heal_registered and the signal hook");
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

/// A guard of one injected fault. Every guard heals its fault on drop.
pub trait Fault: Send + Sync {
    /// The fault's handle.
    fn handle(&self) -> &FaultHandle;

    /// The fault's timeline event.
    fn event(&self) -> FaultEvent {
        self.handle().event()
    }
}

macro_rules! guard_methods {
    ($ty:ty) => {
        impl $ty {
            /// Heal the fault on tokio's blocking pool; idempotent. Needs a tokio runtime.
            pub async fn heal(&self) -> Result<(), $crate::faults::FaultError> {
                self.handle.heal().await
            }

            /// Heal the fault in this thread; idempotent.
            pub fn heal_blocking(&self) -> Result<(), $crate::faults::FaultError> {
                self.handle.heal_blocking()
            }

            /// The fault's timeline event.
            pub fn event(&self) -> $crate::faults::FaultEvent {
                self.handle.event()
            }

            /// Whether the fault has been healed.
            pub fn is_healed(&self) -> bool {
                self.handle.is_healed()
            }
        }

        impl $crate::faults::Fault for $ty {
            fn handle(&self) -> &$crate::faults::FaultHandle {
                &self.handle
            }
        }

        impl Drop for $ty {
            fn drop(&mut self) {
                self.handle.heal_on_drop();
            }
        }
    };
}
pub(crate) use guard_methods;

/// A heal action of the caller's own, e.g. pointing a replica back at its source after a
/// scenario pointed it through a proxy, so that it heals in order with the other faults and
/// on interruption. The action runs in a plain thread; it must be idempotent and bounded in
/// time.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct CustomFault {
    handle: FaultHandle,
}

impl CustomFault {
    /// Register `heal` under `description`. The fault itself is whatever the caller did.
    pub fn new<F>(description: impl Into<String>, mut heal: F) -> Self
    where
        F: FnMut() -> Result<(), String> + Send + 'static,
    {
        let handle = FaultHandle::register(
            FaultKind::Custom,
            description.into(),
            Box::new(move || heal().map(|()| None).map_err(FaultError::Custom)),
        );
        Self { handle }
    }
}

guard_methods!(CustomFault);

/// Guards healed together, newest first, on [`FaultSet::heal_all`] or on drop.
#[derive(Default)]
pub struct FaultSet {
    faults: Vec<Box<dyn Fault>>,
}

impl std::fmt::Debug for FaultSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.events()).finish()
    }
}

impl FaultSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hold `fault` until the set heals. Returns its handle, for its event or an early heal.
    pub fn push<F: Fault + 'static>(&mut self, fault: F) -> FaultHandle {
        let handle = fault.handle().clone();
        self.faults.push(Box::new(fault));
        handle
    }

    /// How many faults the set holds, healed or not.
    pub fn len(&self) -> usize {
        self.faults.len()
    }

    /// Whether the set holds no fault.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Every fault's event, in injection order, healed ones included.
    pub fn events(&self) -> Vec<FaultEvent> {
        self.faults.iter().map(|f| f.event()).collect()
    }

    /// Heal every fault, newest first, on tokio's blocking pool. Every fault is tried; the
    /// failures are returned together. Healed faults stay in the set for their events.
    pub async fn heal_all(&self) -> Result<(), HealErrors> {
        let mut failures = Vec::new();
        for f in self.faults.iter().rev() {
            if let Err(error) = f.handle().heal().await {
                failures.push(HealFailure {
                    description: f.event().description,
                    error,
                });
            }
        }
        into_result(failures)
    }

    /// [`Self::heal_all`] in this thread.
    pub fn heal_all_blocking(&self) -> Result<(), HealErrors> {
        let mut failures = Vec::new();
        for f in self.faults.iter().rev() {
            if let Err(error) = f.handle().heal_blocking() {
                failures.push(HealFailure {
                    description: f.event().description,
                    error,
                });
            }
        }
        into_result(failures)
    }
}

impl Drop for FaultSet {
    fn drop(&mut self) {
        if let Err(e) = self.heal_all_blocking() {
            tracing::error!(error = %e, "faults not healed on drop; they stay registered for heal_registered and the signal hook");
        }
        // The guards then drop in order; each is healed already, or tries once more.
    }
}

fn into_result(failures: Vec<HealFailure>) -> Result<(), HealErrors> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(HealErrors(failures))
    }
}

/// Heal every fault of this process not yet healed, newest first, and return the failures.
/// For a caller that handles SIGINT itself; [`install_signal_heal`] calls it too.
pub fn heal_registered() -> Vec<HealFailure> {
    let entries: Vec<Arc<Entry>> = lock(&REGISTRY).clone();
    let mut failures = Vec::new();
    for entry in entries.into_iter().rev() {
        let h = FaultHandle { entry };
        if let Err(error) = h.heal_blocking() {
            failures.push(HealFailure {
                description: h.event().description,
                error,
            });
        }
    }
    failures
}

/// How many faults of this process are not yet healed.
pub fn registered_count() -> usize {
    lock(&REGISTRY).len()
}

/// On SIGINT, SIGTERM or SIGHUP, heal every registered fault, then exit the process with
/// status `128 + signal`. Call it once at start-up, before injecting; later calls do
/// nothing. The signals no longer stop the process by themselves once this is installed, so
/// a program with its own graceful shutdown should call [`heal_registered`] from it instead.
///
/// The exit runs no destructors: anything else the process must undo on the way out (stop
/// its sandbox, point a replica back) belongs in a [`CustomFault`]. A fault whose heal is in
/// progress in another thread when the signal comes is waited for, not healed twice.
pub fn install_signal_heal() -> Result<(), FaultError> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = lock(&INSTALLED);
    if *installed {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FaultError::io("build the signal runtime"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
    std::thread::Builder::new()
        .name("drt-signal-heal".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let streams = (|| {
                    Ok::<_, std::io::Error>((
                        signal(SignalKind::interrupt())?,
                        signal(SignalKind::terminate())?,
                        signal(SignalKind::hangup())?,
                    ))
                })();
                let (mut int, mut term, mut hup) = match streams {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let (name, signo) = tokio::select! {
                    _ = int.recv() => ("SIGINT", 2),
                    _ = term.recv() => ("SIGTERM", 15),
                    _ = hup.recv() => ("SIGHUP", 1),
                };
                let count = registered_count();
                eprintln!("{name}: healing {count} injected fault(s) before exiting");
                let failures = heal_registered();
                for f in &failures {
                    eprintln!("NOT HEALED: {}: {}", f.description, f.error);
                }
                std::process::exit(128 + signo);
            });
        })
        .map_err(FaultError::io("spawn the signal thread"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {
            *installed = true;
            Ok(())
        }
        Ok(Err(e)) => Err(FaultError::Io {
            what: "listen for signals".into(),
            error: e,
        }),
        Err(_) => Err(FaultError::Invalid(
            "the signal thread ended before listening".into(),
        )),
    }
}

/// Run a future to completion on a runtime of its own, in a thread of its own, so that a
/// heal action can run async code from any context: inside a runtime, in `Drop`, or in the
/// signal thread.
pub(crate) fn block_on_fresh<F>(fut: F) -> Result<F::Output, FaultError>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(FaultError::io("build a runtime"))?;
            Ok(rt.block_on(fut))
        })
        .join()
        .unwrap_or_else(|p| Err(FaultError::Panicked(panic_text(&*p))))
    })
}
