//! The evaluator, driven by fixtures of observations and times: for-durations, dedup,
//! resolve, vanished instances, problem rules, `rising`, downtimes, persistence, and alerts
//! raised by the daemon (a failed scheduled DRT) that a later pass resolves.

use std::collections::BTreeMap;

use alert::{
    Alert, AlertState, ClusterSnapshot, DowntimeError, DowntimeTarget, Evaluator, EvaluatorState,
    InstanceSnapshot, NewDowntime, Observed, ProblemSnapshot, ResolveReason, Rule, RuleSpec,
    Transition, TransitionKind,
};
use model::Severity as ProblemSeverity;

const S: u64 = 1000;

/// One rule from its TOML body.
fn rule(body: &str) -> Rule {
    toml::from_str::<RuleSpec>(body)
        .expect("parses")
        .validate()
        .expect("valid")
}

fn inst(cluster: &str, instance: &str, metrics: &[(&str, f64)]) -> InstanceSnapshot {
    InstanceSnapshot {
        cluster: cluster.into(),
        instance: instance.into(),
        role: "replica".into(),
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        problems: Vec::new(),
    }
}

fn problem(kind: &str, severity: ProblemSeverity, summary: &str) -> ProblemSnapshot {
    ProblemSnapshot {
        kind: kind.into(),
        severity,
        summary: summary.into(),
    }
}

fn seen(instances: Vec<InstanceSnapshot>) -> Observed {
    Observed {
        instances,
        clusters: Vec::new(),
    }
}

/// Transitions as `(kind, key)`, the shape most assertions need.
fn short(ts: &[Transition]) -> Vec<(TransitionKind, String)> {
    ts.iter().map(|t| (t.kind, t.alert.key.clone())).collect()
}

fn down_rule() -> Rule {
    rule(
        r#"
        name = "down"
        metric = "up"
        op = "<"
        threshold = 1
        for = "30s"
        severity = "critical"
        labels = { team = "dba" }
        "#,
    )
}

fn up(v: f64) -> Observed {
    seen(vec![inst("c1", "db1:3306", &[("up", v)])])
}

#[test]
fn fires_after_for_then_dedups_then_resolves() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    assert!(ev.evaluate(0, &up(0.0)).is_empty());
    let pending: Vec<&Alert> = ev.alerts().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, AlertState::Pending);
    assert_eq!(pending[0].key, "down/c1/db1:3306");

    assert!(ev.evaluate(30 * S - 1, &up(0.0)).is_empty());
    let fired = ev.evaluate(30 * S, &up(0.0));
    assert_eq!(
        short(&fired),
        [(TransitionKind::Fired, "down/c1/db1:3306".to_string())]
    );
    let a = &fired[0].alert;
    assert!(fired[0].pages());
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(a.started_at, Some(30 * S));
    assert_eq!(a.pending_since, 0);
    assert_eq!(a.paged_at, Some(30 * S));
    assert_eq!(a.labels["team"], "dba");
    assert_eq!(a.summary, "up < 1 on db1:3306 (c1): 0");

    // Dedup: still firing, nothing new.
    for t in [31, 60, 600] {
        assert!(ev.evaluate(t * S, &up(0.0)).is_empty());
    }

    let resolved = ev.evaluate(601 * S, &up(1.0));
    assert_eq!(
        short(&resolved),
        [(TransitionKind::Resolved, "down/c1/db1:3306".to_string())]
    );
    let a = &resolved[0].alert;
    assert!(resolved[0].pages());
    assert_eq!(a.state, AlertState::Resolved);
    assert_eq!(a.resolved_at, Some(601 * S));
    assert_eq!(a.resolve_reason, Some(ResolveReason::ConditionCleared));
    assert_eq!(ev.alerts().count(), 0);

    // Firing again later is a new alert with the same key.
    assert!(ev.evaluate(700 * S, &up(0.0)).is_empty());
    assert_eq!(short(&ev.evaluate(730 * S, &up(0.0))).len(), 1);
}

#[test]
fn a_condition_that_clears_while_pending_never_fires() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    assert!(ev.evaluate(0, &up(0.0)).is_empty());
    assert!(ev.evaluate(10 * S, &up(1.0)).is_empty());
    assert_eq!(ev.alerts().count(), 0);
    // The window restarts.
    assert!(ev.evaluate(20 * S, &up(0.0)).is_empty());
    assert!(ev.evaluate(49 * S, &up(0.0)).is_empty());
    assert_eq!(ev.evaluate(50 * S, &up(0.0)).len(), 1);
}

#[test]
fn for_zero_fires_at_once() {
    let mut r = down_rule();
    r.for_duration = std::time::Duration::ZERO;
    let mut ev = Evaluator::new(vec![r]);
    assert_eq!(
        short(&ev.evaluate(5, &up(0.0))),
        [(TransitionKind::Fired, "down/c1/db1:3306".to_string())]
    );
    assert!(ev.evaluate(6, &up(0.0)).is_empty());
}

#[test]
fn missing_or_non_finite_metrics_do_not_match() {
    let r = rule(
        "name = \"ne\"\nmetric = \"threads_running\"\nop = \"!=\"\nthreshold = 0\nseverity = \"info\"",
    );
    let mut ev = Evaluator::new(vec![r]);
    let obs = seen(vec![
        inst("c1", "a:1", &[]),
        inst("c1", "b:1", &[("threads_running", f64::NAN)]),
        inst("c1", "c:1", &[("threads_running", f64::INFINITY)]),
        inst("c1", "d:1", &[("threads_running", 3.0)]),
    ]);
    assert_eq!(
        short(&ev.evaluate(0, &obs)),
        [(TransitionKind::Fired, "ne/c1/d:1".to_string())]
    );
}

#[test]
fn an_instance_that_disappears_resolves_its_alerts() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    let both = seen(vec![
        inst("c1", "db1:3306", &[("up", 0.0)]),
        inst("c1", "db2:3306", &[("up", 0.0)]),
    ]);
    ev.evaluate(0, &both);
    assert_eq!(ev.evaluate(30 * S, &both).len(), 2);

    let one = seen(vec![inst("c1", "db2:3306", &[("up", 0.0)])]);
    let gone = ev.evaluate(31 * S, &one);
    assert_eq!(
        short(&gone),
        [(TransitionKind::Resolved, "down/c1/db1:3306".to_string())]
    );
    assert_eq!(
        gone[0].alert.resolve_reason,
        Some(ResolveReason::TargetGone)
    );
    assert!(gone[0].pages());

    // A pending alert of a vanished instance goes silently.
    let mut ev = Evaluator::new(vec![down_rule()]);
    ev.evaluate(0, &both);
    assert!(ev.evaluate(S, &Observed::default()).is_empty());
    assert_eq!(ev.alerts().count(), 0);
}

#[test]
fn problem_rules_match_by_kind_or_page_worthiness() {
    let by_kind =
        rule("name = \"stopped\"\nproblem = \"ReplicaNotReplicating\"\nseverity = \"error\"");
    let pages = rule("name = \"pages\"\nproblem = \"page\"\nseverity = \"critical\"");
    let mut ev = Evaluator::new(vec![by_kind, pages]);

    let mut primary = inst("c1", "p:3306", &[("up", 0.0)]);
    primary.role = "primary".into();
    primary.problems = vec![problem(
        "DeadPrimary",
        ProblemSeverity::Critical,
        "primary p:3306 is dead",
    )];
    let mut replica = inst("c1", "r:3306", &[("up", 1.0)]);
    replica.problems = vec![
        problem(
            "ReplicaNotReplicating",
            ProblemSeverity::Error,
            "r:3306 IO thread stopped",
        ),
        problem("ReplicaLagging", ProblemSeverity::Warning, "r:3306 lags"),
    ];
    let obs = Observed {
        instances: vec![primary, replica],
        clusters: vec![
            ClusterSnapshot {
                cluster: "c1".into(),
                problems: vec![problem(
                    "NoPrimary",
                    ProblemSeverity::Critical,
                    "no instance acts as primary",
                )],
            },
            ClusterSnapshot {
                cluster: "c2".into(),
                problems: vec![problem(
                    "ReplicaMissing",
                    ProblemSeverity::Warning,
                    "one replica short",
                )],
            },
        ],
    };
    let fired = ev.evaluate(0, &obs);
    assert_eq!(
        short(&fired),
        [
            (TransitionKind::Fired, "stopped/c1/r:3306".to_string()),
            (TransitionKind::Fired, "pages/c1/p:3306".to_string()),
            (TransitionKind::Fired, "pages/c1".to_string()),
        ]
    );
    assert_eq!(
        fired[0].alert.summary,
        "r:3306 (c1): r:3306 IO thread stopped"
    );
    assert_eq!(fired[1].alert.role.as_deref(), Some("primary"));
    assert_eq!(fired[2].alert.instance, None);
    assert_eq!(fired[2].alert.summary, "c1: no instance acts as primary");

    // The cluster-wide problem clears; the cluster is still listed.
    let mut obs2 = obs.clone();
    obs2.clusters[0].problems.clear();
    let t = ev.evaluate(S, &obs2);
    assert_eq!(
        short(&t),
        [(TransitionKind::Resolved, "pages/c1".to_string())]
    );
    // A cluster no longer listed resolves its cluster-wide alerts too.
    let mut ev = Evaluator::new(vec![rule(
        "name = \"pages\"\nproblem = \"page\"\nseverity = \"critical\"",
    )]);
    ev.evaluate(0, &obs);
    let t = ev.evaluate(S, &seen(obs.instances.clone()));
    assert_eq!(
        short(&t),
        [(TransitionKind::Resolved, "pages/c1".to_string())]
    );
    assert_eq!(t[0].alert.resolve_reason, Some(ResolveReason::TargetGone));
}

fn lag_rule() -> Rule {
    rule(
        r#"
        name = "lag"
        metric = "heartbeat_lag_seconds"
        op = ">"
        threshold = 10
        rising = true
        for = "30s"
        severity = "error"
        summary = "{instance} lag {value}s > {threshold}s ({rule}, {severity}, {role})"
        "#,
    )
}

fn lag(v: f64) -> Observed {
    seen(vec![inst("c1", "r:3306", &[("heartbeat_lag_seconds", v)])])
}

#[test]
fn rising_lag_fires_only_when_not_recovering() {
    // Replication stopped: lag grows one second per second.
    let mut ev = Evaluator::new(vec![lag_rule()]);
    assert!(ev.evaluate(0, &lag(11.0)).is_empty());
    let t = ev.evaluate(30 * S, &lag(41.0));
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].alert.summary,
        "r:3306 lag 41s > 10s (lag, error, replica)"
    );

    // A delayed replica (MASTER_DELAY): lag high and flat is "not recovering".
    let mut ev = Evaluator::new(vec![lag_rule()]);
    ev.evaluate(0, &lag(60.0));
    assert_eq!(ev.evaluate(30 * S, &lag(60.0)).len(), 1);

    // Catching up: lower at the end of the window than at its start. The window restarts
    // at the lower value, and fires if the next window does not go down.
    let mut ev = Evaluator::new(vec![lag_rule()]);
    ev.evaluate(0, &lag(200.0));
    assert!(ev.evaluate(30 * S, &lag(150.0)).is_empty());
    let a = ev.alerts().next().unwrap();
    assert_eq!(
        (a.state, a.pending_since, a.window_value),
        (AlertState::Pending, 30 * S, Some(150.0))
    );
    assert!(ev.evaluate(45 * S, &lag(140.0)).is_empty());
    assert!(ev.evaluate(60 * S, &lag(100.0)).is_empty());
    assert_eq!(ev.evaluate(90 * S, &lag(100.5)).len(), 1);

    // Once firing, it resolves only below the threshold, not when it starts recovering.
    assert!(ev.evaluate(100 * S, &lag(50.0)).is_empty());
    assert_eq!(
        short(&ev.evaluate(110 * S, &lag(2.0))),
        [(TransitionKind::Resolved, "lag/c1/r:3306".to_string())]
    );
}

fn downtime(target: DowntimeTarget, ends_at: u64) -> NewDowntime {
    NewDowntime {
        target,
        ends_at,
        reason: "kernel upgrade".into(),
        who: "alice".into(),
    }
}

#[test]
fn a_downtime_silences_the_page_and_pages_when_it_ends_while_firing() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    let d = ev
        .add_downtime(0, downtime(DowntimeTarget::Cluster("c1".into()), 100 * S))
        .unwrap();
    assert_eq!((d.id, d.created_at, d.ends_at), (1, 0, 100 * S));
    assert_eq!(ev.downtimes(0).len(), 1);

    ev.evaluate(0, &up(0.0));
    let t = ev.evaluate(30 * S, &up(0.0));
    assert_eq!(
        short(&t),
        [(
            TransitionKind::FiredSilenced,
            "down/c1/db1:3306".to_string()
        )]
    );
    assert!(!t[0].pages());
    assert!(t[0].alert.silenced);
    assert_eq!(t[0].alert.paged_at, None);
    // Recorded: the alert is open and firing.
    assert_eq!(
        ev.alert("down/c1/db1:3306").unwrap().state,
        AlertState::Firing
    );

    assert!(ev.evaluate(100 * S - 1, &up(0.0)).is_empty());
    // The downtime ends while the alert still fires: it pages now.
    let t = ev.evaluate(100 * S, &up(0.0));
    assert_eq!(
        short(&t),
        [(
            TransitionKind::DowntimeEnded,
            "down/c1/db1:3306".to_string()
        )]
    );
    assert!(t[0].pages());
    assert!(!t[0].alert.silenced);
    assert_eq!(t[0].alert.started_at, Some(30 * S));
    assert_eq!(t[0].alert.paged_at, Some(100 * S));
    assert!(ev.downtimes(100 * S).is_empty());
    assert!(ev.evaluate(101 * S, &up(0.0)).is_empty());

    // Its resolve is sent, since it paged.
    let t = ev.evaluate(200 * S, &up(1.0));
    assert!(t[0].pages());
}

#[test]
fn an_alert_that_resolves_inside_its_downtime_never_pages() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    ev.add_downtime(
        0,
        downtime(DowntimeTarget::Instance("db1:3306".into()), 1000 * S),
    )
    .unwrap();
    ev.evaluate(0, &up(0.0));
    let t = ev.evaluate(30 * S, &up(0.0));
    assert_eq!(t[0].kind, TransitionKind::FiredSilenced);
    let t = ev.evaluate(40 * S, &up(1.0));
    assert_eq!(t[0].kind, TransitionKind::Resolved);
    assert!(!t[0].pages());
}

#[test]
fn downtimes_cover_only_their_target() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    ev.add_downtime(
        0,
        downtime(DowntimeTarget::Instance("db1:3306".into()), 1000 * S),
    )
    .unwrap();
    ev.add_downtime(0, downtime(DowntimeTarget::Cluster("c9".into()), 1000 * S))
        .unwrap();
    let obs = seen(vec![
        inst("c1", "db1:3306", &[("up", 0.0)]),
        inst("c1", "db2:3306", &[("up", 0.0)]),
        inst("c9", "db3:3306", &[("up", 0.0)]),
    ]);
    ev.evaluate(0, &obs);
    let t = ev.evaluate(30 * S, &obs);
    assert_eq!(
        short(&t),
        [
            (
                TransitionKind::FiredSilenced,
                "down/c1/db1:3306".to_string()
            ),
            (TransitionKind::Fired, "down/c1/db2:3306".to_string()),
            (
                TransitionKind::FiredSilenced,
                "down/c9/db3:3306".to_string()
            ),
        ]
    );
    assert!(ev.downtime_covering(30 * S, "c9", None).is_some());
    assert!(ev.downtime_covering(30 * S, "c1", None).is_none());
}

#[test]
fn removing_a_downtime_pages_what_it_silenced() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    let d = ev
        .add_downtime(0, downtime(DowntimeTarget::Cluster("c1".into()), 1000 * S))
        .unwrap();
    let d2 = ev
        .add_downtime(
            0,
            downtime(DowntimeTarget::Instance("other:1".into()), 1000 * S),
        )
        .unwrap();
    assert_eq!(d2.id, d.id + 1);
    ev.evaluate(0, &up(0.0));
    assert_eq!(
        ev.evaluate(30 * S, &up(0.0))[0].kind,
        TransitionKind::FiredSilenced
    );
    assert_eq!(
        ev.remove_downtime(d.id).map(|d| d.reason),
        Some("kernel upgrade".into())
    );
    assert_eq!(ev.remove_downtime(d.id), None);
    let listed: Vec<u64> = ev.downtimes(31 * S).iter().map(|d| d.id).collect();
    assert_eq!(listed, [d2.id]);
    let t = ev.evaluate(31 * S, &up(0.0));
    assert_eq!(t[0].kind, TransitionKind::DowntimeEnded);
}

#[test]
fn a_downtime_starting_after_the_page_does_not_unpage() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    ev.evaluate(0, &up(0.0));
    assert_eq!(ev.evaluate(30 * S, &up(0.0))[0].kind, TransitionKind::Fired);
    ev.add_downtime(
        31 * S,
        downtime(DowntimeTarget::Cluster("c1".into()), 1000 * S),
    )
    .unwrap();
    assert!(ev.evaluate(40 * S, &up(0.0)).is_empty());
    // The resolve still goes out: the page did.
    let t = ev.evaluate(50 * S, &up(1.0));
    assert!(t[0].pages());
}

#[test]
fn bad_downtimes_are_refused() {
    let mut ev = Evaluator::new(vec![]);
    let c1 = || DowntimeTarget::Cluster("c1".into());
    assert_eq!(
        ev.add_downtime(10, downtime(c1(), 10)),
        Err(DowntimeError::EndsInPast)
    );
    let mut d = downtime(c1(), 20);
    d.reason = " ".into();
    assert_eq!(ev.add_downtime(10, d), Err(DowntimeError::BlankReason));
    let mut d = downtime(c1(), 20);
    d.who = String::new();
    assert_eq!(ev.add_downtime(10, d), Err(DowntimeError::BlankWho));
    assert_eq!(
        ev.add_downtime(10, downtime(DowntimeTarget::Instance("".into()), 20)),
        Err(DowntimeError::BlankTarget)
    );
    assert!(ev.downtimes(10).is_empty());
}

#[test]
fn evaluating_one_cluster_leaves_the_others_alone() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    let both = seen(vec![
        inst("c1", "a:1", &[("up", 0.0)]),
        inst("c2", "b:1", &[("up", 0.0)]),
    ]);
    ev.evaluate(0, &both);
    assert_eq!(ev.evaluate(30 * S, &both).len(), 2);
    // A round of c2 only, in which c2's instance recovered: c1's alert stays firing.
    let c2 = seen(vec![inst("c2", "b:1", &[("up", 1.0)])]);
    assert_eq!(
        short(&ev.evaluate_cluster(31 * S, "c2", &c2)),
        [(TransitionKind::Resolved, "down/c2/b:1".to_string())]
    );
    // Entries of other clusters in the input are ignored.
    assert!(ev.evaluate_cluster(32 * S, "c2", &both).is_empty());
    assert_eq!(ev.alert("down/c1/a:1").unwrap().state, AlertState::Firing);
}

#[test]
fn state_persists_and_rule_removal_resolves() {
    let script: Vec<(u64, Observed)> = vec![
        (0, up(0.0)),
        (20 * S, up(0.0)),
        (30 * S, up(0.0)),
        (40 * S, up(0.0)),
        (50 * S, up(1.0)),
    ];
    // Straight through.
    let mut ev = Evaluator::new(vec![down_rule()]);
    let straight: Vec<Vec<Transition>> = script.iter().map(|(t, o)| ev.evaluate(*t, o)).collect();

    // Restarting from persisted JSON after every step gives the same transitions.
    let mut state = EvaluatorState::default();
    let mut resumed = Vec::new();
    for (t, o) in &script {
        let mut ev = Evaluator::with_state(vec![down_rule()], state);
        ev.add_downtime(
            *t,
            downtime(DowntimeTarget::Cluster("elsewhere".into()), u64::MAX),
        )
        .unwrap();
        resumed.push(ev.evaluate(*t, o));
        let json = serde_json::to_string(ev.state()).unwrap();
        state = serde_json::from_str(&json).unwrap();
    }
    assert_eq!(straight, resumed);
    assert!(straight
        .iter()
        .flatten()
        .any(|t| t.kind == TransitionKind::Fired));

    // The same sequence twice gives the same result: the evaluator is deterministic.
    let mut again = Evaluator::new(vec![down_rule()]);
    let twice: Vec<Vec<Transition>> = script.iter().map(|(t, o)| again.evaluate(*t, o)).collect();
    assert_eq!(straight, twice);

    // A rule removed by a reload resolves its firing alerts.
    let mut ev = Evaluator::new(vec![down_rule()]);
    ev.evaluate(0, &up(0.0));
    ev.evaluate(30 * S, &up(0.0));
    ev.set_rules(vec![]);
    let t = ev.evaluate(31 * S, &up(0.0));
    assert_eq!(t[0].alert.resolve_reason, Some(ResolveReason::RuleRemoved));
}

#[test]
fn default_rules_fire_on_the_monitors_metrics() {
    let mut ev = Evaluator::new(alert::default_rules());
    let metrics: BTreeMap<&str, f64> = BTreeMap::from([
        ("up", 1.0),
        ("replication_io_running", 1.0),
        ("replication_sql_running", 0.0),
        ("replication_lag_seconds", 0.0),
        ("heartbeat_lag_seconds", 45.0),
        ("connections_used_ratio", 0.95),
        ("threads_running", 100.0),
        ("queries_per_second", 10.0),
        ("aborted_connects_per_second", 0.0),
        ("semi_sync_primary_on", 0.0),
    ]);
    let m: Vec<(&str, f64)> = metrics.into_iter().collect();
    let obs = seen(vec![inst("c1", "r:3306", &m)]);
    ev.evaluate(0, &obs);
    let mut lag_up = obs.clone();
    lag_up.instances[0]
        .metrics
        .insert("heartbeat_lag_seconds".into(), 165.0);
    let t = ev.evaluate(120 * S, &lag_up);
    let rules: Vec<&str> = t.iter().map(|t| t.alert.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "replication_sql_stopped",
            "heartbeat_lag_high",
            "connections_near_max",
            "threads_running_saturated",
        ]
    );
    assert_eq!(
        t[1].alert.summary,
        "r:3306 (c1) heartbeat lag is 165s, above 30s and not recovering"
    );
    assert_eq!(
        t[2].alert.summary,
        "r:3306 (c1) uses 0.95 of max_connections"
    );
}

/// An alert raised by the daemon, as `drt_failed` is.
fn drt_failed(cluster: &str, summary: &str) -> Alert {
    Alert {
        key: format!("drt_failed/{cluster}/kill-primary"),
        rule: "drt_failed".into(),
        severity: alert::Severity::Error,
        cluster: cluster.into(),
        instance: None,
        role: None,
        labels: BTreeMap::from([("scenario".to_string(), "kill-primary".to_string())]),
        summary: summary.into(),
        value: None,
        state: AlertState::Firing,
        pending_since: 0,
        window_value: None,
        started_at: None,
        resolved_at: None,
        resolve_reason: None,
        silenced: false,
        paged_at: None,
    }
}

#[test]
fn a_raised_alert_stays_open_through_evaluations_and_resolves_when_asked() {
    let mut ev = Evaluator::new(vec![down_rule()]);
    let key = "drt_failed/c1/kill-primary";
    assert!(ev.resolve_raised(0, key, "passed".into()).is_none());
    let t = ev.raise(10 * S, drt_failed("c1", "run 1 FAILED"));
    assert_eq!(t.kind, TransitionKind::Fired);
    assert!(t.pages());
    assert_eq!(t.alert.paged_at, Some(10 * S));
    // Evaluations of its cluster neither resolve it (no rule names it) nor list it.
    assert!(ev.evaluate(20 * S, &up(1.0)).is_empty());
    assert!(ev.evaluate_cluster(25 * S, "c1", &up(1.0)).is_empty());
    assert_eq!(ev.alerts().count(), 0);
    assert_eq!(ev.raised().count(), 1);

    // A second failure inside a downtime keeps the first start and page mark.
    ev.add_downtime(
        30 * S,
        downtime(DowntimeTarget::Cluster("c1".into()), 100 * S),
    )
    .unwrap();
    let t = ev.raise(40 * S, drt_failed("c1", "run 2 FAILED"));
    assert_eq!(t.kind, TransitionKind::FiredSilenced);
    assert_eq!(t.alert.started_at, Some(10 * S));
    assert_eq!(t.alert.paged_at, Some(10 * S));
    assert_eq!(t.alert.summary, "run 2 FAILED");

    // It survives persistence, and a pass resolves it once, paging the resolve.
    let json = serde_json::to_string(ev.state()).unwrap();
    let mut ev = Evaluator::with_state(vec![down_rule()], serde_json::from_str(&json).unwrap());
    let r = ev
        .resolve_raised(50 * S, key, "run 3 passed".into())
        .unwrap();
    assert_eq!(r.kind, TransitionKind::Resolved);
    assert_eq!(r.alert.resolved_at, Some(50 * S));
    assert_eq!(
        r.alert.resolve_reason,
        Some(ResolveReason::ConditionCleared)
    );
    assert_eq!(r.alert.summary, "run 3 passed");
    assert!(r.pages());
    assert!(ev
        .resolve_raised(60 * S, key, "run 4 passed".into())
        .is_none());

    // One raised only inside a downtime was never paged: its resolve is not sent either.
    let t = ev.raise(70 * S, drt_failed("c1", "run 5 FAILED"));
    assert_eq!(t.kind, TransitionKind::FiredSilenced);
    let r = ev
        .resolve_raised(80 * S, key, "run 6 passed".into())
        .unwrap();
    assert!(!r.pages());

    // A state written before raised alerts existed still loads.
    let old = r#"{"alerts":{},"downtimes":{},"next_downtime_id":1}"#;
    let state: EvaluatorState = serde_json::from_str(old).unwrap();
    assert_eq!(Evaluator::with_state(vec![], state).raised().count(), 0);
}
