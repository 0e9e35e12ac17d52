//! Replication faults on a sandbox replica, made with SQL as the sandbox's admin account.

use std::time::Duration;

use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use sandbox::Sandbox;

use super::{block_on_fresh, guard_methods, FaultError, FaultHandle, FaultKind};

/// Timeouts of the admin session; `STOP SLAVE` waits for the applier's current event.
const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

/// The schema an errant write re-creates, with the binlog on.
pub const ERRANT_SCHEMA: &str = "drt_errant";

/// What a [`ReplicationFault`] does to a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationSpec {
    /// `STOP SLAVE SQL_THREAD`: the replica receives but applies nothing. Healed by `START
    /// SLAVE SQL_THREAD`.
    StopSqlThread,
    /// One write on the replica with `sql_log_bin=1` (`CREATE OR REPLACE DATABASE
    /// drt_errant`), which makes a GTID the primary never had. It cannot be healed: healing
    /// records that the errant GTID remains.
    ErrantWrite,
}

/// A stopped SQL thread or an errant write on a replica.
#[must_use = "a fault is healed when its guard is dropped"]
#[derive(Debug)]
pub struct ReplicationFault {
    handle: FaultHandle,
    member: String,
    errant_gtid: Option<String>,
}

impl ReplicationFault {
    /// Inject `spec` on `member` of `sb`, which must be a replica (it has a source). A
    /// stopped SQL thread is refused: there would be nothing to heal.
    pub async fn inject(
        sb: &Sandbox,
        member: &str,
        spec: ReplicationSpec,
    ) -> Result<Self, FaultError> {
        let sandbox_err = |error| FaultError::Sandbox {
            member: member.to_string(),
            error,
        };
        let addr = sb.member(member).map_err(sandbox_err)?.addr();
        let creds = sb.credentials().map_err(sandbox_err)?.admin.credentials();
        let mut s = Session::connect(&addr, &creds, ADMIN)
            .await
            .map_err(FaultError::sql("connect", &addr))?;
        let result = Self::inject_on(&mut s, member, &addr, &creds, spec).await;
        s.close().await;
        result
    }

    async fn inject_on(
        s: &mut Session,
        member: &str,
        addr: &InstanceAddr,
        creds: &Credentials,
        spec: ReplicationSpec,
    ) -> Result<Self, FaultError> {
        let state = s
            .observe()
            .await
            .map_err(FaultError::sql("observe", addr))?;
        let Some(repl) = state.replication else {
            return Err(FaultError::Precondition(format!(
                "{member} ({addr}) replicates from no source: replication faults need a replica"
            )));
        };
        match spec {
            ReplicationSpec::StopSqlThread => {
                if !repl.sql_running {
                    return Err(FaultError::Precondition(format!(
                        "the SQL thread of {member} ({addr}) is not running: nothing to stop"
                    )));
                }
                let (heal_addr, heal_creds) = (addr.clone(), creds.clone());
                let handle = FaultHandle::register(
                    FaultKind::StopSqlThread,
                    format!("stop the SQL thread of {member}"),
                    Box::new(move || {
                        block_on_fresh(start_sql_thread(&heal_addr, &heal_creds))??;
                        Ok(None)
                    }),
                );
                let fault = Self {
                    handle,
                    member: member.to_string(),
                    errant_gtid: None,
                };
                // On an error, dropping `fault` starts the thread again.
                s.exec("stop slave sql_thread", "STOP SLAVE SQL_THREAD")
                    .await
                    .map_err(FaultError::sql("stop slave sql_thread", addr))?;
                fault.handle.mark_injected();
                Ok(fault)
            }
            ReplicationSpec::ErrantWrite => {
                let at = super::now_ms();
                s.exec(
                    "errant write",
                    &format!(
                        "SET SESSION sql_log_bin=1; CREATE OR REPLACE DATABASE {ERRANT_SCHEMA}"
                    ),
                )
                .await
                .map_err(FaultError::sql("errant write", addr))?;
                let gtid = s
                    .query_rows("last gtid", "SELECT @@last_gtid")
                    .await
                    .map_err(FaultError::sql("last gtid", addr))?
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_values().next().flatten())
                    .filter(|g| !g.is_empty());
                let shown = gtid.clone().unwrap_or_else(|| "unknown".into());
                let (name, note_gtid) = (member.to_string(), shown.clone());
                let handle = FaultHandle::register(
                    FaultKind::ErrantWrite,
                    format!("errant write on {member} (GTID {shown})"),
                    Box::new(move || {
                        Ok(Some(format!(
                            "errant GTID {note_gtid} remains on {name}: it cannot be healed"
                        )))
                    }),
                );
                handle.set_injected_ms(at);
                Ok(Self {
                    handle,
                    member: member.to_string(),
                    errant_gtid: gtid,
                })
            }
        }
    }

    /// The replica.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// The GTID of an errant write, as the replica reported it (`@@last_gtid`).
    pub fn errant_gtid(&self) -> Option<&str> {
        self.errant_gtid.as_deref()
    }
}

guard_methods!(ReplicationFault);

async fn start_sql_thread(addr: &InstanceAddr, creds: &Credentials) -> Result<(), FaultError> {
    let mut s = Session::connect(addr, creds, ADMIN)
        .await
        .map_err(FaultError::sql("connect", addr))?;
    let r = s
        .exec("start slave sql_thread", "START SLAVE SQL_THREAD")
        .await
        .map_err(FaultError::sql("start slave sql_thread", addr));
    s.close().await;
    r
}
