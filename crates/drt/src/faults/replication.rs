//! Replication faults on a sandbox replica, made with SQL as the sandbox's admin account:
//! a stopped SQL thread, an errant write, a `MASTER_DELAY`, and a SQL thread broken by an
//! errant write that replication collides with.

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
/// The schema the errant write of [`ReplicationSpec::BreakSql`] re-creates.
pub const BREAK_SCHEMA: &str = "drt_break";
/// How long [`ReplicationSpec::BreakSql`] waits for a replicated write to break the SQL
/// thread before it reports that none came.
const BREAK_WAIT: Duration = Duration::from_secs(3);

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
    /// `CHANGE MASTER TO MASTER_DELAY = delay` (whole seconds): the replica receives at once
    /// and applies late. Healed by a delay of 0.
    Delay(Duration),
    /// One write on the replica with `sql_log_bin=1` (`CREATE OR REPLACE DATABASE
    /// drt_break`), whose GTID takes the sequence number the source's next transaction
    /// will have: under `gtid_strict_mode` that transaction stops the SQL thread with error
    /// 1950 (out-of-order sequence number). Injection waits (up to 3 s) for that to happen.
    /// Healed as a DBA would, on a sandbox only and only while the member is still a
    /// read-only replica: stop replication, drop the schema unlogged, `RESET MASTER` (which
    /// removes the errant GTID; the applied position, `gtid_slave_pos`, is kept) and start
    /// replication again.
    BreakSql,
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
            ReplicationSpec::Delay(delay) => {
                let secs = delay.as_secs();
                let before = repl.sql_delay_s;
                let (heal_addr, heal_creds) = (addr.clone(), creds.clone());
                let handle = FaultHandle::register(
                    FaultKind::Delay,
                    format!("MASTER_DELAY={secs} on {member}"),
                    Box::new(move || {
                        block_on_fresh(set_delay(&heal_addr, &heal_creds, 0))??;
                        Ok(Some("MASTER_DELAY=0 again".into()))
                    }),
                );
                let fault = Self {
                    handle,
                    member: member.to_string(),
                    errant_gtid: None,
                };
                if before != 0 {
                    tracing::info!(member, before, "replica had a delay already");
                }
                // On an error, dropping `fault` sets the delay back to 0.
                set_delay(addr, creds, secs).await?;
                fault.handle.mark_injected();
                Ok(fault)
            }
            ReplicationSpec::BreakSql => {
                if !repl.sql_running {
                    return Err(FaultError::Precondition(format!(
                        "the SQL thread of {member} ({addr}) is not running: nothing to break"
                    )));
                }
                let at = super::now_ms();
                let gtid = errant_write(s, addr, BREAK_SCHEMA).await?;
                let shown = gtid.clone().unwrap_or_else(|| "unknown".into());
                let (heal_addr, heal_creds) = (addr.clone(), creds.clone());
                let handle = FaultHandle::register(
                    FaultKind::BreakSql,
                    format!("break the SQL thread of {member} (errant GTID {shown})"),
                    Box::new(move || {
                        Ok(Some(block_on_fresh(repair_broken(
                            &heal_addr,
                            &heal_creds,
                        ))??))
                    }),
                );
                handle.set_injected_ms(at);
                let fault = Self {
                    handle,
                    member: member.to_string(),
                    errant_gtid: gtid,
                };
                // The next replicated write collides with the errant GTID; wait for it.
                let deadline = std::time::Instant::now() + BREAK_WAIT;
                loop {
                    let st = s
                        .observe()
                        .await
                        .map_err(FaultError::sql("observe", addr))?;
                    let broken = st
                        .replication
                        .as_ref()
                        .is_some_and(|r| !r.sql_running && r.last_sql_errno != 0);
                    if broken {
                        let errno = st.replication.map(|r| r.last_sql_errno).unwrap_or(0);
                        tracing::info!(member, errno, "replica SQL thread broken");
                        break;
                    }
                    if std::time::Instant::now() >= deadline {
                        tracing::warn!(
                            member,
                            "no replicated write broke the SQL thread within 3s"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(fault)
            }
            ReplicationSpec::ErrantWrite => {
                let at = super::now_ms();
                let gtid = errant_write(s, addr, ERRANT_SCHEMA).await?;
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

/// One binlogged write on the session's server: `CREATE OR REPLACE DATABASE schema`. Its
/// GTID (`@@last_gtid`), when the server tells it.
async fn errant_write(
    s: &mut Session,
    addr: &InstanceAddr,
    schema: &str,
) -> Result<Option<String>, FaultError> {
    s.exec(
        "errant write",
        &format!("SET SESSION sql_log_bin=1; CREATE OR REPLACE DATABASE {schema}"),
    )
    .await
    .map_err(FaultError::sql("errant write", addr))?;
    Ok(s.query_rows("last gtid", "SELECT @@last_gtid")
        .await
        .map_err(FaultError::sql("last gtid", addr))?
        .into_iter()
        .next()
        .and_then(|r| r.into_values().next().flatten())
        .filter(|g| !g.is_empty()))
}

/// `MASTER_DELAY = secs`. The IO thread keeps running when the server allows changing the
/// delay with only the SQL thread stopped; else replication is stopped and started whole.
async fn set_delay(addr: &InstanceAddr, creds: &Credentials, secs: u64) -> Result<(), FaultError> {
    let mut s = Session::connect(addr, creds, ADMIN)
        .await
        .map_err(FaultError::sql("connect", addr))?;
    let sql = format!(
        "STOP SLAVE SQL_THREAD; CHANGE MASTER TO MASTER_DELAY={secs}; START SLAVE SQL_THREAD"
    );
    let mut r = s
        .exec("change master_delay", &sql)
        .await
        .map_err(FaultError::sql("change master_delay", addr));
    if r.is_err() {
        let sql = format!("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY={secs}; START SLAVE");
        r = s
            .exec("change master_delay", &sql)
            .await
            .map_err(FaultError::sql("change master_delay", addr));
    }
    s.close().await;
    r
}

/// Undo [`ReplicationSpec::BreakSql`] on a member that is still a read-only replica; a
/// member that is not (it was promoted, or fenced out of replication) is left as it is,
/// with a note that says so.
async fn repair_broken(addr: &InstanceAddr, creds: &Credentials) -> Result<String, FaultError> {
    let mut s = Session::connect(addr, creds, ADMIN)
        .await
        .map_err(FaultError::sql("connect", addr))?;
    let r = async {
        let st = s.observe().await.map_err(FaultError::sql("observe", addr))?;
        if !st.read_only || st.replication.is_none() {
            return Ok(format!(
                "{addr} is no longer a read-only replica: its errant transaction                  ({BREAK_SCHEMA}) is left for a human"
            ));
        }
        let sql = format!(
            "STOP SLAVE; SET SESSION sql_log_bin=0; DROP DATABASE IF EXISTS {BREAK_SCHEMA};              SET SESSION sql_log_bin=1; RESET MASTER; START SLAVE"
        );
        s.exec("repair broken replica", &sql)
            .await
            .map_err(FaultError::sql("repair broken replica", addr))?;
        Ok(format!(
            "errant transaction removed from {addr} (RESET MASTER), replication started again"
        ))
    }
    .await;
    s.close().await;
    r
}

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
