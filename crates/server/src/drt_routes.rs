//! DRT runs stored with the daemon's events: `POST /api/v1/drt/runs` stores a report (from
//! `dbfleet drt run --api …`), the daemon's own scheduled runs are stored the same way with
//! [`save_run`], and `GET` reads them back for `dbfleet drt report ID`. A running scheduled
//! DRT is shown at `GET /api/v1/drt/running` and stopped by `POST /api/v1/drt/abort`.
//!
//! A run is one key in the store's key-value space (`drt/runs/<id>`) holding the whole
//! report, plus a `drt_finished` event (level `error` when an expectation failed) that
//! points at it. Ids sort by time: `20261126T131500Z-kill-primary`.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drt::report::Report;
use serde::{Deserialize, Serialize};
use store::{kinds, EventLevel, NewEvent, Settings, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::query::{Params, RawParams};
use crate::{ApiError, AppState};

/// The most runs one list returns.
const MAX_LIST: usize = 1000;

/// A stored run: the report and where it came from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredRun {
    /// The run's id.
    pub id: String,
    /// `cli` (posted by `dbfleet drt run`) or `schedule` (the daemon's game day).
    pub origin: String,
    /// When it was stored, ms since the Unix epoch.
    pub stored_ms: u64,
    /// The report.
    pub report: Report,
}

/// One line of `GET /api/v1/drt/runs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: String,
    /// `cli` or `schedule`.
    pub origin: String,
    /// The scenario's name.
    pub scenario: String,
    /// The cluster.
    pub cluster: String,
    /// When the first run's load started, ms since the Unix epoch.
    pub started_ms: u64,
    /// How many runs (`--repeat`).
    pub runs: usize,
    /// Whether every run passed every expectation.
    pub pass: bool,
    /// Runs aborted (a guardrail, an operator).
    pub aborted: usize,
    /// Client RTO p50 and max over the runs, ms.
    pub rto_p50_ms: Option<u64>,
    /// See `rto_p50_ms`.
    pub rto_max_ms: Option<u64>,
    /// Acknowledged writes lost over every run.
    pub lost_total: u64,
}

impl RunSummary {
    fn of(s: &StoredRun) -> Self {
        let r = &s.report;
        Self {
            id: s.id.clone(),
            origin: s.origin.clone(),
            scenario: r.scenario.name.clone(),
            cluster: r
                .runs
                .first()
                .map(|x| x.cluster.clone())
                .or_else(|| r.scenario.cluster.clone())
                .unwrap_or_default(),
            started_ms: r.runs.first().map(|x| x.started_ms).unwrap_or(0),
            runs: r.runs.len(),
            pass: r.pass,
            aborted: r.aggregate.aborted,
            rto_p50_ms: r.aggregate.rto.map(|s| s.p50_ms),
            rto_max_ms: r.aggregate.rto.map(|s| s.max_ms),
            lost_total: r.aggregate.lost_total,
        }
    }
}

use model::clock::now_ms;

/// A run id from its start time and scenario.
fn run_id(started_ms: u64, scenario: &str) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(started_ms);
    let stamp = humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "");
    format!("{stamp}-{scenario}")
}

/// Store `report` under a new id and append its `drt_finished` event; return its summary
/// (with the id).
pub async fn save_run(
    store: &dyn Store,
    report: &Report,
    origin: &str,
) -> Result<RunSummary, StoreError> {
    let started = report
        .runs
        .first()
        .map(|r| r.started_ms)
        .unwrap_or_else(now_ms);
    let base = run_id(started, &report.scenario.name);
    let mut id = base.clone();
    let mut n = 1;
    while store.has_drt_run(&id).await? {
        n += 1;
        id = format!("{base}-{n}");
    }
    let stored = StoredRun {
        id: id.clone(),
        origin: origin.to_string(),
        stored_ms: now_ms(),
        report: report.clone(),
    };
    store.put_drt_run(&id, &stored).await?;
    let summary = RunSummary::of(&stored);
    let verdict = if report.pass { "PASS" } else { "FAIL" };
    let mut message = format!(
        "DRT {} on {}: {verdict} ({} run{}",
        summary.scenario,
        summary.cluster,
        summary.runs,
        if summary.runs == 1 { "" } else { "s" }
    );
    if let Some(p50) = summary.rto_p50_ms {
        message.push_str(&format!(", RTO p50 {p50} ms"));
    }
    message.push_str(&format!(", {} lost write(s))", summary.lost_total));
    let ev = NewEvent::new(
        now_ms(),
        kinds::DRT_FINISHED,
        if report.pass {
            EventLevel::Info
        } else {
            EventLevel::Error
        },
        message,
    )
    .with_cluster(summary.cluster.clone())
    .with_data(serde_json::to_value(&summary).unwrap_or_default());
    store.append_event(&ev).await?;
    Ok(summary)
}

/// Every stored run, newest first, at most `limit`.
pub async fn list_runs(store: &dyn Store, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
    let mut runs: Vec<RunSummary> = store
        .drt_runs::<StoredRun>()
        .await?
        .iter()
        .map(RunSummary::of)
        .collect();
    runs.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
    runs.truncate(limit);
    Ok(runs)
}

async fn load_run(store: &dyn Store, id: &str) -> Result<StoredRun, ApiError> {
    if id.is_empty() || id.len() > 200 || id.contains('/') {
        return Err(ApiError::BadRequest(format!("malformed run id {id:?}")));
    }
    match store.drt_run::<StoredRun>(id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => Err(ApiError::NotFound(format!("no DRT run {id:?}"))),
        Err(e @ StoreError::Corrupt { .. }) => Err(ApiError::Unavailable(format!(
            "the stored DRT run {id:?} cannot be read: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/drt/runs?limit=N`: stored runs, newest first.
pub async fn runs(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<crate::answers::LargeAnswer, ApiError> {
    let params = Params::parse(raw, &["limit"])?;
    let limit = params.number("limit", 100, MAX_LIST)?;
    // Every stored run is read to sort them: a large answer.
    state
        .answers
        .large
        .json(async {
            let runs = list_runs(state.store.as_ref(), limit).await?;
            Ok(serde_json::json!({ "runs": runs }))
        })
        .await
}

/// `GET /api/v1/drt/runs/{id}`: one stored run with its whole report.
pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: RawParams,
) -> Result<Json<StoredRun>, ApiError> {
    Params::parse(raw, &[])?;
    Ok(Json(load_run(state.store.as_ref(), &id).await?))
}

/// `GET /api/v1/drt/runs/{id}/report.html`: the run's HTML report with its timeline.
pub async fn run_html(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: RawParams,
) -> Result<Response, ApiError> {
    Params::parse(raw, &[])?;
    let run = load_run(state.store.as_ref(), &id).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        run.report.html(),
    )
        .into_response())
}

/// `POST /api/v1/drt/runs` with a report as `dbfleet drt run --json` prints it. Answers 201
/// with the new run's summary.
pub async fn post_run(
    State(state): State<AppState>,
    raw: RawParams,
    body: Bytes,
) -> Result<(StatusCode, Json<RunSummary>), ApiError> {
    Params::parse(raw, &[])?;
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed DRT report: {e}")))?;
    if report.runs.is_empty() {
        return Err(ApiError::BadRequest(
            "a DRT report needs at least one run".into(),
        ));
    }
    let summary = save_run(state.store.as_ref(), &report, "cli").await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

/// The daemon's scheduled DRT in progress, if any, so it can be shown and aborted.
#[derive(Clone, Default)]
pub struct DrtControl {
    current: Arc<Mutex<Option<RunningDrt>>>,
}

/// A scheduled DRT in progress.
#[derive(Clone, Debug, Serialize)]
pub struct RunningDrt {
    /// The scenario.
    pub scenario: String,
    /// The cluster.
    pub cluster: String,
    /// When it started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Cancelled by `POST /api/v1/drt/abort`.
    #[serde(skip)]
    pub cancel: CancellationToken,
}

impl DrtControl {
    /// Record that `run` started; it is shown and abortable until [`Self::finished`].
    pub fn started(&self, run: RunningDrt) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(run);
    }

    /// Record that the run in progress ended.
    pub fn finished(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The run in progress.
    pub fn current(&self) -> Option<RunningDrt> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `GET /api/v1/drt/running`: the daemon's scheduled DRT in progress (`{"running": null}`
/// when none).
pub async fn running(State(state): State<AppState>, raw: RawParams) -> Result<Response, ApiError> {
    Params::parse(raw, &[])?;
    Ok(Json(serde_json::json!({ "running": state.drt.current() })).into_response())
}

/// `POST /api/v1/drt/abort`: abort the daemon's scheduled DRT in progress; its faults are
/// healed at once and its report records the abort. 409 when none runs.
pub async fn abort(State(state): State<AppState>, raw: RawParams) -> Result<Response, ApiError> {
    Params::parse(raw, &[])?;
    match state.drt.current() {
        Some(r) => {
            r.cancel.cancel();
            Ok(Json(serde_json::json!({ "aborted": r })).into_response())
        }
        None => Err(ApiError::Conflict {
            message: "no DRT is running in this daemon".into(),
            operation: None,
        }),
    }
}
