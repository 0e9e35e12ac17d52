//! One simulated server: its listener, its connections (the MySQL protocol is
//! `opensrv-mysql`'s), its faults, and its answers to each statement.
//!
//! Two protocol details matter for mysql_async:
//!
//! - opensrv-mysql 0.7 advertises `CLIENT_DEPRECATE_EOF`, and then ends every result set with
//!   an OK packet whose status never carries `SERVER_MORE_RESULTS_EXISTS`: a client reading a
//!   multi-statement reply stops after the first result set. With the classic EOF packets it
//!   sets the flag right. So the greeting is patched on its way out ([`ReplyBuffer`]): it
//!   withdraws `CLIENT_DEPRECATE_EOF` and offers `CLIENT_MULTI_STATEMENTS` and
//!   `CLIENT_MULTI_RESULTS`, as a real MariaDB does.
//! - Column lists must outlive the reply writer, so the few that depend on the query (`SELECT
//!   @@a, @@b`) are interned once per distinct list ([`interned`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, OkResponse,
    ParamParser, QueryResultWriter, StatementMetaWriter, StatusFlags,
};
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::sql::{self, Filter, Statement};
use crate::values::{self, Table, View, VERSION};
use crate::Shared;

/// A fault injected into one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answers normally.
    None,
    /// Accepts connections but never sends the greeting, and never answers a statement
    /// (statements in flight when it started included) until healed.
    Hang,
    /// Not listening: connects are refused, and open connections were reset.
    Refuse,
}

/// A replica's stopped replication: what it had applied when it stopped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stopped {
    seq: u64,
    heartbeat_us: u64,
}

/// A replica as its cluster knows it.
pub(crate) struct ReplicaSlot {
    pub(crate) addr: SocketAddr,
    pub(crate) server_id: u32,
    pub(crate) stopped: Mutex<Option<Stopped>>,
    /// Seconds of base lag, with a phase for its wander.
    lag_base: f64,
    lag_phase: f64,
}

/// What the members of one cluster share: the primary's GTID stream and heartbeat.
pub(crate) struct ClusterState {
    pub(crate) primary: SocketAddr,
    pub(crate) primary_server_id: u32,
    pub(crate) replicas: Vec<ReplicaSlot>,
    gtid_base: u64,
    tx_rate: f64,
    tx_phase: f64,
    /// The last `ts_us` written to the heartbeat table on the primary; 0 before any.
    heartbeat_us: AtomicU64,
    semi_sync: bool,
}

impl ClusterState {
    pub(crate) fn new(
        primary: SocketAddr,
        primary_server_id: u32,
        replicas: Vec<(SocketAddr, u32)>,
        seed: u64,
        semi_sync: bool,
    ) -> Self {
        Self {
            primary,
            primary_server_id,
            replicas: replicas
                .into_iter()
                .enumerate()
                .map(|(i, (addr, server_id))| ReplicaSlot {
                    addr,
                    server_id,
                    stopped: Mutex::new(None),
                    lag_base: 0.02 + 0.25 * values::unit(seed, 100 + i as u64),
                    lag_phase: values::unit(seed, 200 + i as u64) * std::f64::consts::TAU,
                })
                .collect(),
            gtid_base: 1_000 + (values::unit(seed, 1) * 5e7) as u64,
            tx_rate: 20.0 + 200.0 * values::unit(seed, 2),
            tx_phase: values::unit(seed, 3) * std::f64::consts::TAU,
            heartbeat_us: AtomicU64::new(0),
            semi_sync,
        }
    }

    /// The primary's last GTID sequence number at `t` seconds into the run.
    fn seq_at(&self, t: f64) -> u64 {
        values::counter(
            self.gtid_base,
            self.tx_rate,
            t.max(0.0),
            60.0,
            self.tx_phase,
        )
    }

    /// A replica's lag at `t`, in seconds.
    fn lag_at(&self, r: &ReplicaSlot, t: f64) -> f64 {
        r.lag_base + 0.1 * (1.0 + (t / 30.0 + r.lag_phase).sin())
    }

    fn stopped(&self, r: &ReplicaSlot) -> Option<Stopped> {
        *r.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gtid(&self, seq: u64) -> String {
        format!("0-{}-{}", self.primary_server_id, seq)
    }

    /// The heartbeat a replica has applied at `t`: the primary's last write as of `lag` ago.
    fn replica_heartbeat(&self, lag: f64) -> u64 {
        let last = self.heartbeat_us.load(Ordering::Relaxed);
        if last == 0 {
            return 0;
        }
        last.saturating_sub((lag * 1e6) as u64).max(1)
    }

    pub(crate) fn stop_replication(&self, idx: usize, t: f64) {
        let r = &self.replicas[idx];
        let mut s = r.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if s.is_none() {
            let lag = self.lag_at(r, t);
            *s = Some(Stopped {
                seq: self.seq_at(t - lag),
                heartbeat_us: self.replica_heartbeat(lag),
            });
        }
    }

    pub(crate) fn start_replication(&self, idx: usize) {
        *self.replicas[idx]
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Primary, or the replica at this index of its cluster's replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Replica(usize),
}

/// One simulated server.
pub(crate) struct Instance {
    pub(crate) addr: SocketAddr,
    pub(crate) server_id: u32,
    pub(crate) role: Role,
    pub(crate) cluster: Arc<ClusterState>,
    pub(crate) fault: watch::Sender<Fault>,
    seed: u64,
    uptime_base: u64,
    conn_ids: AtomicU32,
    /// The probe's observe batches answered, and when the last one came (ms since the fleet
    /// started, plus one; 0 never), for [`crate::Fleet::probe_report`].
    pub(crate) observes: AtomicU64,
    pub(crate) last_observe_ms: AtomicU64,
    /// Intervals this server went without an observe, and its longest gap, since tracking
    /// started.
    pub(crate) missed: AtomicU64,
    pub(crate) max_gap_ms: AtomicU64,
}

impl Instance {
    pub(crate) fn new(
        addr: SocketAddr,
        server_id: u32,
        role: Role,
        cluster: Arc<ClusterState>,
        seed: u64,
    ) -> Self {
        Self {
            addr,
            server_id,
            role,
            cluster,
            fault: watch::Sender::new(Fault::None),
            seed,
            uptime_base: 3_600 + (values::unit(seed, 4) * 40.0 * 86_400.0) as u64,
            conn_ids: AtomicU32::new(1 + (values::unit(seed, 5) * 1e6) as u32),
            observes: AtomicU64::new(0),
            last_observe_ms: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            max_gap_ms: AtomicU64::new(0),
        }
    }

    fn replica(&self) -> Option<&ReplicaSlot> {
        match self.role {
            Role::Primary => None,
            Role::Replica(i) => self.cluster.replicas.get(i),
        }
    }
}

/// Interned column lists, keyed by their names: each distinct list is leaked once. Only
/// `SELECT @@…` and heartbeat reads make them, so there are a handful.
fn interned(names: &[String]) -> Option<&'static [Column]> {
    static CACHE: LazyLock<Mutex<HashMap<Vec<String>, &'static [Column]>>> =
        LazyLock::new(Mutex::default);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = cache.get(names) {
        return Some(c);
    }
    if cache.len() >= 4096 {
        return None;
    }
    let cols: Vec<Column> = names.iter().map(|n| text_col(n)).collect();
    let cols: &'static [Column] = Box::leak(cols.into_boxed_slice());
    cache.insert(names.to_vec(), cols);
    Some(cols)
}

fn text_col(name: &str) -> Column {
    Column {
        table: String::new(),
        column: name.to_string(),
        coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
        colflags: ColumnFlags::empty(),
    }
}

fn cols(names: &[&str]) -> Vec<Column> {
    names.iter().map(|n| text_col(n)).collect()
}

static SHOW_COLS: LazyLock<Vec<Column>> = LazyLock::new(|| cols(&["Variable_name", "Value"]));
static HOSTS_COLS: LazyLock<Vec<Column>> =
    LazyLock::new(|| cols(&["Server_id", "Host", "Port", "Master_id"]));
static SLEEP_COLS: LazyLock<Vec<Column>> = LazyLock::new(|| cols(&["SLEEP"]));
static VERSION_COLS: LazyLock<Vec<Column>> = LazyLock::new(|| cols(&["VERSION()"]));
static CONNECTION_ID_COLS: LazyLock<Vec<Column>> = LazyLock::new(|| cols(&["CONNECTION_ID()"]));
static CONCAT_COLS: LazyLock<Vec<Column>> =
    LazyLock::new(|| cols(&["GROUP_CONCAT(VARIABLE_NAME, '=', VARIABLE_VALUE SEPARATOR ',')"]));

/// The columns of MariaDB 10.11's `SHOW SLAVE STATUS`, in order.
const REPLICA_STATUS: &[&str] = &[
    "Slave_IO_State",
    "Master_Host",
    "Master_User",
    "Master_Port",
    "Connect_Retry",
    "Master_Log_File",
    "Read_Master_Log_Pos",
    "Relay_Log_File",
    "Relay_Log_Pos",
    "Relay_Master_Log_File",
    "Slave_IO_Running",
    "Slave_SQL_Running",
    "Replicate_Rewrite_DB",
    "Replicate_Do_DB",
    "Replicate_Ignore_DB",
    "Replicate_Do_Table",
    "Replicate_Ignore_Table",
    "Replicate_Wild_Do_Table",
    "Replicate_Wild_Ignore_Table",
    "Last_Errno",
    "Last_Error",
    "Skip_Counter",
    "Exec_Master_Log_Pos",
    "Relay_Log_Space",
    "Until_Condition",
    "Until_Log_File",
    "Until_Log_Pos",
    "Master_SSL_Allowed",
    "Master_SSL_CA_File",
    "Master_SSL_CA_Path",
    "Master_SSL_Cert",
    "Master_SSL_Cipher",
    "Master_SSL_Key",
    "Seconds_Behind_Master",
    "Master_SSL_Verify_Server_Cert",
    "Last_IO_Errno",
    "Last_IO_Error",
    "Last_SQL_Errno",
    "Last_SQL_Error",
    "Replicate_Ignore_Server_Ids",
    "Master_Server_Id",
    "Master_SSL_Crl",
    "Master_SSL_Crlpath",
    "Using_Gtid",
    "Gtid_IO_Pos",
    "Replicate_Do_Domain_Ids",
    "Replicate_Ignore_Domain_Ids",
    "Parallel_Mode",
    "SQL_Delay",
    "SQL_Remaining_Delay",
    "Slave_SQL_Running_State",
    "Slave_DDL_Groups",
    "Slave_Non_Transactional_Groups",
    "Slave_Transactional_Groups",
];

static REPLICA_STATUS_COLS: LazyLock<Vec<Column>> = LazyLock::new(|| cols(REPLICA_STATUS));

/// The server's side of one connection.
struct Shim {
    inst: Arc<Instance>,
    shared: Arc<Shared>,
    conn_id: u32,
    /// The last query's plan, reused when the same text comes again (a probe sends the same
    /// batch every interval): parsing it anew each time was most of the fleet's CPU.
    plan: Option<(String, Arc<Vec<Step>>)>,
}

/// One statement of a query, parsed, with a `SHOW`'s rows resolved.
struct Step {
    text: String,
    stmt: Statement,
    /// For `SHOW` and the one-row status: the table and the names it lists, in order.
    show: Option<(Table, Vec<&'static str>)>,
}

impl Step {
    fn new(part: &str) -> Self {
        let stmt = sql::parse(part);
        let show = match &stmt {
            Statement::Show { status, filter } => {
                let table = if *status {
                    Table::Status
                } else {
                    Table::Variables
                };
                let names: Vec<&'static str> = match filter {
                    Filter::All => values::names(table, |_| true),
                    Filter::Like(p) => values::names(table, |n| sql::like(n, p)),
                    Filter::In(list) => {
                        let mut v: Vec<&'static str> = list
                            .iter()
                            .filter_map(|n| values::lookup(table, n))
                            .collect();
                        v.sort_by_key(|n| n.to_ascii_lowercase());
                        v.dedup();
                        v
                    }
                };
                Some((table, names))
            }
            Statement::StatusConcat(list) => Some((
                Table::Status,
                list.iter()
                    .filter_map(|n| values::lookup(Table::Status, n))
                    .collect(),
            )),
            _ => None,
        };
        Self {
            text: part.to_string(),
            stmt,
            show,
        }
    }
}

/// Binlog coordinates for a byte offset: `mysql-bin.NNNNNN` and a position in it.
fn binlog(bytes: u64) -> (String, u64) {
    const FILE: u64 = 1 << 30;
    (
        format!("mysql-bin.{:06}", 1 + bytes / FILE),
        4 + bytes % FILE,
    )
}

impl Shim {
    fn t(&self) -> f64 {
        self.shared.t0.elapsed().as_secs_f64()
    }

    /// Wait while the server hangs. Returns at once when it does not.
    async fn while_hung(&self) {
        let mut rx = self.inst.fault.subscribe();
        let _ = rx.wait_for(|f| *f != Fault::Hang).await;
    }

    /// This replica's applied sequence number, lag in seconds (`None` when stopped) and
    /// heartbeat at `t`.
    fn replica_state(&self, r: &ReplicaSlot, t: f64) -> (u64, Option<f64>, u64) {
        let c = &self.inst.cluster;
        match c.stopped(r) {
            Some(s) => (s.seq, None, s.heartbeat_us),
            None => {
                let lag = c.lag_at(r, t);
                (c.seq_at(t - lag), Some(lag), c.replica_heartbeat(lag))
            }
        }
    }

    fn show_value(&self, table: Table, name: &str, t: f64) -> String {
        let inst = &self.inst;
        let c = &inst.cluster;
        let (seq, replicating) = match inst.replica() {
            None => (c.seq_at(t), false),
            Some(r) => {
                let (seq, lag, _) = self.replica_state(r, t);
                (seq, lag.is_some())
            }
        };
        let running = c.replicas.iter().filter(|r| c.stopped(r).is_none()).count() as u64;
        let gtid = c.gtid(seq);
        let slave_pos = if inst.role == Role::Primary {
            String::new()
        } else {
            gtid.clone()
        };
        let host = inst.addr.ip().to_string();
        let view = View {
            seed: inst.seed,
            t,
            uptime: inst.uptime_base + t as u64,
            server_id: inst.server_id,
            primary: inst.role == Role::Primary,
            host: &host,
            port: inst.addr.port(),
            gtid_pos: &gtid,
            gtid_slave_pos: &slave_pos,
            semi_sync: c.semi_sync,
            semi_sync_clients: running,
            replicating,
            replicas_connected: running,
        };
        values::value(table, name, &view)
            .map(|v| v.into_owned())
            .unwrap_or_default()
    }

    fn replica_status_row(&self, r: &ReplicaSlot, t: f64) -> Vec<Option<String>> {
        let c = &self.inst.cluster;
        let (seq, lag, _) = self.replica_state(r, t);
        let primary_seq = match lag {
            Some(_) => c.seq_at(t - 0.005),
            None => seq,
        };
        let (read_file, read_pos) = binlog(primary_seq * 350);
        let (exec_file, exec_pos) = binlog(seq * 350);
        let relay_pos = 4 + (seq * 350) % (1 << 28);
        let yes_no = |b: bool| if b { "Yes" } else { "No" };
        let running = lag.is_some();
        let s = |v: &str| Some(v.to_string());
        REPLICA_STATUS
            .iter()
            .map(|col| match *col {
                "Slave_IO_State" => s(if running {
                    "Waiting for master to send event"
                } else {
                    ""
                }),
                "Master_Host" => s(&c.primary.ip().to_string()),
                "Master_User" => s("repl"),
                "Master_Port" => s(&c.primary.port().to_string()),
                "Connect_Retry" => s("1"),
                "Master_Log_File" => s(&read_file),
                "Read_Master_Log_Pos" => s(&read_pos.to_string()),
                "Relay_Log_File" => s("mysql-relay-bin.000002"),
                "Relay_Log_Pos" => s(&relay_pos.to_string()),
                "Relay_Master_Log_File" => s(&exec_file),
                "Slave_IO_Running" | "Slave_SQL_Running" => s(yes_no(running)),
                "Last_Errno" | "Skip_Counter" | "Last_IO_Errno" | "Last_SQL_Errno"
                | "Until_Log_Pos" | "SQL_Delay" => s("0"),
                "Exec_Master_Log_Pos" => s(&exec_pos.to_string()),
                "Relay_Log_Space" => s(&(relay_pos + 800).to_string()),
                "Until_Condition" => s("None"),
                "Master_SSL_Allowed" | "Master_SSL_Verify_Server_Cert" => s("No"),
                "Seconds_Behind_Master" => lag.map(|l| (l as u64).to_string()),
                "Master_Server_Id" => s(&c.primary_server_id.to_string()),
                "Using_Gtid" => s("Slave_Pos"),
                "Gtid_IO_Pos" => s(&c.gtid(primary_seq)),
                "Parallel_Mode" => s("optimistic"),
                "SQL_Remaining_Delay" => None,
                "Slave_SQL_Running_State" => s(if running {
                    "Slave has read all relay log; waiting for more updates"
                } else {
                    ""
                }),
                "Slave_DDL_Groups" => s("12"),
                "Slave_Non_Transactional_Groups" => s("3"),
                "Slave_Transactional_Groups" => s(&seq.saturating_sub(c.gtid_base).to_string()),
                _ => s(""),
            })
            .collect()
    }

    fn count_unknown(&self, sql: &str) {
        self.shared.unknown(sql);
    }

    /// Answer one COM_QUERY, which may hold several statements.
    async fn answer<'a, W: AsyncWrite + Send + Unpin>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        self.while_hung().await;
        self.shared.queries.fetch_add(1, Ordering::Relaxed);
        let steps = match &self.plan {
            Some((text, steps)) if text == query => steps.clone(),
            _ => {
                let steps: Arc<Vec<Step>> =
                    Arc::new(sql::split(query).into_iter().map(Step::new).collect());
                // A heartbeat write carries a new timestamp each time: not worth keeping.
                if !steps
                    .iter()
                    .any(|s| matches!(s.stmt, Statement::HeartbeatWrite(_)))
                {
                    self.plan = Some((query.to_string(), steps.clone()));
                }
                steps
            }
        };
        // An observe batch: variables, then status, then (unless the probe skips it on a
        // server with no replication) the replica status and the heartbeat row.
        // (After a `SET` on a session's first batch.)
        let first = match steps.first().map(|s| &s.stmt) {
            Some(Statement::Ok) => 1,
            _ => 0,
        };
        if steps.len() >= first + 2
            && matches!(steps[first].stmt, Statement::Show { status: false, .. })
        {
            self.shared.observed(&self.inst);
        }
        if steps.is_empty() {
            return results.completed(OkResponse::default()).await;
        }
        let mut w = results;
        let n = steps.len();
        for (i, step) in steps.iter().enumerate() {
            let part = step.text.as_str();
            let more = i + 1 < n;
            let ok = || OkResponse {
                status_flags: if more {
                    StatusFlags::SERVER_MORE_RESULTS_EXISTS
                } else {
                    StatusFlags::empty()
                },
                ..OkResponse::default()
            };
            let t = self.t();
            match &step.stmt {
                Statement::Show { .. } => {
                    let Some((table, names)) = &step.show else {
                        unreachable!("a SHOW step has its names")
                    };
                    let table = *table;
                    let mut rw = w.start(&SHOW_COLS).await?;
                    for &name in names {
                        let value = self.show_value(table, name, t);
                        rw.write_row([name, value.as_str()]).await?;
                    }
                    w = rw.finish_one().await?;
                }
                Statement::ReplicaStatus => {
                    let row = self.inst.replica().map(|r| self.replica_status_row(r, t));
                    let mut rw = w.start(&REPLICA_STATUS_COLS).await?;
                    if let Some(row) = row {
                        rw.write_row(row).await?;
                    }
                    w = rw.finish_one().await?;
                }
                Statement::ReplicaHosts => {
                    let c = self.inst.cluster.clone();
                    let mut rw = w.start(&HOSTS_COLS).await?;
                    if self.inst.role == Role::Primary {
                        for r in c.replicas.iter().filter(|r| c.stopped(r).is_none()) {
                            rw.write_row([
                                r.server_id.to_string(),
                                r.addr.ip().to_string(),
                                r.addr.port().to_string(),
                                self.inst.server_id.to_string(),
                            ])
                            .await?;
                        }
                    }
                    w = rw.finish_one().await?;
                }
                Statement::SelectVars(vars) => {
                    let labels: Vec<String> = vars.iter().map(|(_, l)| l.clone()).collect();
                    let Some(cols) = interned(&labels) else {
                        return w
                            .error(ErrorKind::ER_NOT_SUPPORTED_YET, b"too many column lists")
                            .await;
                    };
                    let row: Vec<Option<String>> = vars
                        .iter()
                        .map(|(name, _)| {
                            values::lookup(Table::Variables, name)
                                .map(|n| self.show_value(Table::Variables, n, t))
                                // `SELECT @@read_only` is 0 or 1 where SHOW says OFF or ON.
                                .map(|v| match v.as_str() {
                                    "ON" => "1".to_string(),
                                    "OFF" => "0".to_string(),
                                    _ => v,
                                })
                        })
                        .collect();
                    let mut rw = w.start(cols).await?;
                    rw.write_row(row).await?;
                    w = rw.finish_one().await?;
                }
                Statement::SelectVersion => {
                    let mut rw = w.start(&VERSION_COLS).await?;
                    rw.write_row([VERSION]).await?;
                    w = rw.finish_one().await?;
                }
                Statement::SelectConst(v) => {
                    let Some(cols) = interned(std::slice::from_ref(v)) else {
                        return w
                            .error(ErrorKind::ER_NOT_SUPPORTED_YET, b"too many column lists")
                            .await;
                    };
                    let mut rw = w.start(cols).await?;
                    rw.write_row([v.as_str()]).await?;
                    w = rw.finish_one().await?;
                }
                Statement::Sleep(d) => {
                    tokio::time::sleep(*d).await;
                    self.while_hung().await;
                    let mut rw = w.start(&SLEEP_COLS).await?;
                    rw.write_row(["0"]).await?;
                    w = rw.finish_one().await?;
                }
                Statement::HeartbeatWrite(ts) => {
                    if self.inst.role != Role::Primary {
                        // A replica is read-only: `… WHERE @@read_only = 0` selects nothing.
                        w = w
                            .complete_one(OkResponse {
                                affected_rows: 0,
                                ..ok()
                            })
                            .await?;
                        continue;
                    }
                    self.inst.cluster.heartbeat_us.store(*ts, Ordering::Relaxed);
                    self.shared.heartbeats.fetch_add(1, Ordering::Relaxed);
                    w = w
                        .complete_one(OkResponse {
                            affected_rows: 2,
                            ..ok()
                        })
                        .await?;
                }
                Statement::HeartbeatRead(columns) => {
                    let c = &self.inst.cluster;
                    let ts = match self.inst.replica() {
                        None => c.heartbeat_us.load(Ordering::Relaxed),
                        Some(r) => self.replica_state(r, t).2,
                    };
                    let Some(cols) = interned(columns) else {
                        return w
                            .error(ErrorKind::ER_NOT_SUPPORTED_YET, b"too many column lists")
                            .await;
                    };
                    let row: Vec<String> = columns
                        .iter()
                        .map(|col| match col.as_str() {
                            "id" => "1".to_string(),
                            "server_id" => c.primary_server_id.to_string(),
                            _ => ts.to_string(),
                        })
                        .collect();
                    let mut rw = w.start(cols).await?;
                    if ts != 0 {
                        rw.write_row(row).await?;
                    }
                    w = rw.finish_one().await?;
                }
                Statement::StatusConcat(_) => {
                    let Some((_, names)) = &step.show else {
                        unreachable!("a status step has its names")
                    };
                    let pairs: Vec<String> = names
                        .iter()
                        .map(|&n| {
                            let v = self.show_value(Table::Status, n, t);
                            format!("{}={v}", n.to_ascii_uppercase())
                        })
                        .collect();
                    let value = (!pairs.is_empty()).then(|| pairs.join(","));
                    let mut rw = w.start(&CONCAT_COLS).await?;
                    rw.write_row([value]).await?;
                    w = rw.finish_one().await?;
                }
                Statement::Ok | Statement::Kill => {
                    w = w.complete_one(ok()).await?;
                }
                Statement::ConnectionId => {
                    let mut rw = w.start(&CONNECTION_ID_COLS).await?;
                    rw.write_row([self.conn_id.to_string()]).await?;
                    w = rw.finish_one().await?;
                }
                Statement::EmptyProcesslist(names) => {
                    let Some(cols) = interned(names) else {
                        return w
                            .error(ErrorKind::ER_NOT_SUPPORTED_YET, b"too many column lists")
                            .await;
                    };
                    let rw = w.start(cols).await?;
                    w = rw.finish_one().await?;
                }
                Statement::NoDisksPlugin => {
                    return w
                        .error(
                            ErrorKind::ER_UNKNOWN_TABLE,
                            b"Unknown table 'DISKS' in information_schema",
                        )
                        .await;
                }
                Statement::Unknown => {
                    self.count_unknown(part);
                    let msg = format!(
                        "dbfleet sim does not simulate this statement: {}",
                        part.trim()
                    );
                    return w
                        .error(ErrorKind::ER_NOT_SUPPORTED_YET, msg.as_bytes())
                        .await;
                }
            }
        }
        w.no_more_results().await
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Send + Unpin> AsyncMysqlShim<W> for Shim {
    type Error = io::Error;

    fn version(&self) -> String {
        // MariaDB prefixes its version so that old clients accept it; mysql_async strips it.
        format!("5.5.5-{VERSION}")
    }

    fn connect_id(&self) -> u32 {
        self.conn_id
    }

    async fn on_prepare<'a>(
        &'a mut self,
        query: &'a str,
        info: StatementMetaWriter<'a, W>,
    ) -> io::Result<()> {
        self.count_unknown(query);
        info.error(
            ErrorKind::ER_NOT_SUPPORTED_YET,
            b"dbfleet sim does not simulate prepared statements",
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _: u32,
        _: ParamParser<'a>,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        results
            .error(
                ErrorKind::ER_NOT_SUPPORTED_YET,
                b"dbfleet sim does not simulate prepared statements",
            )
            .await
    }

    async fn on_close(&mut self, _: u32) {}

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, W>,
    ) -> io::Result<()> {
        self.answer(query, results).await
    }
}

/// Wait until the fault satisfies `pred`; false when the server is gone.
async fn until(rx: &mut watch::Receiver<Fault>, pred: impl Fn(Fault) -> bool) -> bool {
    rx.wait_for(|f| pred(*f)).await.is_ok()
}

/// Serve `inst` until `cancel`: listen while not refused, accept, and serve each connection
/// in its own task.
pub(crate) async fn listen(
    inst: Arc<Instance>,
    shared: Arc<Shared>,
    mut listener: Option<TcpListener>,
    cancel: CancellationToken,
) {
    let mut fault = inst.fault.subscribe();
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    ok = until(&mut fault, |f| f != Fault::Refuse) => if !ok { return },
                }
                match TcpListener::bind(inst.addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        debug!(addr = %inst.addr, error = %e, "sim: bind again");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                        }
                    }
                }
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ok = until(&mut fault, |f| f == Fault::Refuse) => {
                    if !ok { return }
                    break;
                }
                r = l.accept() => match r {
                    Ok((stream, _)) => {
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                        shared.tracker.spawn(serve(inst.clone(), shared.clone(), stream, cancel.clone()));
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                        debug!(addr = %inst.addr, error = %e, "sim: accept");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
        // Refused: the listener closes here, and connections see the refusal themselves.
        drop(l);
    }
}

/// Serve one connection until the client leaves, the server is refused, or `cancel`.
async fn serve(
    inst: Arc<Instance>,
    shared: Arc<Shared>,
    stream: TcpStream,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // Closing sends a reset, as a killed server's kernel does, and leaves no TIME_WAIT.
    let _ = stream.set_zero_linger();
    let mut fault = inst.fault.subscribe();
    if *fault.borrow() == Fault::Hang {
        // No greeting until healed; give up when the client does.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = until(&mut fault, |f| f != Fault::Hang) => {}
            _ = client_gone(&stream) => return,
        }
    }
    let conn_id = inst.conn_ids.fetch_add(1, Ordering::Relaxed);
    let (r, w) = stream.into_split();
    let shim = Shim {
        inst: inst.clone(),
        shared,
        conn_id,
        plan: None,
    };
    let w = ReplyBuffer::new(w, format!("5.5.5-{VERSION}").len());
    let started = Instant::now();
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = until(&mut fault, |f| f == Fault::Refuse) => {}
        r = AsyncMysqlIntermediary::run_on(shim, r, w) => {
            if let Err(e) = r {
                debug!(addr = %inst.addr, error = %e, after = ?started.elapsed(), "sim: connection ended");
            }
        }
    }
}

/// Resolves when the client closes a connection that got no greeting (it sends nothing
/// before the greeting, so anything readable is its end).
async fn client_gone(stream: &TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The writer under opensrv-mysql: it patches the server greeting (see the module docs) and
/// holds every packet until opensrv flushes, which it does once per reply. opensrv writes
/// each packet (each row, each column definition) with its own call; unbuffered, the probe's
/// batch would cost some 150 system calls and TCP segments on each side.
struct ReplyBuffer<W> {
    inner: W,
    buf: Vec<u8>,
    /// How much of `buf` the socket has taken.
    sent: usize,
    /// Bytes accepted since the connection opened.
    total: usize,
    /// Offset of the upper two capability bytes in the greeting.
    at: usize,
}

impl<W> ReplyBuffer<W> {
    fn new(inner: W, version_len: usize) -> Self {
        // header 4, protocol 1, version + NUL, connection id 4, scramble 8, filler 1,
        // capabilities (low) 2, charset 1, status 2.
        Self {
            inner,
            buf: Vec::with_capacity(4096),
            sent: 0,
            total: 0,
            at: 4 + 1 + version_len + 1 + 4 + 8 + 1 + 2 + 1 + 2,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        let (from, to) = (self.total, self.total + data.len());
        self.total = to;
        for k in [self.at, self.at + 1] {
            if (from..to).contains(&k) {
                let b = &mut self.buf[start + (k - from)];
                if k == self.at {
                    // bits 16, 17: CLIENT_MULTI_STATEMENTS, CLIENT_MULTI_RESULTS
                    *b |= 0b11;
                } else {
                    // bit 24: CLIENT_DEPRECATE_EOF
                    *b &= !0b1;
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ReplyBuffer<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut n = 0;
        for b in bufs {
            self.push(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.sent < this.buf.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.buf[this.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => this.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.buf.clear();
        this.sent = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}
