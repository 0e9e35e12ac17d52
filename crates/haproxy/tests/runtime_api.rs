//! The Runtime API client against a real HAProxy that the test starts on loopback (ports
//! 27500..27509): the commands a failover's push sends, what HAProxy then does with the
//! traffic, and the errors an SRE meets (no socket, a wrong name, a socket that never
//! answers).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haproxy::{
    fence_writer, open_writer, server_name, writer_backend, AdminState, HaproxyError, RuntimeApi,
    Socket,
};
use model::InstanceAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FRONT: u16 = 27500;
const STATS_TCP: u16 = 27501;
const OLD: u16 = 27502;
const NEW: u16 = 27503;
const SILENT: u16 = 27504;

/// A haproxy process, killed (by PID) on drop.
struct Haproxy {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_bin() -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = Path::new(d).join("haproxy");
        if p.exists() {
            return p;
        }
    }
    panic!("haproxy is not installed: scripts/install-deps.sh installs it")
}

/// HAProxy with the writer backend of cluster `c1`, both servers up. No health checks: the
/// test decides the states.
fn start() -> Haproxy {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let cfg = format!(
        "global\n  stats socket {sock} mode 600 level admin\n  stats socket ipv4@127.0.0.1:{STATS_TCP} level admin\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
         frontend c1_writer_front\n  bind 127.0.0.1:{FRONT}\n  default_backend c1_writer\n\
         backend c1_writer\n  server 127.0.0.1:{OLD} 127.0.0.1:{OLD}\n  server 127.0.0.1:{NEW} 127.0.0.1:{NEW}\n",
        sock = sock.display()
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new(haproxy_bin())
        .arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let h = Haproxy {
        child,
        sock,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.sock.exists() || std::net::TcpStream::connect(("127.0.0.1", FRONT)).is_err() {
        assert!(Instant::now() < deadline, "haproxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    h
}

/// A backend server that answers each connection with its name, then keeps it open.
async fn backend(port: u16, name: &'static str) -> tokio::task::JoinHandle<()> {
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let mut buf = [0u8; 64];
                // Held open until the peer (HAProxy) closes it.
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    })
}

/// Connect through HAProxy's front and read which backend answered.
async fn through_front() -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", FRONT)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no answer through haproxy")
        .unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).to_string())
}

fn addr(port: u16) -> InstanceAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test]
async fn a_push_moves_the_writer_and_cuts_the_old_primarys_sessions() {
    let h = start();
    let _old = backend(OLD, "old").await;
    let _new = backend(NEW, "new").await;
    let api = RuntimeApi::new(Socket::Unix(h.sock.clone()), RuntimeApi::TIMEOUT);

    // Before the failover: the new primary is a replica, out of the writer backend.
    api.set_state("c1_writer", &server_name(&addr(NEW)), AdminState::Maint)
        .await
        .unwrap();
    let (mut client, who) = through_front().await;
    assert_eq!(who, "old");
    let before = api.servers(&writer_backend("c1")).await.unwrap();
    let find = |s: &[haproxy::ServerStatus], a: &InstanceAddr| {
        s.iter()
            .find(|x| x.name == server_name(a))
            .cloned()
            .unwrap()
    };
    assert!(find(&before, &addr(OLD)).takes_traffic());
    assert!(find(&before, &addr(NEW)).in_maint());

    // fence_old: the old primary leaves, and its client's session is cut at once.
    let fenced = fence_writer(&api, "c1", &addr(OLD)).await.unwrap();
    assert_eq!(fenced.done.len(), 2, "{fenced:?}");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("the old primary's session was not cut")
        .unwrap_or(0);
    assert_eq!(n, 0, "the session to the old primary still carries data");
    assert!(find(&api.servers("c1_writer").await.unwrap(), &addr(OLD)).in_maint());

    // open_writes: the new primary takes the next connection, with no health check.
    open_writer(&api, "c1", &addr(NEW)).await.unwrap();
    let now = api.servers("c1_writer").await.unwrap();
    assert!(find(&now, &addr(NEW)).takes_traffic(), "{now:?}");
    let (_c, who) = through_front().await;
    assert_eq!(who, "new");

    // The same over the TCP socket.
    let tcp = RuntimeApi::new(
        format!("127.0.0.1:{STATS_TCP}").parse().unwrap(),
        RuntimeApi::TIMEOUT,
    );
    tcp.set_state("c1_writer", &server_name(&addr(OLD)), AdminState::Ready)
        .await
        .unwrap();
    assert!(!find(&tcp.servers("c1_writer").await.unwrap(), &addr(OLD)).in_maint());
}

#[tokio::test]
async fn errors_name_what_went_wrong() {
    let h = start();
    let api = RuntimeApi::new(Socket::Unix(h.sock.clone()), RuntimeApi::TIMEOUT);

    // An unknown server or backend: HAProxy's own words.
    let e = fence_writer(&api, "c2", &addr(OLD)).await.unwrap_err();
    match &e {
        HaproxyError::Refused { command, answer } => {
            assert!(command.contains("c2_writer"), "{e}");
            assert!(!answer.is_empty(), "{e}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let e = api.servers("nope").await.unwrap_err();
    assert!(matches!(e, HaproxyError::Refused { .. }), "{e:?}");

    // A name that would smuggle a second command never reaches HAProxy.
    let e = api
        .set_state(
            "c1_writer",
            "x\nshutdown sessions server c1_writer/y",
            AdminState::Maint,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, HaproxyError::InvalidName(_)), "{e:?}");

    // No socket there.
    let gone = RuntimeApi::new(
        Socket::Unix(h.sock.with_file_name("nothing.sock")),
        RuntimeApi::TIMEOUT,
    );
    let e = gone.servers("c1_writer").await.unwrap_err();
    assert!(matches!(e, HaproxyError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("nothing.sock"), "{e}");

    // A socket that accepts and never answers: a timeout, not a hang.
    let l = TcpListener::bind(("127.0.0.1", SILENT)).await.unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let silent = RuntimeApi::new(
        format!("127.0.0.1:{SILENT}").parse().unwrap(),
        Duration::from_millis(300),
    );
    let e = silent.servers("c1_writer").await.unwrap_err();
    assert!(matches!(e, HaproxyError::Timeout { .. }), "{e:?}");
}
