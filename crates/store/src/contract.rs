//! A contract every [`Store`] backend must pass. Backends' tests call each part on a fresh,
//! empty store; a part panics with a message on the first broken promise.
//!
//! - [`coordination`]: operations, locks, the leader lease and settings (raw and typed,
//!   [`crate::Settings`]);
//! - [`data`]: clusters, instances, observations, problems and events, one function per
//!   promise, built from the [`fixtures`];
//! - [`paging`]: the keyset pages of problem history, operations and instances: a walk
//!   from cursor to cursor returns every record exactly once, in the list's order.

pub mod data;
pub mod fixtures;

use serde_json::json;

use model::{InstanceAddr, ProblemKind};

use crate::{
    FencedMark, InstanceQuery, InstanceRecord, NewOperation, OperationQuery, OperationState,
    OperationUpdate, Origin, Settings, Store, StoreError,
};

/// Run the coordination contract against an empty store. Times are made up and far from the
/// present, so a backend that uses its own clock (etcd leases) must ignore `now_ms` for
/// expiry and use the TTLs, which are long enough here never to lapse during the run.
pub async fn coordination(store: &dyn Store) {
    operations(store).await;
    locks(store).await;
    leader(store).await;
    settings(store).await;
    typed_settings(store).await;
}

/// Run the paging contract against an empty store: problem history, operations and
/// instances, each walked page by page with its cursor.
pub async fn paging(store: &dyn Store) {
    problem_history_pages(store).await;
    operation_pages(store).await;
    instance_pages(store).await;
}

/// Every page of `read`, starting with no cursor and going on from `cursor` of each full
/// page's last record, until a page is not full; panics past 100 pages.
async fn walk<T, C, F, Fut>(limit: usize, cursor: impl Fn(&T) -> C, read: F) -> Vec<Vec<T>>
where
    F: Fn(Option<C>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let mut pages: Vec<Vec<T>> = Vec::new();
    let mut next = None;
    loop {
        assert!(pages.len() < 100, "the walk does not end");
        let page = read(next.take()).await.expect("read a page");
        assert!(
            page.len() <= limit,
            "a page of {} for limit {limit}",
            page.len()
        );
        let full = page.len() == limit;
        if let Some(last) = page.last() {
            next = Some(cursor(last));
        }
        pages.push(page);
        if !full {
            return pages;
        }
    }
}

async fn problem_history_pages(store: &dyn Store) {
    // Each round opens a new key and clears the one before: 12 openings per cluster, the
    // clusters interleaved, the last of each still open.
    for round in 0..12u32 {
        for cluster in ["c1", "c2"] {
            let p = fixtures::problem(
                cluster,
                ProblemKind::ReplicaLagging,
                Some(fixtures::addr(round)),
                &format!("round {round}"),
            );
            store
                .sync_problems(cluster, &[p], 1_000 + u64::from(round))
                .await
                .expect("sync");
        }
    }
    // The open one of c1 seen again later: its page shows its latest state.
    let last = fixtures::problem(
        "c1",
        ProblemKind::ReplicaLagging,
        Some(fixtures::addr(11)),
        "round 11",
    );
    store
        .sync_problems("c1", &[last], 5_000)
        .await
        .expect("sync");

    let whole = store
        .problem_history(None, None, 1_000)
        .await
        .expect("whole history");
    assert_eq!(whole.len(), 24);
    assert!(whole.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    for limit in [1, 5, 24, 25] {
        let pages = walk(
            limit,
            |p: &crate::ProblemRecord| p.id,
            |before| async move { store.problem_history(None, before, limit).await },
        )
        .await;
        let ids: Vec<i64> = pages.iter().flatten().map(|p| p.id).collect();
        let want: Vec<i64> = whole.iter().map(|p| p.id).collect();
        assert_eq!(ids, want, "limit {limit}: every record once, in order");
        assert_eq!(pages.len(), 24 / limit + 1, "limit {limit}");
    }
    let c1 = walk(
        5,
        |p: &crate::ProblemRecord| p.id,
        |before| async move { store.problem_history(Some("c1"), before, 5).await },
    )
    .await;
    let c1: Vec<&crate::ProblemRecord> = c1.iter().flatten().collect();
    assert_eq!(c1.len(), 12);
    assert!(c1.iter().all(|p| p.cluster == "c1"));
    assert!(c1.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(c1[0].last_seen_ms, 5_000, "the open one as last seen");
    assert!(c1[0].is_open() && c1[1..].iter().all(|p| !p.is_open()));

    let top = whole[0].id;
    let from_above = store
        .problem_history(None, Some(top + 1_000), 3)
        .await
        .unwrap();
    assert_eq!(
        from_above[0].id, top,
        "a cursor past the newest reads from the newest"
    );
    let below = store.problem_history(None, Some(top), 2).await.unwrap();
    assert_eq!(
        below.iter().map(|p| p.id).collect::<Vec<_>>(),
        [whole[1].id, whole[2].id]
    );
    let oldest = whole.last().unwrap().id;
    assert!(store
        .problem_history(None, Some(oldest), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .problem_history(None, Some(0), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .problem_history(None, Some(-5), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn operation_pages(store: &dyn Store) {
    let mut made = Vec::new();
    for i in 0..13u64 {
        let op = store
            .create_operation(&NewOperation {
                cluster: if i % 3 == 0 { "p2" } else { "p1" }.into(),
                kind: "failover".into(),
                trigger: "manual".into(),
                state: OperationState::Running,
                step: "start".into(),
                data: json!({ "i": i }),
                owner: "node-a".into(),
                created_ms: 10_000 + i,
            })
            .await
            .expect("create");
        made.push(op.id);
    }
    made.reverse();
    for limit in [1, 4, 13] {
        let pages = walk(
            limit,
            |o: &crate::OperationRecord| o.id,
            |before_id| async move {
                store
                    .operations(&OperationQuery {
                        limit,
                        before_id,
                        ..Default::default()
                    })
                    .await
            },
        )
        .await;
        let ids: Vec<i64> = pages.iter().flatten().map(|o| o.id).collect();
        assert_eq!(
            ids, made,
            "limit {limit}: every operation once, newest first"
        );
    }
    let p1 = walk(
        3,
        |o: &crate::OperationRecord| o.id,
        |before_id| async move {
            store
                .operations(&OperationQuery {
                    cluster: Some("p1".into()),
                    limit: 3,
                    before_id,
                    ..Default::default()
                })
                .await
        },
    )
    .await;
    let p1: Vec<i64> = p1.iter().flatten().map(|o| o.id).collect();
    assert_eq!(p1.len(), 8);
    let want: Vec<i64> = made
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| (12 - i) % 3 != 0)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(p1, want);
    let none = store
        .operations(&OperationQuery {
            before_id: Some(*made.last().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty(), "nothing below the oldest: {none:?}");
}

async fn instance_pages(store: &dyn Store) {
    // Names and addresses whose text order is not their natural one: `a-b` and `a.c` sort
    // after `a` (and before `b`), `h:10000` before `h:9999`, `h-1:1` before `h:1`.
    let addrs = [
        InstanceAddr::new("h", 9999),
        InstanceAddr::new("h", 10000),
        InstanceAddr::new("h-1", 1),
        InstanceAddr::new("h", 1),
        InstanceAddr::new("10.0.0.2", 3306),
    ];
    let mut want: Vec<(String, String)> = Vec::new();
    for cluster in ["b", "a.c", "a", "a-b"] {
        for a in &addrs {
            store
                .upsert_instance(&InstanceRecord {
                    cluster: cluster.into(),
                    addr: a.clone(),
                    origin: Origin::Config,
                    first_seen_ms: 1,
                    last_seen_ms: 1,
                })
                .await
                .expect("upsert");
            want.push((cluster.to_string(), a.to_string()));
        }
    }
    want.sort();
    let key = |r: &InstanceRecord| (r.cluster.clone(), r.addr.clone());
    for limit in [1, 3, 20, 21] {
        let pages = walk(limit, key, |after| async move {
            store
                .instance_page(&InstanceQuery {
                    cluster: None,
                    after,
                    limit,
                })
                .await
        })
        .await;
        let got: Vec<(String, String)> = pages
            .iter()
            .flatten()
            .map(|r| (r.cluster.clone(), r.addr.to_string()))
            .collect();
        assert_eq!(
            got, want,
            "limit {limit}: every instance once, by cluster then address"
        );
    }
    let one: Vec<(String, String)> = want.iter().filter(|(c, _)| c == "a").cloned().collect();
    let pages = walk(2, key, |after| async move {
        store
            .instance_page(&InstanceQuery {
                cluster: Some("a".into()),
                after,
                limit: 2,
            })
            .await
    })
    .await;
    let got: Vec<(String, String)> = pages
        .iter()
        .flatten()
        .map(|r| (r.cluster.clone(), r.addr.to_string()))
        .collect();
    assert_eq!(got, one);

    // The cursor need not exist (an instance removed between two pages), and may name
    // another cluster than the filter's.
    let gone = Some(("a".to_string(), InstanceAddr::new("h", 2)));
    let after_gone = store
        .instance_page(&InstanceQuery {
            cluster: None,
            after: gone.clone(),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        after_gone
            .iter()
            .map(|r| r.addr.to_string())
            .collect::<Vec<_>>(),
        ["h:9999", "10.0.0.2:3306"]
    );
    assert_eq!(after_gone[1].cluster, "a-b");
    let earlier = Some(("0".to_string(), InstanceAddr::new("z", 1)));
    let later = Some(("zz".to_string(), InstanceAddr::new("a", 1)));
    for (after, n) in [(earlier, 5), (later, 0), (gone, 1)] {
        let page = store
            .instance_page(&InstanceQuery {
                cluster: Some("a".into()),
                after: after.clone(),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), n, "after {after:?}: {page:?}");
    }
    assert!(store
        .instance_page(&InstanceQuery {
            cluster: None,
            after: None,
            limit: 0,
        })
        .await
        .unwrap()
        .is_empty());
}

async fn operations(store: &dyn Store) {
    let new = NewOperation {
        cluster: "c1".into(),
        kind: "failover".into(),
        trigger: "auto".into(),
        state: OperationState::Running,
        step: "stop_io".into(),
        data: json!({ "old_primary": "127.0.0.1:3306" }),
        owner: "node-a".into(),
        created_ms: 1_000,
    };
    let a = store.create_operation(&new).await.expect("create");
    assert_eq!(a.state, OperationState::Running);
    assert_eq!(a.step, "stop_io");
    assert_eq!(a.data, new.data);
    assert_eq!(a.finished_ms, None);
    let b = store
        .create_operation(&NewOperation {
            cluster: "c2".into(),
            kind: "switchover".into(),
            ..new.clone()
        })
        .await
        .expect("create second");
    assert!(b.id > a.id, "ids grow: {} then {}", a.id, b.id);

    let up = store
        .update_operation(
            a.id,
            &OperationUpdate {
                state: OperationState::Running,
                step: "promote".into(),
                data: Some(json!({ "candidate": "127.0.0.1:3307" })),
                error: None,
                owner: None,
                now_ms: 2_000,
            },
        )
        .await
        .expect("update");
    assert_eq!(up.step, "promote");
    assert_eq!(up.data, json!({ "candidate": "127.0.0.1:3307" }));
    assert_eq!(up.owner, "node-a", "owner kept when not given");
    assert_eq!(up.updated_ms, 2_000);

    let done = store
        .update_operation(
            a.id,
            &OperationUpdate {
                state: OperationState::Succeeded,
                step: "done".into(),
                data: None,
                error: None,
                owner: None,
                now_ms: 3_000,
            },
        )
        .await
        .expect("finish");
    assert_eq!(done.finished_ms, Some(3_000));
    assert_eq!(
        done.data,
        json!({ "candidate": "127.0.0.1:3307" }),
        "data kept"
    );
    let again = store
        .update_operation(
            a.id,
            &OperationUpdate {
                state: OperationState::Running,
                step: "x".into(),
                data: None,
                error: None,
                owner: None,
                now_ms: 4_000,
            },
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::InvalidArgument(_))),
        "a final operation cannot run again: {again:?}"
    );
    let missing = store
        .update_operation(
            999_999,
            &OperationUpdate {
                state: OperationState::Failed,
                step: "x".into(),
                data: None,
                error: Some("e".into()),
                owner: None,
                now_ms: 4_000,
            },
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );

    let running = store
        .operations(&OperationQuery {
            states: vec![OperationState::Running],
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(running.iter().map(|o| o.id).collect::<Vec<_>>(), vec![b.id]);
    let c1 = store
        .operations(&OperationQuery {
            cluster: Some("c1".into()),
            ..Default::default()
        })
        .await
        .expect("query c1");
    assert_eq!(c1.len(), 1);
    assert_eq!(c1[0].state, OperationState::Succeeded);
    let all = store
        .operations(&OperationQuery::default())
        .await
        .expect("all");
    assert_eq!(
        all.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![b.id, a.id],
        "newest first"
    );
    let by_kind = store
        .operations(&OperationQuery {
            kind: Some("switchover".into()),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("by kind");
    assert_eq!(by_kind.len(), 1);
    assert_eq!(
        store.operation(a.id).await.expect("get").map(|o| o.id),
        Some(a.id)
    );
    assert!(store
        .operation(999_999)
        .await
        .expect("get missing")
        .is_none());
}

async fn locks(store: &dyn Store) {
    let ttl = 60_000;
    assert!(store
        .try_lock_cluster("c1", "a", ttl, 10_000)
        .await
        .unwrap());
    assert!(
        !store
            .try_lock_cluster("c1", "b", ttl, 10_001)
            .await
            .unwrap(),
        "a held lock refuses another holder"
    );
    assert!(
        store
            .try_lock_cluster("c1", "a", ttl, 10_002)
            .await
            .unwrap(),
        "the holder renews"
    );
    assert!(
        store
            .try_lock_cluster("c2", "b", ttl, 10_003)
            .await
            .unwrap(),
        "locks are per cluster"
    );
    let held = store.cluster_lock("c1").await.unwrap().expect("held");
    assert_eq!(held.holder, "a");
    assert!(
        !store.unlock_cluster("c1", "b").await.unwrap(),
        "only the holder unlocks"
    );
    assert!(store.unlock_cluster("c1", "a").await.unwrap());
    assert!(store.cluster_lock("c1").await.unwrap().is_none());
    assert!(store
        .try_lock_cluster("c1", "b", ttl, 10_004)
        .await
        .unwrap());
    assert!(store.unlock_cluster("c1", "b").await.unwrap());
    assert!(store.unlock_cluster("c2", "b").await.unwrap());
}

async fn leader(store: &dyn Store) {
    let ttl = 60_000;
    let a = store.campaign("node-a", ttl, 20_000).await.unwrap();
    assert!(a.is_leader);
    assert_eq!(a.leader.as_deref(), Some("node-a"));
    let b = store.campaign("node-b", ttl, 20_001).await.unwrap();
    assert!(
        !b.is_leader,
        "a second node does not lead while the lease holds"
    );
    assert_eq!(b.leader.as_deref(), Some("node-a"));
    let a2 = store.campaign("node-a", ttl, 20_002).await.unwrap();
    assert!(a2.is_leader);
    assert_eq!(a2.term, a.term, "renewing keeps the term");
    store.resign("node-b").await.unwrap();
    assert!(
        store
            .campaign("node-a", ttl, 20_003)
            .await
            .unwrap()
            .is_leader,
        "b cannot resign a"
    );
    store.resign("node-a").await.unwrap();
    let b2 = store.campaign("node-b", ttl, 20_004).await.unwrap();
    assert!(b2.is_leader, "after a resigns, b leads");
    assert!(
        b2.term > a.term,
        "the term grows with a new leader: {} then {}",
        a.term,
        b2.term
    );
    store.resign("node-b").await.unwrap();
}

async fn settings(store: &dyn Store) {
    assert_eq!(store.kv_get("recoveries/enabled").await.unwrap(), None);
    store
        .kv_put("recoveries/enabled", &json!(false))
        .await
        .unwrap();
    store
        .kv_put("fenced/c1/127.0.0.1:3306", &json!({ "at_ms": 5 }))
        .await
        .unwrap();
    store
        .kv_put("fenced/c1/127.0.0.1:3307", &json!({ "at_ms": 6 }))
        .await
        .unwrap();
    store
        .kv_put("fenced/c10/127.0.0.1:3308", &json!({ "at_ms": 7 }))
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("recoveries/enabled").await.unwrap(),
        Some(json!(false))
    );
    store
        .kv_put("recoveries/enabled", &json!(true))
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("recoveries/enabled").await.unwrap(),
        Some(json!(true))
    );
    let listed = store.kv_list("fenced/c1/").await.unwrap();
    assert_eq!(
        listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        vec!["fenced/c1/127.0.0.1:3306", "fenced/c1/127.0.0.1:3307"],
        "a prefix lists its keys in order, and only its keys"
    );
    assert!(store.kv_delete("fenced/c1/127.0.0.1:3306").await.unwrap());
    assert!(!store.kv_delete("fenced/c1/127.0.0.1:3306").await.unwrap());
    assert_eq!(store.kv_list("fenced/c1/").await.unwrap().len(), 1);
    // A prefix with SQL LIKE wildcards in it matches literally.
    store.kv_put("a_b", &json!(1)).await.unwrap();
    store.kv_put("axb", &json!(2)).await.unwrap();
    assert_eq!(store.kv_list("a_").await.unwrap().len(), 1);
}

/// The typed keys ([`Settings`]): defaults when never set, round trips, fenced marks per
/// cluster in address order, and a corrupt value named as such.
async fn typed_settings(store: &dyn Store) {
    assert!(!store.recoveries_disabled().await.unwrap(), "on by default");
    store.set_recoveries_disabled(true).await.unwrap();
    assert!(store.recoveries_disabled().await.unwrap());
    store.set_recoveries_disabled(false).await.unwrap();
    assert!(!store.recoveries_disabled().await.unwrap());

    assert_eq!(store.recoveries_acked("t1").await.unwrap(), None);
    store.ack_recoveries("t1", 42).await.unwrap();
    assert_eq!(store.recoveries_acked("t1").await.unwrap(), Some(42));
    assert_eq!(store.recoveries_acked("t10").await.unwrap(), None);

    let a: model::InstanceAddr = "127.0.0.1:3307".parse().unwrap();
    let b: model::InstanceAddr = "127.0.0.1:3306".parse().unwrap();
    let mark = FencedMark {
        operation_id: Some(7),
        at_ms: 9,
        new_primary: Some("127.0.0.1:3308".into()),
        last_binlog_pos: Some("0-1-5".into()),
        keep_semi_sync: true,
    };
    store.mark_fenced("t1", &a, &mark).await.unwrap();
    store
        .mark_fenced("t1", &b, &FencedMark::default())
        .await
        .unwrap();
    store.mark_fenced("t10", &a, &mark).await.unwrap();
    let fenced = store.fenced("t1").await.unwrap();
    assert_eq!(
        fenced,
        vec![
            (b.clone(), FencedMark::default()),
            (a.clone(), mark.clone())
        ],
        "only t1's marks, in address order"
    );
    assert!(store.unmark_fenced("t1", &a).await.unwrap());
    assert!(!store.unmark_fenced("t1", &a).await.unwrap());
    assert_eq!(store.fenced("t1").await.unwrap().len(), 1);
    assert_eq!(store.fenced("t10").await.unwrap().len(), 1);
    // A mark written before the type (only `at_ms`) still reads.
    store
        .kv_put("fenced/t2/127.0.0.1:3306", &json!({ "at_ms": 5 }))
        .await
        .unwrap();
    assert_eq!(store.fenced("t2").await.unwrap()[0].1.at_ms, 5);
    // A value that is not a mark is named, not skipped.
    store
        .kv_put("fenced/t3/127.0.0.1:3306", &json!("garbage"))
        .await
        .unwrap();
    assert!(matches!(
        store.fenced("t3").await,
        Err(StoreError::Corrupt { .. })
    ));

    assert_eq!(store.alert_state::<Vec<u32>>().await.unwrap(), None);
    store.put_alert_state(&vec![1u32, 2]).await.unwrap();
    assert_eq!(
        store.alert_state::<Vec<u32>>().await.unwrap(),
        Some(vec![1, 2])
    );

    assert!(!store.has_drt_run("r1").await.unwrap());
    store.put_drt_run("r1", &json!({ "n": 1 })).await.unwrap();
    store.put_drt_run("r2", &json!({ "n": 2 })).await.unwrap();
    assert!(store.has_drt_run("r1").await.unwrap());
    assert_eq!(
        store.drt_run::<serde_json::Value>("r2").await.unwrap(),
        Some(json!({ "n": 2 }))
    );
    assert_eq!(
        store.drt_runs::<serde_json::Value>().await.unwrap(),
        vec![json!({ "n": 1 }), json!({ "n": 2 })]
    );
}
