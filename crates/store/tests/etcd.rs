//! The etcd store against a real etcd that each test starts on its own loopback ports (a pair
//! in 32379..32420), so the tests run in parallel. The scenarios are the SQLite tests' where
//! they are backend-neutral, plus what only several nodes can show: two clients competing for
//! a lock and for leadership, a lapsed leader lease, and etcd being away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::gtid::{MariadbBinlogState, MariadbGtidList};
use model::{
    ClusterSpec, Evidence, Flavor, GtidState, InstanceAddr, InstanceSpec, IoThreadState,
    Observation, ProbeFailure, ProbeFailureKind, Problem, ProblemKind, PromotionRule, Reachability,
    ReplicationStatus, SemiSyncState, ServerState, Severity,
};
use store::etcd::testing::EtcdGuard;
use store::{
    kinds, EtcdOptions, EtcdStore, EventLevel, EventQuery, InstanceRecord, NewEvent, NewOperation,
    OperationState, Origin, Store, StoreError,
};

const PREFIX: &str = "/dbfleet/";

async fn connect(etcd: &EtcdGuard) -> EtcdStore {
    EtcdStore::connect(&[etcd.endpoint()], PREFIX, EtcdGuard::options())
        .await
        .expect("connect to the test etcd")
}

fn addr(i: u32) -> InstanceAddr {
    InstanceAddr::new(format!("10.0.{}.{}", i / 250, i % 250 + 1), 3306)
}

fn spec(name: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        instances: vec![
            InstanceSpec {
                addr: addr(0),
                promotion: PromotionRule::Prefer,
                site: None,
            },
            InstanceSpec {
                addr: addr(1),
                promotion: PromotionRule::Neutral,
                site: None,
            },
        ],
        expected_replicas: 1,
        semi_sync: true,
        max_lag: Duration::from_secs(30),
        stall_confirm: model::DEFAULT_STALL_CONFIRM,
    }
}

fn unreachable(a: &InstanceAddr, at: u64) -> Observation {
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 1_500,
        reachability: Reachability::Unreachable(ProbeFailure {
            kind: ProbeFailureKind::Refused,
            message: "connection refused".into(),
        }),
    }
}

fn replica(a: &InstanceAddr, source: &InstanceAddr, at: u64, lag: u64) -> Observation {
    let pos: MariadbGtidList = "0-1-100".parse().unwrap();
    Observation {
        addr: a.clone(),
        at_unix_ms: at,
        duration_us: 900,
        reachability: Reachability::Reachable(Box::new(ServerState {
            flavor: Flavor::Mariadb,
            version: "10.11.6-MariaDB-0+deb12u1".into(),
            server_id: 2,
            read_only: true,
            log_bin: true,
            log_replica_updates: true,
            replication: Some(ReplicationStatus {
                source: source.clone(),
                io_thread: IoThreadState::Yes,
                sql_running: true,
                last_io_errno: 0,
                last_io_error: String::new(),
                last_sql_errno: 0,
                last_sql_error: String::new(),
                seconds_behind_source: Some(lag),
                sql_delay_s: 0,
                using_gtid: true,
                received_gtid: "0-1-100".into(),
                stream: Default::default(),
            }),
            gtid: GtidState::Mariadb {
                current_pos: pos.clone(),
                binlog_pos: pos.clone(),
                slave_pos: pos,
                binlog_state: "0-1-100".parse::<MariadbBinlogState>().unwrap(),
                strict_mode: true,
            },
            semi_sync: SemiSyncState {
                replica_enabled: true,
                replica_active: true,
                ..SemiSyncState::default()
            },
            uptime_s: 3_600,
            threads_connected: 4,
            threads_running: 1,
            metrics: None,
        })),
    }
}

fn problem(cluster: &str, kind: ProblemKind, instance: Option<InstanceAddr>, s: &str) -> Problem {
    Problem {
        kind,
        cluster: cluster.into(),
        evidence: instance
            .iter()
            .map(|i| Evidence::new(i, format!("fact: {s}")))
            .collect(),
        instance,
        severity: Severity::Error,
        summary: s.into(),
    }
}

/// `n` lagging replicas of `cluster`: `n` problems with distinct keys.
fn lagging(cluster: &str, n: u32, s: &str) -> Vec<Problem> {
    (0..n)
        .map(|i| problem(cluster, ProblemKind::ReplicaLagging, Some(addr(i)), s))
        .collect()
}

#[tokio::test]
async fn the_etcd_store_keeps_the_coordination_contract() {
    let etcd = EtcdGuard::start(32379, 32380);
    let store = connect(&etcd).await;
    store::contract::coordination(&store).await;
}

#[tokio::test]
async fn clusters_upsert_keeps_the_writer() {
    let etcd = EtcdGuard::start(32381, 32382);
    let s = connect(&etcd).await;
    let rec = s.upsert_cluster(&spec("c1"), 10).await.unwrap();
    assert_eq!(rec.name, "c1");
    assert_eq!(rec.writer, None);
    assert_eq!(rec.updated_ms, 10);

    s.set_writer("c1", Some(addr(0)), 20).await.unwrap();
    let mut changed = spec("c1");
    changed.expected_replicas = 3;
    let rec = s.upsert_cluster(&changed, 30).await.unwrap();
    assert_eq!(rec.spec, changed);
    assert_eq!(rec.writer, Some(addr(0)));
    assert_eq!(rec.updated_ms, 30);

    s.upsert_cluster(&spec("a0"), 40).await.unwrap();
    // A name with a slash stays one cluster, not a prefix of another's keys.
    s.upsert_cluster(&spec("c1/x"), 45).await.unwrap();
    let names: Vec<String> = s
        .clusters()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["a0", "c1", "c1/x"]);
    assert_eq!(s.cluster("c1").await.unwrap().unwrap(), rec);
    assert!(s.cluster("nope").await.unwrap().is_none());

    s.set_writer("c1", None, 50).await.unwrap();
    assert_eq!(s.cluster("c1").await.unwrap().unwrap().writer, None);
    assert!(matches!(
        s.set_writer("nope", None, 50).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.upsert_cluster(&spec(""), 60).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn instances_keep_first_seen() {
    let etcd = EtcdGuard::start(32383, 32384);
    let s = connect(&etcd).await;
    let rec = |a: InstanceAddr, origin, first, last| InstanceRecord {
        cluster: "c1".into(),
        addr: a,
        origin,
        first_seen_ms: first,
        last_seen_ms: last,
    };
    assert!(s
        .upsert_instance(&rec(addr(1), Origin::Discovered, 100, 100))
        .await
        .unwrap());
    assert!(!s
        .upsert_instance(&rec(addr(1), Origin::Config, 200, 200))
        .await
        .unwrap());
    assert!(s
        .upsert_instance(&rec(addr(0), Origin::Config, 150, 150))
        .await
        .unwrap());
    let other = InstanceRecord {
        cluster: "c2".into(),
        ..rec(addr(7), Origin::Config, 1, 1)
    };
    s.upsert_instance(&other).await.unwrap();

    let got = s.instances(Some("c1")).await.unwrap();
    assert_eq!(
        got,
        [
            rec(addr(0), Origin::Config, 150, 150),
            rec(addr(1), Origin::Config, 100, 200),
        ]
    );
    assert_eq!(s.instances(None).await.unwrap().len(), 3);

    s.save_observations(&[
        ("c1".into(), unreachable(&addr(1), 300)),
        ("c2".into(), unreachable(&addr(7), 300)),
    ])
    .await
    .unwrap();
    assert!(s.remove_instance("c1", &addr(1)).await.unwrap());
    assert!(!s.remove_instance("c1", &addr(1)).await.unwrap());
    assert_eq!(s.instances(Some("c1")).await.unwrap().len(), 1);
    assert!(s.last_observation(&addr(1)).await.unwrap().is_none());
    // Removing an address from a cluster it is not in leaves another cluster's observation.
    assert!(!s.remove_instance("c1", &addr(7)).await.unwrap());
    assert!(s.last_observation(&addr(7)).await.unwrap().is_some());
}

#[tokio::test]
async fn observations_round_trip_and_a_second_save_replaces() {
    let etcd = EtcdGuard::start(32385, 32386);
    let s = connect(&etcd).await;
    let (p, r) = (addr(0), addr(1));
    let first = vec![
        ("c1".to_string(), unreachable(&p, 1_000)),
        ("c1".to_string(), replica(&r, &p, 1_000, 0)),
        ("c2".to_string(), unreachable(&addr(9), 1_000)),
    ];
    s.save_observations(&first).await.unwrap();
    assert_eq!(
        s.last_observation(&r).await.unwrap().as_ref(),
        Some(&first[1].1)
    );
    assert_eq!(s.last_observations(Some("c1")).await.unwrap(), first[..2]);
    assert_eq!(s.last_observations(None).await.unwrap(), first);

    let second = vec![("c1".to_string(), replica(&r, &p, 2_000, 42))];
    s.save_observations(&second).await.unwrap();
    assert_eq!(
        s.last_observation(&r).await.unwrap().as_ref(),
        Some(&second[0].1)
    );
    let all = s.last_observations(Some("c1")).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1], second[0]);
    assert!(s.last_observation(&addr(99)).await.unwrap().is_none());
    s.save_observations(&[]).await.unwrap();

    // The same address twice in one call: one put, the last wins.
    let twice = vec![
        ("c1".to_string(), replica(&r, &p, 3_000, 1)),
        ("c1".to_string(), replica(&r, &p, 3_000, 2)),
    ];
    s.save_observations(&twice).await.unwrap();
    assert_eq!(
        s.last_observation(&r).await.unwrap(),
        Some(twice[1].1.clone())
    );
}

#[tokio::test]
async fn five_thousand_observations_in_one_call() {
    let etcd = EtcdGuard::start(32387, 32388);
    // etcd's default transaction size, so the call is split into 40 transactions.
    let s = EtcdStore::connect(&[etcd.endpoint()], PREFIX, EtcdOptions::default())
        .await
        .unwrap();
    let source = addr(0);
    let round: Vec<(String, Observation)> = (0..5_000u32)
        .map(|i| {
            let a = InstanceAddr::new(format!("db-{i:05}.example"), 3306);
            let o = if i % 2 == 0 {
                replica(&a, &source, 5_000, u64::from(i))
            } else {
                unreachable(&a, 5_000)
            };
            (format!("shard-{:03}", i / 5), o)
        })
        .collect();
    let t = Instant::now();
    s.save_observations(&round).await.unwrap();
    let saved = t.elapsed();
    let t = Instant::now();
    let got = s.last_observations(None).await.unwrap();
    let read_all = t.elapsed();
    assert_eq!(got.len(), 5_000);
    assert_eq!(got, round);
    let t = Instant::now();
    assert_eq!(
        s.last_observations(Some("shard-007")).await.unwrap().len(),
        5
    );
    eprintln!(
        "5000 observations: save {saved:?}, read all {read_all:?}, read one cluster {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn problems_open_stay_and_clear_with_events() {
    let etcd = EtcdGuard::start(32389, 32390);
    let s = connect(&etcd).await;
    let lag = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 40 s");
    let ro = problem(
        "c1",
        ProblemKind::PrimaryReadOnly,
        Some(addr(0)),
        "read_only=1",
    );
    let other = problem("c2", ProblemKind::NoPrimary, None, "no primary");

    // Round 1: both open.
    let ch = s
        .sync_problems("c1", &[lag.clone(), ro.clone()], 1_000)
        .await
        .unwrap();
    assert_eq!(ch.opened.len(), 2);
    assert!(ch.cleared.is_empty());
    assert_eq!(ch.opened[0].key, lag.key());
    assert_eq!(ch.opened[0].first_seen_ms, 1_000);
    assert_eq!(ch.opened[0].last_seen_ms, 1_000);
    assert!(ch.opened[0].id < ch.opened[1].id);
    s.sync_problems("c2", std::slice::from_ref(&other), 1_000)
        .await
        .unwrap();

    // Round 2: lag stays with new evidence, read-only clears.
    let lag2 = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 90 s");
    let ch = s
        .sync_problems("c1", std::slice::from_ref(&lag2), 2_000)
        .await
        .unwrap();
    assert!(ch.opened.is_empty());
    assert_eq!(ch.cleared.len(), 1);
    let cleared = &ch.cleared[0];
    assert_eq!(cleared.key, ro.key());
    assert_eq!(
        (cleared.first_seen_ms, cleared.last_seen_ms),
        (1_000, 1_000)
    );
    assert_eq!(cleared.cleared_ms, Some(2_000));

    let open = s.open_problems(Some("c1")).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].problem, lag2);
    assert_eq!(
        (open[0].first_seen_ms, open[0].last_seen_ms),
        (1_000, 2_000)
    );
    assert_eq!(open[0].cleared_ms, None);
    // c2's problem was untouched by c1's rounds.
    assert_eq!(s.open_problems(None).await.unwrap().len(), 2);

    // Round 3: read-only comes back as a new opening; lag clears.
    let ch = s
        .sync_problems("c1", std::slice::from_ref(&ro), 3_000)
        .await
        .unwrap();
    assert_eq!(ch.opened.len(), 1);
    assert_ne!(ch.opened[0].id, cleared.id);
    assert_eq!(ch.cleared.len(), 1);
    assert_eq!(ch.cleared[0].key, lag.key());
    assert_eq!(
        (ch.cleared[0].first_seen_ms, ch.cleared[0].last_seen_ms),
        (1_000, 2_000)
    );

    let history = s.problem_history(Some("c1"), 10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
    assert!(history[0].is_open());
    assert_eq!(history[2].key, lag.key());
    assert_eq!(history[2].cleared_ms, Some(3_000));
    assert_eq!(
        history[2].last_seen_ms, 2_000,
        "history has the latest state"
    );
    assert_eq!(s.problem_history(None, 2).await.unwrap().len(), 2);
    assert_eq!(s.problem_history(None, 10).await.unwrap().len(), 4);
    assert!(s.problem_history(None, 0).await.unwrap().is_empty());

    // Every opening and clearing is in the event log, in order.
    let ev = s
        .events(&EventQuery {
            cluster: Some("c1".into()),
            kinds: vec![kinds::PROBLEM_OPENED.into(), kinds::PROBLEM_CLEARED.into()],
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let got: Vec<(&str, u64, Option<&InstanceAddr>)> = ev
        .iter()
        .map(|e| (e.kind.as_str(), e.at_ms, e.instance.as_ref()))
        .collect();
    assert_eq!(
        got,
        [
            (kinds::PROBLEM_OPENED, 1_000, Some(&addr(1))),
            (kinds::PROBLEM_OPENED, 1_000, Some(&addr(0))),
            (kinds::PROBLEM_CLEARED, 2_000, Some(&addr(0))),
            (kinds::PROBLEM_OPENED, 3_000, Some(&addr(0))),
            (kinds::PROBLEM_CLEARED, 3_000, Some(&addr(1))),
        ]
    );
    assert_eq!(ev[0].level, EventLevel::Error);
    assert_eq!(ev[2].level, EventLevel::Info);
    assert_eq!(ev[0].data["key"], lag.key());
    assert_eq!(ev[2].data["problem_id"], cleared.id);

    // A problem of another cluster is refused.
    assert!(matches!(
        s.sync_problems("c1", &[other], 4_000).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn events_page_by_after_id() {
    let etcd = EtcdGuard::start(32391, 32392);
    let s = connect(&etcd).await;
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let mut ev = NewEvent::new(
            i,
            if i % 5 == 0 {
                kinds::DAEMON_STARTED
            } else {
                kinds::INSTANCE_DISCOVERED
            },
            EventLevel::Info,
            format!("event {i}"),
        )
        .with_data(serde_json::json!({ "i": i }));
        if i % 2 == 0 {
            ev = ev.with_cluster("even").with_instance(addr(i as u32));
        }
        let rec = s.append_event(&ev).await.unwrap();
        assert_eq!(rec.message, ev.message);
        ids.push(rec.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));

    // Page forward 10 at a time.
    let mut seen = Vec::new();
    let mut after = Some(0);
    loop {
        let page = s
            .events(&EventQuery {
                after_id: after,
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        after = page.last().map(|e| e.id);
        seen.extend(page.into_iter().map(|e| e.id));
    }
    assert_eq!(seen, ids);

    // Without a cursor: the newest, still ascending.
    let newest = s
        .events(&EventQuery {
            limit: 3,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[22..].to_vec()
    );
    assert_eq!(newest[2].data["i"], 24);

    // Filters.
    let even = s
        .events(&EventQuery {
            cluster: Some("even".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(even.len(), 13);
    assert_eq!(even[1].instance, Some(addr(2)));
    let started = s
        .events(&EventQuery {
            cluster: Some("even".into()),
            after_id: Some(ids[0]),
            kinds: vec![kinds::DAEMON_STARTED.into()],
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        started.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        [10, 20]
    );
    let none = s
        .events(&EventQuery {
            limit: 0,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_key_given_twice_opens_once_and_the_last_wins() {
    let etcd = EtcdGuard::start(32393, 32394);
    let s = connect(&etcd).await;
    let a = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 40 s");
    let b = problem("c1", ProblemKind::ReplicaLagging, Some(addr(1)), "lag 50 s");
    let ch = s.sync_problems("c1", &[a, b.clone()], 10).await.unwrap();
    assert_eq!(ch.opened.len(), 1);
    assert_eq!(ch.opened[0].problem, b);
    let open = s.open_problems(None).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].problem, b);
    let ev = s.events(&EventQuery::default()).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].message.contains("lag 50 s"), "{}", ev[0].message);
    // An empty round clears everything; a second empty round changes nothing.
    assert_eq!(
        s.sync_problems("c1", &[], 20).await.unwrap().cleared.len(),
        1
    );
    assert!(s.sync_problems("c1", &[], 30).await.unwrap().is_empty());
}

#[tokio::test]
async fn two_nodes_compete_for_a_lock_and_for_leadership() {
    let etcd = EtcdGuard::start(32395, 32396);
    let a = Arc::new(connect(&etcd).await);
    let b = Arc::new(connect(&etcd).await);

    // Both try the same lock at once, many times over: exactly one wins each time.
    for round in 0..10 {
        let cluster = format!("c{round}");
        let (ra, rb) = tokio::join!(
            a.try_lock_cluster(&cluster, "node-a/op", 30_000, 1),
            b.try_lock_cluster(&cluster, "node-b/op", 30_000, 1)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra ^ rb, "round {round}: exactly one holder ({ra}, {rb})");
        let holder = b.cluster_lock(&cluster).await.unwrap().unwrap().holder;
        assert_eq!(holder, if ra { "node-a/op" } else { "node-b/op" });
        // The loser cannot unlock it; the winner can, and then the loser takes it.
        let (winner, loser, wname, lname) = if ra {
            (&a, &b, "node-a/op", "node-b/op")
        } else {
            (&b, &a, "node-b/op", "node-a/op")
        };
        assert!(!loser.unlock_cluster(&cluster, lname).await.unwrap());
        assert!(winner
            .try_lock_cluster(&cluster, wname, 30_000, 2)
            .await
            .unwrap());
        assert!(winner.unlock_cluster(&cluster, wname).await.unwrap());
        assert!(loser
            .try_lock_cluster(&cluster, lname, 30_000, 3)
            .await
            .unwrap());
    }

    // Both campaign at once: one leads, and both agree who and with which term.
    let (la, lb) = tokio::join!(
        a.campaign("node-a", 30_000, 1),
        b.campaign("node-b", 30_000, 1)
    );
    let (la, lb) = (la.unwrap(), lb.unwrap());
    assert!(la.is_leader ^ lb.is_leader, "{la:?} {lb:?}");
    assert_eq!(la.leader, lb.leader);
    assert_eq!(la.term, lb.term);
    let (leader, follower, lname, fname) = if la.is_leader {
        (&a, &b, "node-a", "node-b")
    } else {
        (&b, &a, "node-b", "node-a")
    };
    let t = Instant::now();
    for _ in 0..20 {
        assert!(leader.campaign(lname, 30_000, 2).await.unwrap().is_leader);
    }
    let renew = t.elapsed() / 20;
    let t = Instant::now();
    for _ in 0..20 {
        assert!(!follower.campaign(fname, 30_000, 2).await.unwrap().is_leader);
    }
    let follow = t.elapsed() / 20;
    let t = Instant::now();
    for _ in 0..20 {
        assert!(a
            .try_lock_cluster("renewed", "node-a/op", 30_000, 5)
            .await
            .unwrap());
    }
    eprintln!(
        "campaign: leader renews in {renew:?}, follower checks in {follow:?}; lock take or \
         renew {:?}",
        t.elapsed() / 20
    );
    leader.resign(lname).await.unwrap();
    let next = follower.campaign(fname, 30_000, 3).await.unwrap();
    assert!(next.is_leader);
    assert!(next.term > la.term, "{} then {}", la.term, next.term);
    let seen = leader.campaign(lname, 30_000, 4).await.unwrap();
    assert_eq!(seen.leader.as_deref(), Some(fname));
    assert_eq!(seen.term, next.term);

    // Ids taken by both clients at once stay unique, and each client sees them grow.
    let append = |s: Arc<EtcdStore>, who: &'static str| async move {
        let mut ids = Vec::new();
        for i in 0..20 {
            let ev = NewEvent::new(i, kinds::OPERATOR_NOTE, EventLevel::Info, who);
            ids.push(s.append_event(&ev).await.unwrap().id);
            let op = NewOperation {
                cluster: "c".into(),
                kind: "failover".into(),
                trigger: "auto".into(),
                state: OperationState::Running,
                step: "s".into(),
                data: serde_json::Value::Null,
                owner: who.into(),
                created_ms: i,
            };
            s.create_operation(&op).await.unwrap();
        }
        ids
    };
    let (ia, ib) = tokio::join!(append(a.clone(), "a"), append(b.clone(), "b"));
    assert!(ia.windows(2).all(|w| w[0] < w[1]));
    assert!(ib.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<i64> = ia.iter().chain(&ib).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 40, "no id given twice");
    let ops = a
        .operations(&store::OperationQuery::default())
        .await
        .unwrap();
    assert_eq!(ops.len(), 40);
    assert!(
        ops.windows(2).all(|w| w[0].id == w[1].id + 1),
        "dense, newest first"
    );
}

#[tokio::test]
async fn a_lapsed_leader_lease_and_lock_pass_to_another_node() {
    let etcd = EtcdGuard::start(32397, 32398);
    let b = connect(&etcd).await;
    let (a_term, renewed) = {
        let a = connect(&etcd).await;
        let first = a.campaign("node-a", 1_000, 0).await.unwrap();
        assert!(first.is_leader);
        assert!(a
            .try_lock_cluster("c1", "node-a/op", 1_000, 0)
            .await
            .unwrap());
        // Renew a few times, as a live leader does.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(a.campaign("node-a", 1_000, 0).await.unwrap().is_leader);
        }
        assert!(!b.campaign("node-b", 1_000, 0).await.unwrap().is_leader);
        assert!(!b
            .try_lock_cluster("c1", "node-b/op", 1_000, 0)
            .await
            .unwrap());
        (first.term, Instant::now())
        // `a` drops here and renews nothing more.
    };
    let mut lock_after = None;
    let took_over = loop {
        let l = b.campaign("node-b", 1_000, 0).await.unwrap();
        if lock_after.is_none()
            && b.try_lock_cluster("c1", "node-b/op", 1_000, 0)
                .await
                .unwrap()
        {
            lock_after = Some(renewed.elapsed());
        }
        if l.is_leader {
            assert!(l.term > a_term, "{a_term} then {}", l.term);
            break renewed.elapsed();
        }
        assert!(
            renewed.elapsed() < Duration::from_secs(10),
            "node-b never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "leader takeover {took_over:?} after the last renewal (ttl 1 s); lock {lock_after:?}"
    );
    // etcd's lease of 1 s, checked by etcd every 500 ms, plus a poll of 50 ms; generous for a
    // loaded machine.
    assert!(took_over < Duration::from_secs(4), "{took_over:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_clear_error() {
    // Nothing listens on 32419.
    let opts = EtcdOptions {
        timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let t = Instant::now();
    let err = EtcdStore::connect(&["http://127.0.0.1:32419".to_string()], PREFIX, opts)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(msg.contains("127.0.0.1:32419"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    eprintln!("closed port: {msg} (after {:?})", t.elapsed());

    assert!(matches!(
        EtcdStore::connect(&[], PREFIX, EtcdOptions::default()).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn an_etcd_that_never_answers_is_an_error_within_the_timeout() {
    // A listener that accepts connections (the kernel does, up to its backlog) and never
    // says a word: a hung etcd, or a black-holed network.
    let _silent = std::net::TcpListener::bind("127.0.0.1:32420").unwrap();
    let opts = EtcdOptions {
        timeout: Duration::from_millis(800),
        ..EtcdOptions::default()
    };
    let t = Instant::now();
    let err = EtcdStore::connect(&["http://127.0.0.1:32420".to_string()], PREFIX, opts)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(msg.contains("127.0.0.1:32420"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    eprintln!("silent etcd: {msg} (after {:?})", t.elapsed());
}

#[tokio::test]
async fn etcd_going_away_is_an_error_within_the_timeout() {
    let mut etcd = EtcdGuard::start(32399, 32400);
    let opts = EtcdOptions {
        timeout: Duration::from_secs(1),
        ..EtcdGuard::options()
    };
    let s = EtcdStore::connect(&[etcd.endpoint()], PREFIX, opts)
        .await
        .unwrap();
    s.upsert_cluster(&spec("c1"), 1).await.unwrap();
    etcd.kill();
    let t = Instant::now();
    let err = s.clusters().await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    let err2 = s.campaign("node-a", 5_000, 1).await.unwrap_err();
    assert!(matches!(err2, StoreError::Backend(_)), "{err2:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    eprintln!("etcd gone: {err} / {err2} (after {:?})", t.elapsed());
}

#[tokio::test]
async fn sync_problems_is_one_transaction_up_to_max_txn_ops() {
    let etcd = EtcdGuard::start(32401, 32402);
    let s = connect(&etcd).await;

    // A typical round: a few problems, most rounds changing nothing but last_seen.
    let few = lagging("c1", 5, "lag");
    let t = Instant::now();
    for round in 0..100u64 {
        s.sync_problems("c1", &few, 1_000 + round).await.unwrap();
    }
    let per_round = t.elapsed() / 100;

    // 300 openings in one call: 3 operations each, beyond etcd's default of 128 but within
    // the test etcd's 1024.
    let many = lagging("c2", 300, "lag");
    let t = Instant::now();
    let ch = s.sync_problems("c2", &many, 2_000).await.unwrap();
    let big = t.elapsed();
    assert_eq!(ch.opened.len(), 300);
    eprintln!("sync_problems: {per_round:?} per round of 5 open problems; 300 openings {big:?}");

    // With etcd's default limit, the same call is refused before it is sent, saying why.
    let small = EtcdStore::connect(&[etcd.endpoint()], PREFIX, EtcdOptions::default())
        .await
        .unwrap();
    let err = small
        .sync_problems("c3", &lagging("c3", 300, "lag"), 3_000)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--max-txn-ops"), "{err}");
    // Told a larger limit than the server has, etcd refuses it, and the message says why.
    let lying = EtcdStore::connect(
        &[etcd.endpoint()],
        PREFIX,
        EtcdOptions {
            max_txn_ops: 10_000,
            ..EtcdOptions::default()
        },
    )
    .await
    .unwrap();
    let err = lying
        .sync_problems("c3", &lagging("c3", 600, "lag"), 3_000)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--max-txn-ops"), "{err}");
    eprintln!("refused: {err}");
    // Neither changed anything.
    assert!(s.open_problems(Some("c3")).await.unwrap().is_empty());
    assert_eq!(s.open_problems(None).await.unwrap().len(), 305);
}

#[tokio::test]
async fn prefixes_keep_stores_apart_and_data_outlives_the_client() {
    let etcd = EtcdGuard::start(32403, 32404);
    let obs = replica(&addr(1), &addr(0), 7_000, 3);
    let ev_id;
    {
        let s: Arc<dyn Store> = Arc::new(connect(&etcd).await);
        s.upsert_cluster(&spec("c1"), 1).await.unwrap();
        s.set_writer("c1", Some(addr(0)), 2).await.unwrap();
        s.upsert_instance(&InstanceRecord {
            cluster: "c1".into(),
            addr: addr(1),
            origin: Origin::Config,
            first_seen_ms: 3,
            last_seen_ms: 3,
        })
        .await
        .unwrap();
        s.save_observations(&[("c1".into(), obs.clone())])
            .await
            .unwrap();
        s.sync_problems(
            "c1",
            &[problem("c1", ProblemKind::ReplicaMissing, None, "1 of 2")],
            4,
        )
        .await
        .unwrap();
        ev_id = s
            .append_event(&NewEvent::new(
                5,
                kinds::DAEMON_STOPPED,
                EventLevel::Info,
                "bye",
            ))
            .await
            .unwrap()
            .id;
        s.kv_put("recoveries/enabled", &serde_json::json!(false))
            .await
            .unwrap();
        s.flush().await.unwrap();
    }
    let s = connect(&etcd).await;
    let c = s.cluster("c1").await.unwrap().unwrap();
    assert_eq!(c.spec, spec("c1"));
    assert_eq!(c.writer, Some(addr(0)));
    assert_eq!(s.instances(None).await.unwrap()[0].first_seen_ms, 3);
    assert_eq!(s.last_observation(&addr(1)).await.unwrap(), Some(obs));
    let open = s.open_problems(Some("c1")).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].key, "ReplicaMissing");
    let ev = s.events(&EventQuery::default()).await.unwrap();
    assert_eq!(ev.last().unwrap().id, ev_id);
    assert_eq!(ev.len(), 2);

    // Another prefix on the same etcd sees none of it.
    let other = EtcdStore::connect(&[etcd.endpoint()], "/other", EtcdGuard::options())
        .await
        .unwrap();
    assert_eq!(other.prefix(), "/other/");
    assert!(other.clusters().await.unwrap().is_empty());
    assert!(other
        .events(&EventQuery::default())
        .await
        .unwrap()
        .is_empty());
    assert!(other.kv_list("").await.unwrap().is_empty());
    assert_eq!(s.kv_list("").await.unwrap().len(), 1);
    assert!(other.campaign("x", 5_000, 0).await.unwrap().is_leader);
}
