//! The etcd store against a real etcd that each test starts on its own loopback ports (a pair
//! in 32379..32420, or 29000..29001 for the paging contract), so the tests run in parallel. The scenarios are the SQLite tests' where
//! they are backend-neutral, plus what only several nodes can show: two clients competing for
//! a lock and for leadership, a lapsed leader lease, and etcd being away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::ProblemKind;
use store::contract::data;
use store::contract::fixtures::{addr, lagging, problem, replica, spec};
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

#[tokio::test]
async fn the_etcd_store_keeps_the_coordination_contract() {
    let etcd = EtcdGuard::start(32379, 32380);
    let store = connect(&etcd).await;
    store::contract::coordination(&store).await;
}

#[tokio::test]
async fn the_etcd_store_keeps_the_paging_contract() {
    // Ports outside 32379..32420, which the other tests here share.
    let etcd = EtcdGuard::start(29000, 29001);
    store::contract::paging(&connect(&etcd).await).await;
}

#[tokio::test]
async fn clusters_upsert_keeps_the_writer() {
    let etcd = EtcdGuard::start(32381, 32382);
    data::clusters_upsert_keeps_the_writer(&connect(&etcd).await).await;
}

#[tokio::test]
async fn instances_keep_first_seen() {
    let etcd = EtcdGuard::start(32383, 32384);
    data::instances_keep_first_seen(&connect(&etcd).await).await;
}

#[tokio::test]
async fn observations_round_trip_and_a_second_save_replaces() {
    let etcd = EtcdGuard::start(32385, 32386);
    data::observations_round_trip_and_a_second_save_replaces(&connect(&etcd).await).await;
}

#[tokio::test]
async fn five_thousand_observations_in_one_call() {
    let etcd = EtcdGuard::start(32387, 32388);
    // etcd's default transaction size, so the call is split into 40 transactions.
    let s = EtcdStore::connect(&[etcd.endpoint()], PREFIX, EtcdOptions::default())
        .await
        .unwrap();
    data::five_thousand_observations_in_one_call(&s).await;
}

#[tokio::test]
async fn problems_open_stay_and_clear_with_events() {
    let etcd = EtcdGuard::start(32389, 32390);
    data::problems_open_stay_and_clear_with_events(&connect(&etcd).await).await;
}

#[tokio::test]
async fn events_page_by_after_id() {
    let etcd = EtcdGuard::start(32391, 32392);
    data::events_page_by_after_id(&connect(&etcd).await).await;
}

#[tokio::test]
async fn a_key_given_twice_opens_once_and_the_last_wins() {
    let etcd = EtcdGuard::start(32393, 32394);
    data::a_key_given_twice_opens_once_and_the_last_wins(&connect(&etcd).await).await;
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
