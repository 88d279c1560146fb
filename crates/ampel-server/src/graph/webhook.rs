//! The endpoints Microsoft Graph posts to: change notifications (`/graph/notifications`) and
//! lifecycle notifications (`/graph/lifecycle`).
//!
//! Both first answer Graph's validation request: a POST with a `validationToken` query
//! parameter must be answered within ten seconds with 200 and the token, URL-decoded, as
//! `text/plain`. Every notification must carry the `clientState` Ampel gave the subscription;
//! the ones that do not are dropped (and counted in the log), since anyone can post here. A
//! notification about a mailbox's events (`Users/{id}/Events/{event id}`) goes to the calendar
//! task, any other to the presence task; the work runs there, so that Graph gets its 202 at
//! once.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use reqwest::Method;
use serde::Deserialize;

use super::Connector;
use super::calendar::Command as CalendarCommand;
use super::client::{GraphError, Kind};
use super::presence_in::Command;
use crate::App;
use crate::problem::Problem;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/graph/notifications", post(notifications))
        .route("/graph/lifecycle", post(lifecycle))
}

#[derive(Deserialize)]
struct Notifications {
    #[serde(default)]
    value: Vec<Notification>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(default)]
    subscription_id: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_data: Option<ResourceData>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
struct ResourceData {
    #[serde(default)]
    id: Option<String>,
}

/// The validation token of a validation request, URL-decoded.
fn validation_token(query: Option<&str>) -> Option<String> {
    let query = query?;
    form_pairs(query).find_map(|(k, v)| (k == "validationToken").then_some(v))
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
}

/// The longest validation token echoed. Graph's are about a hundred characters; a longer one is
/// no handshake, and echoing it would make Ampel reflect whatever a link puts in it.
const MAX_TOKEN: usize = 1024;

fn echo(token: String) -> Response {
    if token.len() > MAX_TOKEN {
        let why = format!("must be at most {MAX_TOKEN} bytes");
        return Problem::invalid(why).field("validationToken").into_response();
    }
    let headers =
        [(header::CONTENT_TYPE, "text/plain"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")];
    (StatusCode::OK, headers, token).into_response()
}

/// Parses a notification body and keeps the notifications that carry Ampel's client state.
fn authentic(graph: &Connector, body: &[u8]) -> Result<Vec<Notification>, StatusCode> {
    let parsed: Notifications =
        serde_json::from_slice(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let total = parsed.value.len();
    let ours: Vec<Notification> = parsed
        .value
        .into_iter()
        .filter(|n| n.client_state.as_deref() == Some(graph.client_state.expose()))
        .collect();
    if ours.len() < total {
        tracing::warn!(
            dropped = total - ours.len(),
            "graph notifications with a wrong clientState"
        );
    }
    Ok(ours)
}

/// What both endpoints do first: answer Graph's validation handshake, or read the notifications
/// whose `clientState` is Ampel's. Without the connector there is no subscription to validate,
/// and nothing is echoed.
#[allow(clippy::result_large_err)] // the error is the answer itself, made at most once a request
fn receive<'a>(
    app: &'a App,
    query: Option<&str>,
    body: &[u8],
) -> Result<(&'a Connector, Vec<Notification>), Response> {
    let Some(graph) = app.graph.as_deref() else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    if let Some(token) = validation_token(query) {
        return Err(echo(token));
    }
    let notifications = authentic(graph, body).map_err(|status| status.into_response())?;
    Ok((graph, notifications))
}

async fn notifications(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (graph, notifications) = match receive(&app, query.as_deref(), &body) {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    let mut ids = Vec::new();
    for n in &notifications {
        if let Some(mailbox) = mailbox_of(n) {
            if graph.calendar_commands.try_send(CalendarCommand::Changed(mailbox)).is_err() {
                tracing::warn!("graph notification queue full");
            }
        } else if let Some(id) = user_of(n) {
            ids.push(id);
        }
    }
    if !ids.is_empty() && graph.commands.try_send(Command::Fetch(ids)).is_err() {
        // The presence task is behind; the next full read catches up.
        tracing::warn!("graph notification queue full");
    }
    StatusCode::ACCEPTED.into_response()
}

/// The Azure AD object id of the mailbox an events notification is about:
/// `Users/{id}/Events/{event id}` or `users('{id}')/events('{event id}')`.
fn mailbox_of(n: &Notification) -> Option<String> {
    let resource = n.resource.as_deref()?;
    let lower = resource.to_ascii_lowercase();
    let events = lower.find("/events")?;
    let user = lower.strip_prefix('/').unwrap_or(&lower).strip_prefix("users")?;
    let offset = lower.len() - user.len();
    let id = resource.get(offset..events)?;
    let id = id.trim_start_matches('/').trim_start_matches("('").trim_end_matches("')");
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// The Azure AD object id a presence notification is about.
fn user_of(n: &Notification) -> Option<String> {
    if let Some(id) = n.resource_data.as_ref().and_then(|d| d.id.clone()) {
        return Some(id);
    }
    // `communications/presences/{id}` or `communications/presences('{id}')`.
    let resource = n.resource.as_deref()?;
    let rest = resource.rsplit_once("presences")?.1;
    let id = rest.trim_start_matches('/').trim_start_matches("('").trim_end_matches("')");
    (!id.is_empty()).then(|| id.to_owned())
}

async fn lifecycle(
    State(app): State<Arc<App>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (graph, notifications) = match receive(&app, query.as_deref(), &body) {
        Ok(received) => received,
        Err(answer) => return answer,
    };
    for n in notifications {
        let id = n.subscription_id.clone();
        // The subscription is the presence task's or the calendar task's; each acts on its
        // own and ignores the other's.
        let (command, calendar) = match n.lifecycle_event.as_deref() {
            Some("reauthorizationRequired") => {
                (Command::Renew(id.clone()), CalendarCommand::Renew(id))
            }
            Some("subscriptionRemoved") => {
                (Command::Recreate(id.clone()), CalendarCommand::Recreate(id))
            }
            Some("missed") => (Command::Resync, CalendarCommand::Resync),
            other => {
                tracing::debug!(event = ?other, "unknown graph lifecycle event");
                continue;
            }
        };
        tracing::info!(subscription = %n.subscription_id, "graph lifecycle notification");
        let presence_full = graph.commands.try_send(command).is_err();
        let calendar_full = graph.calendar_commands.try_send(calendar).is_err();
        if presence_full || calendar_full {
            tracing::warn!("graph notification queue full");
        }
    }
    StatusCode::ACCEPTED.into_response()
}

/// Creates a change notification subscription (`POST /subscriptions`) described by `body`,
/// which asked for `asked` as its expiry: its id, and the expiry Graph granted (which may be
/// earlier).
pub(super) async fn create_subscription(
    graph: &Connector,
    body: &serde_json::Value,
    asked: jiff::Timestamp,
) -> Result<(String, jiff::Timestamp), GraphError> {
    let answer =
        graph.client.send(Kind::Other, Method::POST, "/subscriptions", Some(body), &[]).await?;
    let id = answer["id"]
        .as_str()
        .ok_or_else(|| GraphError::Decode("subscription without id".into()))?;
    let granted =
        answer["expirationDateTime"].as_str().and_then(|t| t.parse().ok()).unwrap_or(asked);
    Ok((id.to_owned(), granted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_token_is_url_decoded() {
        assert_eq!(
            validation_token(Some("validationToken=Validation%3a+Testing%20client")).as_deref(),
            Some("Validation: Testing client")
        );
        assert_eq!(validation_token(Some("other=1")), None);
        assert_eq!(validation_token(None), None);
    }

    #[test]
    fn a_validation_token_is_echoed_as_plain_text_within_a_bound() {
        let short = echo("Validation: Testing client".into());
        assert_eq!(short.status(), StatusCode::OK);
        assert_eq!(short.headers()[header::CONTENT_TYPE], "text/plain");
        assert_eq!(short.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let long = echo("<script>".repeat(200));
        assert_eq!(long.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(long.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn the_user_is_read_from_resource_data_or_the_resource() {
        let n = |resource: &str| Notification {
            subscription_id: String::new(),
            client_state: None,
            resource: Some(resource.into()),
            resource_data: None,
            lifecycle_event: None,
        };
        assert_eq!(user_of(&n("communications/presences/abc")).as_deref(), Some("abc"));
        assert_eq!(user_of(&n("communications/presences('abc')")).as_deref(), Some("abc"));
        assert_eq!(mailbox_of(&n("communications/presences/abc")), None);
        assert_eq!(mailbox_of(&n("Users/a-b/Events/AAMk=")).as_deref(), Some("a-b"));
        assert_eq!(mailbox_of(&n("users('a-b')/events('AAMk=')")).as_deref(), Some("a-b"));
    }
}
