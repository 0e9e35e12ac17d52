//! How often the watch loop writes observations to the store, against a real sandbox: with
//! `persist_every` long, an instance whose shape does not change keeps its first stored copy
//! while the loop's own latest observation moves on every probe; a change of shape (a
//! replica's SQL thread stopped) reaches the store at the next round.
//!
//! The sandbox uses ports 30070–30072, in a temporary directory. Waits poll with generous
//! deadlines; nothing asserts how fast anything happens.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{InstanceAddr, Observation};
use monitor::{ClusterWatch, HeartbeatOptions, Stats, WatchOptions};
use probe::{ProbeOptions, Session};
use sandbox::testing::TestSandbox;
use store::Store;
use tokio_util::sync::CancellationToken;

use common::watch_options;

const INTERVAL: Duration = Duration::from_millis(200);

async fn stored(store: &dyn Store, addr: &InstanceAddr) -> Option<Observation> {
    store
        .last_observations(Some("pe"))
        .await
        .expect("read observations")
        .into_iter()
        .map(|(_, o)| o)
        .find(|o| &o.addr == addr)
}

fn latest(stats: &Stats, addr: &InstanceAddr) -> Option<Observation> {
    stats.latest.with(|l| l.get(addr).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_observations_are_stored_rarely_and_changes_at_once() {
    let sb = TestSandbox::up("pe", 1, 30070).await;
    let creds = sb.admin();
    let m2 = sb.addr("m2");
    let spec = sb.cluster_spec();
    let stats = Arc::new(Stats::default());
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open_in_memory().expect("store"));
    let cancel = CancellationToken::new();
    let watch = tokio::spawn(monitor::run_with(
        WatchOptions {
            persist_every: Duration::from_secs(3600),
            ..watch_options(INTERVAL)
        },
        HeartbeatOptions {
            enabled: false,
            ..Default::default()
        },
        vec![ClusterWatch::new(spec, creds.clone())],
        store.clone(),
        stats.clone(),
        None,
        cancel.clone(),
    ));

    // The first observation of each instance is stored.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(o) = stored(store.as_ref(), &m2)
            .await
            .filter(|o| o.state().is_some())
        {
            break o;
        }
        assert!(Instant::now() < deadline, "m2 never stored");
        tokio::time::sleep(INTERVAL).await;
    };
    // Ten more rounds: the loop's own copy moves on, the stored one stays.
    let rounds = stats.rounds.load(Ordering::Relaxed);
    while stats.rounds.load(Ordering::Relaxed) < rounds + 10 {
        tokio::time::sleep(INTERVAL / 2).await;
    }
    let live = latest(&stats, &m2).expect("m2 probed");
    assert!(live.at_unix_ms > first.at_unix_ms, "the loop probes on");
    let still = stored(store.as_ref(), &m2).await.expect("m2 stored");
    assert_eq!(
        still.at_unix_ms, first.at_unix_ms,
        "unchanged shape, not rewritten"
    );
    assert!(stats.observations_persist_skipped.load(Ordering::Relaxed) >= 10);

    // Stop m2's SQL thread: the stored copy shows it within a few rounds.
    let mut s2 = Session::connect(&m2, &creds, ProbeOptions::default())
        .await
        .expect("connect m2");
    s2.exec("stop sql thread", "STOP SLAVE SQL_THREAD")
        .await
        .expect("stop sql thread");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = stored(store.as_ref(), &m2).await.expect("m2 stored");
        let sql_running = o
            .state()
            .and_then(|s| s.replication.as_ref())
            .map(|r| r.sql_running);
        if sql_running == Some(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped SQL thread never reached the store: {sql_running:?}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
    s2.exec("start sql thread", "START SLAVE SQL_THREAD")
        .await
        .expect("start sql thread");
    s2.close().await;

    cancel.cancel();
    watch.await.expect("join").expect("watch loop");
}
