//! Notifiers against a local HTTP receiver on 127.0.0.1 (an ephemeral port per test): the
//! PagerDuty Events v2 fields, the webhook body and headers, retries on 429/5xx and
//! connection errors, no retry on 400, and the dispatcher.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alert::notify::pagerduty::dedup_key;
use alert::notify::{PagerDutyNotifier, RoutingKey, WebhookNotifier};
use alert::{
    DispatchOptions, Dispatcher, DowntimeTarget, Evaluator, InstanceSnapshot, NewDowntime,
    Notification, Notifier, NotifierStats, NotifyError, Observed, RetryPolicy, RuleSpec, Severity,
    Status, Transition,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ROUTING_KEY: &str = "R0UT1NG0123456789abcdef01234567";

/// One request the receiver got.
#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

struct Inner {
    /// The status (and `Retry-After`) of the n-th reply; the last one repeats.
    script: Vec<(u16, Option<&'static str>)>,
    count: AtomicUsize,
    tx: mpsc::UnboundedSender<Received>,
}

/// A local HTTP receiver started by the test.
struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    rx: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: Vec<(u16, Option<&'static str>)>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            script,
            count: AtomicUsize::new(0),
            tx,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, inner, rx }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn count(&self) -> usize {
        self.inner.count.load(Ordering::SeqCst)
    }

    /// The next request; the guard only stops a broken test from hanging forever.
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("a request within the hang guard")
            .expect("receiver open")
    }
}

async fn handle(
    State(s): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = s.count.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = s.tx.send(Received {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let (status, retry_after) = s.script[n.min(s.script.len() - 1)];
    let status = StatusCode::from_u16(status).unwrap();
    let text = if status == StatusCode::BAD_REQUEST {
        r#"{"status":"invalid event","message":"Event object is invalid"}"#
    } else {
        r#"{"status":"success"}"#
    };
    let mut resp = (status, text).into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    resp
}

/// Retries that take milliseconds, bounded by count.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_total: Duration::from_secs(60),
    }
}

fn pagerduty(url: &str, retry: RetryPolicy) -> PagerDutyNotifier {
    PagerDutyNotifier::new(
        "pd",
        url,
        RoutingKey::new(ROUTING_KEY).unwrap(),
        Severity::Info,
        Duration::from_secs(10),
        retry,
    )
    .unwrap()
}

fn notification(status: Status, severity: Severity, summary: &str) -> Notification {
    Notification {
        status,
        key: "instance_down/c1/db1:3306".into(),
        rule: "instance_down".into(),
        severity,
        cluster: "c1".into(),
        instance: Some("db1:3306".into()),
        role: Some("replica".into()),
        labels: BTreeMap::from([("team".into(), "dba".into())]),
        summary: summary.into(),
        value: Some(0.0),
        started_at: "2025-01-01T00:00:30.000Z".into(),
        resolved_at: None,
    }
}

/// Transitions from a real evaluation: `down` fires on db1 (critical), `busy` on db1
/// (warning), then both resolve.
fn fire_and_resolve() -> (Vec<Transition>, Vec<Transition>) {
    let spec = |body: &str| {
        toml::from_str::<RuleSpec>(body)
            .unwrap()
            .validate()
            .unwrap()
    };
    let mut ev = Evaluator::new(vec![
        spec("name = \"down\"\nmetric = \"up\"\nop = \"<\"\nthreshold = 1\nseverity = \"critical\"\nlabels = { team = \"dba\" }"),
        spec("name = \"busy\"\nmetric = \"threads_running\"\nop = \">\"\nthreshold = 10\nseverity = \"warning\""),
    ]);
    let obs = |up: f64, threads: f64| Observed {
        instances: vec![InstanceSnapshot {
            cluster: "c1".into(),
            instance: "db1:3306".into(),
            role: "replica".into(),
            metrics: BTreeMap::from([("up".into(), up), ("threads_running".into(), threads)]),
            problems: vec![],
        }],
        clusters: vec![],
    };
    let fired = ev.evaluate(1_735_689_600_000, &obs(0.0, 50.0));
    let resolved = ev.evaluate(1_735_689_660_000, &obs(1.0, 1.0));
    (fired, resolved)
}

#[tokio::test]
async fn pagerduty_trigger_and_resolve_have_the_events_v2_required_fields() {
    let mut rx = Receiver::start(vec![(202, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(1));
    let cancel = CancellationToken::new();
    let (fired, resolved) = fire_and_resolve();

    let trigger = Notification::from_transition(&fired[0]).unwrap();
    pd.send(&trigger, &cancel).await.unwrap();
    let got = rx.next().await;
    assert_eq!(got.path, "/v2/enqueue");
    assert_eq!(got.headers.get("content-type").unwrap(), "application/json");
    let b = &got.body;
    assert_eq!(b["routing_key"], ROUTING_KEY);
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], "down/c1/db1:3306");
    let p = &b["payload"];
    assert!(p["summary"]
        .as_str()
        .is_some_and(|s| !s.is_empty() && s.chars().count() <= 1024));
    assert_eq!(p["source"], "db1:3306");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "db1:3306");
    assert_eq!(p["group"], "c1");
    assert_eq!(p["class"], "down");
    assert_eq!(p["timestamp"], "2025-01-01T00:00:00.000Z");
    assert_eq!(p["custom_details"]["labels"]["team"], "dba");
    assert_eq!(p["custom_details"]["alert_key"], "down/c1/db1:3306");

    let resolve = Notification::from_transition(&resolved[0]).unwrap();
    assert_eq!(resolve.status, Status::Resolved);
    pd.send(&resolve, &cancel).await.unwrap();
    let got = rx.next().await;
    let obj = got.body.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["dedup_key", "event_action", "routing_key"]);
    assert_eq!(got.body["event_action"], "resolve");
    assert_eq!(got.body["dedup_key"], "down/c1/db1:3306");
    assert_eq!(got.body["routing_key"], ROUTING_KEY);
}

#[tokio::test]
async fn pagerduty_severities_summaries_and_dedup_keys_stay_in_bounds() {
    let mut rx = Receiver::start(vec![(202, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(1));
    let cancel = CancellationToken::new();
    let allowed = ["critical", "error", "warning", "info"];
    for (sev, want) in [
        (Severity::Critical, "critical"),
        (Severity::Error, "error"),
        (Severity::Warning, "warning"),
        (Severity::Info, "info"),
    ] {
        let long = "x".repeat(3000);
        pd.send(&notification(Status::Firing, sev, &long), &cancel)
            .await
            .unwrap();
        let got = rx.next().await;
        let p = &got.body["payload"];
        assert_eq!(p["severity"], want);
        assert!(allowed.contains(&p["severity"].as_str().unwrap()));
        let summary = p["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), 1024);
        assert!(summary.ends_with("..."));
    }

    // A cluster-wide alert: the source is the cluster; a blank summary falls back to the key.
    let mut n = notification(Status::Firing, Severity::Critical, " ");
    n.instance = None;
    n.key = "pages/c1".into();
    pd.send(&n, &cancel).await.unwrap();
    let got = rx.next().await;
    assert_eq!(got.body["payload"]["source"], "c1");
    assert_eq!(got.body["payload"]["summary"], "pages/c1");

    // dedup_key is at most 255 characters and stable.
    let long_key = format!("rule/{}/db:1", "c".repeat(400));
    let k = dedup_key(&long_key);
    assert_eq!(k.chars().count(), 255);
    assert_eq!(k, dedup_key(&long_key));
    assert_ne!(k, dedup_key(&format!("{long_key}2")));
    assert_eq!(dedup_key("short/c1/db:1"), "short/c1/db:1");
}

#[tokio::test]
async fn retries_on_429_and_503_then_succeeds() {
    let rx = Receiver::start(vec![(429, Some("0")), (503, None), (202, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(5));
    pd.send(
        &notification(Status::Firing, Severity::Critical, "down"),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(rx.count(), 3);

    let rx = Receiver::start(vec![(500, None), (502, None), (200, None)]).await;
    let hook = webhook(&rx.url("/hook"), HeaderMap::new(), fast_retry(3));
    hook.send(
        &notification(Status::Firing, Severity::Critical, "down"),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(rx.count(), 3);
}

#[tokio::test]
async fn no_retry_on_400() {
    let rx = Receiver::start(vec![(400, None), (202, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(5));
    let err = pd
        .send(
            &notification(Status::Firing, Severity::Critical, "down"),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(rx.count(), 1);
    match &err {
        NotifyError::Rejected { status, body } => {
            assert_eq!(*status, 400);
            assert!(body.contains("Event object is invalid"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(!text.contains(ROUTING_KEY) && !format!("{err:?}").contains(ROUTING_KEY));

    // Other 4xx are not retried either.
    let rx = Receiver::start(vec![(404, None), (202, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(5));
    let err = pd
        .send(
            &notification(Status::Resolved, Severity::Critical, "down"),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Rejected { status: 404, .. }));
    assert_eq!(rx.count(), 1);
}

#[tokio::test]
async fn gives_up_after_the_attempt_limit() {
    let rx = Receiver::start(vec![(503, None)]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(3));
    let err = pd
        .send(
            &notification(Status::Firing, Severity::Critical, "down"),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NotifyError::GaveUp { attempts: 3, last } if last == "HTTP 503"),
        "{err:?}"
    );
    assert_eq!(rx.count(), 3);

    // A Retry-After beyond the total budget stops the retries at once.
    let rx = Receiver::start(vec![(429, Some("3600"))]).await;
    let pd = pagerduty(&rx.url("/v2/enqueue"), fast_retry(5));
    let err = pd
        .send(
            &notification(Status::Firing, Severity::Critical, "down"),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::GaveUp { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(rx.count(), 1);
}

#[tokio::test]
async fn retries_connection_errors() {
    // A port that was just free: nothing listens on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pd = pagerduty(
        &format!("http://127.0.0.1:{port}/v2/enqueue"),
        fast_retry(2),
    );
    let err = pd
        .send(
            &notification(Status::Firing, Severity::Critical, "down"),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::GaveUp { attempts: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let p = RetryPolicy::default();
    let waits: Vec<u64> = (0..8).map(|i| p.backoff(i).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
}

fn webhook(url: &str, headers: HeaderMap, retry: RetryPolicy) -> WebhookNotifier {
    WebhookNotifier::new(
        "hook",
        url,
        headers,
        Severity::Info,
        Duration::from_secs(10),
        retry,
    )
    .unwrap()
}

#[tokio::test]
async fn webhook_posts_the_alert_as_json_with_extra_headers() {
    let mut rx = Receiver::start(vec![(200, None)]).await;
    let mut headers = HeaderMap::new();
    headers.insert("x-team", "dba".parse().unwrap());
    headers.insert("authorization", "Bearer t0ken".parse().unwrap());
    let hook = webhook(&rx.url("/hooks/dbfleet"), headers, fast_retry(1));
    assert!(!format!("{hook:?}").contains("t0ken"));
    assert!(!format!("{hook:?}").contains("/hooks/dbfleet"));
    let cancel = CancellationToken::new();
    let (fired, resolved) = fire_and_resolve();

    hook.send(&Notification::from_transition(&fired[0]).unwrap(), &cancel)
        .await
        .unwrap();
    let got = rx.next().await;
    assert_eq!(got.path, "/hooks/dbfleet");
    assert_eq!(got.headers["x-team"], "dba");
    assert_eq!(got.headers["authorization"], "Bearer t0ken");
    let want = serde_json::json!({
        "status": "firing",
        "key": "down/c1/db1:3306",
        "rule": "down",
        "severity": "critical",
        "cluster": "c1",
        "instance": "db1:3306",
        "role": "replica",
        "labels": {"team": "dba"},
        "summary": "up < 1 on db1:3306 (c1): 0",
        "value": 0.0,
        "started_at": "2025-01-01T00:00:00.000Z",
        "resolved_at": null,
    });
    assert_eq!(got.body, want);

    hook.send(
        &Notification::from_transition(&resolved[0]).unwrap(),
        &cancel,
    )
    .await
    .unwrap();
    let got = rx.next().await;
    assert_eq!(got.body["status"], "resolved");
    assert_eq!(got.body["resolved_at"], "2025-01-01T00:01:00.000Z");
    assert_eq!(got.body["started_at"], "2025-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn the_dispatcher_fans_out_by_severity_and_counts() {
    let mut hook_rx = Receiver::start(vec![(200, None)]).await;
    let mut pd_rx = Receiver::start(vec![(202, None)]).await;
    let bad_rx = Receiver::start(vec![(400, None)]).await;
    let pd = PagerDutyNotifier::new(
        "pd",
        &pd_rx.url("/v2/enqueue"),
        RoutingKey::new(ROUTING_KEY).unwrap(),
        Severity::Error,
        Duration::from_secs(10),
        fast_retry(3),
    )
    .unwrap();
    let bad = WebhookNotifier::new(
        "bad",
        &bad_rx.url("/"),
        HeaderMap::new(),
        Severity::Info,
        Duration::from_secs(10),
        fast_retry(3),
    )
    .unwrap();
    let dispatcher = Dispatcher::start(
        vec![
            Notifier::Webhook(webhook(
                &hook_rx.url("/hook"),
                HeaderMap::new(),
                fast_retry(3),
            )),
            Notifier::PagerDuty(pd),
            Notifier::Webhook(bad),
        ],
        DispatchOptions { queue_capacity: 16 },
    );
    let stats = dispatcher.stats();

    let (fired, resolved) = fire_and_resolve();
    // `down` is critical, `busy` a warning: PagerDuty (min error) gets only `down`.
    dispatcher.submit(&fired);
    dispatcher.submit(&resolved);

    let mut hook_got = Vec::new();
    for _ in 0..4 {
        let r = hook_rx.next().await;
        hook_got.push((
            r.body["rule"].as_str().unwrap().to_string(),
            r.body["status"].as_str().unwrap().to_string(),
        ));
    }
    let mut pd_got = Vec::new();
    for _ in 0..2 {
        let r = pd_rx.next().await;
        pd_got.push((
            r.body["dedup_key"].as_str().unwrap().to_string(),
            r.body["event_action"].as_str().unwrap().to_string(),
        ));
    }
    // Per notifier, order is kept: a resolve never overtakes its trigger.
    assert_eq!(
        hook_got,
        [
            ("down".into(), "firing".into()),
            ("busy".into(), "firing".into()),
            ("down".into(), "resolved".into()),
            ("busy".into(), "resolved".into()),
        ]
    );
    assert_eq!(
        pd_got,
        [
            ("down/c1/db1:3306".to_string(), "trigger".to_string()),
            ("down/c1/db1:3306".to_string(), "resolve".to_string()),
        ]
    );

    dispatcher.shutdown(Duration::from_secs(60)).await;
    assert_eq!(
        stats.snapshot(),
        [
            NotifierStats {
                name: "hook".into(),
                sent: 4,
                failed: 0,
                dropped: 0
            },
            NotifierStats {
                name: "pd".into(),
                sent: 2,
                failed: 0,
                dropped: 0
            },
            NotifierStats {
                name: "bad".into(),
                sent: 0,
                failed: 4,
                dropped: 0
            },
        ]
    );
    // The 400s were not retried.
    assert_eq!(bad_rx.count(), 4);
}

#[tokio::test]
async fn the_dispatcher_sends_nothing_for_a_silenced_alert_until_its_downtime_ends() {
    let mut rx = Receiver::start(vec![(202, None)]).await;
    let dispatcher = Dispatcher::start(
        vec![Notifier::PagerDuty(pagerduty(
            &rx.url("/v2/enqueue"),
            fast_retry(1),
        ))],
        DispatchOptions::default(),
    );
    let stats = dispatcher.stats();
    let rule = toml::from_str::<RuleSpec>(
        "name = \"down\"\nmetric = \"up\"\nop = \"<\"\nthreshold = 1\nfor = \"30s\"\nseverity = \"critical\"",
    )
    .unwrap()
    .validate()
    .unwrap();
    let mut ev = Evaluator::new(vec![rule]);
    ev.add_downtime(
        0,
        NewDowntime {
            target: DowntimeTarget::Instance("db1:3306".into()),
            ends_at: 100_000,
            reason: "disk swap".into(),
            who: "bob".into(),
        },
    )
    .unwrap();
    let obs = Observed {
        instances: vec![InstanceSnapshot {
            cluster: "c1".into(),
            instance: "db1:3306".into(),
            role: "primary".into(),
            metrics: BTreeMap::from([("up".into(), 0.0)]),
            problems: vec![],
        }],
        clusters: vec![],
    };
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    for now in [0, 30_000, 60_000, 100_000, 110_000] {
        let ts = ev.evaluate(now, &obs);
        log.lock().unwrap().extend(
            ts.iter()
                .map(|t| format!("{now} {} pages={}", t.kind, t.pages())),
        );
        dispatcher.submit(&ts);
    }
    assert_eq!(
        *log.lock().unwrap(),
        [
            "30000 fired_silenced pages=false",
            "100000 downtime_ended pages=true"
        ]
    );
    let got = rx.next().await;
    assert_eq!(got.body["event_action"], "trigger");
    dispatcher.shutdown(Duration::from_secs(60)).await;
    assert_eq!(stats.snapshot()[0].sent, 1);
    assert_eq!(rx.count(), 1);
}
