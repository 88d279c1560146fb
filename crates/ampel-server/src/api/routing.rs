//! Calls over HTTP: the routing decision for the PBX, each user's routing settings, the caller
//! lookup, and the announcements' audio.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ampel_core::routing::{Action, CallerClass, Hop, UserRouting};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::user;
use crate::App;
use crate::auth::{Caller, Principal};
use crate::problem::{Json, Problem, Query};
use crate::routing::lookup::Found;
use crate::routing::speech::SpeechError;
use crate::routing::{self as calls, AREA, CallRequest, KEY, RouteError};

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/route", post(route))
        .route("/users/{id}/routing", get(settings).put(set_settings))
        .route("/lookup", get(lookup))
        .route("/announcements/{file}", get(announcement))
}

/// A call the PBX asks about.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The caller: a number (national or E.164), a `tel:` or `sip:` URI, a user address, or
    /// `anonymous` for a withheld number.
    from: String,
    /// The callee, a user address or its `sip:` URI.
    to: String,
    /// The caller's class when the PBX knows it; otherwise it comes from the lookup (a user is
    /// internal, anyone else external) and the caller lists.
    #[serde(default)]
    class: Option<CallerClass>,
    /// The caller's language (`de`, `en`) when the PBX knows it.
    #[serde(default)]
    lang: Option<String>,
}

/// What the caller hears first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnnouncementView {
    /// The words.
    text: String,
    /// Their language.
    lang: String,
    /// The words as audio (WAV), when a speech synthesiser is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    audio_url: Option<String>,
}

/// What happens to the call.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteAnswer {
    /// `ring`, `forward`, `busy` or `voicemail`.
    action: Action,
    /// Where a forward goes, or the voicemail that takes the call (a `sip:` or `tel:` URI).
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// With `ring`: the only devices that ring.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<String>,
    /// The routing rule that decided; `default` when none matched, `forwarding-loop` when
    /// forwards went round.
    reason: String,
    /// The decision in one sentence.
    explanation: String,
    /// What the caller hears before the call is forwarded, rejected or sent to voicemail.
    #[serde(skip_serializing_if = "Option::is_none")]
    announcement: Option<AnnouncementView>,
    /// When the callee's situation is expected to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    until: Option<Timestamp>,
    /// The users the call passed through, the callee first.
    hops: Vec<Hop>,
    /// Who calls, as far as Ampel knows.
    caller: Found,
}

/// Decides what happens to a call. The PBX asks with an administrator token; a user may ask
/// about calls to themself.
#[utoipa::path(post, path = "/api/v1/route", tag = "routing", request_body = RouteRequest,
    responses((status = 200, description = "The decision", body = RouteAnswer), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user (field `to`)", body = Problem), (status = 422, description = "A value is not acceptable, such as a malformed number (field `from`)", body = Problem)))]
pub async fn route(
    State(app): State<Arc<App>>,
    Caller(principal): Caller,
    headers: HeaderMap,
    Json(body): Json<RouteRequest>,
) -> Result<axum::Json<RouteAnswer>, Problem> {
    let lang = match body.lang.as_deref() {
        None => None,
        Some(tag) => Some(calls::language(tag).ok_or_else(|| {
            Problem::invalid(format!("`{tag}` is not a language Ampel speaks (de, en)"))
                .field("lang")
        })?),
    };
    let call = CallRequest { from: &body.from, to: &body.to, class: body.class, lang };
    let (decision, caller) = calls::decide(&app, &call).map_err(|e| match e {
        RouteError::UnknownCallee(_) => Problem::not_found(e.to_string()).field("to"),
        RouteError::Caller(_) => Problem::invalid(e.to_string()).field("from"),
    })?;
    // Checked after deciding because the callee may have been named by number; the answer
    // is withheld all the same.
    let to = decision.hops.first().map(|h| h.user.clone()).unwrap_or_default();
    if !principal.may_act_for(&to) {
        return Err(Problem::forbidden(format!("you may not ask about calls to {to}")));
    }
    let announcement = decision.announcement.map(|a| {
        let audio_url = app.routing.speaks.load(Relaxed).then(|| {
            let hash = app.routing.speech.announce(&a.speech, &a.lang);
            audio_url(&headers, &hash)
        });
        AnnouncementView { text: a.text, lang: a.lang, audio_url }
    });
    tracing::debug!(callee = %to, action = decision.action.as_str(), reason = %decision.reason, "call routed");
    Ok(axum::Json(RouteAnswer {
        action: decision.action,
        target: decision.target,
        devices: decision.devices,
        reason: decision.reason,
        explanation: decision.explanation,
        announcement,
        until: decision.until,
        hops: decision.hops,
        caller,
    }))
}

/// The address of an announcement's audio, absolute when the request named its host.
fn audio_url(headers: &HeaderMap, hash: &str) -> String {
    let path = format!("/api/v1/announcements/{hash}.wav");
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', ' ', '@']) => {
            format!("http://{host}{path}")
        }
        _ => path,
    }
}

/// A user's routing settings.
#[utoipa::path(get, path = "/api/v1/users/{id}/routing", tag = "routing",
    responses((status = 200, description = "The settings", body = UserRouting), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user", body = Problem)))]
pub async fn settings(
    State(app): State<Arc<App>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<UserRouting>, Problem> {
    let slot = user(&app, &id)?;
    if !principal.may_act_for(&slot.id) {
        return Err(Problem::forbidden(format!("you may not see the routing of {}", slot.id)));
    }
    Ok(axum::Json(app.settings.get(&slot.id, AREA, KEY).unwrap_or_default()))
}

/// Replaces a user's routing settings: absence and busy targets (`user:ADDRESS`,
/// `team:NAME`, `tel:NUMBER`, `mobile`, `voicemail`), the mobile number, and the user's own
/// entries in the caller lists. Numbers may be national; they are stored in E.164.
#[utoipa::path(put, path = "/api/v1/users/{id}/routing", tag = "routing", request_body = RoutingBody,
    responses((status = 200, description = "The settings as stored", body = UserRouting), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn set_settings(
    State(app): State<Arc<App>>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    Json(body): Json<RoutingBody>,
) -> Result<axum::Json<UserRouting>, Problem> {
    let slot = user(&app, &id)?;
    principal.require_act_for(&slot.id)?;
    let mut body = body.read(&app)?;
    normalise_numbers(&app, &mut body)?;
    body.check(&app.hub.policy.routing).map_err(|f| Problem::invalid(f.message).field(f.field))?;
    for (field, target) in
        [("absence_target", &body.absence_target), ("busy_target", &body.busy_target)]
    {
        if let Some(ampel_core::routing::Target::User(other)) = target
            && app.hub.user(other).is_none()
        {
            return Err(Problem::invalid(format!("there is no user {other}")).field(field));
        }
    }
    app.settings.put(app.hub.persist(), &slot.id, AREA, KEY, &body).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "routing settings not stored");
        Problem::unavailable("the settings could not be stored; try again")
    })?;
    tracing::info!(user = %slot.id, "routing settings changed");
    Ok(axum::Json(body))
}

/// Routing settings as written by a person: targets may carry national numbers
/// (`tel:0170 1234567`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingBody {
    /// Where calls go while the user is in a meeting or absent.
    #[serde(default)]
    absence_target: Option<String>,
    /// Where calls go while the user is in a call.
    #[serde(default)]
    busy_target: Option<String>,
    /// The mobile number.
    #[serde(default)]
    mobile: Option<String>,
    /// The user's own entries in the caller lists.
    #[serde(default)]
    lists: std::collections::BTreeMap<String, Vec<String>>,
}

impl RoutingBody {
    fn read(self, app: &App) -> Result<UserRouting, Problem> {
        let target = |text: Option<String>, field: &str| -> Result<_, Problem> {
            let Some(text) = text else { return Ok(None) };
            let text = match text.trim().strip_prefix("tel:") {
                Some(number) => format!(
                    "tel:{}",
                    app.routing
                        .lookup
                        .normalise(number)
                        .map_err(|e| Problem::invalid(e.to_string()).field(field))?
                ),
                None => text,
            };
            text.parse().map(Some).map_err(|e: String| Problem::invalid(e).field(field))
        };
        Ok(UserRouting {
            absence_target: target(self.absence_target, "absence_target")?,
            busy_target: target(self.busy_target, "busy_target")?,
            mobile: self.mobile,
            lists: self.lists,
        })
    }
}

/// Brings the mobile number and list numbers to E.164.
fn normalise_numbers(app: &App, body: &mut UserRouting) -> Result<(), Problem> {
    let lookup = &app.routing.lookup;
    let number = |text: &str, field: &str| {
        lookup.normalise(text).map_err(|e| Problem::invalid(e.to_string()).field(field))
    };
    if let Some(mobile) = &body.mobile {
        body.mobile = Some(number(mobile, "mobile")?);
    }
    for (list, entries) in &mut body.lists {
        for (i, entry) in entries.iter_mut().enumerate() {
            if !entry.contains('@') {
                *entry = number(entry, &format!("lists.{list}[{i}]"))?;
            } else {
                *entry = entry.to_ascii_lowercase();
            }
        }
    }
    Ok(())
}

/// A number to look up.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LookupQuery {
    /// A phone number, national or E.164, a `tel:` or `sip:` URI, or a user address.
    number: String,
}

/// Who a number belongs to: an Ampel user, an entry of the directory, a contact of the
/// address book, or a Microsoft 365 contact (the asking user's own first). A number that is
/// well-formed but unknown answers with its E.164 form only.
#[utoipa::path(get, path = "/api/v1/lookup", tag = "routing", params(LookupQuery),
    responses((status = 200, description = "What is known", body = Found), (status = 422, description = "Not a phone number (field `number`)", body = Problem)))]
pub async fn lookup(
    State(app): State<Arc<App>>,
    Caller(principal): Caller,
    Query(query): Query<LookupQuery>,
) -> Result<axum::Json<Found>, Problem> {
    let owner = match &principal {
        Principal::User(id) => Some(id.as_str()),
        Principal::Admin => None,
    };
    calls::find_caller(&app, owner, &query.number)
        .map(axum::Json)
        .map_err(|e| Problem::invalid(e.to_string()).field("number"))
}

/// An announcement as audio (WAV, PCM). No token is needed, so that a PBX's media player can
/// fetch it; the name is a hash of the words, which are what any caller hears.
#[utoipa::path(get, path = "/api/v1/announcements/{file}", tag = "routing", security(()),
    params(("file" = String, Path, description = "`HASH.wav` as given in `audio_url`")),
    responses((status = 200, description = "The audio", content_type = "audio/wav"), (status = 404, description = "No such announcement", body = Problem), (status = 503, description = "The audio cannot be made now", body = Problem)))]
pub async fn announcement(
    State(app): State<Arc<App>>,
    Path(file): Path<String>,
) -> Result<impl IntoResponse, Problem> {
    let hash =
        file.strip_suffix(".wav").ok_or_else(|| Problem::not_found("no such announcement"))?;
    let bytes = app.routing.speech.wav(hash).await.map_err(|e| match e {
        SpeechError::Unknown(_) => Problem::not_found(e.to_string()),
        e => {
            tracing::error!(announcement = %hash, error = %e, "announcement audio failed");
            Problem::unavailable("the announcement cannot be rendered now")
        }
    })?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "audio/wav"), (header::CACHE_CONTROL, "public, max-age=86400")],
        bytes,
    ))
}
