//! A presence interface shaped like Microsoft Graph's, so that tools written for Teams presence
//! (busy lights, attendant consoles, desk displays) work against Ampel by changing their base
//! URL to `https://ampel.example.com/graph/v1.0` and their token to an Ampel token.
//!
//! Reads answer Ampel's aggregated presence, projected for the caller like on every other
//! interface, in Graph's JSON shape and words. Writes follow Graph's rules and become facts:
//! `setPresence` is a presence session of the calling application (a `teams` fact keyed
//! `session:{sessionId}` that ends with its expiration duration, PT5M to PT4H, 5 minutes by
//! default); `setUserPreferredPresence` is the user's own status, which in Ampel is the manual
//! status; `setStatusMessage` is a status message of its own (a `manual` fact keyed `message`
//! that changes no availability and ends at its `expiryDateTime`), shown in `statusMessage`
//! when no other note is. The policy then weighs them like any other fact: the preferred
//! presence beats sessions, and among sessions the most restrictive wins (do not disturb, busy,
//! available, away), as Graph documents. Errors are Graph's `{"error": {"code", "message"}}`
//! bodies.

pub mod openapi;
pub mod shapes;

use std::sync::Arc;

use ampel_core::mapping::graph::{GraphPresence, graph_activity, graph_availability, teams_state};
use ampel_core::visibility::Projected;
use ampel_core::{Availability, Color, Fact, FactState, Note, Presence, Source};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;

use shapes::{
    ClearPresence, DateTimeTimeZone, ErrorBody, ErrorDetail, Ids, ItemBody, OutOfOfficeSettings,
    PresenceBody, PresenceCollection, SetPreferred, SetPresence, SetStatusMessage, StatusMessage,
};

use crate::App;
use crate::auth::{Caller, Principal};
use crate::hub::{Change, Slot};

/// The key of the manual status, which the REST API's manual status uses too.
const MANUAL_KEY: &str = "status";
/// The key of the status message.
pub const MESSAGE_KEY: &str = "message";
/// The prefix of the keys of presence-session facts.
pub const SESSION_PREFIX: &str = "session:";
/// Graph's limit of ids per `getPresencesByUserId`.
const MAX_IDS: usize = 650;
const MIN_SESSION: SignedDuration = SignedDuration::from_mins(5);
const MAX_SESSION: SignedDuration = SignedDuration::from_hours(4);

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/graph/v1.0/users/{id}/presence", get(show))
        .route("/graph/v1.0/me/presence", get(show_me))
        .route("/graph/v1.0/communications/getPresencesByUserId", post(batch))
        .route("/graph/v1.0/users/{id}/presence/{action}", post(act))
        .route("/graph/v1.0/me/presence/{action}", post(act_me))
}

/// A Graph error answer.
#[derive(Debug)]
pub struct GraphFault {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl GraphFault {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> GraphFault {
        GraphFault { status, code, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> GraphFault {
        GraphFault::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn not_found(id: &str) -> GraphFault {
        GraphFault::new(StatusCode::NOT_FOUND, "NotFound", format!("no user {id}"))
    }
}

impl IntoResponse for GraphFault {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The caller, authenticated with an Ampel bearer token; failures in Graph's shape.
pub struct GraphCaller(Principal);

impl FromRequestParts<Arc<App>> for GraphCaller {
    type Rejection = GraphFault;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, GraphFault> {
        Caller::from_request_parts(parts, app).await.map(|Caller(p)| GraphCaller(p)).map_err(|p| {
            GraphFault::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", p.detail)
        })
    }
}

/// The user an id names: an Ampel id, or the Azure AD object id mapped to one.
fn resolve(app: &App, id: &str) -> Option<Arc<Slot>> {
    let id = id.trim();
    app.hub.user(&id.to_ascii_lowercase()).or_else(|| {
        let graph = app.graph.as_ref()?;
        app.hub.user(&graph.ampel_user(id)?)
    })
}

/// The id Graph would show for a user: its Azure AD object id when mapped.
fn graph_id(app: &App, slot: &Slot) -> String {
    app.graph.as_ref().and_then(|g| g.object_id(&slot.id)).unwrap_or_else(|| slot.id.clone())
}

fn me(app: &App, caller: &Principal) -> Result<Arc<Slot>, GraphFault> {
    match caller {
        Principal::User(id) => resolve(app, id).ok_or_else(|| GraphFault::not_found(id)),
        Principal::Admin => Err(GraphFault::bad_request(
            "/me names a user; an administrator token is no user, use /users/{id}",
        )),
    }
}

fn context(headers: &HeaderMap, fragment: &str) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}/graph/v1.0/$metadata#{fragment}")
}

/// A projection in Graph's presence shape. A viewer who may see the colour only gets the
/// availability of that colour and no more.
pub fn presence_body(id: &str, p: &Projected) -> Value {
    serde_json::to_value(presence(id, p)).expect("a presence serialises")
}

fn presence(id: &str, p: &Projected) -> PresenceBody {
    let availability = p.availability.unwrap_or(match p.color {
        Color::Green => Availability::Available,
        Color::Yellow => Availability::Away,
        Color::Red => Availability::Busy,
        Color::Grey => Availability::Offline,
    });
    let full = Presence {
        availability,
        activity: p.activity.unwrap_or(availability.plain_activity()),
        idle: p.idle.unwrap_or(false),
        out_of_office: p.out_of_office.unwrap_or(false),
        note: None,
        until: None,
        since: Timestamp::UNIX_EPOCH,
        location: None,
        last_active: None,
    };
    // A note that goes with a state ends with it, and claims no expiry of its own.
    let status_message = p.note.as_ref().map(|note| StatusMessage {
        message: ItemBody { content: note.text.clone(), content_type: "text".to_owned() },
        expiry_date_time: note.until.map(date_time_time_zone),
    });
    PresenceBody {
        odata_context: None,
        id: id.to_owned(),
        availability: graph_availability(&full).to_owned(),
        activity: graph_activity(&full).to_owned(),
        status_message,
        out_of_office_settings: OutOfOfficeSettings {
            message: None,
            is_out_of_office: full.out_of_office,
        },
    }
}

/// Graph's `dateTimeTimeZone` of an instant, in UTC.
fn date_time_time_zone(at: Timestamp) -> DateTimeTimeZone {
    let at = at.round(jiff::Unit::Second).unwrap_or(at);
    let date_time = at.strftime("%Y-%m-%dT%H:%M:%S.0000000").to_string();
    DateTimeTimeZone { date_time, time_zone: Some("UTC".to_owned()) }
}

fn single(headers: &HeaderMap, id: &str, p: &Projected) -> Response {
    let context = context(headers, &format!("users('{id}')/presence/$entity"));
    axum::Json(PresenceBody { odata_context: Some(context), ..presence(id, p) }).into_response()
}

async fn show(
    State(app): State<Arc<App>>,
    GraphCaller(caller): GraphCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, GraphFault> {
    let slot = resolve(&app, &id).ok_or_else(|| GraphFault::not_found(&id))?;
    Ok(single(&headers, &id, &app.hub.presence_for(&caller, &slot)))
}

async fn show_me(
    State(app): State<Arc<App>>,
    GraphCaller(caller): GraphCaller,
    headers: HeaderMap,
) -> Result<Response, GraphFault> {
    let slot = me(&app, &caller)?;
    let id = graph_id(&app, &slot);
    Ok(single(&headers, &id, &app.hub.presence_for(&caller, &slot)))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, GraphFault> {
    serde_json::from_slice(body)
        .map_err(|e| GraphFault::bad_request(format!("invalid request body: {e}")))
}

/// Several presences; ids Ampel does not know are left out of the answer.
async fn batch(
    State(app): State<Arc<App>>,
    GraphCaller(caller): GraphCaller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GraphFault> {
    let Ids { ids } = parse(&body)?;
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(GraphFault::bad_request(format!("ids must name 1 to {MAX_IDS} users")));
    }
    let value: Vec<PresenceBody> = ids
        .iter()
        .filter_map(|id| Some((id, resolve(&app, id)?)))
        .map(|(id, slot)| presence(id, &app.hub.presence_for(&caller, &slot)))
        .collect();
    let odata_context = context(&headers, "Collection(microsoft.graph.presence)");
    Ok(axum::Json(PresenceCollection { odata_context, value }).into_response())
}

async fn act(
    State(app): State<Arc<App>>,
    GraphCaller(caller): GraphCaller,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, GraphFault> {
    let slot = resolve(&app, &id).ok_or_else(|| GraphFault::not_found(&id))?;
    perform(&app, &caller, &slot, &action, &body).await
}

async fn act_me(
    State(app): State<Arc<App>>,
    GraphCaller(caller): GraphCaller,
    Path(action): Path<String>,
    body: Bytes,
) -> Result<Response, GraphFault> {
    let slot = me(&app, &caller)?;
    perform(&app, &caller, &slot, &action, &body).await
}

async fn perform(
    app: &App,
    caller: &Principal,
    slot: &Slot,
    action: &str,
    body: &[u8],
) -> Result<Response, GraphFault> {
    if !caller.may_act_for(&slot.id) {
        let message = format!("you may not change the presence of {}", slot.id);
        return Err(GraphFault::new(StatusCode::FORBIDDEN, "Forbidden", message));
    }
    let now = app.hub.clock.now();
    let change = match action {
        "setPresence" => set_presence(parse(body)?, now)?,
        "clearPresence" => {
            let ClearPresence { session_id } = parse(body)?;
            Change::Remove(Source::Teams, format!("{SESSION_PREFIX}{}", session_text(&session_id)?))
        }
        "setUserPreferredPresence" => set_preferred(parse(body)?, now)?,
        "clearUserPreferredPresence" => Change::Remove(Source::Manual, MANUAL_KEY.to_owned()),
        "setStatusMessage" => set_status_message(parse(body)?, now)?,
        other => {
            return Err(GraphFault::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("unsupported presence action {other}"),
            ));
        }
    };
    if let Err(seconds) = app.hub.admit(slot) {
        let mut response = GraphFault::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "too many requests; retry later",
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, seconds.max(1).into());
        return Ok(response);
    }
    let pending = app.hub.update(slot, vec![change]);
    app.hub.committed(slot, pending).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "graph facade change not stored");
        GraphFault::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceNotAvailable", "try again")
    })?;
    Ok(StatusCode::OK.into_response())
}

fn session_text(id: &str) -> Result<&str, GraphFault> {
    let id = id.trim();
    if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
        return Err(GraphFault::bad_request("sessionId must be 1 to 128 printable characters"));
    }
    Ok(id)
}

/// The combinations `setPresence` accepts, as Graph documents them.
const SESSION_STATES: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];

/// The combinations `setUserPreferredPresence` accepts, with Graph's default expiry in days.
const PREFERRED_STATES: &[(&str, &str, i64)] = &[
    ("Available", "Available", 7),
    ("Busy", "Busy", 1),
    ("DoNotDisturb", "DoNotDisturb", 1),
    ("BeRightBack", "BeRightBack", 1),
    ("Away", "Away", 1),
    ("Offline", "OffWork", 7),
];

fn set_presence(body: SetPresence, now: Timestamp) -> Result<Change, GraphFault> {
    let session = session_text(&body.session_id)?;
    let known = SESSION_STATES.iter().any(|(a, b)| {
        a.eq_ignore_ascii_case(body.availability.trim())
            && b.eq_ignore_ascii_case(body.activity.trim())
    });
    if !known {
        return Err(GraphFault::bad_request(format!(
            "availability {} with activity {} cannot be set by a presence session",
            body.availability, body.activity
        )));
    }
    let lasts = match body.expiration_duration.as_deref() {
        None => MIN_SESSION,
        Some(text) => duration(text, MIN_SESSION, MAX_SESSION)?,
    };
    let graph = GraphPresence {
        availability: Some(body.availability),
        activity: Some(body.activity),
        out_of_office_settings: None,
    };
    let state = FactState::Teams(teams_state(&graph));
    let key = format!("{SESSION_PREFIX}{session}");
    // The planned end decides, not the policy's Teams lifetime (see `aggregate::end_of`).
    let ends = now.saturating_add(lasts).unwrap_or(now);
    Ok(Change::Put(Fact::new(Source::Teams, key, state, now).ending(Some(ends))))
}

fn set_preferred(body: SetPreferred, now: Timestamp) -> Result<Change, GraphFault> {
    let found = PREFERRED_STATES.iter().find(|(a, b, _)| {
        a.eq_ignore_ascii_case(body.availability.trim())
            && b.eq_ignore_ascii_case(body.activity.trim())
    });
    let Some((availability, _, days)) = found else {
        return Err(GraphFault::bad_request(format!(
            "availability {} with activity {} cannot be preferred",
            body.availability, body.activity
        )));
    };
    let lasts = match body.expiration_duration.as_deref() {
        None => SignedDuration::from_hours(24 * days),
        Some(text) => duration(text, MIN_SESSION, SignedDuration::from_hours(24 * 7))?,
    };
    let availability = match *availability {
        "Available" => Availability::Available,
        "Busy" => Availability::Busy,
        "DoNotDisturb" => Availability::DoNotDisturb,
        "BeRightBack" => Availability::BeRightBack,
        "Away" => Availability::Away,
        _ => Availability::Offline,
    };
    let state = FactState::Status { availability, activity: None };
    let ends = now.saturating_add(lasts).unwrap_or(now);
    Ok(Change::Put(Fact::new(Source::Manual, MANUAL_KEY, state, now).ending(Some(ends))))
}

/// The status message: a fact of its own that changes no availability and ends at its expiry
/// (or lasts until replaced); an empty message clears it, as in Graph.
fn set_status_message(body: SetStatusMessage, now: Timestamp) -> Result<Change, GraphFault> {
    let StatusMessage { message, expiry_date_time } = body.status_message;
    let text = message.content;
    if text.chars().count() > 500 || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(GraphFault::bad_request("the message must be at most 500 characters of text"));
    }
    if text.trim().is_empty() {
        return Ok(Change::Remove(Source::Manual, MESSAGE_KEY.to_owned()));
    }
    let ends = expiry_date_time.map(|e| expiry(&e)).transpose()?;
    if ends.is_some_and(|e| e <= now) {
        return Err(GraphFault::bad_request("expiryDateTime must be in the future"));
    }
    let fact = Fact::new(Source::Manual, MESSAGE_KEY, FactState::Message, now)
        .ending(ends)
        .with_note(Some(Note::new(text, None)));
    Ok(Change::Put(fact))
}

/// The instant of a `dateTimeTimeZone` (the zone a Windows or IANA name, UTC when left out).
fn expiry(value: &DateTimeTimeZone) -> Result<Timestamp, GraphFault> {
    let invalid =
        || GraphFault::bad_request("expiryDateTime is not a dateTimeTimeZone Ampel reads");
    let zone =
        super::timezone::zone(value.time_zone.as_deref().unwrap_or("UTC")).ok_or_else(invalid)?;
    let civil: jiff::civil::DateTime = value.date_time.trim().parse().map_err(|_| invalid())?;
    civil.to_zoned(zone).map(|z| z.timestamp()).map_err(|_| invalid())
}

/// An ISO 8601 duration (`PT1H30M`, `P1D`) within bounds.
fn duration(
    text: &str,
    min: SignedDuration,
    max: SignedDuration,
) -> Result<SignedDuration, GraphFault> {
    let parsed: SignedDuration = text.trim().parse().map_err(|_| {
        GraphFault::bad_request(format!("expirationDuration {text} is not an ISO 8601 duration"))
    })?;
    if parsed < min || parsed > max {
        return Err(GraphFault::bad_request(format!(
            "expirationDuration must be between {min:#} and {max:#}"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampel_core::Activity;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_session_lasts_five_minutes_unless_told_and_at_most_four_hours() {
        let now = at("2026-04-21T10:00:00Z");
        let body = |d: Option<&str>| SetPresence {
            session_id: "app".into(),
            availability: "Busy".into(),
            activity: "InACall".into(),
            expiration_duration: d.map(str::to_owned),
        };
        let Ok(Change::Put(fact)) = set_presence(body(None), now) else { panic!() };
        assert_eq!(fact.ends, Some(at("2026-04-21T10:05:00Z")));
        assert_eq!(fact.key, "session:app");
        let Ok(Change::Put(fact)) = set_presence(body(Some("PT1H")), now) else { panic!() };
        assert_eq!(fact.ends, Some(at("2026-04-21T11:00:00Z")));
        assert!(set_presence(body(Some("PT4H1M")), now).is_err());
        assert!(set_presence(body(Some("PT1M")), now).is_err());
        assert!(set_presence(body(Some("soon")), now).is_err());
    }

    #[test]
    fn only_documented_combinations_are_accepted() {
        let now = at("2026-04-21T10:00:00Z");
        let body = SetPresence {
            session_id: "app".into(),
            availability: "Available".into(),
            activity: "InACall".into(),
            expiration_duration: None,
        };
        assert_eq!(set_presence(body, now).unwrap_err().code, "BadRequest");
        let preferred = SetPreferred {
            availability: "Offline".into(),
            activity: "OffWork".into(),
            expiration_duration: None,
        };
        let Ok(Change::Put(fact)) = set_preferred(preferred, now) else { panic!() };
        assert_eq!(
            fact.state,
            FactState::Status { availability: Availability::Offline, activity: None }
        );
        assert_eq!(fact.ends, Some(at("2026-04-28T10:00:00Z")));
    }

    #[test]
    fn a_colour_only_viewer_gets_the_availability_of_the_colour() {
        let p = Projected {
            user: "a@x".into(),
            color: Color::Red,
            availability: None,
            activity: None,
            idle: None,
            out_of_office: None,
            note: None,
            until: None,
            since: None,
            location: None,
            last_active: None,
            subject: None,
            sources: None,
        };
        let body = presence_body("a@x", &p);
        assert_eq!(body["availability"], "Busy");
        assert_eq!(body["activity"], "Busy");
        assert_eq!(body["statusMessage"], Value::Null);
        let p = Projected {
            availability: Some(Availability::Busy),
            activity: Some(Activity::InACall),
            ..p
        };
        assert_eq!(presence_body("a@x", &p)["activity"], "InACall");
    }
}
