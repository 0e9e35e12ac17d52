//! The generic webhook: POST the `Notification` as JSON, with optional extra headers.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::{check_url, client, post_json, redacted_url, Notification, NotifyError, RetryPolicy};
use crate::rule::Severity;

/// Sends each notification as a JSON POST. `Debug` shows the URL's host and the header
/// names only: a path or a header value may be a credential.
pub struct WebhookNotifier {
    name: String,
    url: Url,
    headers: HeaderMap,
    min_severity: Severity,
    retry: RetryPolicy,
    client: reqwest::Client,
}

impl WebhookNotifier {
    /// A webhook to `url` (http or https), sending `headers` with each request.
    pub fn new(
        name: impl Into<String>,
        url: &str,
        headers: HeaderMap,
        min_severity: Severity,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        Ok(Self {
            name: name.into(),
            url: check_url(url)?,
            headers,
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

    /// POST `n`, retrying per the policy.
    pub async fn send(
        &self,
        n: &Notification,
        cancel: &CancellationToken,
    ) -> Result<(), NotifyError> {
        let body = serde_json::to_value(n).map_err(|e| NotifyError::GaveUp {
            attempts: 0,
            last: e.to_string(),
        })?;
        post_json(
            &self.client,
            &self.url,
            &self.headers,
            &body,
            &self.retry,
            cancel,
        )
        .await
    }
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("WebhookNotifier")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("headers", &header_names)
            .field("min_severity", &self.min_severity)
            .field("retry", &self.retry)
            .finish()
    }
}
