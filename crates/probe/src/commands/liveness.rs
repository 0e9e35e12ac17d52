//! The monitor's liveness connection (`monitor::sentinel`): one long statement held open,
//! whose end before its time says the server went away.

use std::time::Duration;

use model::Flavor;

use crate::error::ProbeError;
use crate::session::Session;

/// The liveness statement: sleep `sleep` on the server.
fn liveness_sql(sleep: Duration) -> String {
    format!(
        "SELECT /* dbfleet liveness */ SLEEP({:.3})",
        sleep.as_secs_f64()
    )
}

impl Session {
    /// Lift this session's statement time limit: a server-wide limit would end the
    /// liveness sleep early.
    pub async fn no_statement_time_limit(&mut self) -> Result<(), ProbeError> {
        let sql = match self.flavor() {
            Flavor::Mariadb => "SET SESSION max_statement_time = 0",
            Flavor::Mysql => "SET SESSION max_execution_time = 0",
        };
        self.exec("liveness setup", sql).await
    }

    /// The liveness statement: sleep `sleep` on the server, then return.
    pub async fn liveness(&mut self, sleep: Duration) -> Result<(), ProbeError> {
        self.query_rows("liveness", &liveness_sql(sleep))
            .await
            .map(drop)
    }
}
