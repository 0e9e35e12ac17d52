//! Dead-primary detection (`dbfleet bench detection`): SIGKILL (or SIGSTOP) the primary of a
//! 3-member sandbox under the real watch loop, and time fault → `DeadPrimary` in the store.

use std::time::{Duration, Instant};

use sandbox::{Sandbox, UpOptions};
use serde::Serialize;

/// What the bench does to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionFault {
    /// SIGKILL: the kernel closes every socket at once.
    Kill,
    /// SIGSTOP with `slave_net_timeout=60`: nothing closes, the primary goes silent.
    Freeze,
}

/// What `bench detection` prints.
#[derive(Clone, Debug, Serialize)]
pub struct DetectionFigures {
    pub fault: DetectionFault,
    pub runs: usize,
    pub interval_ms: u64,
    pub detection_ms: Vec<u64>,
    pub p50_ms: u64,
    pub max_ms: u64,
}

/// Kill (or freeze) the primary of a fresh sandbox (primary on `base_port`, in a temporary
/// directory removed after) `runs` times; progress on stderr unless `quiet`.
pub async fn run(
    runs: usize,
    fault: DetectionFault,
    interval: Duration,
    base_port: u16,
    quiet: bool,
) -> anyhow::Result<DetectionFigures> {
    let root = crate::temp_root();
    let result = detect(&root, runs, fault, interval, base_port, quiet).await;
    let _ = Sandbox::down(&root, "benchdet");
    let _ = std::fs::remove_dir_all(&root);
    let times = result?;
    let mut sorted = times.clone();
    sorted.sort();
    Ok(DetectionFigures {
        fault,
        runs,
        interval_ms: interval.as_millis() as u64,
        p50_ms: sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        max_ms: *sorted.last().unwrap_or(&0),
        detection_ms: times,
    })
}

/// Kill (or freeze) the primary `runs` times under the real watch loop; return fault →
/// DeadPrimary in ms.
async fn detect(
    root: &std::path::Path,
    runs: usize,
    fault: DetectionFault,
    interval: Duration,
    base_port: u16,
    json: bool,
) -> anyhow::Result<Vec<u64>> {
    use std::sync::Arc;

    use model::ProblemKind;
    use store::Store;

    let name = "benchdet";
    let (sb, _) = Sandbox::up(&UpOptions {
        name: name.into(),
        replicas: 2,
        semi_sync: false,
        base_port,
        root: root.to_path_buf(),
        tuning: sandbox::Tuning {
            slave_net_timeout_s: match fault {
                DetectionFault::Kill => sandbox::Tuning::default().slave_net_timeout_s,
                DetectionFault::Freeze => 60,
            },
            ..Default::default()
        },
    })
    .await?;
    let creds = sb.credentials()?.admin.credentials();
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(&sb.dir().join("daemon"))?);
    let spec = sb.cluster_spec();
    let stats = Arc::new(monitor::Stats::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let watch = tokio::spawn(monitor::run(
        monitor::WatchOptions {
            interval,
            discovery_interval: Duration::from_secs(10),
            probe: probe::ProbeOptions {
                connect_timeout: Duration::from_millis(500),
                query_timeout: Duration::from_millis(500),
            },
            concurrency: 64,
            fast_path: monitor::FastPathOptions::default(),
            persist_every: monitor::watch::PERSIST_EVERY,
        },
        vec![monitor::ClusterWatch::new(spec, creds)],
        store.clone(),
        stats,
        None,
        cancel.clone(),
    ));
    let primary = sb.initial_primary().name.clone();
    let healthy = |store: Arc<dyn Store>| async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let open = store.open_problems(Some(name)).await?;
            let seen = store.last_observations(Some(name)).await?;
            if open.is_empty() && seen.len() == 3 {
                return Ok::<(), anyhow::Error>(());
            }
            if Instant::now() > deadline {
                return Err(anyhow::anyhow!("cluster not healthy after 60s: {open:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut times = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for i in 0..runs {
            healthy(store.clone()).await?;
            let killed_ms = monitor::now_ms();
            // SIGCONT when dropped, on every path.
            let frozen = match fault {
                DetectionFault::Kill => {
                    sb.kill(&primary)?;
                    None
                }
                DetectionFault::Freeze => Some(
                    sandbox::testing::Frozen::try_freeze(&sb, &primary)
                        .map_err(|e| anyhow::anyhow!(e))?,
                ),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            let detected_ms = loop {
                let open = store.open_problems(Some(name)).await?;
                if let Some(p) = open
                    .iter()
                    .find(|p| p.problem.kind == ProblemKind::DeadPrimary)
                {
                    break p.first_seen_ms;
                }
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!("no DeadPrimary 60s after the kill"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            let took = detected_ms.saturating_sub(killed_ms);
            if !json {
                eprintln!("run {}/{runs}: {fault:?} -> DeadPrimary {took}ms", i + 1);
            }
            times.push(took);
            match frozen {
                Some(f) => f.thaw(),
                None => {
                    sb.start(&primary).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    cancel.cancel();
    let _ = watch.await;
    outcome?;
    Ok(times)
}
