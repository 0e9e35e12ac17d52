//! The SQLite schema as an ordered list of migrations, and the code that applies them.
//!
//! `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`; `PRAGMA user_version` holds
//! the version a store file is at. Migrations are append-only: a released one is never edited,
//! a change is a new entry at the end.

use std::path::Path;

use rusqlite::Connection;

use crate::error::StoreError;

/// The migrations, in order. Index `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: clusters, instances, last observations, problems, the append-only event log.
    r#"
    CREATE TABLE clusters (
        name        TEXT PRIMARY KEY NOT NULL,
        spec_json   TEXT NOT NULL,
        writer      TEXT,
        updated_ms  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE instances (
        cluster        TEXT NOT NULL,
        addr           TEXT NOT NULL,
        origin         TEXT NOT NULL CHECK (origin IN ('config', 'discovered')),
        first_seen_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL,
        PRIMARY KEY (cluster, addr)
    ) STRICT;

    -- One row per address: the last observation of that instance.
    CREATE TABLE observations (
        addr              TEXT PRIMARY KEY NOT NULL,
        cluster           TEXT NOT NULL,
        at_ms             INTEGER NOT NULL,
        observation_json  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX observations_by_cluster ON observations (cluster, addr);

    -- One row per opening of a problem; at most one open row per (cluster, key).
    CREATE TABLE problems (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster        TEXT NOT NULL,
        key            TEXT NOT NULL,
        problem_json   TEXT NOT NULL,
        first_seen_ms  INTEGER NOT NULL,
        last_seen_ms   INTEGER NOT NULL,
        cleared_ms     INTEGER
    ) STRICT;
    CREATE UNIQUE INDEX problems_open_key ON problems (cluster, key) WHERE cleared_ms IS NULL;
    CREATE INDEX problems_by_cluster ON problems (cluster, id);

    -- The audit log. Append-only: ids only grow (AUTOINCREMENT never reuses one), and the
    -- triggers below refuse any UPDATE or DELETE.
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms      INTEGER NOT NULL,
        cluster    TEXT,
        instance   TEXT,
        kind       TEXT NOT NULL,
        level      TEXT NOT NULL CHECK (level IN ('info', 'warning', 'error', 'critical')),
        message    TEXT NOT NULL,
        data_json  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_by_cluster ON events (cluster, id);
    CREATE INDEX events_by_kind ON events (kind, id);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
    "#,
    // 2: operations, cluster locks, the leader lease, settings.
    r#"
    CREATE TABLE operations (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster      TEXT NOT NULL,
        kind         TEXT NOT NULL,
        trigger      TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN
                       ('proposed', 'running', 'succeeded', 'rolled_back', 'failed', 'needs_human')),
        step         TEXT NOT NULL,
        data_json    TEXT NOT NULL,
        error        TEXT,
        owner        TEXT NOT NULL,
        created_ms   INTEGER NOT NULL,
        updated_ms   INTEGER NOT NULL,
        finished_ms  INTEGER
    ) STRICT;
    CREATE INDEX operations_by_cluster ON operations (cluster, id);
    CREATE INDEX operations_by_state ON operations (state, id);

    CREATE TABLE cluster_locks (
        cluster     TEXT PRIMARY KEY NOT NULL,
        holder      TEXT NOT NULL,
        expires_ms  INTEGER NOT NULL
    ) STRICT;

    -- At most one row (id = 1): the leader lease.
    CREATE TABLE leader (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        node        TEXT,
        term        INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE settings (
        key         TEXT PRIMARY KEY NOT NULL,
        value_json  TEXT NOT NULL
    ) STRICT;
    "#,
];

/// The schema version this binary writes: the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the store's schema up to [`SCHEMA_VERSION`], one migration per transaction, each
/// setting `user_version` in the same transaction. Refuses a store newer than this binary.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    apply(conn, path, MIGRATIONS)
}

/// [`migrate`] with a given list of migrations.
fn apply(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), StoreError> {
    let known = migrations.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt {
            what: format!("schema version of {}", path.display()),
            detail: format!("user_version is {found}"),
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(found as usize) {
        let version = i + 1;
        let fail = |e: rusqlite::Error| StoreError::Migration {
            version,
            message: e.to_string(),
        };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version as i64)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failed_migration_rolls_back_whole() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new(":memory:");
        apply(&mut conn, path, &["CREATE TABLE a (x INTEGER);"]).unwrap();
        assert_eq!(version(&conn), 1);
        let bad = [
            "CREATE TABLE a (x INTEGER);",
            "CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);",
        ];
        match apply(&mut conn, path, &bad) {
            Err(StoreError::Migration { version: 2, .. }) => {}
            other => panic!("expected a failed migration 2, got {other:?}"),
        }
        assert_eq!(version(&conn), 1);
        let b: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(b, 0, "the half-applied migration must roll back");
        // Fixed, it applies from where the store stands.
        apply(&mut conn, path, &[bad[0], "CREATE TABLE b (x INTEGER);"]).unwrap();
        assert_eq!(version(&conn), 2);
    }

    #[test]
    fn the_real_migrations_apply_from_empty() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(version(&conn), SCHEMA_VERSION);
    }
}
