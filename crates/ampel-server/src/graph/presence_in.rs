//! Teams presence in: change-notification subscriptions on `/communications/presences`, with
//! polling through `getPresencesByUserId` for the initial state, as a periodic refresh, and as
//! the fallback whenever subscriptions are not possible.
//!
//! Graph sends presence notifications without resource data unless Ampel supplies an
//! encryption certificate; each notification only names the user, so Ampel reads the presence of
//! the named users in one batch. Subscriptions last at most an hour and are renewed before they
//! expire; lifecycle notifications ask for reauthorization (renew now), say a subscription was
//! removed (create it anew) or that notifications were missed (read everything).
//!
//! Each presence becomes the `teams` fact `presence` of its user, unless it is the echo of
//! Ampel's own presence session (see [`super::presence_out`]): an echo only refreshes the fact
//! held from before the session.

use std::collections::HashSet;
use std::sync::Arc;

use ampel_core::fact::TeamsState;
use ampel_core::mapping::graph::{GraphPresence, teams_state};
use ampel_core::{Fact, FactState, Source};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Connector;
use super::client::{GraphError, Kind};
use super::webhook::create_subscription;
use crate::App;
use crate::hub::Change;

/// The key of the Teams presence fact of a user.
pub const FACT_KEY: &str = "presence";
/// Graph takes at most this many ids per `getPresencesByUserId` and per subscription.
pub const BATCH: usize = 650;

/// Work for the presence task, sent by the notification endpoints.
#[derive(Debug)]
pub enum Command {
    /// Read the presence of these Azure AD object ids.
    Fetch(Vec<String>),
    /// Notifications were missed: read everyone.
    Resync,
    /// Graph asks to reauthorize this subscription: renew it now.
    Renew(String),
    /// Graph removed this subscription: create it anew.
    Recreate(String),
}

struct Subscription {
    id: String,
    ids: Vec<String>,
    expires: Timestamp,
}

/// The presence task.
pub async fn run(app: Arc<App>, graph: Arc<Connector>, mut commands: mpsc::Receiver<Command>) {
    let mut ids: Vec<String> = graph.users().values().cloned().collect();
    let mut subs = Vec::new();
    if graph.config.notification_url.is_some() {
        for chunk in ids.chunks(BATCH) {
            subscribe_or_log(&app, &graph, chunk.to_vec(), &mut subs).await;
        }
    }
    let mut last_poll: Option<tokio::time::Instant> = None;
    let mut known = HashSet::new();
    let discover_every = graph.config.poll_interval.0.unsigned_abs();
    let mut last_discovery = tokio::time::Instant::now();
    loop {
        // The map may have changed: new users are subscribed to at the next full read.
        ids = graph.users().values().cloned().collect();
        let due = poll_due(&graph, &subs, &ids, last_poll);
        if due.is_zero() {
            if last_poll.is_some() && graph.config.notification_url.is_some() {
                subscribe_uncovered(&app, &graph, &ids, &mut subs).await;
            }
            discover(&app, &graph, &mut known);
            fetch(&app, &graph, &ids).await;
            last_poll = Some(tokio::time::Instant::now());
            continue;
        }
        if last_discovery.elapsed() >= discover_every {
            let new = discover(&app, &graph, &mut known);
            fetch(&app, &graph, &new).await;
            last_discovery = tokio::time::Instant::now();
        }
        let due = due.min(discover_every.saturating_sub(last_discovery.elapsed()));
        let renew = renew_due(&app, &graph, &subs);
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => handle(&app, &graph, command, &mut subs).await,
                None => return,
            },
            () = tokio::time::sleep(due) => {}
            () = tokio::time::sleep(renew) => renew_all(&app, &graph, &mut subs).await,
        }
    }
}

/// The object ids of mapped users who exist in Ampel now and did not at the last look: users
/// created after the start get their Teams presence without waiting for the next full read.
fn discover(app: &App, graph: &Connector, known: &mut HashSet<String>) -> Vec<String> {
    let mut new = Vec::new();
    for (user, oid) in graph.users().iter() {
        if !known.contains(user) && app.hub.user(user).is_some() {
            known.insert(user.clone());
            new.push(oid.clone());
        }
    }
    new
}

/// How long until the next full read: the poll interval while some users have no working
/// subscription, the refresh interval otherwise; zero at start.
fn poll_due(
    graph: &Connector,
    subs: &[Subscription],
    ids: &[String],
    last: Option<tokio::time::Instant>,
) -> std::time::Duration {
    let Some(last) = last else { return std::time::Duration::ZERO };
    let covered: usize = subs.iter().map(|s| s.ids.len()).sum();
    let interval = if covered >= ids.len() {
        graph.config.refresh_interval
    } else {
        graph.config.poll_interval
    };
    interval.0.unsigned_abs().saturating_sub(last.elapsed())
}

/// How long until the first subscription is due for renewal.
fn renew_due(app: &App, graph: &Connector, subs: &[Subscription]) -> std::time::Duration {
    let now = app.hub.clock.now();
    let Some(first) = subs.iter().map(|s| s.expires).min() else {
        return std::time::Duration::from_secs(24 * 3600);
    };
    let at = first.saturating_sub(graph.config.renew_before.0).unwrap_or(first);
    at.duration_since(now).unsigned_abs().min(std::time::Duration::from_secs(24 * 3600))
        * u32::from(at > now)
}

async fn handle(app: &App, graph: &Connector, command: Command, subs: &mut Vec<Subscription>) {
    match command {
        Command::Fetch(ids) => fetch(app, graph, &ids).await,
        Command::Resync => {
            let ids: Vec<String> = graph.users().values().cloned().collect();
            fetch(app, graph, &ids).await;
        }
        Command::Renew(id) => {
            if let Some(i) = subs.iter().position(|s| s.id == id) {
                renew(app, graph, subs, i).await;
            }
        }
        Command::Recreate(id) => {
            if let Some(i) = subs.iter().position(|s| s.id == id) {
                let old = subs.remove(i);
                subscribe_or_log(app, graph, old.ids.clone(), subs).await;
                fetch(app, graph, &old.ids).await;
            }
        }
    }
}

async fn renew_all(app: &App, graph: &Connector, subs: &mut Vec<Subscription>) {
    let now = app.hub.clock.now();
    let mut i = 0;
    while i < subs.len() {
        let at = subs[i].expires.saturating_sub(graph.config.renew_before.0).unwrap_or(now);
        if at <= now {
            // A renewal that fails removes the subscription; polling covers its users.
            if !renew(app, graph, subs, i).await {
                continue;
            }
        }
        i += 1;
    }
}

/// Extends a subscription; when Graph no longer knows it, creates it anew. Returns false when
/// the subscription at `i` was removed from the list.
async fn renew(app: &App, graph: &Connector, subs: &mut Vec<Subscription>, i: usize) -> bool {
    let expires = expiry(app, graph);
    let body = json!({ "expirationDateTime": expires.to_string() });
    let path = format!("/subscriptions/{}", subs[i].id);
    match graph.client.send(Kind::Other, Method::PATCH, &path, Some(&body), &[]).await {
        Ok(_) => {
            subs[i].expires = expires;
            tracing::debug!(subscription = %subs[i].id, "graph subscription renewed");
            true
        }
        Err(e) => {
            tracing::warn!(subscription = %subs[i].id, error = %e, "graph subscription not renewed");
            let old = subs.remove(i);
            subscribe_or_log(app, graph, old.ids, subs).await;
            false
        }
    }
}

fn expiry(app: &App, graph: &Connector) -> Timestamp {
    let now = app.hub.clock.now();
    now.saturating_add(graph.config.subscription_lifetime.0).unwrap_or(now)
}

/// Tries again to subscribe for users whose subscription could not be created or renewed.
async fn subscribe_uncovered(
    app: &App,
    graph: &Connector,
    ids: &[String],
    subs: &mut Vec<Subscription>,
) {
    let uncovered: Vec<String> =
        ids.iter().filter(|id| !subs.iter().any(|s| s.ids.contains(id))).cloned().collect();
    for chunk in uncovered.chunks(BATCH) {
        subscribe_or_log(app, graph, chunk.to_vec(), subs).await;
    }
}

async fn subscribe_or_log(
    app: &App,
    graph: &Connector,
    ids: Vec<String>,
    subs: &mut Vec<Subscription>,
) {
    match subscribe(app, graph, ids).await {
        Ok(sub) => subs.push(sub),
        Err(e) => tracing::warn!(error = %e, "graph subscription not created; polling instead"),
    }
}

async fn subscribe(
    app: &App,
    graph: &Connector,
    ids: Vec<String>,
) -> Result<Subscription, GraphError> {
    let expires = expiry(app, graph);
    let body = json!({
        "changeType": "updated",
        "notificationUrl": graph.config.notification_url,
        "lifecycleNotificationUrl": graph.config.lifecycle_url(),
        "resource": resource(&ids),
        "expirationDateTime": expires.to_string(),
        "clientState": graph.client_state.expose(),
        "includeResourceData": false,
    });
    let (id, expires) = create_subscription(graph, &body, expires).await?;
    tracing::info!(subscription = %id, users = ids.len(), "graph presence subscription created");
    Ok(Subscription { id, ids, expires })
}

/// The subscription resource for some users: the single-user form for one, the `id in (...)`
/// filter for more (at most [`BATCH`]).
pub fn resource(ids: &[String]) -> String {
    match ids {
        [one] => format!("/communications/presences/{one}"),
        many => {
            let quoted: Vec<String> = many.iter().map(|id| format!("'{id}'")).collect();
            format!("/communications/presences?$filter=id in ({})", quoted.join(","))
        }
    }
}

/// Reads the presence of `ids` in batches of at most [`BATCH`] and applies it.
pub(super) async fn fetch(app: &App, graph: &Connector, ids: &[String]) {
    for chunk in ids.chunks(BATCH) {
        let body = json!({ "ids": chunk });
        let path = "/communications/getPresencesByUserId";
        match graph.client.send(Kind::Presence, Method::POST, path, Some(&body), &[]).await {
            Ok(answer) => {
                for presence in answer["value"].as_array().into_iter().flatten() {
                    apply(app, graph, presence).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, users = chunk.len(), "graph presence not read"),
        }
    }
}

/// Puts one presence body as the Teams fact of its user.
async fn apply(app: &App, graph: &Connector, body: &Value) {
    let Some(object_id) = body["id"].as_str() else { return };
    let Some(user) = graph.ampel_user(object_id) else { return };
    let Some(slot) = app.hub.user(&user) else { return };
    let Ok(presence) = serde_json::from_value::<GraphPresence>(body.clone()) else { return };
    let state = teams_state(&presence);
    let now = app.hub.clock.now();
    let facts = app.hub.facts(&slot);
    let held = facts.iter().find(|f| f.same_key(Source::Teams, FACT_KEY));
    let state = if graph.outbound.is_echo(&slot.id, &state, now, graph.config.echo_grace.0) {
        // Graph shows Ampel's own session over the Teams client's state, so the state held from
        // before the session still stands; that Graph answered at all confirms it, and a call
        // longer than half the Teams lifetime must not leave it stale or let it expire.
        tracing::debug!(user = %slot.id, "ignoring the echo of ampel's own teams session");
        match held {
            Some(Fact { state: FactState::Teams(old), .. }) => old.clone(),
            _ => return,
        }
    } else {
        state
    };
    if !needs_put(held, &state, now, graph.config.refresh_interval.0) {
        return;
    }
    let fact = Fact::new(Source::Teams, FACT_KEY, FactState::Teams(state), now);
    let pending = app.hub.update(&slot, vec![Change::Put(fact)]);
    if let Err(e) = app.hub.committed(&slot, pending).await {
        tracing::error!(user = %slot.id, error = %e, "teams fact not stored");
    }
}

/// A Teams fact is written when it changed, or to refresh it once half the refresh interval
/// passed (which keeps it from expiring and from showing as stale).
fn needs_put(
    held: Option<&Fact>,
    state: &TeamsState,
    now: Timestamp,
    refresh: SignedDuration,
) -> bool {
    match held {
        Some(Fact { state: FactState::Teams(old), observed, .. }) if old == state => {
            observed.saturating_add(refresh / 2).is_ok_and(|t| t <= now)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_is_a_path_and_more_are_a_filter() {
        assert_eq!(resource(&["a".into()]), "/communications/presences/a");
        assert_eq!(
            resource(&["a".into(), "b".into()]),
            "/communications/presences?$filter=id in ('a','b')"
        );
    }

    #[test]
    fn an_unchanged_presence_is_written_only_to_refresh_it() {
        let state = teams_state(&GraphPresence {
            availability: Some("Busy".into()),
            activity: Some("InACall".into()),
            out_of_office_settings: None,
        });
        let t0: Timestamp = "2026-04-21T10:00:00Z".parse().unwrap();
        let held = Fact::new(Source::Teams, FACT_KEY, FactState::Teams(state.clone()), t0);
        let refresh = SignedDuration::from_mins(10);
        let later = |m| t0.saturating_add(SignedDuration::from_mins(m)).unwrap();
        assert!(!needs_put(Some(&held), &state, later(4), refresh));
        assert!(needs_put(Some(&held), &state, later(5), refresh));
        let other = TeamsState { activity: ampel_core::Activity::Busy, ..state };
        assert!(needs_put(Some(&held), &other, later(1), refresh));
        assert!(needs_put(None, &other, later(1), refresh));
    }
}
