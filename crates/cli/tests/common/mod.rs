//! Shared helpers of the CLI's integration tests: run the real `dbfleet` binary against
//! real sandboxes, each test on its own ports and directory.

#![allow(dead_code)]

pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::Output;

use model::{InstanceAddr, Observation};
use probe::{Credentials, ProbeOptions, Session};
use sandbox::testing::SandboxGuard;
use sandbox::Sandbox;

/// Run `dbfleet` with `args` and return its output.
pub fn dbfleet(args: &[&str]) -> Output {
    dbfleet_env(args, &[])
}

/// Run `dbfleet` with extra environment variables.
pub fn dbfleet_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dbfleet"));
    cmd.args(args).env_remove("DBFLEET_SANDBOX_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run dbfleet")
}

/// Stdout as text, asserting success.
pub fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dbfleet failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A sandbox made through the CLI in a temporary directory; its servers are killed on drop.
pub struct TestSandbox {
    pub name: String,
    pub base_port: u16,
    _guard: SandboxGuard,
    root: tempfile::TempDir,
}

impl Drop for TestSandbox {
    /// A failed test keeps the directory (the guard printed its path): the servers' error
    /// logs and binlogs are what tells why.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.root.disable_cleanup(true);
        }
    }
}

impl TestSandbox {
    /// `dbfleet sandbox up` with `extra` arguments; panics when it fails.
    pub fn up(name: &str, base_port: u16, extra: &[&str]) -> Self {
        let root = tempfile::Builder::new()
            .prefix("dbfleet-test-")
            .tempdir()
            .expect("tempdir");
        let guard = SandboxGuard::new(root.path(), name);
        let t = Self {
            name: name.to_string(),
            base_port,
            _guard: guard,
            root,
        };
        let port = base_port.to_string();
        let mut args = vec!["sandbox", "up", "--name", name, "--base-port", &port];
        args.extend_from_slice(extra);
        let dir = t.dir_arg();
        args.extend(["--dir", dir.as_str()]);
        ok(dbfleet(&args));
        t
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn dir_arg(&self) -> String {
        self.root.path().display().to_string()
    }

    pub fn open(&self) -> Sandbox {
        Sandbox::open(self.root.path(), &self.name).expect("open sandbox")
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.open().admin_credentials_file()
    }

    pub fn admin(&self) -> Credentials {
        self.open().credentials().unwrap().admin.credentials()
    }

    pub fn addr(&self, member: &str) -> InstanceAddr {
        self.open().member(member).unwrap().addr()
    }

    /// `dbfleet sandbox <verb> NAME MEMBER`.
    pub fn member_cmd(&self, verb: &str, member: &str) -> String {
        let dir = self.dir_arg();
        ok(dbfleet(&[
            "sandbox", verb, &self.name, member, "--dir", &dir,
        ]))
    }

    /// `dbfleet probe` of a member, parsed from `--json`, whatever the exit code.
    pub fn probe(&self, member: &str) -> Observation {
        let addr = self.addr(member).to_string();
        let creds = self.credentials_file().display().to_string();
        let out = dbfleet(&["probe", &addr, "--credentials", &creds, "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe output is not an observation: {e}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// An admin session to a member over TCP.
    pub async fn session(&self, member: &str) -> Session {
        // Test statements such as STOP SLAVE may take longer than a probe's 1 s.
        let opts = ProbeOptions {
            connect_timeout: std::time::Duration::from_secs(5),
            query_timeout: std::time::Duration::from_secs(15),
        };
        Session::connect(&self.addr(member), &self.admin(), opts)
            .await
            .expect("connect")
    }

    /// Wait until the daemon's heartbeat row (created on the primary at its start) has
    /// reached each of `members`: the schema the daemon writes is replicated, so killing
    /// the primary now leaves no DDL of it that the replicas lack.
    #[allow(dead_code)]
    pub async fn wait_heartbeat_row(&self, members: &[&str], within: std::time::Duration) {
        let deadline = std::time::Instant::now() + within;
        for m in members {
            let mut s = self.session(m).await;
            while s
                .query_rows(
                    "heartbeat",
                    "SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1",
                )
                .await
                .map_or(true, |rows| rows.is_empty())
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no heartbeat row on {m}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            s.close().await;
        }
    }
}

/// `promtool check metrics` on `text` (Debian package `prometheus`): it must pass and find
/// nothing to say.
pub fn assert_promtool_clean(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is required by this test and could not be run ({e}): install the \
                 Debian package `prometheus` (scripts/install-deps.sh does)"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut msg = String::from_utf8_lossy(&out.stdout).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{msg}\n--- exposition ---\n{text}"
    );
    assert!(msg.trim().is_empty(), "promtool found problems:\n{msg}");
}
