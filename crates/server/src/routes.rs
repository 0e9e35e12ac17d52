//! The route handlers: read the store, convert to wire types, answer JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::Json;
use model::{InstanceAddr, Observation};
use store::{EventLevel, EventQuery, InstanceQuery, NewEvent, ProblemRecord, MAX_EVENT_LIMIT};

use crate::answers::{JsonBytes, LargeAnswer};
use crate::error::ApiError;
use crate::query::{Params, RawParams};
use crate::{convert, paging, topology, AppState, OPERATOR_NOTE};
use api::wire::{
    ClusterDetail, ClusterList, Event, EventList, Health, Instance, InstanceList, LeaseHealth,
    NewNote, ProblemList, Spec, Status, StoreHealth, Topology,
};

/// How many events, problem-history rows or instances a call returns when `limit` is not
/// given.
const DEFAULT_LIMIT: usize = 100;

use model::clock::now_ms;

/// The longest free-text field a request body may carry (a note, a reason, who asked, a
/// cluster or an address), in bytes: the same as a note.
pub const MAX_TEXT_BYTES: usize = NewNote::MAX_LEN;

/// Body field `name`, or a 400 naming it when it is longer than [`MAX_TEXT_BYTES`].
pub(crate) fn capped<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "field `{name}` is {} bytes long: at most {MAX_TEXT_BYTES}",
            value.len()
        )));
    }
    Ok(value)
}

/// A path parameter, or a 400 naming it.
fn path_param(path: Result<Path<String>, PathRejection>, name: &str) -> Result<String, ApiError> {
    path.map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("path parameter `{name}`: {e}")))
}

/// The cluster's record, or a 404 naming it.
async fn known_cluster(state: &AppState, name: &str) -> Result<store::ClusterRecord, ApiError> {
    state
        .store
        .cluster(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no cluster named {name:?}")))
}

/// The last observation of each instance (of one cluster, or all): the store's copy, or the
/// watch loop's own when that is newer (the loop writes to the store only when an
/// instance's shape changes or its copy is due, `monitor.persist_every`).
async fn last_observations(
    state: &AppState,
    cluster: Option<&str>,
) -> Result<Vec<(String, Observation)>, ApiError> {
    let mut rows = state.store.last_observations(cluster).await?;
    state.stats.latest.refresh(&mut rows);
    Ok(rows)
}

/// The observations of a cluster, without the cluster names.
fn observations_only(rows: Vec<(String, Observation)>) -> Vec<Observation> {
    rows.into_iter().map(|(_, o)| o).collect()
}

/// How long `/healthz` and `/readyz` wait for their read of the metadata store.
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One cheap read of the store (the cluster list), under [`STORE_CHECK_TIMEOUT`].
async fn check_store(state: &AppState) -> StoreHealth {
    let started = Instant::now();
    let result = tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.clusters()).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let error = match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            // The cause goes to the log only, like every store failure the API meets.
            tracing::warn!(error = %e, "health check: the metadata store failed");
            Some("the metadata store failed; see the dbfleet daemon's log".to_string())
        }
        Err(_) => Some(format!(
            "the metadata store did not answer within {}",
            humantime::format_duration(STORE_CHECK_TIMEOUT)
        )),
    };
    StoreHealth {
        ok: error.is_none(),
        latency_ms,
        error,
    }
}

/// `GET /healthz`: always 200 while the daemon answers, with the store and the leader
/// lease as seen now.
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    let store = check_store(&state).await;
    let leader = state.engine.as_ref().map(|e| {
        let (leader, term) = e.leader();
        LeaseHealth {
            node: e.node_id().to_string(),
            is_leader: e.is_leader(),
            leader,
            term,
        }
    });
    Json(Health {
        status: if store.ok { "ok" } else { "degraded" }.into(),
        version: state.version.into(),
        store: Some(store),
        leader,
    })
}

/// `GET /readyz`: 200 when the daemon is ready to serve (the store answers and the watch
/// loop has finished its first round), 503 naming the reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let store = check_store(&state).await;
    if let Some(error) = &store.error {
        return Err(ApiError::Unavailable(format!("not ready: {error}")));
    }
    let rounds = state
        .stats
        .rounds
        .load(std::sync::atomic::Ordering::Relaxed);
    if rounds == 0 {
        return Err(ApiError::Unavailable(
            "not ready: the daemon is starting (it has not finished a round of probes yet)".into(),
        ));
    }
    Ok(Json(Readiness {
        ready: true,
        rounds,
        store,
    }))
}

/// `GET /readyz` when ready.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Readiness {
    /// Always `true` (not ready is a 503 error).
    pub ready: bool,
    /// Rounds of probes finished since start.
    pub rounds: u64,
    /// The store's read, as in `/healthz`.
    pub store: StoreHealth,
}

/// `GET /api/v1/status`.
pub async fn status(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<Json<Status>, ApiError> {
    Params::parse(raw, &[])?;
    Ok(Json(Status {
        version: state.version.into(),
        now_ms: now_ms(),
        stats: convert::stats(state.stats.snapshot()),
    }))
}

/// `GET /api/v1/clusters`. Concurrent requests share one computation (read the store,
/// summarise, serialise) that started after they arrived: see [`crate::answers::Coalesced`].
pub async fn clusters(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<JsonBytes, ApiError> {
    Params::parse(raw, &[])?;
    let shared = state.answers.clusters.clone();
    shared
        .get(|| async { JsonBytes::of(&cluster_list(&state).await?) })
        .await
}

/// Every cluster's summary, from the store and the watch loop's latest observations.
async fn cluster_list(state: &AppState) -> Result<ClusterList, ApiError> {
    let records = state.store.clusters().await?;
    let mut instance_counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in state.store.instances(None).await? {
        *instance_counts.entry(i.cluster).or_default() += 1;
    }
    let mut observations: BTreeMap<String, Vec<Observation>> = BTreeMap::new();
    for (cluster, o) in last_observations(state, None).await? {
        observations.entry(cluster).or_default().push(o);
    }
    let open = state.store.open_problems(None).await?;
    let clusters = records
        .iter()
        .map(|r| {
            let problems: Vec<&ProblemRecord> =
                open.iter().filter(|p| p.cluster == r.name).collect();
            convert::cluster_summary(
                r,
                instance_counts.get(&r.name).copied().unwrap_or(0),
                observations.get(&r.name).map_or(&[], Vec::as_slice),
                &problems,
            )
        })
        .collect();
    Ok(ClusterList { clusters })
}

/// `GET /api/v1/clusters/{name}`.
pub async fn cluster(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    raw: RawParams,
) -> Result<Json<ClusterDetail>, ApiError> {
    let name = path_param(path, "name")?;
    Params::parse(raw, &[])?;
    let record = known_cluster(&state, &name).await?;
    let instances = state.store.instances(Some(&name)).await?;
    let observations = observations_only(last_observations(&state, Some(&name)).await?);
    let open = state.store.open_problems(Some(&name)).await?;
    let summary = convert::cluster_summary(
        &record,
        instances.len(),
        &observations,
        &open.iter().collect::<Vec<_>>(),
    );
    Ok(Json(ClusterDetail {
        summary,
        updated_ms: record.updated_ms,
        spec: Spec::from(&record.spec),
    }))
}

/// `GET /api/v1/clusters/{name}/topology`.
pub async fn cluster_topology(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    raw: RawParams,
) -> Result<Json<Topology>, ApiError> {
    let name = path_param(path, "name")?;
    Params::parse(raw, &[])?;
    known_cluster(&state, &name).await?;
    let instances = state.store.instances(Some(&name)).await?;
    let observations = observations_only(last_observations(&state, Some(&name)).await?);
    Ok(Json(topology::build(&name, &instances, &observations)))
}

/// `GET /api/v1/instances?cluster=NAME&after=CLUSTER/ADDR&limit=N`: one page of instances,
/// a large answer built under [`crate::answers::AnswerGate`]. A full page carries `next`.
pub async fn instances(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<LargeAnswer, ApiError> {
    let params = Params::parse(raw, &["cluster", "after", "limit"])?;
    let cluster = params.get("cluster")?;
    let after = params
        .get("after")?
        .map(paging::parse_instance_cursor)
        .transpose()?;
    let limit = params.number("limit", DEFAULT_LIMIT, MAX_EVENT_LIMIT)?;
    if let Some(name) = cluster {
        known_cluster(&state, name).await?;
    }
    let query = InstanceQuery {
        cluster: cluster.map(str::to_string),
        after,
        limit,
    };
    state
        .answers
        .large
        .json(async {
            let records = state.store.instance_page(&query).await?;
            // The observations of the page's cluster when it has one, else of the query's.
            let mut clusters = records.iter().map(|r| r.cluster.as_str());
            let first = clusters.next();
            let read_of = match first {
                None => None,
                Some(c) if clusters.all(|o| o == c) => Some(Some(c)),
                Some(_) => Some(cluster),
            };
            // Keyed by cluster and address: an address declared in two clusters (a config
            // mistake) gets the observation of the cluster it was probed for.
            let mut observations: BTreeMap<(String, InstanceAddr), Observation> = match read_of {
                None => BTreeMap::new(),
                Some(of) => {
                    let wanted: BTreeSet<(&str, &InstanceAddr)> = records
                        .iter()
                        .map(|r| (r.cluster.as_str(), &r.addr))
                        .collect();
                    last_observations(&state, of)
                        .await?
                        .into_iter()
                        .filter(|(c, o)| wanted.contains(&(c.as_str(), &o.addr)))
                        .map(|(c, o)| ((c, o.addr.clone()), o))
                        .collect()
                }
            };
            let next = match records.last() {
                Some(last) if records.len() == limit => {
                    let after = paging::instance_cursor(&last.cluster, &last.addr);
                    let limit = limit.to_string();
                    let mut pairs = vec![("after", after.as_str()), ("limit", limit.as_str())];
                    if let Some(c) = cluster {
                        pairs.push(("cluster", c));
                    }
                    Some(paging::next_path("/api/v1/instances", &pairs))
                }
                _ => None,
            };
            let instances = records
                .iter()
                .map(|i| {
                    let key = (i.cluster.clone(), i.addr.clone());
                    convert::instance(i, observations.remove(&key))
                })
                .collect();
            Ok(InstanceList { instances, next })
        })
        .await
}

/// `GET /api/v1/instances/{addr}`.
pub async fn instance(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    raw: RawParams,
) -> Result<Json<Instance>, ApiError> {
    let text = path_param(path, "addr")?;
    Params::parse(raw, &[])?;
    let addr: InstanceAddr = text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("path parameter `addr`: {e}")))?;
    // An address in several clusters is a config mistake; the first cluster by name wins.
    let record = state
        .store
        .instances(None)
        .await?
        .into_iter()
        .find(|i| i.addr == addr)
        .ok_or_else(|| ApiError::NotFound(format!("no instance {addr} in any cluster")))?;
    let observation = state.store.last_observation(&addr).await?;
    Ok(Json(convert::instance(&record, observation)))
}

/// `GET /api/v1/problems?cluster=NAME&history=BOOL&before_id=N&limit=N`: a large answer,
/// built under [`crate::answers::AnswerGate`]. A full page of history carries `next`.
pub async fn problems(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<LargeAnswer, ApiError> {
    let params = Params::parse(raw, &["cluster", "history", "before_id", "limit"])?;
    let cluster = params.get("cluster")?;
    let history = params.boolean("history", false)?;
    let limit = params.number("limit", DEFAULT_LIMIT, MAX_EVENT_LIMIT)?;
    let before_id = match params.get("before_id")? {
        Some(_) => Some(params.number("before_id", 0, i64::MAX)?),
        None => None,
    };
    for name in ["limit", "before_id"] {
        if !history && params.get(name)?.is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` applies only with history=true"
            )));
        }
    }
    if let Some(name) = cluster {
        known_cluster(&state, name).await?;
    }
    state
        .answers
        .large
        .json(async {
            let records = if history {
                state
                    .store
                    .problem_history(cluster, before_id, limit)
                    .await?
            } else {
                state.store.open_problems(cluster).await?
            };
            let next = match records.last() {
                Some(last) if history && records.len() == limit => {
                    let (before, limit) = (last.id.to_string(), limit.to_string());
                    let mut pairs = vec![
                        ("history", "true"),
                        ("before_id", before.as_str()),
                        ("limit", limit.as_str()),
                    ];
                    if let Some(c) = cluster {
                        pairs.push(("cluster", c));
                    }
                    Some(paging::next_path("/api/v1/problems", &pairs))
                }
                _ => None,
            };
            Ok(ProblemList {
                problems: records.iter().map(convert::problem).collect(),
                next,
            })
        })
        .await
}

/// `GET /api/v1/events?cluster=NAME&after_id=N&limit=N&kind=K`: a large answer, built under
/// [`crate::answers::AnswerGate`]. With `after_id`, a full page carries `next`, the path of
/// the page after it.
///
/// An unknown cluster is not an error here: the log keeps the events of clusters since
/// removed from the config.
pub async fn events(
    State(state): State<AppState>,
    raw: RawParams,
) -> Result<LargeAnswer, ApiError> {
    let params = Params::parse(raw, &["cluster", "after_id", "limit", "kind"])?;
    let query = EventQuery {
        cluster: params.get("cluster")?.map(str::to_string),
        after_id: match params.get("after_id")? {
            Some(_) => Some(params.number("after_id", 0, i64::MAX)?),
            None => None,
        },
        limit: params.number("limit", DEFAULT_LIMIT, MAX_EVENT_LIMIT)?,
        kinds: params.list("kind")?,
    };
    state
        .answers
        .large
        .json(async {
            let events: Vec<Event> = state
                .store
                .events(&query)
                .await?
                .into_iter()
                .map(convert::event)
                .collect();
            let next = next_events_page(&query, &events);
            Ok(EventList { events, next })
        })
        .await
}

/// The path of the page after `events` when they were read forward (`after_id`) and fill
/// the page: the same query, after the last one. The newest events (no `after_id`) have no
/// next page: page forward from `after_id=0` to read the whole log.
fn next_events_page(query: &EventQuery, events: &[Event]) -> Option<String> {
    query.after_id?;
    let last = events.last()?;
    if events.len() < query.limit {
        return None;
    }
    let (after, limit) = (last.id.to_string(), query.limit.to_string());
    let mut pairs = vec![("after_id", after.as_str()), ("limit", limit.as_str())];
    if let Some(cluster) = &query.cluster {
        pairs.push(("cluster", cluster));
    }
    for kind in &query.kinds {
        pairs.push(("kind", kind));
    }
    Some(paging::next_path("/api/v1/events", &pairs))
}

/// `POST /api/v1/events`: append an operator's note (kind `operator_note`). Answers 201
/// with the event as stored.
pub async fn append_note(
    State(state): State<AppState>,
    raw: RawParams,
    body: Bytes,
) -> Result<(StatusCode, Json<Event>), ApiError> {
    Params::parse(raw, &[])?;
    let note: NewNote = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}")))?;
    let message = capped("message", note.message.trim())?;
    if message.is_empty() {
        return Err(ApiError::BadRequest("field `message` is empty".into()));
    }
    let mut event = NewEvent::new(now_ms(), OPERATOR_NOTE, EventLevel::Info, message);
    if let Some(name) = note.cluster {
        capped("cluster", &name)?;
        known_cluster(&state, &name).await?;
        event = event.with_cluster(name);
    }
    let stored = state.store.append_event(&event).await?;
    tracing::info!(id = stored.id, cluster = ?stored.cluster, "operator note appended");
    Ok((StatusCode::CREATED, Json(convert::event(stored))))
}

/// `DELETE /api/v1/clusters/{name}/instances/{addr}`: forget a discovered instance (no
/// longer probed, removed from the store, an `instance_forgotten` event), at the next tick
/// of its probe task: answers 202. A declared instance is refused (409): the config is its
/// source of truth.
pub async fn forget_instance(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    raw: RawParams,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Path((name, text)) =
        path.map_err(|e| ApiError::BadRequest(format!("path parameters: {e}")))?;
    Params::parse(raw, &[])?;
    let addr: InstanceAddr = text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("path parameter `addr`: {e}")))?;
    known_cluster(&state, &name).await?;
    let record = state
        .store
        .instances(Some(&name))
        .await?
        .into_iter()
        .find(|i| i.addr == addr)
        .ok_or_else(|| ApiError::NotFound(format!("no instance {addr} in cluster {name:?}")))?;
    if record.origin == store::Origin::Config {
        return Err(ApiError::Conflict {
            message: format!(
                "{addr} is declared in the config: remove it from the config and reload the \
                 daemon (SIGHUP) to forget it"
            ),
            operation: None,
        });
    }
    state.stats.request_forget(&name, &addr);
    tracing::info!(cluster = %name, instance = %addr, "forget requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "cluster": name, "instance": addr.to_string() })),
    ))
}

/// Any path no route matches: 404.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// A route that exists, called with a method it does not take: 405.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}
