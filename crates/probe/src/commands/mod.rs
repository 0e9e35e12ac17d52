//! Every statement dbfleet's operations and monitor send to a managed server (MariaDB), as
//! methods of [`Session`], with an option struct where a call has several choices
//! ([`PointAt`], [`RelayLogAt`]) instead of positional flags. The fixed statements are
//! also a [`Command`], for a caller that runs them through its own sessions and deadlines
//! (the engine's `Conns::exec_within`).
//!
//! - [`replication`]: stop, start, reset and repoint a replica, semi-sync by role.
//! - [`clients`]: list and kill client connections (a fence, a hung heartbeat write).
//! - [`relay`]: read a stopped replica's relay log and apply it by its SQL thread alone
//!   (the engine's relay-log salvage).
//! - [`heartbeat`]: the heartbeat row the monitor writes on each primary.
//! - [`liveness`]: the monitor's liveness connection.
//!
//! No other crate writes SQL to a managed server (`crates/probe/tests/tidy.rs` checks).

pub mod clients;
pub mod heartbeat;
pub mod liveness;
pub mod relay;
pub mod replication;

pub use clients::Client;
pub use replication::{
    keep_relay_log_sql, semi_sync_as_primary_sql, semi_sync_as_replica_sql, PointAt, RelayLogAt,
    RelayState,
};

use crate::error::ProbeError;
use crate::session::Session;

/// A fixed statement, named for what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `STOP SLAVE`.
    StopReplication,
    /// `START SLAVE`.
    StartReplication,
    /// `START SLAVE SQL_THREAD`.
    StartSqlThread,
    /// `RESET SLAVE ALL`: no replication left configured.
    ResetReplicationAll,
    /// `SET GLOBAL read_only=ON`.
    ReadOnly,
    /// `SET GLOBAL read_only=OFF`: writes open.
    Writable,
    /// Semi-sync off as a primary.
    SemiSyncPrimaryOff,
    /// Semi-sync on as a primary (back on after a switchover that gave up).
    SemiSyncPrimaryOn,
    /// A promoted replica's semi-sync: off as a replica; as a primary on when
    /// `semi_sync`, off otherwise, its timeout left as configured (unlike
    /// [`semi_sync_as_primary_sql`], which makes it lossless).
    PromotedSemiSync {
        /// The cluster's `semi_sync`.
        semi_sync: bool,
    },
    /// `SET GLOBAL gtid_slave_pos=@@gtid_current_pos`.
    GtidSlavePosFromCurrent,
}

impl Command {
    /// What the statement does, for errors and timeouts.
    pub fn what(self) -> &'static str {
        match self {
            Command::StopReplication => "stop slave",
            Command::StartReplication => "start slave",
            Command::StartSqlThread => "start sql thread",
            Command::ResetReplicationAll => "reset slave all",
            Command::ReadOnly => "read only",
            Command::Writable => "open writes",
            Command::SemiSyncPrimaryOff => "semi-sync off as primary",
            Command::SemiSyncPrimaryOn => "semi-sync on as primary",
            Command::PromotedSemiSync { .. } => "semi-sync as primary",
            Command::GtidSlavePosFromCurrent => "gtid_slave_pos from current position",
        }
    }

    /// The statement.
    pub fn sql(self) -> &'static str {
        match self {
            Command::StopReplication => "STOP SLAVE",
            Command::StartReplication => "START SLAVE",
            Command::StartSqlThread => "START SLAVE SQL_THREAD",
            Command::ResetReplicationAll => "RESET SLAVE ALL",
            Command::ReadOnly => "SET GLOBAL read_only=ON",
            Command::Writable => "SET GLOBAL read_only=OFF",
            Command::SemiSyncPrimaryOff => "SET GLOBAL rpl_semi_sync_master_enabled=OFF",
            Command::SemiSyncPrimaryOn => "SET GLOBAL rpl_semi_sync_master_enabled=ON",
            Command::PromotedSemiSync { semi_sync: true } => {
                "SET GLOBAL rpl_semi_sync_slave_enabled=OFF, rpl_semi_sync_master_enabled=ON"
            }
            Command::PromotedSemiSync { semi_sync: false } => {
                "SET GLOBAL rpl_semi_sync_slave_enabled=OFF, rpl_semi_sync_master_enabled=OFF"
            }
            Command::GtidSlavePosFromCurrent => "SET GLOBAL gtid_slave_pos=@@gtid_current_pos",
        }
    }
}

impl Session {
    /// Run one [`Command`].
    pub async fn run(&mut self, c: Command) -> Result<(), ProbeError> {
        self.exec(c.what(), c.sql()).await
    }

    /// `@@read_only`: whether the server refuses writes.
    pub async fn is_read_only(&mut self) -> Result<bool, ProbeError> {
        let rows = self
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promoted_replica_keeps_its_semi_sync_timeout() {
        for semi_sync in [true, false] {
            let sql = Command::PromotedSemiSync { semi_sync }.sql();
            assert!(sql.starts_with("SET GLOBAL rpl_semi_sync_slave_enabled=OFF"));
            assert!(!sql.contains("timeout"), "{sql}");
            assert_eq!(
                sql.ends_with("rpl_semi_sync_master_enabled=ON"),
                semi_sync,
                "{sql}"
            );
        }
    }
}
