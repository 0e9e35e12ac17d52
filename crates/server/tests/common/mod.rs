//! A server over real TCP for the hostile-input tests: a SQLite store in a temporary
//! directory with one declared cluster, `main`, and raw HTTP/1.1 requests that a client
//! library would refuse to send.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::ApiTokens;
use model::{ClusterSpec, InstanceSpec, PromotionRule};
use serde_json::Value;
use server::{AppState, Auth, ServeOptions};
use store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "t0ken-for-hostile-tests";
/// How long any one raw exchange may take before the test fails.
pub const EXCHANGE_DEADLINE: Duration = Duration::from_secs(20);

pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<monitor::Stats>,
    pub store: Arc<dyn Store>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

pub fn spec() -> ClusterSpec {
    ClusterSpec {
        name: "main".into(),
        instances: vec![InstanceSpec {
            addr: "127.0.0.1:9".parse().unwrap(),
            promotion: PromotionRule::Neutral,
            site: None,
        }],
        expected_replicas: 0,
        semi_sync: false,
        max_lag: Duration::from_secs(10),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
        storage: Default::default(),
    }
}

impl Server {
    pub async fn start(opts: ServeOptions) -> Self {
        Self::start_with(opts, |s| s).await
    }

    /// A server whose state `edit` may change first.
    pub async fn start_with(opts: ServeOptions, edit: impl FnOnce(AppState) -> AppState) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        Self::start_on(store, dir, opts, edit).await
    }

    /// A server over `store` (seeded here with the cluster `main`).
    pub async fn start_on(
        store: Arc<dyn Store>,
        dir: tempfile::TempDir,
        opts: ServeOptions,
        edit: impl FnOnce(AppState) -> AppState,
    ) -> Self {
        store.upsert_cluster(&spec(), 1).await.unwrap();
        let stats = Arc::new(monitor::Stats::default());
        let state = edit(AppState {
            store: store.clone(),
            stats: stats.clone(),
            auth: Auth::new(ApiTokens::new([TOKEN.to_string()]), false),
            version: "9.9.9-test",
            engine: None,
            drt: Default::default(),
            alerts: None,
            answers: Default::default(),
            routing: Default::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve_with(listener, state, shutdown.clone(), opts));
        Self {
            addr,
            stats,
            store,
            shutdown,
            task,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(EXCHANGE_DEADLINE, self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .expect("serve returns Ok");
    }

    /// Send `request` as is on a new connection and read the answer to the connection's end.
    pub async fn raw(&self, request: &[u8]) -> Answer {
        let mut c = TcpStream::connect(self.addr).await.unwrap();
        exchange(&mut c, request).await
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The value of header `name` (lower case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Asserts the answer is a JSON error (`{"error": "..."}`) and returns its message.
    pub fn json_error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "a JSON error: {self:?}"
        );
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {self:?}"));
        let error = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an error field: {v}"));
        assert!(!error.is_empty(), "{v}");
        error.to_string()
    }
}

/// Write `request`, then read one response: its head, then a body of its content-length (or
/// to the connection's end).
pub async fn exchange(c: &mut TcpStream, request: &[u8]) -> Answer {
    tokio::time::timeout(EXCHANGE_DEADLINE, async {
        // The server may answer and close before it read everything (a head too large).
        let _ = c.write_all(request).await;
        read_answer(c).await
    })
    .await
    .expect("an answer in time")
}

/// Read one response off `c`.
pub async fn read_answer(c: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut chunk).await.unwrap_or(0);
        assert!(
            n > 0,
            "the connection closed before a whole response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    match answer
        .header("content-length")
        .map(|v| v.parse::<usize>().unwrap())
    {
        Some(len) => {
            while answer.body.len() < len {
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection closed inside a body");
                answer.body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            let _ = c.read_to_end(&mut answer.body).await;
        }
    }
    answer
}

/// A GET of `target` with extra raw header lines, closing the connection after.
pub fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nhost: x\r\n{headers}connection: close\r\n\r\n").into_bytes()
}

/// A POST of `body` to `target` with the test token.
pub fn post(target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// An engine over the server's store that leads, with the test cluster.
pub async fn engine(store: Arc<dyn Store>, node: &str) -> Arc<engine::Engine> {
    let probe = probe::ProbeOptions {
        connect_timeout: Duration::from_millis(200),
        query_timeout: Duration::from_millis(200),
    };
    let e = engine::Engine::new(
        store,
        engine::EngineOptions {
            node_id: node.into(),
            lease_ttl: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(10),
            probe,
        },
        vec![engine::ClusterSetup {
            haproxy: None,
            spec: spec(),
            admin: probe::Credentials::new("root", "not-a-real-password"),
            repl: None,
            failover: Default::default(),
        }],
    );
    assert!(e.campaign_once().await, "the only node leads");
    e
}
