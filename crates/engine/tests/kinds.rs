//! Operation kinds: operations stored with the kind names the store has always held are
//! recognised, and each kind left `running` by a crash is judged by its own entry in the
//! engine's registry. No server is needed: none of these operations gets far enough to
//! connect to one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::FailoverConfig;
use engine::{operation_kinds, ClusterSetup, Engine, EngineOptions};
use model::{ClusterSpec, InstanceSpec, OperationKind, PromotionRule};
use probe::{Credentials, ProbeOptions};
use store::{NewOperation, OperationQuery, OperationRecord, OperationState, SqliteStore, Store};

fn setup(name: &str) -> ClusterSetup {
    ClusterSetup {
        haproxy: None,
        spec: ClusterSpec {
            name: name.into(),
            // Nothing listens there; nothing here connects.
            instances: vec![InstanceSpec {
                addr: "127.0.0.1:9".parse().unwrap(),
                promotion: PromotionRule::Neutral,
                site: None,
            }],
            expected_replicas: 0,
            semi_sync: false,
            max_lag: Duration::from_secs(10),
            stall_confirm: model::DEFAULT_STALL_CONFIRM,
            storage: Default::default(),
        },
        admin: Credentials::new("admin", "secret"),
        repl: Some(Credentials::new("repl", "secret")),
        failover: FailoverConfig::default(),
    }
}

/// Record an operation as earlier builds did: its kind as a plain string.
async fn running(
    store: &SqliteStore,
    cluster: &str,
    kind: &str,
    step: &str,
    data: serde_json::Value,
) -> OperationRecord {
    store
        .create_operation(&NewOperation {
            cluster: cluster.into(),
            kind: kind.into(),
            trigger: "manual".into(),
            state: OperationState::Running,
            step: step.into(),
            data,
            owner: "a-crashed-node".into(),
            created_ms: 1,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn stored_kinds_are_recognised_and_each_resumes_its_own_way() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let clusters = ["c-failover", "c-switchover", "c-rejoin", "c-backup"];
    for c in clusters {
        store.upsert_cluster(&setup(c).spec, 1).await.unwrap();
    }
    let none = serde_json::json!({});
    let failover = running(&store, "c-failover", "failover", "confirm", none.clone()).await;
    // A switchover's context as its `check` step records it.
    let checking = serde_json::json!({
        "old_primary": "127.0.0.1:9", "target": null, "replicas": [], "blocked_ms": null,
        "unblocked_ms": null, "write_block_ms": null, "target_pos": null,
        "promote_started": false, "repointed": [], "warnings": [],
    });
    let switchover = running(&store, "c-switchover", "switchover", "check", checking).await;
    let rejoin = running(&store, "c-rejoin", "rejoin", "attach", none.clone()).await;
    // A kind this build does not know (a newer node wrote it).
    let backup = running(&store, "c-backup", "backup", "copy", none).await;

    // Read back from the store, the names are the kinds.
    let stored = store.operations(&OperationQuery::default()).await.unwrap();
    let kind_of = |id: i64| {
        let rec = stored.iter().find(|o| o.id == id).unwrap();
        rec.kind.parse::<OperationKind>().ok()
    };
    assert_eq!(kind_of(failover.id), Some(OperationKind::Failover));
    assert_eq!(kind_of(switchover.id), Some(OperationKind::Switchover));
    assert_eq!(kind_of(rejoin.id), Some(OperationKind::Rejoin));
    assert_eq!(kind_of(backup.id), None);

    let engine = Engine::new(
        store.clone(),
        EngineOptions {
            node_id: "test-node".into(),
            lease_ttl: Duration::from_secs(5),
            lock_ttl: Duration::from_secs(20),
            probe: ProbeOptions {
                connect_timeout: Duration::from_millis(500),
                query_timeout: Duration::from_secs(5),
            },
        },
        clusters.iter().map(|c| setup(c)).collect(),
    );
    assert!(engine.campaign_once().await, "a lone node leads");
    engine.clone().resume_interrupted().await;

    // The resumptions run on tasks of their own: wait until none is left running.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let ops = store.operations(&OperationQuery::default()).await.unwrap();
        if ops.iter().all(|o| o.state != OperationState::Running) {
            break ops;
        }
        assert!(
            Instant::now() < deadline,
            "operations still running: {ops:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error_of = |id: i64| {
        let rec = ended.iter().find(|o| o.id == id).unwrap();
        assert_eq!(rec.state, OperationState::NeedsHuman, "{rec:#?}");
        assert_eq!(rec.owner, "test-node", "{rec:#?}");
        rec.error.clone().unwrap_or_default()
    };
    // A failover is resumed by its own rules (this one never recorded its old primary).
    assert_eq!(
        error_of(failover.id),
        "interrupted before its old primary was recorded"
    );
    // A switchover says what it undid (here, nothing: writes were never blocked).
    assert_eq!(
        error_of(switchover.id),
        "the daemon stopped during step check; a switchover is not resumed automatically; writes were never blocked"
    );
    assert_eq!(
        error_of(rejoin.id),
        "the daemon stopped during step attach; a rejoin is not resumed automatically"
    );
    // An unknown kind is never guessed at.
    assert_eq!(
        error_of(backup.id),
        "the daemon stopped during step copy; a backup is not resumed automatically"
    );
}

#[test]
fn every_kind_has_a_description() {
    let kinds = operation_kinds();
    assert_eq!(
        kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        OperationKind::ALL
    );
    assert!(kinds.iter().all(|(_, d)| !d.is_empty()), "{kinds:?}");
}
