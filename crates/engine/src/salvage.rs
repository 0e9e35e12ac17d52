//! Relay-log salvage: a replica of a dead primary that was restarted with replication
//! stopped (`skip_slave_start`) applies what it received and had not applied, by its SQL
//! thread alone, before a failover judges it.
//!
//! Why it is needed (measured on MariaDB 10.11, `docs/HA.md`): a replica in GTID mode
//! deletes its relay log whenever a `START SLAVE` (even `START SLAVE SQL_THREAD` or
//! `IO_THREAD`) finds both threads stopped, and every `CHANGE MASTER` that names no relay
//! log position does the same. A replica killed with transactions it received (and, with
//! semi-sync, acknowledged) but had not applied loses them at its next start unless it
//! starts with `skip_slave_start` and its SQL thread is started at a named relay log
//! position: `CHANGE MASTER TO RELAY_LOG_FILE=…, RELAY_LOG_POS=…` keeps the relay log and
//! switches `MASTER_USE_GTID` off; `START SLAVE SQL_THREAD` then applies from there. The
//! IO thread is never started: its source is dead, and starting it would purge.
//!
//! The position comes from scanning the relay log with `SHOW RELAYLOG EVENTS` from the SQL
//! thread's recorded position (`relay-log.info`, which may lag what was applied): the first
//! transaction not in `gtid_slave_pos` is where to start (a transaction applied twice would
//! stop the SQL thread with error 1950 under `gtid_strict_mode`), the last complete one is
//! what to wait for (a relay log cut mid-event by the kill stops the SQL thread with error
//! 1594 after the last complete transaction). Afterwards `MASTER_USE_GTID=slave_pos` is put
//! back (which deletes the applied relay log and clears that error).

use std::time::{Duration, Instant};

use model::gtid::{MariadbGtid, MariadbGtidList};
use model::InstanceAddr;
use probe::commands::relay::RelayEvents;
use probe::commands::RelayLogAt;
use probe::{ProbeError, Session};
use serde::{Deserialize, Serialize};

use crate::conns::Conns;

/// Rows read per `SHOW RELAYLOG EVENTS` page.
const PAGE: u64 = 500;
/// How often the wait for the SQL thread looks at it.
const POLL: Duration = Duration::from_millis(200);

/// What a salvage found and did on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Salvage {
    pub addr: Option<InstanceAddr>,
    /// The relay log is as it was at the replica's death: both threads were stopped and
    /// had not run since the server started (`Gtid_IO_Pos` empty), `relay_log_recovery`
    /// is off, and GTID mode was on. Then everything it received before it died, and so
    /// everything it acknowledged, is applied once the salvage is done.
    pub kept: bool,
    /// Where the SQL thread was started (`file:pos`), when there was anything to apply.
    pub started_at: Option<String>,
    /// The first and last transaction applied from the relay log.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Complete transactions applied.
    pub transactions: u64,
    /// The relay log ended in a torn event (the kill cut a write): what followed the last
    /// complete transaction was never acknowledged.
    pub torn: bool,
    /// `gtid_slave_pos` after the salvage.
    pub applied: String,
    pub took_ms: u64,
}

/// What a scan of the relay log found.
#[derive(Debug, Default)]
struct Scan {
    /// Relay log file and position of the first transaction not applied.
    start: Option<(String, u64)>,
    first: Option<MariadbGtid>,
    /// The last complete transaction not applied.
    last: Option<MariadbGtid>,
    transactions: u64,
    torn: bool,
}

fn field(row: &probe::parse::RowMap, k: &str) -> String {
    row.get(k).cloned().flatten().unwrap_or_default()
}

/// The relay log file after `name` (`relay.000002` → `relay.000003`), or `None` when the
/// name has no numeric suffix.
fn next_file(name: &str) -> Option<String> {
    let (stem, num) = name.rsplit_once('.')?;
    let n: u64 = num.parse().ok()?;
    Some(format!("{stem}.{:0width$}", n + 1, width = num.len()))
}

/// The GTID a `Gtid` event's `Info` names (`BEGIN GTID 0-1-5`, `GTID 0-1-3`, with
/// `cid=…` and such after it), and whether it opens a multi-event transaction.
fn gtid_of(info: &str) -> Option<(MariadbGtid, bool)> {
    let mut words = info.split_whitespace();
    let mut begin = false;
    for w in words.by_ref() {
        match w {
            "BEGIN" => begin = true,
            "GTID" => break,
            _ => {}
        }
    }
    let g = words.next()?.parse().ok()?;
    Some((g, begin))
}

/// One page of relay log events.
enum Page {
    /// The rows read, and whether more may follow in the file (a full page).
    Rows(Vec<probe::parse::RowMap>, bool),
    /// The next event is torn: MariaDB fails the whole statement with error 1220 "Wrong
    /// offset or I/O error" when it reaches one, so the page is halved until it reads, and
    /// this is a page of one that does not.
    Torn,
    /// No such relay log file (error 1220 "Could not find target log").
    Missing,
}

async fn page(s: &mut Session, file: &str, from: u64, skip: u64) -> Result<Page, ProbeError> {
    let mut limit = PAGE;
    loop {
        let at = RelayEvents {
            file,
            from,
            skip,
            limit,
        };
        match s.relay_log_events(&at).await {
            Ok(rows) => {
                let more = rows.len() as u64 == limit;
                return Ok(Page::Rows(rows, more));
            }
            Err(ProbeError::Server {
                code: 1220,
                message,
            }) if message.contains("find target log") => return Ok(Page::Missing),
            Err(ProbeError::Server { code: 1220, .. }) if limit > 1 => limit /= 2,
            Err(ProbeError::Server { code: 1220, .. }) => return Ok(Page::Torn),
            Err(e) => return Err(e),
        }
    }
}

/// Scan the relay log from `file:pos` to its end for the transactions `applied` lacks.
async fn scan(
    s: &mut Session,
    file: &str,
    pos: u64,
    applied: &MariadbGtidList,
    deadline: Instant,
) -> Result<Scan, String> {
    let mut out = Scan::default();
    let mut file = file.to_string();
    let mut from = pos;
    let mut skip = 0;
    let mut first_page = true;
    // The transaction being read: its GTID, where it starts, whether it is a DDL (one
    // event after its Gtid event), whether it is applied already.
    let mut open: Option<(MariadbGtid, String, u64, bool, bool)> = None;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "scanning the relay log took too long (at {file}:{from})"
            ));
        }
        let (rows, more, torn) = match page(s, &file, from, skip).await {
            Ok(Page::Rows(rows, more)) => (rows, more, false),
            Ok(Page::Torn) => (Vec::new(), false, true),
            // The file after the last one: the end.
            Ok(Page::Missing) if !first_page => return Ok(out),
            Ok(Page::Missing) => return Err(format!("its relay log {file} is gone")),
            Err(e) => return Err(format!("read relay log {file} at {from}: {e}")),
        };
        for row in &rows {
            let at: u64 = field(row, "Pos").parse().unwrap_or(0);
            let kind = field(row, "Event_type");
            let info = field(row, "Info");
            match kind.as_str() {
                "Gtid" => {
                    open = gtid_of(&info).map(|(g, begin)| {
                        let done = applied.get(g.domain).is_some_and(|a| a.seq >= g.seq);
                        (g, file.clone(), at, !begin, done)
                    });
                }
                "Xid" | "Query" | "XA_prepare" => {
                    let ends = match kind.as_str() {
                        "Query" => {
                            open.as_ref().is_some_and(|o| o.3)
                                || info.trim().eq_ignore_ascii_case("COMMIT")
                        }
                        _ => true,
                    };
                    if ends {
                        if let Some((g, f, p, _, done)) = open.take() {
                            if !done {
                                if out.start.is_none() {
                                    out.start = Some((f, p));
                                    out.first = Some(g);
                                }
                                out.last = Some(g);
                                out.transactions += 1;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if torn {
            out.torn = true;
        }
        first_page = false;
        if !more {
            // This file is done: on to the next.
            let Some(next) = next_file(&file) else {
                return Ok(out);
            };
            // A transaction never continues into the next file once this one ended torn.
            if torn {
                open = None;
            }
            file = next;
            from = 4;
            skip = 0;
            continue;
        }
        from = rows
            .last()
            .map(|r| field(r, "Pos").parse().unwrap_or(from))
            .unwrap_or(from);
        skip = 1;
    }
}

/// Whether an observation shows a replica of `old` whose replication has not run since it
/// started: both threads stopped, no SQL error, nothing received (`Gtid_IO_Pos` empty).
pub(crate) fn needs_salvage(o: &model::Observation, old: &InstanceAddr) -> bool {
    o.state()
        .and_then(|s| s.replication.as_ref())
        .is_some_and(|r| {
            r.source == *old
                && r.io_thread == model::IoThreadState::No
                && !r.sql_running
                && r.last_sql_errno == 0
                && r.received_gtid.trim().is_empty()
        })
}

/// Apply what `addr` holds in its relay log and has not applied, within `within`. Only for
/// a replica [`needs_salvage`] picked; its IO thread is never started.
pub(crate) async fn salvage(
    conns: &mut Conns,
    addr: &InstanceAddr,
    within: Duration,
) -> Result<Salvage, String> {
    let started = Instant::now();
    let deadline = started + within;
    let s = conns.get(addr).await.map_err(|e| e.to_string())?;
    let row = s.replica_status_row().await.map_err(|e| e.to_string())?;
    let row = row.as_ref().ok_or("not a replica")?;
    if field(row, "Slave_IO_Running") != "No" || field(row, "Slave_SQL_Running") != "No" {
        return Err("its replication runs".into());
    }
    let using_gtid = field(row, "Using_Gtid");
    let io_pos = field(row, "Gtid_IO_Pos");
    let file = field(row, "Relay_Log_File");
    let pos: u64 = field(row, "Relay_Log_Pos")
        .trim()
        .parse()
        .map_err(|_| "no Relay_Log_Pos".to_string())?;
    let vars = s.relay_vars().await.map_err(|e| e.to_string())?;
    let applied: MariadbGtidList = vars
        .slave_pos
        .parse()
        .map_err(|e| format!("gtid_slave_pos: {e}"))?;
    let kept = io_pos.trim().is_empty() && !vars.relay_log_recovery && using_gtid != "No";
    let found = scan(s, &file, pos, &applied, deadline).await?;
    let mut out = Salvage {
        addr: Some(addr.clone()),
        kept,
        torn: found.torn,
        transactions: found.transactions,
        first: found.first.map(|g| g.to_string()),
        last: found.last.map(|g| g.to_string()),
        applied: applied.to_string(),
        ..Salvage::default()
    };
    let (Some((sfile, spos)), Some(last)) = (found.start, found.last) else {
        out.took_ms = started.elapsed().as_millis() as u64;
        return Ok(out);
    };
    out.started_at = Some(format!("{sfile}:{spos}"));
    let target = last.to_string();
    let run = apply(s, &sfile, spos, &target, deadline).await;
    // Put GTID mode back whatever happened: a later START SLAVE must not connect by file
    // and position. This deletes the relay log, applied by now.
    let restore = s.sql_thread_back_to_gtid().await;
    let now = s.gtid_slave_pos().await.unwrap_or_default();
    out.applied = now;
    out.took_ms = started.elapsed().as_millis() as u64;
    run?;
    restore.map_err(|e| format!("put MASTER_USE_GTID=slave_pos back: {e}"))?;
    Ok(out)
}

/// Start the SQL thread alone at `file:pos` and wait until it applied `target`.
async fn apply(
    s: &mut Session,
    file: &str,
    pos: u64,
    target: &str,
    deadline: Instant,
) -> Result<(), String> {
    s.keep_relay_log(&RelayLogAt {
        file: file.to_string(),
        pos,
        lift_delay: false,
    })
    .await
    .map_err(|e| format!("position its SQL thread at {file}:{pos}: {e}"))?;
    s.start_sql_thread()
        .await
        .map_err(|e| format!("start its SQL thread: {e}"))?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if s.wait_for_gtid(target, left.min(POLL).max(Duration::from_millis(1)))
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        let row = s.replica_status_row().await.map_err(|e| e.to_string())?;
        if let Some(r) = &row {
            if field(r, "Slave_SQL_Running") == "No" {
                // Stopped on its own: reached the target just now, or failed.
                if s.wait_for_gtid(target, Duration::from_millis(1))
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(());
                }
                return Err(format!(
                    "its SQL thread stopped before {target}: error {}: {}",
                    field(r, "Last_SQL_Errno"),
                    field(r, "Last_SQL_Error")
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "did not apply its relay log up to {target} in time"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_relay_file_keeps_the_width() {
        assert_eq!(next_file("relay.000002").as_deref(), Some("relay.000003"));
        assert_eq!(
            next_file("relay-bin.999999").as_deref(),
            Some("relay-bin.1000000")
        );
        assert_eq!(next_file("relay"), None);
    }

    #[test]
    fn gtid_events_name_their_gtid() {
        let (g, begin) = gtid_of("BEGIN GTID 0-1-5").unwrap();
        assert_eq!((g.to_string(), begin), ("0-1-5".into(), true));
        let (g, begin) = gtid_of("GTID 0-1-3").unwrap();
        assert_eq!((g.to_string(), begin), ("0-1-3".into(), false));
        let (g, _) = gtid_of("BEGIN GTID 2-7-41 cid=12").unwrap();
        assert_eq!(g.to_string(), "2-7-41");
        assert!(gtid_of("Server ver: 10.11").is_none());
    }
}
