//! Notifiers: what is sent when an alert pages or resolves, and the HTTP delivery with
//! retries shared by the webhook and PagerDuty notifiers.

pub mod pagerduty;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::eval::{Transition, TransitionKind};
use crate::rule::Severity;
use crate::UnixMs;

pub use pagerduty::{PagerDutyNotifier, RoutingKey, DEFAULT_PAGERDUTY_URL};
pub use webhook::WebhookNotifier;

/// Whether an alert is firing or resolved, as notifiers say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It pages.
    Firing,
    /// It ended.
    Resolved,
}

/// One page or resolve, as sent to notifiers. This is also the generic webhook's JSON body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notification {
    /// Firing or resolved.
    pub status: Status,
    /// The alert key (`rule/cluster/instance`): the dedup key.
    pub key: String,
    /// The rule's name.
    pub rule: String,
    /// The alert's severity.
    pub severity: Severity,
    /// The cluster.
    pub cluster: String,
    /// The instance, absent for a cluster-wide alert.
    pub instance: Option<String>,
    /// The instance's role, when known.
    pub role: Option<String>,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
    /// One line for humans.
    pub summary: String,
    /// The metric's value, for metric rules.
    pub value: Option<f64>,
    /// When the alert fired, RFC 3339 in UTC.
    pub started_at: String,
    /// When it resolved, RFC 3339 in UTC; absent while firing.
    pub resolved_at: Option<String>,
}

impl Notification {
    /// The notification for a transition, or `None` if it does not page (see
    /// [`Transition::pages`]).
    pub fn from_transition(t: &Transition) -> Option<Self> {
        if !t.pages() {
            return None;
        }
        let a = &t.alert;
        let status = match t.kind {
            TransitionKind::Resolved => Status::Resolved,
            _ => Status::Firing,
        };
        Some(Self {
            status,
            key: a.key.clone(),
            rule: a.rule.clone(),
            severity: a.severity,
            cluster: a.cluster.clone(),
            instance: a.instance.clone(),
            role: a.role.clone(),
            labels: a.labels.clone(),
            summary: a.summary.clone(),
            value: a.value,
            started_at: rfc3339(a.started_at.unwrap_or(a.pending_since)),
            resolved_at: a.resolved_at.map(rfc3339),
        })
    }
}

fn rfc3339(ms: UnixMs) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Why a notification was not delivered. No variant holds a URL path, header value or key.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The receiver refused it with a status that retrying cannot fix (4xx other than
    /// 429). The body is its first 256 characters, on one line.
    #[error("rejected with HTTP {status}: {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// Every attempt allowed by the retry policy failed (429, 5xx or no connection).
    #[error("gave up after {attempts} attempt(s): {last}")]
    GaveUp {
        /// How many requests were made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
    },
    /// The dispatcher shut down while it was being sent.
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// How failed deliveries are retried: on 429, 5xx and connection errors, with exponential
/// backoff (or the receiver's `Retry-After`, in seconds), within a count and a total time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// The most requests per notification, the first included.
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles at each retry.
    #[serde(
        default = "RetryPolicy::default_initial_backoff",
        with = "humantime_serde"
    )]
    pub initial_backoff: Duration,
    /// The longest wait between two attempts computed by backoff.
    #[serde(default = "RetryPolicy::default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt.
    #[serde(default = "RetryPolicy::default_max_total", with = "humantime_serde")]
    pub max_total: Duration,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        5
    }
    fn default_initial_backoff() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max_backoff() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_total() -> Duration {
        Duration::from_secs(120)
    }

    /// The wait before retry number `retry` (0 for the first retry):
    /// `initial_backoff * 2^retry`, at most `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 {
            return Err(("max_attempts", "must be at least 1".into()));
        }
        if self.initial_backoff > self.max_backoff {
            return Err((
                "initial_backoff",
                "must not be longer than max_backoff".into(),
            ));
        }
        Ok(())
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::default_max_attempts(),
            initial_backoff: Self::default_initial_backoff(),
            max_backoff: Self::default_max_backoff(),
            max_total: Self::default_max_total(),
        }
    }
}

/// A configured notifier. One `match` dispatches to each kind.
#[derive(Debug)]
pub enum Notifier {
    /// The generic JSON webhook.
    Webhook(WebhookNotifier),
    /// PagerDuty Events API v2.
    PagerDuty(PagerDutyNotifier),
}

impl Notifier {
    /// Its name, for logs and stats.
    pub fn name(&self) -> &str {
        match self {
            Notifier::Webhook(n) => n.name(),
            Notifier::PagerDuty(n) => n.name(),
        }
    }

    /// The least severity it is sent.
    pub fn min_severity(&self) -> Severity {
        match self {
            Notifier::Webhook(n) => n.min_severity(),
            Notifier::PagerDuty(n) => n.min_severity(),
        }
    }

    /// Deliver one notification, retrying as its policy allows, until `cancel` fires.
    pub async fn send(
        &self,
        n: &Notification,
        cancel: &CancellationToken,
    ) -> Result<(), NotifyError> {
        match self {
            Notifier::Webhook(w) => w.send(n, cancel).await,
            Notifier::PagerDuty(p) => p.send(n, cancel).await,
        }
    }
}

/// Check a notifier URL: it must parse and be `http` or `https` (reqwest's `rustls-tls`,
/// with the bundled web PKI roots); see docs/ALERTING.md.
pub(crate) fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("unsupported scheme {other:?}: use http or https")),
    }
}

/// A URL for logs and `Debug`: scheme, host and port only (a webhook path may be a secret).
pub(crate) fn redacted_url(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}/<redacted>", url.scheme()),
        _ => "<redacted>".into(),
    }
}

/// Build the HTTP client of one notifier.
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("dbfleet-alert/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only TLS backend initialisation can fail (rustls with bundled roots does not).
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// POST `body` as JSON to `url`, retrying on 429, 5xx and connection errors per `policy`.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    body: &serde_json::Value,
    policy: &RetryPolicy,
    cancel: &CancellationToken,
) -> Result<(), NotifyError> {
    let first = tokio::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let request = client
            .post(url.clone())
            .headers(headers.clone())
            .json(body)
            .send();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(NotifyError::Cancelled),
            r = request => r,
        };
        let (why, retry_after) = match result {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    (format!("HTTP {}", status.as_u16()), retry_after)
                } else {
                    let text = resp.text().await.unwrap_or_default();
                    return Err(NotifyError::Rejected {
                        status: status.as_u16(),
                        body: one_line(&text, 256),
                    });
                }
            }
            Err(e) => {
                // `without_url`: a webhook URL may hold a token in its path.
                let e = e.without_url();
                if e.is_builder() {
                    return Err(NotifyError::GaveUp {
                        attempts,
                        last: e.to_string(),
                    });
                }
                (error_chain(&e), None)
            }
        };
        let wait = retry_after.unwrap_or_else(|| policy.backoff(attempts - 1));
        if attempts >= policy.max_attempts || first.elapsed() + wait > policy.max_total {
            return Err(NotifyError::GaveUp {
                attempts,
                last: why,
            });
        }
        tracing::debug!(attempt = attempts, wait_ms = wait.as_millis() as u64, reason = %why, "notification retry");
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(NotifyError::Cancelled),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `Retry-After` in seconds (an HTTP date is ignored: the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// At most `max` characters of `s`, control characters replaced by spaces.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
