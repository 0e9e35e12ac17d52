//! A frozen primary (SIGSTOP) against real sandboxes whose replicas keep MariaDB's default
//! `slave_net_timeout` of 60 s, so their IO threads say `Yes` all along: the watch loop
//! confirms the death from the replicas' silent streams (heartbeats, received positions)
//! within seconds, and a freeze shorter than `stall_confirm` never confirms one.
//!
//! Each test runs its own sandbox on its own ports (25000–25049) in a temporary directory,
//! and the watch loop in-process with the daemon's default probe settings.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use model::ProblemKind;
use monitor::{ClusterRound, ClusterWatch, FastPathOptions, Stats, WatchOptions};
use sandbox::testing::{Frozen, TestSandbox};
use sandbox::Tuning;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::watch_options;

/// A sandbox of a primary and two replicas with `slave_net_timeout=60`, watched at the
/// daemon's defaults (1 s interval, 500 ms timeouts, fast path on).
struct Fixture {
    sb: TestSandbox,
    rounds: mpsc::Receiver<ClusterRound>,
    cancel: CancellationToken,
    watch: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Fixture {
    async fn start(name: &str, base_port: u16) -> Self {
        let tuning = Tuning {
            slave_net_timeout_s: 60,
            ..Tuning::default()
        };
        let sb = TestSandbox::up_tuned(name, 2, base_port, false, tuning).await;
        let store: Arc<dyn store::Store> =
            Arc::new(store::SqliteStore::open_in_memory().expect("store"));
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::channel(1024);
        let watch = tokio::spawn(monitor::run(
            WatchOptions {
                fast_path: FastPathOptions::default(),
                ..watch_options(Duration::from_secs(1))
            },
            vec![ClusterWatch::new(sb.cluster_spec(), sb.admin())],
            store,
            Arc::new(Stats::default()),
            Some(tx),
            cancel.clone(),
        ));
        Self {
            sb,
            rounds: rx,
            cancel,
            watch,
        }
    }

    /// Rounds until `want` holds, or `None` once `within` has passed.
    async fn until(
        &mut self,
        within: Duration,
        want: impl Fn(&ClusterRound) -> bool,
    ) -> Option<ClusterRound> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rounds.recv()).await {
                Ok(Some(r)) if want(&r) => return Some(r),
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watch loop stopped"),
                Err(_) => return None,
            }
        }
    }

    /// Wait until a round names m1 the primary of a healthy cluster whose replicas'
    /// streams are tracked.
    async fn wait_healthy(&mut self) {
        let m1 = self.sb.addr("m1");
        self.until(Duration::from_secs(30), |r| {
            r.primary.as_ref() == Some(&m1)
                && r.problems.is_empty()
                && r.observations.len() == 3
                && r.observations
                    .iter()
                    .filter(|o| stalled_ms(o).is_some())
                    .count()
                    == 2
        })
        .await
        .expect("a healthy cluster with tracked replica streams");
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.watch)
            .await
            .expect("the watch loop stops")
            .expect("no panic")
            .expect("no error");
    }
}

fn stalled_ms(o: &model::Observation) -> Option<u64> {
    o.state()
        .and_then(|s| s.replication.as_ref())
        .and_then(|r| r.stream.stalled_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_is_confirmed_dead_by_its_replicas_silence() {
    let mut f = Fixture::start("freeze4", 25000).await;
    f.wait_healthy().await;
    let m1 = f.sb.addr("m1");
    let frozen = Frozen::freeze(&f.sb, "m1");
    let dead = f
        .until(Duration::from_secs(15), |r| r.dead_primary() == Some(&m1))
        .await;
    let after_ms = dead
        .as_ref()
        .map(|r| r.at_ms.saturating_sub(frozen.at_unix_ms));
    let held = frozen.at.elapsed();
    // Thaw at 4 s at the earliest, as the scenario freezes for 4 s.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(held)).await;
    frozen.thaw();
    let dead = dead.expect("DeadPrimary while the primary was frozen, within 15 s");
    let after_ms = after_ms.unwrap_or_default();
    eprintln!(
        "SIGSTOP -> DeadPrimary round: {after_ms} ms (trigger {:?})",
        dead.trigger
    );
    let p = dead
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::DeadPrimary)
        .unwrap();
    eprintln!("{}", p.summary);
    for e in &p.evidence {
        eprintln!("  {}: {}", e.instance, e.fact);
    }
    assert!(p.summary.contains("by a silent stream"), "{}", p.summary);
    for r in ["m2", "m3"] {
        let addr = f.sb.addr(r);
        let fact = &p
            .evidence
            .iter()
            .find(|e| e.instance == addr)
            .unwrap_or_else(|| panic!("no evidence from {r}: {p:#?}"))
            .fact;
        assert!(
            fact.starts_with("io_thread=Yes") && fact.contains("but nothing received for"),
            "{r}: the IO thread still says Yes (slave_net_timeout=60), the stream is silent: {fact}"
        );
        assert!(
            fact.contains("heartbeats") && fact.contains("unchanged"),
            "{fact}"
        );
    }
    // The rule needs the stream silent for stall_confirm (1.5 s) + one heartbeat period
    // (500 ms), and the primary sent a heartbeat at most one period before it froze.
    assert!(
        after_ms >= 1_400,
        "confirmed {after_ms} ms after the freeze: sooner than stall_confirm allows"
    );
    // Back from the freeze, it is the primary again (no failover here: no engine).
    f.until(Duration::from_secs(15), |r| {
        r.primary.as_ref() == Some(&m1) && r.problems.is_empty()
    })
    .await
    .expect("healthy again after SIGCONT");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_shorter_than_stall_confirm_never_confirms_a_death() {
    let mut f = Fixture::start("freeze1", 25010).await;
    f.wait_healthy().await;
    let m1 = f.sb.addr("m1");
    for round in 0..3 {
        let frozen = Frozen::freeze(&f.sb, "m1");
        let started = Instant::now();
        let dead = f
            .until(Duration::from_secs(1), |r| r.dead_primary() == Some(&m1))
            .await;
        frozen.thaw();
        assert!(
            dead.is_none(),
            "freeze {round}: a 1 s freeze was confirmed dead: {dead:#?}"
        );
        // Watch what follows the thaw too: the stalls measured then must stay short.
        let dead = f
            .until(Duration::from_secs(4), |r| r.dead_primary() == Some(&m1))
            .await;
        assert!(
            dead.is_none(),
            "freeze {round}: confirmed dead after a 1 s freeze: {dead:#?}"
        );
        eprintln!(
            "freeze {round}: 1 s SIGSTOP, no DeadPrimary in the {:?} after it",
            started.elapsed()
        );
        f.until(Duration::from_secs(10), |r| {
            r.primary.as_ref() == Some(&m1) && r.problems.is_empty()
        })
        .await
        .expect("healthy again after SIGCONT");
    }
    f.stop().await;
}
