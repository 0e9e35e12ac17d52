//! A fault-injecting TCP proxy on loopback: latency and jitter per chunk in each direction,
//! and connection drops, changeable while it runs. The kernel has no `netem`; this is how a
//! slow link to a replica is made (the scenario points the replica at the proxy).
//!
//! The proxy runs on a thread and runtime of its own, so healing it (which stops it) closes
//! the listener and every connection before `heal` returns, from any context.
//!
//! Latency is a one-way delay: each chunk read is written `latency + jitter` after it
//! arrived, and chunks keep their order (a chunk is never written before the one read
//! before it), so a stream is delayed, not slowed to one chunk per delay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::network::check_loopback;
use super::{guard_methods, lock, FaultError, FaultHandle, FaultKind};

/// How long the proxy waits to connect to its target before closing the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes forwarded as one chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction before reading pauses.
const IN_FLIGHT: usize = 256;

/// The faults a proxy applies. [`ProxyFaults::NONE`] forwards as fast as it can.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProxyFaults {
    /// Added to every chunk from the client to the target.
    pub to_target: Duration,
    /// Added to every chunk from the target to the client.
    pub to_client: Duration,
    /// Up to this much more per chunk, uniformly at random, in both directions.
    pub jitter: Duration,
    /// The probability, from 0 to 1, that a chunk closes its connection (both ways) instead
    /// of being forwarded.
    pub drop_probability: f64,
}

impl ProxyFaults {
    /// No fault: the healed state.
    pub const NONE: Self = Self {
        to_target: Duration::ZERO,
        to_client: Duration::ZERO,
        jitter: Duration::ZERO,
        drop_probability: 0.0,
    };

    /// The same latency each way, no jitter, no drops.
    pub fn latency(each_way: Duration) -> Self {
        Self {
            to_target: each_way,
            to_client: each_way,
            ..Self::NONE
        }
    }

    fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.drop_probability) {
            return Err(FaultError::Invalid(format!(
                "drop probability {} is not between 0 and 1",
                self.drop_probability
            )));
        }
        Ok(())
    }
}

/// Where a proxy listens and forwards, and how it starts.
#[derive(Clone, Copy, Debug)]
pub struct ProxyOptions {
    /// Where it listens: a 127.0.0.0/8 address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where it forwards: a 127.0.0.0/8 address.
    pub target: SocketAddr,
    /// The faults it starts with.
    pub faults: ProxyFaults,
    /// The seed of jitter and drops: connection `n` of a proxy draws from `seed` and `n`, so
    /// a run can be repeated.
    pub seed: u64,
}

impl ProxyOptions {
    /// Forward `listen` to `target` with no fault and a fixed seed.
    pub fn new(listen: SocketAddr, target: SocketAddr) -> Self {
        Self {
            listen,
            target,
            faults: ProxyFaults::NONE,
            seed: 0x5eed,
        }
    }
}

/// What a proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections the proxy closed on purpose (`drop_probability`).
    pub dropped: u64,
    /// Bytes written to the target.
    pub bytes_to_target: u64,
    /// Bytes written to clients.
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    active: AtomicU64,
    dropped: AtomicU64,
    bytes_to_target: AtomicU64,
    bytes_to_client: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        ProxyStats {
            connections: self.connections.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bytes_to_target: self.bytes_to_target.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

/// Changes a running proxy's faults and reads its counters. Cheap to clone; it outlives the
/// proxy harmlessly.
#[derive(Clone, Debug)]
pub struct ProxyControl {
    addr: SocketAddr,
    target: SocketAddr,
    faults: Arc<watch::Sender<ProxyFaults>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl ProxyControl {
    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where it forwards.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Apply new faults to every chunk read from now on; chunks in flight keep their delay.
    pub fn set_faults(&self, faults: ProxyFaults) -> Result<(), FaultError> {
        faults.validate()?;
        self.faults.send_replace(faults);
        Ok(())
    }

    /// Forward with no fault; the proxy keeps running.
    pub fn clear(&self) {
        self.faults.send_replace(ProxyFaults::NONE);
    }

    /// The faults applied now.
    pub fn faults(&self) -> ProxyFaults {
        *self.faults.borrow()
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        self.counters.snapshot()
    }
}

/// A running proxy. Healing it (or dropping it) closes the listener and every connection.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct LatencyProxy {
    handle: FaultHandle,
    control: ProxyControl,
}

impl LatencyProxy {
    /// Listen and start forwarding. Both addresses must be in 127.0.0.0/8.
    pub fn start(opts: ProxyOptions) -> Result<Self, FaultError> {
        check_loopback(opts.listen)?;
        check_loopback(opts.target)?;
        opts.faults.validate()?;
        let listener = std::net::TcpListener::bind(opts.listen)
            .map_err(FaultError::io(format!("listen on {}", opts.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(FaultError::io("make the listener non-blocking"))?;
        let addr = listener
            .local_addr()
            .map_err(FaultError::io("read the listen address"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FaultError::io("build the proxy runtime"))?;
        let (faults_tx, faults_rx) = watch::channel(opts.faults);
        let control = ProxyControl {
            addr,
            target: opts.target,
            faults: Arc::new(faults_tx),
            counters: Arc::default(),
        };
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            target: opts.target,
            seed: opts.seed,
            faults: faults_rx,
            counters: control.counters.clone(),
            cancel: cancel.clone(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("drt-proxy-{}", addr.port()))
            .spawn(move || {
                rt.block_on(accept_loop(listener, shared));
                // Dropping the runtime drops every connection task and closes its sockets.
                drop(rt);
            })
            .map_err(FaultError::io("spawn the proxy thread"))?;
        let thread = Mutex::new(Some(thread));
        let counters = control.counters.clone();
        let handle = FaultHandle::register(
            FaultKind::LatencyProxy,
            format!("latency proxy {addr} -> {}", opts.target),
            Box::new(move || {
                cancel.cancel();
                if let Some(t) = lock(&thread).take() {
                    t.join()
                        .map_err(|_| FaultError::Panicked("the proxy thread panicked".into()))?;
                }
                let s = counters.snapshot();
                Ok(Some(format!(
                    "closed after {} connection(s), {} dropped on purpose, {} bytes to the \
                     target, {} to clients",
                    s.connections, s.dropped, s.bytes_to_target, s.bytes_to_client
                )))
            }),
        );
        Ok(Self { handle, control })
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.control.addr
    }

    /// The proxy's control, to change faults and read counters.
    pub fn control(&self) -> &ProxyControl {
        &self.control
    }

    /// Apply new faults; see [`ProxyControl::set_faults`].
    pub fn set_faults(&self, faults: ProxyFaults) -> Result<(), FaultError> {
        self.control.set_faults(faults)
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        self.control.stats()
    }
}

guard_methods!(LatencyProxy);

struct Shared {
    target: SocketAddr,
    seed: u64,
    faults: watch::Receiver<ProxyFaults>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "latency proxy cannot use its listener");
            return;
        }
    };
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((client, _)) => {
                    n += 1;
                    tokio::spawn(serve(client, shared.clone(), n));
                }
                Err(e) => {
                    // Out of descriptors, most likely: wait, do not spin.
                    tracing::warn!(error = %e, "latency proxy accept");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// Why a direction of a connection ended early.
enum Cut {
    /// The proxy dropped the connection on purpose.
    Dropped,
    /// A socket failed.
    Broken,
}

#[derive(Clone, Copy)]
enum Direction {
    ToTarget,
    ToClient,
}

async fn serve(client: TcpStream, shared: Arc<Shared>, n: u64) {
    let c = &shared.counters;
    c.connections.fetch_add(1, Ordering::Relaxed);
    c.active.fetch_add(1, Ordering::Relaxed);
    struct Active(Arc<Counters>);
    impl Drop for Active {
        fn drop(&mut self) {
            self.0.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _active = Active(c.clone());

    let server = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target)) => match r {
            Ok(Ok(s)) => s,
            _ => return,
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let seed = splitmix(shared.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    // Counted when the drop is decided, before the sockets close, so a client that sees the
    // close already sees the count; once per connection, whichever direction drops first.
    let dropped = AtomicBool::new(false);
    let up = pipe(cr, sw, Direction::ToTarget, &shared, seed, &dropped);
    let down = pipe(
        sr,
        cw,
        Direction::ToClient,
        &shared,
        splitmix(seed),
        &dropped,
    );
    tokio::select! {
        _ = shared.cancel.cancelled() => {}
        _ = async { tokio::try_join!(up, down) } => {}
    }
}

/// Forward one direction: a reader stamps each chunk with the time it is due, a writer
/// writes it then. EOF is passed on as a half close.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    dir: Direction,
    shared: &Shared,
    seed: u64,
    dropped: &AtomicBool,
) -> Result<(), Cut> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let mut faults = shared.faults.clone();
    let mut rng = seed;
    let reader = async move {
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match from.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(_) => return Err(Cut::Broken),
            };
            buf.truncate(n);
            let f = *faults.borrow_and_update();
            if f.drop_probability > 0.0 && unit(&mut rng) < f.drop_probability {
                if !dropped.swap(true, Ordering::Relaxed) {
                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return Err(Cut::Dropped);
            }
            let mut delay = match dir {
                Direction::ToTarget => f.to_target,
                Direction::ToClient => f.to_client,
            };
            if !f.jitter.is_zero() {
                delay += f.jitter.mul_f64(unit(&mut rng));
            }
            let due = (Instant::now() + delay).max(last_due);
            last_due = due;
            if tx.send((due, buf)).await.is_err() {
                return Ok(());
            }
        }
    };
    let bytes = match dir {
        Direction::ToTarget => &shared.counters.bytes_to_target,
        Direction::ToClient => &shared.counters.bytes_to_client,
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            // A timer rounds up to the next millisecond even when it is due already.
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            to.write_all(&buf).await.map_err(|_| Cut::Broken)?;
            bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}

/// SplitMix64: a small, good-enough generator for jitter and drops (not for secrets).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1), advancing `state`.
fn unit(state: &mut u64) -> f64 {
    *state = splitmix(*state);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}
