//! Refused tokens are logged at most once a minute, over real TCP: a client sending bad
//! tokens in a loop does not flood the log. Its own test binary: the rate limit is per
//! process.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::Server;
use server::ServeOptions;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime: the server's tasks run on this thread, under its subscriber.
#[tokio::test(flavor = "current_thread")]
async fn refused_tokens_log_one_warning_a_minute() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = Server::start(ServeOptions::default()).await;
    for i in 0..30 {
        let a = s
            .raw(
                format!(
                    "POST /api/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong-{i}\r\n\
                     content-length: 2\r\nconnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .await;
        assert_eq!(a.status, 403, "{a:?}");
        assert!(a.json_error().contains("not accepted"));
    }
    s.stop().await;
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("bearer token is not accepted"))
        .collect();
    assert_eq!(refused.len(), 1, "one line for 30 refusals:\n{log}");
    assert!(refused[0].contains("WARN"), "{log}");
    assert!(!log.contains("wrong-"), "no token in the log:\n{log}");
}
