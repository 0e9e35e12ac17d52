//! Heartbeat lag, as pt-heartbeat measures it: the daemon stamps a row on each cluster's
//! primary every interval, and every probe reads the row back, so a replica's lag is the
//! daemon's clock minus the newest stamp it has applied. It is accurate below a second, true
//! at any depth of a replication chain, and keeps growing while replication is stopped
//! (when `Seconds_Behind_Master` is NULL).
//!
//! The writer is one task per cluster with its own connection, so a write that blocks (a
//! semi-sync primary waiting for an acknowledgement) never delays a probe. It writes only on
//! the primary the last analysis named, while that analysis does not find it dead and its last
//! observation shows it writable with no source, and the write itself is conditional:
//! `REPLACE … SELECT … WHERE @@read_only = 0` writes nothing (0 rows affected) on a
//! read-only server. The admin account ignores `read_only` on MariaDB, and a stamp written on
//! a replica or on a demoted primary would be an errant transaction; the condition is read
//! by the write itself, in one round trip, so no `SET GLOBAL read_only = 1` can fall between
//! a check and the write. A switchover sets `read_only` and then kills client connections,
//! this one included, so no stamp lands after its position is read. The connection is kept
//! while the server is read-only; the schema is created at the first writable moment.
//!
//! Schema, created on the primary when the writer connects (and so replicated):
//!
//! ```sql
//! CREATE DATABASE IF NOT EXISTS dbfleet;
//! CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
//!   ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL);
//! ```
//!
//! The probe reads it with `SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1` in its batch
//! ([`probe::ObserveOptions::heartbeat`]); a missing table is "no heartbeat yet".

use std::sync::atomic::Ordering;
use std::sync::Arc;

use model::InstanceAddr;
use probe::{Credentials, ProbeError, ProbeOptions, Session};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::watch::{ClusterCell, Ctx};

/// The statements that create the heartbeat schema, run once per writer connection.
pub const SCHEMA_SQL: &str = "CREATE DATABASE IF NOT EXISTS dbfleet; \
     CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
     ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL)";

/// The statement that reads the row; the probe appends it to its batch.
pub const READ_SQL: &str = probe::parse::HEARTBEAT_READ_SQL;

/// The write, for a stamp of `ts_us` µs since the Unix epoch on the daemon's clock: a row
/// only when the server is writable (0 rows affected when it is read-only).
pub fn write_sql(ts_us: u64) -> String {
    format!(
        "REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) \
         SELECT 1, {ts_us}, @@server_id FROM DUAL WHERE @@read_only = 0"
    )
}

/// Whether and how the daemon measures heartbeat lag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatOptions {
    /// Write the heartbeat row on each cluster's primary every probe interval, and read it
    /// in every probe.
    pub enabled: bool,
}

/// What one attempt to write did.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The row was stamped.
    Written,
    /// The server is read-only now: nothing was written.
    ReadOnly,
}

/// A connection that stamps the heartbeat row on one server.
pub struct HeartbeatWriter {
    addr: InstanceAddr,
    session: Session,
    schema_ready: bool,
}

impl HeartbeatWriter {
    /// Connect to `addr`. The schema is created by the first write that finds the server
    /// writable.
    pub async fn connect(
        addr: &InstanceAddr,
        creds: &Credentials,
        opts: ProbeOptions,
    ) -> Result<Self, ProbeError> {
        Ok(Self {
            addr: addr.clone(),
            session: Session::connect(addr, creds, opts).await?,
            schema_ready: false,
        })
    }

    /// The server this writer stamps.
    pub fn addr(&self) -> &InstanceAddr {
        &self.addr
    }

    /// Stamp the row with the daemon's clock now, unless the server is read-only.
    pub async fn write(&mut self) -> Result<WriteOutcome, ProbeError> {
        if !self.schema_ready {
            // Creating the schema on a read-only server would be an errant transaction.
            if read_only(&mut self.session).await? {
                return Ok(WriteOutcome::ReadOnly);
            }
            self.session
                .exec("create heartbeat schema", SCHEMA_SQL)
                .await?;
            self.schema_ready = true;
        }
        let sql = write_sql(probe::now_us());
        match self.session.exec_affected("write heartbeat", &sql).await? {
            0 => Ok(WriteOutcome::ReadOnly),
            _ => Ok(WriteOutcome::Written),
        }
    }

    /// Close the connection.
    pub async fn close(self) {
        self.session.close().await;
    }
}

async fn read_only(session: &mut Session) -> Result<bool, ProbeError> {
    let rows = session
        .query_rows("check read_only", "SELECT @@read_only AS ro")
        .await?;
    let value = rows
        .first()
        .and_then(|r| r.get("ro").cloned().flatten())
        .ok_or_else(|| ProbeError::Reply {
            what: "check read_only",
            detail: "no row".into(),
        })?;
    Ok(value.trim() != "0")
}

/// Stamp the heartbeat row on the cluster's primary every probe interval until cancelled.
pub(crate) async fn run(ctx: Arc<Ctx>, cell: Arc<ClusterCell>, cancel: CancellationToken) {
    let mut writer: Option<HeartbeatWriter> = None;
    let mut ticker = tokio::time::interval(ctx.opts.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let view = cell.primary.borrow().clone();
        let target = match view.addr {
            Some(addr) if !view.dead && ctx.observed_writable_primary(&addr) => addr,
            _ => {
                if let Some(w) = writer.take() {
                    w.close().await;
                }
                continue;
            }
        };
        if writer.as_ref().is_some_and(|w| w.addr() != &target) {
            if let Some(w) = writer.take() {
                w.close().await;
            }
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = write_once(&mut writer, &target, &cell.watch.credentials, ctx.opts.probe) => r,
        };
        match result {
            Ok(WriteOutcome::Written) => {
                ctx.stats.heartbeat_writes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(WriteOutcome::ReadOnly) => {
                debug!(cluster = %cell.name, instance = %target, "heartbeat not written: read-only");
            }
            Err(e) => {
                ctx.stats
                    .heartbeat_write_errors
                    .fetch_add(1, Ordering::Relaxed);
                debug!(cluster = %cell.name, instance = %target, error = %e, "heartbeat write failed");
                writer = None;
            }
        }
    }
    if let Some(w) = writer {
        w.close().await;
    }
}

async fn write_once(
    writer: &mut Option<HeartbeatWriter>,
    target: &InstanceAddr,
    creds: &Credentials,
    opts: ProbeOptions,
) -> Result<WriteOutcome, ProbeError> {
    if writer.is_none() {
        *writer = Some(HeartbeatWriter::connect(target, creds, opts).await?);
    }
    match writer.as_mut() {
        Some(w) => w.write().await,
        None => Err(ProbeError::Other("no heartbeat connection".into())),
    }
}
