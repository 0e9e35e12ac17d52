//! The API's listener under connections that hold on: a connection that sends nothing (or
//! half a head, or nothing after a request) is closed after the header timeout, and past the
//! connection limit new connections wait while the ones within it are still answered.

mod common;

use std::time::Duration;

use common::{exchange, Server, EXCHANGE_DEADLINE};
use server::ServeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `c` (EOF or reset) before [`EXCHANGE_DEADLINE`]; what it read
/// before.
async fn closed_by_server(c: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    match tokio::time::timeout(EXCHANGE_DEADLINE, c.read_to_end(&mut got)).await {
        Ok(_) => Ok(got),
        Err(_) => Err(format!(
            "still open after {EXCHANGE_DEADLINE:?}, having read {:?}",
            String::from_utf8_lossy(&got)
        )),
    }
}

const KEEP_ALIVE_GET: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn connections_that_send_nothing_are_closed() {
    let s = Server::start(ServeOptions {
        max_connections: 16,
        header_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // Nothing at all.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    // Half a head, then nothing (slowloris).
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // One request answered, then idle on a kept-alive connection.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    let a = exchange(&mut idle, KEEP_ALIVE_GET).await;
    assert_eq!(a.status, 200, "{a:?}");

    for (what, c) in [
        ("silent", &mut silent),
        ("half", &mut half),
        ("idle", &mut idle),
    ] {
        let got = closed_by_server(c)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            got.is_empty(),
            "{what}: nothing sent before the close: {got:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn past_the_limit_connections_wait_and_those_within_are_answered() {
    let s = Server::start(ServeOptions {
        max_connections: 2,
        header_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    // Two kept-alive connections take both slots.
    let mut a = TcpStream::connect(s.addr).await.unwrap();
    let mut b = TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(exchange(&mut a, KEEP_ALIVE_GET).await.status, 200);
    assert_eq!(exchange(&mut b, KEEP_ALIVE_GET).await.status, 200);

    // A third waits: it is not even accepted.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(KEEP_ALIVE_GET).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the third connection is not served past the limit: {early:?}"
    );

    // Those within are still answered.
    for _ in 0..3 {
        assert_eq!(exchange(&mut a, KEEP_ALIVE_GET).await.status, 200);
    }

    // One closes: the third is served.
    drop(b);
    let answer = tokio::time::timeout(EXCHANGE_DEADLINE, common::read_answer(&mut c))
        .await
        .expect("the third connection is served once a slot frees");
    assert_eq!(answer.status, 200, "{answer:?}");
    drop(a);
    drop(c);
    s.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_a_json_408() {
    let s = Server::start(ServeOptions {
        body_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let a = exchange(
        &mut c,
        format!(
            "POST /api/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"message\": ",
            common::TOKEN
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(a.status, 408, "{a:?}");
    assert!(a.json_error().contains("did not arrive within"));
    closed_by_server(&mut c).await.unwrap();
    s.stop().await;
}
