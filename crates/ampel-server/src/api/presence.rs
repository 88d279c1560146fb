//! Reading presence, setting and clearing the manual status, the explanation and the history.

use std::sync::Arc;

use ampel_core::aggregate::Considered;
use ampel_core::policy::{Grant, Rule};
use ampel_core::visibility::{Projected, grants};
use ampel_core::{Activity, Availability, Fact, FactState, Note, Presence, Source};
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::users::{validate_lang, validate_text};
use super::{admit, stored, user};
use crate::App;
use crate::auth::Caller;
use crate::hub::Change;
use crate::problem::{Json, Problem, Query};

/// The fact key of the one manual status a user has.
const MANUAL_KEY: &str = "status";
/// The most users one request may name.
pub const MAX_USERS: usize = 1000;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/users/{id}/presence", get(show))
        .route("/presence", get(batch))
        .route("/users/{id}/presence/manual", axum::routing::put(set_manual).delete(clear_manual))
        .route("/users/{id}/presence/explain", get(explain))
        .route("/users/{id}/history", get(history))
}

/// A user's presence as the caller may see it.
#[utoipa::path(get, path = "/api/v1/users/{id}/presence", tag = "presence",
    responses((status = 200, description = "OK", body = Projected), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn show(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Projected>, Problem> {
    let slot = user(&app, &id)?;
    Ok(axum::Json(app.hub.presence_for(&caller, &slot)))
}

/// Names users, comma-separated.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UsersQuery {
    /// `alice@example.com,bob@example.com`
    pub(super) users: String,
}

/// Several presences.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presences {
    presences: Vec<Projected>,
}

/// Several users' presences as the caller may see them.
#[utoipa::path(get, path = "/api/v1/presence", tag = "presence", params(UsersQuery),
    responses((status = 200, description = "OK", body = Presences), (status = 400, description = "The request is malformed", body = Problem), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn batch(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Query(query): Query<UsersQuery>,
) -> Result<axum::Json<Presences>, Problem> {
    let slots = users_of(&app, &query.users)?;
    let presences = slots.iter().map(|s| app.hub.presence_for(&caller, s)).collect();
    Ok(axum::Json(Presences { presences }))
}

/// The users of a comma-separated list; every one must exist.
pub(super) fn users_of(app: &App, list: &str) -> Result<Vec<Arc<crate::hub::Slot>>, Problem> {
    let ids: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return Err(Problem::bad_request("name at least one user").field("users"));
    }
    if ids.len() > MAX_USERS {
        return Err(
            Problem::bad_request(format!("at most {MAX_USERS} users at once")).field("users")
        );
    }
    ids.iter().map(|id| user(app, id).map_err(|p| p.field("users"))).collect()
}

/// A note: plain text, or text with its language.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum NoteInput {
    /// Just the words.
    Text(String),
    /// The words and their language.
    WithLang(NoteWithLang),
}

/// A note with its language.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteWithLang {
    /// The words.
    text: String,
    /// A BCP 47 tag.
    #[serde(default)]
    lang: Option<String>,
}

/// A manual status.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualStatus {
    /// `offline` means appear offline.
    #[schema(value_type = String, example = "busy")]
    availability: Availability,
    /// More specific than the availability, such as `focusing` or `out-of-office`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    activity: Option<Activity>,
    /// A note for colleagues.
    #[serde(default)]
    note: Option<NoteInput>,
    /// The note's language when `note` is plain text.
    #[serde(default)]
    lang: Option<String>,
    /// When the status ends by itself; what was there before then comes back.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
}

/// The longest a manual status may be set for.
const MAX_MANUAL: SignedDuration = SignedDuration::from_hours(24 * 366);
/// The longest note.
const MAX_NOTE: usize = 500;

/// Sets the manual status.
#[utoipa::path(put, path = "/api/v1/users/{id}/presence/manual", tag = "presence", request_body = ManualStatus,
    responses((status = 200, description = "OK", body = Projected), (status = 403, description = "The caller may not do this", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn set_manual(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<ManualStatus>,
) -> Result<axum::Json<Projected>, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    let now = app.hub.clock.now();
    if body.availability == Availability::Unknown {
        return Err(Problem::invalid("`unknown` cannot be set by hand").field("availability"));
    }
    if let Some(activity) = body.activity
        && !fits(body.availability, activity)
    {
        let message =
            format!("`{activity}` does not go with the availability `{}`", body.availability);
        return Err(Problem::invalid(message).field("activity"));
    }
    if let Some(until) = body.until {
        if until <= now {
            return Err(Problem::invalid(format!("{until} is not in the future")).field("until"));
        }
        if until.duration_since(now) > MAX_MANUAL {
            return Err(Problem::invalid("a manual status may last at most a year").field("until"));
        }
    }
    let note = note_of(body.note, body.lang)?;
    let state = FactState::Status { availability: body.availability, activity: body.activity };
    let fact = Fact::new(Source::Manual, MANUAL_KEY, state, now).ending(body.until).with_note(note);
    stored(&app, &slot, app.hub.update(&slot, vec![Change::Put(fact)])).await?;
    tracing::debug!(user = %slot.id, availability = %body.availability, "manual status set");
    Ok(axum::Json(app.hub.presence_for(&caller, &slot)))
}

/// The activities a person may choose together with an availability; a contradiction such
/// as "available, presenting" would tell colleagues two things at once.
fn fits(availability: Availability, activity: Activity) -> bool {
    use Activity as A;
    let allowed: &[Activity] = match availability {
        Availability::Available => &[A::Available],
        Availability::Away => &[A::Away, A::OutOfOffice, A::OffWork, A::Inactive],
        Availability::BeRightBack => &[A::BeRightBack],
        Availability::Busy => {
            &[A::Busy, A::InACall, A::InAConferenceCall, A::InAMeeting, A::Focusing]
        }
        Availability::DoNotDisturb => &[A::DoNotDisturb, A::Presenting, A::Focusing],
        Availability::Offline => &[A::Offline, A::OffWork, A::OutOfOffice],
        Availability::Unknown => &[],
    };
    allowed.contains(&activity)
}

fn note_of(note: Option<NoteInput>, lang: Option<String>) -> Result<Option<Note>, Problem> {
    let lang = lang.map(|l| validate_lang(&l).map_err(|p| p.field("lang"))).transpose()?;
    let (text, lang) = match note {
        None => return Ok(None),
        Some(NoteInput::Text(text)) => (text, lang),
        Some(NoteInput::WithLang(NoteWithLang { text, lang: inner })) => {
            let inner =
                inner.map(|l| validate_lang(&l).map_err(|p| p.field("note.lang"))).transpose()?;
            (text, inner.or(lang))
        }
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    let text = validate_text(&text, MAX_NOTE).map_err(|p| p.field("note"))?;
    Ok(Some(Note { text, lang, until: None }))
}

/// Clears the manual status; what the other sources say comes back.
#[utoipa::path(delete, path = "/api/v1/users/{id}/presence/manual", tag = "presence",
    responses((status = 200, description = "OK", body = Projected), (status = 403, description = "The caller may not do this", body = Problem)))]
pub async fn clear_manual(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Projected>, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    admit(&app, &slot)?;
    stored(
        &app,
        &slot,
        app.hub.update(&slot, vec![Change::Remove(Source::Manual, MANUAL_KEY.into())]),
    )
    .await?;
    tracing::debug!(user = %slot.id, "manual status cleared");
    Ok(axum::Json(app.hub.presence_for(&caller, &slot)))
}

/// Why a presence is what it is.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainView {
    user: String,
    /// The presence as the caller sees it.
    presence: Projected,
    /// The rule that decided.
    #[schema(value_type = String)]
    rule: Rule,
    /// Every fact held, with what became of it.
    #[schema(value_type = Vec<Object>)]
    facts: Vec<Considered>,
    /// When the presence changes by itself if nothing new is heard.
    #[schema(value_type = Option<String>, format = DateTime)]
    next_change: Option<Timestamp>,
    /// The user's calendar sources and how they stand; a stale one still counts with its last
    /// good calendar.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    calendars: Vec<crate::calendar::Health>,
}

/// The facts considered and the rule that won. Only for the user, administrators and viewers
/// the policy lets see the sources (by default, delegates).
#[utoipa::path(get, path = "/api/v1/users/{id}/presence/explain", tag = "presence",
    responses((status = 200, description = "OK", body = ExplainView), (status = 403, description = "The caller may not do this", body = Problem)))]
pub async fn explain(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ExplainView>, Problem> {
    let slot = user(&app, &id)?;
    let (aggregate, relation) = app.hub.aggregate_for(&caller, &slot);
    if !grants(&app.hub.policy, relation).contains(&Grant::Sources) {
        return Err(Problem::forbidden(format!(
            "you may not see why {} is shown as they are",
            slot.id
        )));
    }
    let presence = ampel_core::visibility::project(&slot.id, &aggregate, relation, &app.hub.policy);
    let explanation = aggregate.explanation;
    Ok(axum::Json(ExplainView {
        user: slot.id.clone(),
        presence,
        rule: explanation.rule,
        facts: explanation.facts,
        next_change: explanation.next_change,
        calendars: app.calendars.health(&app, &slot.id),
    }))
}

/// A time range.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Start (RFC 3339); defaults to 24 hours before `to`.
    #[param(value_type = Option<String>)]
    from: Option<Timestamp>,
    /// End (RFC 3339); defaults to now.
    #[param(value_type = Option<String>)]
    to: Option<Timestamp>,
    /// At most this many entries (1 to 1000, default 100).
    limit: Option<usize>,
}

/// One past change.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    #[schema(value_type = Object)]
    presence: Presence,
}

/// The history of a user's aggregated presence, kept as long as the policy says. Only for the
/// user and administrators.
#[utoipa::path(get, path = "/api/v1/users/{id}/history", tag = "presence", params(HistoryQuery),
    responses((status = 200, description = "OK", body = Vec<HistoryView>), (status = 403, description = "The caller may not do this", body = Problem)))]
pub async fn history(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<axum::Json<Vec<HistoryView>>, Problem> {
    let slot = user(&app, &id)?;
    if !caller.may_act_for(&slot.id) {
        return Err(Problem::forbidden(format!("you may not read the history of {}", slot.id)));
    }
    let to = query.to.unwrap_or_else(|| app.hub.clock.now());
    let from = query
        .from
        .unwrap_or_else(|| to.saturating_sub(SignedDuration::from_hours(24)).unwrap_or(to));
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit must be between 1 and 1000").field("limit"));
    }
    let user_id = slot.id.clone();
    let entries = app
        .hub
        .persist()
        .read(move |store| store.history(&user_id, from, to, limit))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "history not read");
            Problem::unavailable("the history could not be read")
        })?;
    Ok(axum::Json(
        entries.into_iter().map(|e| HistoryView { at: e.at, presence: e.presence }).collect(),
    ))
}
