//! Device sessions: a client opens one per device, keeps it alive with heartbeats that carry
//! the device's state, and ends it when it signs out. A session whose heartbeats stop dies with
//! the policy's session lifetime.

use std::sync::Arc;

use ampel_core::fact::{Details, DeviceState};
use ampel_core::{Activity, Fact, FactState, Source};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{admit, stored, user};
use crate::App;
use crate::auth::Caller;
use crate::hub::Change;
use crate::problem::{Json, Problem};

/// The most sessions one user may hold; a client that leaks sessions hits this, not the
/// server's memory.
const MAX_SESSIONS: usize = 32;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/users/{id}/sessions", post(open))
        .route("/users/{id}/sessions/{sid}", put(heartbeat).delete(close))
}

/// A device signing in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// What the device is called ("Laptop", "Desk phone").
    device: String,
    /// The device's state at sign-in; `active` when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    state: Option<DeviceState>,
    /// What the device says its user does beside its state (see [`Heartbeat::activity`]).
    #[serde(default)]
    activity: Option<String>,
}

/// An open session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    session_id: String,
    /// Send a heartbeat at least this often, in seconds.
    heartbeat_s: u64,
}

/// A heartbeat.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// `active`, `idle`, `away`, `busy` or `do-not-disturb`.
    #[schema(value_type = String)]
    state: DeviceState,
    /// What the device says its user does beside its state, weighed by the policy like the
    /// same news from the PBX or Teams: `in-a-call`, `in-a-conference-call`, `in-a-meeting`,
    /// `presenting`, or for an away device `out-of-office`, `off-work`, `be-right-back`. Left
    /// out, the device says nothing more; each heartbeat says it anew.
    #[serde(default)]
    activity: Option<String>,
}

/// A device's report, or a 422 naming `activity` when the device may not say that: only the
/// activities the aggregate weighs for a device, and the ways of being away only with `away`.
fn device_state(state: DeviceState, activity: Option<&str>) -> Result<FactState, Problem> {
    let Some(word) = activity else { return Ok(FactState::device(state)) };
    let refuse = |detail: String| Err(Problem::invalid(detail).field("activity"));
    let Some(activity) = FactState::DEVICE_ACTIVITIES.into_iter().find(|a| a.as_str() == word)
    else {
        let known: Vec<&str> = FactState::DEVICE_ACTIVITIES.iter().map(|a| a.as_str()).collect();
        return refuse(format!("a device may say {}, not {word:?}", known.join(", ")));
    };
    let away =
        matches!(activity, Activity::OutOfOffice | Activity::OffWork | Activity::BeRightBack);
    if away && state != DeviceState::Away {
        return refuse(format!("{word} says how the user is away; send it with the state away"));
    }
    Ok(FactState::Device { state, activity: Some(activity) })
}

/// Opens a device session.
#[utoipa::path(post, path = "/api/v1/users/{id}/sessions", tag = "sessions", request_body = OpenSession,
    responses((status = 201, description = "Created", body = SessionView), (status = 403, description = "The caller may not do this", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn open(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<OpenSession>,
) -> Result<(StatusCode, axum::Json<SessionView>), Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    let device = super::users::validate_text(&body.device, 100).map_err(|p| p.field("device"))?;
    let sessions = app.hub.facts(&slot).iter().filter(|f| f.source == Source::Session).count();
    if sessions >= MAX_SESSIONS {
        return Err(Problem::conflict(format!(
            "{} has {MAX_SESSIONS} open sessions; end one first",
            slot.id
        )));
    }
    let state = device_state(body.state.unwrap_or(DeviceState::Active), body.activity.as_deref())?;
    let session_id = session_id();
    let mut fact = Fact::new(Source::Session, &session_id, state, app.hub.clock.now());
    fact.details = Some(Details { device: Some(device), ..Details::default() });
    stored(&app, &slot, app.hub.update(&slot, vec![Change::Put(fact)])).await?;
    tracing::debug!(user = %slot.id, session = %session_id, "session opened");
    let heartbeat_s = app.hub.policy.dynamics.heartbeat.0.as_secs().unsigned_abs();
    Ok((StatusCode::CREATED, axum::Json(SessionView { session_id, heartbeat_s })))
}

fn session_id() -> String {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the operating system provides randomness");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps a session alive and reports the device's state.
#[utoipa::path(put, path = "/api/v1/users/{id}/sessions/{sid}", tag = "sessions", request_body = Heartbeat,
    responses((status = 200, description = "OK", body = SessionView), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path((id, sid)): Path<(String, String)>,
    Json(body): Json<Heartbeat>,
) -> Result<axum::Json<SessionView>, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    let state = device_state(body.state, body.activity.as_deref())?;
    let Some(pending) = app.hub.touch(&slot, Source::Session, &sid, state) else {
        return Err(Problem::not_found(format!("no open session {sid}; open a new one")));
    };
    stored(&app, &slot, pending).await?;
    let heartbeat_s = app.hub.policy.dynamics.heartbeat.0.as_secs().unsigned_abs();
    Ok(axum::Json(SessionView { session_id: sid, heartbeat_s }))
}

/// Ends a session, and with it any status set on that device.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions/{sid}", tag = "sessions",
    responses((status = 204, description = "Done, nothing to return"), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn close(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path((id, sid)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    if !app.hub.facts(&slot).iter().any(|f| f.same_key(Source::Session, &sid)) {
        return Err(Problem::not_found(format!("no open session {sid}")));
    }
    stored(&app, &slot, app.hub.update(&slot, vec![Change::Remove(Source::Session, sid.clone())]))
        .await?;
    tracing::debug!(user = %slot.id, session = %sid, "session closed");
    Ok(StatusCode::NO_CONTENT)
}
