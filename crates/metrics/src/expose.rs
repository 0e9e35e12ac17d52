//! The Prometheus exposition: per-instance series labelled `cluster`, `instance` and `role`,
//! and the daemon's own health, encoded with `prometheus-client` (OpenMetrics text).
//!
//! Series are built afresh at each scrape from the latest observations, so an instance that
//! changed role (a failover) shows under its new role only, and a failed probe exports
//! `dbfleet_mysql_up 0` and nothing stale.

use std::sync::atomic::AtomicU64;

use model::{IoThreadState, Observation, Role};
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The text format of an exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, as `prometheus-client` writes it: a counter family is named
    /// without `_total` (`# TYPE x counter`, then `x_total 5`), with `# UNIT` lines and a
    /// final `# EOF`.
    OpenMetrics,
    /// The Prometheus text format 0.0.4 that Prometheus's classic parser and `promtool check
    /// metrics` read: the same samples, with counter families named with their `_total`,
    /// and no `# UNIT` or `# EOF` lines.
    PrometheusText,
}

/// Rewrite OpenMetrics text from `prometheus-client` as Prometheus text 0.0.4: rename each
/// counter family's `# HELP`/`# TYPE` to its samples' `_total` name, and drop the `# UNIT`
/// and `# EOF` lines the older format does not have. Samples are left as they are.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The daemon's own counters, as the watch loop keeps them, for the exposition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DaemonHealth {
    /// Probes completed, successful or not.
    pub probes: u64,
    /// Probes that failed.
    pub probe_errors: u64,
    /// Probe intervals missed: a probe that started one or more whole intervals late.
    pub probe_missed_intervals: u64,
    /// Analysis rounds completed.
    pub rounds: u64,
    /// Analysis intervals missed: a round that started one or more whole intervals late.
    pub round_missed_intervals: u64,
    /// Cluster rounds not published because the consumer fell behind.
    pub rounds_dropped: u64,
    /// Instances watched now.
    pub instances: u64,
    /// Heartbeat rows written on primaries.
    pub heartbeat_writes: u64,
    /// Heartbeat writes that failed.
    pub heartbeat_write_errors: u64,
    /// Fast paths started (a cluster's primary looked dead between rounds).
    pub fast_paths: u64,
    /// When the daemon started, ms since the Unix epoch.
    pub started_ms: u64,
}

/// One alert notifier's delivery counts, for `dbfleet_notifications_total`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifierCounts {
    /// The notifier's configured name.
    pub notifier: String,
    /// Notifications delivered.
    pub sent: u64,
    /// Notifications given up on: rejected, out of retries, or cancelled by shutdown.
    pub failed: u64,
    /// Notifications dropped because the notifier's queue was full.
    pub dropped: u64,
}

/// What the exposition needs of one instance, copied out of the lock.
pub(crate) struct InstanceSnapshot {
    pub(crate) cluster: String,
    pub(crate) instance: String,
    pub(crate) role: Option<Role>,
    pub(crate) last: Observation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    cluster: String,
    instance: String,
    role: String,
}

type G = Family<Labels, Gauge<f64, AtomicU64>>;
type C = Family<Labels, Counter<f64, AtomicU64>>;

/// A gauge family registered under `name`.
fn gauge(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> G {
    let f = G::default();
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, f.clone()),
        None => reg.register(name, help, f.clone()),
    }
    f
}

/// A counter family registered under `name` (the encoder adds `_total`).
fn counter(reg: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> C {
    let f = C::default();
    match unit {
        Some(u) => reg.register_with_unit(name, help, u, f.clone()),
        None => reg.register(name, help, f.clone()),
    }
    f
}

fn set(f: &G, l: &Labels, v: Option<f64>) {
    if let Some(v) = v {
        f.get_or_create(l).set(v);
    }
}

fn add(f: &C, l: &Labels, v: Option<f64>) {
    if let Some(v) = v {
        f.get_or_create(l).inc_by(v);
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub(crate) fn encode(
    instances: &[InstanceSnapshot],
    probe_duration: &Histogram,
    health: &DaemonHealth,
    notifiers: &[NotifierCounts],
) -> String {
    let mut reg = Registry::default();
    let secs = Some(Unit::Seconds);
    let bytes = Some(Unit::Bytes);
    let ratio = Some(Unit::Other("ratio".into()));

    let up = gauge(
        &mut reg,
        "dbfleet_mysql_up",
        "1 when the last probe got an answer, 0 otherwise",
        None,
    );
    let uptime = gauge(
        &mut reg,
        "dbfleet_mysql_uptime",
        "Uptime of the server",
        secs.clone(),
    );
    let read_only = gauge(
        &mut reg,
        "dbfleet_mysql_read_only",
        "1 when @@read_only is on",
        None,
    );
    let probe_seconds = gauge(
        &mut reg,
        "dbfleet_mysql_probe_duration",
        "How long the last probe took, connect included",
        secs.clone(),
    );
    let queries = counter(
        &mut reg,
        "dbfleet_mysql_queries",
        "Statements run (Queries)",
        None,
    );
    let questions = counter(
        &mut reg,
        "dbfleet_mysql_questions",
        "Statements sent by clients (Questions)",
        None,
    );
    let commits = counter(
        &mut reg,
        "dbfleet_mysql_commits",
        "COMMIT statements (Com_commit)",
        None,
    );
    let rollbacks = counter(
        &mut reg,
        "dbfleet_mysql_rollbacks",
        "ROLLBACK statements (Com_rollback)",
        None,
    );
    let connections = counter(
        &mut reg,
        "dbfleet_mysql_connections",
        "Connection attempts (Connections)",
        None,
    );
    let aborted_connects = counter(
        &mut reg,
        "dbfleet_mysql_aborted_connects",
        "Failed connection attempts (Aborted_connects)",
        None,
    );
    let aborted_clients = counter(
        &mut reg,
        "dbfleet_mysql_aborted_clients",
        "Connections dropped without a proper close (Aborted_clients)",
        None,
    );
    let slow = counter(
        &mut reg,
        "dbfleet_mysql_slow_queries",
        "Slow queries (Slow_queries)",
        None,
    );
    let received = counter(
        &mut reg,
        "dbfleet_mysql_received",
        "Bytes received from clients (Bytes_received)",
        bytes.clone(),
    );
    let sent = counter(
        &mut reg,
        "dbfleet_mysql_sent",
        "Bytes sent to clients (Bytes_sent)",
        bytes.clone(),
    );
    let threads_connected = gauge(
        &mut reg,
        "dbfleet_mysql_threads_connected",
        "Open client connections (Threads_connected)",
        None,
    );
    let threads_running = gauge(
        &mut reg,
        "dbfleet_mysql_threads_running",
        "Threads not sleeping (Threads_running)",
        None,
    );
    let max_connections = gauge(
        &mut reg,
        "dbfleet_mysql_max_connections",
        "@@max_connections",
        None,
    );
    let conn_ratio = gauge(
        &mut reg,
        "dbfleet_mysql_connections_used",
        "Threads_connected / max_connections",
        ratio.clone(),
    );
    let bp_size = gauge(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_size",
        "InnoDB buffer pool size (pages total x page size)",
        bytes.clone(),
    );
    let bp_free = gauge(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_free",
        "Free InnoDB buffer pool pages, in bytes",
        bytes.clone(),
    );
    let bp_data = gauge(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_data",
        "InnoDB buffer pool pages holding data, in bytes",
        bytes.clone(),
    );
    let bp_dirty = gauge(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_dirty",
        "Dirty InnoDB buffer pool pages, in bytes",
        bytes.clone(),
    );
    let bp_used = gauge(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_used",
        "Share of InnoDB buffer pool pages not free",
        ratio.clone(),
    );
    let bp_requests = counter(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_read_requests",
        "Logical reads (Innodb_buffer_pool_read_requests)",
        None,
    );
    let bp_reads = counter(
        &mut reg,
        "dbfleet_mysql_innodb_buffer_pool_disk_reads",
        "Reads that missed the buffer pool (Innodb_buffer_pool_reads)",
        None,
    );
    let lock_waits = counter(
        &mut reg,
        "dbfleet_mysql_innodb_row_lock_waits",
        "Row lock waits (Innodb_row_lock_waits)",
        None,
    );
    let lock_time = counter(
        &mut reg,
        "dbfleet_mysql_innodb_row_lock_wait",
        "Time spent waiting for row locks (Innodb_row_lock_time)",
        secs.clone(),
    );
    let log_waits = counter(
        &mut reg,
        "dbfleet_mysql_innodb_log_waits",
        "Waits for log buffer space (Innodb_log_waits)",
        None,
    );
    let io_running = gauge(
        &mut reg,
        "dbfleet_mysql_replication_io_running",
        "Replicas: 1 when the IO thread is connected (Yes)",
        None,
    );
    let sql_running = gauge(
        &mut reg,
        "dbfleet_mysql_replication_sql_running",
        "Replicas: 1 when the SQL thread runs",
        None,
    );
    let sbm = gauge(
        &mut reg,
        "dbfleet_mysql_replication_lag",
        "Replicas: Seconds_Behind_Master, absent when NULL",
        secs.clone(),
    );
    let heartbeat = gauge(
        &mut reg,
        "dbfleet_mysql_heartbeat_lag",
        "Replicas: age of the newest heartbeat row applied, on the daemon's clock",
        secs.clone(),
    );
    let semi_enabled = gauge(
        &mut reg,
        "dbfleet_mysql_semi_sync_primary_enabled",
        "1 when rpl_semi_sync_master_enabled is on",
        None,
    );
    let semi_on = gauge(
        &mut reg,
        "dbfleet_mysql_semi_sync_primary_on",
        "Semi-sync primaries: 1 while semi-sync is on, 0 after falling back to async",
        None,
    );
    let semi_clients = gauge(
        &mut reg,
        "dbfleet_mysql_semi_sync_primary_clients",
        "Semi-sync primaries: replicas that acknowledge",
        None,
    );

    for i in instances {
        let l = Labels {
            cluster: i.cluster.clone(),
            instance: i.instance.clone(),
            role: i.role.map_or("unknown", Role::as_str).to_string(),
        };
        let Some(s) = i.last.state() else {
            up.get_or_create(&l).set(0.0);
            continue;
        };
        up.get_or_create(&l).set(1.0);
        set(&uptime, &l, Some(s.uptime_s as f64));
        set(&read_only, &l, Some(flag(s.read_only)));
        set(&probe_seconds, &l, Some(i.last.duration_us as f64 / 1e6));
        set(&threads_connected, &l, Some(s.threads_connected as f64));
        set(&threads_running, &l, Some(s.threads_running as f64));
        if let Some(r) = &s.replication {
            set(
                &io_running,
                &l,
                Some(flag(r.io_thread == IoThreadState::Yes)),
            );
            set(&sql_running, &l, Some(flag(r.sql_running)));
            set(&sbm, &l, r.seconds_behind_source.map(|v| v as f64));
            let beat = s.metrics.as_ref().and_then(|m| m.heartbeat);
            set(&heartbeat, &l, beat.map(|h| h.lag_seconds()));
        }
        set(&semi_enabled, &l, Some(flag(s.semi_sync.source_enabled)));
        if s.semi_sync.source_enabled {
            set(&semi_on, &l, Some(flag(s.semi_sync.source_active)));
            set(&semi_clients, &l, Some(s.semi_sync.source_clients as f64));
        }
        let Some(m) = &s.metrics else { continue };
        let f = |v: Option<u64>| v.map(|v| v as f64);
        add(&queries, &l, f(m.queries));
        add(&questions, &l, f(m.questions));
        add(&commits, &l, f(m.com_commit));
        add(&rollbacks, &l, f(m.com_rollback));
        add(&connections, &l, f(m.connections));
        add(&aborted_connects, &l, f(m.aborted_connects));
        add(&aborted_clients, &l, f(m.aborted_clients));
        add(&slow, &l, f(m.slow_queries));
        add(&received, &l, f(m.bytes_received));
        add(&sent, &l, f(m.bytes_sent));
        set(&max_connections, &l, f(m.max_connections));
        set(&conn_ratio, &l, m.connections_used_ratio());
        let pages = |p: Option<u64>| match (p, m.innodb_page_size) {
            (Some(p), Some(size)) => Some(p as f64 * size as f64),
            _ => None,
        };
        set(&bp_size, &l, pages(m.innodb_buffer_pool_pages_total));
        set(&bp_free, &l, pages(m.innodb_buffer_pool_pages_free));
        set(&bp_data, &l, pages(m.innodb_buffer_pool_pages_data));
        set(&bp_dirty, &l, pages(m.innodb_buffer_pool_pages_dirty));
        set(&bp_used, &l, m.buffer_pool_used_ratio());
        add(&bp_requests, &l, f(m.innodb_buffer_pool_read_requests));
        add(&bp_reads, &l, f(m.innodb_buffer_pool_reads));
        add(&lock_waits, &l, f(m.innodb_row_lock_waits));
        add(
            &lock_time,
            &l,
            m.innodb_row_lock_time_ms.map(|ms| ms as f64 / 1000.0),
        );
        add(&log_waits, &l, f(m.innodb_log_waits));
    }

    // The daemon itself.
    reg.register_with_unit(
        "dbfleet_probe_duration",
        "Probe latency, connect included",
        Unit::Seconds,
        probe_duration.clone(),
    );
    let plain = |reg: &mut Registry, name: &str, help: &str, v: u64| {
        let c: Counter<u64> = Counter::default();
        c.inc_by(v);
        reg.register(name, help, c);
    };
    plain(
        &mut reg,
        "dbfleet_probes",
        "Probes completed, successful or not",
        health.probes,
    );
    plain(
        &mut reg,
        "dbfleet_probe_errors",
        "Probes that failed",
        health.probe_errors,
    );
    plain(
        &mut reg,
        "dbfleet_rounds",
        "Analysis rounds completed",
        health.rounds,
    );
    plain(
        &mut reg,
        "dbfleet_rounds_dropped",
        "Cluster rounds not handed to the engine because it fell behind",
        health.rounds_dropped,
    );
    plain(
        &mut reg,
        "dbfleet_heartbeat_writes",
        "Heartbeat rows written on primaries",
        health.heartbeat_writes,
    );
    plain(
        &mut reg,
        "dbfleet_heartbeat_write_errors",
        "Heartbeat writes that failed",
        health.heartbeat_write_errors,
    );
    plain(
        &mut reg,
        "dbfleet_fast_paths",
        "Fast paths started: a primary looked dead between rounds",
        health.fast_paths,
    );
    let missed: Family<[(&'static str, &'static str); 1], Counter<u64>> = Family::default();
    for (name, v) in [
        ("probe", health.probe_missed_intervals),
        ("round", health.round_missed_intervals),
    ] {
        missed.get_or_create(&[("loop", name)]).inc_by(v);
    }
    reg.register(
        "dbfleet_missed_intervals",
        "Whole intervals a probe or an analysis round started late (loop overruns)",
        missed,
    );
    let watched: Gauge = Gauge::default();
    watched.set(health.instances as i64);
    reg.register(
        "dbfleet_instances_watched",
        "Instances being probed now",
        watched,
    );
    let started: Gauge<f64, AtomicU64> = Gauge::default();
    started.set(health.started_ms as f64 / 1000.0);
    reg.register_with_unit(
        "dbfleet_start_time",
        "When the daemon started, seconds since the Unix epoch",
        Unit::Seconds,
        started,
    );
    let notifications: Family<[(&'static str, String); 2], Counter<u64>> = Family::default();
    for n in notifiers {
        for (outcome, v) in [
            ("sent", n.sent),
            ("failed", n.failed),
            ("dropped", n.dropped),
        ] {
            notifications
                .get_or_create(&[
                    ("notifier", n.notifier.clone()),
                    ("outcome", outcome.into()),
                ])
                .inc_by(v);
        }
    }
    reg.register(
        "dbfleet_notifications",
        "Alert notifications by notifier and outcome: sent (delivered), failed (given up \
         on) or dropped (its queue was full)",
        notifications,
    );

    let mut out = String::new();
    encode_text(&mut out, &reg).expect("writing to a String cannot fail");
    out
}
