//! SIP credentials: an administrator sets the digest user name and password a user's phone
//! authenticates with. Only the digest hashes are stored (settings area `sip`); nothing reads
//! them back out.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use serde::Deserialize;
use utoipa::ToSchema;

use super::user;
use crate::App;
use crate::auth::Caller;
use crate::problem::{Json, Problem};
use crate::sip::auth::{AREA, KEY, StoredCredentials};

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/users/{id}/sip-credentials", put(set).delete(remove))
}

/// A user's SIP credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipCredentials {
    /// The digest user name; the user part of the user's id when left out.
    #[serde(default)]
    username: Option<String>,
    /// The password, at least 8 characters.
    password: String,
}

/// Sets a user's SIP credentials (administrators only).
#[utoipa::path(put, path = "/api/v1/users/{id}/sip-credentials", tag = "sip", request_body = SipCredentials,
    responses((status = 204, description = "Done, nothing to return"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or session", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn set(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<SipCredentials>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let slot = user(&app, &id)?;
    let default_name = slot.id.split('@').next().unwrap_or(&slot.id).to_owned();
    let username = body.username.unwrap_or(default_name);
    if username.is_empty()
        || username.len() > 100
        || username.chars().any(|c| c.is_control() || c == '"' || c == ':')
    {
        return Err(Problem::invalid(
            "must be 1 to 100 characters without quotes, colons or control characters",
        )
        .field("username"));
    }
    if body.password.chars().count() < 8 || body.password.len() > 256 {
        return Err(Problem::invalid("must be 8 to 256 characters").field("password"));
    }
    let taken = app
        .settings
        .area::<StoredCredentials>(AREA)
        .into_iter()
        .any(|(owner, key, c)| key == KEY && c.username == username && owner != slot.id);
    if taken {
        return Err(Problem::conflict(format!(
            "the SIP user name {username} belongs to another user"
        )));
    }
    let stored = StoredCredentials::new(&username, &app.sip_realm, &body.password);
    app.settings.put(app.hub.persist(), &slot.id, AREA, KEY, &stored).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "sip credentials not stored");
        Problem::unavailable("the change could not be stored; try again")
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user's SIP credentials (administrators only).
#[utoipa::path(delete, path = "/api/v1/users/{id}/sip-credentials", tag = "sip",
    responses((status = 204, description = "Done, nothing to return"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let slot = user(&app, &id)?;
    let removed =
        app.settings.remove(app.hub.persist(), &slot.id, AREA, KEY).await.map_err(|e| {
            tracing::error!(user = %slot.id, error = %e, "sip credentials not removed");
            Problem::unavailable("the change could not be stored; try again")
        })?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!("{} has no SIP credentials", slot.id)))
    }
}
