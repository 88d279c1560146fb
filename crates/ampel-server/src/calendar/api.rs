//! The administration API of calendar sources: set, show and remove a user's calendars.
//!
//! Only an administrator sets or removes a source; a user may look at their own. Answers show
//! a source without its password and with secrets cut out of its URL, beside its health.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::source::{AREA, SourceConfig, SourceView};
use super::{Health, remove_facts};
use crate::App;
use crate::auth::Caller;
use crate::problem::{Json, Problem};

/// The routes, to be nested under `/api/v1`.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/users/{id}/calendars", get(list))
        .route("/users/{id}/calendars/{name}", get(show).put(put).delete(delete))
}

/// A source with its health.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceAnswer {
    /// The source, without secrets.
    #[serde(flatten)]
    pub source: SourceView,
    /// How it stands.
    pub health: Health,
}

/// A user's sources.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceList {
    /// Each source.
    pub calendars: Vec<SourceAnswer>,
}

fn answers(app: &App, user: &str) -> Vec<SourceAnswer> {
    let health = app.calendars.health(app, user);
    app.calendars
        .sources(app)
        .into_iter()
        .filter(|(u, _, _)| u == user)
        .map(|(_, name, config)| {
            let health = health
                .iter()
                .find(|h| h.name == name)
                .cloned()
                .unwrap_or_else(|| super::health_of(&name, None));
            SourceAnswer { source: config.view(&name), health }
        })
        .collect()
}

fn valid_name(name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid("a calendar name has 1 to 64 letters, digits, '-', '_' or '.'")
            .field("name"))
    }
}

/// A user's calendar sources.
#[utoipa::path(get, path = "/api/v1/users/{id}/calendars", tag = "calendar",
    responses((status = 200, description = "OK", body = SourceList), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user", body = Problem)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<SourceList>, Problem> {
    let slot = crate::api::user_slot(&app, &id)?;
    caller.require_read_for(&slot.id)?;
    Ok(axum::Json(SourceList { calendars: answers(&app, &slot.id) }))
}

/// One calendar source.
#[utoipa::path(get, path = "/api/v1/users/{id}/calendars/{name}", tag = "calendar",
    responses((status = 200, description = "OK", body = SourceAnswer), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or calendar", body = Problem)))]
pub async fn show(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<axum::Json<SourceAnswer>, Problem> {
    let slot = crate::api::user_slot(&app, &id)?;
    caller.require_read_for(&slot.id)?;
    answers(&app, &slot.id)
        .into_iter()
        .find(|a| a.source.name == name)
        .map(axum::Json)
        .ok_or_else(|| Problem::not_found(format!("{} has no calendar {name}", slot.id)))
}

/// Sets a calendar source (administrators only); it is fetched at once.
#[utoipa::path(put, path = "/api/v1/users/{id}/calendars/{name}", tag = "calendar",
    request_body(content = Object, description = "`{\"kind\": \"file\" | \"url\" | \"caldav\", \"location\", \"username\"?, \"password\"?}`"),
    responses((status = 200, description = "Stored", body = SourceView), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn put(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path((id, name)): Path<(String, String)>,
    Json(config): Json<SourceConfig>,
) -> Result<axum::Json<SourceView>, Problem> {
    caller.require_admin()?;
    let slot = crate::api::user_slot(&app, &id)?;
    valid_name(&name)?;
    config
        .validate()
        .map_err(|(field, why)| Problem::invalid(format!("{field} {why}")).field(field))?;
    app.settings.put(app.hub.persist(), &slot.id, AREA, &name, &config).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "calendar source not stored");
        Problem::unavailable("the change could not be stored; try again")
    })?;
    app.calendars.wake();
    tracing::info!(user = %slot.id, source = %name, kind = ?config.kind, "calendar source set");
    Ok(axum::Json(config.view(&name)))
}

/// Removes a calendar source and the facts it placed (administrators only).
#[utoipa::path(delete, path = "/api/v1/users/{id}/calendars/{name}", tag = "calendar",
    responses((status = 204, description = "Removed"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or calendar", body = Problem)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let slot = crate::api::user_slot(&app, &id)?;
    let removed =
        app.settings.remove(app.hub.persist(), &slot.id, AREA, &name).await.map_err(|e| {
            tracing::error!(user = %slot.id, error = %e, "calendar source not removed");
            Problem::unavailable("the change could not be stored; try again")
        })?;
    if !removed {
        return Err(Problem::not_found(format!(
            "{} has no calendar {name} set through the API",
            slot.id
        )));
    }
    app.calendars.forget(&slot.id, &name);
    remove_facts(&app, &slot, &name).await;
    Ok(StatusCode::NO_CONTENT)
}
