//! Many concurrent calls of the SQLite store make no threads: the store's own writer and
//! readers run them, and callers wait asynchronously. Before, each call took its own blocking
//! thread and waited there for the one connection, so 200 concurrent API reads made about
//! 300 threads. Its own test binary: it counts the threads of its process.

use std::sync::Arc;

use store::{
    EventLevel, EventQuery, NewEvent, SqliteStore, Store, MAX_EVENT_LIMIT, SQLITE_READERS,
};

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn two_hundred_concurrent_reads_hold_few_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for i in 0..1000u64 {
            s.append_event(&NewEvent {
                at_ms: i,
                cluster: Some("c1".into()),
                instance: None,
                kind: "operator_note".into(),
                level: EventLevel::Info,
                message: format!("note {i}"),
                data: serde_json::json!({ "i": i }),
            })
            .await
            .unwrap();
        }
        let before = threads();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                let q = EventQuery {
                    limit: MAX_EVENT_LIMIT,
                    ..EventQuery::default()
                };
                let events = s.events(&q).await.unwrap();
                assert!(events.len() >= 1000, "{}", events.len());
                assert!(s.clusters().await.unwrap().is_empty());
                if i % 10 == 0 {
                    // Writes interleave with the reads, and the reads that follow see them.
                    let ev = s
                        .append_event(&NewEvent {
                            at_ms: 5000 + i,
                            cluster: Some("c2".into()),
                            instance: None,
                            kind: "operator_note".into(),
                            level: EventLevel::Info,
                            message: format!("late {i}"),
                            data: serde_json::json!({}),
                        })
                        .await
                        .unwrap();
                    let after = s
                        .events(&EventQuery {
                            after_id: Some(ev.id - 1),
                            ..EventQuery::default()
                        })
                        .await
                        .unwrap();
                    assert_eq!(after.first().map(|e| e.id), Some(ev.id));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Idle blocking threads live on for 10 s, so a thread the burst made would still be
        // here; the store's own threads (its writer and readers) were there before it.
        let grown = threads().saturating_sub(before);
        assert!(
            grown <= 2,
            "200 concurrent calls grew the process by {grown} threads (the store has \
             {SQLITE_READERS} readers and a writer)"
        );
    });
}
