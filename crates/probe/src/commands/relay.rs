//! A stopped replica's relay log: read it, and apply it by the SQL thread alone (the
//! engine's relay-log salvage, `engine/src/salvage.rs`).

use crate::error::ProbeError;
use crate::parse::RowMap;
use crate::session::{sql_escape, Session};

/// The variables a relay-log salvage judges a replica by ([`Session::relay_vars`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayVars {
    /// `@@gtid_slave_pos`.
    pub slave_pos: String,
    /// `@@relay_log_recovery`: the relay log is thrown away at start-up.
    pub relay_log_recovery: bool,
}

/// Which relay log events [`Session::relay_log_events`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayEvents<'a> {
    /// The relay log file.
    pub file: &'a str,
    /// The position to read from.
    pub from: u64,
    /// Events to skip first.
    pub skip: u64,
    /// Events to read at most.
    pub limit: u64,
}

/// The statement [`Session::relay_log_events`] sends.
pub fn relay_log_events_sql(at: &RelayEvents<'_>) -> String {
    format!(
        "SHOW RELAYLOG EVENTS IN '{}' FROM {} LIMIT {}, {}",
        sql_escape(at.file),
        at.from,
        at.skip,
        at.limit
    )
}

impl Session {
    /// The row of `SHOW SLAVE STATUS`; `None` when the server is not a replica.
    pub async fn replica_status_row(&mut self) -> Result<Option<RowMap>, ProbeError> {
        let rows = self
            .query_rows("replica status", "SHOW SLAVE STATUS")
            .await?;
        Ok(rows.into_iter().next())
    }

    /// `@@gtid_slave_pos` and `@@relay_log_recovery`.
    pub async fn relay_vars(&mut self) -> Result<RelayVars, ProbeError> {
        let rows = self
            .query_rows(
                "salvage variables",
                "SELECT @@gtid_slave_pos AS slave_pos, @@relay_log_recovery AS recovery",
            )
            .await?;
        let row = rows.first().ok_or_else(|| ProbeError::Reply {
            what: "salvage variables",
            detail: "no variables".into(),
        })?;
        let field = |k: &str| row.get(k).cloned().flatten().unwrap_or_default();
        Ok(RelayVars {
            slave_pos: field("slave_pos"),
            relay_log_recovery: field("recovery") != "0",
        })
    }

    /// `@@gtid_slave_pos`, as text (empty when the reply has none).
    pub async fn gtid_slave_pos(&mut self) -> Result<String, ProbeError> {
        let rows = self
            .query_rows("gtid_slave_pos", "SELECT @@gtid_slave_pos AS p")
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.get("p").cloned().flatten())
            .unwrap_or_default())
    }

    /// One page of relay log events (`SHOW RELAYLOG EVENTS`).
    pub async fn relay_log_events(
        &mut self,
        at: &RelayEvents<'_>,
    ) -> Result<Vec<RowMap>, ProbeError> {
        self.query_rows("show relaylog events", &relay_log_events_sql(at))
            .await
    }

    /// Stop the SQL thread and put GTID positioning back (`MASTER_USE_GTID=slave_pos`),
    /// which deletes the relay log.
    pub async fn sql_thread_back_to_gtid(&mut self) -> Result<(), ProbeError> {
        self.exec(
            "restore gtid mode",
            "STOP SLAVE SQL_THREAD; CHANGE MASTER TO MASTER_USE_GTID=slave_pos",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_log_page_names_its_file_escaped() {
        let sql = relay_log_events_sql(&RelayEvents {
            file: "it's.000001",
            from: 4,
            skip: 1,
            limit: 500,
        });
        assert_eq!(
            sql,
            "SHOW RELAYLOG EVENTS IN 'it\\'s.000001' FROM 4 LIMIT 1, 500"
        );
    }
}
