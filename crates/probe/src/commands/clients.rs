//! Client connections: list them, kill them (a fence; a hung heartbeat write).

use crate::error::ProbeError;
use crate::session::Session;

/// A client connection of a server, as `information_schema.PROCESSLIST` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its connection id.
    pub id: u64,
    /// Its `STATE` (empty when none).
    pub state: String,
}

/// The clients [`Session::clients`] lists: every connection but this session's and the
/// server's own threads (replication, event scheduler).
const CLIENTS_SQL: &str = "SELECT ID AS id, COALESCE(STATE, '') AS state \
     FROM information_schema.PROCESSLIST \
     WHERE ID <> CONNECTION_ID() \
     AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', \
     'Slave_SQL', 'Slave_worker') \
     AND USER NOT IN ('system user', 'event_scheduler')";

/// MariaDB's "Unknown thread id".
const UNKNOWN_THREAD: u16 = 1094;

impl Session {
    /// The server's client connections, this session's and the server's own threads left
    /// out.
    pub async fn clients(&mut self) -> Result<Vec<Client>, ProbeError> {
        let rows = self.query_rows("list clients", CLIENTS_SQL).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = r.get("id").cloned().flatten()?.trim().parse().ok()?;
                let state = r.get("state").cloned().flatten().unwrap_or_default();
                Some(Client { id, state })
            })
            .collect())
    }

    /// `KILL CONNECTION id`: `true` when it was killed, `false` when it had ended.
    pub async fn kill_connection(&mut self, id: u64) -> Result<bool, ProbeError> {
        match self
            .exec("kill client", &format!("KILL CONNECTION {id}"))
            .await
        {
            Ok(()) => Ok(true),
            Err(ProbeError::Server {
                code: UNKNOWN_THREAD,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Which of the connections `ids` still exist.
    pub async fn connections_alive(&mut self, ids: &[u64]) -> Result<Vec<u64>, ProbeError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let sql = format!(
            "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE ID IN ({})",
            list.join(",")
        );
        let rows = self.query_rows("list connections", &sql).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("id").cloned().flatten())
            .filter_map(|v| v.trim().parse().ok())
            .collect())
    }
}
