//! The `[alert]` config section: rules, notifiers and the dispatcher's queue, with
//! validation that names the field, and the building of notifiers (which reads their secret
//! files, on demand, never while loading config).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::notify::{
    check_url, Notifier, PagerDutyNotifier, RetryPolicy, RoutingKey, WebhookNotifier,
    DEFAULT_PAGERDUTY_URL,
};
use crate::rule::{validate_rules, Rule, RuleSpec, Severity};
use crate::ValidationError;

/// The `[alert]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Whether the default rules apply. A `[[alert.rule]]` of the same name replaces one, or
    /// with `enabled = false` switches it off.
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Notifications waiting per notifier before new ones are dropped.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// The `[[alert.rule]]` entries.
    #[serde(default)]
    pub rule: Vec<RuleSpec>,
    /// The `[[alert.notifier]]` entries.
    #[serde(default)]
    pub notifier: Vec<NotifierSpec>,
}

fn yes() -> bool {
    true
}

fn default_queue_capacity() -> usize {
    1024
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            default_rules: true,
            queue_capacity: default_queue_capacity(),
            rule: Vec::new(),
            notifier: Vec::new(),
        }
    }
}

/// One `[[alert.notifier]]` entry, told apart by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifierSpec {
    /// `kind = "webhook"`.
    Webhook(WebhookSpec),
    /// `kind = "pagerduty"`.
    Pagerduty(PagerDutySpec),
}

/// A generic JSON webhook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Its name in logs and stats; defaults to `webhook`. Unique among notifiers.
    #[serde(default)]
    pub name: Option<String>,
    /// Where to POST (http or https).
    pub url: String,
    /// Extra headers that are not secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A file of secret headers, one `Name: value` a line (`#` starts a comment), read when
    /// the notifier is built. Relative to the config file's directory.
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
    /// The least severity sent; defaults to `info` (everything that pages).
    #[serde(default = "info")]
    pub min_severity: Severity,
    /// Each request's timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

/// PagerDuty Events API v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutySpec {
    /// Its name in logs and stats; defaults to `pagerduty`. Unique among notifiers.
    #[serde(default)]
    pub name: Option<String>,
    /// The Events v2 endpoint.
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// The file holding the integration's routing key, read when the notifier is built.
    /// Relative to the config file's directory.
    pub routing_key_file: PathBuf,
    /// The least severity sent; defaults to `error`.
    #[serde(default = "error")]
    pub min_severity: Severity,
    /// Each request's timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn info() -> Severity {
    Severity::Info
}

fn error() -> Severity {
    Severity::Error
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_pagerduty_url() -> String {
    DEFAULT_PAGERDUTY_URL.to_string()
}

impl NotifierSpec {
    /// Its name: `name`, or the kind.
    pub fn name(&self) -> &str {
        match self {
            NotifierSpec::Webhook(w) => w.name.as_deref().unwrap_or("webhook"),
            NotifierSpec::Pagerduty(p) => p.name.as_deref().unwrap_or("pagerduty"),
        }
    }

    /// Check the fields that need no file: the URL, the header names and values, the
    /// timeout and the retry policy. Errors name fields relative to the notifier.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut errors = Vec::new();
        let (url, timeout, retry) = match self {
            NotifierSpec::Webhook(w) => (&w.url, w.timeout, &w.retry),
            NotifierSpec::Pagerduty(p) => (&p.url, p.timeout, &p.retry),
        };
        if let Err(m) = check_url(url) {
            errors.push(ValidationError::new("url", m));
        }
        if timeout.is_zero() {
            errors.push(ValidationError::new("timeout", "must be above zero"));
        }
        if let Err((field, m)) = retry.check() {
            errors.push(ValidationError::new(format!("retry.{field}"), m));
        }
        match self {
            NotifierSpec::Webhook(w) => {
                for (k, v) in &w.headers {
                    if let Err(m) = header(k, v) {
                        errors.push(ValidationError::new(format!("headers.{k}"), m));
                    }
                }
            }
            NotifierSpec::Pagerduty(p) => {
                if p.routing_key_file.as_os_str().is_empty() {
                    errors.push(ValidationError::new(
                        "routing_key_file",
                        "must not be empty",
                    ));
                }
            }
        }
        errors
    }

    /// Build the notifier, reading its secret file (relative paths against `base_dir`).
    /// Errors name the field and the file, never what the file holds.
    pub fn build(&self, base_dir: &Path) -> Result<Notifier, ValidationError> {
        if let Some(e) = self.validate().into_iter().next() {
            return Err(e);
        }
        let name = self.name().to_string();
        match self {
            NotifierSpec::Webhook(w) => {
                let mut headers = HeaderMap::new();
                for (k, v) in &w.headers {
                    let (k, v) = header(k, v)
                        .map_err(|m| ValidationError::new(format!("headers.{k}"), m))?;
                    headers.insert(k, v);
                }
                if let Some(file) = &w.headers_file {
                    let path = base_dir.join(file);
                    let text = read_secret(&path, "headers_file")?;
                    for (i, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        let bad = || {
                            ValidationError::new(
                                "headers_file",
                                format!(
                                    "{} line {}: expected `Name: value`",
                                    path.display(),
                                    i + 1
                                ),
                            )
                        };
                        let (k, v) = line.split_once(':').ok_or_else(bad)?;
                        let (k, mut v) = header(k.trim(), v.trim()).map_err(|_| bad())?;
                        v.set_sensitive(true);
                        headers.insert(k, v);
                    }
                }
                WebhookNotifier::new(
                    name,
                    &w.url,
                    headers,
                    w.min_severity,
                    w.timeout,
                    w.retry.clone(),
                )
                .map(Notifier::Webhook)
                .map_err(|m| ValidationError::new("url", m))
            }
            NotifierSpec::Pagerduty(p) => {
                let path = base_dir.join(&p.routing_key_file);
                let text = read_secret(&path, "routing_key_file")?;
                let key = RoutingKey::new(&text).ok_or_else(|| {
                    ValidationError::new(
                        "routing_key_file",
                        format!(
                            "{} must hold one routing key with no whitespace inside",
                            path.display()
                        ),
                    )
                })?;
                PagerDutyNotifier::new(
                    name,
                    &p.url,
                    key,
                    p.min_severity,
                    p.timeout,
                    p.retry.clone(),
                )
                .map(Notifier::PagerDuty)
                .map_err(|m| ValidationError::new("url", m))
            }
        }
    }
}

fn header(k: &str, v: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| "not a valid header name")?;
    let value = HeaderValue::from_str(v).map_err(|_| "not a valid header value")?;
    Ok((name, value))
}

/// A secret file's text. The error names the file, never its content.
fn read_secret(path: &Path, field: &str) -> Result<String, ValidationError> {
    std::fs::read_to_string(path)
        .map_err(|e| ValidationError::new(field, format!("cannot read {}: {e}", path.display())))
}

impl AlertConfig {
    /// Check the whole section and return the rules to evaluate (defaults merged). Every
    /// problem is reported; fields are named from the root, e.g. `alert.rule[2].threshold`
    /// or `alert.notifier[0].url`. Secret files are not read.
    pub fn validate(&self) -> Result<Vec<Rule>, Vec<ValidationError>> {
        let mut errors = Vec::new();
        if self.queue_capacity == 0 {
            errors.push(ValidationError::new(
                "alert.queue_capacity",
                "must be at least 1",
            ));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, n) in self.notifier.iter().enumerate() {
            let at = format!("alert.notifier[{i}]");
            if let Some(first) = names.insert(n.name(), i) {
                errors.push(ValidationError::new(
                    format!("{at}.name"),
                    format!(
                        "duplicate notifier name {:?} (also alert.notifier[{first}]); give each a name",
                        n.name()
                    ),
                ));
            }
            errors.extend(n.validate().into_iter().map(|e| e.under(&at)));
        }
        let rules = validate_rules(&self.rule, self.default_rules);
        match rules {
            Ok(rules) if errors.is_empty() => Ok(rules),
            Ok(_) => Err(errors),
            Err(mut es) => {
                es.extend(errors);
                Err(es)
            }
        }
    }

    /// Build every notifier, reading secret files relative to `base_dir`.
    pub fn build_notifiers(&self, base_dir: &Path) -> Result<Vec<Notifier>, ValidationError> {
        self.notifier
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.build(base_dir)
                    .map_err(|e| e.under(&format!("alert.notifier[{i}]")))
            })
            .collect()
    }
}
