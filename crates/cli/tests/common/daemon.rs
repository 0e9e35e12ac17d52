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

impl Daemon {
    /// Start `dbfleet serve --config config` and wait until `/healthz` answers and one
    /// analysis round has run.
    pub async fn start(config: &Path, api_port: u16) -> Self {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_dbfleet"))
            .args(["serve", "--config"])
            .arg(config)
            .env("DBFLEET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start dbfleet serve");
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
