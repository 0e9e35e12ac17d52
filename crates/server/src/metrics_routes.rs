//! `GET /metrics` (the Prometheus exposition) and `GET /api/v1/instances/{addr}/metrics`
//! (an instance's recent history), with their wire types. Both read
//! [`monitor::Stats::fleet`], which the watch loop fills after every probe; `/metrics` adds
//! the alert notifiers' delivery counts from [`AppState::alerts`].

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics::{Format, HistoryPoint, LagSource, NotifierCounts};
use model::InstanceAddr;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::query::{Params, RawParams};
use crate::AppState;

/// The content type of the Prometheus text format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics 1.0 text.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`: OpenMetrics text when the client accepts it (Prometheus does), the
/// Prometheus text format 0.0.4 otherwise (curl, `promtool check metrics`).
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (format, content_type) = if openmetrics {
        (Format::OpenMetrics, OPENMETRICS_TEXT)
    } else {
        (Format::PrometheusText, PROMETHEUS_TEXT)
    };
    let notifiers: Vec<NotifierCounts> = state
        .alerts
        .as_ref()
        .map(|a| a.notifier_stats())
        .unwrap_or_default()
        .into_iter()
        .map(|s| NotifierCounts {
            notifier: s.name,
            sent: s.sent,
            failed: s.failed,
            dropped: s.dropped,
        })
        .collect();
    // One line per instance and metric: a large answer at fleet scale.
    let answer = state
        .answers
        .large
        .bytes(HeaderValue::from_static(content_type), async {
            let body = state
                .stats
                .fleet
                .encode_with(&state.stats.health(), &notifiers, format);
            Ok(Bytes::from(body))
        })
        .await;
    answer.into_response()
}

/// `GET /api/v1/instances/{addr}/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetricsHistory {
    /// The instance, `host:port`.
    pub instance: String,
    /// Its cluster.
    pub cluster: String,
    /// The role its latest answer showed (`primary`, `replica`, `standalone`), `null` when it
    /// never answered.
    pub role: Option<String>,
    /// The start of the window asked for, ms since the Unix epoch.
    pub since_ms: u64,
    /// How many samples the daemon keeps per instance (one per probe).
    pub capacity: usize,
    /// One point per probe at or after `since_ms`, oldest first.
    pub points: Vec<MetricsPoint>,
}

/// One probe of an instance. A field is `null` when unknown or when it does not apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsPoint {
    /// When the probe started, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether the probe got an answer.
    pub up: bool,
    /// Queries per second since the previous probe.
    pub queries_per_second: Option<f32>,
    /// Replicas: replication lag in seconds.
    pub lag_seconds: Option<f64>,
    /// Where `lag_seconds` comes from: `heartbeat` or `seconds_behind_master`.
    pub lag_source: Option<String>,
    /// `Threads_connected`.
    pub threads_connected: Option<u32>,
    /// `Threads_running`.
    pub threads_running: Option<u32>,
    /// `Threads_connected / max_connections`.
    pub connections_used_ratio: Option<f32>,
    /// Replicas: the IO thread is connected.
    pub replication_io_running: Option<bool>,
    /// Replicas: the SQL thread runs.
    pub replication_sql_running: Option<bool>,
    /// Semi-sync primaries: semi-sync is on rather than fallen back to async.
    pub semi_sync_primary_on: Option<bool>,
}

impl From<HistoryPoint> for MetricsPoint {
    fn from(p: HistoryPoint) -> Self {
        Self {
            at_ms: p.at_ms,
            up: p.up,
            queries_per_second: p.queries_per_second,
            lag_seconds: p.lag_seconds.map(|(s, _)| s),
            lag_source: p.lag_seconds.map(|(_, src)| {
                match src {
                    LagSource::Heartbeat => "heartbeat",
                    LagSource::SecondsBehindMaster => "seconds_behind_master",
                }
                .to_string()
            }),
            threads_connected: p.threads_connected,
            threads_running: p.threads_running,
            connections_used_ratio: p.connections_used_ratio,
            replication_io_running: p.replication_io_running,
            replication_sql_running: p.replication_sql_running,
            semi_sync_primary_on: p.semi_sync_primary_on,
        }
    }
}

/// Parse `since`: a whole number of ms since the Unix epoch, or a duration back from `now_ms`
/// (`90s`, `5m`, `1h`).
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map_err(|_| format!("{text:?} is too large for ms since the Unix epoch"));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is neither ms since the Unix epoch nor a duration like 5m: {e}")
    })?;
    Ok(now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// `GET /api/v1/instances/{addr}/metrics?since=…`: the instance's history at or after
/// `since` (default: all that is kept).
pub async fn instance_metrics(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    raw: RawParams,
) -> Result<crate::answers::LargeAnswer, ApiError> {
    let text = path
        .map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("path parameter `addr`: {e}")))?;
    let params = Params::parse(raw, &["since"])?;
    let addr: InstanceAddr = text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("path parameter `addr`: {e}")))?;
    let since_ms = match params.get("since")? {
        Some(s) => parse_since(s, monitor::now_ms())
            .map_err(|e| ApiError::BadRequest(format!("query parameter `since`: {e}")))?,
        None => 0,
    };
    // Up to the samples kept per instance: a large answer.
    let large = state.answers.large.clone();
    large.json(instance_history(&state, addr, since_ms)).await
}

/// The history of `addr` from `since_ms`, or a 404 for an instance of no cluster.
async fn instance_history(
    state: &AppState,
    addr: InstanceAddr,
    since_ms: u64,
) -> Result<InstanceMetricsHistory, ApiError> {
    let history = state.stats.fleet.history(&addr, since_ms);
    let (cluster, role, capacity, points) = match history {
        Some(h) => (
            h.cluster,
            h.role.map(|r| r.as_str().to_string()),
            h.capacity,
            h.points,
        ),
        None => {
            // Known but not probed yet: an empty history; unknown: 404.
            let record = state
                .store
                .instances(None)
                .await?
                .into_iter()
                .find(|i| i.addr == addr)
                .ok_or_else(|| ApiError::NotFound(format!("no instance {addr} in any cluster")))?;
            (
                record.cluster,
                None,
                state.stats.fleet.history_samples(),
                Vec::new(),
            )
        }
    };
    Ok(InstanceMetricsHistory {
        instance: addr.to_string(),
        cluster,
        role,
        since_ms,
        capacity,
        points: points.into_iter().map(MetricsPoint::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_is_epoch_ms_or_a_duration_back() {
        assert_eq!(parse_since("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_since("5m", 1_000_000), Ok(700_000));
        assert_eq!(parse_since("1h", 1_000), Ok(0));
        for bad in ["-5", "5 parsecs", "1.5", "99999999999999999999999"] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
