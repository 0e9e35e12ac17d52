//! PagerDuty Events API v2: a firing alert is a `trigger`, a resolved one a `resolve`, both
//! with the alert key as `dedup_key`, so PagerDuty groups them into one incident.
//!
//! The routing key is a credential: it is read from a file, kept in a `RoutingKey` whose
//! `Debug` is redacted, and never logged.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Url;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::{
    check_url, client, post_json, redacted_url, Notification, NotifyError, RetryPolicy, Status,
};
use crate::rule::Severity;

/// Where events go unless configured otherwise.
pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limit on `payload.summary`, in characters.
const SUMMARY_MAX: usize = 1024;
/// PagerDuty's limit on `dedup_key`, in characters.
const DEDUP_KEY_MAX: usize = 255;

/// An Events v2 integration (routing) key. `Debug` never shows it; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct RoutingKey(String);

impl RoutingKey {
    /// A key from its text (surrounding whitespace removed); `None` when blank or when it
    /// holds whitespace inside.
    pub fn new(key: &str) -> Option<Self> {
        let k = key.trim();
        (!k.is_empty() && !k.chars().any(char::is_whitespace)).then(|| Self(k.to_string()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoutingKey(<redacted>)")
    }
}

/// Sends triggers and resolves to PagerDuty.
pub struct PagerDutyNotifier {
    name: String,
    url: Url,
    routing_key: RoutingKey,
    min_severity: Severity,
    retry: RetryPolicy,
    client: reqwest::Client,
}

impl PagerDutyNotifier {
    /// A notifier posting to `url` (http or https; tests point it at a local
    /// receiver).
    pub fn new(
        name: impl Into<String>,
        url: &str,
        routing_key: RoutingKey,
        min_severity: Severity,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        Ok(Self {
            name: name.into(),
            url: check_url(url)?,
            routing_key,
            min_severity,
            retry,
            client: client(timeout),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The least severity it is sent.
    pub fn min_severity(&self) -> Severity {
        self.min_severity
    }

    /// Send `n` as a trigger or a resolve, retrying per the policy.
    pub async fn send(
        &self,
        n: &Notification,
        cancel: &CancellationToken,
    ) -> Result<(), NotifyError> {
        let body = event(&self.routing_key, n);
        post_json(
            &self.client,
            &self.url,
            &HeaderMap::new(),
            &body,
            &self.retry,
            cancel,
        )
        .await
    }
}

impl fmt::Debug for PagerDutyNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyNotifier")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("routing_key", &self.routing_key)
            .field("min_severity", &self.min_severity)
            .field("retry", &self.retry)
            .finish()
    }
}

/// PagerDuty's severity for an alert's: the names are the same.
pub fn pagerduty_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// The alert key as a `dedup_key`: itself when it fits in 255 characters, else its start
/// and a stable 64-bit FNV-1a hash of the whole key.
pub fn dedup_key(alert_key: &str) -> String {
    if alert_key.chars().count() <= DEDUP_KEY_MAX {
        return alert_key.to_string();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in alert_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let head: String = alert_key.chars().take(DEDUP_KEY_MAX - 17).collect();
    format!("{head}#{h:016x}")
}

/// `s` cut to `max` characters, the last three being `...` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 3).collect();
    out.push_str("...");
    out
}

/// The Events v2 body for `n`. A resolve carries only what PagerDuty requires.
fn event(routing_key: &RoutingKey, n: &Notification) -> Value {
    let dedup = dedup_key(&n.key);
    match n.status {
        Status::Resolved => json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": dedup,
        }),
        Status::Firing => {
            let source = n.instance.clone().unwrap_or_else(|| n.cluster.clone());
            let summary = if n.summary.trim().is_empty() {
                n.key.clone()
            } else {
                n.summary.clone()
            };
            let mut details = Map::new();
            details.insert("alert_key".into(), json!(n.key));
            details.insert("rule".into(), json!(n.rule));
            details.insert("cluster".into(), json!(n.cluster));
            if let Some(i) = &n.instance {
                details.insert("instance".into(), json!(i));
            }
            if let Some(r) = &n.role {
                details.insert("role".into(), json!(r));
            }
            if let Some(v) = n.value {
                details.insert("value".into(), json!(v));
            }
            details.insert("labels".into(), json!(n.labels));
            json!({
                "routing_key": routing_key.expose(),
                "event_action": "trigger",
                "dedup_key": dedup,
                "client": "dbfleet",
                "payload": {
                    "summary": truncate(&summary, SUMMARY_MAX),
                    "source": source,
                    "severity": pagerduty_severity(n.severity),
                    "timestamp": n.started_at,
                    "component": n.instance.as_deref().unwrap_or(&n.cluster),
                    "group": n.cluster,
                    "class": n.rule,
                    "custom_details": details,
                },
            })
        }
    }
}
