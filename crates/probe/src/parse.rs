//! Pure parsing of server replies into model types. No IO here, so the MySQL dialect can be
//! tested from fixtures of MySQL's documented output even though no MySQL server runs here.

use std::collections::BTreeMap;

use model::gtid::{MariadbBinlogState, MariadbGtidList, MysqlGtidSet};
use model::{
    Flavor, GtidState, InstanceAddr, InstanceMetrics, IoThreadState, ReplicationStatus,
    SemiSyncState, ServerState,
};

/// One row as column name → text value (`None` for SQL NULL).
pub type RowMap = BTreeMap<String, Option<String>>;

/// Variable or status name → value, from `SHOW GLOBAL VARIABLES` / `SHOW GLOBAL STATUS`.
/// Names are lowercased.
pub type Vars = BTreeMap<String, String>;

/// The global variables the probe reads, both flavors' names. `SHOW GLOBAL VARIABLES WHERE
/// Variable_name IN (…)` returns the ones that exist, so a missing semi-sync plugin on MySQL
/// is not an error.
pub const VARIABLES: &[&str] = &[
    "version",
    "server_id",
    "read_only",
    "log_bin",
    "log_slave_updates",
    "log_replica_updates",
    "gtid_current_pos",
    "gtid_binlog_pos",
    "gtid_slave_pos",
    "gtid_binlog_state",
    "gtid_strict_mode",
    "gtid_mode",
    "gtid_executed",
    "gtid_purged",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_slave_enabled",
    "rpl_semi_sync_master_timeout",
    "rpl_semi_sync_source_enabled",
    "rpl_semi_sync_replica_enabled",
    "rpl_semi_sync_source_timeout",
    "rpl_semi_sync_master_wait_no_slave",
    "rpl_semi_sync_source_wait_no_replica",
    "max_connections",
    "innodb_page_size",
];

/// The global status counters the probe reads, both flavors' names.
pub const STATUS: &[&str] = &[
    "uptime",
    "threads_connected",
    "threads_running",
    "rpl_semi_sync_master_status",
    "rpl_semi_sync_master_clients",
    "rpl_semi_sync_slave_status",
    "rpl_semi_sync_source_status",
    "rpl_semi_sync_source_clients",
    "rpl_semi_sync_replica_status",
    "rpl_semi_sync_master_wait_sessions",
    "rpl_semi_sync_source_wait_sessions",
    "rpl_semi_sync_master_yes_tx",
    "rpl_semi_sync_source_yes_tx",
    "slaves_running",
    "slave_heartbeat_period",
    "slave_received_heartbeats",
    "questions",
    "queries",
    "com_commit",
    "com_rollback",
    "connections",
    "aborted_connects",
    "aborted_clients",
    "slow_queries",
    "bytes_received",
    "bytes_sent",
    "innodb_buffer_pool_pages_total",
    "innodb_buffer_pool_pages_free",
    "innodb_buffer_pool_pages_data",
    "innodb_buffer_pool_pages_dirty",
    "innodb_buffer_pool_read_requests",
    "innodb_buffer_pool_reads",
    "innodb_row_lock_waits",
    "innodb_row_lock_time",
    "innodb_log_waits",
];

/// The columns of `SHOW SLAVE STATUS` / `SHOW REPLICA STATUS` that
/// [`replication_status`] reads, both dialects' names. The probe keeps only these of the
/// 50–60 the server sends.
pub const REPLICA_COLUMNS: &[&str] = &[
    "Source_Host",
    "Master_Host",
    "Source_Port",
    "Master_Port",
    "Replica_IO_Running",
    "Slave_IO_Running",
    "Replica_SQL_Running",
    "Slave_SQL_Running",
    "Using_Gtid",
    "Auto_Position",
    "Last_IO_Errno",
    "Last_IO_Error",
    "Last_SQL_Errno",
    "Last_SQL_Error",
    "Seconds_Behind_Source",
    "Seconds_Behind_Master",
    "SQL_Delay",
    "Gtid_IO_Pos",
    "Retrieved_Gtid_Set",
    "Master_Log_File",
    "Source_Log_File",
    "Read_Master_Log_Pos",
    "Read_Source_Log_Pos",
];

/// The statement that reads the heartbeat row the daemon writes on each cluster's primary
/// (see `monitor::heartbeat`). Appended to the probe's batch when heartbeats are on.
pub const HEARTBEAT_READ_SQL: &str = "SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1";

/// `SHOW GLOBAL VARIABLES WHERE Variable_name IN (…)` for `names`.
pub fn show_where(what: &str, names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "SHOW GLOBAL {what} WHERE Variable_name IN ({})",
        list.join(",")
    )
}

/// MariaDB: the status counters `names` as one row and one column,
/// `NAME=value,NAME=value,…` (upper-case names, in no promised order; NULL when none
/// exists). A probe then decodes one row instead of one per counter. The counters the probe
/// reads are numbers, `ON`/`OFF` and decimals, so neither `,` nor `=` can occur in a value.
pub fn status_concat_sql(names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!(
        "SELECT GROUP_CONCAT(VARIABLE_NAME, '=', VARIABLE_VALUE SEPARATOR ',') \
         FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ({})",
        list.join(",")
    )
}

/// Run once per session before [`status_concat_sql`]: room for every counter whatever the
/// server's `group_concat_max_len`.
pub const CONCAT_SETUP_SQL: &str = "SET SESSION group_concat_max_len = 65536";

/// Parse [`status_concat_sql`]'s value into lower-cased names and values.
pub fn status_concat(text: Option<&str>) -> Vars {
    text.unwrap_or("")
        .split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), value.to_string()))
        })
        .collect()
}

/// The statement that shows replica status for this flavor and version: MySQL 8.0.22 renamed
/// it `SHOW REPLICA STATUS` (with `Source_*` columns); MariaDB accepts `SHOW SLAVE STATUS`
/// everywhere.
pub fn replica_status_sql(flavor: Flavor, version: &str) -> &'static str {
    match flavor {
        Flavor::Mariadb => "SHOW SLAVE STATUS",
        Flavor::Mysql if version_at_least(version, (8, 0, 22)) => "SHOW REPLICA STATUS",
        Flavor::Mysql => "SHOW SLAVE STATUS",
    }
}

/// The statement that lists a source's registered replicas.
pub fn replica_hosts_sql(flavor: Flavor, version: &str) -> &'static str {
    match flavor {
        Flavor::Mysql if version_at_least(version, (8, 0, 22)) => "SHOW REPLICAS",
        _ => "SHOW SLAVE HOSTS",
    }
}

/// One row of `SHOW SLAVE HOSTS` / `SHOW REPLICAS` as an address; `None` when the replica
/// reports no host or port.
pub fn replica_host(row: &RowMap) -> Option<InstanceAddr> {
    let host = col(row, &["Host"])?.trim();
    let port = col(row, &["Port"])?.trim().parse::<u16>().ok()?;
    (!host.is_empty() && port != 0).then(|| InstanceAddr::new(host, port))
}

/// Whether a `@@version` string (`8.0.35-log`, `10.11.6-MariaDB-0+deb12u1`) is at least
/// `want`. An unparsable version counts as old.
pub fn version_at_least(version: &str, want: (u32, u32, u32)) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty());
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    match (next(), next(), next()) {
        (Some(a), Some(b), Some(c)) => (a, b, c) >= want,
        _ => false,
    }
}

/// Parse a boolean variable: `ON`/`1`/`YES` or `OFF`/`0`/`NO`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_uppercase().as_str() {
        "ON" | "1" | "YES" | "TRUE" => Some(true),
        "OFF" | "0" | "NO" | "FALSE" | "" => Some(false),
        _ => None,
    }
}

fn var<'a>(vars: &'a Vars, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| vars.get(*n)).map(String::as_str)
}

fn req<'a>(vars: &'a Vars, name: &str) -> Result<&'a str, String> {
    var(vars, &[name]).ok_or_else(|| format!("variable {name} missing"))
}

fn bool_var(vars: &Vars, names: &[&str]) -> Result<bool, String> {
    match var(vars, names) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| format!("{} is {v:?}, not a boolean", names[0])),
    }
}

fn num_var(vars: &Vars, names: &[&str]) -> Result<Option<u64>, String> {
    var(vars, names)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{} is {v:?}, not a number", names[0]))
        })
        .transpose()
}

/// Build a server state from the three parts of a probe's reply.
pub fn server_state(
    flavor: Flavor,
    vars: &Vars,
    status: &Vars,
    replica_row: Option<&RowMap>,
) -> Result<ServerState, String> {
    let version = req(vars, "version")?.to_string();
    let server_id = num_var(vars, &["server_id"])?
        .ok_or("variable server_id missing")?
        .try_into()
        .map_err(|_| "server_id out of range".to_string())?;
    let gtid = match flavor {
        Flavor::Mariadb => GtidState::Mariadb {
            current_pos: mariadb_list(vars, "gtid_current_pos")?,
            binlog_pos: mariadb_list(vars, "gtid_binlog_pos")?,
            slave_pos: mariadb_list(vars, "gtid_slave_pos")?,
            binlog_state: req(vars, "gtid_binlog_state")?
                .parse::<MariadbBinlogState>()
                .map_err(|e| format!("gtid_binlog_state: {e}"))?,
            strict_mode: bool_var(vars, &["gtid_strict_mode"])?,
        },
        Flavor::Mysql => GtidState::Mysql {
            enabled: var(vars, &["gtid_mode"]).is_some_and(|m| m.eq_ignore_ascii_case("ON")),
            executed: mysql_set(vars, "gtid_executed")?,
            purged: mysql_set(vars, "gtid_purged")?,
        },
    };
    let mut replication = match replica_row {
        Some(row) => replication_status(row)?,
        None => None,
    };
    if let Some(r) = replication.as_mut() {
        // MariaDB reports these for the default connection, the one `SHOW SLAVE STATUS`
        // shows; MySQL has neither in its status (they stay `None`).
        r.stream.received_heartbeats = num_var(status, &["slave_received_heartbeats"])?;
        r.stream.heartbeat_period_ms = status
            .get("slave_heartbeat_period")
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .map(|p| (p * 1000.0).round() as u64)
                    .ok_or_else(|| format!("slave_heartbeat_period is {v:?}, not a number"))
            })
            .transpose()?;
    }
    Ok(ServerState {
        flavor,
        version,
        server_id,
        read_only: bool_var(vars, &["read_only"])?,
        log_bin: bool_var(vars, &["log_bin"])?,
        log_replica_updates: bool_var(vars, &["log_replica_updates", "log_slave_updates"])?,
        replication,
        gtid,
        semi_sync: semi_sync_state(vars, status)?,
        uptime_s: num_var(status, &["uptime"])?.unwrap_or(0),
        threads_connected: num_var(status, &["threads_connected"])?.unwrap_or(0),
        threads_running: num_var(status, &["threads_running"])?.unwrap_or(0),
        disk: None,
        metrics: Some(instance_metrics(vars, status)),
    })
}

/// The semi-sync settings and status of `vars` and `status` (either flavor's names).
pub fn semi_sync_state(vars: &Vars, status: &Vars) -> Result<SemiSyncState, String> {
    Ok(SemiSyncState {
        source_enabled: bool_var(
            vars,
            &[
                "rpl_semi_sync_source_enabled",
                "rpl_semi_sync_master_enabled",
            ],
        )?,
        source_active: bool_var(
            status,
            &["rpl_semi_sync_source_status", "rpl_semi_sync_master_status"],
        )?,
        source_clients: num_var(
            status,
            &[
                "rpl_semi_sync_source_clients",
                "rpl_semi_sync_master_clients",
            ],
        )?
        .unwrap_or(0),
        source_timeout_ms: num_var(
            vars,
            &[
                "rpl_semi_sync_source_timeout",
                "rpl_semi_sync_master_timeout",
            ],
        )?,
        source_wait_no_replica: var(
            vars,
            &[
                "rpl_semi_sync_source_wait_no_replica",
                "rpl_semi_sync_master_wait_no_slave",
            ],
        )
        .map(|v| {
            parse_bool(v).ok_or_else(|| {
                format!("rpl_semi_sync_master_wait_no_slave is {v:?}, not a boolean")
            })
        })
        .transpose()?,
        source_wait_sessions: num_var(
            status,
            &[
                "rpl_semi_sync_source_wait_sessions",
                "rpl_semi_sync_master_wait_sessions",
            ],
        )?
        .unwrap_or(0),
        source_yes_tx: num_var(
            status,
            &["rpl_semi_sync_source_yes_tx", "rpl_semi_sync_master_yes_tx"],
        )?,
        replica_enabled: bool_var(
            vars,
            &[
                "rpl_semi_sync_replica_enabled",
                "rpl_semi_sync_slave_enabled",
            ],
        )?,
        replica_active: bool_var(
            status,
            &["rpl_semi_sync_replica_status", "rpl_semi_sync_slave_status"],
        )?,
    })
}

/// What [`WRITE_GATE_VARIABLES`] and [`WRITE_GATE_STATUS_SQL`] read: whether the server
/// takes writes, and whether a write can complete without a replica's ack.
pub fn write_gate(vars: &Vars, status: &Vars) -> Result<WriteGate, String> {
    Ok(WriteGate {
        read_only: bool_var(vars, &["read_only"])?,
        semi_sync: semi_sync_state(vars, status)?,
    })
}

/// The variables of [`write_gate`]: none of them waits on storage.
pub const WRITE_GATE_VARIABLES: &[&str] = &[
    "read_only",
    "rpl_semi_sync_master_enabled",
    "rpl_semi_sync_slave_enabled",
    "rpl_semi_sync_master_timeout",
    "rpl_semi_sync_source_enabled",
    "rpl_semi_sync_replica_enabled",
    "rpl_semi_sync_source_timeout",
    "rpl_semi_sync_master_wait_no_slave",
    "rpl_semi_sync_source_wait_no_replica",
];

/// The status counters of [`write_gate`], and only them (no storage engine's counters: a
/// server whose disk hangs can hang those).
pub const WRITE_GATE_STATUS_SQL: &str = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync%'";

/// A server's write gate: `read_only` and its semi-sync source state, read apart from the
/// full probe (see [`crate::Session::write_gate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteGate {
    /// `@@read_only`.
    pub read_only: bool,
    /// Semi-sync settings and status.
    pub semi_sync: SemiSyncState,
}

/// The monitoring counters and gauges of a probe's reply. Lenient: a value that is missing or
/// not a whole number is `None`, never an error, since no decision depends on it. The
/// heartbeat is read by another statement and left `None` here.
pub fn instance_metrics(vars: &Vars, status: &Vars) -> InstanceMetrics {
    let n = |map: &Vars, name: &str| map.get(name).and_then(|v| v.trim().parse::<u64>().ok());
    InstanceMetrics {
        max_connections: n(vars, "max_connections"),
        innodb_page_size: n(vars, "innodb_page_size"),
        questions: n(status, "questions"),
        queries: n(status, "queries"),
        com_commit: n(status, "com_commit"),
        com_rollback: n(status, "com_rollback"),
        threads_connected: n(status, "threads_connected"),
        threads_running: n(status, "threads_running"),
        connections: n(status, "connections"),
        aborted_connects: n(status, "aborted_connects"),
        aborted_clients: n(status, "aborted_clients"),
        slow_queries: n(status, "slow_queries"),
        bytes_received: n(status, "bytes_received"),
        bytes_sent: n(status, "bytes_sent"),
        innodb_buffer_pool_pages_total: n(status, "innodb_buffer_pool_pages_total"),
        innodb_buffer_pool_pages_free: n(status, "innodb_buffer_pool_pages_free"),
        innodb_buffer_pool_pages_data: n(status, "innodb_buffer_pool_pages_data"),
        innodb_buffer_pool_pages_dirty: n(status, "innodb_buffer_pool_pages_dirty"),
        innodb_buffer_pool_read_requests: n(status, "innodb_buffer_pool_read_requests"),
        innodb_buffer_pool_reads: n(status, "innodb_buffer_pool_reads"),
        innodb_row_lock_waits: n(status, "innodb_row_lock_waits"),
        innodb_row_lock_time_ms: n(status, "innodb_row_lock_time"),
        innodb_log_waits: n(status, "innodb_log_waits"),
        heartbeat: None,
    }
}

/// The heartbeat row's `ts_us` from the rows of [`HEARTBEAT_READ_SQL`]; `None` when there is
/// no row or the value is not a number.
pub fn heartbeat_ts_us(rows: &[RowMap]) -> Option<u64> {
    rows.first()
        .and_then(|r| col(r, &["ts_us"]))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Free space on the datadir's filesystem, from MariaDB's `disks` plugin: the row of
/// `information_schema.DISKS` whose `Path` is the longest prefix of `@@datadir`. The plugin
/// reports 1 KiB blocks.
pub const DISKS_SQL: &str = "SELECT Disk, Path, Total, Used, Available, @@datadir AS datadir \
     FROM information_schema.DISKS";

/// The `DISKS` row of the datadir's filesystem (see [`DISKS_SQL`]); `None` when no row's
/// path holds the datadir.
pub fn disk_space(rows: &[RowMap], read_at_ms: u64) -> Option<model::DiskSpace> {
    let datadir = rows.first().and_then(|r| col(r, &["datadir"]))?.to_string();
    let holds = |path: &str| {
        let path = path.trim_end_matches('/');
        datadir == path || datadir.starts_with(&format!("{path}/")) || path.is_empty()
    };
    let kib = |r: &RowMap, name: &str| {
        col(r, &[name])
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|v| v.saturating_mul(1024))
    };
    rows.iter()
        .filter_map(|r| {
            let path = col(r, &["Path"])?;
            holds(path).then_some((path.len(), r))
        })
        .max_by_key(|(len, _)| *len)
        .and_then(|(_, r)| {
            Some(model::DiskSpace {
                datadir: datadir.clone(),
                path: col(r, &["Path"])?.to_string(),
                disk: col(r, &["Disk"]).unwrap_or_default().to_string(),
                total_bytes: kib(r, "Total")?,
                used_bytes: kib(r, "Used").unwrap_or(0),
                available_bytes: kib(r, "Available")?,
                read_at_ms,
            })
        })
}

fn mariadb_list(vars: &Vars, name: &str) -> Result<MariadbGtidList, String> {
    req(vars, name)?.parse().map_err(|e| format!("{name}: {e}"))
}

fn mysql_set(vars: &Vars, name: &str) -> Result<MysqlGtidSet, String> {
    var(vars, &[name])
        .unwrap_or("")
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

fn col<'a>(row: &'a RowMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| row.get(*n))
        .and_then(|v| v.as_deref())
}

fn col_num(row: &RowMap, names: &[&str]) -> Result<Option<u64>, String> {
    col(row, names)
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{} is {v:?}, not a number", names[0]))
        })
        .transpose()
}

/// Parse one row of `SHOW SLAVE STATUS` (MariaDB, MySQL before 8.0.22) or `SHOW REPLICA
/// STATUS` (MySQL 8.0.22+). A row with an empty source host (after `RESET SLAVE`) means no
/// replication: `Ok(None)`.
pub fn replication_status(row: &RowMap) -> Result<Option<ReplicationStatus>, String> {
    let host = col(row, &["Source_Host", "Master_Host"])
        .unwrap_or("")
        .trim();
    if host.is_empty() {
        return Ok(None);
    }
    let port = col_num(row, &["Source_Port", "Master_Port"])?
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("replica status has no valid source port")?;
    let io_text = col(row, &["Replica_IO_Running", "Slave_IO_Running"])
        .ok_or("replica status has no IO thread column")?;
    let io_thread = IoThreadState::parse(io_text)
        .ok_or_else(|| format!("IO thread state {io_text:?} is unknown"))?;
    let sql_text = col(row, &["Replica_SQL_Running", "Slave_SQL_Running"])
        .ok_or("replica status has no SQL thread column")?;
    let sql_running =
        parse_bool(sql_text).ok_or_else(|| format!("SQL thread state {sql_text:?} is unknown"))?;
    let errno = |names: &[&str]| -> Result<u32, String> {
        Ok(col_num(row, names)?.unwrap_or(0).min(u64::from(u32::MAX)) as u32)
    };
    // MariaDB: Using_Gtid is No, Slave_Pos or Current_Pos. MySQL: Auto_Position is 0 or 1.
    let using_gtid = match (col(row, &["Using_Gtid"]), col(row, &["Auto_Position"])) {
        (Some(u), _) => !u.eq_ignore_ascii_case("no"),
        (None, Some(a)) => a.trim() == "1",
        (None, None) => false,
    };
    Ok(Some(ReplicationStatus {
        source: InstanceAddr::new(host, port),
        io_thread,
        sql_running,
        last_io_errno: errno(&["Last_IO_Errno"])?,
        last_io_error: col(row, &["Last_IO_Error"]).unwrap_or("").to_string(),
        last_sql_errno: errno(&["Last_SQL_Errno"])?,
        last_sql_error: col(row, &["Last_SQL_Error"]).unwrap_or("").to_string(),
        seconds_behind_source: col_num(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])?,
        sql_delay_s: col_num(row, &["SQL_Delay"])?.unwrap_or(0),
        using_gtid,
        received_gtid: col(row, &["Gtid_IO_Pos", "Retrieved_Gtid_Set"])
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(""),
        stream: model::StreamProgress {
            source_log_file: col(row, &["Source_Log_File", "Master_Log_File"])
                .unwrap_or("")
                .trim()
                .to_string(),
            read_source_log_pos: col_num(row, &["Read_Source_Log_Pos", "Read_Master_Log_Pos"])?,
            ..Default::default()
        },
    }))
}

/// Parse the vertical (`\G`) output of the `mysql` client into rows, for fixtures.
pub fn parse_vertical(text: &str) -> Vec<RowMap> {
    let mut rows = Vec::new();
    let mut cur: Option<RowMap> = None;
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("***") {
            if let Some(r) = cur.take() {
                rows.push(r);
            }
            cur = Some(RowMap::new());
            last_key = None;
            continue;
        }
        let Some(row) = cur.as_mut() else { continue };
        match line
            .split_once(": ")
            .or_else(|| line.trim_end().strip_suffix(':').map(|k| (k, "")))
        {
            Some((k, v)) if !k.trim().is_empty() && !k.trim().contains(' ') => {
                let key = k.trim().to_string();
                let val = if v == "NULL" {
                    None
                } else {
                    Some(v.to_string())
                };
                row.insert(key.clone(), val);
                last_key = Some(key);
            }
            _ => {
                // A continuation line of a multi-line value (a GTID set printed with newlines).
                if let Some(Some(v)) = last_key.as_ref().and_then(|k| row.get_mut(k)) {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
        }
    }
    rows.extend(cur);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_space_takes_the_longest_mount_that_holds_the_datadir() {
        let row = |disk: &str, path: &str, total: u64, avail: u64| -> RowMap {
            [
                ("Disk", disk.to_string()),
                ("Path", path.to_string()),
                ("Total", total.to_string()),
                ("Used", (total - avail).to_string()),
                ("Available", avail.to_string()),
                ("datadir", "/srv/sb/m1/data/".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .collect()
        };
        let rows = vec![
            row("/dev/vda", "/", 1000, 500),
            row("tmpfs", "/dev/shm", 100, 100),
            row("/dev/loop0", "/srv/sb/m1/data", 256, 3),
            row("/dev/loop1", "/srv/sb/m1/dat", 256, 200),
        ];
        let d = disk_space(&rows, 7).expect("a disk");
        assert_eq!(d.disk, "/dev/loop0");
        assert_eq!(d.total_bytes, 256 * 1024);
        assert_eq!(d.available_bytes, 3 * 1024);
        assert_eq!(d.read_at_ms, 7);
        assert_eq!(disk_space(&rows[..2], 7).map(|d| d.path), Some("/".into()));
        assert_eq!(disk_space(&[], 7), None);
    }

    #[test]
    fn status_concat_splits_pairs() {
        let v = status_concat(Some(
            "UPTIME=25,RPL_SEMI_SYNC_MASTER_STATUS=OFF,SLAVE_HEARTBEAT_PERIOD=2.000",
        ));
        assert_eq!(v.get("uptime").map(String::as_str), Some("25"));
        assert_eq!(
            v.get("rpl_semi_sync_master_status").map(String::as_str),
            Some("OFF")
        );
        assert_eq!(
            v.get("slave_heartbeat_period").map(String::as_str),
            Some("2.000")
        );
        assert_eq!(v.len(), 3);
        assert!(status_concat(None).is_empty());
        assert!(status_concat(Some("")).is_empty());
        assert!(status_concat_sql(&["uptime", "threads_running"])
            .ends_with("WHERE VARIABLE_NAME IN ('uptime','threads_running')"));
    }

    #[test]
    fn versions() {
        assert!(version_at_least("8.0.22", (8, 0, 22)));
        assert!(version_at_least("8.4.0-commercial", (8, 0, 22)));
        assert!(!version_at_least("8.0.21-log", (8, 0, 22)));
        assert!(!version_at_least("5.7.44", (8, 0, 22)));
        assert!(!version_at_least("garbage", (8, 0, 22)));
        assert_eq!(
            replica_status_sql(Flavor::Mysql, "8.0.35"),
            "SHOW REPLICA STATUS"
        );
        assert_eq!(
            replica_status_sql(Flavor::Mysql, "5.7.44-log"),
            "SHOW SLAVE STATUS"
        );
        assert_eq!(
            replica_status_sql(Flavor::Mariadb, "10.11.6-MariaDB"),
            "SHOW SLAVE STATUS"
        );
    }

    #[test]
    fn metrics_from_status_and_variables() {
        let vars: Vars = [("max_connections", "151"), ("innodb_page_size", "16384")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let status: Vars = [
            ("queries", "1200"),
            ("questions", "1000"),
            ("com_commit", "40"),
            ("com_rollback", "2"),
            ("threads_connected", "15"),
            ("threads_running", "3"),
            ("aborted_connects", "7"),
            ("innodb_buffer_pool_pages_total", "2048"),
            ("innodb_buffer_pool_pages_free", "512"),
            ("innodb_row_lock_waits", "9"),
            ("innodb_log_waits", "not a number"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let m = instance_metrics(&vars, &status);
        assert_eq!(m.max_connections, Some(151));
        assert_eq!(m.queries, Some(1200));
        assert_eq!(m.com_commit, Some(40));
        assert_eq!(m.innodb_row_lock_waits, Some(9));
        assert_eq!(m.innodb_log_waits, None, "garbage is unknown, not an error");
        assert_eq!(m.bytes_sent, None, "missing is unknown");
        assert_eq!(m.connections_used_ratio(), Some(15.0 / 151.0));
        assert_eq!(m.buffer_pool_used_ratio(), Some(0.75));
        let mut later = m.clone();
        later.queries = Some(1700);
        later.com_commit = Some(140);
        later.com_rollback = Some(1); // went down: a restart, no rate
        let r = model::Rates::between(&m, &later, 2_000);
        assert_eq!(r.queries, Some(250.0));
        assert_eq!(r.commits, Some(50.0));
        assert_eq!(r.rollbacks, None);
        let mut row = RowMap::new();
        row.insert("ts_us".into(), Some("1700000000123456".into()));
        assert_eq!(heartbeat_ts_us(&[row]), Some(1_700_000_000_123_456));
        assert_eq!(heartbeat_ts_us(&[]), None);
    }

    #[test]
    fn empty_source_host_is_no_replication() {
        let mut row = RowMap::new();
        row.insert("Master_Host".into(), Some(String::new()));
        assert_eq!(replication_status(&row), Ok(None));
    }

    #[test]
    fn odd_replies_are_errors_not_panics() {
        let mut row = RowMap::new();
        row.insert("Master_Host".into(), Some("10.0.0.1".into()));
        row.insert("Master_Port".into(), Some("99999".into()));
        assert!(replication_status(&row).is_err());
        row.insert("Master_Port".into(), Some("3306".into()));
        row.insert("Slave_IO_Running".into(), Some("Maybe".into()));
        row.insert("Slave_SQL_Running".into(), Some("Yes".into()));
        assert!(replication_status(&row).unwrap_err().contains("Maybe"));
        let vars = Vars::new();
        assert!(server_state(Flavor::Mariadb, &vars, &Vars::new(), None).is_err());
    }
}
