//! The daemon's life: start-up from a config, the rounds handed to the engine and the
//! alerting, the API, and an orderly shutdown (or a stop for a reload).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config::Config;
use monitor::{ClusterWatch, Stats, WatchOptions};
use probe::{Credentials, ProbeOptions};
use store::{kinds, EventLevel, NewEvent, SqliteStore, Store};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// How long each part may take to stop after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a scheduled DRT in progress gets to heal and verify at shutdown.
const DRT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a reload waits for this node's running operations to end before it gives up.
const RELOAD_OPERATION_WAIT: Duration = Duration::from_secs(60);
/// How long shutdown waits for this node's running operations to end (each runs to its
/// end; one that takes longer is left `running` in the store, for the next leader).
const OPERATION_SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Why the daemon did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config, its secrets or the environment (failpoints) are not valid: the
    /// operator's input, exit code 2.
    #[error("{0:#}")]
    Config(anyhow::Error),
    /// The metadata store is refused as it is: damaged (`PRAGMA quick_check`), unexpectedly
    /// empty (an existing file of 0 bytes or without the schema, and no `--init-store`), or
    /// written by a newer dbfleet. Exit code 3: an operator must restore a backup or say to
    /// start anew.
    #[error("{0:#}")]
    Store(anyhow::Error),
    /// Something failed while starting or running.
    #[error("{0:#}")]
    Run(#[from] anyhow::Error),
}

/// How `dbfleet serve` was asked to start.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// `--init-store`: give the schema to a SQLite store file that exists but is empty (0
    /// bytes) or has no schema, instead of refusing to start. A missing file is always
    /// created (a first start); a damaged one is always refused. No effect with etcd.
    pub init_store: bool,
}

/// Open the SQLite store under `data_dir`, checked; a refused store is a
/// [`DaemonError::Store`] that says what to do.
fn open_sqlite(data_dir: &std::path::Path, init: bool) -> Result<SqliteStore, DaemonError> {
    SqliteStore::open_with(data_dir, store::OpenOptions { init }).map_err(|e| {
        let refused = e.is_refused_store();
        let hint = match &e {
            store::StoreError::Uninitialized { .. } => {
                ". Refusing to start: restore a backup of the store (`dbfleet store backup` \
                 makes them), or start once with `dbfleet serve --init-store` to begin with \
                 an empty store"
            }
            store::StoreError::Damaged { .. } => {
                ". Refusing to start: stop what uses the store, move the file and its -wal \
                 and -shm aside, and restore a backup (`dbfleet store check` tells whether a \
                 file is sound)"
            }
            _ => "",
        };
        let e = anyhow::anyhow!("open the store in {}: {e}{hint}", data_dir.display());
        if refused {
            DaemonError::Store(e)
        } else {
            DaemonError::Run(e)
        }
    })
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// SIGTERM or SIGINT: it shut down in order.
    Stopped,
    /// SIGHUP with a valid config: it shut down so that the caller starts it again in
    /// place (see the CLI's `serve`).
    Reload,
}

/// Load `path` and check that every secret it names can be read.
pub fn load_config(path: &std::path::Path) -> Result<Config, DaemonError> {
    let cfg = Config::load(path).map_err(|e| DaemonError::Config(e.into()))?;
    cfg.check_secrets()
        .map_err(|e| DaemonError::Config(e.into()))?;
    Ok(cfg)
}

/// Run the daemon until SIGTERM or SIGINT (or a SIGHUP with a valid config, which restarts
/// it in place), then shut down in order: stop the API, cancel the probe tasks, flush the
/// store, exit 0.
pub async fn run(
    config_path: &std::path::Path,
    options: RunOptions,
) -> Result<Outcome, DaemonError> {
    let cfg = load_config(config_path)?;
    // Before anything opens a descriptor: the API's share depends on what the process has.
    let fd_limit = crate::fds::raise_nofile_limit().context("read the file-descriptor limit")?;
    let declared: usize = cfg.clusters.iter().map(|c| c.instances.len()).sum();
    let api_connections =
        crate::fds::api_connection_limit(cfg.api.max_connections, fd_limit.soft, declared);
    info!(
        soft = fd_limit.soft,
        hard = fd_limit.hard,
        raised_from = ?fd_limit.raised_from,
        kept_for_probes = crate::fds::reserved(declared),
        api_max_connections = api_connections,
        "file descriptors"
    );
    if api_connections < cfg.api.max_connections {
        tracing::warn!(
            configured = cfg.api.max_connections,
            api_max_connections = api_connections,
            fd_limit = fd_limit.soft,
            "api.max_connections lowered: the file-descriptor limit must also hold the probes' share (raise the hard RLIMIT_NOFILE, e.g. LimitNOFILE= in the systemd unit)"
        );
    }
    let failpoints = engine::failpoint::init_from_env()
        .map_err(|e| DaemonError::Config(anyhow::anyhow!("DBFLEET_FAILPOINTS: {e}")))?;
    if !failpoints.is_empty() {
        tracing::warn!(failpoints = ?failpoints, "failpoints are armed: this daemon will crash or fail on purpose");
    }
    let store: Arc<dyn Store> = match cfg.store.backend {
        config::StoreBackend::Sqlite => {
            Arc::new(open_sqlite(&cfg.store.data_dir, options.init_store)?)
        }
        config::StoreBackend::Etcd => Arc::new(
            store::EtcdStore::connect(
                &cfg.store.etcd_endpoints,
                &cfg.store.etcd_prefix,
                store::EtcdOptions::default(),
            )
            .await
            .with_context(|| {
                format!("connect to etcd at {}", cfg.store.etcd_endpoints.join(","))
            })?,
        ),
    };
    let tokens = cfg
        .api
        .load_tokens()
        .map_err(|e| DaemonError::Config(e.into()))?;
    let mut clusters = Vec::new();
    let mut setups = Vec::new();
    // Per cluster, the trigger that probes and analyses it at once (an operation ended).
    let mut refreshes = std::collections::HashMap::new();
    for c in &cfg.clusters {
        let creds = cfg
            .resolve_credentials(&c.credentials)
            .map_err(|e| DaemonError::Config(e.into()))?;
        let (user, password) = creds.into_parts();
        // Every connection to the cluster's servers, and the replication failover and
        // switchover set up, use its TLS.
        let admin = Credentials::new(user, password).with_tls(c.tls.clone());
        let repl = match &c.replication_credentials {
            Some(name) => {
                let (u, p) = cfg
                    .resolve_credentials(name)
                    .map_err(|e| DaemonError::Config(e.into()))?
                    .into_parts();
                Some(Credentials::new(u, p).with_tls(c.tls.clone()))
            }
            None => None,
        };
        setups.push(engine::ClusterSetup {
            spec: c.spec(),
            admin: admin.clone(),
            repl,
            failover: c.failover.clone(),
            haproxy: c.haproxy.runtime_api.as_ref().map(|a| {
                let socket = a
                    .parse::<haproxy::Socket>()
                    .expect("config validation parsed it");
                haproxy::RuntimeApi::new(socket, c.haproxy.timeout)
            }),
        });
        let refresh = Arc::new(tokio::sync::Notify::new());
        refreshes.insert(c.name.clone(), refresh.clone());
        let forget_after = Some(cfg.monitor.forget_unreachable_after).filter(|d| !d.is_zero());
        clusters.push(
            ClusterWatch::new(c.spec(), admin)
                .with_refresh(refresh)
                .with_forget_unreachable_after(forget_after),
        );
    }
    let node_id = cfg.node.id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{host}:{}", cfg.api.listen.port())
    });
    // One tracker of the replicas' received streams for the monitor and the engine: a
    // failover's fresh look then sees the silence the monitor measured.
    let streams = Arc::new(model::SharedStreams::default());
    let engine = engine::Engine::with_streams(
        store.clone(),
        engine::EngineOptions {
            node_id: node_id.clone(),
            lease_ttl: cfg.node.lease_ttl,
            lock_ttl: Duration::from_secs(10),
            probe: ProbeOptions {
                connect_timeout: cfg.probe.connect_timeout,
                query_timeout: cfg.probe.query_timeout.max(Duration::from_secs(5)),
            },
        },
        setups,
        streams.clone(),
    );
    let listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} (is another dbfleet serve running? change [api] listen)",
                cfg.api.listen
            )
        })?;

    let stats = Arc::new(Stats {
        streams: streams.clone(),
        ..Stats::default()
    });
    stats.started_ms.store(monitor::now_ms(), Ordering::Relaxed);
    stats
        .fleet
        .set_history_samples(cfg.monitor.history_samples(cfg.probe.interval));
    let instances: usize = clusters.iter().map(|c| c.spec.instances.len()).sum();
    store
        .append_event(&NewEvent::new(
            monitor::now_ms(),
            kinds::DAEMON_STARTED,
            EventLevel::Info,
            format!(
                "dbfleet {} started: {} clusters, {} declared instances, API on {}",
                env!("CARGO_PKG_VERSION"),
                clusters.len(),
                instances,
                cfg.api.listen
            ),
        ))
        .await
        .context("record the daemon's start")?;

    let opts = WatchOptions {
        interval: cfg.probe.interval,
        discovery_interval: cfg.probe.discovery_interval,
        probe: ProbeOptions {
            connect_timeout: cfg.probe.connect_timeout,
            query_timeout: cfg.probe.query_timeout,
        },
        concurrency: cfg.probe.concurrency,
        fast_path: monitor::FastPathOptions::default(),
        persist_every: cfg.monitor.persist_every,
    };
    // Alerting starts before the API, which lists its alerts and downtimes.
    let alerting = crate::alerting::start(&cfg.alert, store.clone(), engine.clone())
        .await
        .map_err(DaemonError::Config)?;
    let api_cancel = CancellationToken::new();
    let watch_cancel = CancellationToken::new();
    let own_token = tokens.own();
    let drt_control = server::drt_routes::DrtControl::default();
    // The route checks' table: rounds from the watch loop, the writer and fenced marks
    // read from the store by a task of its own (docs/ROUTING.md).
    let routing = server::routing::RouteTable::new(server::routing::RouteOptions {
        stale_after: cfg.probe.interval * 3 + cfg.probe.connect_timeout + cfg.probe.query_timeout,
        ..Default::default()
    });
    let routing_cancel = CancellationToken::new();
    let routing_task = routing.spawn_refresher(
        store.clone(),
        Some(engine.finished_operations()),
        routing_cancel.clone(),
    );
    let state = server::AppState {
        store: store.clone(),
        stats: stats.clone(),
        auth: server::Auth {
            tokens,
            require_token_for_reads: cfg.api.require_token_for_reads,
        },
        version: env!("CARGO_PKG_VERSION"),
        engine: Some(engine.clone()),
        drt: drt_control.clone(),
        alerts: Some(alerting.alerting.clone()),
        answers: server::answers::Answers::default(),
        routing: routing.clone(),
    };
    // HTTPS when the config names a certificate: read now, so a SIGHUP (which restarts
    // the daemon with the file it validated) picks up a renewed one.
    let tls = match (&cfg.api.tls_cert_file, &cfg.api.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            server::tls_config(cert, key)
                .map_err(|e| DaemonError::Config(e.context("[api] TLS")))?,
        ),
        _ => None,
    };
    let mut api = tokio::spawn(server::serve_with(
        listener,
        state,
        api_cancel.clone(),
        server::ServeOptions {
            max_connections: api_connections,
            header_timeout: cfg.api.header_timeout,
            tls,
            ..Default::default()
        },
    ));
    // When an operation ends, look at its cluster again at once: the topology shows the
    // new primary and the repointed replicas without waiting for the probes' next turn.
    let mut finished = engine.finished_operations();
    let refresher = tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match finished.recv().await {
                Ok(op) => {
                    if let Some(r) = refreshes.get(&op.cluster) {
                        r.notify_one();
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    for r in refreshes.values() {
                        r.notify_one();
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    // Leadership first, so a lone node acts from its first round.
    engine.campaign_once().await;
    let engine_cancel = CancellationToken::new();
    let leadership = tokio::spawn(engine.clone().run_leadership(engine_cancel.clone()));
    let (rounds_tx, consumer) =
        round_consumer_routed(engine.clone(), Some(alerting.rounds.clone()), Some(routing));
    let mut watch = tokio::spawn(monitor::run_with(
        opts,
        monitor::HeartbeatOptions {
            enabled: cfg.monitor.heartbeat,
            write_timeout: cfg.monitor.write_timeout,
        },
        clusters,
        store.clone(),
        stats.clone(),
        Some(rounds_tx),
        watch_cancel.clone(),
    ));
    let drt_cancel = CancellationToken::new();
    let drt_tasks = crate::drt_schedule::spawn(
        &cfg.drt.schedule,
        crate::drt_schedule::Scheduler {
            store: store.clone(),
            engine: engine.clone(),
            drt: drt_control,
            api: format!("http://{}", cfg.api.listen),
            token: own_token,
            on_failure: Some(alerting.on_drt_failure.clone()),
        },
        drt_cancel.clone(),
    );
    println!(
        "dbfleet serve: node {node_id}, API on {}://{} (at most {api_connections} connections), watching {} clusters, probing every {}, {}, {} file descriptors",
        if cfg.api.tls() { "https" } else { "http" },
        cfg.api.listen,
        cfg.clusters.len(),
        humantime::format_duration(cfg.probe.interval),
        if engine.is_leader() { "leader" } else { "follower" },
        fd_limit.soft,
    );

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("install the SIGHUP handler")?;
    let mut failure: Option<anyhow::Error> = None;
    let mut api_done = false;
    let mut watch_done = false;
    let mut reload = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                info!("SIGINT: shutting down");
                break;
            }
            _ = sigterm.recv() => {
                info!("SIGTERM: shutting down");
                break;
            }
            _ = sighup.recv() => {
                match reload_ready(config_path, &engine).await {
                    Ok(()) => {
                        info!(config = %config_path.display(), "SIGHUP: the config is valid; restarting to apply it");
                        reload = true;
                        break;
                    }
                    Err(why) => {
                        error!("SIGHUP: {why}; going on with the running config");
                        let _ = store
                            .append_event(&NewEvent::new(
                                monitor::now_ms(),
                                kinds::CONFIG_RELOAD_REFUSED,
                                EventLevel::Error,
                                format!("config reload refused: {why}"),
                            ))
                            .await;
                    }
                }
            }
            r = &mut api => {
                api_done = true;
                failure = Some(task_error("API server", r));
                break;
            }
            r = &mut watch => {
                watch_done = true;
                failure = Some(task_error("watch loop", r));
                break;
            }
        }
    }

    // A scheduled DRT in progress is aborted first: it heals its faults while the API and
    // the probes still run.
    drt_cancel.cancel();
    for t in drt_tasks {
        if tokio::time::timeout(DRT_SHUTDOWN_DEADLINE, t)
            .await
            .is_err()
        {
            error!("a scheduled DRT did not stop within {DRT_SHUTDOWN_DEADLINE:?}");
        }
    }
    // Stop the API first, then the probe tasks, each under a deadline.
    api_cancel.cancel();
    if !api_done
        && tokio::time::timeout(SHUTDOWN_DEADLINE, &mut api)
            .await
            .is_err()
    {
        error!("the API did not stop within {SHUTDOWN_DEADLINE:?}");
        api.abort();
    }
    routing_cancel.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, routing_task).await;
    watch_cancel.cancel();
    if !watch_done
        && tokio::time::timeout(SHUTDOWN_DEADLINE, &mut watch)
            .await
            .is_err()
    {
        error!("the watch loop did not stop within {SHUTDOWN_DEADLINE:?}");
        watch.abort();
    }
    // Nothing left to refresh.
    refresher.abort();
    // The round channel closed with the watch loop: the consumer ends, and no round
    // starts an operation any more.
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, consumer).await;
    // Retries waiting out their backoff and fence guards end; operations that run (from
    // the API or from policy) end first, under a deadline, while leadership, the store and
    // the alerting (which pages an operation that fails) are still there.
    if !engine.shutdown(OPERATION_SHUTDOWN_WAIT).await {
        error!(
            "operations still running after {}: left running in the store for the next leader",
            humantime::format_duration(OPERATION_SHUTDOWN_WAIT)
        );
    }
    // With the rounds over, the alerting task ends; the notifiers get a grace period to
    // deliver what is queued (a resolve, a last page).
    let crate::alerting::Running {
        alerting,
        rounds: alert_rounds,
        task: alert_task,
        ..
    } = alerting;
    drop(alert_rounds);
    if tokio::time::timeout(SHUTDOWN_DEADLINE, alert_task)
        .await
        .is_err()
    {
        error!("the alerting task did not stop within {SHUTDOWN_DEADLINE:?}");
    }
    alerting.shutdown(SHUTDOWN_DEADLINE / 2).await;
    // Then leadership is given up so another node can take over at once.
    engine_cancel.cancel();
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, leadership).await;
    let reason = match &failure {
        Some(e) => format!("stopped after an internal failure: {e:#}"),
        None if reload => "stopped to start again with its changed config (SIGHUP)".to_string(),
        None => "stopped by signal".to_string(),
    };
    store
        .append_event(
            &NewEvent::new(
                monitor::now_ms(),
                kinds::DAEMON_STOPPED,
                if failure.is_some() {
                    EventLevel::Error
                } else {
                    EventLevel::Info
                },
                format!("dbfleet {reason}"),
            )
            .with_data(serde_json::json!({ "reload": reload })),
        )
        .await
        .context("record the daemon's stop")?;
    store.flush().await.context("flush the store")?;
    match failure {
        None if reload => Ok(Outcome::Reload),
        None => Ok(Outcome::Stopped),
        Some(e) => Err(e.into()),
    }
}

/// Whether a SIGHUP may restart the daemon: the config file loads, validates and its
/// secrets read, and no operation runs on this node (waited for, up to
/// [`RELOAD_OPERATION_WAIT`]). The reason when not.
async fn reload_ready(path: &std::path::Path, engine: &engine::Engine) -> Result<(), String> {
    load_config(path).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
    if !engine.wait_idle(RELOAD_OPERATION_WAIT).await {
        return Err(format!(
            "an operation still runs after {}",
            humantime::format_duration(RELOAD_OPERATION_WAIT)
        ));
    }
    Ok(())
}

fn task_error(what: &str, r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the {what} stopped on its own"),
        Ok(Err(e)) => e.context(format!("the {what} failed")),
        Err(e) => anyhow::anyhow!("the {what} panicked: {e}"),
    }
}

/// The channel the watch loop publishes its rounds on, and the task that hands each round to
/// the engine, also handing a copy of each round to `tap` (the alerting task) with
/// `try_send` before the engine sees it: a slow or full tap never delays the engine. The task
/// ends when the watch loop drops the sender.
pub fn round_consumer_with(
    engine: Arc<engine::Engine>,
    tap: Option<tokio::sync::mpsc::Sender<model::ClusterRound>>,
) -> (
    tokio::sync::mpsc::Sender<model::ClusterRound>,
    tokio::task::JoinHandle<()>,
) {
    round_consumer_routed(engine, tap, None)
}

/// [`round_consumer_with`] that also hands each round to the route checks' table first
/// (`RouteTable::on_round` never waits).
pub fn round_consumer_routed(
    engine: Arc<engine::Engine>,
    tap: Option<tokio::sync::mpsc::Sender<model::ClusterRound>>,
    routing: Option<server::routing::RouteTable>,
) -> (
    tokio::sync::mpsc::Sender<model::ClusterRound>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<model::ClusterRound>(1024);
    let task = tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            if let Some(routing) = &routing {
                routing.on_round(&r);
            }
            if let Some(tap) = &tap {
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) =
                    tap.try_send(r.clone())
                {
                    tracing::warn!(cluster = %r.cluster, "the alerting task is behind: a round is skipped");
                }
            }
            engine.on_round(&r).await;
        }
    });
    (tx, task)
}
