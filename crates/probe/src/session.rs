//! `Session`: one connection to one managed server, with a timeout on every call, the probe
//! that observes it, and the write commands that operations and the sandbox use.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, OptsBuilder, Row, SslOpts, Value};

use model::{
    Flavor, HeartbeatReading, InstanceAddr, Observation, Reachability, ServerState, TlsMode,
    TlsSettings,
};

use crate::parse::{self, RowMap, Vars};
use crate::ProbeError;

/// A user and password for managed servers, and the cluster's TLS for connections over
/// TCP. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// The account name.
    pub user: String,
    password: String,
    tls: Option<Arc<TlsSettings>>,
}

impl Credentials {
    /// Credentials from a user and a password, over plain connections.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            tls: None,
        }
    }

    /// The same account, connecting with `tls` over TCP (a Unix socket needs none). A
    /// replica pointed at a source with these credentials replicates over TLS too
    /// ([`ChangeSource`]).
    pub fn with_tls(mut self, tls: TlsSettings) -> Self {
        self.tls = tls.enabled().then(|| Arc::new(tls));
        self
    }

    /// The TLS of its connections; `None` for plain ones.
    pub fn tls(&self) -> Option<&TlsSettings> {
        self.tls.as_deref()
    }

    /// The password, for the one place that must send it.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("tls", &self.tls.as_ref().map(|t| t.mode))
            .finish()
    }
}

/// Timeouts for connects and queries.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Longest time a TCP connect plus handshake may take.
    pub connect_timeout: Duration,
    /// Longest time one query (or one batch) may take.
    pub query_timeout: Duration,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(1000),
            query_timeout: Duration::from_millis(1000),
        }
    }
}

/// How [`Session::stop_io_thread_now`] left a replica's IO thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStop {
    /// How many `KILL`s it sent.
    pub kills: usize,
    /// Killed but not gone yet: it acknowledges nothing more, but `Slave_IO_Running` says
    /// `Yes` until it exits (within about 1 s), and a `STOP SLAVE` waits for that.
    pub exiting: bool,
}

/// An open connection to one server. A call that times out leaves the connection in an
/// unknown state, so the session marks itself broken; callers then open a new one.
pub struct Session {
    conn: Option<Conn>,
    /// Where the session connects, for logs: an address or a socket path.
    target: String,
    flavor: Flavor,
    version: String,
    opts: ProbeOptions,
    /// With [`ObserveOptions::lazy_replica_status`]: set when a full read found no
    /// replication and no SQL thread running.
    replica_idle: Option<ReplicaIdle>,
    /// Replica-status reads skipped, for tests and the bench.
    replica_reads_skipped: u64,
    /// Whether this session's `group_concat_max_len` was raised for the one-row status.
    concat_ready: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("flavor", &self.flavor)
            .field("broken", &self.conn.is_none())
            .finish()
    }
}

impl Session {
    /// Connect over TCP and learn the server's flavor.
    pub async fn connect(
        addr: &InstanceAddr,
        creds: &Credentials,
        opts: ProbeOptions,
    ) -> Result<Self, ProbeError> {
        let builder = OptsBuilder::default()
            .ip_or_hostname(addr.host.clone())
            .tcp_port(addr.port)
            .prefer_socket(false);
        let Some(tls) = creds.tls() else {
            return Self::open(addr.to_string(), builder, creds, opts).await;
        };
        let secure = builder.clone().ssl_opts(ssl_opts(tls));
        let first = Self::open(addr.to_string(), secure.clone(), creds, opts).await;
        // `verify_ca` checks the chain, not the name. mysql_async's switch for that misses
        // rustls 0.23's wording, so its name check fails a certificate for another name.
        // rustls checks the chain before the name: such a failure means the chain is
        // good, and one more connect that expects the name the certificate holds proves
        // the same chain again and passes.
        let first = match (&first, tls.mode) {
            (Err(ProbeError::Other(m)), TlsMode::VerifyCa) => match presented_name(m) {
                Some(name) => {
                    let o = ssl_opts(tls).with_danger_tls_hostname_override(Some(name));
                    Self::open(addr.to_string(), builder.clone().ssl_opts(o), creds, opts).await
                }
                None => first,
            },
            _ => first,
        };
        match first {
            // `preferred`: a server that offers no TLS gets a plain connection.
            Err(ProbeError::Other(m)) if tls.mode == TlsMode::Preferred && m.contains(NO_TLS) => {
                Self::open(addr.to_string(), builder, creds, opts).await
            }
            Err(ProbeError::Other(m)) if m.contains(NO_TLS) => Err(ProbeError::Other(format!(
                "the server does not offer TLS, and the cluster's tls = \"{}\" requires it",
                tls.mode
            ))),
            r => r,
        }
    }

    /// Connect over a Unix socket, as the sandbox does to bootstrap a new server as root.
    pub async fn connect_socket(
        path: &str,
        creds: &Credentials,
        opts: ProbeOptions,
    ) -> Result<Self, ProbeError> {
        let builder = OptsBuilder::default().socket(Some(path));
        Self::open(path.to_string(), builder, creds, opts).await
    }

    async fn open(
        target: String,
        builder: OptsBuilder,
        creds: &Credentials,
        opts: ProbeOptions,
    ) -> Result<Self, ProbeError> {
        let builder = builder
            .user(Some(creds.user.clone()))
            .pass(Some(creds.password.clone()))
            .stmt_cache_size(0)
            .tcp_nodelay(true);
        let conn = within(opts.connect_timeout, "connect", Conn::new(builder)).await?;
        let mut session = Self {
            conn: Some(conn),
            target,
            flavor: Flavor::Mariadb,
            version: String::new(),
            opts,
            replica_idle: None,
            replica_reads_skipped: 0,
            concat_ready: false,
        };
        let version: Option<String> = session
            .call("select version", async |c| {
                c.query_first("SELECT @@version").await
            })
            .await?;
        let version = version.ok_or_else(|| ProbeError::Reply {
            what: "select version",
            detail: "no row".into(),
        })?;
        session.flavor = Flavor::from_version(&version);
        session.version = version;
        Ok(session)
    }

    /// The server's flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The server's `@@version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether an earlier call timed out or failed at the network level, so the connection
    /// must not be used again.
    pub fn is_broken(&self) -> bool {
        self.conn.is_none()
    }

    /// Run `f` on the connection under the query timeout. A timeout or a network error
    /// breaks the session; a server error does not.
    async fn call<T, F>(&mut self, what: &'static str, f: F) -> Result<T, ProbeError>
    where
        F: AsyncFnOnce(&mut Conn) -> mysql_async::Result<T>,
    {
        let timeout = self.opts.query_timeout;
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| ProbeError::Other("connection is broken by an earlier error".into()))?;
        let result = within(timeout, what, f(&mut conn)).await;
        match &result {
            Err(e) if !matches!(e, ProbeError::Server { .. } | ProbeError::Auth { .. }) => {}
            _ => self.conn = Some(conn),
        }
        result
    }

    /// Observe the server: variables, status counters and replica status, in one round trip.
    pub async fn observe(&mut self) -> Result<ServerState, ProbeError> {
        self.observe_with(ObserveOptions::default()).await
    }

    /// Observe the server as [`observe`](Self::observe) does, and with `heartbeat` also read
    /// the heartbeat row in the same round trip (a fourth statement). A missing table, schema
    /// or row, or any server error on that statement alone, is "no heartbeat yet":
    /// `metrics.heartbeat` is `None` and the probe still succeeds.
    pub async fn observe_with(&mut self, opts: ObserveOptions) -> Result<ServerState, ProbeError> {
        // The long statements are the same for every server: built once. MariaDB gets its
        // status counters as one row (`parse::status_concat_sql`): 30 rows fewer to decode
        // per probe.
        static SHOW_VARIABLES: LazyLock<String> =
            LazyLock::new(|| parse::show_where("VARIABLES", parse::VARIABLES));
        static SHOW_STATUS: LazyLock<String> =
            LazyLock::new(|| parse::show_where("STATUS", parse::STATUS));
        static STATUS_CONCAT: LazyLock<String> =
            LazyLock::new(|| parse::status_concat_sql(parse::STATUS));
        let concat = self.flavor == Flavor::Mariadb;
        // The first batch of a session makes room for the one-row status (the default
        // `group_concat_max_len` is 1 MiB, but a server may set it as low as 4).
        let setup = concat && !self.concat_ready;
        let replica_sql = parse::replica_status_sql(self.flavor, &self.version);
        let skip_replica = opts.lazy_replica_status
            && self
                .replica_idle
                .as_ref()
                .is_some_and(|i| i.skipped + 1 < FULL_REPLICA_READ_EVERY);
        let mut statements: Vec<&str> = Vec::with_capacity(5);
        if setup {
            statements.push(parse::CONCAT_SETUP_SQL);
        }
        statements.push(&SHOW_VARIABLES);
        statements.push(if concat { &STATUS_CONCAT } else { &SHOW_STATUS });
        if !skip_replica {
            statements.push(replica_sql);
        }
        if opts.heartbeat {
            statements.push(parse::HEARTBEAT_READ_SQL);
        }
        let sql = statements.join("; ");
        let heartbeat = opts.heartbeat;
        let (vars, status, replica, beat) = self
            .call("observe", async move |c| {
                let mut result = c.query_iter(sql).await?;
                if setup {
                    // The SET's OK: no rows.
                    let _: Vec<Row> = result.collect().await?;
                }
                let vars: Vec<Row> = result.collect().await?;
                let status: Vec<Row> = result.collect().await?;
                let replica: Vec<Row> = if skip_replica {
                    Vec::new()
                } else {
                    result.collect().await?
                };
                let beat: Option<Vec<Row>> = if heartbeat {
                    match result.collect::<Row>().await {
                        Ok(rows) => Some(rows),
                        // The statement alone failed (no table yet): the batch is over and
                        // the connection is fine.
                        Err(mysql_async::Error::Server(_)) => None,
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                };
                Ok((vars, status, replica, beat))
            })
            .await?;
        let read_at_us = now_us();
        if setup {
            self.concat_ready = true;
        }
        let status = if concat {
            parse::status_concat(
                status
                    .first()
                    .and_then(|r| r.as_ref(0))
                    .and_then(text)
                    .as_deref(),
            )
        } else {
            name_values(&status)
        };
        let hint = ReplicaHint::of(&status);
        let quiet = skip_replica
            && hint.as_ref().is_some_and(|h| {
                h.sql_threads == 0
                    && self
                        .replica_idle
                        .as_ref()
                        .is_some_and(|i| i.heartbeat_period == h.heartbeat_period)
            });
        let replica = if skip_replica && !quiet {
            // The counters moved since the last full read: read the replica status now.
            self.call("replica status", async move |c| c.query(replica_sql).await)
                .await?
        } else {
            replica
        };
        let replica: Vec<RowMap> = replica
            .iter()
            .map(|r| row_map_only(r, parse::REPLICA_COLUMNS))
            .collect();
        let mut state =
            parse::server_state(self.flavor, &name_values(&vars), &status, replica.first())
                .map_err(|detail| ProbeError::Reply {
                    what: "observe",
                    detail,
                })?;
        let ts_us = beat.and_then(|rows| {
            let rows: Vec<RowMap> = rows.iter().map(row_map).collect();
            parse::heartbeat_ts_us(&rows)
        });
        if let (Some(m), Some(ts_us)) = (state.metrics.as_mut(), ts_us) {
            m.heartbeat = Some(HeartbeatReading { ts_us, read_at_us });
        }
        self.replica_idle = match (self.replica_idle.take(), hint) {
            (_, None) => None,
            _ if !opts.lazy_replica_status || state.replication.is_some() => None,
            (_, Some(h)) if h.sql_threads != 0 => None,
            (Some(mut idle), Some(_)) if quiet => {
                idle.skipped += 1;
                Some(idle)
            }
            // A full read found no replication: skip from here while the counters stay.
            (_, Some(h)) => Some(ReplicaIdle {
                skipped: 0,
                heartbeat_period: h.heartbeat_period,
            }),
        };
        if quiet {
            self.replica_reads_skipped += 1;
        }
        Ok(state)
    }

    /// How many times [`observe_with`](Self::observe_with) left the replica status out
    /// ([`ObserveOptions::lazy_replica_status`]).
    pub fn replica_reads_skipped(&self) -> u64 {
        self.replica_reads_skipped
    }

    /// The replicas registered with this server (`SHOW SLAVE HOSTS`, MySQL 8.0.22+ `SHOW
    /// REPLICAS`), for discovery. Replicas that report no host (`--report-host` unset) are
    /// left out.
    pub async fn replica_hosts(&mut self) -> Result<Vec<InstanceAddr>, ProbeError> {
        let sql = parse::replica_hosts_sql(self.flavor, &self.version);
        let rows = self.query_rows("show replica hosts", sql).await?;
        Ok(rows.iter().filter_map(parse::replica_host).collect())
    }

    /// Free space on the filesystem of the server's datadir, from the `disks` plugin
    /// (`information_schema.DISKS`). `Ok(None)` when the plugin is not installed
    /// (`ER_UNKNOWN_TABLE`), the account may not read it (it needs the `FILE` privilege) or
    /// no row holds the datadir: no data, not an error.
    pub async fn disk_space(&mut self) -> Result<Option<model::DiskSpace>, ProbeError> {
        let read_at_ms = now_us() / 1000;
        match self.query_rows("read disks", parse::DISKS_SQL).await {
            Ok(rows) => Ok(parse::disk_space(&rows, read_at_ms)),
            Err(ProbeError::Server { .. } | ProbeError::Auth { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This connection's id on the server (`CONNECTION_ID()`), for a `KILL` from another
    /// connection.
    pub async fn connection_id(&mut self) -> Result<u64, ProbeError> {
        let id: Option<u64> = self
            .call("connection id", async |c| {
                c.query_first("SELECT CONNECTION_ID()").await
            })
            .await?;
        id.ok_or_else(|| ProbeError::Reply {
            what: "connection id",
            detail: "no row".into(),
        })
    }

    /// Stop the replica's IO thread at once, even when its source is frozen or cut off
    /// without a reset. A bare `STOP SLAVE IO_THREAD` on a silent source returns only after
    /// about 2 s (the server signals the thread, which misses it, and signals again 2 s
    /// later), `Slave_IO_Running` saying `Yes` meanwhile. On MariaDB the `Slave_IO` thread
    /// is killed instead (`KILL CONNECTION`), again every 50 ms while it is still listed
    /// as `Slave_IO` (under CPU load a first kill was seen missed). Killed, it leaves its
    /// read within tens of milliseconds (measured 57-65 ms on a SIGSTOPped and on a
    /// blackholed source) and queues and acknowledges nothing more. Then:
    ///
    /// - gone: `STOP SLAVE IO_THREAD` records the stop, and returns at once;
    /// - still listed, as `Killed`: a semi-sync IO thread that had acknowledged events
    ///   spends `rpl_semi_sync_slave_kill_conn_timeout` trying to reach the silent source
    ///   to kill its dump thread there ("cannot connect to master to kill slave
    ///   io_thread's connection": 5 s by default, measured 5.2 s under a write load), and
    ///   `SHOW SLAVE STATUS` says `Yes` until it exits. This sets that timeout to 1 s
    ///   first (the least that is not "no timeout"; measured 1.1 s), a setting it leaves
    ///   in place, and returns without waiting: [`IoStop::exiting`]. A `STOP SLAVE` then
    ///   waits for the exit.
    ///
    /// On MySQL, a plain `STOP SLAVE IO_THREAD`. The caller bounds the whole with a
    /// timeout. Killing a system thread needs `SUPER` or `CONNECTION ADMIN`.
    pub async fn stop_io_thread_now(&mut self) -> Result<IoStop, ProbeError> {
        let mut out = IoStop::default();
        if self.flavor == Flavor::Mariadb {
            // Unknown on a server without semi-sync: ignored.
            match self
                .exec(
                    "shorten the semi-sync kill",
                    "SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = 1",
                )
                .await
            {
                Ok(()) | Err(ProbeError::Server { code: 1193, .. }) => {}
                Err(e) => return Err(e),
            }
            let mut ids = self
                .thread_ids(
                    "find the IO thread",
                    "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE COMMAND = 'Slave_IO'"
                        .to_string(),
                )
                .await?;
            if ids.is_empty() && self.io_thread_killed().await? {
                // Killed earlier, still on its way out.
                out.exiting = true;
                return Ok(out);
            }
            while !ids.is_empty() {
                for id in &ids {
                    match self
                        .exec("kill the IO thread", &format!("KILL CONNECTION {id}"))
                        .await
                    {
                        Ok(()) => out.kills += 1,
                        // ER_NO_SUCH_THREAD: it had ended meanwhile.
                        Err(ProbeError::Server { code: 1094, .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                // A killed thread is listed with the command `Killed` until it exits.
                let list: Vec<String> = ids.iter().map(u64::to_string).collect();
                let rows = self
                    .query_rows(
                        "is the IO thread gone",
                        &format!(
                            "SELECT ID AS id, COMMAND AS command FROM information_schema.PROCESSLIST WHERE ID IN ({})",
                            list.join(",")
                        ),
                    )
                    .await?;
                let listed: Vec<(u64, String)> = rows
                    .iter()
                    .filter_map(|r| {
                        let id = r.get("id").cloned().flatten()?.parse().ok()?;
                        Some((id, r.get("command").cloned().flatten().unwrap_or_default()))
                    })
                    .collect();
                if !listed.is_empty() && listed.iter().all(|(_, c)| c == "Killed") {
                    out.exiting = true;
                    return Ok(out);
                }
                ids = listed
                    .into_iter()
                    .filter(|(_, c)| c != "Killed")
                    .map(|(id, _)| id)
                    .collect();
            }
        }
        self.exec("stop io thread", "STOP SLAVE IO_THREAD").await?;
        Ok(out)
    }

    /// Whether the replica's IO thread has been killed and is on its way out: no thread
    /// listed as `Slave_IO`, and a replication thread listed as `Killed` (MariaDB lists a
    /// killed thread so until it exits). A killed IO thread queues and acknowledges
    /// nothing more, but `SHOW SLAVE STATUS` still says `Yes` until it exits, which a
    /// semi-sync one on a silent source does only after `rpl_semi_sync_slave_kill_conn_timeout`
    /// ([`Self::stop_io_thread_now`]). `false` on MySQL.
    pub async fn io_thread_killed(&mut self) -> Result<bool, ProbeError> {
        if self.flavor != Flavor::Mariadb {
            return Ok(false);
        }
        let rows = self
            .query_rows(
                "is the IO thread killed",
                "SELECT COALESCE(SUM(COMMAND = 'Slave_IO'), 0) AS io, \
                 COALESCE(SUM(COMMAND = 'Killed'), 0) AS killed \
                 FROM information_schema.PROCESSLIST WHERE USER = 'system user'",
            )
            .await?;
        let n = |k: &str| {
            rows.first()
                .and_then(|r| r.get(k).cloned().flatten())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(n("io") == 0 && n("killed") > 0)
    }

    /// Read only what says whether the server takes writes and whether one can complete
    /// without a replica's ack: `read_only` and the semi-sync source state
    /// ([`parse::write_gate`]). For a server whose full read ([`Self::observe`]) hangs: with
    /// its disk frozen, a storage engine's status counters can wait on the disk, while
    /// these wait on nothing.
    pub async fn write_gate(&mut self) -> Result<parse::WriteGate, ProbeError> {
        static VARIABLES: LazyLock<String> =
            LazyLock::new(|| parse::show_where("VARIABLES", parse::WRITE_GATE_VARIABLES));
        let (vars, status) = self
            .call("write gate", async move |c| {
                let vars: Vec<Row> = c.query(VARIABLES.as_str()).await?;
                let status: Vec<Row> = c.query(parse::WRITE_GATE_STATUS_SQL).await?;
                Ok((vars, status))
            })
            .await?;
        parse::write_gate(&name_values(&vars), &name_values(&status)).map_err(|detail| {
            ProbeError::Reply {
                what: "write gate",
                detail,
            }
        })
    }

    /// The `id` column of a processlist query, as numbers.
    async fn thread_ids(
        &mut self,
        what: &'static str,
        sql: String,
    ) -> Result<Vec<u64>, ProbeError> {
        let rows = self.query_rows(what, &sql).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("id").cloned().flatten())
            .filter_map(|id| id.parse().ok())
            .collect())
    }

    /// Run one or more statements that return no rows.
    pub async fn exec(&mut self, what: &'static str, sql: &str) -> Result<(), ProbeError> {
        let sql = sql.to_string();
        self.call(what, async move |c| c.query_drop(sql).await)
            .await
    }

    /// Run one statement that returns no rows, and return how many rows it affected.
    pub async fn exec_affected(
        &mut self,
        what: &'static str,
        sql: &str,
    ) -> Result<u64, ProbeError> {
        let sql = sql.to_string();
        self.call(what, async move |c| {
            c.query_drop(sql).await?;
            Ok(c.affected_rows())
        })
        .await
    }

    /// Run a query and return its rows as name → text maps.
    pub async fn query_rows(
        &mut self,
        what: &'static str,
        sql: &str,
    ) -> Result<Vec<RowMap>, ProbeError> {
        let sql = sql.to_string();
        let rows: Vec<Row> = self.call(what, async move |c| c.query(sql).await).await?;
        Ok(rows.iter().map(row_map).collect())
    }

    /// Wait up to `wait` for the server to have applied `gtid_pos` (MariaDB
    /// `MASTER_GTID_WAIT`). Returns whether it got there. The query timeout is stretched to
    /// cover the wait.
    pub async fn wait_for_gtid(
        &mut self,
        gtid_pos: &str,
        wait: Duration,
    ) -> Result<bool, ProbeError> {
        let saved = self.opts.query_timeout;
        self.opts.query_timeout = saved + wait;
        let sql = format!(
            "SELECT MASTER_GTID_WAIT('{}', {:.3})",
            sql_escape(gtid_pos),
            wait.as_secs_f64()
        );
        let r: Result<Option<i64>, _> = self
            .call("master_gtid_wait", async move |c| c.query_first(sql).await)
            .await;
        self.opts.query_timeout = saved;
        Ok(r? == Some(0))
    }

    /// Point this server at a source by GTID and start replicating.
    pub async fn change_source(&mut self, to: &ChangeSource<'_>) -> Result<(), ProbeError> {
        let sql = format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{}', \
             MASTER_PASSWORD='{}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY={}, \
             MASTER_HEARTBEAT_PERIOD={:.3}",
            sql_escape(&to.source.host),
            to.source.port,
            sql_escape(&to.creds.user),
            sql_escape(to.creds.password()),
            to.connect_retry_s,
            to.heartbeat.as_secs_f64(),
        ) + &master_ssl(to.creds.tls());
        self.exec("change master", &sql).await
    }

    /// Close the connection politely. Errors are ignored: the server may be gone.
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(self.opts.query_timeout, conn.disconnect()).await;
        }
    }
}

/// What mysql_async says when TLS was asked for and the server does not offer it
/// (`DriverError::NoClientSslFlagFromServer`), as [`ProbeError::Other`] carries it.
const NO_TLS: &str = "Client asked for SSL but server does not have this capability";

/// From rustls's "certificate not valid for name …; certificate is only valid for
/// DnsName(\"db1\")" (or `IpAddress(10.0.0.1)`), the first name the certificate holds.
fn presented_name(message: &str) -> Option<String> {
    let (_, after) = message.split_once("certificate is only valid for ")?;
    if let Some(rest) = after.strip_prefix("DnsName(\"") {
        return rest.split_once('"').map(|(n, _)| n.to_string());
    }
    let rest = after.strip_prefix("IpAddress(")?;
    rest.split_once(')').map(|(n, _)| n.to_string())
}

/// mysql_async's TLS options for `tls` (rustls). `preferred` and `required` check no
/// certificate; `verify_ca` checks the chain; `verify_identity` the name too.
fn ssl_opts(tls: &TlsSettings) -> SslOpts {
    let mut o = SslOpts::default();
    if let Some(ca) = &tls.ca_file {
        o = o.with_root_certs(vec![ca.clone().into()]);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o.with_client_identity(Some(ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    match tls.mode {
        TlsMode::Off | TlsMode::Preferred | TlsMode::Required => o
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true),
        TlsMode::VerifyCa => o,
        TlsMode::VerifyIdentity => o,
    }
}

/// The `CHANGE MASTER` options that make a replica replicate over `tls`, the same mode as
/// dbfleet's own connections: `MASTER_SSL=1`, the CA when it verifies, the name check for
/// `verify_identity`, and the client certificate. The files are read by the replica's
/// server, so they must be at the same paths on its host. Nothing for plain connections
/// (a replica keeps whatever TLS it was given by hand).
fn master_ssl(tls: Option<&TlsSettings>) -> String {
    let Some(tls) = tls else {
        return String::new();
    };
    let path = |p: &std::path::Path| sql_escape(&p.display().to_string());
    let mut out = String::from(", MASTER_SSL=1");
    if tls.mode.verifies() {
        if let Some(ca) = &tls.ca_file {
            out += &format!(", MASTER_SSL_CA='{}'", path(ca));
        }
    }
    out += &format!(
        ", MASTER_SSL_VERIFY_SERVER_CERT={}",
        u8::from(tls.mode == TlsMode::VerifyIdentity)
    );
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        out += &format!(
            ", MASTER_SSL_CERT='{}', MASTER_SSL_KEY='{}'",
            path(cert),
            path(key)
        );
    }
    out
}

/// What [`Session::observe_with`] reads besides the server's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObserveOptions {
    /// Also read the heartbeat row (`SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1`).
    pub heartbeat: bool,
    /// Leave `SHOW SLAVE STATUS` out of the batch while this MariaDB server has no
    /// replication: after a full read found none with `Slaves_running` = 0, as long as
    /// `Slaves_running` stays 0 and `Slave_heartbeat_period` keeps the value it had then
    /// (a first `CHANGE MASTER` sets it). When a batch's counters moved, the replica status
    /// is read at once, in a second round trip; and every [`FULL_REPLICA_READ_EVERY`]th
    /// probe reads it anyway. What can go unseen until then: a source configured without
    /// starting its SQL thread on a server that had one before (the period is kept across
    /// `RESET SLAVE ALL`). The replica status is half of a probe's packets, on the primaries,
    /// where it is empty.
    pub lazy_replica_status: bool,
}

/// With [`ObserveOptions::lazy_replica_status`], a server with no replication still has its
/// replica status read every this many probes.
pub const FULL_REPLICA_READ_EVERY: u32 = 10;

/// What a full read of a server with no replication saw, and the reads skipped since.
#[derive(Debug)]
struct ReplicaIdle {
    skipped: u32,
    heartbeat_period: String,
}

/// MariaDB's status counters that tell whether replication changed without reading it:
/// `Slaves_running` (SQL threads running) and `Slave_heartbeat_period` (0 until a first
/// `CHANGE MASTER` sets it, then kept until restart, even by `RESET SLAVE ALL`). MySQL has
/// neither: `None`, and the replica status is always read.
struct ReplicaHint {
    sql_threads: u64,
    heartbeat_period: String,
}

impl ReplicaHint {
    fn of(status: &Vars) -> Option<Self> {
        Some(Self {
            sql_threads: status.get("slaves_running")?.trim().parse().ok()?,
            heartbeat_period: status.get("slave_heartbeat_period")?.trim().to_string(),
        })
    }
}

pub use model::clock::now_us;

/// Where and how a replica connects to its source.
#[derive(Debug)]
pub struct ChangeSource<'a> {
    /// The source's address.
    pub source: &'a InstanceAddr,
    /// The replication account.
    pub creds: &'a Credentials,
    /// `MASTER_CONNECT_RETRY`, seconds.
    pub connect_retry_s: u32,
    /// `MASTER_HEARTBEAT_PERIOD`; a `CHANGE MASTER` that changes the host resets it, so it is
    /// always given.
    pub heartbeat: Duration,
}

/// Probe one server once: connect, observe, disconnect. Never fails: a failure is recorded
/// in the observation.
pub async fn observe(addr: &InstanceAddr, creds: &Credentials, opts: ProbeOptions) -> Observation {
    observe_with(addr, creds, opts, ObserveOptions::default()).await
}

/// [`observe`], reading what `what` asks for besides the state (e.g. the heartbeat row).
pub async fn observe_with(
    addr: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
    what: ObserveOptions,
) -> Observation {
    let at_unix_ms = model::clock::now_ms();
    let started = Instant::now();
    // Whether the connect and login succeeded: a failure after it is on a fresh connection
    // (`ProbeFailure::fresh_connection`).
    let mut connected = false;
    let result = async {
        let mut session = Session::connect(addr, creds, opts).await?;
        connected = true;
        let state = session.observe_with(what).await;
        session.close().await;
        state
    }
    .await;
    Observation {
        addr: addr.clone(),
        at_unix_ms,
        duration_us: started.elapsed().as_micros() as u64,
        write: None,
        reachability: match result {
            Ok(state) => Reachability::Reachable(Box::new(state)),
            Err(e) => {
                let mut f = e.to_failure();
                f.fresh_connection = connected;
                Reachability::Unreachable(f)
            }
        },
    }
}

async fn within<T, F>(limit: Duration, what: &'static str, fut: F) -> Result<T, ProbeError>
where
    F: Future<Output = mysql_async::Result<T>>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(ProbeError::from),
        Err(_) => Err(ProbeError::timeout(what, limit)),
    }
}

/// Escape a string for a single-quoted SQL literal.
pub fn sql_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

fn row_map(row: &Row) -> RowMap {
    row.columns_ref()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let v = row.as_ref(i).and_then(text);
            (c.name_str().into_owned(), v)
        })
        .collect()
}

/// The columns of `row` named in `keep`, as name → text; the rest are never decoded.
fn row_map_only(row: &Row, keep: &[&str]) -> RowMap {
    row.columns_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let name = c.name_ref();
            let kept = keep.iter().find(|k| k.as_bytes() == name)?;
            Some(((*kept).to_string(), row.as_ref(i).and_then(text)))
        })
        .collect()
}

/// `SHOW VARIABLES`-shaped rows (name, value) as a lowercased map.
fn name_values(rows: &[Row]) -> Vars {
    rows.iter()
        .filter_map(|r| {
            let mut name = r.as_ref(0).and_then(text)?;
            name.make_ascii_lowercase();
            let value = r.as_ref(1).and_then(text).unwrap_or_default();
            Some((name, value))
        })
        .collect()
}
