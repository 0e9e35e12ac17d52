//! Between DRT runs on a sandbox: make a killed old primary fit to rejoin.
//!
//! Under semi-sync `AFTER_SYNC`, a primary killed mid-commit can hold a transaction it wrote
//! to its binlog but never acknowledged (and never sent). The new primary lacks it, so
//! `rejoin` rightly refuses the old primary for its errant GTID. A DBA then removes the
//! unacknowledged writes, resets the binlog, and sets the replication position to the last of
//! the old primary's own transactions that the new primary holds. This does exactly that, on a
//! sandbox DRTs may break, for the ledger table only (the only data the runs write; the
//! heartbeat row is overwritten by replication).

use std::collections::HashSet;
use std::time::Duration;

use model::{GtidState, InstanceAddr};
use probe::{Credentials, ProbeOptions, Session};

const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(30),
};

/// On `old` (a fenced former primary), delete the rows of `table` (quoted) that `new` lacks,
/// reset its binlog, and set `gtid_slave_pos` to its own GTIDs that `new` holds. Returns how
/// many rows were removed.
pub async fn discard_unacknowledged(
    old: &InstanceAddr,
    new: &InstanceAddr,
    admin: &Credentials,
    table: &str,
) -> Result<usize, String> {
    let n = probe::observe(new, admin, ADMIN).await;
    let o = probe::observe(old, admin, ADMIN).await;
    let (Some(n), Some(o)) = (n.state(), o.state()) else {
        return Err(format!("{new} or {old} is unreachable"));
    };
    if !o.read_only {
        return Err(format!("{old} is writable: it is not a fenced old primary"));
    }
    let GtidState::Mariadb { binlog_state, .. } = &n.gtid else {
        return Err("only MariaDB is supported".into());
    };
    let fork: Vec<String> = binlog_state
        .iter()
        .filter(|g| g.server_id == o.server_id)
        .map(|g| g.to_string())
        .collect();
    let ids = |addr: &InstanceAddr| {
        let addr = addr.clone();
        let admin = admin.clone();
        let sql = format!("SELECT id FROM {table}");
        async move {
            let mut s = Session::connect(&addr, &admin, ADMIN)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            let rows = s.query_rows("ledger ids", &sql).await;
            s.close().await;
            let rows = rows.map_err(|e| format!("{addr}: read the ledger ids: {e}"))?;
            Ok::<HashSet<String>, String>(
                rows.iter()
                    .filter_map(|r| r.get("id").cloned().flatten())
                    .collect(),
            )
        }
    };
    let on_new = ids(new).await?;
    let extra: Vec<String> = ids(old).await?.difference(&on_new).cloned().collect();
    let mut sql = vec!["STOP SLAVE".to_string(), "SET sql_log_bin=0".to_string()];
    for chunk in extra.chunks(1000) {
        sql.push(format!(
            "DELETE FROM {table} WHERE id IN ({})",
            chunk.join(",")
        ));
    }
    sql.push("SET sql_log_bin=1".into());
    sql.push("RESET MASTER".into());
    sql.push(format!("SET GLOBAL gtid_slave_pos='{}'", fork.join(",")));
    let mut s = Session::connect(old, admin, ADMIN)
        .await
        .map_err(|e| format!("connect {old}: {e}"))?;
    for q in &sql {
        if let Err(e) = s.exec("discard unacknowledged writes", q).await {
            s.close().await;
            return Err(format!("{old}: {q}: {e}"));
        }
    }
    s.close().await;
    Ok(extra.len())
}
