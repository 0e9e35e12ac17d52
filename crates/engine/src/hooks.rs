//! Hooks: operator commands run before and after a failover or switchover.
//!
//! Each hook is a shell command line run with `sh -c`, with a timeout (it is killed when it
//! passes), stdin closed, and these environment variables (documented in docs/HOOKS.md):
//!
//! | variable | value |
//! |---|---|
//! | `DBFLEET_CLUSTER` | the cluster's name |
//! | `DBFLEET_OPERATION` | `failover` or `switchover` |
//! | `DBFLEET_OPERATION_ID` | the operation's id in the store |
//! | `DBFLEET_PHASE` | `pre` or `post` |
//! | `DBFLEET_TRIGGER` | `auto` or `manual` |
//! | `DBFLEET_OLD_PRIMARY` | `host:port` of the primary being replaced |
//! | `DBFLEET_NEW_PRIMARY` | `host:port` of the new primary (the candidate, in `pre`) |
//!
//! No credential is ever passed to a hook.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The context a hook runs in.
#[derive(Clone, Debug)]
pub struct HookEnv {
    pub cluster: String,
    pub operation: model::OperationKind,
    pub operation_id: i64,
    pub phase: &'static str,
    pub trigger: String,
    pub old_primary: String,
    pub new_primary: String,
}

/// How one hook ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookOutcome {
    pub command: String,
    pub ok: bool,
    /// `exit 0`, `exit 3`, `killed after 10s`, `cannot start: ...`.
    pub status: String,
    /// The last lines the hook printed (stdout then stderr), at most 2 KiB.
    pub output: String,
    pub duration_ms: u64,
}

/// Run `commands` in order; stops at the first failure when `stop_on_failure`.
pub async fn run_hooks(
    commands: &[String],
    env: &HookEnv,
    timeout: Duration,
    stop_on_failure: bool,
) -> Vec<HookOutcome> {
    let mut out = Vec::new();
    for c in commands {
        let o = run_one(c, env, timeout).await;
        let failed = !o.ok;
        out.push(o);
        if failed && stop_on_failure {
            break;
        }
    }
    out
}

async fn run_one(command: &str, env: &HookEnv, timeout: Duration) -> HookOutcome {
    let started = std::time::Instant::now();
    // The daemon's own environment may hold a password (`password_env`): a hook gets a
    // clean one, with only PATH, HOME and the locale passed through.
    let mut cmd = Command::new("sh");
    cmd.env_clear();
    for k in ["PATH", "HOME", "LANG", "LC_ALL", "TZ"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    let child = cmd
        .arg("-c")
        .arg(command)
        .env("DBFLEET_CLUSTER", &env.cluster)
        .env("DBFLEET_OPERATION", env.operation.as_str())
        .env("DBFLEET_OPERATION_ID", env.operation_id.to_string())
        .env("DBFLEET_PHASE", env.phase)
        .env("DBFLEET_TRIGGER", &env.trigger)
        .env("DBFLEET_OLD_PRIMARY", &env.old_primary)
        .env("DBFLEET_NEW_PRIMARY", &env.new_primary)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let done = |ok, status: String, output: String| HookOutcome {
        command: command.to_string(),
        ok,
        status,
        output,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let child = match child {
        Ok(c) => c,
        Err(e) => return done(false, format!("cannot start: {e}"), String::new()),
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => done(
            false,
            format!("killed after {}", humanize(timeout)),
            String::new(),
        ),
        Ok(Err(e)) => done(false, format!("wait failed: {e}"), String::new()),
        Ok(Ok(o)) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            let tail = tail(&text, 2048);
            match o.status.code() {
                Some(0) => done(true, "exit 0".into(), tail),
                Some(c) => done(false, format!("exit {c}"), tail),
                None => done(false, "killed by a signal".into(), tail),
            }
        }
    }
}

fn humanize(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.trim_end().to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv {
        HookEnv {
            cluster: "c1".into(),
            operation: model::OperationKind::Failover,
            operation_id: 7,
            phase: "pre",
            trigger: "auto".into(),
            old_primary: "127.0.0.1:1".into(),
            new_primary: "127.0.0.1:2".into(),
        }
    }

    #[tokio::test]
    async fn hooks_see_their_environment_and_stop_at_a_failure() {
        let out = run_hooks(
            &[
                "echo $DBFLEET_CLUSTER $DBFLEET_OPERATION_ID $DBFLEET_NEW_PRIMARY".into(),
                "exit 3".into(),
                "echo never".into(),
            ],
            &env(),
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(out.len(), 2);
        assert!(out[0].ok);
        assert_eq!(out[0].output, "c1 7 127.0.0.1:2");
        assert!(!out[1].ok);
        assert_eq!(out[1].status, "exit 3");
    }

    #[tokio::test]
    async fn hooks_do_not_inherit_the_daemons_environment() {
        // SAFETY: this test's process sets one variable no other test reads.
        unsafe { std::env::set_var("DBFLEET_TEST_SECRET_PASSWORD", "hunter2") };
        let out = run_hooks(
            &["echo x${DBFLEET_TEST_SECRET_PASSWORD}x".into()],
            &env(),
            Duration::from_secs(5),
            true,
        )
        .await;
        assert_eq!(out[0].output, "xx");
    }

    #[tokio::test]
    async fn a_slow_hook_is_killed() {
        let out = run_hooks(
            &["sleep 5".into()],
            &env(),
            Duration::from_millis(200),
            true,
        )
        .await;
        assert!(!out[0].ok);
        assert!(out[0].status.starts_with("killed after"), "{:?}", out[0]);
    }
}
