//! Health, metrics, the OpenAPI document and the policy in force.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::App;
use crate::auth::Caller;

pub(super) fn api_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/openapi.json", get(|| async { axum::Json(openapi()) }))
        .route("/policy", get(policy))
}

/// The REST interface's description with the Graph facade's beside it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::graph::facade::openapi::document());
    doc
}

pub(super) fn root_routes() -> Router<Arc<App>> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics))
}

/// Answers `ok` while the server serves.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "the server serves", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Counters in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "meta", security(()),
    responses((status = 200, description = "Prometheus text format", body = String)))]
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let body = app.hub.metrics.render(app.hub.user_count(), app.hub.timer_entries());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// The policy in force, as TOML with every field spelled out. Every user may read it.
#[utoipa::path(get, path = "/api/v1/policy", tag = "meta",
    responses((status = 200, description = "the policy as TOML", body = String)))]
pub async fn policy(State(app): State<Arc<App>>, _caller: Caller) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/toml; charset=utf-8")], app.hub.policy.to_toml())
}
