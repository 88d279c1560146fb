//! Call state from a PBX that does not speak SIP dialog events: one event per change of a call.

use std::sync::Arc;

use ampel_core::fact::CallState;
use ampel_core::{Fact, FactState, Source};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{admit, stored, user};
use crate::App;
use crate::auth::Caller;
use crate::hub::Change;
use crate::problem::{Json, Problem};

/// The most calls one user may have at once; more means the PBX never sends `ended`.
const MAX_CALLS: usize = 16;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/telephony/events", post(event))
}

/// A change of one call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallEvent {
    /// The user whose phone it is.
    user: String,
    /// The PBX's identifier of the call.
    call_id: String,
    /// `ringing`, `connected`, `held` or `ended`.
    #[schema(value_type = String)]
    state: CallState,
}

/// Reports a call's state. The PBX calls this with an administrator token; a user may report
/// their own calls.
#[utoipa::path(post, path = "/api/v1/telephony/events", tag = "telephony", request_body = CallEvent,
    responses((status = 204, description = "Done, nothing to return"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or session", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn event(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Json(body): Json<CallEvent>,
) -> Result<axum::http::StatusCode, Problem> {
    let slot = user(&app, body.user.trim()).map_err(|p| p.field("user"))?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    let call_id =
        super::users::validate_text(&body.call_id, 256).map_err(|p| p.field("call_id"))?;
    let call_id = call_id.as_str();
    let change = match body.state {
        CallState::Ended => Change::Remove(Source::Telephony, call_id.to_owned()),
        state => {
            let facts = app.hub.facts(&slot);
            let calls =
                facts.iter().filter(|f| f.source == Source::Telephony && f.key != call_id).count();
            if calls >= MAX_CALLS {
                return Err(Problem::conflict(format!(
                    "{} has {MAX_CALLS} calls already",
                    slot.id
                )));
            }
            let fact = Fact::new(
                Source::Telephony,
                call_id,
                FactState::Call { state },
                app.hub.clock.now(),
            );
            Change::Put(fact)
        }
    };
    stored(&app, &slot, app.hub.update(&slot, vec![change])).await?;
    tracing::debug!(user = %slot.id, state = ?body.state, "call event");
    Ok(axum::http::StatusCode::NO_CONTENT)
}
