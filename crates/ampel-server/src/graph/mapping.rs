//! Which Azure AD account belongs to which Ampel user, changed at run time: the `[graph.users]`
//! table of the server configuration file, with what administrators set through
//! `/api/v1/users/{id}/graph` (settings area `graph`, key `object_id`) over it.
//!
//! A change takes effect at once, without a restart: the connector's map is rebuilt, every task
//! reads it anew at its next round, the newly mapped mailbox gets a calendar round straight
//! away, and the Graph facts of a user whose account went away or changed are removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use ampel_core::Source;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Connector;
use crate::App;
use crate::auth::Caller;
use crate::hub::Change;
use crate::problem::{Json, Problem};

/// The settings area of the map.
pub const AREA: &str = "graph";
/// The settings key of a user's object id.
pub const KEY: &str = "object_id";

/// The routes, to be nested under `/api/v1`.
pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/users/{id}/graph", get(show).put(set).delete(remove))
}

/// The map as the file and the settings make it now.
pub(super) fn current(app: &App, graph: &Connector) -> BTreeMap<String, String> {
    let mut users = graph.config.users.clone();
    for (user, key, object_id) in app.settings.area::<String>(AREA) {
        if key == KEY {
            users.insert(user, object_id);
        }
    }
    users
}

/// Rebuilds the connector's map from the file and the settings, and puts what changed into
/// effect.
pub async fn remap(app: &App) {
    let Some(graph) = app.graph.as_deref() else { return };
    let new = current(app, graph);
    let old = graph.users();
    if *old == new {
        return;
    }
    *graph.users.write().expect("users lock") = Arc::new(new.clone());
    for (user, object_id) in old.iter() {
        if new.get(user) != Some(object_id) {
            forget(app, user).await;
        }
    }
    for (user, object_id) in &new {
        if old.get(user) != Some(object_id) {
            tracing::info!(user, "graph account mapped");
            let _ = graph
                .calendar_commands
                .try_send(super::calendar::Command::Changed(object_id.clone()));
        }
    }
}

/// Removes the facts a user's former Graph account placed: the Teams presence and the Graph
/// calendar entries.
async fn forget(app: &App, user: &str) {
    let Some(slot) = app.hub.user(user) else { return };
    let changes: Vec<Change> = app
        .hub
        .facts(&slot)
        .into_iter()
        .filter(|f| {
            f.same_key(Source::Teams, super::presence_in::FACT_KEY)
                || (f.source == Source::Calendar && f.key.starts_with(super::calendar::KEY_PREFIX))
        })
        .map(|f| Change::Remove(f.source, f.key))
        .collect();
    tracing::info!(user, "graph account unmapped");
    if changes.is_empty() {
        return;
    }
    let pending = app.hub.update(&slot, changes);
    if let Err(e) = app.hub.committed(&slot, pending).await {
        tracing::error!(user, error = %e, "graph facts of an unmapped user not removed");
    }
}

/// The account to map a user to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    /// The Azure AD object id (a GUID).
    pub object_id: String,
    /// Where the mapping comes from, as answered; ignored here, so that an answer can be put
    /// back.
    #[serde(default)]
    #[schema(ignore)]
    #[allow(dead_code)] // read only so that it is not refused as an unknown field
    origin: Option<String>,
}

/// A user's Azure AD account.
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    /// The Azure AD object id (a GUID).
    pub object_id: String,
    /// Where the mapping comes from: `file` (`[graph.users]`) or `api`.
    pub origin: &'static str,
}

fn connector(app: &App) -> Result<&Connector, Problem> {
    app.graph
        .as_deref()
        .ok_or_else(|| Problem::conflict("the server configuration has no [graph] section"))
}

/// Whether an object id has the shape of a GUID, which is also safe in Graph's paths.
fn valid_object_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A user's Azure AD account.
#[utoipa::path(get, path = "/api/v1/users/{id}/graph", tag = "graph",
    responses((status = 200, description = "OK", body = Account), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user, or no account mapped", body = Problem), (status = 409, description = "The server has no Graph connector", body = Problem)))]
pub async fn show(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Account>, Problem> {
    let slot = crate::api::user_slot(&app, &id)?;
    caller.require_read_for(&slot.id)?;
    let graph = connector(&app)?;
    let object_id = graph
        .object_id(&slot.id)
        .ok_or_else(|| Problem::not_found(format!("{} has no Graph account", slot.id)))?;
    let from_api = app.settings.get::<String>(&slot.id, AREA, KEY).is_some();
    let origin = if from_api { "api" } else { "file" };
    Ok(axum::Json(Account { object_id, origin }))
}

/// Maps a user to an Azure AD account (administrators only), over the file's mapping; it takes
/// effect at once.
#[utoipa::path(put, path = "/api/v1/users/{id}/graph", tag = "graph", request_body = AccountBody,
    responses((status = 200, description = "Stored", body = Account), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user", body = Problem), (status = 409, description = "The account belongs to another user, or the server has no Graph connector", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn set(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<AccountBody>,
) -> Result<axum::Json<Account>, Problem> {
    caller.require_admin()?;
    let slot = crate::api::user_slot(&app, &id)?;
    let graph = connector(&app)?;
    let object_id = body.object_id.trim().to_ascii_lowercase();
    if !valid_object_id(&object_id) {
        return Err(Problem::invalid("must be a GUID").field("object_id"));
    }
    if graph.ampel_user(&object_id).is_some_and(|owner| owner != slot.id) {
        return Err(Problem::conflict("the account belongs to another user"));
    }
    app.settings.put(app.hub.persist(), &slot.id, AREA, KEY, &object_id).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "graph account not stored");
        Problem::unavailable("the change could not be stored; try again")
    })?;
    remap(&app).await;
    Ok(axum::Json(Account { object_id, origin: "api" }))
}

/// Removes the account set through the API (administrators only); the file's mapping, if any,
/// applies again.
#[utoipa::path(delete, path = "/api/v1/users/{id}/graph", tag = "graph",
    responses((status = 204, description = "Removed"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user, or no account set through the API", body = Problem), (status = 409, description = "The server has no Graph connector", body = Problem)))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let slot = crate::api::user_slot(&app, &id)?;
    connector(&app)?;
    let removed =
        app.settings.remove(app.hub.persist(), &slot.id, AREA, KEY).await.map_err(|e| {
            tracing::error!(user = %slot.id, error = %e, "graph account not removed");
            Problem::unavailable("the change could not be stored; try again")
        })?;
    if !removed {
        return Err(Problem::not_found(format!(
            "{} has no Graph account set through the API",
            slot.id
        )));
    }
    remap(&app).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_id_is_a_guid() {
        assert!(valid_object_id("a1b2c3d4-0000-4000-8000-00000000a11c"));
        assert!(!valid_object_id("a1b2c3d4-0000-4000-8000-00000000a11"));
        assert!(!valid_object_id("../../../me/presence/setPresence?x=aaaaaaaaaa"));
        assert!(!valid_object_id("a1b2c3d4x0000-4000-8000-00000000a11c"));
    }
}
