//! A real `dbfleet serve` process for tests, stopped on drop (SIGTERM, then SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestSandbox;

/// A running daemon and its API address.
pub struct Daemon {
    child: Option<Child>,
    pub api: String,
    pub config: PathBuf,
    pub log: PathBuf,
    pub data_dir: PathBuf,
}

/// The probe interval tests run the daemon with.
pub const INTERVAL_MS: u64 = 300;

/// Write a config for `sb`'s sandbox with the API on `api_port`, a fast probe interval and a
/// low lag threshold, and return its path. `edit` may change the text further.
pub fn test_config(sb: &TestSandbox, api_port: u16, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = sb.open().dir().to_path_buf();
    let text = std::fs::read_to_string(dir.join("dbfleet.toml")).expect("sandbox wrote a config");
    let text = text
        .replace("127.0.0.1:7070", &format!("127.0.0.1:{api_port}"))
        .replace(
            "interval = \"1s\"",
            &format!("interval = \"{INTERVAL_MS}ms\""),
        )
        .replace(
            "discovery_interval = \"10s\"",
            "discovery_interval = \"1s\"",
        )
        .replace("max_lag = \"10s\"", "max_lag = \"2s\"");
    let path = dir.join("test-dbfleet.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Add `line` to the config's `[cluster.failover]` table.
pub fn set_failover_key(cfg: &Path, line: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    assert!(text.contains("[cluster.failover]\n"), "{text}");
    let text = text.replace(
        "[cluster.failover]\n",
        &format!("[cluster.failover]\n{line}\n"),
    );
    std::fs::write(cfg, text).unwrap();
}

/// How to start a test daemon.
#[derive(Clone, Debug, Default)]
pub struct StartOpts {
    /// Extra environment variables (e.g. `DBFLEET_FAILPOINTS`).
    pub env: Vec<(String, String)>,
    /// Run the daemon with this group id (`setpriv --regid`), so firewall rules can match
    /// its traffic alone with `-m owner --gid-owner`.
    pub gid: Option<u32>,
    /// Append to the log instead of truncating it (a restart).
    pub append_log: bool,
    /// Do not wait for analysis rounds (a daemon that may crash at once).
    pub no_wait: bool,
}

impl Daemon {
    /// Start `dbfleet serve --config config` and wait until `/healthz` answers and one
    /// analysis round has run.
    pub async fn start(config: &Path, api_port: u16) -> Self {
        Self::start_with(config, api_port, StartOpts::default()).await
    }

    /// [`Daemon::start`] with options.
    pub async fn start_with(config: &Path, api_port: u16, opts: StartOpts) -> Self {
        let log = config.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(opts.append_log)
            .write(true)
            .truncate(!opts.append_log)
            .open(&log)
            .unwrap();
        let mut cmd = match opts.gid {
            Some(gid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_dbfleet"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_dbfleet")),
        };
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("DBFLEET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start dbfleet serve");
        let text = std::fs::read_to_string(config).unwrap();
        let data_dir = text
            .lines()
            .find_map(|l| l.strip_prefix("data_dir = "))
            .map(|v| PathBuf::from(v.trim().trim_matches('"')))
            .unwrap();
        let d = Self {
            child: Some(child),
            api: format!("http://127.0.0.1:{api_port}"),
            config: config.to_path_buf(),
            log,
            data_dir,
        };
        if opts.no_wait {
            return d;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = d.try_get("/api/v1/status").await {
                if v["stats"]["rounds"].as_u64().unwrap_or(0) >= 2 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up:\n{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn try_get(&self, path: &str) -> Result<Value, String> {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.api))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!(
                "{} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        resp.json().await.map_err(|e| e.to_string())
    }

    pub async fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Analysis rounds completed so far.
    pub async fn rounds(&self) -> u64 {
        self.get("/api/v1/status").await["stats"]["rounds"]
            .as_u64()
            .unwrap()
    }

    /// Open problems of `cluster` as (kind, instance) pairs.
    pub async fn problems(&self, cluster: &str) -> Vec<(String, String)> {
        let v = self
            .get(&format!("/api/v1/problems?cluster={cluster}"))
            .await;
        v.as_array()
            .unwrap_or_else(|| v["problems"].as_array().expect("a list of problems"))
            .iter()
            .map(|p| {
                (
                    p["kind"].as_str().unwrap().to_string(),
                    p["instance"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Wait until `cluster` has an open problem of `kind` on `instance` ("" for none) and
    /// return how many analysis rounds that took from `since_round`.
    pub async fn wait_problem(
        &self,
        cluster: &str,
        kind: &str,
        instance: &str,
        within: Duration,
    ) -> u64 {
        let since = self.rounds().await;
        let deadline = Instant::now() + within;
        loop {
            let ps = self.problems(cluster).await;
            if ps.iter().any(|(k, i)| k == kind && i == instance) {
                return self.rounds().await - since;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} on {instance:?} after {within:?}; open problems: {ps:?}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `cluster` has no open problem of `kind` on `instance`.
    pub async fn wait_cleared(&self, cluster: &str, kind: &str, instance: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ps = self.problems(cluster).await;
            if !ps.iter().any(|(k, i)| k == kind && i == instance) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} on {instance:?} did not clear after {within:?}; open: {ps:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Wait up to `within` for the daemon to exit by itself (a failpoint abort); returns
    /// whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL the daemon, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// POST `body` to `path` with `token`; returns the status and the JSON answer.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.api))
            .bearer_auth(token)
            .json(&body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Operations, newest first.
    pub async fn operations(&self, cluster: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/operations?cluster={cluster}"))
            .await["operations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Wait until `cluster` has `n` operations and the newest is final; returns them.
    /// The open alert of `key` once it is firing (`GET /api/v1/alerts`).
    pub async fn wait_firing(&self, key: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.get("/api/v1/alerts").await;
            if let Some(a) = v["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key && a["state"] == "firing")
            {
                return a.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{key} does not fire: {v:#}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `key` is no longer among the open alerts.
    pub async fn wait_alert_gone(&self, key: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.get("/api/v1/alerts").await;
            if !v["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == key)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{key} still open: {v:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_operations(&self, cluster: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(v) = self
                .try_get(&format!("/api/v1/operations?cluster={cluster}"))
                .await
            {
                let ops = v["operations"].as_array().cloned().unwrap_or_default();
                let done = ops
                    .first()
                    .and_then(|o| o["state"].as_str())
                    .is_some_and(|s| s != "running" && s != "proposed");
                if ops.len() >= n && done {
                    return ops;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{n} finished operation(s) of {cluster} did not appear in {within:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM the daemon and wait for its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
