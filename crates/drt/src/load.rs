//! The write load: options, the ledger table, [`run`] and [`verify`].
//!
//! # What a run does
//!
//! [`run`] starts [`LoadOptions::writers`] writers. Each writer behaves like one application
//! connection:
//!
//! 1. It finds the writable primary by probing every candidate at once as the application
//!    account (`SELECT @@read_only`; the account is not privileged, so `read_only` stops
//!    it). It takes the first candidate, in the given order, with `read_only=0`. When more
//!    than one is writable, the writer records a [`SplitBrain`] observation and still writes
//!    to the first. When none is, the attempt is a failed attempt.
//! 2. It inserts one row per autocommit `INSERT` and, on success, reads the commit's GTID
//!    from the session variable `@@last_gtid` with a second statement. Each id is used once:
//!    `run_tag * 10^13 + writer * 10^9 + seq`, where `run_tag` is random per run (recorded
//!    in the ledger), so runs against the same table never reuse an id.
//! 3. It classifies each outcome (see [`Ledger`]): *acknowledged* when the `INSERT` returned
//!    OK; *in doubt* when the outcome is unknown (connection lost, timeout, server shut down
//!    or connection killed mid-statement); *failed* when the server refused it cleanly
//!    (e.g. error 1290 for `read_only`) or no writable primary was found.
//! 4. After any failure it drops the connection, sleeps [`LoadOptions::retry_pause`] and
//!    probes again.
//!
//! A stale client ([`LoadOptions::pinned`]) skips step 1: it writes to one address for the
//! whole run, whatever that server has become.
//!
//! The run stops starting new writes when [`LoadOptions::duration`] has passed,
//! [`LoadOptions::max_writes`] ids have been used, or the cancellation token fires. A write
//! already sent is allowed to finish (it is bounded by [`LoadOptions::write_timeout`]), so
//! its outcome is known; a probe in progress is abandoned.
//!
//! # Times
//!
//! Every `*_ms` field is milliseconds since the Unix epoch, read from the wall clock once
//! when the run starts and advanced by the monotonic clock after that, so a wall-clock step
//! during the run cannot distort a window.

mod ledger;
mod verify;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use model::InstanceAddr;
use probe::{Credentials, ProbeOptions, Session};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::DrtError;

pub use ledger::{Ack, InDoubt, Ledger, Outage, PinnedWriter, SplitBrain};
pub use verify::{verify, InstanceCheck, Verification, VerifyOptions};

/// The most writers a run may have: the writer index takes 4 decimal digits of an id. A
/// stale client ([`LoadOptions::pinned`]) is one of them.
pub const MAX_WRITERS: usize = 10_000;
/// The most ids one writer may use: the sequence takes 9 decimal digits of an id.
pub const MAX_WRITES_PER_WRITER: u64 = 999_999_999;

/// How a load runs. Build it with [`LoadOptions::new`], which sets the documented defaults,
/// then change fields.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent writers, each with its own connection. Default 4; at most [`MAX_WRITERS`].
    pub writers: usize,
    /// Writes per second in total across writers, spread evenly; 0 means as fast as each
    /// writer can. Default 1000, which puts a write on each of 4 writers every 4 ms: the
    /// resolution of the measured outage. It is a ceiling: a writer whose write takes longer
    /// than its interval goes on at once, and never bursts to catch up.
    pub rate_per_s: u32,
    /// How long the load runs. Default 10 s.
    pub duration: Duration,
    /// A hard bound on the ids used (acknowledged, in doubt or refused by the server), across
    /// writers. Default 1,000,000, which [`verify`] reads back comfortably.
    pub max_writes: u64,
    /// The servers that may be the primary. Order matters only when several are writable.
    /// With none, every attempt fails.
    pub candidates: Vec<InstanceAddr>,
    /// The application account: DML on the ledger table, no privilege that passes
    /// `read_only`. Never logged.
    pub creds: Credentials,
    /// The ledger table, made by [`prepare`]. Default `app.drt_ledger`.
    pub table: TableName,
    /// Longest time a connect (TCP and handshake) may take. Default 500 ms.
    pub connect_timeout: Duration,
    /// Longest time one statement may take before its write counts as in doubt. Default 2 s,
    /// like an application's driver timeout. It is shorter than the sandbox's semi-sync
    /// timeout (5 s), so a commit stalled waiting for a replica's ack shows as in doubt.
    pub write_timeout: Duration,
    /// Pause after a failure before probing again. Default 20 ms.
    pub retry_pause: Duration,
    /// Each acknowledged id is also sent here as it is acknowledged, for a watcher that
    /// checks the ledger during the run (the DRT runner's lost-write guardrail). Default
    /// none.
    pub ack_feed: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
    /// A stale client: one more writer (index [`LoadOptions::writers`]) that never looks for
    /// the primary. It connects to this address, as the application account, writes there
    /// at a writer's share of the rate, and connects to the same address again after any
    /// failure, as an application with a cached address does. Its writes are acknowledged,
    /// in doubt or failed like any other; it opens no outage. Default none.
    pub pinned: Option<InstanceAddr>,
    /// How long the stale client waits for one statement. Default 30 s: applications often
    /// have no statement timeout at all, and a commit that was in flight when its primary
    /// froze can be acknowledged after it resumes, once semi-sync gave up waiting (5 s in
    /// the sandbox) — longer than [`LoadOptions::write_timeout`] would wait.
    pub pinned_write_timeout: Duration,
    /// The candidates are proxies (HAProxy's writer frontend), not servers: on each new
    /// connection a writer asks the server behind it who it is (`@@report_host`, else the
    /// proxy's host, and `@@port`), and attributes its acknowledgements and outages to that
    /// server, so that what the old primary acknowledged through the proxy after the new
    /// one opened is counted like a direct write. Default false.
    pub via_proxy: bool,
}

impl LoadOptions {
    /// Options with the defaults documented on each field.
    pub fn new(candidates: Vec<InstanceAddr>, creds: Credentials) -> Self {
        Self {
            writers: 4,
            rate_per_s: 1000,
            duration: Duration::from_secs(10),
            max_writes: 1_000_000,
            candidates,
            creds,
            table: TableName::default(),
            connect_timeout: Duration::from_millis(500),
            write_timeout: Duration::from_secs(2),
            retry_pause: Duration::from_millis(20),
            ack_feed: None,
            pinned: None,
            pinned_write_timeout: Duration::from_secs(30),
            via_proxy: false,
        }
    }
}

/// A `database.table` name. Both parts are 1 to 64 ASCII letters, digits or `_`, so the
/// name is safe to put in SQL. Written and parsed as `database.table`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    database: String,
    table: String,
}

impl TableName {
    /// The database part.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The table part.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The name quoted for SQL: `` `database`.`table` ``.
    pub fn quoted(&self) -> String {
        format!("`{}`.`{}`", self.database, self.table)
    }
}

impl Default for TableName {
    /// `app.drt_ledger`: the sandbox's application account may write in `app`.
    fn default() -> Self {
        Self {
            database: "app".into(),
            table: "drt_ledger".into(),
        }
    }
}

impl FromStr for TableName {
    type Err = DrtError;

    fn from_str(s: &str) -> Result<Self, DrtError> {
        let valid = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        match s.split_once('.') {
            Some((d, t)) if valid(d) && valid(t) => Ok(Self {
                database: d.into(),
                table: t.into(),
            }),
            _ => Err(DrtError::BadTable(s.to_string())),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.database, self.table)
    }
}

impl Serialize for TableName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TableName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Timeouts of [`prepare`]: DDL on a semi-sync primary waits for a replica's ack.
const PREPARE_TIMEOUTS: ProbeOptions = ProbeOptions {
    connect_timeout: Duration::from_secs(2),
    query_timeout: Duration::from_secs(10),
};

/// Create the ledger table's database and the table on `primary`, as `admin`, when they do
/// not exist. An existing table is left as it is: each run uses its own ids.
pub async fn prepare(
    admin: &Credentials,
    primary: &InstanceAddr,
    table: &TableName,
) -> Result<(), DrtError> {
    let mut s = Session::connect(primary, admin, PREPARE_TIMEOUTS)
        .await
        .map_err(DrtError::sql("connect", primary))?;
    let sql = format!(
        "CREATE DATABASE IF NOT EXISTS `{db}`; \
         CREATE TABLE IF NOT EXISTS {t} (\
           id BIGINT NOT NULL PRIMARY KEY, \
           writer INT NOT NULL, \
           acked_at_ms BIGINT NOT NULL COMMENT 'client clock when the write was sent', \
           payload VARCHAR(64) NOT NULL\
         ) ENGINE=InnoDB",
        db = table.database(),
        t = table.quoted(),
    );
    let r = s
        .exec("create ledger table", &sql)
        .await
        .map_err(DrtError::sql("create ledger table", primary));
    s.close().await;
    r
}

/// Run the load until its duration passes, its write bound is reached or `cancel` fires,
/// and return the ledger. Never fails: every failure is recorded in the ledger. Dropping the
/// returned future stops every writer.
pub async fn run(opts: LoadOptions, cancel: CancellationToken) -> Ledger {
    writer::run(opts, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        let t: TableName = "app.drt_ledger".parse().unwrap();
        assert_eq!(t, TableName::default());
        assert_eq!(t.quoted(), "`app`.`drt_ledger`");
        for bad in ["app", "app.", ".t", "a.b.c", "a-b.t", "a.t;drop", "a.`t`"] {
            assert!(bad.parse::<TableName>().is_err(), "{bad}");
        }
    }
}
