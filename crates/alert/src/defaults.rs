//! The rules that ship: what pages a human on a fresh install. A `[[alert.rule]]` with the
//! same name replaces one; `enabled = false` switches it off.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::rule::{Op, Rule, RuleSpec, Severity};

/// The default rules as specs, in a stable order (for docs and `config validate` output).
///
/// | name | condition | for | severity |
/// |---|---|---|---|
/// | `instance_down` | `up < 1` | 30s | critical |
/// | `replication_io_stopped` | `replication_io_running == 0` | 1m | error |
/// | `replication_sql_stopped` | `replication_sql_running == 0` | 1m | error |
/// | `heartbeat_lag_high` | `heartbeat_lag_seconds > 30`, rising | 1m | error |
/// | `connections_near_max` | `connections_used_ratio > 0.9` | 1m | error |
/// | `threads_running_saturated` | `threads_running > 64` | 2m | error |
/// | `page_worthy_problem` | problem = `page` | 0s | critical |
pub fn default_rule_specs() -> Vec<RuleSpec> {
    let metric = |name: &str, metric: &str, op: Op, threshold: f64, for_s: u64, sev, summary| {
        let mut s = RuleSpec::named(name);
        s.metric = Some(metric.into());
        s.op = Some(op);
        s.threshold = Some(threshold);
        s.for_duration = Duration::from_secs(for_s);
        s.severity = Some(sev);
        s.summary = Some(String::from(summary));
        s
    };
    let mut heartbeat = metric(
        "heartbeat_lag_high",
        "heartbeat_lag_seconds",
        Op::Gt,
        30.0,
        60,
        Severity::Error,
        "{instance} ({cluster}) heartbeat lag is {value}s, above {threshold}s and not recovering",
    );
    heartbeat.rising = true;
    let mut page = RuleSpec::named("page_worthy_problem");
    page.problem = Some("page".into());
    page.severity = Some(Severity::Critical);
    page.summary = Some("{cluster}: {problems}".into());

    let mut specs = vec![
        metric(
            "instance_down",
            "up",
            Op::Lt,
            1.0,
            30,
            Severity::Critical,
            "{instance} ({cluster}, {role}) is down",
        ),
        metric(
            "replication_io_stopped",
            "replication_io_running",
            Op::Eq,
            0.0,
            60,
            Severity::Error,
            "{instance} ({cluster}) replication IO thread is not running",
        ),
        metric(
            "replication_sql_stopped",
            "replication_sql_running",
            Op::Eq,
            0.0,
            60,
            Severity::Error,
            "{instance} ({cluster}) replication SQL thread is not running",
        ),
        heartbeat,
        metric(
            "connections_near_max",
            "connections_used_ratio",
            Op::Gt,
            0.9,
            60,
            Severity::Error,
            "{instance} ({cluster}) uses {value} of max_connections",
        ),
        metric(
            "threads_running_saturated",
            "threads_running",
            Op::Gt,
            64.0,
            120,
            Severity::Error,
            "{instance} ({cluster}) has {value} threads running",
        ),
        page,
    ];
    for s in &mut specs {
        s.labels = BTreeMap::from([("source".to_string(), "default".to_string())]);
    }
    specs
}

/// The default rules, validated.
pub fn default_rules() -> Vec<Rule> {
    default_rule_specs()
        .iter()
        .map(|s| match s.validate() {
            Ok(r) => r,
            // The defaults are constants, checked by a test; this cannot happen at runtime.
            Err(e) => unreachable!("default rule {} is invalid: {e:?}", s.name),
        })
        .collect()
}
