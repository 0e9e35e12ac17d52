//! Failover (`dbfleet bench failover`): SIGKILL (or SIGSTOP) the primary of a semi-sync sandbox under a
//! write load, again and again, with the real watch loop and engine, and measure fault →
//! detection, fault → writable new primary, the failover's own decision → writable, the
//! client's outage and the acknowledged writes lost; then time planned switchovers under the
//! same load.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{FailoverConfig, FailoverMode};
use model::InstanceAddr;
use sandbox::{Sandbox, UpOptions};
use serde::Serialize;
use store::{OperationQuery, Store};
use tokio_util::sync::CancellationToken;

/// What happens to the primary in a failover run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL: the kernel closes its sockets at once.
    Kill,
    /// SIGSTOP until the failover finished, then SIGCONT: a frozen VM or process.
    Pause,
    /// Every packet to and from its port dropped (iptables) until the failover finished:
    /// a host gone silent, no RST.
    Blackhole,
}

/// One failover run.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverRun {
    pub old_primary: String,
    pub new_primary: String,
    pub detection_ms: u64,
    pub writable_ms: u64,
    /// From the failover's start (its decision) to the new primary writable.
    pub decision_to_writable_ms: u64,
    pub client_outage_ms: u64,
    pub acked: usize,
    pub in_doubt: usize,
    pub lost: usize,
}

/// One switchover run.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchoverRun {
    pub write_block_ms: u64,
    pub client_outage_ms: u64,
    pub acked: usize,
    pub lost: usize,
}

/// What `bench failover` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverFigures {
    pub fault: Fault,
    pub interval_ms: u64,
    pub semi_sync: bool,
    pub failovers: Vec<FailoverRun>,
    pub switchovers: Vec<SwitchoverRun>,
    pub detection_p50_ms: u64,
    pub detection_max_ms: u64,
    pub writable_p50_ms: u64,
    pub writable_max_ms: u64,
    pub decision_to_writable_p50_ms: u64,
    pub decision_to_writable_max_ms: u64,
    pub client_outage_p50_ms: u64,
    pub client_outage_max_ms: u64,
    pub write_block_p50_ms: u64,
    pub write_block_max_ms: u64,
    pub acked_total: usize,
    pub lost_total: usize,
    /// Runs where the killed primary came back with a committed but unacknowledged write,
    /// so `rejoin` refused it until the write was removed.
    pub errant_rejoins: usize,
}

fn p50_max(v: impl Iterator<Item = u64>) -> (u64, u64) {
    let mut v: Vec<u64> = v.collect();
    v.sort_unstable();
    (
        v.get(v.len() / 2).copied().unwrap_or(0),
        v.last().copied().unwrap_or(0),
    )
}

const NAME: &str = "benchfo";

/// Run the benchmark in a sandbox in a temporary directory, removed after; progress on
/// stderr unless `json`.
pub async fn run_in_temp(
    fault: Fault,
    runs: usize,
    switchovers: usize,
    interval: Duration,
    base_port: u16,
    json: bool,
) -> anyhow::Result<FailoverFigures> {
    let root = crate::temp_root();
    let result = run(&root, fault, runs, switchovers, interval, base_port, json).await;
    let _ = Sandbox::down(&root, NAME);
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// Run the benchmark in a sandbox under `root`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    root: &Path,
    fault: Fault,
    runs: usize,
    switchovers: usize,
    interval: Duration,
    base_port: u16,
    json: bool,
) -> Result<FailoverFigures, anyhow::Error> {
    let (sb, _) = Sandbox::up(&UpOptions {
        name: NAME.into(),
        replicas: 2,
        semi_sync: true,
        base_port,
        root: root.to_path_buf(),
        tuning: Default::default(),
    })
    .await?;
    let creds = sb.credentials()?;
    let admin = creds.admin.credentials();
    // Lossless semi-sync on every member (each may become the primary): a primary never
    // acknowledges alone.
    for m in &sb.manifest().members {
        let mut s = probe::Session::connect(&m.addr(), &admin, probe::ProbeOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", m.name))?;
        s.exec(
            "lossless semi-sync",
            "SET GLOBAL rpl_semi_sync_master_timeout=4294967295, rpl_semi_sync_master_wait_no_slave=ON",
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", m.name))?;
        s.close().await;
    }
    let store: Arc<dyn Store> = Arc::new(store::SqliteStore::open(&sb.dir().join("daemon"))?);
    let spec = sb.cluster_spec();
    store.upsert_cluster(&spec, engine::now_ms()).await?;
    store
        .set_writer(NAME, Some(sb.initial_primary().addr()), engine::now_ms())
        .await?;
    let probe_opts = probe::ProbeOptions {
        connect_timeout: Duration::from_millis(500),
        query_timeout: Duration::from_millis(500),
    };
    let engine = engine::Engine::new(
        store.clone(),
        engine::EngineOptions {
            node_id: "bench".into(),
            lease_ttl: Duration::from_secs(3),
            lock_ttl: Duration::from_secs(30),
            probe: probe::ProbeOptions {
                connect_timeout: Duration::from_millis(500),
                query_timeout: Duration::from_secs(5),
            },
        },
        vec![engine::ClusterSetup {
            haproxy: None,
            spec: spec.clone(),
            admin: admin.clone(),
            repl: Some(creds.repl.credentials()),
            failover: FailoverConfig {
                mode: FailoverMode::Auto,
                ..Default::default()
            },
        }],
    );
    engine.campaign_once().await;
    let cancel = CancellationToken::new();
    let (tx, consumer) = daemon::round_consumer_with(engine.clone(), None);
    let stats = Arc::new(monitor::Stats::default());
    let watch = tokio::spawn(monitor::run(
        monitor::WatchOptions {
            interval,
            discovery_interval: Duration::from_secs(10),
            probe: probe_opts,
            concurrency: 64,
            fast_path: monitor::FastPathOptions::default(),
            persist_every: monitor::watch::PERSIST_EVERY,
        },
        vec![monitor::ClusterWatch::new(spec, admin.clone())],
        store.clone(),
        stats.clone(),
        Some(tx),
        cancel.clone(),
    ));
    let result = runs_in(
        &sb,
        fault,
        &store,
        &stats,
        &engine,
        runs,
        switchovers,
        interval,
        json,
    )
    .await;
    cancel.cancel();
    let _ = watch.await;
    let _ = consumer.await;
    result
}

fn member_name(sb: &Sandbox, addr: &InstanceAddr) -> Result<String, anyhow::Error> {
    sb.manifest()
        .members
        .iter()
        .find(|m| &m.addr() == addr)
        .map(|m| m.name.clone())
        .ok_or_else(|| anyhow::anyhow!("{addr} is not a sandbox member"))
}

/// Wait until every member was seen reachable after `since_ms` (by the watch loop's own
/// latest observations) with no open problem, then one more interval, so the watch loop has
/// named the primary and holds its liveness connection, as it would in steady state.
async fn wait_healthy(
    sb: &Sandbox,
    store: &Arc<dyn Store>,
    stats: &monitor::Stats,
    interval: Duration,
) -> Result<(), anyhow::Error> {
    let since_ms = engine::now_ms();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = store.open_problems(Some(NAME)).await?;
        let fresh = stats.latest.with(|latest| {
            sb.manifest().members.iter().all(|m| {
                latest
                    .get(&m.addr())
                    .is_some_and(|o| o.state().is_some() && o.at_unix_ms > since_ms)
            })
        });
        if open.is_empty() && fresh {
            tokio::time::sleep(interval + Duration::from_millis(200)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow::anyhow!(
                "the sandbox is not healthy 60 s after the last run: {}",
                open.iter()
                    .map(|p| p.problem.summary.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn load_opts(sb: &Sandbox, duration: Duration) -> Result<drt::load::LoadOptions, anyhow::Error> {
    let creds = sb.credentials()?;
    let members = sb.manifest().members.iter().map(|m| m.addr()).collect();
    let mut o = drt::load::LoadOptions::new(members, creds.app.credentials());
    o.table = "app.bench_ledger"
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    o.writers = 4;
    o.rate_per_s = 400;
    o.duration = duration;
    Ok(o)
}

async fn lost(
    sb: &Sandbox,
    ledger: &drt::load::Ledger,
    writer: &InstanceAddr,
) -> Result<usize, anyhow::Error> {
    let admin = sb.credentials()?.admin.credentials();
    let v = drt::load::verify(ledger, writer, &[], &admin, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("verify the ledger on {writer}: {e}"))?;
    Ok(v.lost.len())
}

#[allow(clippy::too_many_arguments)]
async fn runs_in(
    sb: &Sandbox,
    fault: Fault,
    store: &Arc<dyn Store>,
    stats: &monitor::Stats,
    engine: &Arc<engine::Engine>,
    runs: usize,
    switchovers: usize,
    interval: Duration,
    json: bool,
) -> Result<FailoverFigures, anyhow::Error> {
    let admin = sb.credentials()?.admin.credentials();
    let table: drt::load::TableName = "app.bench_ledger"
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drt::load::prepare(&admin, &sb.initial_primary().addr(), &table)
        .await
        .map_err(|e| anyhow::anyhow!("prepare the ledger table: {e}"))?;
    let mut failovers = Vec::new();
    let mut errant_rejoins = 0usize;
    for i in 0..runs {
        wait_healthy(sb, store, stats, interval).await?;
        let before = store.operations(&OperationQuery::default()).await?.len();
        let primary = store
            .cluster(NAME)
            .await?
            .and_then(|c| c.writer)
            .ok_or_else(|| anyhow::anyhow!("no writer recorded"))?;
        let old = member_name(sb, &primary)?;
        let load = tokio::spawn(drt::load::run(
            load_opts(sb, Duration::from_millis(2500))?,
            CancellationToken::new(),
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed_ms = engine::now_ms();
        let mut paused = None;
        let mut cut = None;
        match fault {
            Fault::Kill => {
                sb.kill(&old)?;
            }
            Fault::Pause => {
                paused = Some(
                    drt::faults::ProcessFault::inject(sb, &old, drt::faults::ProcessSpec::Pause)
                        .map_err(|e| anyhow::anyhow!("pause {old}: {e}"))?,
                )
            }
            Fault::Blackhole => {
                let ip = primary
                    .host
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{primary}: {e}"))?;
                cut = Some(
                    drt::faults::NetworkFault::inject(drt::faults::NetworkSpec::Partition {
                        addr: std::net::SocketAddr::new(ip, primary.port),
                    })
                    .map_err(|e| anyhow::anyhow!("cut {old}: {e}"))?,
                )
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let op = loop {
            let ops = store.operations(&OperationQuery::default()).await?;
            if ops.len() > before && ops[0].state.is_final() {
                break ops[0].clone();
            }
            if Instant::now() > deadline {
                return Err(anyhow::anyhow!("no finished failover 60 s after the kill"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if let Some(p) = paused {
            p.heal()
                .await
                .map_err(|e| anyhow::anyhow!("resume {old}: {e}"))?;
        }
        if let Some(c) = cut {
            c.heal()
                .await
                .map_err(|e| anyhow::anyhow!("heal the cut of {old}: {e}"))?;
        }
        let ledger = load.await.map_err(|e| anyhow::anyhow!("load task: {e}"))?;
        if op.state != store::OperationState::Succeeded {
            return Err(anyhow::anyhow!(
                "run {}: the failover ended {}: {}",
                i + 1,
                op.state,
                op.error.unwrap_or_default()
            ));
        }
        let new: InstanceAddr = op.data["candidate"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("candidate: {e}"))?;
        let at = |k: &str| op.data[k].as_u64().unwrap_or(0).saturating_sub(killed_ms);
        let run = FailoverRun {
            old_primary: primary.to_string(),
            new_primary: new.to_string(),
            detection_ms: at("detected_ms"),
            writable_ms: at("writable_ms"),
            decision_to_writable_ms: op.data["writable_ms"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(op.data["started_ms"].as_u64().unwrap_or(0)),
            client_outage_ms: ledger.max_outage().as_millis() as u64,
            acked: ledger.acked.len(),
            in_doubt: ledger.in_doubt.len(),
            lost: lost(sb, &ledger, &new).await?,
        };
        if !json {
            eprintln!(
                "failover {}/{runs}: {} -> {}: detection {} ms, writable {} ms (decision -> writable {} ms), client outage {} ms, acked {}, lost {}",
                i + 1,
                run.old_primary,
                run.new_primary,
                run.detection_ms,
                run.writable_ms,
                run.decision_to_writable_ms,
                run.client_outage_ms,
                run.acked,
                run.lost
            );
        }
        if !json && run.decision_to_writable_ms > 300 {
            // Where a slow failover spent its time: each step's end, after its start.
            let steps: Vec<String> = op.data["timeline"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| format!("{} {}", p[0].as_str().unwrap_or("?"), p[1]))
                        .collect()
                })
                .unwrap_or_default();
            eprintln!(
                "  steps (ms after the start): {}; caught up from {}",
                steps.join(", "),
                op.data["caught_up_from"]
            );
        }
        failovers.push(run);
        // Bring the old primary back as a replica for the next run. It starts read-only, as
        // a production server configured to start read-only would (and as DRT heals do), so
        // it is never a second writable primary, and a repair of it is safe.
        if fault == Fault::Kill {
            sb.start_read_only(&old).await?;
        } else {
            // The old primary runs again: wait until the daemon's rounds fenced it.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let o = probe::observe(&primary, &admin, probe::ProbeOptions::default()).await;
                if o.state().is_some_and(|s| s.read_only) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(anyhow::anyhow!(
                        "{primary} was not fenced 20 s after it came back"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        engine
            .ack_recoveries(NAME, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match engine.rejoin(NAME, &primary).await {
                Ok(_) => break,
                Err(engine::EngineError::Ended { message, .. })
                    if message.contains("errant GTIDs") =>
                {
                    // The killed primary committed a write it never acknowledged (semi-sync
                    // AFTER_SYNC: in its binlog, not on any replica). dbfleet refuses to
                    // rejoin it; a DBA removes the write, as the bench does here.
                    errant_rejoins += 1;
                    if !json {
                        eprintln!("  rejoin refused: {message}; removing the unacknowledged write by hand");
                    }
                    let admin = sb.credentials()?.admin.credentials();
                    drt::runner::discard_unacknowledged(
                        &primary,
                        &new,
                        &admin,
                        &ledger.table.quoted(),
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "rejoin not yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(anyhow::anyhow!("rejoin {primary}: {e}")),
            }
        }
    }
    let mut sws = Vec::new();
    for i in 0..switchovers {
        wait_healthy(sb, store, stats, interval).await?;
        let load = tokio::spawn(drt::load::run(
            load_opts(sb, Duration::from_millis(2000))?,
            CancellationToken::new(),
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let rec = engine
            .switchover(NAME, None)
            .await
            .map_err(|e| anyhow::anyhow!("switchover: {e}"))?;
        let ledger = load.await.map_err(|e| anyhow::anyhow!("load task: {e}"))?;
        let target: InstanceAddr = rec.data["target"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow::anyhow!("target: {e}"))?;
        let run = SwitchoverRun {
            write_block_ms: rec.data["write_block_ms"].as_u64().unwrap_or(0),
            client_outage_ms: ledger.max_outage().as_millis() as u64,
            acked: ledger.acked.len(),
            lost: lost(sb, &ledger, &target).await?,
        };
        if !json {
            eprintln!(
                "switchover {}/{switchovers}: write block {} ms, client outage {} ms, acked {}, lost {}",
                i + 1,
                run.write_block_ms,
                run.client_outage_ms,
                run.acked,
                run.lost
            );
        }
        sws.push(run);
    }
    let (detection_p50_ms, detection_max_ms) = p50_max(failovers.iter().map(|r| r.detection_ms));
    let (writable_p50_ms, writable_max_ms) = p50_max(failovers.iter().map(|r| r.writable_ms));
    let (decision_to_writable_p50_ms, decision_to_writable_max_ms) =
        p50_max(failovers.iter().map(|r| r.decision_to_writable_ms));
    let (client_outage_p50_ms, client_outage_max_ms) =
        p50_max(failovers.iter().map(|r| r.client_outage_ms));
    let (write_block_p50_ms, write_block_max_ms) = p50_max(sws.iter().map(|r| r.write_block_ms));
    Ok(FailoverFigures {
        fault,
        decision_to_writable_p50_ms,
        decision_to_writable_max_ms,
        errant_rejoins,
        interval_ms: interval.as_millis() as u64,
        semi_sync: true,
        acked_total: failovers.iter().map(|r| r.acked).sum::<usize>()
            + sws.iter().map(|r| r.acked).sum::<usize>(),
        lost_total: failovers.iter().map(|r| r.lost).sum::<usize>()
            + sws.iter().map(|r| r.lost).sum::<usize>(),
        failovers,
        switchovers: sws,
        detection_p50_ms,
        detection_max_ms,
        writable_p50_ms,
        writable_max_ms,
        client_outage_p50_ms,
        client_outage_max_ms,
        write_block_p50_ms,
        write_block_max_ms,
    })
}
