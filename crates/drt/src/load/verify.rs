//! `verify`: read a load's rows back from servers and name every acknowledged id that is
//! missing; a server whose read fails is read once more on a fresh connection.

use std::collections::HashSet;
use std::time::Duration;

use tracing::warn;

use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use serde::{Deserialize, Serialize};

use super::ledger::{Ack, Ledger};
use crate::DrtError;

/// Timeouts of [`verify`].
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Longest time a connect may take. Default 1 s.
    pub connect_timeout: Duration,
    /// Longest time reading one server's ids may take. Default 30 s, enough for a million
    /// rows.
    pub query_timeout: Duration,
    /// How long to wait before the one retry of a server whose read failed (on a fresh
    /// connection). Default 500 ms: long enough for a fencing or a restart that closed the
    /// connection to settle.
    pub retry_pause: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(30),
            retry_pause: Duration::from_millis(500),
        }
    }
}

/// What one server holds of a load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCheck {
    /// The server.
    pub addr: InstanceAddr,
    /// Whether its rows could be read. When false, `missing` is empty and says nothing.
    pub reachable: bool,
    /// Why its rows could not be read.
    pub error: Option<String>,
    /// Why the first read failed, when a retry was needed (the retry's own failure, if
    /// any, is `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<String>,
    /// Rows of this run it holds.
    pub rows: usize,
    /// Acknowledged ids it does not hold, ascending.
    pub missing: Vec<u64>,
    /// In-doubt ids it does hold: writes that committed although the client never heard.
    pub present_in_doubt: usize,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The server that must hold every acknowledged write: the primary after the load.
    pub writer: InstanceAddr,
    /// One check per server, the writer first.
    pub per_instance: Vec<InstanceCheck>,
    /// Acknowledged writes missing on the writer: lost writes.
    pub lost: Vec<Ack>,
}

impl Verification {
    /// True when nothing was lost and every reachable server holds every acknowledged id.
    pub fn all_present(&self) -> bool {
        self.lost.is_empty() && self.per_instance.iter().all(|c| c.missing.is_empty())
    }

    /// The check of one server.
    pub fn check(&self, addr: &InstanceAddr) -> Option<&InstanceCheck> {
        self.per_instance.iter().find(|c| &c.addr == addr)
    }
}

/// Check a ledger against servers, as `admin`.
///
/// `writer` is the server that must hold every acknowledged write, normally the primary
/// once the load (and any failover) is over; an acknowledged id missing there is *lost*. It
/// must be reachable, or the loss cannot be judged and this returns an error. `others` are
/// checked the same way, but a missing id there is only reported in its
/// [`InstanceCheck::missing`], and an unreachable one is recorded as such. Replicas should
/// have caught up first (e.g. `MASTER_GTID_WAIT` on the writer's `@@gtid_binlog_pos`).
///
/// Each server's ids of this run are read with one `SELECT` into memory, which suits up to
/// a few million rows. A server whose connect or read fails (e.g. the old primary's fencing
/// killed the connection) is read once more, on a fresh connection, after
/// [`VerifyOptions::retry_pause`]; the first failure is kept in [`InstanceCheck::retried`].
/// When the writer fails twice the error is [`DrtError::Retried`].
pub async fn verify(
    ledger: &Ledger,
    writer: &InstanceAddr,
    others: &[InstanceAddr],
    admin: &Credentials,
    opts: &VerifyOptions,
) -> Result<Verification, DrtError> {
    let (ids, retried) = read_ids_twice(ledger, writer, admin, opts).await;
    let mut first = check(ledger, writer, Ok(ids?));
    first.retried = retried;
    let lost = ledger
        .acked
        .iter()
        .filter(|a| first.missing.binary_search(&a.id).is_ok())
        .cloned()
        .collect();
    let mut per_instance = vec![first];
    for addr in others {
        let (ids, retried) = read_ids_twice(ledger, addr, admin, opts).await;
        let ids = ids.map_err(|e| match e {
            // The check keeps the first failure in `retried`; its error is the retry's.
            DrtError::Retried { last, .. } => *last,
            e => e,
        });
        let mut c = check(ledger, addr, ids);
        c.retried = retried;
        per_instance.push(c);
    }
    Ok(Verification {
        writer: writer.clone(),
        per_instance,
        lost,
    })
}

fn check(
    ledger: &Ledger,
    addr: &InstanceAddr,
    ids: Result<HashSet<u64>, DrtError>,
) -> InstanceCheck {
    match ids {
        Ok(ids) => {
            let mut missing: Vec<u64> = ledger
                .acked
                .iter()
                .map(|a| a.id)
                .filter(|id| !ids.contains(id))
                .collect();
            missing.sort_unstable();
            InstanceCheck {
                addr: addr.clone(),
                reachable: true,
                error: None,
                retried: None,
                rows: ids.len(),
                missing,
                present_in_doubt: ledger
                    .in_doubt
                    .iter()
                    .filter(|d| ids.contains(&d.id))
                    .count(),
            }
        }
        Err(e) => InstanceCheck {
            addr: addr.clone(),
            reachable: false,
            error: Some(e.to_string()),
            retried: None,
            rows: 0,
            missing: Vec::new(),
            present_in_doubt: 0,
        },
    }
}

/// [`read_ids`], and once more after [`VerifyOptions::retry_pause`] when it fails. Also
/// returns the first failure's text when a retry was made.
async fn read_ids_twice(
    ledger: &Ledger,
    addr: &InstanceAddr,
    admin: &Credentials,
    opts: &VerifyOptions,
) -> (Result<HashSet<u64>, DrtError>, Option<String>) {
    let first = match read_ids(ledger, addr, admin, opts).await {
        Ok(ids) => return (Ok(ids), None),
        Err(e) => e,
    };
    warn!(instance = %addr, error = %first, pause = ?opts.retry_pause, "verification read failed; retrying");
    tokio::time::sleep(opts.retry_pause).await;
    let text = first.to_string();
    match read_ids(ledger, addr, admin, opts).await {
        Ok(ids) => (Ok(ids), Some(text)),
        Err(last) => (
            Err(DrtError::Retried {
                first: Box::new(first),
                last: Box::new(last),
                pause: opts.retry_pause,
            }),
            Some(text),
        ),
    }
}

async fn read_ids(
    ledger: &Ledger,
    addr: &InstanceAddr,
    admin: &Credentials,
    opts: &VerifyOptions,
) -> Result<HashSet<u64>, DrtError> {
    let popts = ProbeOptions {
        connect_timeout: opts.connect_timeout,
        query_timeout: opts.query_timeout,
    };
    let mut s = Session::connect(addr, admin, popts)
        .await
        .map_err(DrtError::sql("connect", addr))?;
    let range = ledger.id_range();
    let sql = format!(
        "SELECT id FROM {} WHERE id BETWEEN {} AND {}",
        ledger.table.quoted(),
        range.start(),
        range.end()
    );
    let rows = s.query_rows("read ledger ids", &sql).await;
    s.close().await;
    let rows = rows.map_err(DrtError::sql("read ledger ids", addr))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("id").cloned().flatten())
        .filter_map(|v| v.parse().ok())
        .collect())
}
