//! The HTTP front end: routes, the layers every request passes, and the OpenAPI document.
//!
//! Handlers live in one module per area. Each checks who calls ([`crate::auth::Caller`]),
//! validates its input into core types, and talks to the hub; none of them knows how presence
//! is decided. Every failure is a [`Problem`].

mod meta;
mod presence;
mod push;
mod routing;
mod sessions;
mod sip;
mod telephony;
mod users;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::Instrument;
use utoipa::OpenApi;

use crate::App;
use crate::hub::Slot;
use crate::persist::PersistError;
use crate::problem::Problem;

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a request body may take to arrive once its head has.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The OpenAPI description of the REST interface, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "Ampel", description = "Presence server for unified communications"),
    paths(
        users::create, users::list, users::show, users::delete, users::create_token, users::revoke_tokens, users::set_privacy,
        presence::show, presence::batch, presence::set_manual, presence::clear_manual,
        presence::explain, presence::history,
        sessions::open, sessions::heartbeat, sessions::close,
        telephony::event,
        sip::set, sip::remove,
        routing::route, routing::settings, routing::set_settings, routing::lookup, routing::announcement,
        crate::calendar::api::list, crate::calendar::api::show, crate::calendar::api::put, crate::calendar::api::delete,
        push::stream, push::websocket,
        meta::healthz, meta::metrics, meta::policy,
        crate::web::password::set,
        crate::graph::mapping::show, crate::graph::mapping::set, crate::graph::mapping::remove,
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The whole HTTP interface.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .merge(users::routes())
        .merge(presence::routes())
        .merge(sessions::routes())
        .merge(telephony::routes())
        .merge(sip::routes())
        .merge(routing::routes())
        .merge(push::routes())
        .merge(meta::api_routes())
        .merge(crate::web::api_routes())
        .merge(crate::calendar::api::routes())
        .merge(crate::graph::mapping::routes());
    let root = Router::new()
        .nest("/api/v1", api)
        .merge(meta::root_routes())
        .merge(crate::graph::routes())
        .merge(crate::web::routes());
    with_layers(root, Arc::clone(&app)).with_state(app)
}

/// The layers every request passes: a span per matched route, status counting, the body
/// limit, problem answers for unknown routes, and a 500 problem for a handler that panics.
pub fn with_layers(router: Router<Arc<App>>, app: Arc<App>) -> Router<Arc<App>> {
    let panics = Arc::clone(&app);
    router
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(middleware::from_fn_with_state(app, observe))
        .layer(CatchPanicLayer::custom(move |panic: Box<dyn Any + Send>| {
            panics.hub.metrics.panics.fetch_add(1, Relaxed);
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "handler panicked");
            panics.hub.metrics.http_status(500);
            Problem::internal("the server failed to answer; the failure is logged").into_response()
        }))
}

/// Runs a request inside a span named after its route (never its query string, which may hold
/// a token) and counts its status.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", method = %request.method(), route = %route);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    app.hub.metrics.http_status(status);
    span.in_scope(|| tracing::debug!(status, "answered"));
    as_problem(response).await
}

/// Turns the plain-text rejections of the framework (a wrong method, a path that is not
/// UTF-8, a WebSocket request without its upgrade headers) into problems like every other
/// failure. JSON error bodies a handler wrote on purpose (the Graph facade's) pass unchanged.
async fn as_problem(response: Response) -> Response {
    let status = response.status();
    let is_problem = response.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json")
            || v.as_bytes().starts_with(b"application/json")
    });
    if !status.is_client_error() && !status.is_server_error() || is_problem {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_owned();
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("request failed").to_lowercase()
    } else {
        detail
    };
    Problem::with_status(status, detail).into_response()
}

/// The user named in a path, or a 404 problem.
pub(crate) fn user(app: &App, id: &str) -> Result<Arc<Slot>, Problem> {
    app.hub
        .user(&id.to_ascii_lowercase())
        .ok_or_else(|| Problem::not_found(format!("no user {id}")))
}

/// The user named in a path, or a 404 problem; for handlers outside this module.
pub(crate) fn user_slot(app: &App, id: &str) -> Result<Arc<Slot>, Problem> {
    user(app, id)
}

/// Counts a change against the user's allowance, or answers 429 with `Retry-After`.
fn admit(app: &App, slot: &Slot) -> Result<(), Problem> {
    app.hub.admit(slot).map_err(|seconds| {
        let detail = format!("{} changes too often; wait {seconds} s", slot.id);
        Problem { retry_after: Some(seconds.max(1)), ..Problem::too_many(detail) }
    })
}

/// Waits for a change of a user's facts to become durable, or answers 503; on failure the hub
/// puts the user back to what is stored.
async fn stored(app: &App, slot: &Slot, pending: crate::persist::Pending) -> Result<(), Problem> {
    app.hub.committed(slot, pending).await.map_err(|e: PersistError| {
        tracing::error!(user = %slot.id, error = %e, "change not committed");
        Problem::unavailable("the change could not be stored; try again")
    })
}

/// Waits for a write to become durable, or answers 503.
async fn durable(pending: crate::persist::Pending) -> Result<(), Problem> {
    pending.committed().await.map_err(|e: PersistError| {
        tracing::error!(error = %e, "write not committed");
        Problem::unavailable("the change could not be stored; try again")
    })
}
