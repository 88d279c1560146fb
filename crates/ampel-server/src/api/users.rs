//! Users and their tokens: the directory that presence is about.

use std::sync::Arc;

use ampel_store::{Op, TokenRecord, UserRecord, token_hash};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{durable, user};
use crate::App;
use crate::auth::{Caller, Principal};
use crate::problem::{Json, Problem};

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/users", post(create).get(list))
        .route("/users/{id}", get(show).delete(delete))
        .route("/users/{id}/tokens", post(create_token).delete(revoke_tokens))
        .route("/users/{id}/privacy", put(set_privacy))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// `user@domain`, the same form as a SIP address of record.
    id: String,
    /// The name people know the user by.
    name: String,
    /// A phone number.
    #[serde(default)]
    phone: Option<String>,
    /// The preferred language, a BCP 47 tag such as `de` or `en-GB`.
    #[serde(default)]
    lang: Option<String>,
    /// The time zone, an IANA name such as `Europe/Berlin`.
    #[serde(default)]
    tz: Option<String>,
    /// The groups (teams) the user belongs to.
    #[serde(default)]
    groups: Vec<String>,
}

/// A user as the directory shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tz: Option<String>,
    groups: Vec<String>,
    /// Shown to the user themself and administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    delegates: Option<Vec<String>>,
    /// Shown to the user themself and administrators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked: Option<Vec<String>>,
}

impl UserView {
    fn of(record: &UserRecord, viewer: &Principal) -> UserView {
        let own = viewer.may_act_for(&record.id);
        UserView {
            id: record.id.clone(),
            name: record.name.clone(),
            phone: record.phone.clone(),
            lang: record.lang.clone(),
            tz: record.tz.clone(),
            groups: record.groups.clone(),
            delegates: own.then(|| record.delegates.clone()),
            blocked: own.then(|| record.blocked.clone()),
        }
    }
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, description = "Created", body = UserView), (status = 409, description = "Conflicts with what exists", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn create(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, axum::Json<UserView>), Problem> {
    caller.require_admin()?;
    let record = UserRecord {
        id: validate_id(&body.id).map_err(|p| p.field("id"))?,
        name: validate_text(&body.name, 200).map_err(|p| p.field("name"))?,
        phone: body
            .phone
            .as_deref()
            .map(|p| validate_phone(p).map_err(|e| e.field("phone")))
            .transpose()?,
        lang: body
            .lang
            .as_deref()
            .map(|l| validate_lang(l).map_err(|e| e.field("lang")))
            .transpose()?,
        tz: body.tz.as_deref().map(|t| validate_tz(t).map_err(|e| e.field("tz"))).transpose()?,
        groups: validate_list(&body.groups, "groups", |g| validate_text(g, 100))?,
        delegates: Vec::new(),
        blocked: Vec::new(),
        created: app.hub.clock.now(),
    };
    let view = UserView::of(&record, &caller);
    match app.hub.create_user(record).await {
        None => Err(Problem::conflict(format!("a user {} exists already", view.id)).field("id")),
        Some(Err(e)) => {
            tracing::error!(error = %e, "user not stored");
            Err(Problem::unavailable("the user could not be stored; try again"))
        }
        Some(Ok(())) => {
            tracing::info!(user = %view.id, "user created");
            // A calendar source or the Microsoft 365 map may name the new user already.
            app.calendars.wake();
            crate::graph::user_created(&app, &view.id);
            Ok((StatusCode::CREATED, axum::Json(view)))
        }
    }
}

/// Lists all users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", responses((status = 200, description = "OK", body = Vec<UserView>)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
) -> axum::Json<Vec<UserView>> {
    let mut users: Vec<UserView> =
        app.hub.records().iter().map(|r| UserView::of(r, &caller)).collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    axum::Json(users)
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    responses((status = 200, description = "OK", body = UserView), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn show(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, Problem> {
    let slot = user(&app, &id)?;
    Ok(axum::Json(UserView::of(&slot.record(), &caller)))
}

/// Erases a user and everything Ampel holds about them: record, tokens, facts and history.
/// Watchers see the user go offline.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    responses((status = 204, description = "Erased"), (status = 403, description = "The caller may not do this", body = Problem),
        (status = 404, description = "No such user", body = Problem)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.require_admin()?;
    let slot = user(&app, &id)?;
    app.hub.delete_user(&slot).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "user not erased");
        Problem::unavailable("the user could not be erased; try again")
    })?;
    app.tokens.revoke(&slot.id);
    app.settings.forget_user(&slot.id);
    tracing::info!(user = %slot.id, "user erased");
    Ok(StatusCode::NO_CONTENT)
}

/// A new token.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    /// The token; it is shown only this once.
    token: String,
}

/// Creates a token for a user.
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "users",
    responses((status = 201, description = "Created", body = NewToken), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn create_token(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<NewToken>), Problem> {
    caller.require_admin()?;
    let slot = user(&app, &id)?;
    let token = crate::auth::new_token();
    let record = TokenRecord {
        hash: token_hash(&token),
        user: Some(slot.id.clone()),
        created: app.hub.clock.now(),
    };
    durable(app.hub.persist().submit(vec![Op::PutToken(record)])).await?;
    app.tokens.insert(token_hash(&token), Principal::User(slot.id.clone()));
    tracing::info!(user = %slot.id, "token created");
    Ok((StatusCode::CREATED, axum::Json(NewToken { token })))
}

/// Revokes every token of a user, and ends their sign-ins to the web page: a lost phone, a
/// leaving employee. The user themself may do it too; the request's own token stops working
/// with it.
#[utoipa::path(delete, path = "/api/v1/users/{id}/tokens", tag = "users",
    responses((status = 204, description = "Done, nothing to return"), (status = 403, description = "The caller may not do this", body = Problem), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn revoke_tokens(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    durable(app.hub.persist().submit(vec![Op::RevokeTokens { user: slot.id.clone() }])).await?;
    app.tokens.revoke(&slot.id);
    crate::web::session::end_all(&app, &slot.id).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "web sign-ins not ended");
        Problem::unavailable("the tokens are revoked, but the web sign-ins could not be ended")
    })?;
    tracing::info!(user = %slot.id, "tokens revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Who may see more of a user, and who sees the user offline.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Users who see everything a delegate may see.
    #[serde(default)]
    delegates: Vec<String>,
    /// Users who see this user as offline.
    #[serde(default)]
    blocked: Vec<String>,
}

/// Sets a user's delegates and block list.
#[utoipa::path(put, path = "/api/v1/users/{id}/privacy", tag = "users", request_body = Privacy,
    responses((status = 200, description = "OK", body = UserView), (status = 403, description = "The caller may not do this", body = Problem)))]
pub async fn set_privacy(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<Privacy>,
) -> Result<axum::Json<UserView>, Problem> {
    let slot = user(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    let mut record = UserRecord::clone(&slot.record());
    record.delegates = validate_list(&body.delegates, "delegates", validate_id)?;
    record.blocked = validate_list(&body.blocked, "blocked", validate_id)?;
    let view = UserView::of(&record, &caller);
    durable(app.hub.update_record(&slot, record)).await?;
    Ok(axum::Json(view))
}

/// Checks `user@domain` and returns it in lower case. The local part is what SIP and mail
/// addresses commonly use; the domain is dot-separated labels of letters, digits and inner
/// hyphens.
pub(super) fn validate_id(id: &str) -> Result<String, Problem> {
    let id = id.trim().to_ascii_lowercase();
    let bad = || Problem::invalid(format!("`{id}` is not an address of the form user@domain"));
    let (local, domain) = id.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if id.len() > 254 || !local_ok || !domain.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(id)
}

/// Checks free text shown to other people: printable, not only invisible characters, and
/// without the bidirectional controls that make text display as something else than it is.
pub(super) fn validate_text(text: &str, max: usize) -> Result<String, Problem> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(Problem::invalid(format!("must be at most {max} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Problem::invalid("must not contain control characters"));
    }
    if text.chars().any(is_bidi_control) {
        return Err(Problem::invalid("must not contain bidirectional control characters"));
    }
    if !text.chars().any(|c| !c.is_whitespace() && !is_invisible(c)) {
        return Err(Problem::invalid("must not be empty"));
    }
    Ok(text.to_owned())
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

fn validate_phone(phone: &str) -> Result<String, Problem> {
    let ok = phone.chars().all(|c| c.is_ascii_digit() || " +-()/".contains(c))
        && phone.chars().filter(char::is_ascii_digit).count() >= 2
        && phone.len() <= 32;
    if ok {
        Ok(phone.trim().to_owned())
    } else {
        Err(Problem::invalid(format!("`{phone}` is not a phone number")))
    }
}

/// Checks a BCP 47 language tag in its common shape (`de`, `en-GB`, `zh-Hant-TW`).
pub(super) fn validate_lang(lang: &str) -> Result<String, Problem> {
    let mut parts = lang.split('-');
    let primary = parts.next().unwrap_or_default();
    let ok = (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(lang.to_owned())
    } else {
        Err(Problem::invalid(format!("`{lang}` is not a language tag like `de` or `en-GB`")))
    }
}

fn validate_tz(tz: &str) -> Result<String, Problem> {
    jiff::tz::TimeZone::get(tz)
        .map(|_| tz.to_owned())
        .map_err(|_| Problem::invalid(format!("`{tz}` is not a time zone like `Europe/Berlin`")))
}

fn validate_list(
    items: &[String],
    field: &str,
    check: impl Fn(&str) -> Result<String, Problem>,
) -> Result<Vec<String>, Problem> {
    if items.len() > 1000 {
        return Err(Problem::invalid("at most 1000 entries").field(field));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item = check(item).map_err(|p| p.field(format!("{field}[{i}]")))?;
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}
