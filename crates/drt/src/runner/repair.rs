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

use model::gtid::MariadbGtid;
use model::{GtidState, InstanceAddr};
use probe::{Credentials, ProbeOptions, Session};

const ADMIN: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(30),
};

/// On `old` (a fenced former primary), delete the rows of `table` (quoted) that `new` lacks,
/// reset its binlog keeping the binlog state of everything `new` holds too
/// ([`state_after_discard`]), and set `gtid_slave_pos` to where it replicates from. Returns how
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
    let (
        GtidState::Mariadb { binlog_state, .. },
        GtidState::Mariadb {
            binlog_state: old_state,
            ..
        },
    ) = (&n.gtid, &o.gtid)
    else {
        return Err("only MariaDB is supported".into());
    };
    let fork: Vec<MariadbGtid> = binlog_state
        .iter()
        .filter(|g| g.server_id == o.server_id)
        .collect();
    let (state, slave_pos) =
        state_after_discard(&old_state.iter().collect::<Vec<_>>(), o.server_id, &fork);
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
    // The rest of its binlog state is history the new primary holds too: erasing it (a bare
    // RESET MASTER) made the next run's errant check flag every server still holding an
    // entry this one forgot (seen in the lose-primary-and-best-replica bench, runs 4-10).
    sql.push(format!("SET GLOBAL gtid_binlog_state='{state}'"));
    sql.push(format!("SET GLOBAL gtid_slave_pos='{slave_pos}'"));
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

/// The binlog state and the replication position a discarded old primary (server `own`)
/// gets, from its binlog state `old` and `fork`, the last of its own GTIDs (per domain) that
/// the new primary holds: its own entries are replaced by `fork` (what lies beyond is the
/// discarded, unacknowledged part); the other servers' entries (history it replicated before
/// it was primary, which the new primary holds too) are kept. Per domain the position is
/// the fork, else the highest kept entry; it is listed last in the state, as MariaDB takes
/// a domain's last entry for `gtid_binlog_pos`.
fn state_after_discard(old: &[MariadbGtid], own: u32, fork: &[MariadbGtid]) -> (String, String) {
    let mut kept: Vec<MariadbGtid> = old.iter().filter(|g| g.server_id != own).copied().collect();
    let mut domains: Vec<u32> = kept.iter().chain(fork).map(|g| g.domain).collect();
    domains.sort_unstable();
    domains.dedup();
    let mut pos = Vec::new();
    for d in domains {
        let last = fork
            .iter()
            .find(|g| g.domain == d)
            .or_else(|| kept.iter().filter(|g| g.domain == d).max_by_key(|g| g.seq))
            .copied();
        pos.extend(last);
    }
    kept.retain(|g| !pos.contains(g));
    kept.extend(fork.iter().filter(|g| !pos.contains(g)).copied());
    kept.extend(pos.iter().copied());
    let join = |v: &[MariadbGtid]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    (join(&kept), join(&pos))
}

#[cfg(test)]
mod tests {
    use super::state_after_discard;
    use model::gtid::MariadbGtid;

    fn g(domain: u32, server_id: u32, seq: u64) -> MariadbGtid {
        MariadbGtid {
            domain,
            server_id,
            seq,
        }
    }

    #[test]
    fn the_discarded_part_goes_and_the_replicated_history_stays() {
        // The old primary (server 3) wrote up to 1547; the new primary holds its 1540. It
        // had replicated 0-1-759 and 0-2-900 before it was primary.
        let (state, pos) = state_after_discard(
            &[g(0, 1, 759), g(0, 2, 900), g(0, 3, 1547)],
            3,
            &[g(0, 3, 1540)],
        );
        assert_eq!(state, "0-1-759,0-2-900,0-3-1540");
        assert_eq!(pos, "0-3-1540");
    }

    #[test]
    fn with_none_of_its_own_writes_held_it_resumes_after_its_replicated_history() {
        let (state, pos) = state_after_discard(&[g(0, 2, 900), g(0, 1, 759), g(0, 3, 5)], 3, &[]);
        assert_eq!(state, "0-1-759,0-2-900");
        assert_eq!(pos, "0-2-900");
    }

    #[test]
    fn every_domain_gets_its_position_last() {
        let (state, pos) = state_after_discard(
            &[g(1, 2, 40), g(0, 1, 759), g(0, 3, 1547), g(1, 3, 41)],
            3,
            &[g(0, 3, 1540)],
        );
        assert_eq!(pos, "0-3-1540,1-2-40");
        assert_eq!(state, "0-1-759,0-3-1540,1-2-40");
    }
}
