//! Every error the API answers is JSON, over real TCP: the router's limits (413, 414, 431),
//! hyper's own answers to a head it cannot parse or hold (rewritten into JSON), and `axum`
//! extractor rejections (a path segment that is not UTF-8, a malformed body or query).

mod common;

use common::{get, post, Server};
use server::ServeOptions;

#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413() {
    let s = Server::start(ServeOptions::default()).await;
    let big = vec![b'x'; server::MAX_BODY_BYTES + 1];
    for route in ["/api/v1/events", "/api/v1/drt/runs", "/api/v1/downtimes"] {
        let a = s.raw(&post(route, &big)).await;
        assert_eq!(a.status, 413, "{route}: {a:?}");
        assert!(a.json_error().contains("larger than"), "{route}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_long_uri_is_a_json_414() {
    let s = Server::start(ServeOptions::default()).await;
    let long = format!("/api/v1/clusters?x={}", "a".repeat(server::MAX_URI_BYTES));
    let a = s.raw(&get(&long, "")).await;
    assert_eq!(a.status, 414, "{a:?}");
    assert!(a.json_error().contains("URI"));
    s.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_a_json_431() {
    let s = Server::start(ServeOptions::default()).await;
    // Within hyper's limits, past the router's: the router answers.
    let many: String = (0..server::MAX_HEADERS + 1)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    let large = format!("x-big: {}\r\n", "v".repeat(server::MAX_HEAD_BYTES));
    // Past hyper's own limits: hyper answers, and its empty answer is rewritten.
    let very_many: String = (0..server::MAX_HEADERS * 3)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect();
    let huge = format!("x-big: {}\r\n", "v".repeat(100 * 1024));
    let huge_uri = format!("/api/v1/clusters?x={}", "a".repeat(100 * 1024));
    for (what, request) in [
        ("many", get("/api/v1/clusters", &many)),
        ("large", get("/api/v1/clusters", &large)),
        ("very many", get("/api/v1/clusters", &very_many)),
        ("huge", get("/api/v1/clusters", &huge)),
        ("huge URI", get(&huge_uri, "")),
    ] {
        let a = s.raw(&request).await;
        assert_eq!(a.status, 431, "{what}: {a:?}");
        assert!(a.json_error().contains("at most"), "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_request_hyper_cannot_parse_is_a_json_400() {
    let s = Server::start(ServeOptions::default()).await;
    for (what, request) in [
        (
            "control byte in the target",
            &b"GET /api/v1/\x01 HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        ),
        (
            "bad header name",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nba d: 1\r\n\r\n",
        ),
        ("bad version", b"GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n"),
    ] {
        let a = s.raw(request).await;
        assert_eq!(a.status, 400, "{what}: {a:?}");
        assert!(a.json_error().contains("malformed"), "{what}");
    }
    s.stop().await;
}

#[tokio::test]
async fn extractor_rejections_are_json() {
    let s = Server::start(ServeOptions::default()).await;
    // A path segment that is not UTF-8, on every route that takes one.
    for route in [
        "/api/v1/clusters/%FF",
        "/api/v1/clusters/%FF/topology",
        "/api/v1/instances/%FF",
        "/api/v1/instances/%FF/metrics",
        "/api/v1/operations/%FF",
        "/api/v1/drt/runs/%FF",
        "/api/v1/drt/runs/%FF/report.html",
    ] {
        let a = s.raw(&get(route, "")).await;
        assert_eq!(a.status, 400, "{route}: {a:?}");
        a.json_error();
    }
    for route in [
        "/api/v1/clusters/%FF/failover",
        "/api/v1/clusters/%FF/switchover",
        "/api/v1/clusters/%FF/rejoin",
        "/api/v1/clusters/%FF/recoveries/ack",
        "/api/v1/recoveries/%FF",
    ] {
        let a = s.raw(&post(route, b"{}")).await;
        assert_eq!(a.status, 400, "{route}: {a:?}");
        a.json_error();
    }
    let a = s
        .raw(&format!("DELETE /api/v1/downtimes/%FF HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n", common::TOKEN).into_bytes())
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    a.json_error();
    // A malformed query and a malformed body.
    let a = s.raw(&get("/api/v1/events?limit=%FF%FE", "")).await;
    assert_eq!(a.status, 400, "{a:?}");
    a.json_error();
    let a = s.raw(&post("/api/v1/events", b"{\"message\": ")).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.json_error().contains("malformed"));
    s.stop().await;
}

#[tokio::test]
async fn every_free_text_field_is_capped_like_a_note() {
    let s = Server::start(ServeOptions::default()).await;
    let long = "x".repeat(server::MAX_TEXT_BYTES + 1);
    let fits = "x".repeat(server::MAX_TEXT_BYTES);
    for (route, field, body) in [
        (
            "/api/v1/events",
            "message",
            serde_json::json!({"message": long}),
        ),
        (
            "/api/v1/events",
            "cluster",
            serde_json::json!({"message": "m", "cluster": long}),
        ),
        (
            "/api/v1/recoveries/enable",
            "by",
            serde_json::json!({"by": long}),
        ),
        (
            "/api/v1/recoveries/disable",
            "by",
            serde_json::json!({"by": long}),
        ),
        (
            "/api/v1/clusters/main/recoveries/ack",
            "by",
            serde_json::json!({"by": long}),
        ),
        (
            "/api/v1/clusters/main/switchover",
            "to",
            serde_json::json!({"to": long}),
        ),
        (
            "/api/v1/clusters/main/rejoin",
            "instance",
            serde_json::json!({"instance": long}),
        ),
        (
            "/api/v1/downtimes",
            "reason",
            serde_json::json!({"target": "main", "for": "1h", "reason": long, "who": "me"}),
        ),
        (
            "/api/v1/downtimes",
            "who",
            serde_json::json!({"target": "main", "for": "1h", "reason": "r", "who": long}),
        ),
        (
            "/api/v1/downtimes",
            "target",
            serde_json::json!({"target": long, "for": "1h", "reason": "r", "who": "me"}),
        ),
        (
            "/api/v1/downtimes",
            "for",
            serde_json::json!({"target": "main", "for": long, "reason": "r", "who": "me"}),
        ),
    ] {
        let a = s.raw(&post(route, body.to_string().as_bytes())).await;
        assert_eq!(a.status, 400, "{route} {field}: {a:?}");
        let error = a.json_error();
        assert!(
            error.contains(&format!("`{field}`")) && error.contains("at most 4096"),
            "{route} {field}: {error}"
        );
        assert!(error.len() < 200, "the value is not echoed: {error}");
    }
    // At the cap, a note is taken.
    let a = s
        .raw(&post(
            "/api/v1/events",
            serde_json::json!({"message": fits}).to_string().as_bytes(),
        ))
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    s.stop().await;
}
