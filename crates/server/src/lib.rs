//! The HTTP API of the dbfleet daemon: `/healthz`, the read-only `/api/v1` views of
//! clusters, topology, instances, problems and events, one mutating route (operator notes),
//! and bearer-token auth.
//!
//! Only this crate knows JSON over HTTP. Handlers read the [`store::Store`] and the
//! [`monitor::Stats`], convert model and store types to the [`wire`] types (crate `api`), and answer; every
//! error goes through [`ApiError`], the one place that picks an HTTP status. `docs/API.md`
//! documents every route.
//!
//! Invariant: the API never writes the store except through a route behind
//! [`auth::require_token`], and never logs or echoes a token.

pub mod alert_routes;
pub mod answers;
pub mod auth;
mod convert;
pub mod drt_routes;
mod error;
mod guard;
pub mod listen;
pub mod metrics_routes;
pub mod ops_routes;
mod paging;
mod query;
mod routes;
pub mod routing;
mod topology;

/// The wire types live in the `api` crate, beside the client that reads them.
pub use api::wire;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Auth;
pub use error::ApiError;
pub use guard::{MAX_BODY_BYTES, MAX_HEADERS, MAX_HEAD_BYTES, MAX_URI_BYTES};
pub use listen::{tls_config, ServeOptions};
pub use routes::MAX_TEXT_BYTES;

pub use store::kinds::OPERATOR_NOTE;

/// What every handler reads. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    /// The metadata store.
    pub store: Arc<dyn store::Store>,
    /// The watch loop's counters.
    pub stats: Arc<monitor::Stats>,
    /// Who may call the API.
    pub auth: Auth,
    /// The daemon's version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// The operations engine; `None` serves 503 on its routes.
    pub engine: Option<std::sync::Arc<engine::Engine>>,
    /// The daemon's scheduled DRT in progress, for `/api/v1/drt/running` and `abort`.
    pub drt: drt_routes::DrtControl,
    /// The daemon's alerting (open alerts, downtimes); `None` serves 503 on its routes.
    pub alerts: Option<alert_routes::AlertHandle>,
    /// The bound on large answers built at once, and the shared `GET /api/v1/clusters`
    /// answer (`Answers::default()` in the daemon).
    pub answers: answers::Answers,
    /// What the route checks answer from (`routing`); the daemon feeds it rounds.
    pub routing: routing::RouteTable,
}

/// The API's routes, with auth and a JSON 404/405 for everything else.
pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/api/v1/status", get(routes::status))
        .route("/api/v1/clusters", get(routes::clusters))
        .route("/api/v1/clusters/{name}", get(routes::cluster))
        .route(
            "/api/v1/clusters/{name}/topology",
            get(routes::cluster_topology),
        )
        .route("/api/v1/instances", get(routes::instances))
        .route("/api/v1/instances/{addr}", get(routes::instance))
        .route(
            "/api/v1/instances/{addr}/metrics",
            get(metrics_routes::instance_metrics),
        )
        .route("/metrics", get(metrics_routes::metrics))
        .route("/api/v1/problems", get(routes::problems))
        .route("/api/v1/events", get(routes::events))
        .route("/api/v1/operations", get(ops_routes::operations))
        .route("/api/v1/operations/{id}", get(ops_routes::operation))
        .route("/api/v1/recoveries", get(ops_routes::recoveries))
        .route("/api/v1/leader", get(ops_routes::leader))
        .route("/api/v1/drt/runs", get(drt_routes::runs))
        .route("/api/v1/drt/runs/{id}", get(drt_routes::run))
        .route(
            "/api/v1/drt/runs/{id}/report.html",
            get(drt_routes::run_html),
        )
        .route("/api/v1/drt/running", get(drt_routes::running))
        .route("/api/v1/alerts", get(alert_routes::alerts))
        .route("/api/v1/downtimes", get(alert_routes::downtimes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::read_access,
        ));
    let writes = Router::new()
        .route("/api/v1/events", post(routes::append_note))
        .route(
            "/api/v1/clusters/{name}/failover",
            post(ops_routes::failover),
        )
        .route(
            "/api/v1/clusters/{name}/switchover",
            post(ops_routes::switchover),
        )
        .route("/api/v1/clusters/{name}/rejoin", post(ops_routes::rejoin))
        .route(
            "/api/v1/clusters/{name}/recoveries/ack",
            post(ops_routes::ack),
        )
        .route("/api/v1/recoveries/{what}", post(ops_routes::switch))
        .route("/api/v1/drt/runs", post(drt_routes::post_run))
        .route("/api/v1/drt/abort", post(drt_routes::abort))
        .route("/api/v1/downtimes", post(alert_routes::post_downtime))
        .route(
            "/api/v1/downtimes/{id}",
            axum::routing::delete(alert_routes::delete_downtime),
        )
        .route(
            "/api/v1/clusters/{name}/instances/{addr}",
            axum::routing::delete(routes::forget_instance),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .merge(reads)
        .merge(writes)
        .merge(routing::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_BODY_BYTES))
        .layer(middleware::from_fn(guard::json_errors))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serve the API on `listener` with the default [`ServeOptions`] until `shutdown` is
/// cancelled, then finish the requests in flight and return.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(listener, state, shutdown, ServeOptions::default()).await
}

/// [`serve`] with a connection limit and header timeout of the caller's.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("read the API listen address")?;
    tracing::info!(
        %addr,
        max_connections = opts.max_connections,
        header_timeout = ?opts.header_timeout,
        "API listening"
    );
    listen::serve_router(listener, router(state), shutdown, opts)
        .await
        .context("serve the API")?;
    tracing::info!(%addr, "API stopped");
    Ok(())
}

/// Logs each request at debug: method, path (never headers: they may hold a token), status
/// and time taken.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "API request"
    );
    response
}
