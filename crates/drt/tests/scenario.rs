//! Scenarios and reports without servers: every built-in parses; bad files fail naming the
//! field; `judge` passes and fails as it should; percentiles; the HTML report is one safe,
//! self-contained page.

use std::collections::BTreeMap;
use std::time::Duration;

use drt::load::{Ack, InstanceCheck, Ledger, Outage, SplitBrain, TableName, Verification};
use drt::report::{
    aggregate, judge, passed, render_html, render_text, EventKind, FigureSource, MuteLook, Report,
    RunParts, RunResult, TimelineEvent, Verdict,
};
use drt::scenario::{
    builtin_names, builtins, FailoverExpectation, FaultKind, Heal, Overrides, Scenario,
    ScenarioError, StepAction, Target,
};
use model::InstanceAddr;

// ---------------------------------------------------------------------------------------
// Scenarios

#[test]
fn every_builtin_parses_validates_and_round_trips() {
    let all = builtins();
    let names = builtin_names();
    assert_eq!(all.len(), names.len());
    for want in [
        "kill-primary",
        "pause-primary",
        "partition-primary",
        "partition-control-plane",
        "kill-replica",
        "stop-replica-sql",
        "slow-replica",
        "switchover-under-load",
        "kill-primary-twice",
        "pause-primary-8s",
        "pause-primary-20s",
        "blackhole-primary",
        "kill-primary-with-delayed-replica",
        "kill-primary-with-broken-replica",
        "lose-primary-and-best-replica",
        "stall-primary-disk",
        "fill-primary-disk",
        "stall-replica-disk",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (s, name) in all.iter().zip(&names) {
        assert_eq!(&s.name, name);
        s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.faults.is_empty(), "{name}");
        let secs = s.load.duration.as_secs();
        // The hard faults hold for up to 30 s and the load goes on after the heal.
        assert!(
            (6..=40).contains(&secs),
            "{name}: a {secs}s load is not test-sized"
        );
        assert_eq!(s.expect.stale_acks_allowed, 0, "{name}");
        assert_eq!(s.expect.lost_writes_allowed, 0, "{name}");
        assert_eq!(s.cluster, None, "{name}: a built-in names no cluster");
        // The TOML and the JSON forms give the same scenario back.
        let again = Scenario::from_toml(&s.to_toml(), "round-trip")
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", s.to_toml()));
        assert_eq!(&again, s);
        let json = serde_json::to_string(s).unwrap();
        let back: Scenario = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, s);
        assert_eq!(&Scenario::resolve(name).unwrap(), s);
    }
}

#[test]
fn builtins_say_what_the_issue_asks() {
    let kp = Scenario::builtin("kill-primary").unwrap();
    assert_eq!(kp.faults[0].kind, FaultKind::KillPrimary);
    assert_eq!(kp.faults[0].target, Target::Primary);
    assert_eq!(kp.faults[0].heal, Heal::AtLoadEnd);
    assert_eq!(kp.expect.failover, FailoverExpectation::Must);

    let cp = Scenario::builtin("partition-control-plane").unwrap();
    assert_eq!(
        cp.faults[0].kind,
        FaultKind::PartitionControlPlaneFromPrimary
    );
    assert_eq!(cp.expect.failover, FailoverExpectation::MustNot);

    let slow = Scenario::builtin("slow-replica").unwrap();
    assert_eq!(
        slow.faults[0].kind,
        FaultKind::SlowReplica {
            latency: Duration::from_millis(200),
            jitter: Duration::from_millis(50)
        }
    );

    let sw = Scenario::builtin("switchover-under-load").unwrap();
    assert_eq!(sw.faults[0].heal, Heal::Nothing);
    assert_eq!(sw.switchovers(), 1);
    assert_eq!(sw.expect.primary_changes, Some(1));

    // The anti-flapping scenario: two kills, exactly one failover expected.
    let twice = Scenario::builtin("kill-primary-twice").unwrap();
    assert_eq!(twice.faults.len(), 2);
    assert!(twice
        .faults
        .iter()
        .all(|f| f.kind == FaultKind::KillPrimary));
    assert!(twice.faults[1].at > twice.faults[0].at);
    assert_eq!(twice.expect.failover, FailoverExpectation::Must);
    assert_eq!(twice.expect.failovers, Some(1));
    let plan = twice.plan();
    assert_eq!(plan.len(), 4);
    assert_eq!(
        plan.iter()
            .map(|s| (s.at.as_millis(), s.fault, s.action))
            .collect::<Vec<_>>(),
        vec![
            (2000, 0, StepAction::Inject),
            (6000, 1, StepAction::Inject),
            (8000, 1, StepAction::Heal),
            (10000, 0, StepAction::Heal),
        ]
    );
}

#[test]
fn unknown_builtins_list_the_known_ones() {
    let e = Scenario::builtin("kill-everything").unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, ScenarioError::UnknownBuiltin { .. }));
    assert!(shown.contains("kill-primary-twice"), "{shown}");
}

const GOOD: &str = r#"
name = "custom"
description = "A scenario for tests."
cluster = "demo"

[load]
writers = 2
rate_per_s = 100
duration = "20s"

[[fault]]
kind = "kill_replica"
target = "127.0.0.1:3307"
at = "2s"
heal_after = "3s"

[[fault]]
kind = "kill_primary"
at = "10s"

[expect]
failover = "must"
max_rto = "15s"
max_detection = "2s"
"#;

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_toml(text, "test.toml")
}

/// The file with one line replaced.
fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    GOOD.replacen(from, to, 1)
}

fn fields(e: &ScenarioError) -> Vec<String> {
    e.fields().into_iter().map(str::to_string).collect()
}

#[test]
fn a_good_file_parses_with_defaults_filled_in() {
    let s = parse(GOOD).unwrap();
    assert_eq!(s.cluster.as_deref(), Some("demo"));
    assert_eq!(s.load.writers, 2);
    assert_eq!(s.load.duration, Duration::from_secs(20));
    assert_eq!(s.faults[0].target, Target::Member("127.0.0.1:3307".into()));
    assert_eq!(s.faults[0].heal, Heal::After(Duration::from_secs(3)));
    assert_eq!(s.faults[1].target, Target::Primary);
    assert_eq!(s.expect.lost_writes_allowed, 0);
    assert_eq!(s.max_duration, Duration::from_secs(120));
    assert_eq!(
        s.faults[0].heal_at(s.load.duration),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        s.faults[1].heal_at(s.load.duration),
        Some(Duration::from_secs(20))
    );

    let mut opts = drt::load::LoadOptions::new(Vec::new(), probe::Credentials::new("a", "b"));
    s.load.apply_to(&mut opts);
    assert_eq!(
        (opts.writers, opts.rate_per_s, opts.duration),
        (2, 100, Duration::from_secs(20))
    );
}

#[test]
fn a_fault_after_the_load_names_its_field() {
    let e = parse(&with("at = \"10s\"", "at = \"30s\"")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "fault[1].at: 30s is after the load ends at 20s: a fault must fire during the load"
    );
}

#[test]
fn parse_errors_name_the_field_and_line() {
    let cases = [
        // (replace, with, field, words in the message)
        (
            "at = \"2s\"",
            "at = \"2x\"",
            "fault[0].at",
            "invalid duration",
        ),
        ("at = \"2s\"", "at = 2", "fault[0].at", "needs a unit"),
        (
            "kind = \"kill_primary\"",
            "kind = \"kil_primary\"",
            "fault[1].kind",
            "kill_primary",
        ),
        (
            "writers = 2",
            "writerz = 2",
            "load.writerz",
            "unknown field",
        ),
        (
            "max_rto = \"15s\"",
            "max_rto = true",
            "expect.max_rto",
            "duration",
        ),
        (
            "failover = \"must\"",
            "failover = \"maybe\"",
            "expect.failover",
            "must_not",
        ),
        (
            "cluster = \"demo\"",
            "clusters = \"demo\"",
            "clusters",
            "unknown field",
        ),
    ];
    for (from, to, field, words) in cases {
        let e = parse(&with(from, to)).unwrap_err();
        let shown = e.to_string();
        match &e {
            ScenarioError::Parse {
                origin,
                line,
                field: f,
                message,
            } => {
                assert_eq!(origin, "test.toml");
                assert!(line.is_some(), "{shown}");
                assert_eq!(f.as_deref(), Some(field), "{shown}");
                assert!(message.contains(words), "{shown}");
            }
            other => panic!("{to}: not a parse error: {other}"),
        }
        assert!(shown.starts_with("test.toml:"), "{shown}");
        assert!(shown.contains(&format!("{field}: ")), "{shown}");
    }
    let e = parse("description = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("missing field `name`"), "{e}");
}

#[test]
fn invalid_values_name_the_field() {
    let cases: [(&str, &str, &str, &str); 12] = [
        ("writers = 2", "writers = 0", "load.writers", "out of range"),
        (
            "duration = \"20s\"",
            "duration = \"0s\"",
            "load.duration",
            "zero",
        ),
        (
            "name = \"custom\"",
            "name = \"has space\"",
            "name",
            "not a valid name",
        ),
        (
            "kind = \"kill_primary\"",
            "kind = \"kill_primary\"\ntarget = \"replica\"",
            "fault[1].target",
            "primary",
        ),
        (
            "target = \"127.0.0.1:3307\"",
            "target = \"primary\"",
            "fault[0].target",
            "acts on a replica",
        ),
        (
            "heal_after = \"3s\"",
            "heal_after = \"30s\"",
            "fault[0].heal_after",
            "after the load ends",
        ),
        (
            "heal_after = \"3s\"",
            "heal_after = \"3s\"\nlatency_ms = 5",
            "fault[0].latency_ms",
            "only slow_replica",
        ),
        (
            "kind = \"kill_replica\"",
            "kind = \"slow_replica\"",
            "fault[0].latency_ms",
            "needs the latency",
        ),
        (
            "kind = \"kill_replica\"",
            "kind = \"switchover\"",
            "fault[0].heal_after",
            "nothing to heal",
        ),
        (
            "max_rto = \"15s\"",
            "max_rto = \"15s\"\nfailovers = 0",
            "expect.failovers",
            "contradicts",
        ),
        (
            "cluster = \"demo\"",
            "cluster = \"demo\"\nmax_duration = \"20s\"",
            "max_duration",
            "leaves no time",
        ),
        (
            "max_rto = \"15s\"",
            "max_rto = \"5m\"",
            "expect.max_rto",
            "max_duration",
        ),
    ];
    for (from, to, field, words) in cases {
        let e = parse(&with(from, to)).unwrap_err();
        let shown = e.to_string();
        assert!(
            fields(&e).iter().any(|f| f == field),
            "{to}: wanted {field}, got {shown}"
        );
        assert!(shown.contains(words), "{to}: {shown}");
    }
    // Jitter larger than the latency.
    let slow = with(
        "kind = \"kill_replica\"",
        "kind = \"slow_replica\"\nlatency_ms = 10\njitter_ms = 20",
    );
    let e = parse(&slow).unwrap_err();
    assert_eq!(fields(&e), vec!["fault[0].jitter_ms"], "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = with("writers = 2", "writers = 0")
        .replace("at = \"10s\"", "at = \"30s\"")
        .replace(
            "description = \"A scenario for tests.\"",
            "description = \" \"",
        );
    let e = parse(&text).unwrap_err();
    let mut f = fields(&e);
    f.sort();
    assert_eq!(f, vec!["description", "fault[1].at", "load.writers"], "{e}");
    assert!(e.to_string().starts_with("3 problems:"), "{e}");
}

#[test]
fn overrides_apply_and_are_validated() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let o = Overrides {
        cluster: Some("prod-eu".into()),
        duration: Some(Duration::from_secs(30)),
        ..Overrides::default()
    };
    let s2 = s.clone().with_overrides(&o).unwrap();
    assert_eq!(s2.cluster.as_deref(), Some("prod-eu"));
    assert_eq!(s2.load.duration, Duration::from_secs(30));

    let too_short = Overrides {
        duration: Some(Duration::from_secs(1)),
        ..Overrides::default()
    };
    let e = s.with_overrides(&too_short).unwrap_err();
    assert_eq!(fields(&e), vec!["fault[0].at"], "{e}");
}

#[test]
fn files_load_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, GOOD).unwrap();
    assert_eq!(
        Scenario::resolve(path.to_str().unwrap()).unwrap().name,
        "custom"
    );
    let e = Scenario::load(&dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(e, ScenarioError::Io { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------
// Results and verdicts

const T0: u64 = 1_780_000_000_000;

fn addr(port: u16) -> InstanceAddr {
    InstanceAddr::new("127.0.0.1", port)
}

/// A run's raw material: the ledger of a load, its verification and the timeline.
struct Sim {
    ledger: Ledger,
    verification: Verification,
    events: Vec<TimelineEvent>,
    aborted: Option<String>,
}

impl Sim {
    /// An 8 s load writing to :3306 every 50 ms; with `outage`, writes stop at its start
    /// and resume on `to` at its end.
    fn new(outage: Option<(u64, Option<u64>, u16)>) -> Sim {
        let mut acked = Vec::new();
        let mut outages = Vec::new();
        let mut id = 1;
        let mut server = addr(3306);
        for t in (0..8000).step_by(50) {
            if let Some((from, to, new)) = outage {
                if t >= from && to.is_none_or(|to| t < to) {
                    continue;
                }
                if to.is_some_and(|to| t >= to) {
                    server = addr(new);
                }
            }
            acked.push(Ack {
                id,
                writer: (id % 4) as usize,
                at_ms: T0 + t,
                sent_ms: T0 + t,
                gtid: Some(format!("0-1-{id}")),
                server: server.clone(),
            });
            id += 1;
        }
        if let Some((from, to, new)) = outage {
            outages.push(Outage {
                first_failure_ms: T0 + from,
                recovered_ms: to.map(|t| T0 + t),
                from: Some(addr(3306)),
                to: to.map(|_| addr(new)),
                writers: vec![0, 1, 2, 3],
            });
        }
        let ledger = Ledger {
            table: TableName::default(),
            run_tag: 7,
            writers: 4,
            started_ms: T0,
            ended_ms: T0 + 8000,
            acked,
            in_doubt: Vec::new(),
            failed_attempts: 12,
            failure_reasons: BTreeMap::from([("server error 1290".to_string(), 12)]),
            outages: outages.clone(),
            writer_outages: outages,
            split_brain: Vec::new(),
            pinned: None,
        };
        let writer = ledger.acked.last().unwrap().server.clone();
        let verification = Verification {
            writer: writer.clone(),
            per_instance: vec![InstanceCheck {
                addr: writer,
                reachable: true,
                error: None,
                retried: None,
                rows: ledger.acked.len(),
                missing: Vec::new(),
                present_in_doubt: 0,
            }],
            lost: Vec::new(),
        };
        Sim {
            ledger,
            verification,
            events: Vec::new(),
            aborted: None,
        }
    }

    fn event(mut self, at_ms: u64, kind: EventKind, label: &str) -> Sim {
        self.events.push(TimelineEvent::new(at_ms, kind, label));
        self
    }

    /// Mark the acknowledged write `index` as lost.
    fn lose(mut self, index: usize) -> Sim {
        let a = self.ledger.acked[index].clone();
        self.verification.per_instance[0].missing.push(a.id);
        self.verification.lost.push(a);
        self
    }

    fn build(&self, s: &Scenario) -> RunResult {
        RunResult::build(RunParts {
            scenario: s,
            cluster: "demo".into(),
            ledger: &self.ledger,
            verification: Ok(&self.verification),
            events: self.events.clone(),
            ended_ms: T0 + 9500,
            aborted: self.aborted.clone(),
            guard_split_brain: Vec::new(),
            guard_mute: Vec::new(),
        })
    }
}

/// A kill-primary run as dbfleet does it: an outage from 2.0 s to 4.5 s, with the control
/// plane's events.
fn failover_run() -> Sim {
    Sim::new(Some((2000, Some(4500), 3307)))
        .event(
            2000,
            EventKind::FaultInjected,
            "SIGKILL 127.0.0.1:3306 (primary)",
        )
        .event(2300, EventKind::Detected, "dead primary 127.0.0.1:3306")
        .event(2350, EventKind::FailoverStarted, "failover 12 started")
        .event(3000, EventKind::Promoted, "promoted 127.0.0.1:3307")
        .event(3100, EventKind::Writable, "127.0.0.1:3307 writable")
        .event(3200, EventKind::Repointed, "127.0.0.1:3308 repointed")
        .event(8000, EventKind::FaultHealed, "started 127.0.0.1:3306 again")
}

fn verdict<'a>(vs: &'a [Verdict], starts: &str) -> &'a Verdict {
    vs.iter()
        .find(|v| v.expectation.starts_with(starts))
        .unwrap_or_else(|| panic!("no verdict {starts:?} in {vs:#?}"))
}

#[test]
fn a_clean_failover_passes_with_its_figures() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let r = failover_run().build(&s);
    let f = &r.figures;
    assert_eq!(f.source, FigureSource::ControlPlane);
    assert_eq!(f.rto_ms, 2500);
    assert!(!f.rto_open);
    assert_eq!(f.detection_ms, Some(300));
    assert_eq!(f.failover_ms, Some(750));
    assert_eq!(f.failovers, 1);
    assert_eq!(f.primary_changes, 1);
    assert_eq!(f.primaries, vec![addr(3306), addr(3307)]);
    // The first write after the outage is added from the ledger.
    let first = r
        .timeline
        .iter()
        .find(|e| e.kind == EventKind::FirstWrite)
        .unwrap();
    assert_eq!(first.at_ms, 4500);
    assert!(first.label.contains("127.0.0.1:3307"), "{}", first.label);
    assert!(r.timeline.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert_eq!(r.throughput.acked.iter().sum::<u32>() as u64, r.load.acked);

    let vs = judge(&s, &r);
    assert!(passed(&vs), "{vs:#?}");
    assert!(verdict(&vs, "at most 0 lost writes")
        .detail
        .contains("none of"));
    assert!(verdict(&vs, "client RTO").detail.contains("2.5s"));
}

#[test]
fn a_lost_write_fails_and_is_named_with_its_gtid() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let sim = failover_run().lose(39);
    let lost = sim.ledger.acked[39].clone();
    let r = sim.build(&s);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(r.lost[0].id, lost.id);
    assert_eq!(r.lost[0].acked_at_ms, lost.at_ms - T0);
    let vs = judge(&s, &r);
    assert!(!passed(&vs));
    let v = verdict(&vs, "at most 0 lost writes");
    assert!(!v.pass);
    assert!(v.detail.contains(&lost.id.to_string()), "{}", v.detail);
    assert!(v.detail.contains("GTID 0-1-40"), "{}", v.detail);

    // An allowance of one lets it pass.
    let mut lenient = s.clone();
    lenient.expect.lost_writes_allowed = 1;
    assert!(verdict(&judge(&lenient, &r), "at most 1 lost write").pass);
}

#[test]
fn unverified_writes_fail_the_lost_writes_verdict() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let sim = failover_run();
    let r = RunResult::build(RunParts {
        scenario: &s,
        cluster: "demo".into(),
        ledger: &sim.ledger,
        verification: Err("connect on 127.0.0.1:3307: refused".into()),
        events: sim.events.clone(),
        ended_ms: T0 + 9000,
        aborted: None,
        guard_split_brain: Vec::new(),
        guard_mute: Vec::new(),
    });
    let v = verdict(&judge(&s, &r), "at most 0 lost writes").clone();
    assert!(!v.pass);
    assert!(v.detail.contains("not verified"), "{}", v.detail);
}

#[test]
fn a_failover_where_none_may_happen_fails() {
    let s = Scenario::builtin("partition-control-plane").unwrap();
    // Client-side only: the writers moved from :3306 to :3307.
    let r = Sim::new(Some((2500, Some(3200), 3307))).build(&s);
    assert_eq!(r.figures.source, FigureSource::ClientOnly);
    assert_eq!(r.figures.failovers, 1);
    let vs = judge(&s, &r);
    let v = verdict(&vs, "no failover");
    assert!(!v.pass, "{v:?}");
    assert!(
        v.detail.contains("127.0.0.1:3306 → 127.0.0.1:3307"),
        "{}",
        v.detail
    );
    assert!(!verdict(&vs, "the primary moves exactly 0 times").pass);
    assert!(!passed(&vs));

    // And with no move at all it passes.
    let r = Sim::new(None).build(&s);
    let vs = judge(&s, &r);
    assert!(passed(&vs), "{vs:#?}");
    assert_eq!(verdict(&vs, "client RTO").detail, "no outage; limit 2s");
}

#[test]
fn a_switchover_is_not_a_failover() {
    let s = Scenario::builtin("switchover-under-load").unwrap();
    let r = Sim::new(Some((2000, Some(2600), 3307)))
        .event(
            2000,
            EventKind::FaultInjected,
            "switchover to 127.0.0.1:3307",
        )
        .build(&s);
    assert_eq!(r.figures.primary_changes, 1);
    assert_eq!(r.figures.failovers, 0);
    let vs = judge(&s, &r);
    assert!(passed(&vs), "{vs:#?}");
}

#[test]
fn a_second_failover_inside_the_block_window_fails_anti_flapping() {
    let s = Scenario::builtin("kill-primary-twice").unwrap();
    let once = failover_run()
        .event(6000, EventKind::FaultInjected, "SIGKILL 127.0.0.1:3307")
        .event(6200, EventKind::Detected, "dead primary 127.0.0.1:3307")
        .event(6210, EventKind::Note, "failover blocked: block window");
    assert!(passed(&judge(&s, &once.build(&s))));
    let twice = once.event(6300, EventKind::FailoverStarted, "failover 13 started");
    let vs = judge(&s, &twice.build(&s));
    let v = verdict(&vs, "exactly 1 failover");
    assert!(!v.pass, "{v:?}");
    assert!(v.detail.starts_with("2 failovers"), "{}", v.detail);
}

#[test]
fn an_rto_over_the_limit_fails() {
    let s = Scenario::builtin("kill-primary").unwrap();
    // 2 s to 7.5 s is 5.5 s: within 10 s.
    let r = Sim::new(Some((2000, Some(7500), 3307))).build(&s);
    assert!(verdict(&judge(&s, &r), "client RTO").pass);
    let mut strict = s.clone();
    strict.expect.max_rto = Some(Duration::from_secs(5));
    let v = verdict(&judge(&strict, &r), "client RTO at most 5s").clone();
    assert!(!v.pass);
    assert!(v.detail.contains("5.5s"), "{}", v.detail);

    // An outage still open at the end counts to the end of the load.
    let r = Sim::new(Some((1000, None, 3307))).build(&strict);
    assert_eq!(r.figures.rto_ms, 7000);
    assert!(r.figures.rto_open);
    let v = verdict(&judge(&strict, &r), "client RTO").clone();
    assert!(!v.pass);
    assert!(v.detail.contains("still open"), "{}", v.detail);
}

#[test]
fn split_brain_abort_and_unmeasured_detection_fail() {
    let mut s = Scenario::builtin("kill-primary").unwrap();
    let mut sim = failover_run();
    sim.ledger.split_brain.push(SplitBrain {
        at_ms: T0 + 4000,
        writer: 1,
        writable: vec![addr(3306), addr(3307)],
    });
    sim.aborted = Some("two writable primaries".into());
    let r = sim.build(&s);
    assert!(r.timeline.iter().any(|e| e.kind == EventKind::Aborted));
    let vs = judge(&s, &r);
    let sb = verdict(&vs, "never two writable primaries");
    assert!(!sb.pass);
    assert!(
        sb.detail.contains("127.0.0.1:3306, 127.0.0.1:3307"),
        "{}",
        sb.detail
    );
    assert!(!verdict(&vs, "the run completes without abort").pass);

    // A cluster failed over by another tool has no detection figure: a bound on it fails.
    s.expect.max_detection = Some(Duration::from_secs(1));
    let r = Sim::new(Some((2000, Some(4500), 3307))).build(&s);
    assert_eq!(r.figures.detection_ms, None);
    let v = verdict(&judge(&s, &r), "detection within").clone();
    assert!(!v.pass);
    assert!(v.detail.contains("not measured"), "{}", v.detail);
    // With the control plane's events it is measured and judged.
    let r = failover_run().build(&s);
    assert!(verdict(&judge(&s, &r), "detection within 1s").pass);
}

#[test]
fn verdicts_line_up_across_runs() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let a = judge(&s, &failover_run().build(&s));
    let b = judge(&s, &Sim::new(None).build(&s));
    let names = |v: &[Verdict]| v.iter().map(|v| v.expectation.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
}

#[test]
fn aggregate_percentiles_on_known_inputs() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let mut runs = Vec::new();
    // RTOs 500 ms, 1000 ms, …, 5000 ms; detection measured in the even runs only.
    for i in 1..=10u64 {
        let mut sim = Sim::new(Some((2000, Some(2000 + 500 * i), 3307)));
        if i % 2 == 0 {
            sim = sim.event(2000, EventKind::FaultInjected, "kill").event(
                2000 + 10 * i,
                EventKind::Detected,
                "dead primary",
            );
        }
        if i == 3 {
            sim = sim.lose(0).lose(1);
        }
        runs.push(sim.build(&s));
    }
    let agg = aggregate(&runs);
    assert_eq!(agg.runs, 10);
    let rto = agg.rto.unwrap();
    assert_eq!(
        (rto.samples, rto.min_ms, rto.p50_ms, rto.p95_ms, rto.max_ms),
        (10, 500, 2500, 5000, 5000)
    );
    let det = agg.detection.unwrap();
    assert_eq!(
        (det.samples, det.p50_ms, det.p95_ms, det.max_ms),
        (5, 60, 100, 100)
    );
    assert!(agg.failover.is_none());
    assert_eq!(agg.lost_total, 2);
    assert_eq!(
        agg.acked_total,
        runs.iter().map(|r| r.load.acked).sum::<u64>()
    );
    assert_eq!(agg.unverified, 0);
    assert_eq!(aggregate(&[]).rto, None);
}

// ---------------------------------------------------------------------------------------
// Reports

const EVIL: &str = "<script>alert('x')</script> & \"quoted\"";

#[test]
fn the_html_report_is_self_contained_safe_and_complete() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let good = failover_run().event(5000, EventKind::Note, EVIL).build(&s);
    let bad = failover_run().lose(10).build(&s);
    let lost = bad.lost[0].clone();
    let runs = vec![good, bad];
    let agg = aggregate(&runs);
    let html = render_html(&s, &runs, &agg);

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    assert!(html.contains("<svg"), "no chart");
    assert_eq!(html.matches("<svg").count(), 2, "one chart per run");
    assert!(html.contains("<title>DRT kill-primary: FAIL</title>"));
    assert!(html.contains(r#"<span class="badge fail big">FAIL</span>"#));
    assert!(html.contains(r#"<span class="badge pass">PASS</span>"#));
    assert!(html.contains("at most 0 lost writes"));
    assert!(html.contains("passed in 1 of 2 runs"));
    // The lost write with its id and GTID.
    assert!(html.contains(&format!("<code>{}</code>", lost.id)));
    assert!(html.contains(&format!("<code>{}</code>", lost.gtid.unwrap())));
    // Markers with labels, and the outage band.
    for label in [
        "SIGKILL 127.0.0.1:3306 (primary)",
        "promoted 127.0.0.1:3307",
        "load ends",
    ] {
        assert!(html.contains(label), "{label}");
    }
    assert!(html.contains("outage 2.5s"));
    // Escaped, everywhere it appears.
    let lower = html.to_lowercase();
    assert!(!lower.contains("<script"), "unescaped script");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;")
    );
    // Nothing from elsewhere.
    for bad in [
        "http://", "https://", "src=", "href=", "url(", "@import", "<link",
    ] {
        assert!(!lower.contains(bad), "{bad} in the report");
    }
    // No JavaScript needed.
    assert!(!lower.contains("javascript") && !lower.contains("onclick"));
}

#[test]
fn an_example_report_has_a_sane_size() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let runs: Vec<RunResult> = (0..10).map(|_| failover_run().build(&s)).collect();
    let report = Report::new(s.clone(), runs);
    assert!(report.pass, "{:#?}", report.verdicts);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill-primary.html");
    std::fs::write(&path, report.html()).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        (10_000..1_000_000).contains(&size),
        "a 10-run report of {size} bytes"
    );
    let one = render_html(&s, &report.runs[..1], &aggregate(&report.runs[..1]));
    assert!((5_000..200_000).contains(&one.len()), "{}", one.len());
    // `DRT_EXAMPLE_REPORT=/tmp/x.html` keeps a varied example to look at.
    if let Ok(dest) = std::env::var("DRT_EXAMPLE_REPORT") {
        let mut broken = failover_run()
            .lose(5)
            .lose(6)
            .event(4000, EventKind::Note, EVIL);
        broken.ledger.split_brain.push(SplitBrain {
            at_ms: T0 + 4600,
            writer: 2,
            writable: vec![addr(3306), addr(3307)],
        });
        let mut open = Sim::new(Some((5000, None, 3307)))
            .event(
                5000,
                EventKind::FaultInjected,
                "SIGKILL 127.0.0.1:3306 (primary)",
            )
            .event(5200, EventKind::Detected, "dead primary 127.0.0.1:3306");
        open.aborted = Some("no writable primary after the max RTO (10s)".into());
        let runs = vec![failover_run().build(&s), broken.build(&s), open.build(&s)];
        std::fs::write(dest, Report::new(s.clone(), runs).html()).unwrap();
    }

    // The JSON form reads back the same.
    let json = serde_json::to_string(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn the_text_report_shows_verdicts_figures_and_lost_ids() {
    let s = Scenario::builtin("kill-primary").unwrap();
    let r = failover_run().lose(3).build(&s);
    let id = r.lost[0].id;
    let text = render_text(
        &s,
        std::slice::from_ref(&r),
        &aggregate(std::slice::from_ref(&r)),
    );
    assert!(
        text.starts_with("DRT kill-primary on demo: FAIL (1 run)"),
        "{text}"
    );
    assert!(text.contains("FAIL  at most 0 lost writes"), "{text}");
    assert!(text.contains("PASS  a failover happens"), "{text}");
    assert!(text.contains(&format!("id {id}  GTID 0-1-4")), "{text}");
    assert!(text.contains("detected"), "{text}");
    assert!(text.contains("RTO        p50 2.5s"), "{text}");

    let many: Vec<RunResult> = vec![failover_run().build(&s), r];
    let text = render_text(&s, &many, &aggregate(&many));
    assert!(
        text.contains("at most 0 lost writes: passed in 1 of 2 runs"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Hard faults (issue 13): the new built-ins, keys and fault kinds, and the stale-client
// accounting.

#[test]
fn the_hard_fault_builtins_say_what_issue_13_asks() {
    for (name, pause) in [("pause-primary-8s", 8), ("pause-primary-20s", 20)] {
        let s = Scenario::builtin(name).unwrap();
        assert_eq!(s.faults[0].kind, FaultKind::PausePrimary, "{name}");
        assert_eq!(
            s.faults[0].heal,
            Heal::After(Duration::from_secs(pause)),
            "{name}"
        );
        // The load goes on after the resume, so a late fence shows.
        assert!(s.faults[0].heal_at(s.load.duration).unwrap() < s.load.duration);
        assert!(s.load.stale_client, "{name}");
        assert_eq!(s.expect.failover, FailoverExpectation::Must, "{name}");
        assert_eq!(s.expect.failovers, Some(1), "{name}");
    }
    // The 4 s pause stays: a short hiccup, failover or not.
    let short = Scenario::builtin("pause-primary").unwrap();
    assert_eq!(short.expect.failover, FailoverExpectation::Any);

    let bh = Scenario::builtin("blackhole-primary").unwrap();
    assert_eq!(bh.faults[0].kind, FaultKind::PartitionPrimary);
    assert_eq!(bh.faults[0].heal, Heal::After(Duration::from_secs(30)));
    assert!(bh.load.stale_client);
    assert!(bh.faults[0].heal_at(bh.load.duration).unwrap() < bh.load.duration);

    let delayed = Scenario::builtin("kill-primary-with-delayed-replica").unwrap();
    assert_eq!(
        delayed.faults[0].kind,
        FaultKind::DelayReplica {
            delay: Duration::from_secs(30)
        }
    );
    assert_eq!(delayed.faults[0].target, Target::Replica);
    assert_eq!(delayed.faults[1].kind, FaultKind::KillPrimary);
    assert!(delayed.faults[1].at > delayed.faults[0].at);
    assert_eq!(delayed.expect.failover, FailoverExpectation::Must);

    let broken = Scenario::builtin("kill-primary-with-broken-replica").unwrap();
    assert_eq!(broken.faults[0].kind, FaultKind::BreakReplicaSql);
    assert_eq!(broken.faults[1].kind, FaultKind::KillPrimary);
    assert_eq!(broken.expect.failover, FailoverExpectation::Must);

    let lose = Scenario::builtin("lose-primary-and-best-replica").unwrap();
    assert_eq!(lose.faults[0].kind, FaultKind::StallReplicaStream);
    assert_eq!(lose.faults[1].kind, FaultKind::KillReplica);
    assert_eq!(lose.faults[1].target, Target::BestReplica);
    assert_eq!(lose.faults[2].kind, FaultKind::KillPrimary);
    // Handed to a human; once the dead replica is back (its heal, with the primary still
    // dead), its relay log is applied and it is promoted: one failover.
    assert_eq!(lose.expect.failover, FailoverExpectation::Must);
    assert_eq!(lose.expect.failovers, Some(1));
    assert_eq!(lose.expect.needs_human, Some(true));
    assert_eq!(
        lose.faults[1].heal_at(lose.load.duration),
        Some(Duration::from_secs(8))
    );
    // The stall first, 1 s before; then, at the same instant, the best replica before the
    // primary (file order), so it cannot be promoted in between.
    let plan: Vec<(u128, usize, StepAction)> = lose
        .plan()
        .iter()
        .map(|s| (s.at.as_millis(), s.fault, s.action))
        .collect();
    assert_eq!(
        &plan[..3],
        &[
            (2000, 0, StepAction::Inject),
            (3000, 1, StepAction::Inject),
            (3000, 2, StepAction::Inject),
        ]
    );
}

const HARD: &str = r#"
name = "hard"
description = "The new keys."

[load]
duration = "20s"
stale_client = true

[[fault]]
kind = "delay_replica"
target = "m2"
delay = "30s"
at = "1s"

[[fault]]
kind = "break_replica_sql"
at = "2s"

[[fault]]
kind = "stall_replica_stream"
at = "3s"
heal_after = "1s"

[[fault]]
kind = "kill_replica"
target = "best_replica"
at = "4s"

[expect]
failover = "must_not"
needs_human = true
stale_acks_allowed = 2
"#;

#[test]
fn the_new_keys_and_kinds_parse_and_round_trip() {
    let s = parse(HARD).unwrap();
    assert!(s.load.stale_client);
    assert_eq!(
        s.faults[0].kind,
        FaultKind::DelayReplica {
            delay: Duration::from_secs(30)
        }
    );
    assert_eq!(s.faults[0].target, Target::Member("m2".into()));
    assert_eq!(s.faults[1].kind, FaultKind::BreakReplicaSql);
    assert_eq!(s.faults[1].target, Target::Replica);
    assert_eq!(s.faults[2].kind, FaultKind::StallReplicaStream);
    assert_eq!(s.faults[2].heal, Heal::After(Duration::from_secs(1)));
    assert_eq!(s.faults[3].target, Target::BestReplica);
    assert_eq!(s.expect.needs_human, Some(true));
    assert_eq!(s.expect.stale_acks_allowed, 2);
    assert_eq!(s.faults[0].kind.to_string(), "delay_replica (30s)");
    let again = Scenario::from_toml(&s.to_toml(), "round-trip").unwrap();
    assert_eq!(again, s);
    let json: Scenario = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(json, s);

    // Defaults: no stale client, no stale acknowledgement allowed, needs_human not judged.
    let g = parse(GOOD).unwrap();
    assert!(!g.load.stale_client);
    assert_eq!(g.expect.stale_acks_allowed, 0);
    assert_eq!(g.expect.needs_human, None);
}

#[test]
fn bad_new_keys_name_their_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("delay = \"30s\"\n", "", "fault[0].delay"),
        ("delay = \"30s\"", "delay = \"0s\"", "fault[0].delay"),
        ("delay = \"30s\"", "delay = \"1500ms\"", "fault[0].delay"),
        ("delay = \"30s\"", "delay = \"2h\"", "fault[0].delay"),
        (
            "kind = \"break_replica_sql\"\n",
            "kind = \"break_replica_sql\"\ndelay = \"3s\"\n",
            "fault[1].delay",
        ),
        (
            "kind = \"break_replica_sql\"\n",
            "kind = \"break_replica_sql\"\ntarget = \"primary\"\n",
            "fault[1].target",
        ),
        (
            "stale_client = true",
            "stale_client = \"yes\"",
            "load.stale_client",
        ),
        (
            "stale_acks_allowed = 2",
            "stale_acks_allowed = -1",
            "expect.stale_acks_allowed",
        ),
        (
            "needs_human = true",
            "needs_humans = true",
            "expect.needs_humans",
        ),
    ];
    for (from, to, field) in cases {
        assert!(HARD.contains(from), "{from}");
        let text = HARD.replacen(from, to, 1);
        let e = parse(&text).expect_err(&format!("{from:?} → {to:?} must fail"));
        assert!(
            fields(&e).iter().any(|f| f == field),
            "{from:?} → {to:?}: {e} names {:?}, not {field}",
            fields(&e)
        );
    }
    // best_replica is no target for a fault on the primary.
    let e = parse(&GOOD.replacen(
        "kind = \"kill_primary\"\nat",
        "kind = \"kill_primary\"\ntarget = \"best_replica\"\nat",
        1,
    ))
    .unwrap_err();
    assert_eq!(fields(&e), vec!["fault[1].target"], "{e}");
}

#[test]
fn stale_client_override() {
    let s = Scenario::builtin("kill-primary").unwrap();
    assert!(!s.load.stale_client);
    let on = s
        .with_overrides(&Overrides {
            stale_client: Some(true),
            ..Default::default()
        })
        .unwrap();
    assert!(on.load.stale_client);
    assert!(on.to_toml().contains("stale_client = true"));
}

/// A failover run (:3306 → :3307, writable at 3.1 s) with a stale client (writer 4) that
/// stays on :3306 and has writes acknowledged there at `stale_at` (ms).
fn stale_run(stale_at: &[u64]) -> Sim {
    let mut sim = failover_run();
    let times = (0..2000).step_by(100).chain(stale_at.iter().copied());
    for (id, t) in (10_000..).zip(times) {
        sim.ledger.acked.push(Ack {
            id,
            writer: 4,
            at_ms: T0 + t,
            sent_ms: T0 + t,
            gtid: None,
            server: addr(3306),
        });
    }
    sim.ledger.acked.sort_by_key(|a| a.at_ms);
    sim.ledger.writers = 5;
    sim.ledger.pinned = Some(drt::load::PinnedWriter {
        writer: 4,
        addr: addr(3306),
    });
    sim
}

#[test]
fn writes_the_old_primary_acknowledges_after_the_new_one_opened_fail_the_run() {
    let s = Scenario::builtin("pause-primary-8s").unwrap();
    // Before the new primary opened (3.1 s): not stale. After: stale, named.
    let r = stale_run(&[2500, 3000, 10_500, 10_600]).build(&s);
    assert_eq!(r.stale.old_primary, Some(addr(3306)));
    assert_eq!(r.stale.opened_ms, Some(3100));
    assert_eq!(r.stale.opened_seen_by.as_deref(), Some("control plane"));
    assert_eq!(r.stale.acked_after_open, 2);
    assert_eq!(
        (r.stale.first_ms, r.stale.last_ms),
        (Some(10_500), Some(10_600))
    );
    assert_eq!(r.stale.pinned_writer, Some(4));
    assert_eq!(r.stale.pinned_acked, 24);
    assert_eq!(r.figures.writable_ms, Some(1100));
    let vs = judge(&s, &r);
    let v = verdict(&vs, "at most 0 writes acknowledged by the old primary");
    assert!(!v.pass, "{v:?}");
    assert!(
        v.detail.contains("acknowledged 2 writes after it"),
        "{}",
        v.detail
    );
    assert!(v.detail.contains("ids 10022, 10023"), "{}", v.detail);
    assert!(!passed(&vs));
    let text = render_text(
        &s,
        std::slice::from_ref(&r),
        &aggregate(std::slice::from_ref(&r)),
    );
    assert!(text.contains("stale acks 2"), "{text}");
    assert!(render_html(
        &s,
        std::slice::from_ref(&r),
        &aggregate(std::slice::from_ref(&r))
    )
    .contains("after the new one opened"));
    assert_eq!(aggregate(std::slice::from_ref(&r)).stale_acks_total, 2);

    // None after the opening: it passes, and says so.
    let r = stale_run(&[2500]).build(&s);
    assert_eq!(r.stale.acked_after_open, 0);
    let v = verdict(&judge(&s, &r), "at most 0 writes").clone();
    assert!(v.pass, "{v:?}");
    assert!(
        v.detail.contains("acknowledged nothing after it"),
        "{}",
        v.detail
    );

    // Without control-plane events the clients' first write on :3307 (4.5 s) opens it.
    let mut sim = stale_run(&[4000, 5000]);
    sim.events.retain(|e| !e.kind.from_control_plane());
    let r = sim.build(&s);
    assert_eq!(r.stale.opened_ms, Some(4500));
    assert_eq!(r.stale.opened_seen_by.as_deref(), Some("clients"));
    assert_eq!(r.stale.new_primary, Some(addr(3307)));
    assert_eq!(r.stale.acked_after_open, 1);

    // Judged on every run, stale client or not: a run with no new primary has none.
    let k = Scenario::builtin("kill-replica").unwrap();
    let r = Sim::new(None).build(&k);
    assert_eq!(r.stale.opened_ms, None);
    assert!(verdict(&judge(&k, &r), "at most 0 writes").pass);
}

#[test]
fn a_failover_handed_to_a_human_is_judged_and_is_no_failover() {
    // The built-in expects the retry to promote; judged here is a "must not" variant.
    let mut s = Scenario::builtin("lose-primary-and-best-replica").unwrap();
    s.expect.failover = FailoverExpectation::MustNot;
    s.expect.failovers = None;
    let handed = || {
        Sim::new(Some((3000, None, 3307)))
            .event(3000, EventKind::FaultInjected, "kill_primary m1")
            .event(3020, EventKind::Detected, "DeadPrimary on 127.0.0.1:3306")
            .event(3050, EventKind::FailoverStarted, "failover 7 started")
            .event(
                3100,
                EventKind::NeedsHuman,
                "failover 7 needs a human: 0-1-1234 may be lost",
            )
    };
    let r = handed().build(&s);
    assert_eq!(r.figures.failovers, 0);
    let vs = judge(&s, &r);
    assert!(verdict(&vs, "no failover").pass);
    let v = verdict(&vs, "the control plane hands the failover to a human");
    assert!(v.pass, "{v:?}");
    assert!(v.detail.contains("0-1-1234"), "{}", v.detail);

    // Handed over, then a promotion once the dead replica is back: a failover.
    let retried = Sim::new(Some((3000, Some(8600), 3308)))
        .event(3000, EventKind::FaultInjected, "kill_primary m1")
        .event(3050, EventKind::FailoverStarted, "failover 7 started")
        .event(3100, EventKind::NeedsHuman, "failover 7 needs a human")
        .event(8500, EventKind::FailoverStarted, "failover 8 started")
        .event(8600, EventKind::Writable, "operation 8: writes open");
    let r = retried.build(&s);
    assert_eq!(r.figures.failovers, 1);
    let vs = judge(&s, &r);
    assert!(!verdict(&vs, "no failover").pass);
    assert!(verdict(&vs, "the control plane hands the failover to a human").pass);

    // A promotion instead: a failover, and no hand-over.
    let promoted = Sim::new(Some((3000, Some(3500), 3307)))
        .event(3000, EventKind::FaultInjected, "kill_primary m1")
        .event(3050, EventKind::FailoverStarted, "failover 8 started")
        .event(3100, EventKind::Writable, "operation 8: writes open");
    let r = promoted.build(&s);
    assert_eq!(r.figures.failovers, 1);
    let vs = judge(&s, &r);
    assert!(!verdict(&vs, "no failover").pass);
    assert!(!verdict(&vs, "the control plane hands the failover to a human").pass);

    // Without the control plane's events it cannot be told: it fails, saying why.
    let r = Sim::new(None).build(&s);
    let v = verdict(&judge(&s, &r), "the control plane hands").clone();
    assert!(!v.pass && v.detail.contains("--api"), "{v:?}");

    // A failed failover is no failover either.
    let failed = Sim::new(Some((3000, None, 3307)))
        .event(3000, EventKind::FaultInjected, "kill_primary m1")
        .event(3050, EventKind::FailoverStarted, "failover 9 started")
        .event(3100, EventKind::FailoverFailed, "failover 9 failed: boom");
    assert_eq!(failed.build(&s).figures.failovers, 0);
}

#[test]
fn operation_events_map_to_needs_human_and_failed() {
    let body = serde_json::json!({"events": [
        {"at_ms": 1000, "kind": "operation_finished", "instance": "127.0.0.1:3306",
         "message": "failover 7 of demo needs_human: 0-1-9 may be lost",
         "data": {"operation_id": 7, "kind": "failover", "state": "needs_human"}},
        {"at_ms": 1100, "kind": "operation_finished", "instance": "127.0.0.1:3306",
         "message": "failover 8 of demo failed: boom",
         "data": {"operation_id": 8, "kind": "failover", "state": "failed"}},
        {"at_ms": 1200, "kind": "operation_finished", "instance": "127.0.0.1:3306",
         "message": "switchover 9 of demo needs_human: x",
         "data": {"operation_id": 9, "kind": "switchover", "state": "needs_human"}},
    ]});
    let evs = drt::runner::map_events(&body, 0, 5000);
    let kinds: Vec<EventKind> = evs.iter().map(|e| e.1).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::NeedsHuman,
            EventKind::FailoverFailed,
            EventKind::Note
        ]
    );
    assert!(evs[0].2.contains("0-1-9 may be lost"), "{}", evs[0].2);
}

#[test]
fn a_late_acknowledgement_of_a_write_the_new_primary_holds_is_named_but_not_stale() {
    let s = Scenario::builtin("pause-primary-8s").unwrap();
    // The stale client's writes acknowledged by :3306 at 10.5 s and 10.6 s, after the new
    // primary opened (3.1 s). The first was sent at 1.9 s, before the fault (2.0 s): its
    // replica's ack waited in the frozen server. The second was sent after the fault.
    let mut sim = stale_run(&[10_500, 10_600]);
    let first = sim
        .ledger
        .acked
        .iter()
        .position(|a| a.at_ms == T0 + 10_500)
        .unwrap();
    sim.ledger.acked[first].sent_ms = T0 + 1900;
    let late_id = sim.ledger.acked[first].id;
    let r = sim.build(&s);
    assert_eq!(r.stale.late_after_open, 1);
    assert_eq!(r.stale.late_ids, vec![late_id]);
    assert_eq!(r.stale.acked_after_open, 1, "the one sent after the fault");
    let v = verdict(
        &judge(&s, &r),
        "at most 0 writes acknowledged by the old primary",
    )
    .clone();
    assert!(!v.pass, "{v:?}");
    assert!(v.detail.contains("1 late acknowledgement"), "{}", v.detail);
    assert_eq!(aggregate(std::slice::from_ref(&r)).late_acks_total, 1);

    // Sent before the fault and acknowledged late alone: the run passes.
    let mut sim = stale_run(&[10_500]);
    let i = sim
        .ledger
        .acked
        .iter()
        .position(|a| a.at_ms == T0 + 10_500)
        .unwrap();
    sim.ledger.acked[i].sent_ms = T0 + 1900;
    let r = sim.build(&s);
    assert_eq!((r.stale.acked_after_open, r.stale.late_after_open), (0, 1));
    assert!(verdict(&judge(&s, &r), "at most 0 writes").pass);

    // The same write missing on the new primary is no late acknowledgement: it is stale
    // (and lost).
    let r = stale_run(&[10_500]).build(&s);
    assert_eq!(r.stale.acked_after_open, 1, "sent after the fault");
    let mut sim = stale_run(&[10_500]);
    sim.ledger.acked[i].sent_ms = T0 + 1900;
    let r = sim.lose(i).build(&s);
    assert_eq!((r.stale.acked_after_open, r.stale.late_after_open), (1, 0));
    assert!(!verdict(&judge(&s, &r), "at most 0 writes").pass);
}

#[test]
fn a_second_writable_server_that_cannot_acknowledge_is_counted_apart() {
    let s = Scenario::builtin("pause-primary-8s").unwrap();
    let sim = stale_run(&[]);
    let r = RunResult::build(RunParts {
        scenario: &s,
        cluster: "demo".into(),
        ledger: &sim.ledger,
        verification: Ok(&sim.verification),
        events: sim.events.clone(),
        ended_ms: T0 + 9500,
        aborted: None,
        guard_split_brain: Vec::new(),
        guard_mute: vec![MuteLook {
            since_ms: T0 + 9_500,
            at_ms: T0 + 10_000,
            writable: vec![addr(3306), addr(3307)],
            mute: vec![addr(3306)],
        }],
    });
    let sb = &r.load.split_brain;
    assert_eq!(
        (sb.rounds, sb.guard_rounds, sb.guard_mute_rounds),
        (0, 0, 1)
    );
    assert_eq!(sb.guard_mute_last_at_ms, Some(10_000));
    let v = verdict(&judge(&s, &r), "never two writable primaries").clone();
    assert!(v.pass, "{v:?}");
    assert!(v.detail.contains("1 look of the guard"), "{}", v.detail);
    assert!(v.detail.contains("could not acknowledge"), "{}", v.detail);
}

#[test]
fn a_writers_round_is_counted_apart_only_inside_a_mute_look_of_the_guard() {
    let s = Scenario::builtin("pause-primary-8s").unwrap();
    let mut sim = stale_run(&[]);
    let look = MuteLook {
        since_ms: T0 + 5_000,
        at_ms: T0 + 5_400,
        writable: vec![addr(3306), addr(3307)],
        mute: vec![addr(3306)],
    };
    // Inside the look's span and a second after it: explained. Before the look before it
    // started: not proven, a split brain.
    for at in [5_200, 6_300, 4_900] {
        sim.ledger.split_brain.push(SplitBrain {
            at_ms: T0 + at,
            writer: 1,
            writable: vec![addr(3306), addr(3307)],
        });
    }
    // A third writable server the look did not prove mute: a split brain.
    sim.ledger.split_brain.push(SplitBrain {
        at_ms: T0 + 5_300,
        writer: 2,
        writable: vec![addr(3306), addr(3307), addr(3308)],
    });
    let r = RunResult::build(RunParts {
        scenario: &s,
        cluster: "demo".into(),
        ledger: &sim.ledger,
        verification: Ok(&sim.verification),
        events: sim.events.clone(),
        ended_ms: T0 + 9500,
        aborted: None,
        guard_split_brain: Vec::new(),
        guard_mute: vec![look.clone()],
    });
    let sb = &r.load.split_brain;
    assert_eq!((sb.rounds, sb.mute_rounds), (2, 2));
    assert_eq!(sb.first_at_ms, Some(4_900));
    let v = verdict(&judge(&s, &r), "never two writable primaries").clone();
    assert!(!v.pass, "{v:?}");

    // Only the explained rounds: the verdict passes and says why.
    sim.ledger
        .split_brain
        .retain(|x| x.at_ms != T0 + 4_900 && x.writer != 2);
    let r = RunResult::build(RunParts {
        scenario: &s,
        cluster: "demo".into(),
        ledger: &sim.ledger,
        verification: Ok(&sim.verification),
        events: sim.events.clone(),
        ended_ms: T0 + 9500,
        aborted: None,
        guard_split_brain: Vec::new(),
        guard_mute: vec![look],
    });
    let v = verdict(&judge(&s, &r), "never two writable primaries").clone();
    assert!(v.pass, "{v:?}");
    assert!(
        v.detail.contains("2 probe rounds of the writers"),
        "{}",
        v.detail
    );
}

#[test]
fn the_guards_sightings_of_two_writable_primaries_fail_the_run_it_did_not_abort() {
    let s = Scenario::builtin("pause-primary-8s").unwrap();
    let sim = stale_run(&[]);
    let r = RunResult::build(RunParts {
        scenario: &s,
        cluster: "demo".into(),
        ledger: &sim.ledger,
        verification: Ok(&sim.verification),
        events: sim.events.clone(),
        ended_ms: T0 + 9500,
        aborted: None,
        guard_split_brain: vec![
            (T0 + 10_000, vec![addr(3306), addr(3307)]),
            (T0 + 10_200, vec![addr(3306), addr(3307)]),
        ],
        guard_mute: Vec::new(),
    });
    let sb = &r.load.split_brain;
    assert_eq!((sb.rounds, sb.guard_rounds), (0, 2));
    assert_eq!(
        (sb.first_at_ms, sb.guard_last_at_ms),
        (Some(10_000), Some(10_200))
    );
    let v = verdict(&judge(&s, &r), "never two writable primaries").clone();
    assert!(!v.pass, "{v:?}");
    assert!(v.detail.contains("2 looks of the guard"), "{}", v.detail);
    assert!(r
        .timeline
        .iter()
        .any(|e| e.label.contains("the guard saw it 2 times until 10.2s")));
}

// ---------------------------------------------------------------------------------------
// Disk faults (issue 21): the built-ins, the kinds and their targets

#[test]
fn disk_builtins_say_what_the_issue_asks() {
    for name in ["stall-primary-disk", "fill-primary-disk"] {
        let s = Scenario::builtin(name).unwrap();
        let kind = if name.starts_with("stall") {
            FaultKind::StallDisk
        } else {
            FaultKind::FillDisk
        };
        assert_eq!(s.faults[0].kind, kind, "{name}");
        assert_eq!(s.faults[0].target, Target::Primary, "{name}");
        assert!(s.faults[0].on_primary(), "{name}");
        assert!(matches!(s.faults[0].heal, Heal::After(_)), "{name}");
        assert_eq!(s.expect.failover, FailoverExpectation::Must, "{name}");
        assert_eq!(s.expect.failovers, Some(1), "{name}");
        assert!(s.load.stale_client, "{name}");
        // Room for a 5 s stall before the failover, and the load goes on after the heal.
        let heal = s.faults[0].heal_at(s.load.duration).unwrap();
        assert!(heal < s.load.duration, "{name}");
    }
    let r = Scenario::builtin("stall-replica-disk").unwrap();
    assert_eq!(r.faults[0].kind, FaultKind::StallDisk);
    assert_eq!(r.faults[0].target, Target::Replica);
    assert!(!r.faults[0].on_primary());
    assert_eq!(r.expect.failover, FailoverExpectation::MustNot);
    assert_eq!(r.expect.primary_changes, Some(0));
    assert!(
        r.expect.max_detection.is_some(),
        "the replica must be named"
    );
    // Each runs with the stale client and repeated, as the others do.
    for name in [
        "stall-primary-disk",
        "fill-primary-disk",
        "stall-replica-disk",
    ] {
        let s = Scenario::builtin(name)
            .unwrap()
            .with_overrides(&Overrides {
                stale_client: Some(true),
                ..Default::default()
            })
            .unwrap();
        assert!(s.load.stale_client);
    }
}

#[test]
fn disk_faults_take_the_primary_a_replica_or_a_member() {
    let file = |kind: &str, target: Option<&str>| {
        format!(
            "name = \"d\"\ndescription = \"disk\"\n[load]\nduration = \"10s\"\n\
             [[fault]]\nkind = \"{kind}\"\n{}at = \"2s\"\nheal_after = \"3s\"\n",
            target
                .map(|t| format!("target = \"{t}\"\n"))
                .unwrap_or_default()
        )
    };
    for kind in ["stall_disk", "fill_disk"] {
        // The primary by default.
        let s = parse(&file(kind, None)).unwrap();
        assert_eq!(s.faults[0].target, Target::Primary, "{kind}");
        assert!(s.faults[0].kind.on_disk());
        for (t, want) in [
            ("primary", Target::Primary),
            ("replica", Target::Replica),
            ("best_replica", Target::BestReplica),
            ("m3", Target::Member("m3".into())),
        ] {
            let s = parse(&file(kind, Some(t))).unwrap_or_else(|e| panic!("{kind} {t}: {e}"));
            assert_eq!(s.faults[0].target, want);
            assert_eq!(s.faults[0].on_primary(), t == "primary");
            let again = Scenario::from_toml(&s.to_toml(), "round-trip").unwrap();
            assert_eq!(again, s);
        }
        // A disk fault takes none of the other kinds' keys.
        let e = parse(&file(kind, None).replace("at = ", "latency_ms = 5\nat = ")).unwrap_err();
        assert_eq!(fields(&e), vec!["fault[0].latency_ms"], "{e}");
    }
    assert_eq!(FaultKind::StallDisk.to_string(), "stall_disk");
    assert_eq!(FaultKind::FillDisk.to_string(), "fill_disk");
}

#[test]
fn disk_problems_are_detections_only_in_disk_scenarios() {
    let body = serde_json::json!({"events": [
        {"at_ms": 1000, "kind": "problem_opened", "instance": "127.0.0.1:3307",
         "data": {"problem": {"kind": "ReplicaWritesStalled", "summary": "applied position still"}}},
        {"at_ms": 1100, "kind": "problem_opened", "instance": "127.0.0.1:3306",
         "data": {"problem": {"kind": "PrimaryWritesStalled", "summary": "heartbeat write timed out"}}},
        {"at_ms": 1200, "kind": "problem_opened", "instance": "127.0.0.1:3306",
         "data": {"problem": {"kind": "PrimaryDiskFull", "summary": "error 28"}}},
        {"at_ms": 1300, "kind": "problem_opened", "instance": "127.0.0.1:3306",
         "data": {"problem": {"kind": "ReplicaLagging", "summary": "not DeadPrimary"}}},
    ]});
    let labels = |detected: &[&str]| -> Vec<String> {
        drt::runner::map_events_detecting(&body, 0, 5000, detected)
            .into_iter()
            .filter(|e| e.1 == EventKind::Detected)
            .map(|e| e.2)
            .collect()
    };
    let all = |detected: &[&str]| -> Vec<(EventKind, String)> {
        drt::runner::map_events_detecting(&body, 0, 5000, detected)
            .into_iter()
            .map(|e| (e.1, e.2))
            .collect()
    };
    // A replica's disk: only the replica named counts; a primary named stalled is a note.
    let stall_replica = Scenario::builtin("stall-replica-disk").unwrap();
    assert_eq!(
        all(drt::runner::detected_problems(&stall_replica)),
        vec![
            (
                EventKind::Detected,
                "ReplicaWritesStalled on 127.0.0.1:3307".to_string()
            ),
            (
                EventKind::Note,
                "PrimaryWritesStalled opened on 127.0.0.1:3306".to_string()
            ),
            (
                EventKind::Note,
                "PrimaryDiskFull opened on 127.0.0.1:3306".to_string()
            ),
        ]
    );
    // The primary's disk: the primary named counts.
    let stall_primary = Scenario::builtin("fill-primary-disk").unwrap();
    assert_eq!(
        labels(drt::runner::detected_problems(&stall_primary)),
        vec![
            "PrimaryWritesStalled on 127.0.0.1:3306",
            "PrimaryDiskFull on 127.0.0.1:3306",
        ]
    );
    // Elsewhere a still replica (a delayed one) is no detection; a stalled primary is.
    let kp = Scenario::builtin("kill-primary-with-delayed-replica").unwrap();
    assert_eq!(
        labels(drt::runner::detected_problems(&kp)),
        vec![
            "PrimaryWritesStalled on 127.0.0.1:3306",
            "PrimaryDiskFull on 127.0.0.1:3306",
        ]
    );
}
