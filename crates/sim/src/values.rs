//! What a simulated server reports: its global variables and status counters as functions of
//! time, its GTID positions, replication lag and heartbeat, computed on demand (no timers).
//!
//! Counters are `rate × f(t)` with `f` non-decreasing, so they only grow; gauges wander
//! around a per-instance base. Every instance gets its own scale and phase from its seed, so
//! no two look alike, and the same seed gives the same fleet.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

/// The MariaDB version the fleet claims, as `@@version` shows it.
pub const VERSION: &str = "10.11.11-MariaDB-0+deb12u1-log";

/// A deterministic 64-bit mix (splitmix64).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A number in [0, 1) from a seed and a salt.
pub(crate) fn unit(seed: u64, salt: u64) -> f64 {
    (mix(seed ^ mix(salt)) >> 11) as f64 / (1u64 << 53) as f64
}

/// A counter that grows at `rate` per second on average, never decreasing: the rate itself
/// swings by ±50% over a period of `period` seconds.
pub(crate) fn counter(base: u64, rate: f64, t: f64, period: f64, phase: f64) -> u64 {
    let a = period * 0.5 / (2.0 * std::f64::consts::PI);
    let w = 2.0 * std::f64::consts::PI / period;
    // d/dt = rate × (1 + 0.5 sin(w t + phase)) ≥ 0.5 rate
    let v = rate * (t - a * (w * t + phase).cos() + a * phase.cos());
    base + v.max(0.0) as u64
}

/// A gauge that wanders around `mid` by ±`amp`, smoothly, with a little noise per second.
pub(crate) fn gauge(mid: f64, amp: f64, t: f64, seed: u64, salt: u64) -> f64 {
    let phase = unit(seed, salt) * std::f64::consts::TAU;
    let slow = (t / 47.0 + phase).sin() * 0.7 + (t / 11.0 + phase * 1.3).sin() * 0.2;
    let noise = unit(seed ^ (t as u64), salt) * 0.2 - 0.1;
    (mid + amp * (slow + noise)).max(0.0)
}

/// What the value functions need to know about one instance at one moment.
pub(crate) struct View<'a> {
    /// The instance's seed.
    pub seed: u64,
    /// Seconds since the fleet started.
    pub t: f64,
    /// Seconds the server has been up.
    pub uptime: u64,
    pub server_id: u32,
    pub primary: bool,
    pub host: &'a str,
    pub port: u16,
    /// `gtid_binlog_pos` etc. as MariaDB prints them.
    pub gtid_pos: &'a str,
    /// `gtid_slave_pos`: the replica's position, empty on a primary.
    pub gtid_slave_pos: &'a str,
    pub semi_sync: bool,
    /// Replicas connected (primary) or whether this replica's IO thread runs.
    pub semi_sync_clients: u64,
    pub replicating: bool,
    /// The replicas' count, for `Slaves_connected`.
    pub replicas_connected: u64,
}

/// Global variables whose value does not change, as a MariaDB 10.11 server with a 1 GiB
/// buffer pool shows them. Names are lower case, as `SHOW GLOBAL VARIABLES` prints them.
const STATIC_VARIABLES: &[(&str, &str)] = &[
    ("aria_pagecache_buffer_size", "134217728"),
    ("auto_increment_increment", "1"),
    ("auto_increment_offset", "1"),
    ("autocommit", "ON"),
    ("back_log", "80"),
    ("basedir", "/usr"),
    ("binlog_cache_size", "32768"),
    ("binlog_checksum", "CRC32"),
    ("binlog_commit_wait_count", "0"),
    ("binlog_commit_wait_usec", "100000"),
    ("binlog_format", "ROW"),
    ("binlog_gtid_index", "ON"),
    ("binlog_row_image", "FULL"),
    ("character_set_server", "utf8mb4"),
    ("collation_server", "utf8mb4_general_ci"),
    ("connect_timeout", "10"),
    ("datadir", "/var/lib/mysql/"),
    ("default_storage_engine", "InnoDB"),
    ("expire_logs_days", "7.000000"),
    ("gtid_cleanup_batch_size", "64"),
    ("gtid_domain_id", "0"),
    ("gtid_ignore_duplicates", "OFF"),
    ("gtid_pos_auto_engines", ""),
    ("gtid_strict_mode", "ON"),
    ("have_ssl", "DISABLED"),
    ("innodb_adaptive_hash_index", "OFF"),
    ("innodb_buffer_pool_instances", "1"),
    ("innodb_buffer_pool_size", "1073741824"),
    ("innodb_doublewrite", "ON"),
    ("innodb_file_per_table", "ON"),
    ("innodb_flush_log_at_trx_commit", "1"),
    ("innodb_flush_method", "O_DIRECT"),
    ("innodb_io_capacity", "200"),
    ("innodb_io_capacity_max", "2000"),
    ("innodb_lock_wait_timeout", "50"),
    ("innodb_log_buffer_size", "16777216"),
    ("innodb_log_file_size", "100663296"),
    ("innodb_page_size", "16384"),
    ("innodb_read_io_threads", "4"),
    ("innodb_write_io_threads", "4"),
    ("interactive_timeout", "28800"),
    ("join_buffer_size", "262144"),
    ("key_buffer_size", "134217728"),
    ("lock_wait_timeout", "86400"),
    ("log_bin", "ON"),
    ("log_bin_basename", "/var/lib/mysql/mysql-bin"),
    ("log_error", "/var/log/mysql/error.log"),
    ("log_slave_updates", "ON"),
    ("log_warnings", "2"),
    ("long_query_time", "10.000000"),
    ("lower_case_table_names", "0"),
    ("master_verify_checksum", "OFF"),
    ("max_allowed_packet", "16777216"),
    ("max_binlog_size", "1073741824"),
    ("max_connect_errors", "100"),
    ("max_connections", "500"),
    ("max_heap_table_size", "16777216"),
    ("max_relay_log_size", "1073741824"),
    ("max_statement_time", "0.000000"),
    ("max_user_connections", "0"),
    ("net_read_timeout", "30"),
    ("net_write_timeout", "60"),
    ("open_files_limit", "32768"),
    ("performance_schema", "OFF"),
    ("pid_file", "/run/mysqld/mysqld.pid"),
    ("protocol_version", "10"),
    ("query_cache_size", "1048576"),
    ("query_cache_type", "OFF"),
    ("relay_log", "mysql-relay-bin"),
    ("relay_log_purge", "ON"),
    ("relay_log_recovery", "OFF"),
    ("replicate_do_db", ""),
    ("replicate_ignore_db", ""),
    ("rpl_semi_sync_master_timeout", "10000"),
    ("rpl_semi_sync_master_wait_no_slave", "ON"),
    ("rpl_semi_sync_master_wait_point", "AFTER_SYNC"),
    ("rpl_semi_sync_slave_delay_master", "OFF"),
    ("skip_name_resolve", "ON"),
    ("skip_networking", "OFF"),
    ("slave_exec_mode", "STRICT"),
    ("slave_max_allowed_packet", "1073741824"),
    ("slave_net_timeout", "60"),
    ("slave_parallel_max_queued", "131072"),
    ("slave_parallel_mode", "optimistic"),
    ("slave_parallel_threads", "4"),
    ("slave_skip_errors", "OFF"),
    ("slave_sql_verify_checksum", "ON"),
    ("slow_query_log", "OFF"),
    ("socket", "/run/mysqld/mysqld.sock"),
    ("sort_buffer_size", "2097152"),
    (
        "sql_mode",
        "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
    ),
    ("sync_binlog", "1"),
    ("sync_master_info", "10000"),
    ("sync_relay_log", "10000"),
    ("system_time_zone", "UTC"),
    ("table_definition_cache", "400"),
    ("table_open_cache", "2000"),
    ("thread_cache_size", "151"),
    ("thread_handling", "one-thread-per-connection"),
    ("thread_stack", "299008"),
    ("time_zone", "SYSTEM"),
    ("tmp_table_size", "16777216"),
    ("tmpdir", "/tmp"),
    ("transaction_isolation", "REPEATABLE-READ"),
    ("tx_isolation", "REPEATABLE-READ"),
    ("version_comment", "Debian 12"),
    ("version_compile_machine", "x86_64"),
    ("version_compile_os", "debian-linux-gnu"),
    ("version_ssl_library", "OpenSSL 3.0.15 3 Sep 2024"),
    ("wait_timeout", "28800"),
];

/// Variables computed per instance and moment (see [`variable`]).
const DYNAMIC_VARIABLES: &[&str] = &[
    "gtid_binlog_pos",
    "gtid_binlog_state",
    "gtid_current_pos",
    "gtid_slave_pos",
    "hostname",
    "port",
    "read_only",
    "report_host",
    "report_port",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_slave_enabled",
    "server_id",
    "version",
];

/// Status counters: name as MariaDB prints it, mean rate per second on a primary, mean rate
/// on a replica. A rate is scaled per instance.
const COUNTERS: &[(&str, f64, f64)] = &[
    ("Aborted_clients", 0.01, 0.002),
    ("Aborted_connects", 0.005, 0.001),
    ("Binlog_bytes_written", 120_000.0, 110_000.0),
    ("Binlog_commits", 150.0, 0.0),
    ("Bytes_received", 220_000.0, 40_000.0),
    ("Bytes_sent", 1_500_000.0, 900_000.0),
    ("Com_begin", 140.0, 5.0),
    ("Com_commit", 150.0, 5.0),
    ("Com_delete", 12.0, 0.0),
    ("Com_insert", 80.0, 0.0),
    ("Com_replace", 2.0, 0.0),
    ("Com_rollback", 1.5, 0.1),
    ("Com_select", 600.0, 700.0),
    ("Com_set_option", 30.0, 20.0),
    ("Com_show_status", 1.0, 1.0),
    ("Com_show_variables", 1.0, 1.0),
    ("Com_update", 60.0, 0.0),
    ("Connections", 2.0, 1.5),
    ("Created_tmp_disk_tables", 0.5, 0.4),
    ("Created_tmp_tables", 20.0, 15.0),
    ("Handler_commit", 300.0, 160.0),
    ("Handler_delete", 12.0, 12.0),
    ("Handler_read_first", 5.0, 5.0),
    ("Handler_read_key", 4000.0, 3500.0),
    ("Handler_read_next", 20_000.0, 18_000.0),
    ("Handler_read_rnd_next", 9000.0, 8000.0),
    ("Handler_rollback", 1.5, 0.1),
    ("Handler_update", 60.0, 60.0),
    ("Handler_write", 90.0, 90.0),
    ("Innodb_buffer_pool_read_requests", 50_000.0, 40_000.0),
    ("Innodb_buffer_pool_reads", 5.0, 4.0),
    ("Innodb_buffer_pool_write_requests", 3000.0, 2800.0),
    ("Innodb_data_fsyncs", 160.0, 40.0),
    ("Innodb_data_read", 80_000.0, 65_000.0),
    ("Innodb_data_written", 2_000_000.0, 1_900_000.0),
    ("Innodb_log_waits", 0.001, 0.0005),
    ("Innodb_log_writes", 150.0, 140.0),
    ("Innodb_os_log_written", 300_000.0, 280_000.0),
    ("Innodb_rows_deleted", 12.0, 12.0),
    ("Innodb_rows_inserted", 80.0, 80.0),
    ("Innodb_rows_read", 30_000.0, 28_000.0),
    ("Innodb_rows_updated", 60.0, 60.0),
    ("Innodb_row_lock_time", 2.0, 0.2),
    ("Innodb_row_lock_waits", 0.05, 0.005),
    ("Opened_files", 0.2, 0.2),
    ("Opened_tables", 0.1, 0.1),
    ("Queries", 820.0, 730.0),
    ("Questions", 800.0, 720.0),
    ("Select_full_join", 0.05, 0.05),
    ("Select_scan", 6.0, 5.0),
    ("Slow_queries", 0.01, 0.008),
    ("Sort_rows", 900.0, 800.0),
    ("Table_locks_immediate", 40.0, 35.0),
    ("Table_locks_waited", 0.0, 0.0),
    ("Threads_created", 0.05, 0.04),
];

/// Status values computed per instance and moment besides the counters.
const DYNAMIC_STATUS: &[&str] = &[
    "Innodb_buffer_pool_pages_data",
    "Innodb_buffer_pool_pages_dirty",
    "Innodb_buffer_pool_pages_free",
    "Innodb_buffer_pool_pages_misc",
    "Innodb_buffer_pool_pages_total",
    "Innodb_row_lock_current_waits",
    "Max_used_connections",
    "Open_files",
    "Open_tables",
    "Rpl_semi_sync_master_clients",
    "Rpl_semi_sync_master_net_avg_wait_time",
    "Rpl_semi_sync_master_no_tx",
    "Rpl_semi_sync_master_status",
    "Rpl_semi_sync_master_yes_tx",
    "Rpl_semi_sync_slave_status",
    "Slave_heartbeat_period",
    "Slave_running",
    "Slaves_connected",
    "Slaves_running",
    "Threads_cached",
    "Threads_connected",
    "Threads_running",
    "Uptime",
    "Uptime_since_flush_status",
];

/// Status values that never change.
const STATIC_STATUS: &[(&str, &str)] = &[
    ("Innodb_page_size", "16384"),
    ("Rpl_semi_sync_master_wait_sessions", "0"),
    ("Ssl_accepts", "0"),
    ("Ssl_cipher", ""),
    ("Ssl_version", ""),
];

/// Which table a `SHOW` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Variables,
    Status,
}

struct Index {
    /// Lower-case name → (name as printed, slot).
    by_name: HashMap<String, (&'static str, Slot)>,
    /// Every name as printed, sorted case-insensitively, for listings.
    sorted: Vec<&'static str>,
}

#[derive(Clone, Copy)]
enum Slot {
    Static(&'static str),
    Dynamic,
    Counter(f64, f64, usize),
}

fn index(entries: impl Iterator<Item = (&'static str, Slot)>) -> Index {
    let mut by_name = HashMap::new();
    for (name, slot) in entries {
        by_name.insert(name.to_ascii_lowercase(), (name, slot));
    }
    let mut sorted: Vec<&'static str> = by_name.values().map(|(n, _)| *n).collect();
    sorted.sort_by_key(|n| n.to_ascii_lowercase());
    Index { by_name, sorted }
}

static VARIABLES: LazyLock<Index> = LazyLock::new(|| {
    index(
        STATIC_VARIABLES
            .iter()
            .map(|(n, v)| (*n, Slot::Static(v)))
            .chain(DYNAMIC_VARIABLES.iter().map(|n| (*n, Slot::Dynamic))),
    )
});

static STATUS: LazyLock<Index> = LazyLock::new(|| {
    index(
        STATIC_STATUS
            .iter()
            .map(|(n, v)| (*n, Slot::Static(v)))
            .chain(DYNAMIC_STATUS.iter().map(|n| (*n, Slot::Dynamic)))
            .chain(
                COUNTERS
                    .iter()
                    .enumerate()
                    .map(|(i, (n, p, r))| (*n, Slot::Counter(*p, *r, i))),
            ),
    )
});

fn table(t: Table) -> &'static Index {
    match t {
        Table::Variables => &VARIABLES,
        Table::Status => &STATUS,
    }
}

/// The names of `t` as printed, matching `pred` on their lower-case form, sorted.
pub(crate) fn names(t: Table, pred: impl Fn(&str) -> bool) -> Vec<&'static str> {
    table(t)
        .sorted
        .iter()
        .copied()
        .filter(|n| pred(&n.to_ascii_lowercase()))
        .collect()
}

/// The printed name of `lower` in `t`, when the server has it.
pub(crate) fn lookup(t: Table, lower: &str) -> Option<&'static str> {
    table(t).by_name.get(lower).map(|(n, _)| *n)
}

/// The value of `name` (as printed) in `t` for the instance `v`.
pub(crate) fn value(t: Table, name: &str, v: &View<'_>) -> Option<Cow<'static, str>> {
    let lower = name.to_ascii_lowercase();
    let (_, slot) = table(t).by_name.get(&lower)?;
    Some(match *slot {
        Slot::Static(s) => Cow::Borrowed(s),
        Slot::Counter(p, r, i) => {
            let rate = if v.primary { p } else { r } * (0.5 + 1.5 * unit(v.seed, i as u64));
            let base = (rate * v.uptime.saturating_sub(v.t as u64) as f64) as u64;
            let period = 30.0 + 90.0 * unit(v.seed, 1000 + i as u64);
            let phase = unit(v.seed, 2000 + i as u64) * std::f64::consts::TAU;
            Cow::Owned(counter(base, rate, v.t, period, phase).to_string())
        }
        Slot::Dynamic => match t {
            Table::Variables => variable(&lower, v),
            Table::Status => status(&lower, v),
        },
    })
}

fn on_off(b: bool) -> Cow<'static, str> {
    Cow::Borrowed(if b { "ON" } else { "OFF" })
}

fn variable(lower: &str, v: &View<'_>) -> Cow<'static, str> {
    match lower {
        "version" => Cow::Borrowed(VERSION),
        "server_id" => Cow::Owned(v.server_id.to_string()),
        "read_only" => on_off(!v.primary),
        "hostname" => Cow::Owned(format!("db-{}", v.server_id)),
        "port" | "report_port" => Cow::Owned(v.port.to_string()),
        "report_host" => Cow::Owned(v.host.to_string()),
        "gtid_binlog_pos" | "gtid_current_pos" | "gtid_binlog_state" => {
            Cow::Owned(v.gtid_pos.to_string())
        }
        "gtid_slave_pos" => Cow::Owned(v.gtid_slave_pos.to_string()),
        "rpl_semi_sync_master_enabled" => on_off(v.semi_sync && v.primary),
        "rpl_semi_sync_slave_enabled" => on_off(v.semi_sync && !v.primary),
        _ => Cow::Borrowed(""),
    }
}

fn status(lower: &str, v: &View<'_>) -> Cow<'static, str> {
    let total: u64 = 65_536; // 1 GiB of 16 KiB pages
    let g = |mid: f64, amp: f64, salt: u64| gauge(mid, amp, v.t, v.seed, salt);
    let data = (total as f64 * (0.80 + 0.1 * unit(v.seed, 7)) + g(0.0, 600.0, 8)) as u64;
    let misc = 1_200 + (unit(v.seed, 9) * 300.0) as u64;
    let connected = g(40.0 + 120.0 * unit(v.seed, 10), 25.0, 11).max(3.0) as u64;
    let running = g(3.0 + 4.0 * unit(v.seed, 12), 3.0, 13).max(1.0) as u64;
    let n = |x: u64| Cow::Owned(x.to_string());
    match lower {
        "uptime" | "uptime_since_flush_status" => n(v.uptime),
        "threads_connected" => n(connected),
        "threads_running" => n(running.min(connected)),
        "threads_cached" => n(g(8.0, 4.0, 14) as u64),
        "max_used_connections" => n(260 + (unit(v.seed, 15) * 120.0) as u64),
        "open_files" => n(g(60.0, 5.0, 16) as u64),
        "open_tables" => n(g(1_800.0, 100.0, 17) as u64),
        "innodb_buffer_pool_pages_total" => n(total),
        "innodb_buffer_pool_pages_data" => n(data.min(total - misc)),
        "innodb_buffer_pool_pages_misc" => n(misc),
        "innodb_buffer_pool_pages_free" => n(total.saturating_sub(data + misc)),
        "innodb_buffer_pool_pages_dirty" => {
            n((data as f64 * (0.01 + g(0.02, 0.015, 18) / 1.0)) as u64)
        }
        "innodb_row_lock_current_waits" => n(g(0.2, 0.6, 19) as u64),
        "rpl_semi_sync_master_status" => on_off(v.semi_sync && v.primary),
        "rpl_semi_sync_master_clients" => n(if v.primary { v.semi_sync_clients } else { 0 }),
        "rpl_semi_sync_master_net_avg_wait_time" => n(if v.semi_sync && v.primary {
            g(180.0, 60.0, 20) as u64
        } else {
            0
        }),
        "rpl_semi_sync_master_yes_tx" | "rpl_semi_sync_master_no_tx" => {
            let yes = lower.ends_with("yes_tx");
            let tx = if v.semi_sync && v.primary {
                counter(0, 150.0, v.t, 60.0, 1.0)
            } else {
                0
            };
            n(if yes { tx } else { tx / 5000 })
        }
        "rpl_semi_sync_slave_status" => on_off(v.semi_sync && !v.primary && v.replicating),
        "slave_running" => on_off(!v.primary && v.replicating),
        // SQL threads running; a replica's configured heartbeat period, 0 on a primary
        // that never had a source.
        "slaves_running" => n(u64::from(!v.primary && v.replicating)),
        "slave_heartbeat_period" => Cow::Borrowed(if v.primary { "0.000" } else { "1.000" }),
        "slaves_connected" => n(if v.primary { v.replicas_connected } else { 0 }),
        _ => Cow::Borrowed(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_never_decrease() {
        let mut last = 0;
        for i in 0..100_000 {
            let t = i as f64 * 0.01;
            let c = counter(10, 100.0, t, 45.0, 2.0);
            assert!(c >= last, "at {t}: {c} < {last}");
            last = c;
        }
        assert!(last > 10 + 50_000, "grew to {last}");
    }

    #[test]
    fn tables_are_indexed_case_insensitively() {
        assert_eq!(
            lookup(Table::Status, "threads_connected"),
            Some("Threads_connected")
        );
        assert_eq!(
            lookup(Table::Variables, "gtid_strict_mode"),
            Some("gtid_strict_mode")
        );
        assert!(names(Table::Status, |n| n.starts_with("com_")).len() >= 8);
    }
}
