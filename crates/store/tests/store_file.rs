//! The SQLite store file at start-up: a missing file is a first start, an empty or
//! schema-less one is refused unless `init`, a damaged one is refused always; the files are
//! mode 0600; a backup is a checked copy that restores the same records.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use store::contract::fixtures::spec;
use store::{
    EventLevel, EventQuery, FencedMark, FileState, NewEvent, NewOperation, OpenOptions,
    OperationQuery, OperationState, Settings, SqliteStore, Store, StoreError, DB_FILE_NAME,
    SCHEMA_VERSION,
};

fn db(dir: &Path) -> PathBuf {
    dir.join(DB_FILE_NAME)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn side(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

const INIT: OpenOptions = OpenOptions { init: true };

/// A store with records that matter: a cluster, events, an operation, a fenced mark and the
/// recoveries switch.
async fn seed(s: &SqliteStore, events: usize) {
    s.upsert_cluster(&spec("c1"), 10).await.unwrap();
    for i in 0..events {
        s.append_event(&NewEvent {
            at_ms: 100 + i as u64,
            cluster: Some("c1".into()),
            instance: None,
            kind: "operator_note".into(),
            level: EventLevel::Info,
            message: format!("note {i}: {}", "x".repeat(200)),
            data: serde_json::json!({ "i": i }),
        })
        .await
        .unwrap();
    }
    s.create_operation(&NewOperation {
        cluster: "c1".into(),
        kind: "failover".into(),
        trigger: "auto".into(),
        state: OperationState::Succeeded,
        step: "done".into(),
        data: serde_json::json!({ "candidate": "10.0.0.2:3306" }),
        owner: "n1".into(),
        created_ms: 50,
    })
    .await
    .unwrap();
    s.set_recoveries_disabled(true).await.unwrap();
}

#[tokio::test]
async fn a_missing_store_is_a_first_start_and_is_made_whole() {
    let dir = tempfile::tempdir().unwrap();
    // What a first start that crashed while making the store left is cleared.
    std::fs::write(side(&db(dir.path()), ".new"), b"half").unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    s.upsert_cluster(&spec("c1"), 1).await.unwrap();
    assert!(!side(&db(dir.path()), ".new").exists());
    let report = SqliteStore::check_file(&db(dir.path())).unwrap();
    assert_eq!(report.state, FileState::Sound, "{report:?}");
    assert_eq!(report.schema_version, Some(SCHEMA_VERSION));
    assert!(report.findings.is_empty());
}

#[tokio::test]
async fn a_zero_byte_store_is_refused_unless_init() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(db(dir.path()), b"").unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Uninitialized { .. }),
        "expected Uninitialized, got {err:?}"
    );
    assert!(err.is_refused_store());
    let msg = err.to_string();
    assert!(msg.contains("empty file (0 bytes)"), "{msg}");
    assert!(msg.contains("fenced marks"), "{msg}");
    // Refusing left the file as it was.
    assert_eq!(std::fs::metadata(db(dir.path())).unwrap().len(), 0);
    assert_eq!(
        SqliteStore::check_file(&db(dir.path())).unwrap().state,
        FileState::Empty
    );

    // init: the schema is made in it, and the store works and stays.
    let s = SqliteStore::open_with(dir.path(), INIT).unwrap();
    seed(&s, 1).await;
    drop(s);
    let s = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(s.clusters().await.unwrap().len(), 1);
    assert!(s.recoveries_disabled().await.unwrap());
}

#[tokio::test]
async fn a_store_without_the_schema_is_refused_unless_init() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(db(dir.path())).unwrap();
        c.execute_batch("CREATE TABLE other (x INTEGER); INSERT INTO other VALUES (1);")
            .unwrap();
    }
    let err = SqliteStore::open(dir.path()).unwrap_err();
    match &err {
        StoreError::Uninitialized { what, .. } => {
            assert!(what.contains("without dbfleet's schema"), "{what}")
        }
        other => panic!("expected Uninitialized, got {other:?}"),
    }
    assert_eq!(
        SqliteStore::check_file(&db(dir.path())).unwrap().state,
        FileState::NoSchema
    );
    let s = SqliteStore::open_with(dir.path(), INIT).unwrap();
    s.upsert_cluster(&spec("c1"), 1).await.unwrap();
}

#[tokio::test]
async fn a_missing_store_with_its_wal_left_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(side(&db(dir.path()), "-wal"), b"frames").unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Uninitialized { .. }),
        "expected Uninitialized, got {err:?}"
    );
    assert!(!db(dir.path()).exists(), "nothing was created");
}

/// Overwrite two pages in the middle of a real store file with pseudo-random bytes.
fn corrupt_the_middle(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(path).unwrap().len();
    assert!(
        len > 40 * 4096,
        "the store is too small to corrupt: {len} bytes"
    );
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..2 * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start((len / 4096 / 2) * 4096)).unwrap();
    f.write_all(&junk).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn a_damaged_store_is_refused_even_with_init() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    seed(&s, 1500).await;
    s.flush().await.unwrap();
    drop(s);
    corrupt_the_middle(&db(dir.path()));

    let report = SqliteStore::check_file(&db(dir.path())).unwrap();
    assert_eq!(report.state, FileState::Damaged, "{report:?}");
    assert!(!report.findings.is_empty());
    for options in [OpenOptions::default(), INIT] {
        let err = SqliteStore::open_with(dir.path(), options).unwrap_err();
        match &err {
            StoreError::Damaged { detail, .. } => assert!(!detail.is_empty()),
            other => panic!("expected Damaged, got {other:?}"),
        }
        assert!(err.is_refused_store());
        assert!(err.to_string().contains("is damaged"), "{err}");
    }
    // A backup of a damaged store is refused too, and leaves nothing behind.
    let dest = dir.path().join("copy.sqlite3");
    let err = SqliteStore::backup_file(&db(dir.path()), &dest).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    assert!(!dest.exists());
    assert!(!side(&dest, ".partial").exists());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(db(dir.path()), vec![0x5au8; 8192]).unwrap();
    let report = SqliteStore::check_file(&db(dir.path())).unwrap();
    assert_eq!(report.state, FileState::Damaged, "{report:?}");
    let err = SqliteStore::open_with(dir.path(), INIT).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
}

#[tokio::test]
async fn store_files_are_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = SqliteStore::open(&data).unwrap();
    seed(&s, 3).await;
    let path = db(&data);
    for p in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
        assert!(p.exists(), "{}", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&data), 0o700);
    drop(s);

    // A store an older dbfleet made 0644 is made private at open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = SqliteStore::open(&data).unwrap();
    s.upsert_cluster(&spec("c2"), 2).await.unwrap();
    for p in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[tokio::test]
async fn a_backup_of_a_live_store_restores_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let s = SqliteStore::open(&live).unwrap();
    seed(&s, 20).await;
    s.mark_fenced(
        "c1",
        &"10.0.0.1:3306".parse().unwrap(),
        &FencedMark::default(),
    )
    .await
    .unwrap();

    // Taken while the store is open and was written (no flush): the WAL is read too.
    let dest = dir.path().join("backup.sqlite3");
    let report = SqliteStore::backup_file(&db(&live), &dest).unwrap();
    assert_eq!(report.state, FileState::Sound);
    assert_eq!(report.path, dest);
    assert_eq!(mode(&dest), 0o600);
    assert!(!side(&dest, ".partial").exists());
    // It never overwrites.
    let err = SqliteStore::backup_file(&db(&live), &dest).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");

    // Restored as the store of another data directory, it holds the same records.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&dest, db(&restored)).unwrap();
    let r = SqliteStore::open(&restored).unwrap();
    let all = EventQuery {
        limit: store::MAX_EVENT_LIMIT,
        ..EventQuery::default()
    };
    assert_eq!(s.events(&all).await.unwrap(), r.events(&all).await.unwrap());
    assert_eq!(r.events(&all).await.unwrap().len(), 20);
    let ops = OperationQuery::default();
    assert_eq!(
        s.operations(&ops).await.unwrap(),
        r.operations(&ops).await.unwrap()
    );
    assert_eq!(r.operations(&ops).await.unwrap().len(), 1);
    assert_eq!(s.clusters().await.unwrap(), r.clusters().await.unwrap());
    assert!(r.recoveries_disabled().await.unwrap());
    assert_eq!(
        s.kv_list("").await.unwrap(),
        r.kv_list("").await.unwrap(),
        "settings (fenced marks, the recoveries switch)"
    );
    assert_eq!(r.fenced("c1").await.unwrap().len(), 1);
}
