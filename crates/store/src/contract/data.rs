//! The data half of the store contract: clusters, instances, observations, problems and
//! events. Each function takes a fresh, empty store and panics with a message on the first
//! broken promise; every backend's tests call each one (crates/store/tests).

use std::time::Instant;

use model::{InstanceAddr, Observation, ProblemKind};

use super::fixtures::{addr, problem, replica, spec, unreachable};
use crate::{kinds, EventLevel, EventQuery, InstanceRecord, NewEvent, Origin, Store, StoreError};

pub async fn clusters_upsert_keeps_the_writer(s: &dyn Store) {
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

pub async fn instances_keep_first_seen(s: &dyn Store) {
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

pub async fn observations_round_trip_and_a_second_save_replaces(s: &dyn Store) {
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

pub async fn five_thousand_observations_in_one_call(s: &dyn Store) {
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

pub async fn problems_open_stay_and_clear_with_events(s: &dyn Store) {
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

    let history = s.problem_history(Some("c1"), None, 10).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.windows(2).all(|w| w[0].id > w[1].id));
    assert!(history[0].is_open());
    assert_eq!(history[2].key, lag.key());
    assert_eq!(history[2].cleared_ms, Some(3_000));
    assert_eq!(
        history[2].last_seen_ms, 2_000,
        "history has the latest state"
    );
    assert_eq!(s.problem_history(None, None, 2).await.unwrap().len(), 2);
    assert_eq!(s.problem_history(None, None, 10).await.unwrap().len(), 4);
    assert!(s.problem_history(None, None, 0).await.unwrap().is_empty());

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

pub async fn events_page_by_after_id(s: &dyn Store) {
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

pub async fn a_key_given_twice_opens_once_and_the_last_wins(s: &dyn Store) {
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
