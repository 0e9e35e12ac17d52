//! Replication: stop, start, reset and repoint a replica, keep its relay log, set semi-sync
//! by role, lend it a server_id.

use model::InstanceAddr;

use super::Command;
use crate::error::ProbeError;
use crate::session::{sql_escape, ChangeSource, Credentials, Session};

/// Where and how [`Session::point_at`] points a replica.
#[derive(Clone, Copy, Debug)]
pub struct PointAt<'a> {
    /// The new source.
    pub source: &'a InstanceAddr,
    /// The replication account.
    pub creds: &'a Credentials,
    /// Semi-sync on as a replica (the cluster's `semi_sync`); off otherwise. Semi-sync as a
    /// primary is switched off either way.
    pub semi_sync: bool,
    /// Set `gtid_slave_pos` to `@@gtid_current_pos` first, for a server that was a primary:
    /// its own binlog position when it wrote last, else the position it replicated to
    /// (which is also right after a `RESET MASTER` that removed errant transactions by
    /// hand). Otherwise it replicates from what it applied (`gtid_slave_pos`).
    pub from_current_pos: bool,
    /// `MASTER_DELAY` to set, in seconds (a delay a failover lifted goes back on).
    pub delay_s: Option<u64>,
}

/// The SQL thread's relay log position, for a `CHANGE MASTER` that keeps the relay log
/// ([`Session::keep_relay_log`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayLogAt {
    /// `Relay_Log_File`.
    pub file: String,
    /// `Relay_Log_Pos`.
    pub pos: u64,
    /// Also `MASTER_DELAY=0`: the SQL thread applies at once what was received.
    pub lift_delay: bool,
}

/// What `SHOW SLAVE STATUS` says of a replica's relay log ([`Session::relay_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayState {
    /// `SQL_Delay`, seconds (0 when absent).
    pub sql_delay_s: u64,
    /// `Slave_IO_Running` is `No`.
    pub io_stopped: bool,
    /// `Relay_Log_File`.
    pub relay_log_file: String,
    /// `Relay_Log_Pos`, when it reads as a number.
    pub relay_log_pos: Option<u64>,
}

impl RelayState {
    /// The SQL thread's relay log position, to keep it: an error when the reply had none.
    pub fn keep(&self, lift_delay: bool) -> Result<RelayLogAt, ProbeError> {
        let pos = self.relay_log_pos.ok_or_else(|| ProbeError::Reply {
            what: "replica status",
            detail: "no Relay_Log_Pos".into(),
        })?;
        Ok(RelayLogAt {
            file: self.relay_log_file.clone(),
            pos,
            lift_delay,
        })
    }
}

/// The statement [`Session::keep_relay_log`] sends.
pub fn keep_relay_log_sql(at: &RelayLogAt) -> String {
    format!(
        "CHANGE MASTER TO {}RELAY_LOG_FILE='{}', RELAY_LOG_POS={}",
        if at.lift_delay {
            "MASTER_DELAY=0, "
        } else {
            ""
        },
        sql_escape(&at.file),
        at.pos
    )
}

/// The statement that sets semi-sync for a server about to be a primary: lossless when
/// `semi_sync` (no timeout to fall back on, and it waits with no replica connected), off
/// otherwise; semi-sync as a replica off either way.
pub fn semi_sync_as_primary_sql(semi_sync: bool) -> String {
    if semi_sync {
        format!(
            "SET GLOBAL rpl_semi_sync_slave_enabled=OFF, \
             rpl_semi_sync_master_timeout={}, rpl_semi_sync_master_wait_no_slave=ON, \
             rpl_semi_sync_master_enabled=ON",
            model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS
        )
    } else {
        "SET GLOBAL rpl_semi_sync_slave_enabled=OFF, rpl_semi_sync_master_enabled=OFF".into()
    }
}

/// The statement that sets semi-sync for a replica: on as a replica when `semi_sync`, off
/// as a primary either way.
pub fn semi_sync_as_replica_sql(semi_sync: bool) -> &'static str {
    if semi_sync {
        "SET GLOBAL rpl_semi_sync_master_enabled=OFF, rpl_semi_sync_slave_enabled=ON"
    } else {
        "SET GLOBAL rpl_semi_sync_master_enabled=OFF, rpl_semi_sync_slave_enabled=OFF"
    }
}

impl Session {
    /// `STOP SLAVE`.
    pub async fn stop_replication(&mut self) -> Result<(), ProbeError> {
        self.run(Command::StopReplication).await
    }

    /// `START SLAVE`.
    pub async fn start_replication(&mut self) -> Result<(), ProbeError> {
        self.run(Command::StartReplication).await
    }

    /// `START SLAVE SQL_THREAD`.
    pub async fn start_sql_thread(&mut self) -> Result<(), ProbeError> {
        self.run(Command::StartSqlThread).await
    }

    /// `RESET SLAVE ALL`: no replication left configured.
    pub async fn reset_replication_all(&mut self) -> Result<(), ProbeError> {
        self.run(Command::ResetReplicationAll).await
    }

    /// Semi-sync for a primary-to-be ([`semi_sync_as_primary_sql`]).
    pub async fn semi_sync_as_primary(&mut self, semi_sync: bool) -> Result<(), ProbeError> {
        self.exec("semi-sync as primary", &semi_sync_as_primary_sql(semi_sync))
            .await
    }

    /// Semi-sync for a replica ([`semi_sync_as_replica_sql`]).
    pub async fn semi_sync_as_replica(&mut self, semi_sync: bool) -> Result<(), ProbeError> {
        self.exec("semi-sync as replica", semi_sync_as_replica_sql(semi_sync))
            .await
    }

    /// `SET GLOBAL gtid_slave_pos=@@gtid_current_pos`.
    pub async fn gtid_slave_pos_from_current(&mut self) -> Result<(), ProbeError> {
        self.run(Command::GtidSlavePosFromCurrent).await
    }

    /// `SET GLOBAL server_id=id`.
    pub async fn set_server_id(&mut self, id: u32) -> Result<(), ProbeError> {
        self.exec("set server_id", &format!("SET GLOBAL server_id={id}"))
            .await
    }

    /// `@@gtid_current_pos`, as text (empty when the reply has none).
    pub async fn gtid_current_pos(&mut self) -> Result<String, ProbeError> {
        let rows = self
            .query_rows("gtid position", "SELECT @@gtid_current_pos AS pos")
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("pos").cloned().flatten())
            .unwrap_or_default())
    }

    /// The replica's relay log as `SHOW SLAVE STATUS` shows it; an error when the server is
    /// not a replica.
    pub async fn relay_state(&mut self) -> Result<RelayState, ProbeError> {
        let row = self.replica_status_row().await?;
        let row = row.as_ref().ok_or_else(|| ProbeError::Reply {
            what: "replica status",
            detail: "not a replica".into(),
        })?;
        let field = |k: &str| row.get(k).cloned().flatten().unwrap_or_default();
        Ok(RelayState {
            sql_delay_s: field("SQL_Delay").trim().parse().unwrap_or(0),
            io_stopped: field("Slave_IO_Running") == "No",
            relay_log_file: field("Relay_Log_File"),
            relay_log_pos: field("Relay_Log_Pos").trim().parse().ok(),
        })
    }

    /// A `CHANGE MASTER` that names the SQL thread's relay log position, so that the relay
    /// log is kept (and `MASTER_USE_GTID` is off until the next `CHANGE MASTER` sets it
    /// again); with [`RelayLogAt::lift_delay`], `MASTER_DELAY=0` too.
    pub async fn keep_relay_log(&mut self, at: &RelayLogAt) -> Result<(), ProbeError> {
        let what = if at.lift_delay {
            "lift delay"
        } else {
            "keep relay log"
        };
        self.exec(what, &keep_relay_log_sql(at)).await
    }

    /// `MASTER_DELAY` back on, by GTID from what was applied.
    pub async fn restore_delay(&mut self, delay_s: u64) -> Result<(), ProbeError> {
        self.exec(
            "restore delay",
            &format!("CHANGE MASTER TO MASTER_USE_GTID=slave_pos, MASTER_DELAY={delay_s}"),
        )
        .await
    }

    /// Stop replication and point this server at [`PointAt::source`] by GTID, read-only,
    /// without starting it.
    pub async fn point_at(&mut self, to: &PointAt<'_>) -> Result<(), ProbeError> {
        self.stop_replication().await?;
        self.semi_sync_as_replica(to.semi_sync).await?;
        self.run(Command::ReadOnly).await?;
        if to.from_current_pos {
            self.gtid_slave_pos_from_current().await?;
        }
        self.change_source(&ChangeSource {
            source: to.source,
            creds: to.creds,
            connect_retry_s: 1,
            heartbeat: crate::HEARTBEAT_PERIOD,
        })
        .await?;
        if let Some(d) = to.delay_s {
            self.exec(
                "restore delay",
                &format!("CHANGE MASTER TO MASTER_DELAY={d}"),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeping_the_relay_log_names_its_position_and_lifts_the_delay_when_asked() {
        let at = RelayLogAt {
            file: "relay-bin.000002".into(),
            pos: 1234,
            lift_delay: false,
        };
        assert_eq!(
            keep_relay_log_sql(&at),
            "CHANGE MASTER TO RELAY_LOG_FILE='relay-bin.000002', RELAY_LOG_POS=1234"
        );
        let lift = RelayLogAt {
            lift_delay: true,
            ..at
        };
        assert_eq!(
            keep_relay_log_sql(&lift),
            "CHANGE MASTER TO MASTER_DELAY=0, RELAY_LOG_FILE='relay-bin.000002', RELAY_LOG_POS=1234"
        );
        let odd = RelayLogAt {
            file: "it's".into(),
            pos: 4,
            lift_delay: false,
        };
        assert!(keep_relay_log_sql(&odd).contains("RELAY_LOG_FILE='it\\'s'"));
    }

    #[test]
    fn a_relay_state_without_a_position_cannot_be_kept() {
        let st = RelayState {
            sql_delay_s: 0,
            io_stopped: true,
            relay_log_file: "relay-bin.000001".into(),
            relay_log_pos: None,
        };
        let e = st.keep(false).unwrap_err();
        assert!(e.to_string().contains("no Relay_Log_Pos"), "{e}");
        let st = RelayState {
            relay_log_pos: Some(4),
            ..st
        };
        assert_eq!(st.keep(true).unwrap().pos, 4);
    }

    #[test]
    fn semi_sync_statements_follow_the_role() {
        assert!(semi_sync_as_primary_sql(true).contains("rpl_semi_sync_master_enabled=ON"));
        assert!(semi_sync_as_primary_sql(true).contains(&format!(
            "rpl_semi_sync_master_timeout={}",
            model::SEMI_SYNC_LOSSLESS_TIMEOUT_MS
        )));
        assert!(semi_sync_as_primary_sql(false).contains("rpl_semi_sync_master_enabled=OFF"));
        assert!(semi_sync_as_replica_sql(true).ends_with("rpl_semi_sync_slave_enabled=ON"));
        assert!(semi_sync_as_replica_sql(false).ends_with("rpl_semi_sync_slave_enabled=OFF"));
    }
}
