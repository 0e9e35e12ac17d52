//! `SqliteStore`: the embedded SQLite backend of [`Store`], one file under the data directory.
//!
//! All SQLite calls are blocking, so none runs on an async worker: the store has threads of
//! its own, started at open. One owns the writer connection and runs every write in turn
//! (serialized, which is what SQLite does anyway); [`READERS`] own a read-only connection
//! each and run the reads (WAL lets them read beside the writer). A call queues a job and
//! awaits its answer, so however many callers wait, the store uses `READERS + 1` threads
//! (once, each call took a blocking thread of its own to wait for one connection: 200
//! concurrent API reads made about 300 threads).

mod check;
mod migrations;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use model::{ClusterSpec, InstanceAddr, Observation, Problem};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::Store;
use crate::coord::{
    ClusterLock, Leadership, NewOperation, OperationQuery, OperationRecord, OperationState,
    OperationUpdate,
};
use crate::error::StoreError;
use crate::event::{EventLevel, EventQuery, EventRecord, NewEvent, MAX_EVENT_LIMIT};
use crate::record::{
    ClusterRecord, InstanceQuery, InstanceRecord, Origin, ProblemChanges, ProblemRecord,
};

pub use check::{CheckReport, FileState, STORE_FILE_MODE};
pub use migrations::SCHEMA_VERSION;

/// The name of the store file inside the data directory.
pub const DB_FILE_NAME: &str = "dbfleet.sqlite3";

/// How long a statement waits for a lock held by another connection (a backup tool, the
/// `sqlite3` shell) before it fails as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections beside the writer, each on a thread of its own. WAL lets them
/// read while the writer writes. With the writer's thread, the store uses `READERS + 1`
/// threads whatever the number of callers (200 concurrent API reads once made about 300).
pub const READERS: usize = 4;

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The store's threads: one owns the writer connection, [`READERS`] own a read-only
/// connection each; callers queue jobs and await the answer, so a queue of calls holds no
/// thread. When the last clone of the store drops, the queues close, and the threads close
/// their connections and are joined.
#[derive(Debug)]
struct Threads {
    writer: Option<std::sync::mpsc::Sender<WriteJob>>,
    readers: Option<std::sync::mpsc::Sender<ReadJob>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Start the writer's thread on `writer` and one reader's thread per connection of
    /// `readers` (none: reads go to the writer).
    fn start(
        path: &Path,
        writer: Connection,
        readers: Vec<Connection>,
    ) -> Result<Self, StoreError> {
        let spawn_err = |e: std::io::Error| StoreError::Open {
            path: path.to_path_buf(),
            message: format!("start a store thread: {e}"),
        };
        let mut handles = Vec::new();
        let (wtx, wrx) = std::sync::mpsc::channel::<WriteJob>();
        let mut conn = writer;
        handles.push(
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || {
                    while let Ok(job) = wrx.recv() {
                        // A job that panics unwound through its `Transaction`, whose drop
                        // rolled it back: the connection is consistent, keep serving.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut conn)
                        }));
                    }
                })
                .map_err(spawn_err)?,
        );
        let mut rtx = None;
        if !readers.is_empty() {
            let (tx, rx) = std::sync::mpsc::channel::<ReadJob>();
            let rx = Arc::new(Mutex::new(rx));
            for (i, conn) in readers.into_iter().enumerate() {
                let rx = Arc::clone(&rx);
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("sqlite-reader-{i}"))
                        .spawn(move || loop {
                            let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                            let Ok(job) = job else { return };
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                job(&conn)
                            }));
                        })
                        .map_err(spawn_err)?,
                );
            }
            rtx = Some(tx);
        }
        Ok(Self {
            writer: Some(wtx),
            readers: rtx,
            handles,
        })
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.writer.take();
        self.readers.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// `n` read-only connections to the store file.
fn open_readers(path: &Path, n: usize) -> Result<Vec<Connection>, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        message: format!("open a read connection: {e}"),
    };
    (0..n)
        .map(|_| {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            c.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
            Ok(c)
        })
        .collect()
}

/// How [`SqliteStore::open_with`] treats a store file that holds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Give dbfleet's schema to a store file that exists but is empty (0 bytes) or has no
    /// schema, instead of refusing it (`dbfleet serve --init-store`). A damaged store is
    /// refused all the same.
    pub init: bool,
}

/// The embedded SQLite metadata store.
///
/// The file is `DATA_DIR/dbfleet.sqlite3`. Opening it:
///
/// - a missing file is a first start: the store is made in `dbfleet.sqlite3.new` (mode 0600)
///   with its schema, then renamed into place, so a store file that exists always has the
///   schema;
/// - an existing file of 0 bytes, or one without dbfleet's schema, is *unexpectedly empty*:
///   it is refused with [`StoreError::Uninitialized`] (its operations, fenced marks,
///   recoveries switch and block windows are gone), unless [`OpenOptions::init`];
/// - `PRAGMA quick_check` runs on every open; a damaged file (or one that is not a SQLite
///   database) is refused with [`StoreError::Damaged`];
/// - the file, its `-wal` and its `-shm` are made mode 0600 (SQLite gives the side files the
///   database's mode);
/// - `journal_mode=WAL`: readers do not block the writer nor the writer readers, and a
///   commit is one sequential append to the WAL instead of rewriting pages in place;
/// - `synchronous=NORMAL` for the observations, problems and events a probe round writes
///   (a commit writes the WAL but does not fsync it: a crash of the process loses nothing,
///   a power loss may roll back the last commits, which the next round rebuilds), and
///   `synchronous=FULL` (the WAL fsynced before the call returns) for the records that
///   must survive a power loss: operations, settings (fenced marks, the recoveries switch,
///   acknowledgements and block windows, the alert state) and the cluster's writer;
/// - `busy_timeout` of 5 s, for the rare outside reader (`dbfleet store backup`, the
///   `sqlite3` shell);
/// - the migrations of this binary applied in order, each in its own transaction, tracked in
///   `PRAGMA user_version`. A file at a newer version than [`SCHEMA_VERSION`] is refused with
///   [`StoreError::SchemaTooNew`], never half-understood.
///
/// Reads run on a pool of [`READERS`] read-only connections beside the one writer (see the
/// module's doc); a store in memory has no pool and reads on its writer.
///
/// Cloning is cheap and shares the connections.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The writer's and the readers' threads.
    threads: Arc<Threads>,
    path: Option<PathBuf>,
    /// `PRAGMA synchronous` as the last durable call saw it.
    #[cfg(test)]
    seen_synchronous: Arc<std::sync::atomic::AtomicI64>,
}

impl SqliteStore {
    /// Open the store under `data_dir` (creating the directory, mode 0700, and a new store
    /// if there is no file), check it and migrate it to this binary's schema; an existing
    /// empty or schema-less file is refused. See [`SqliteStore::open_with`].
    ///
    /// This blocks on disk; call it at startup, before serving, or on a blocking thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, OpenOptions::default())
    }

    /// [`SqliteStore::open`] with options; the checks are on [`SqliteStore`].
    pub fn open_with(data_dir: &Path, options: OpenOptions) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|cause| StoreError::CreateDir {
                path: data_dir.to_path_buf(),
                cause,
            })?;
        let path = data_dir.join(DB_FILE_NAME);
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        };
        match std::fs::symlink_metadata(&path) {
            Ok(_) => check::make_private(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let [wal, _] = check::side_files(&path);
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                    return Err(StoreError::Uninitialized {
                        path,
                        what: format!(
                            "is missing while its write-ahead log {} is there",
                            wal.display()
                        ),
                    });
                }
                check::create_new(&path)?;
            }
            Err(e) => {
                return Err(StoreError::Open {
                    path,
                    message: e.to_string(),
                })
            }
        }
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mut report = check::CheckReport {
            path: path.clone(),
            state: check::FileState::Empty,
            size_bytes: 0,
            schema_version: None,
            findings: Vec::new(),
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                message: e.to_string(),
            })?
            .len();
        if size > 0 {
            check::inspect(&conn, &mut report).map_err(open_err)?;
        }
        match report.state {
            check::FileState::Empty | check::FileState::NoSchema if options.init => {}
            _ => {
                if let Some(refusal) = report.refusal() {
                    return Err(refusal);
                }
            }
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path,
                message: format!("cannot switch to WAL mode: the journal mode stays {mode:?}"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrations::migrate(&mut conn, &path)?;
        // The WAL and the shared-memory file exist now; an older dbfleet made them 0644.
        check::make_private(&path)?;
        Ok(Self {
            threads: Arc::new(Threads::start(&path, conn, open_readers(&path, READERS)?)?),
            path: Some(path),
            #[cfg(test)]
            seen_synchronous: Default::default(),
        })
    }

    /// Look at the store file at `path` without changing it (it may be in use): whether it
    /// is missing, empty, without schema, damaged (`PRAGMA quick_check`) or sound, with
    /// quick_check's findings. Fails only when the file cannot be looked at.
    pub fn check_file(path: &Path) -> Result<CheckReport, StoreError> {
        check::check_file(path)
    }

    /// Copy the store file `src` (it may be in use by a running daemon) to the new file
    /// `dest`, mode 0600, as one consistent snapshot (`VACUUM INTO`), and check the copy
    /// before it appears under `dest`. Refuses an existing `dest` and a source that is not
    /// sound. Returns the copy's check.
    pub fn backup_file(src: &Path, dest: &Path) -> Result<CheckReport, StoreError> {
        check::backup(src, dest)
    }

    /// A store in memory, gone when the last clone drops: for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let mut conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        migrations::migrate(&mut conn, &path)?;
        Ok(Self {
            threads: Arc::new(Threads::start(&path, conn, Vec::new())?),
            path: None,
            #[cfg(test)]
            seen_synchronous: Default::default(),
        })
    }

    /// The store file, or `None` for a store in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Run `f` with the writer connection on the writer's thread; callers queue and wait
    /// asynchronously, so a queue of writes holds no thread.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.threads
            .writer
            .as_ref()
            .and_then(|w| w.send(job).ok())
            .ok_or_else(|| StoreError::Task("the store's writer thread is gone".into()))?;
        rx.await
            .map_err(|_| StoreError::Task("the store call panicked".into()))?
    }

    /// Run the read `f` on a read-only connection, on the first free reader's thread;
    /// callers queue and wait asynchronously. At most [`READERS`] reads run at once, each in
    /// a snapshot of the last commit. A store in memory reads on its writer.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(readers) = &self.threads.readers else {
            return self.with_conn(move |c| f(c)).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        readers
            .send(job)
            .map_err(|_| StoreError::Task("the store's reader threads are gone".into()))?;
        rx.await
            .map_err(|_| StoreError::Task("the store call panicked".into()))?
    }

    /// [`SqliteStore::with_conn`] with `synchronous=FULL` for the call: its commit fsyncs
    /// the WAL before it returns, so it survives a power loss. For the records that matter
    /// (operations, settings, the writer); the probe rounds' writes stay `NORMAL`.
    async fn with_conn_durable<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        #[cfg(test)]
        let seen = Arc::clone(&self.seen_synchronous);
        self.with_conn(move |conn| {
            conn.pragma_update(None, "synchronous", "FULL")?;
            #[cfg(test)]
            seen.store(
                conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?,
                std::sync::atomic::Ordering::SeqCst,
            );
            let result = f(conn);
            let back = conn.pragma_update(None, "synchronous", "NORMAL");
            let value = result?;
            back?;
            Ok(value)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn upsert_cluster(
        &self,
        spec: &ClusterSpec,
        now_ms: u64,
    ) -> Result<ClusterRecord, StoreError> {
        if spec.name.is_empty() {
            return Err(StoreError::InvalidArgument(
                "a cluster spec needs a name".into(),
            ));
        }
        let name = spec.name.clone();
        let spec_json = to_json(spec, "cluster spec")?;
        let now = sql_ms(now_ms)?;
        self.with_conn(move |conn| {
            let row = conn
                .prepare_cached(
                    "INSERT INTO clusters (name, spec_json, writer, updated_ms)
                     VALUES (?1, ?2, NULL, ?3)
                     ON CONFLICT (name) DO UPDATE
                        SET spec_json = excluded.spec_json, updated_ms = excluded.updated_ms
                     RETURNING name, spec_json, writer, updated_ms",
                )?
                .query_row(params![name, spec_json, now], ClusterRow::read)?;
            row.decode()
        })
        .await
    }

    async fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, spec_json, writer, updated_ms FROM clusters ORDER BY name",
            )?;
            let rows = stmt.query_map([], ClusterRow::read)?;
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        let name = name.to_owned();
        self.with_reader(move |conn| {
            conn.prepare_cached(
                "SELECT name, spec_json, writer, updated_ms FROM clusters WHERE name = ?1",
            )?
            .query_row([name], ClusterRow::read)
            .optional()?
            .map(ClusterRow::decode)
            .transpose()
        })
        .await
    }

    async fn set_writer(
        &self,
        name: &str,
        writer: Option<InstanceAddr>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        let writer = writer.map(|w| w.to_string());
        let now = sql_ms(now_ms)?;
        self.with_conn_durable(move |conn| {
            let n = conn
                .prepare_cached("UPDATE clusters SET writer = ?2, updated_ms = ?3 WHERE name = ?1")?
                .execute(params![name, writer, now])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("cluster {name:?}")));
            }
            Ok(())
        })
        .await
    }

    async fn upsert_instance(&self, instance: &InstanceRecord) -> Result<bool, StoreError> {
        let cluster = instance.cluster.clone();
        let addr = instance.addr.to_string();
        let origin = instance.origin.as_str();
        let first = sql_ms(instance.first_seen_ms)?;
        let last = sql_ms(instance.last_seen_ms)?;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO instances (cluster, addr, origin, first_seen_ms, last_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (cluster, addr) DO NOTHING",
                )?
                .execute(params![cluster, addr, origin, first, last])?
                == 1;
            if !inserted {
                tx.prepare_cached(
                    "UPDATE instances SET origin = ?3, last_seen_ms = ?4
                     WHERE cluster = ?1 AND addr = ?2",
                )?
                .execute(params![cluster, addr, origin, last])?;
            }
            tx.commit()?;
            Ok(inserted)
        })
        .await
    }

    async fn instances(&self, cluster: Option<&str>) -> Result<Vec<InstanceRecord>, StoreError> {
        let cluster = cluster.map(str::to_owned);
        self.with_reader(move |conn| {
            const COLS: &str = "SELECT cluster, addr, origin, first_seen_ms, last_seen_ms \
                                FROM instances";
            let mut stmt;
            let rows = match &cluster {
                Some(c) => {
                    stmt = conn.prepare_cached(&format!("{COLS} WHERE cluster = ?1"))?;
                    stmt.query_map([c], InstanceRow::read)?
                }
                None => {
                    stmt = conn.prepare_cached(COLS)?;
                    stmt.query_map([], InstanceRow::read)?
                }
            };
            let mut out = rows
                .map(|r| r?.decode())
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.sort_by(|a, b| (&a.cluster, &a.addr).cmp(&(&b.cluster, &b.addr)));
            Ok(out)
        })
        .await
    }

    async fn instance_page(
        &self,
        query: &InstanceQuery,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let limit = query.limit.min(MAX_EVENT_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = query.clone();
        self.with_reader(move |conn| {
            let mut sql = String::from(
                "SELECT cluster, addr, origin, first_seen_ms, last_seen_ms FROM instances \
                 WHERE 1 = 1",
            );
            let mut args: Vec<Value> = Vec::new();
            if let Some(c) = query.cluster {
                args.push(Value::Text(c));
                sql.push_str(&format!(" AND cluster = ?{}", args.len()));
            }
            if let Some((cluster, addr)) = query.after {
                // Keyset paging on the primary key (cluster, addr): text compares byte-wise.
                args.push(Value::Text(cluster));
                args.push(Value::Text(addr.to_string()));
                sql.push_str(&format!(
                    " AND (cluster, addr) > (?{}, ?{})",
                    args.len() - 1,
                    args.len()
                ));
            }
            args.push(Value::Integer(limit as i64));
            sql.push_str(&format!(" ORDER BY cluster, addr LIMIT ?{}", args.len()));
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), InstanceRow::read)?;
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn remove_instance(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
    ) -> Result<bool, StoreError> {
        let cluster = cluster.to_owned();
        let addr = addr.to_string();
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let n = tx
                .prepare_cached("DELETE FROM instances WHERE cluster = ?1 AND addr = ?2")?
                .execute(params![cluster, addr])?;
            tx.prepare_cached("DELETE FROM observations WHERE cluster = ?1 AND addr = ?2")?
                .execute(params![cluster, addr])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn save_observations(
        &self,
        observations: &[(String, Observation)],
    ) -> Result<(), StoreError> {
        // Encode here, from the borrowed slice, rather than clone every observation into the
        // blocking task.
        let rows = observations
            .iter()
            .map(|(cluster, o)| {
                Ok((
                    o.addr.to_string(),
                    cluster.clone(),
                    sql_ms(o.at_unix_ms)?,
                    to_json(o, "observation")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO observations (addr, cluster, at_ms, observation_json)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (addr) DO UPDATE SET
                        cluster = excluded.cluster,
                        at_ms = excluded.at_ms,
                        observation_json = excluded.observation_json",
                )?;
                for (addr, cluster, at_ms, json) in &rows {
                    stmt.execute(params![addr, cluster, at_ms, json])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn last_observations(
        &self,
        cluster: Option<&str>,
    ) -> Result<Vec<(String, Observation)>, StoreError> {
        let cluster = cluster.map(str::to_owned);
        self.with_reader(move |conn| {
            const COLS: &str = "SELECT cluster, addr, observation_json FROM observations";
            let read = |r: &Row<'_>| -> rusqlite::Result<(String, String, String)> {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            };
            let mut stmt;
            let rows = match &cluster {
                Some(c) => {
                    stmt = conn.prepare_cached(&format!("{COLS} WHERE cluster = ?1"))?;
                    stmt.query_map([c], read)?
                }
                None => {
                    stmt = conn.prepare_cached(COLS)?;
                    stmt.query_map([], read)?
                }
            };
            let mut out = rows
                .map(|r| {
                    let (cluster, addr, json) = r?;
                    let o: Observation = from_json(&json, || format!("observation of {addr}"))?;
                    Ok((cluster, o))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.sort_by(|a, b| (&a.0, &a.1.addr).cmp(&(&b.0, &b.1.addr)));
            Ok(out)
        })
        .await
    }

    async fn last_observation(
        &self,
        addr: &InstanceAddr,
    ) -> Result<Option<Observation>, StoreError> {
        let addr = addr.to_string();
        self.with_reader(move |conn| {
            let json: Option<String> = conn
                .prepare_cached("SELECT observation_json FROM observations WHERE addr = ?1")?
                .query_row([&addr], |r| r.get(0))
                .optional()?;
            json.map(|j| from_json(&j, || format!("observation of {addr}")))
                .transpose()
        })
        .await
    }

    async fn sync_problems(
        &self,
        cluster: &str,
        current: &[Problem],
        now_ms: u64,
    ) -> Result<ProblemChanges, StoreError> {
        if let Some(p) = current.iter().find(|p| p.cluster != cluster) {
            return Err(StoreError::InvalidArgument(format!(
                "problem {} belongs to cluster {:?}, not to {cluster:?}",
                p.key(),
                p.cluster
            )));
        }
        let cluster = cluster.to_owned();
        let current = current.to_vec();
        let now = sql_ms(now_ms)?;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let mut open: HashMap<String, ProblemRecord> = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "{PROBLEM_COLS} WHERE cluster = ?1 AND cleared_ms IS NULL"
                ))?;
                for row in stmt.query_map([&cluster], ProblemRow::read)? {
                    let rec = row?.decode()?;
                    open.insert(rec.key.clone(), rec);
                }
            }
            let mut seen: HashSet<String> = HashSet::new();
            let mut opened_keys: Vec<String> = Vec::new();
            for p in current {
                let key = p.key();
                let json = to_json(&p, "problem")?;
                if let Some(rec) = open.get_mut(&key) {
                    tx.prepare_cached(
                        "UPDATE problems SET problem_json = ?2, last_seen_ms = ?3 WHERE id = ?1",
                    )?
                    .execute(params![rec.id, json, now])?;
                    rec.problem = p;
                    rec.last_seen_ms = now_ms;
                } else {
                    let id: i64 = tx
                        .prepare_cached(
                            "INSERT INTO problems
                                (cluster, key, problem_json, first_seen_ms, last_seen_ms)
                             VALUES (?1, ?2, ?3, ?4, ?4)
                             RETURNING id",
                        )?
                        .query_row(params![cluster, key, json, now], |r| r.get(0))?;
                    open.insert(
                        key.clone(),
                        ProblemRecord {
                            id,
                            cluster: cluster.clone(),
                            key: key.clone(),
                            problem: p,
                            first_seen_ms: now_ms,
                            last_seen_ms: now_ms,
                            cleared_ms: None,
                        },
                    );
                    opened_keys.push(key.clone());
                }
                seen.insert(key);
            }

            let mut changes = ProblemChanges::default();
            for key in &opened_keys {
                changes.opened.push(open[key].clone());
            }
            let mut cleared: Vec<ProblemRecord> = open
                .into_values()
                .filter(|rec| !seen.contains(&rec.key))
                .collect();
            cleared.sort_by_key(|rec| rec.id);
            for rec in &mut cleared {
                tx.prepare_cached("UPDATE problems SET cleared_ms = ?2 WHERE id = ?1")?
                    .execute(params![rec.id, now])?;
                rec.cleared_ms = Some(now_ms);
            }
            changes.cleared = cleared;

            for rec in &changes.opened {
                insert_event(&tx, &crate::event::problem_opened_event(rec))?;
            }
            for rec in &changes.cleared {
                insert_event(&tx, &crate::event::problem_cleared_event(rec, now_ms))?;
            }
            tx.commit()?;
            Ok(changes)
        })
        .await
    }

    async fn open_problems(&self, cluster: Option<&str>) -> Result<Vec<ProblemRecord>, StoreError> {
        let cluster = cluster.map(str::to_owned);
        self.with_reader(move |conn| {
            let mut stmt;
            let rows = match &cluster {
                Some(c) => {
                    stmt = conn.prepare_cached(&format!(
                        "{PROBLEM_COLS} WHERE cluster = ?1 AND cleared_ms IS NULL ORDER BY id"
                    ))?;
                    stmt.query_map([c], ProblemRow::read)?
                }
                None => {
                    stmt = conn.prepare_cached(&format!(
                        "{PROBLEM_COLS} WHERE cleared_ms IS NULL ORDER BY id"
                    ))?;
                    stmt.query_map([], ProblemRow::read)?
                }
            };
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn problem_history(
        &self,
        cluster: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ProblemRecord>, StoreError> {
        let cluster = cluster.map(str::to_owned);
        let limit = limit.min(MAX_EVENT_LIMIT) as i64;
        // Keyset paging: `id < before` on the primary key (or the (cluster, id) index).
        let before = before_id.unwrap_or(i64::MAX);
        self.with_reader(move |conn| {
            let mut stmt;
            let rows = match &cluster {
                Some(c) => {
                    stmt = conn.prepare_cached(&format!(
                        "{PROBLEM_COLS} WHERE cluster = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                    ))?;
                    stmt.query_map(params![c, before, limit], ProblemRow::read)?
                }
                None => {
                    stmt = conn.prepare_cached(&format!(
                        "{PROBLEM_COLS} WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                    ))?;
                    stmt.query_map(params![before, limit], ProblemRow::read)?
                }
            };
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn append_event(&self, event: &NewEvent) -> Result<EventRecord, StoreError> {
        let event = event.clone();
        self.with_conn(move |conn| insert_event(conn, &event)).await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, StoreError> {
        let query = query.clone();
        let limit = query.limit.min(MAX_EVENT_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with_reader(move |conn| {
            let mut sql = format!("{EVENT_COLS} WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            if let Some(c) = query.cluster {
                args.push(Value::Text(c));
                sql.push_str(&format!(" AND cluster = ?{}", args.len()));
            }
            if let Some(after) = query.after_id {
                args.push(Value::Integer(after));
                sql.push_str(&format!(" AND id > ?{}", args.len()));
            }
            if !query.kinds.is_empty() {
                let mut marks = Vec::with_capacity(query.kinds.len());
                for k in query.kinds {
                    args.push(Value::Text(k));
                    marks.push(format!("?{}", args.len()));
                }
                sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
            }
            // Paging forward reads the oldest events past the cursor; without a cursor, the
            // newest ones, reversed below into ascending order.
            let newest = query.after_id.is_none();
            args.push(Value::Integer(limit as i64));
            sql.push_str(&format!(
                " ORDER BY id {} LIMIT ?{}",
                if newest { "DESC" } else { "ASC" },
                args.len()
            ));
            let mut stmt = conn.prepare(&sql)?;
            // Decoded row by row into the answer: the raw rows are never all held at once.
            let mut out = stmt
                .query_map(params_from_iter(args), EventRow::read)?
                .map(|r| r?.decode())
                .collect::<Result<Vec<_>, StoreError>>()?;
            if newest {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    async fn create_operation(&self, op: &NewOperation) -> Result<OperationRecord, StoreError> {
        let op = op.clone();
        let data = to_json(&op.data, "operation data")?;
        let created = sql_ms(op.created_ms)?;
        self.with_conn_durable(move |conn| {
            let finished = op.state.is_final().then_some(created);
            conn.prepare_cached(
                "INSERT INTO operations (cluster, kind, trigger, state, step, data_json, owner, \
                 created_ms, updated_ms, finished_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
            )?
            .execute(params![
                op.cluster,
                op.kind,
                op.trigger,
                op.state.as_str(),
                op.step,
                data,
                op.owner,
                created,
                finished
            ])?;
            let id = conn.last_insert_rowid();
            read_operation(conn, id)?.ok_or_else(|| StoreError::NotFound(format!("operation {id}")))
        })
        .await
    }

    async fn update_operation(
        &self,
        id: i64,
        update: &OperationUpdate,
    ) -> Result<OperationRecord, StoreError> {
        let update = update.clone();
        let data = update
            .data
            .as_ref()
            .map(|d| to_json(d, "operation data"))
            .transpose()?;
        let now = sql_ms(update.now_ms)?;
        self.with_conn_durable(move |conn| {
            let tx = conn.transaction()?;
            let current = read_operation(&tx, id)?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            if current.state.is_final() && current.state != update.state {
                return Err(StoreError::InvalidArgument(format!(
                    "operation {id} is {} and final: it cannot become {}",
                    current.state, update.state
                )));
            }
            let finished = match (current.finished_ms, update.state.is_final()) {
                (Some(f), _) => Some(sql_ms(f)?),
                (None, true) => Some(now),
                (None, false) => None,
            };
            tx.prepare_cached(
                "UPDATE operations SET state = ?2, step = ?3, \
                 data_json = coalesce(?4, data_json), error = coalesce(?5, error), \
                 owner = coalesce(?6, owner), updated_ms = ?7, finished_ms = ?8 WHERE id = ?1",
            )?
            .execute(params![
                id,
                update.state.as_str(),
                update.step,
                data,
                update.error,
                update.owner,
                now,
                finished
            ])?;
            let rec = read_operation(&tx, id)?
                .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn operation(&self, id: i64) -> Result<Option<OperationRecord>, StoreError> {
        self.with_reader(move |conn| read_operation(conn, id)).await
    }

    async fn operations(&self, query: &OperationQuery) -> Result<Vec<OperationRecord>, StoreError> {
        let query = query.clone();
        self.with_reader(move |conn| {
            let mut sql = String::from(
                "SELECT id, cluster, kind, trigger, state, step, data_json, error, owner, \
                 created_ms, updated_ms, finished_ms FROM operations WHERE 1 = 1",
            );
            let mut args: Vec<Value> = Vec::new();
            if let Some(c) = &query.cluster {
                args.push(Value::Text(c.clone()));
                sql.push_str(&format!(" AND cluster = ?{}", args.len()));
            }
            if let Some(k) = &query.kind {
                args.push(Value::Text(k.clone()));
                sql.push_str(&format!(" AND kind = ?{}", args.len()));
            }
            if !query.states.is_empty() {
                let mut marks = Vec::new();
                for st in &query.states {
                    args.push(Value::Text(st.as_str().to_string()));
                    marks.push(format!("?{}", args.len()));
                }
                sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
            }
            if let Some(before) = query.before_id {
                // Keyset paging on the primary key.
                args.push(Value::Integer(before));
                sql.push_str(&format!(" AND id < ?{}", args.len()));
            }
            let limit = match query.limit {
                0 => MAX_EVENT_LIMIT,
                n => n.min(MAX_EVENT_LIMIT),
            };
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
            let mut stmt = conn.prepare(&sql)?;
            // Decoded row by row: no second copy of the raw rows.
            let rows = stmt.query_map(params_from_iter(args), OperationRow::read)?;
            rows.map(|r| r?.decode()).collect()
        })
        .await
    }

    async fn try_lock_cluster(
        &self,
        cluster: &str,
        holder: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (cluster, holder) = (cluster.to_owned(), holder.to_owned());
        let now = sql_ms(now_ms)?;
        let expires = sql_ms(now_ms.saturating_add(ttl_ms))?;
        self.with_conn(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO cluster_locks (cluster, holder, expires_ms) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (cluster) DO UPDATE SET holder = excluded.holder, \
                     expires_ms = excluded.expires_ms \
                     WHERE cluster_locks.holder = excluded.holder OR cluster_locks.expires_ms <= ?4",
                )?
                .execute(params![cluster, holder, expires, now])?;
            Ok(n == 1)
        })
        .await
    }

    async fn unlock_cluster(&self, cluster: &str, holder: &str) -> Result<bool, StoreError> {
        let (cluster, holder) = (cluster.to_owned(), holder.to_owned());
        self.with_conn(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM cluster_locks WHERE cluster = ?1 AND holder = ?2")?
                .execute(params![cluster, holder])?;
            Ok(n == 1)
        })
        .await
    }

    async fn cluster_lock(&self, cluster: &str) -> Result<Option<ClusterLock>, StoreError> {
        let cluster = cluster.to_owned();
        self.with_reader(move |conn| {
            let row = conn
                .prepare_cached("SELECT holder, expires_ms FROM cluster_locks WHERE cluster = ?1")?
                .query_row(params![cluster], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?;
            row.map(|(holder, expires)| {
                Ok(ClusterLock {
                    expires_ms: rust_ms(expires, || format!("lock expiry of {cluster}"))?,
                    cluster: cluster.clone(),
                    holder,
                })
            })
            .transpose()
        })
        .await
    }

    async fn campaign(
        &self,
        node: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Leadership, StoreError> {
        let node = node.to_owned();
        let now = sql_ms(now_ms)?;
        let expires = sql_ms(now_ms.saturating_add(ttl_ms))?;
        self.with_conn(move |conn| {
            let tx = conn.transaction()?;
            let row = tx
                .query_row(
                    "SELECT node, term, expires_ms FROM leader WHERE id = 1",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    },
                )
                .optional()?;
            let (leader, term) = match row {
                Some((Some(l), term, exp)) if l != node && exp > now => (Some(l), term),
                Some((Some(l), term, _)) if l == node => {
                    tx.execute(
                        "UPDATE leader SET expires_ms = ?1 WHERE id = 1",
                        params![expires],
                    )?;
                    (Some(l), term)
                }
                other => {
                    let term = other.map(|(_, t, _)| t).unwrap_or(0) + 1;
                    tx.execute(
                        "INSERT INTO leader (id, node, term, expires_ms) VALUES (1, ?1, ?2, ?3) \
                         ON CONFLICT (id) DO UPDATE SET node = excluded.node, \
                         term = excluded.term, expires_ms = excluded.expires_ms",
                        params![node, term, expires],
                    )?;
                    (Some(node.clone()), term)
                }
            };
            tx.commit()?;
            Ok(Leadership {
                is_leader: leader.as_deref() == Some(node.as_str()),
                leader,
                term: term.max(0) as u64,
            })
        })
        .await
    }

    async fn resign(&self, node: &str) -> Result<(), StoreError> {
        let node = node.to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE leader SET node = NULL, expires_ms = 0 WHERE id = 1 AND node = ?1",
                params![node],
            )?;
            Ok(())
        })
        .await
    }

    async fn kv_get(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let key = key.to_owned();
        self.with_reader(move |conn| {
            let v: Option<String> = conn
                .prepare_cached("SELECT value_json FROM settings WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()?;
            v.map(|v| from_json(&v, || format!("setting {key}")))
                .transpose()
        })
        .await
    }

    async fn kv_put(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let key = key.to_owned();
        let value = to_json(value, "setting")?;
        self.with_conn_durable(move |conn| {
            conn.prepare_cached(
                "INSERT INTO settings (key, value_json) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value_json = excluded.value_json",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, key: &str) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.with_conn_durable(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM settings WHERE key = ?1")?
                .execute(params![key])?;
            Ok(n == 1)
        })
        .await
    }

    async fn kv_list(&self, prefix: &str) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let prefix = prefix.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, value_json FROM settings WHERE substr(key, 1, length(?1)) = ?1 \
                 ORDER BY key",
            )?;
            let rows = stmt
                .query_map(params![prefix], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(k, v)| {
                    let value = from_json(&v, || format!("setting {k}"))?;
                    Ok((k, value))
                })
                .collect()
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if self.path.is_none() {
            return Ok(());
        }
        self.with_conn(|conn| {
            // (busy, WAL frames, frames checkpointed); busy = 1 when another connection kept
            // the checkpoint from completing.
            let (busy, log, done): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if busy != 0 {
                return Err(StoreError::Backend(format!(
                    "WAL checkpoint incomplete: another connection is busy \
                     ({done} of {log} frames checkpointed)"
                )));
            }
            Ok(())
        })
        .await
    }
}

/// Append one event; every write to `events` goes through here, and it only inserts.
fn insert_event(conn: &Connection, ev: &NewEvent) -> Result<EventRecord, StoreError> {
    let at = sql_ms(ev.at_ms)?;
    let data = to_json(&ev.data, "event data")?;
    let instance = ev.instance.as_ref().map(|i| i.to_string());
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO events (at_ms, cluster, instance, kind, level, message, data_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             RETURNING id",
        )?
        .query_row(
            params![
                at,
                ev.cluster,
                instance,
                ev.kind,
                ev.level.as_str(),
                ev.message,
                data
            ],
            |r| r.get(0),
        )?;
    Ok(EventRecord {
        id,
        at_ms: ev.at_ms,
        cluster: ev.cluster.clone(),
        instance: ev.instance.clone(),
        kind: ev.kind.clone(),
        level: ev.level,
        message: ev.message.clone(),
        data: ev.data.clone(),
    })
}

const PROBLEM_COLS: &str = "SELECT id, cluster, key, problem_json, first_seen_ms, last_seen_ms, \
                            cleared_ms FROM problems";

const EVENT_COLS: &str =
    "SELECT id, at_ms, cluster, instance, kind, level, message, data_json FROM events";

/// A `clusters` row as read, before decoding.
struct ClusterRow {
    name: String,
    spec_json: String,
    writer: Option<String>,
    updated_ms: i64,
}

impl ClusterRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: r.get(0)?,
            spec_json: r.get(1)?,
            writer: r.get(2)?,
            updated_ms: r.get(3)?,
        })
    }

    fn decode(self) -> Result<ClusterRecord, StoreError> {
        let what = || format!("cluster {:?}", self.name);
        Ok(ClusterRecord {
            spec: from_json(&self.spec_json, what)?,
            writer: self
                .writer
                .as_deref()
                .map(|w| parse_addr(w, what))
                .transpose()?,
            updated_ms: rust_ms(self.updated_ms, what)?,
            name: self.name,
        })
    }
}

/// An `instances` row as read, before decoding.
struct InstanceRow {
    cluster: String,
    addr: String,
    origin: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

impl InstanceRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            cluster: r.get(0)?,
            addr: r.get(1)?,
            origin: r.get(2)?,
            first_seen_ms: r.get(3)?,
            last_seen_ms: r.get(4)?,
        })
    }

    fn decode(self) -> Result<InstanceRecord, StoreError> {
        let what = || format!("instance {} of cluster {:?}", self.addr, self.cluster);
        Ok(InstanceRecord {
            addr: parse_addr(&self.addr, what)?,
            origin: Origin::parse(&self.origin).ok_or_else(|| StoreError::Corrupt {
                what: what(),
                detail: format!("unknown origin {:?}", self.origin),
            })?,
            first_seen_ms: rust_ms(self.first_seen_ms, what)?,
            last_seen_ms: rust_ms(self.last_seen_ms, what)?,
            cluster: self.cluster,
        })
    }
}

/// A `problems` row as read, before decoding.
struct ProblemRow {
    id: i64,
    cluster: String,
    key: String,
    problem_json: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
    cleared_ms: Option<i64>,
}

impl ProblemRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            cluster: r.get(1)?,
            key: r.get(2)?,
            problem_json: r.get(3)?,
            first_seen_ms: r.get(4)?,
            last_seen_ms: r.get(5)?,
            cleared_ms: r.get(6)?,
        })
    }

    fn decode(self) -> Result<ProblemRecord, StoreError> {
        let what = || format!("problem {} ({})", self.id, self.key);
        Ok(ProblemRecord {
            id: self.id,
            problem: from_json(&self.problem_json, what)?,
            first_seen_ms: rust_ms(self.first_seen_ms, what)?,
            last_seen_ms: rust_ms(self.last_seen_ms, what)?,
            cleared_ms: self.cleared_ms.map(|c| rust_ms(c, what)).transpose()?,
            cluster: self.cluster,
            key: self.key,
        })
    }
}

/// An `events` row as read, before decoding.
struct EventRow {
    id: i64,
    at_ms: i64,
    cluster: Option<String>,
    instance: Option<String>,
    kind: String,
    level: String,
    message: String,
    data_json: String,
}

impl EventRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            cluster: r.get(2)?,
            instance: r.get(3)?,
            kind: r.get(4)?,
            level: r.get(5)?,
            message: r.get(6)?,
            data_json: r.get(7)?,
        })
    }

    fn decode(self) -> Result<EventRecord, StoreError> {
        let what = || format!("event {}", self.id);
        Ok(EventRecord {
            id: self.id,
            at_ms: rust_ms(self.at_ms, what)?,
            instance: self
                .instance
                .as_deref()
                .map(|i| parse_addr(i, what))
                .transpose()?,
            level: EventLevel::parse(&self.level).ok_or_else(|| StoreError::Corrupt {
                what: what(),
                detail: format!("unknown level {:?}", self.level),
            })?,
            data: from_json(&self.data_json, what)?,
            cluster: self.cluster,
            kind: self.kind,
            message: self.message,
        })
    }
}

/// A caller's timestamp as SQLite's INTEGER.
fn read_operation(conn: &Connection, id: i64) -> Result<Option<OperationRecord>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT id, cluster, kind, trigger, state, step, data_json, error, owner, \
             created_ms, updated_ms, finished_ms FROM operations WHERE id = ?1",
        )?
        .query_row(params![id], OperationRow::read)
        .optional()?;
    row.map(OperationRow::decode).transpose()
}

struct OperationRow {
    id: i64,
    cluster: String,
    kind: String,
    trigger: String,
    state: String,
    step: String,
    data_json: String,
    error: Option<String>,
    owner: String,
    created_ms: i64,
    updated_ms: i64,
    finished_ms: Option<i64>,
}

impl OperationRow {
    fn read(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            cluster: r.get(1)?,
            kind: r.get(2)?,
            trigger: r.get(3)?,
            state: r.get(4)?,
            step: r.get(5)?,
            data_json: r.get(6)?,
            error: r.get(7)?,
            owner: r.get(8)?,
            created_ms: r.get(9)?,
            updated_ms: r.get(10)?,
            finished_ms: r.get(11)?,
        })
    }

    fn decode(self) -> Result<OperationRecord, StoreError> {
        let id = self.id;
        let what = move || format!("operation {id}");
        Ok(OperationRecord {
            state: OperationState::parse(&self.state).ok_or_else(|| StoreError::Corrupt {
                what: what(),
                detail: format!("unknown state {:?}", self.state),
            })?,
            data: from_json(&self.data_json, what)?,
            created_ms: rust_ms(self.created_ms, what)?,
            updated_ms: rust_ms(self.updated_ms, what)?,
            finished_ms: self.finished_ms.map(|f| rust_ms(f, what)).transpose()?,
            id,
            cluster: self.cluster,
            kind: self.kind,
            trigger: self.trigger,
            step: self.step,
            error: self.error,
            owner: self.owner,
        })
    }
}

fn sql_ms(ms: u64) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| {
        StoreError::InvalidArgument(format!("timestamp {ms} ms is past the year 292 million"))
    })
}

/// A stored timestamp back as milliseconds.
fn rust_ms(ms: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(ms).map_err(|_| StoreError::Corrupt {
        what: what(),
        detail: format!("negative timestamp {ms}"),
    })
}

fn parse_addr(s: &str, what: impl FnOnce() -> String) -> Result<InstanceAddr, StoreError> {
    s.parse()
        .map_err(|e: model::AddrError| StoreError::Corrupt {
            what: what(),
            detail: e.to_string(),
        })
}

fn to_json<T: Serialize + ?Sized>(v: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|cause| StoreError::Encode { what, cause })
}

fn from_json<T: DeserializeOwned>(s: &str, what: impl FnOnce() -> String) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::coord::NewOperation;

    async fn synchronous(s: &SqliteStore) -> i64 {
        s.with_conn(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    /// Operations and settings commit with `synchronous=FULL` (2); the connection is back
    /// at `NORMAL` (1) for the probe rounds' writes after each.
    #[tokio::test]
    async fn operations_and_settings_commit_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(synchronous(&s).await, 1);
        s.create_operation(&NewOperation {
            cluster: "c1".into(),
            kind: "failover".into(),
            trigger: "auto".into(),
            state: OperationState::Running,
            step: "start".into(),
            data: serde_json::json!({}),
            owner: "n1".into(),
            created_ms: 1,
        })
        .await
        .unwrap();
        assert_eq!(s.seen_synchronous.swap(0, Ordering::SeqCst), 2);
        assert_eq!(synchronous(&s).await, 1);
        s.kv_put("fenced/c1/a:1", &serde_json::json!(true))
            .await
            .unwrap();
        assert_eq!(s.seen_synchronous.swap(0, Ordering::SeqCst), 2);
        s.kv_delete("fenced/c1/a:1").await.unwrap();
        assert_eq!(s.seen_synchronous.swap(0, Ordering::SeqCst), 2);
        assert_eq!(synchronous(&s).await, 1);
    }
}
