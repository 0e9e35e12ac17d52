//! Test support: a real single-member etcd on loopback, killed when its guard drops (even when
//! the test panics). For this crate's tests and for other crates' (the daemon's) tests.
//!
//! Needs the `etcd` binary on `PATH` (Debian: `apt-get install etcd-server`). Each guard has
//! its own data directory and its own two ports, so tests run in parallel.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::EtcdOptions;

/// How long [`EtcdGuard::start`] waits for etcd to answer (it takes about 1 s, more on a
/// loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd for a test: one member on `127.0.0.1`, its data in a temporary directory.
///
/// It runs with `--max-txn-ops` [`EtcdGuard::MAX_TXN_OPS`] (use [`EtcdGuard::options`] to
/// match), and with a 50 ms heartbeat and a 500 ms election timeout, so that etcd's minimum
/// lease TTL is 1 s (with etcd's defaults it is 2 s) and lease tests run quickly.
///
/// On drop the process is killed and waited for, and the directory removed; when the test
/// panicked, the directory is kept and its path printed, with the tail of etcd's log.
#[derive(Debug)]
pub struct EtcdGuard {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    client_port: u16,
}

impl EtcdGuard {
    /// The `--max-txn-ops` the test etcd runs with.
    pub const MAX_TXN_OPS: usize = 1024;

    /// Start etcd with its client URL on `client_port` and its peer URL on `peer_port`, and
    /// wait until it answers. Panics, with etcd's log, when it cannot.
    pub fn start(client_port: u16, peer_port: u16) -> Self {
        match Self::try_start(client_port, peer_port) {
            Ok(g) => g,
            Err(e) => panic!("cannot start a test etcd: {e}"),
        }
    }

    /// [`EtcdGuard::start`], returning the reason instead of panicking.
    pub fn try_start(client_port: u16, peer_port: u16) -> Result<Self, String> {
        for port in [client_port, peer_port] {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
                format!("port {port} is not free ({e}): an etcd left over from an earlier run?")
            })?;
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("dbfleet-etcd-{client_port}-"))
            .tempdir()
            .map_err(|e| format!("create a temporary directory: {e}"))?;
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("create etcd.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("open etcd.log: {e}"))?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=t={peer_url}"))
            .arg(format!("--max-txn-ops={}", Self::MAX_TXN_OPS))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("run etcd (is etcd-server installed?): {e}"))?;
        let mut guard = Self {
            child: Some(child),
            dir: Some(dir),
            client_port,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if healthy(client_port) {
                return Ok(guard);
            }
            if let Some(child) = guard.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "etcd exited with {status} before it answered; its log ends:\n{}",
                        guard.log_tail()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer on {client_url} within {} s; its log ends:\n{}",
                    START_TIMEOUT.as_secs(),
                    guard.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:32379`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// [`EtcdOptions`] that match this etcd (its `--max-txn-ops`).
    pub fn options() -> EtcdOptions {
        EtcdOptions {
            max_txn_ops: Self::MAX_TXN_OPS,
            ..EtcdOptions::default()
        }
    }

    /// The temporary directory: `data/` and `etcd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Kill etcd now (SIGKILL) and wait for it, to test what a client does without it. The
    /// directory stays until the guard drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path: PathBuf = dir.keep();
                eprintln!(
                    "test etcd on port {} killed; its directory is kept at {}; its log ends:\n{}",
                    self.client_port,
                    path.display(),
                    tail_of(&path.join("etcd.log"))
                );
            }
        }
    }
}

fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`.
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.contains("\"health\":\"true\"")
}
