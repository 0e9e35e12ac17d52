//! Alerts and downtimes over HTTP: `GET /api/v1/alerts` (open alerts, with whether a
//! downtime silences them), `GET|POST /api/v1/downtimes` and `DELETE /api/v1/downtimes/{id}`.
//!
//! The alerts live in the daemon's alerting task (`cli::alerting`), which owns the evaluator
//! and its persistence; this module sees it only through [`AlertControl`] and converts its
//! `alert` types to the wire types below.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use model::InstanceAddr;
use serde::{Deserialize, Serialize};
use store::StoreError;

use crate::query::{Params, RawParams};
use crate::{ApiError, AppState};

/// The longest downtime the API accepts.
pub const MAX_DOWNTIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// The daemon's alerting, as the routes see it.
pub type AlertHandle = Arc<dyn AlertControl>;

/// What the alert routes need from the daemon's alerting task.
#[async_trait::async_trait]
pub trait AlertControl: Send + Sync + 'static {
    /// The open (pending and firing) alerts in key order, each with the id of the downtime
    /// covering it now, if any.
    fn alerts(&self) -> Vec<(alert::Alert, Option<u64>)>;
    /// The downtimes in force now, by id.
    fn downtimes(&self) -> Vec<alert::Downtime>;
    /// Add a downtime (starting now) and persist it.
    async fn add_downtime(
        &self,
        request: alert::NewDowntime,
    ) -> Result<alert::Downtime, DowntimeRefused>;
    /// End a downtime early and persist that; `None` when there is no such downtime.
    async fn remove_downtime(&self, id: u64) -> Result<Option<alert::Downtime>, DowntimeRefused>;
    /// Each notifier's delivery counts since start, for `/metrics`; none by default.
    fn notifier_stats(&self) -> Vec<alert::NotifierStats> {
        Vec::new()
    }
}

/// Why a downtime could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum DowntimeRefused {
    /// The request is not valid (blank reason, end in the past, …).
    #[error(transparent)]
    Invalid(#[from] alert::DowntimeError),
    /// Downtimes are kept by the leader; this node is a follower.
    #[error("this dbfleet node is not the leader; downtimes are set on the leader (see GET /api/v1/leader)")]
    NotLeader,
    /// The store failed while persisting.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DowntimeRefused> for ApiError {
    fn from(e: DowntimeRefused) -> Self {
        match e {
            DowntimeRefused::Invalid(e) => ApiError::BadRequest(e.to_string()),
            e @ DowntimeRefused::NotLeader => ApiError::Unavailable(e.to_string()),
            DowntimeRefused::Store(e) => ApiError::Store(e),
        }
    }
}

/// `GET /api/v1/alerts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertList {
    /// Open alerts (pending and firing), in key order.
    pub alerts: Vec<AlertView>,
}

/// One open alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// `rule/cluster/instance`, or `rule/cluster` for a cluster-wide alert; the notifiers'
    /// dedup key.
    pub key: String,
    /// The rule.
    pub rule: String,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: String,
    /// `pending` (the condition holds, for less than the rule's `for`) or `firing`.
    pub state: String,
    /// The cluster.
    pub cluster: String,
    /// The instance; `null` for a cluster-wide alert.
    pub instance: Option<String>,
    /// The instance's role at the last evaluation.
    pub role: Option<String>,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
    /// One line for humans.
    pub summary: String,
    /// The metric's value at the last evaluation (metric rules).
    pub value: Option<f64>,
    /// When the condition started to hold, ms since the Unix epoch.
    pub pending_since_ms: u64,
    /// When it fired; `null` while pending.
    pub started_ms: Option<u64>,
    /// Whether it fired inside a downtime and was not paged.
    pub silenced: bool,
    /// When it was paged (sent to the notifiers); `null` while pending or silenced.
    pub paged_ms: Option<u64>,
    /// The downtime covering it now, if any.
    pub downtime_id: Option<u64>,
}

impl AlertView {
    fn of(a: alert::Alert, downtime_id: Option<u64>) -> Self {
        Self {
            state: match a.state {
                alert::AlertState::Pending => "pending",
                alert::AlertState::Firing => "firing",
                alert::AlertState::Resolved => "resolved",
            }
            .into(),
            severity: a.severity.to_string(),
            key: a.key,
            rule: a.rule,
            cluster: a.cluster,
            instance: a.instance,
            role: a.role,
            labels: a.labels,
            summary: a.summary,
            value: a.value.filter(|v| v.is_finite()),
            pending_since_ms: a.pending_since,
            started_ms: a.started_at,
            silenced: a.silenced,
            paged_ms: a.paged_at,
            downtime_id,
        }
    }
}

/// `GET /api/v1/downtimes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeList {
    /// Downtimes in force, by id.
    pub downtimes: Vec<DowntimeView>,
}

/// One downtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DowntimeView {
    /// Its id, for `DELETE /api/v1/downtimes/{id}`.
    pub id: u64,
    /// `cluster` or `instance`.
    pub target_kind: String,
    /// The cluster's name or the instance's `host:port`.
    pub target: String,
    /// When it was added, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it ends, ms since the Unix epoch.
    pub ends_ms: u64,
    /// Why.
    pub reason: String,
    /// Who asked for it.
    pub who: String,
}

impl From<alert::Downtime> for DowntimeView {
    fn from(d: alert::Downtime) -> Self {
        let (target_kind, target) = match d.target {
            alert::DowntimeTarget::Cluster(c) => ("cluster", c),
            alert::DowntimeTarget::Instance(i) => ("instance", i),
        };
        Self {
            id: d.id,
            target_kind: target_kind.into(),
            target,
            created_ms: d.created_at,
            ends_ms: d.ends_at,
            reason: d.reason,
            who: d.who,
        }
    }
}

/// The body of `POST /api/v1/downtimes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDowntimeBody {
    /// A cluster's name, or an instance as `host:port`.
    pub target: String,
    /// How long, as humantime: `"2h"`, `"30m"`.
    #[serde(rename = "for")]
    pub duration: String,
    /// Why; must not be blank.
    pub reason: String,
    /// Who; must not be blank.
    pub who: String,
}

fn handle(state: &AppState) -> Result<&AlertHandle, ApiError> {
    state
        .alerts
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("alerting does not run in this process".into()))
}

use model::clock::now_ms;

/// `GET /api/v1/alerts`: the open alerts.
pub async fn alerts(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<Json<AlertList>, ApiError> {
    Params::parse(raw, &[])?;
    let alerts = handle(&state)?
        .alerts()
        .into_iter()
        .map(|(a, d)| AlertView::of(a, d))
        .collect();
    Ok(Json(AlertList { alerts }))
}

/// `GET /api/v1/downtimes`: the downtimes in force.
pub async fn downtimes(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<Json<DowntimeList>, ApiError> {
    Params::parse(raw, &[])?;
    let downtimes = handle(&state)?
        .downtimes()
        .into_iter()
        .map(DowntimeView::from)
        .collect();
    Ok(Json(DowntimeList { downtimes }))
}

/// `POST /api/v1/downtimes`: add a downtime on a known cluster or instance. Answers 201
/// with it.
pub async fn post_downtime(
    State(state): State<AppState>,
    raw: RawParams,
    body: Bytes,
) -> Result<(StatusCode, Json<DowntimeView>), ApiError> {
    Params::parse(raw, &[])?;
    let req: NewDowntimeBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}")))?;
    for (name, value) in [
        ("target", &req.target),
        ("for", &req.duration),
        ("reason", &req.reason),
        ("who", &req.who),
    ] {
        crate::routes::capped(name, value)?;
    }
    let h = handle(&state)?;
    let duration = humantime::parse_duration(req.duration.trim()).map_err(|e| {
        ApiError::BadRequest(format!(
            "for: {:?} is not a duration such as \"2h\" or \"30m\": {e}",
            req.duration
        ))
    })?;
    if duration.is_zero() || duration > MAX_DOWNTIME {
        return Err(ApiError::BadRequest(format!(
            "for: must be above zero and at most {}",
            humantime::format_duration(MAX_DOWNTIME)
        )));
    }
    let target = target(&state, req.target.trim()).await?;
    let request = alert::NewDowntime {
        target,
        ends_at: now_ms() + duration.as_millis() as u64,
        reason: req.reason.trim().to_string(),
        who: req.who.trim().to_string(),
    };
    let d = h.add_downtime(request).await?;
    tracing::info!(id = d.id, target = ?d.target, who = %d.who, "downtime added");
    Ok((StatusCode::CREATED, Json(DowntimeView::from(d))))
}

/// The target a downtime names: an instance (`host:port`, which must be known) or a cluster
/// (which must be declared).
async fn target(state: &AppState, text: &str) -> Result<alert::DowntimeTarget, ApiError> {
    if text.is_empty() {
        return Err(ApiError::BadRequest(
            "target: give a cluster's name or an instance as host:port".into(),
        ));
    }
    if text.contains(':') {
        let addr: InstanceAddr = text
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("target: {text:?} is not host:port: {e}")))?;
        let known = state
            .store
            .instances(None)
            .await?
            .iter()
            .any(|i| i.addr == addr);
        if !known {
            return Err(ApiError::BadRequest(format!(
                "target: no instance {addr} is known to the daemon"
            )));
        }
        return Ok(alert::DowntimeTarget::Instance(addr.to_string()));
    }
    if state.store.cluster(text).await?.is_none() {
        return Err(ApiError::BadRequest(format!(
            "target: no cluster named {text:?} (an instance is host:port)"
        )));
    }
    Ok(alert::DowntimeTarget::Cluster(text.to_string()))
}

/// `DELETE /api/v1/downtimes/{id}`: end a downtime now. Answers with the removed downtime,
/// 404 when there is none with that id.
pub async fn delete_downtime(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: RawParams,
) -> Result<Json<DowntimeView>, ApiError> {
    Params::parse(raw, &[])?;
    let h = handle(&state)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("downtime id {id:?} is not a number")))?;
    match h.remove_downtime(id).await? {
        Some(d) => {
            tracing::info!(id = d.id, target = ?d.target, "downtime removed");
            Ok(Json(DowntimeView::from(d)))
        }
        None => Err(ApiError::NotFound(format!("no downtime {id} in force"))),
    }
}
