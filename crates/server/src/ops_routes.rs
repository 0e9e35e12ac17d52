//! Routes of the operations engine: failover, switchover, rejoin, recoveries, operations.
//!
//! Mutating routes need a token. They run the operation to its end and answer with its
//! record: 200 when it succeeded, 409 with the record when it ended otherwise (rolled back,
//! failed, needs a human) or was refused, 503 when this daemon runs no engine or is not the
//! leader.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use engine::{Engine, EngineError, RecoveriesStatus};
use model::InstanceAddr;
use serde::{Deserialize, Serialize};
use store::{OperationQuery, OperationRecord, OperationState};

use crate::error::ApiError;
use crate::query::{Params, RawParams};
use crate::routes::capped;
use crate::AppState;

/// `{"operations": [...], "next": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperationList {
    /// Newest first.
    pub operations: Vec<OperationRecord>,
    /// When the page is full: the path (with its query) of the page of older operations
    /// (`/api/v1/operations?before_id=LAST&limit=N`, with the same filters). Absent on the
    /// last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /api/v1/leader`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// This node.
    pub node: String,
    /// Whether this node leads and may act.
    pub is_leader: bool,
    /// The leader as this node last saw it.
    pub leader: Option<String>,
    pub term: u64,
}

/// Body of `POST .../switchover`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    to: Option<String>,
}

/// Body of `POST .../rejoin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejoinBody {
    instance: String,
}

/// Body of `POST .../recoveries/...`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ByBody {
    by: Option<String>,
}

impl ByBody {
    /// Who asked: `by`, capped like every free-text field, or `api`.
    fn who(&self) -> Result<&str, ApiError> {
        capped("by", self.by.as_deref().unwrap_or("api"))
    }
}

fn engine(state: &AppState) -> Result<&Arc<Engine>, ApiError> {
    state
        .engine
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this daemon runs no operations engine".into()))
}

fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, ApiError> {
    let trimmed = String::from_utf8_lossy(b);
    if trimmed.trim().is_empty() || trimmed.trim() == "null" {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}")))
}

fn addr(s: &str, field: &str) -> Result<InstanceAddr, ApiError> {
    capped(field, s)?
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("field `{field}`: {e}")))
}

/// Run an operation on its own task and wait for it: a client that disconnects drops this
/// handler, never the operation, which runs to its end and is recorded.
async fn detached<F>(op: F) -> Result<Json<OperationRecord>, ApiError>
where
    F: std::future::Future<Output = Result<OperationRecord, EngineError>> + Send + 'static,
{
    match tokio::spawn(op).await {
        Ok(r) => r.map(Json).map_err(ended),
        Err(e) => Err(ApiError::Unavailable(format!(
            "the operation's task failed: {e}"
        ))),
    }
}

fn ended(e: EngineError) -> ApiError {
    match e {
        EngineError::UnknownCluster(c) => {
            ApiError::NotFound(format!("no cluster named {c:?} in the daemon's config"))
        }
        e @ EngineError::NotLeader { .. } => ApiError::Unavailable(e.to_string()),
        e @ (EngineError::Busy { .. } | EngineError::Refused(_)) => ApiError::Conflict {
            message: e.to_string(),
            operation: None,
        },
        EngineError::Ended { ref record, .. } => ApiError::Conflict {
            message: e.to_string(),
            operation: serde_json::to_value(record.as_ref()).ok(),
        },
        EngineError::Store(e) => ApiError::Store(e),
    }
}

/// `POST /api/v1/clusters/{name}/failover`: fail over a cluster whose primary is dead.
pub async fn failover(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: RawParams,
) -> Result<Json<OperationRecord>, ApiError> {
    Params::parse(raw, &[])?;
    let e = engine(&state)?.clone();
    detached(async move { e.failover(&name).await }).await
}

/// `POST /api/v1/clusters/{name}/switchover` with `{"to": "host:port"}` (optional).
pub async fn switchover(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: RawParams,
    b: Bytes,
) -> Result<Json<OperationRecord>, ApiError> {
    Params::parse(raw, &[])?;
    let req: SwitchoverBody = body(&b)?;
    let to = req.to.as_deref().map(|t| addr(t, "to")).transpose()?;
    engine(&state)?
        .switchover(&name, to)
        .await
        .map(Json)
        .map_err(ended)
}

/// `POST /api/v1/clusters/{name}/rejoin` with `{"instance": "host:port"}`.
pub async fn rejoin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: RawParams,
    b: Bytes,
) -> Result<Json<OperationRecord>, ApiError> {
    Params::parse(raw, &[])?;
    let req: RejoinBody = serde_json::from_slice(&b).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed request body (want {{\"instance\": \"host:port\"}}): {e}"
        ))
    })?;
    let a = addr(&req.instance, "instance")?;
    engine(&state)?
        .rejoin(&name, &a)
        .await
        .map(Json)
        .map_err(ended)
}

/// `POST /api/v1/clusters/{name}/recoveries/ack`: lift the cluster's block window.
pub async fn ack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: RawParams,
    b: Bytes,
) -> Result<Json<RecoveriesStatus>, ApiError> {
    Params::parse(raw, &[])?;
    let req: ByBody = body(&b)?;
    let who = req.who()?;
    let e = engine(&state)?;
    e.ack_recoveries(&name, who).await.map_err(ended)?;
    e.recoveries().await.map(Json).map_err(ended)
}

/// `POST /api/v1/recoveries/enable` and `/disable`.
pub async fn switch(
    State(state): State<AppState>,
    Path(what): Path<String>,
    raw: RawParams,
    b: Bytes,
) -> Result<Json<RecoveriesStatus>, ApiError> {
    Params::parse(raw, &[])?;
    let enabled = match what.as_str() {
        "enable" => true,
        "disable" => false,
        other => {
            return Err(ApiError::NotFound(format!(
                "no route for /api/v1/recoveries/{other}: use enable or disable"
            )))
        }
    };
    let req: ByBody = body(&b)?;
    let who = req.who()?;
    let e = engine(&state)?;
    e.set_recoveries_enabled(enabled, who)
        .await
        .map_err(ended)?;
    e.recoveries().await.map(Json).map_err(ended)
}

/// `GET /api/v1/recoveries`.
pub async fn recoveries(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<Json<RecoveriesStatus>, ApiError> {
    Params::parse(raw, &[])?;
    engine(&state)?.recoveries().await.map(Json).map_err(ended)
}

/// `GET /api/v1/leader`.
pub async fn leader(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<Json<LeaderInfo>, ApiError> {
    Params::parse(raw, &[])?;
    let e = engine(&state)?;
    let (leader, term) = e.leader();
    Ok(Json(LeaderInfo {
        node: e.node_id().to_string(),
        is_leader: e.is_leader(),
        leader,
        term,
    }))
}

/// `GET /api/v1/operations?cluster=&state=&kind=&before_id=&limit=`: a large answer, built
/// under [`crate::answers::AnswerGate`]. A full page carries `next`.
pub async fn operations(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<crate::answers::LargeAnswer, ApiError> {
    let p = Params::parse(raw, &["cluster", "state", "kind", "before_id", "limit"])?;
    let states = p
        .list("state")?
        .iter()
        .map(|s| {
            OperationState::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "state {s:?} is not one of proposed, running, succeeded, rolled_back, failed, needs_human"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = match p.number("limit", 50usize, store::MAX_EVENT_LIMIT)? {
        0 => store::MAX_EVENT_LIMIT,
        n => n,
    };
    let query = OperationQuery {
        cluster: p.get("cluster")?.map(str::to_string),
        states,
        kind: p.get("kind")?.map(str::to_string),
        limit,
        before_id: match p.get("before_id")? {
            Some(_) => Some(p.number("before_id", 0, i64::MAX)?),
            None => None,
        },
    };
    state
        .answers
        .large
        .json(async {
            let operations = state.store.operations(&query).await?;
            let next = next_operations_page(&query, &operations);
            Ok(OperationList { operations, next })
        })
        .await
}

/// The path of the page of operations older than `page`, when it is full.
fn next_operations_page(query: &OperationQuery, page: &[OperationRecord]) -> Option<String> {
    let last = page.last()?;
    if page.len() < query.limit {
        return None;
    }
    let (before, limit) = (last.id.to_string(), query.limit.to_string());
    let mut pairs = vec![("before_id", before.as_str()), ("limit", limit.as_str())];
    if let Some(c) = &query.cluster {
        pairs.push(("cluster", c));
    }
    for s in &query.states {
        pairs.push(("state", s.as_str()));
    }
    if let Some(k) = &query.kind {
        pairs.push(("kind", k));
    }
    Some(crate::paging::next_path("/api/v1/operations", &pairs))
}

/// `GET /api/v1/operations/{id}`.
pub async fn operation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: RawParams,
) -> Result<Json<OperationRecord>, ApiError> {
    Params::parse(raw, &[])?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("operation id {id:?} is not a number")))?;
    state
        .store
        .operation(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no operation {id}")))
}
