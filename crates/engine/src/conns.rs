//! The sessions an operation speaks to managed servers over, opened once and reused, and
//! what it does through them (the statements themselves are `probe::commands`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use model::{InstanceAddr, IoThreadState, Observation, Reachability};
use probe::commands::{Command, PointAt};
use probe::{Credentials, ProbeError, ProbeOptions, Session};

/// Sessions to the instances an operation touches, opened on first use and reopened after
/// a network error.
pub(crate) struct Conns {
    creds: Credentials,
    opts: ProbeOptions,
    map: BTreeMap<InstanceAddr, Session>,
    /// With [`Conns::limit_connect`]: the bound of each audit read ([`Conns::positions`]).
    audit_limit: Option<Duration>,
}

impl Conns {
    pub(crate) fn new(creds: Credentials, opts: ProbeOptions) -> Self {
        Self {
            creds,
            opts,
            map: BTreeMap::new(),
            audit_limit: None,
        }
    }

    pub(crate) async fn get(&mut self, addr: &InstanceAddr) -> Result<&mut Session, ProbeError> {
        if self.map.get(addr).is_none_or(|s| s.is_broken()) {
            let s = Session::connect(addr, &self.creds, self.opts).await?;
            self.map.insert(addr.clone(), s);
        }
        self.map
            .get_mut(addr)
            .ok_or_else(|| ProbeError::Other("session vanished".into()))
    }

    /// Observe one instance now, through its session; a failure is an unreachable
    /// observation.
    pub(crate) async fn observe(&mut self, addr: &InstanceAddr) -> Observation {
        let at_unix_ms = crate::now_ms();
        let started = Instant::now();
        let r = match self.get(addr).await {
            Ok(s) => s.observe().await,
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.map.remove(addr);
        }
        Observation {
            addr: addr.clone(),
            at_unix_ms,
            duration_us: started.elapsed().as_micros() as u64,
            write: None,
            reachability: match r {
                Ok(s) => Reachability::Reachable(Box::new(s)),
                Err(e) => Reachability::Unreachable(e.to_failure()),
            },
        }
    }

    /// Observe several instances at once.
    pub(crate) async fn observe_all(&mut self, addrs: &[InstanceAddr]) -> Vec<Observation> {
        // One-shot probes run concurrently; the sessions are for the statements that
        // follow.
        let creds = self.creds.clone();
        let opts = self.opts;
        let futs = addrs.iter().map(|a| {
            let creds = creds.clone();
            async move { probe::observe(a, &creds, opts).await }
        });
        futures_util::future::join_all(futs).await
    }

    /// Run one [`Command`] on `addr`.
    pub(crate) async fn exec(
        &mut self,
        addr: &InstanceAddr,
        command: Command,
    ) -> Result<(), ProbeError> {
        self.get(addr).await?.run(command).await
    }

    /// Connects of this operation take at most `limit` (a failover must not wait on a
    /// server that does not answer for longer than its own short deadline).
    /// Audit reads ([`Conns::positions`]) then take at most `limit` each too.
    pub(crate) fn limit_connect(&mut self, limit: Duration) {
        self.opts.connect_timeout = self.opts.connect_timeout.min(limit);
        self.audit_limit = Some(limit);
    }

    /// [`Conns::exec`] within `limit`, connect included. Past it the call is dropped with
    /// its session and `ProbeError::Timeout` is returned; the statement may still run to
    /// its end on the server (a `STOP SLAVE` does).
    pub(crate) async fn exec_within(
        &mut self,
        addr: &InstanceAddr,
        command: Command,
        limit: Duration,
    ) -> Result<(), ProbeError> {
        match tokio::time::timeout(limit, self.exec(addr, command)).await {
            Ok(r) => r,
            Err(_) => {
                self.map.remove(addr);
                Err(ProbeError::Timeout {
                    what: command.what(),
                    after: limit,
                })
            }
        }
    }

    /// Free space on `addr`'s datadir filesystem, read now (the `disks` plugin), within
    /// `limit`; `Ok(None)` when it cannot be read that way.
    pub(crate) async fn disk_space(
        &mut self,
        addr: &InstanceAddr,
        limit: Duration,
    ) -> Result<Option<model::DiskSpace>, ProbeError> {
        match tokio::time::timeout(limit, async { self.get(addr).await?.disk_space().await }).await
        {
            Ok(r) => r,
            Err(_) => {
                self.map.remove(addr);
                Err(ProbeError::Timeout {
                    what: "read free space",
                    after: limit,
                })
            }
        }
    }

    /// Stop a replica's IO thread at once, even on a frozen or silently cut-off source
    /// ([`Session::stop_io_thread_now`]), within `limit`.
    pub(crate) async fn stop_io_now(
        &mut self,
        addr: &InstanceAddr,
        limit: Duration,
    ) -> Result<probe::IoStop, ProbeError> {
        let r = tokio::time::timeout(limit, async {
            self.get(addr).await?.stop_io_thread_now().await
        })
        .await;
        match r {
            Ok(r) => r,
            Err(_) => {
                self.map.remove(addr);
                Err(ProbeError::Timeout {
                    what: "stop io thread",
                    after: limit,
                })
            }
        }
    }

    /// Lift a replica's `MASTER_DELAY` so that its SQL thread applies at once what it
    /// received, keeping its relay log: `CHANGE MASTER` would otherwise discard the relay
    /// log, and with it what was received but not applied. Naming the SQL thread's relay
    /// log position keeps it (and switches `MASTER_USE_GTID` off until the next `CHANGE
    /// MASTER` sets it again, which repoint and [`Conns::restore_delay`] do). Returns the
    /// delay it had, in seconds.
    pub(crate) async fn lift_delay(&mut self, addr: &InstanceAddr) -> Result<u64, ProbeError> {
        let s = self.get(addr).await?;
        s.stop_replication().await?;
        let relay = s.relay_state().await?;
        s.keep_relay_log(&relay.keep(true)?).await?;
        s.start_sql_thread().await?;
        Ok(relay.sql_delay_s)
    }

    /// Start a replica's SQL thread without deleting its relay log. In GTID mode MariaDB
    /// deletes the relay log at a `START SLAVE SQL_THREAD` that finds the IO thread stopped
    /// too (as it is after a failover's `stop_io`), and with it what the replica received
    /// and had not applied. Naming the SQL thread's own relay log position first keeps it
    /// (and switches `MASTER_USE_GTID` off until the next `CHANGE MASTER` sets it again,
    /// which repoint does). With the IO thread still running, a plain start keeps it.
    pub(crate) async fn start_sql_keeping_relay(
        &mut self,
        addr: &InstanceAddr,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        let relay = s.relay_state().await?;
        if relay.io_stopped {
            s.keep_relay_log(&relay.keep(false)?).await?;
        }
        s.start_sql_thread().await
    }

    /// Put back a delay [`Conns::lift_delay`] lifted, with GTID positioning, and restart
    /// replication from the same source.
    pub(crate) async fn restore_delay(
        &mut self,
        addr: &InstanceAddr,
        delay_s: u64,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        s.stop_replication().await?;
        s.restore_delay(delay_s).await?;
        s.start_replication().await
    }

    /// `@@gtid_current_pos` of each instance that answers, for the audit log.
    pub(crate) async fn positions(&mut self, addrs: &[InstanceAddr]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let audit_limit = self.audit_limit;
        for a in addrs {
            let read = async {
                match self.get(a).await {
                    Ok(s) => match s.gtid_current_pos().await {
                        Ok(pos) => pos,
                        Err(e) => format!("error: {e}"),
                    },
                    Err(e) => format!("unreachable: {e}"),
                }
            };
            let pos = match audit_limit {
                None => Some(read.await),
                Some(limit) => tokio::time::timeout(limit, read).await.ok(),
            };
            let pos = pos.unwrap_or_else(|| {
                self.map.remove(a);
                format!("no answer within {:?}", audit_limit.unwrap_or_default())
            });
            out.insert(a.to_string(), pos);
        }
        out
    }

    /// Make `addr` a primary-to-be: no replication, semi-sync as the spec says, still
    /// read-only.
    pub(crate) async fn prepare_primary(
        &mut self,
        addr: &InstanceAddr,
        semi_sync: bool,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        s.stop_replication().await?;
        s.reset_replication_all().await?;
        // Lossless when semi-sync is wanted: the new primary never acknowledges a commit no
        // replica has (no timeout to fall back on, and it waits with no replica connected).
        s.semi_sync_as_primary(semi_sync).await
    }

    /// Point `addr` at [`PointAt::source`] by GTID and start replicating.
    pub(crate) async fn repoint(
        &mut self,
        addr: &InstanceAddr,
        to: &PointAt<'_>,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        s.point_at(to).await?;
        s.start_replication().await
    }

    /// Point a replica that must not replicate as it is (its SQL thread broke, it has
    /// errant GTIDs) at [`PointAt::source`], by GTID from what it applied
    /// (`gtid_slave_pos`, so `from_current_pos` is off), with replication left stopped: once
    /// a human removed what is wrong on it, `START SLAVE` is all it takes. Its relay log goes
    /// (`CHANGE MASTER` to another source drops it): call it only when the source holds
    /// everything the replica received.
    pub(crate) async fn park(
        &mut self,
        addr: &InstanceAddr,
        to: &PointAt<'_>,
    ) -> Result<(), ProbeError> {
        self.get(addr).await?.point_at(to).await
    }

    /// Lend `addr` the server_id `id` for a rejoin (see `Engine::rejoin`): replication
    /// stopped, `gtid_slave_pos` set from `@@gtid_current_pos` first (which, computed under
    /// another server_id, would no longer count the server's own binlog), then the id.
    pub(crate) async fn lend_server_id(
        &mut self,
        addr: &InstanceAddr,
        id: u32,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        s.stop_replication().await?;
        s.gtid_slave_pos_from_current().await?;
        s.set_server_id(id).await
    }

    /// Stop replication on `addr`, set its `server_id` to `id`, and start it again.
    pub(crate) async fn restart_with_server_id(
        &mut self,
        addr: &InstanceAddr,
        id: u32,
    ) -> Result<(), ProbeError> {
        let s = self.get(addr).await?;
        s.stop_replication().await?;
        s.set_server_id(id).await?;
        s.start_replication().await
    }

    /// Wait until `addr` has applied every one of `gtids` (its `@@gtid_slave_pos` reaches
    /// each one's seq in its domain), for at most `within`.
    pub(crate) async fn wait_applied(
        &mut self,
        addr: &InstanceAddr,
        gtids: &[model::gtid::MariadbGtid],
        within: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("not observed");
        while Instant::now() < deadline {
            let o = self.observe(addr).await;
            if let Some(st) = o.state() {
                if let model::GtidState::Mariadb { slave_pos, .. } = &st.gtid {
                    if gtids
                        .iter()
                        .all(|g| slave_pos.get(g.domain).is_some_and(|p| p.seq >= g.seq))
                    {
                        return Ok(());
                    }
                    last = format!("gtid_slave_pos {slave_pos}");
                }
                if let Some(r) = &st.replication {
                    if !r.sql_running || !r.last_sql_error.is_empty() {
                        return Err(format!("SQL thread stopped: {}", r.last_sql_error));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("not within {within:?}: {last}"))
    }

    /// Kill every client connection but replication threads and this session.
    pub(crate) async fn kill_clients(&mut self, addr: &InstanceAddr) -> Result<usize, ProbeError> {
        crate::fence_guard::kill_clients(self.get(addr).await?).await
    }

    /// Fence a server: clients killed, read-only, clients killed again, then semi-sync off
    /// as a primary.
    ///
    /// Kill first: `SET GLOBAL read_only=ON` waits behind commits that wait for a
    /// semi-sync ack, forever with lossless semi-sync; a killed commit's client gets an
    /// error, so it was never acknowledged. Semi-sync goes off last: switched off while a
    /// commit waits, it would acknowledge that commit with no second copy.
    pub(crate) async fn fence(&mut self, addr: &InstanceAddr) -> Result<usize, ProbeError> {
        let mut killed = self.kill_clients(addr).await?;
        self.exec(addr, Command::ReadOnly).await?;
        killed += self.kill_clients(addr).await?;
        self.exec(addr, Command::SemiSyncPrimaryOff).await?;
        Ok(killed)
    }

    /// Fence a stalled old primary: clients killed, read-only, clients killed again.
    /// Semi-sync stays on: switched off while a commit waits, it would acknowledge that
    /// commit with no second copy (Vitess lost writes that way).
    pub(crate) async fn fence_keep_semi_sync(
        &mut self,
        addr: &InstanceAddr,
    ) -> Result<usize, ProbeError> {
        let mut killed = self.kill_clients(addr).await?;
        self.exec(addr, Command::ReadOnly).await?;
        killed += self.kill_clients(addr).await?;
        Ok(killed)
    }

    /// Wait (up to 5 s each) until every one of `replicas` replicates from `source`; returns
    /// a warning per replica that does not.
    pub(crate) async fn verify_replicating(
        &mut self,
        replicas: &[InstanceAddr],
        source: &InstanceAddr,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        for r in replicas {
            if let Err(e) = self
                .wait_replicating(r, source, Duration::from_secs(5))
                .await
            {
                warnings.push(format!("{r} does not replicate from {source}: {e}"));
            }
        }
        warnings
    }

    /// Wait until `addr` replicates from `source` with both threads running.
    pub(crate) async fn wait_replicating(
        &mut self,
        addr: &InstanceAddr,
        source: &InstanceAddr,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("not observed");
        while Instant::now() < deadline {
            let o = self.observe(addr).await;
            match o.state().and_then(|s| s.replication.clone()) {
                Some(r)
                    if &r.source == source
                        && r.io_thread == IoThreadState::Yes
                        && r.sql_running =>
                {
                    return Ok(())
                }
                Some(r) => {
                    last = format!(
                        "source={} io={:?} sql={} last_io_error={:?} last_sql_error={:?}",
                        r.source, r.io_thread, r.sql_running, r.last_io_error, r.last_sql_error
                    )
                }
                None => {
                    last = match o.failure() {
                        Some(f) => format!("unreachable: {}", f.message),
                        None => "not a replica".into(),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last)
    }
}
