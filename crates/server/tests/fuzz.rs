//! A small fuzz-style test over every route of the router, over real TCP: junk paths, path
//! parameters, query values, headers and bodies from a seeded generator (the same requests on
//! every run), each sent on its own connection. No answer may be a 5xx (but the 503 of the
//! alerting routes, which no alerting runs behind here), no request may go unanswered (a
//! handler that panics drops its connection), and every error is JSON.
//!
//! The server runs with an operations engine that leads, over one cluster whose instance
//! does not answer, so the operation routes run their real code.

mod common;

use std::sync::Arc;

use common::Server;
use serde_json::Value;
use server::ServeOptions;

/// How many requests one run sends.
const REQUESTS: usize = 400;
/// The generator's seed: change it to explore, keep it to reproduce.
const SEED: u64 = 0x15_15_15_15;

/// SplitMix64: small, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Every route of the router, with `{}` where a path parameter goes.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/clusters"),
    ("GET", "/api/v1/clusters/{}"),
    ("GET", "/api/v1/clusters/{}/topology"),
    ("GET", "/api/v1/instances"),
    ("GET", "/api/v1/instances/{}"),
    ("GET", "/api/v1/instances/{}/metrics"),
    ("GET", "/api/v1/problems"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/operations"),
    ("GET", "/api/v1/operations/{}"),
    ("GET", "/api/v1/recoveries"),
    ("GET", "/api/v1/leader"),
    ("GET", "/api/v1/drt/runs"),
    ("GET", "/api/v1/drt/runs/{}"),
    ("GET", "/api/v1/drt/runs/{}/report.html"),
    ("GET", "/api/v1/drt/running"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/downtimes"),
    ("GET", "/api/v1/route/main/{}/writer"),
    ("GET", "/api/v1/route/{}/127.0.0.1:9/reader"),
    ("GET", "/api/v1/route/main/127.0.0.1:9/{}"),
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/clusters/{}/failover"),
    ("POST", "/api/v1/clusters/{}/switchover"),
    ("POST", "/api/v1/clusters/{}/rejoin"),
    ("POST", "/api/v1/clusters/{}/recoveries/ack"),
    ("POST", "/api/v1/recoveries/{}"),
    ("POST", "/api/v1/drt/runs"),
    ("POST", "/api/v1/drt/abort"),
    ("POST", "/api/v1/downtimes"),
    ("DELETE", "/api/v1/downtimes/{}"),
];

const PARAMS: &[&str] = &[
    "main",
    "nope",
    "enable",
    "disable",
    "127.0.0.1:9",
    "[::1]:3306",
    "host:99999",
    "0",
    "-1",
    "18446744073709551616",
    "%FF",
    "%00",
    "%C3%28",
    "%E2%80%AE",
    "%F0%9F%92%A9",
    "..",
    "%2E%2E",
    "%2F",
    "a%20b",
    "%25",
    "20261126T131500Z-kill-primary",
];

const JUNK_PATHS: &[&str] = &[
    "/",
    "//",
    "/%FF",
    "/api",
    "/api/v1",
    "/api/v1/",
    "/api/v1//clusters",
    "/api/v1/clusters/",
    "/api/v2/clusters",
    "/api/v1/clusters/main/topology/extra",
    "/api/v1/../healthz",
    "/api/v1/clusters/main%2Ftopology",
    "/healthz/",
    "/HEALTHZ",
    "*",
];

const QUERY_NAMES: &[&str] = &[
    "limit", "after_id", "cluster", "kind", "history", "state", "since", "x", "", "%FF", "limit[]",
];

const QUERY_VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "10001",
    "99999999999999999999",
    "1e9",
    "true",
    "maybe",
    "main",
    "a,,b",
    "1h",
    "%FF",
    "%00",
    "%2C",
    "succeeded,nope",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"];

const AUTHS: &[&str] = &[
    "",
    "authorization: Bearer t0ken-for-hostile-tests\r\n",
    "authorization: Bearer wrong\r\n",
    "authorization: Basic dXNlcjpwYXNz\r\n",
    "authorization: Bearer\r\n",
    "authorization: bearer   t0ken-for-hostile-tests  \r\n",
    "authorization: \r\n",
];

const CONTENT_TYPES: &[&str] = &[
    "",
    "content-type: application/json\r\n",
    "content-type: text/plain\r\n",
    "content-type: application/json; charset=utf-16\r\n",
    "content-type: ;;;\r\n",
];

const ACCEPTS: &[&str] = &[
    "",
    "accept: application/openmetrics-text\r\n",
    "accept: */*\r\n",
    "accept: \u{1}\r\n",
];

/// A junk body.
fn body(rng: &mut Rng) -> Vec<u8> {
    const FIXED: &[&str] = &[
        "",
        "{",
        "}",
        "null",
        "[]",
        "{}",
        "\"text\"",
        "1e999",
        "{\"message\": 1}",
        "{\"message\": \"note from the fuzz test\"}",
        "{\"message\": \"   \"}",
        "{\"message\": \"m\", \"cluster\": \"nope\"}",
        "{\"message\": \"m\", \"extra\": true}",
        "{\"message\": \"\\u0000\\u001b[31m\"}",
        "{\"by\": \"fuzz\"}",
        "{\"by\": null}",
        "{\"by\": 5}",
        "{\"to\": \"127.0.0.1:9\"}",
        "{\"to\": \"nope\"}",
        "{\"instance\": \"127.0.0.1:9\"}",
        "{\"instance\": \"\"}",
        "{\"target\": \"main\", \"for\": \"1h\", \"reason\": \"r\", \"who\": \"w\"}",
        "{\"target\": \"main\", \"for\": \"-1h\", \"reason\": \"r\", \"who\": \"w\"}",
        "{\"target\": \"127.0.0.1:9\", \"for\": \"100000h\", \"reason\": \"\", \"who\": \"w\"}",
        "{\"scenario\": {}, \"runs\": []}",
    ];
    match rng.below(10) {
        0 => {
            // Deeply nested arrays.
            let depth = 1 + rng.below(600);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        1 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        2 => {
            let field = rng.pick(&["message", "by", "to", "instance", "reason", "who"]);
            format!("{{\"{field}\": \"{}\"}}", "y".repeat(rng.below(9000))).into_bytes()
        }
        _ => rng.pick(FIXED).as_bytes().to_vec(),
    }
}

/// One junk request, and a line saying what it is.
fn request(rng: &mut Rng) -> (Vec<u8>, String) {
    let (mut method, template) = ROUTES[rng.below(ROUTES.len())];
    let mut path = if rng.chance(8) {
        rng.pick(JUNK_PATHS).to_string()
    } else if template.contains("{}") {
        let param = if rng.chance(5) {
            "p".repeat(1 + rng.below(3000))
        } else {
            rng.pick(PARAMS).to_string()
        };
        template.replace("{}", &param)
    } else {
        template.to_string()
    };
    if rng.chance(10) {
        method = rng.pick(METHODS);
    }
    if rng.chance(50) {
        let pairs: Vec<String> = (0..1 + rng.below(3))
            .map(|_| {
                let value = if rng.chance(5) {
                    "z".repeat(rng.below(2000))
                } else {
                    rng.pick(QUERY_VALUES).to_string()
                };
                format!("{}={value}", rng.pick(QUERY_NAMES))
            })
            .collect();
        path = format!("{path}?{}", pairs.join("&"));
    }
    let mut headers = String::new();
    headers.push_str(rng.pick(AUTHS));
    headers.push_str(rng.pick(CONTENT_TYPES));
    headers.push_str(rng.pick(ACCEPTS));
    for i in 0..rng.below(4) {
        let value: String = (0..rng.below(100))
            .map(|_| char::from(b' ' + (rng.next() % 95) as u8))
            .collect();
        headers.push_str(&format!("x-junk-{i}: {}\r\n", value.trim()));
    }
    let body = if method != "GET" || rng.chance(20) {
        body(rng)
    } else {
        Vec::new()
    };
    let what = format!(
        "{method} {} ({} header bytes, {} body bytes)",
        &path[..path.len().min(120)],
        headers.len(),
        body.len()
    );
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    (raw, what)
}

#[tokio::test]
async fn junk_on_every_route_gets_no_5xx_and_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn store::Store> = Arc::new(store::SqliteStore::open(dir.path()).unwrap());
    let e = common::engine(store.clone(), "fuzz").await;
    let s = Server::start_on(store, dir, ServeOptions::default(), |mut state| {
        state.engine = Some(e.clone());
        state
    })
    .await;
    // Ready: a round of probes has finished.
    s.stats
        .rounds
        .store(1, std::sync::atomic::Ordering::Relaxed);
    // DBFLEET_FUZZ_SEED and DBFLEET_FUZZ_REQUESTS explore further; the defaults are what CI
    // runs.
    let seed = std::env::var("DBFLEET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED);
    let requests = std::env::var("DBFLEET_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REQUESTS);
    let mut rng = Rng(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..requests {
        let (raw, what) = request(&mut rng);
        let a = s.raw(&raw).await;
        *statuses.entry(a.status).or_default() += 1;
        let alerting_off =
            a.status == 503 && String::from_utf8_lossy(&a.body).contains("alerting does not run");
        assert!(
            a.status < 500 || alerting_off,
            "request {i}: {what}: a {} ({:?})",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        if a.status >= 400 {
            let error = std::panic::catch_unwind(|| a.json_error());
            assert!(
                error.is_ok(),
                "request {i}: {what}: not a JSON error: {a:?}"
            );
        } else if a.header("content-type") == Some("application/json") {
            serde_json::from_slice::<Value>(&a.body)
                .unwrap_or_else(|e| panic!("request {i}: {what}: bad JSON ({e})"));
        }
    }
    eprintln!("seed {seed}: statuses over {requests} requests: {statuses:?}");
    // The junk reached the handlers, not only the edges: most answers are 2xx or 4xx of many
    // kinds.
    assert!(statuses.len() >= 6, "{statuses:?}");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    s.stop().await;
    e.stop_tasks();
}
