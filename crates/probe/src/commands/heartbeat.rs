//! The heartbeat row the monitor writes on each cluster's primary (`monitor::heartbeat`);
//! the probe reads it back ([`crate::parse::HEARTBEAT_READ_SQL`]).

use crate::error::ProbeError;
use crate::session::Session;

/// The statements that create the heartbeat schema.
const SCHEMA_SQL: &str = "CREATE DATABASE IF NOT EXISTS dbfleet; \
     CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
     ts_us BIGINT UNSIGNED NOT NULL, server_id INT UNSIGNED NOT NULL)";

/// The write, for a stamp of `ts_us` µs since the Unix epoch: a row only when the server
/// is writable (0 rows affected when it is read-only).
pub fn write_heartbeat_sql(ts_us: u64) -> String {
    format!(
        "REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) \
         SELECT 1, {ts_us}, @@server_id FROM DUAL WHERE @@read_only = 0"
    )
}

impl Session {
    /// Create the heartbeat schema when it is missing. Only on a writable server: on a
    /// read-only one it would be an errant transaction.
    pub async fn create_heartbeat_schema(&mut self) -> Result<(), ProbeError> {
        self.exec("create heartbeat schema", SCHEMA_SQL).await
    }

    /// Stamp the heartbeat row with `ts_us` ([`write_heartbeat_sql`]); the rows affected
    /// (0 when the server is read-only).
    pub async fn write_heartbeat(&mut self, ts_us: u64) -> Result<u64, ProbeError> {
        self.exec_affected("write heartbeat", &write_heartbeat_sql(ts_us))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_write_stamps_only_a_writable_server() {
        let sql = write_heartbeat_sql(42);
        assert!(sql.contains("SELECT 1, 42, @@server_id"), "{sql}");
        assert!(sql.ends_with("WHERE @@read_only = 0"), "{sql}");
    }
}
