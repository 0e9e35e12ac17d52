//! Named failpoints: places in an operation where a test can make the process crash or the
//! step fail, to prove that a crash at any step leaves a known, recoverable state.
//!
//! Failpoints are off unless set. The daemon reads `DBFLEET_FAILPOINTS` once at start:
//! `name=action` pairs separated by `;`, e.g.
//! `DBFLEET_FAILPOINTS="failover.promote.after=abort;switchover.catch_up.before=error"`.
//!
//! Actions:
//! - `abort`: the process aborts on the spot (SIGABRT, no cleanup), like a crash;
//! - `error`: the step fails with an error, as if the server had refused it;
//! - `error_once`: as `error` the first time it is reached, then the failpoint is cleared.
//!
//! Every step of every operation has two: `<kind>.<step>.before` (the step is recorded as
//! started but has not run) and `<kind>.<step>.after` (it ran but the next step is not
//! recorded yet). The names are listed by [`crate::operation_steps`] (for the failover
//! and the switchover also [`crate::FAILOVER_STEPS`] and [`crate::SWITCHOVER_STEPS`]).
//! `NAME@CLUSTER` (e.g. `rejoin.check.before@main`) fires for one cluster's operations
//! only, so tests sharing a process do not trip each other.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// What a failpoint does when reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Abort the process at once.
    Abort,
    /// Fail the step.
    Error,
    /// Fail the step once, then clear the failpoint.
    ErrorOnce,
}

fn registry() -> &'static Mutex<HashMap<String, Action>> {
    static R: OnceLock<Mutex<HashMap<String, Action>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Parse a `name=action;...` list.
pub fn parse(spec: &str) -> Result<Vec<(String, Action)>, String> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, action) = part
            .split_once('=')
            .ok_or_else(|| format!("failpoint {part:?}: expected name=action"))?;
        let action = match action.trim() {
            "abort" => Action::Abort,
            "error" => Action::Error,
            "error_once" => Action::ErrorOnce,
            other => {
                return Err(format!(
                    "failpoint {name:?}: unknown action {other:?} (expected abort, error or error_once)"
                ))
            }
        };
        out.push((name.trim().to_string(), action));
    }
    Ok(out)
}

/// Set failpoints from `DBFLEET_FAILPOINTS`, if it is set. Returns the names set.
pub fn init_from_env() -> Result<Vec<String>, String> {
    match std::env::var("DBFLEET_FAILPOINTS") {
        Ok(spec) => {
            let list = parse(&spec)?;
            let names = list.iter().map(|(n, _)| n.clone()).collect();
            for (n, a) in list {
                set(&n, a);
            }
            Ok(names)
        }
        Err(_) => Ok(Vec::new()),
    }
}

/// Arm a failpoint.
pub fn set(name: &str, action: Action) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), action);
}

/// Disarm every failpoint.
pub fn clear() {
    registry().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Reach the failpoint `name` in an operation of `cluster`: `name` itself, then
/// `name@cluster`.
pub(crate) fn hit_for(name: &str, cluster: &str) -> Result<(), String> {
    hit(name)?;
    hit(&format!("{name}@{cluster}"))
}

/// Reach the failpoint `name`: abort, fail, or (unarmed) go on.
pub(crate) fn hit(name: &str) -> Result<(), String> {
    let action = {
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        let action = r.get(name).copied();
        if action == Some(Action::ErrorOnce) {
            r.remove(name);
        }
        action
    };
    match action {
        None => Ok(()),
        Some(Action::Error | Action::ErrorOnce) => Err(format!("failpoint {name} fired")),
        Some(Action::Abort) => {
            eprintln!("dbfleet: failpoint {name}: aborting the process");
            std::process::abort()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_junk() {
        assert_eq!(
            parse("a.b=abort; c.d=error;").unwrap(),
            vec![("a.b".into(), Action::Abort), ("c.d".into(), Action::Error)]
        );
        assert!(parse("a.b").unwrap_err().contains("name=action"));
        assert!(parse("a.b=explode").unwrap_err().contains("unknown action"));
    }

    #[test]
    fn an_error_failpoint_fails_and_clears() {
        set("test.x.before", Action::Error);
        assert!(hit("test.x.before").is_err());
        assert!(hit("test.y.before").is_ok());
        clear();
        assert!(hit("test.x.before").is_ok());
    }

    #[test]
    fn an_error_once_failpoint_fails_the_first_time_only() {
        assert_eq!(
            parse("a.b=error_once").unwrap(),
            vec![("a.b".into(), Action::ErrorOnce)]
        );
        set("test.once.before", Action::ErrorOnce);
        assert!(hit("test.once.before").is_err());
        assert!(hit("test.once.before").is_ok());
    }

    #[test]
    fn a_cluster_scoped_failpoint_fires_for_that_cluster_only() {
        set("test.scoped.before@c1", Action::Error);
        assert!(hit_for("test.scoped.before", "c2").is_ok());
        assert!(hit_for("test.scoped.before", "c1")
            .unwrap_err()
            .contains("test.scoped.before@c1"));
    }
}
