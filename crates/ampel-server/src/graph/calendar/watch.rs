//! Change-notification subscriptions on the mapped mailboxes' events (`users/{id}/events`,
//! created, updated and deleted), so that a change starts a delta round at once instead of at
//! the next calendar interval.
//!
//! Graph keeps subscriptions on Outlook resources at most 4,230 minutes; Ampel asks for the
//! configured subscription lifetime (an hour at most) and renews them like its presence
//! subscriptions. A notification only names the mailbox: the round reads what changed. Without
//! a notification URL, or while a subscription cannot be made, the calendar interval alone
//! paces the rounds.

use std::collections::BTreeMap;

use jiff::Timestamp;
use reqwest::Method;
use serde_json::json;

use super::super::Connector;
use super::super::client::{GraphError, Kind};
use super::super::webhook::create_subscription;
use crate::App;

/// Graph's longest lifetime of a subscription on Outlook events.
pub const MAX_LIFETIME_MINUTES: i64 = 4230;

struct Subscription {
    id: String,
    object_id: String,
    expires: Timestamp,
}

/// The event subscriptions held.
#[derive(Default)]
pub struct Subscriptions(Vec<Subscription>);

/// The subscription resource of a mailbox's events.
pub fn resource(object_id: &str) -> String {
    format!("users/{object_id}/events")
}

impl Subscriptions {
    /// Subscribes to the events of every mapped mailbox that has no subscription, and forgets
    /// (deletes) the subscriptions of mailboxes no longer mapped.
    pub async fn cover(&mut self, app: &App, graph: &Connector, users: &BTreeMap<String, String>) {
        if graph.config.notification_url.is_none() {
            return;
        }
        let mut kept = Vec::new();
        for sub in self.0.drain(..) {
            if users.values().any(|o| *o == sub.object_id) {
                kept.push(sub);
            } else {
                let path = format!("/subscriptions/{}", sub.id);
                let _ = graph.client.send(Kind::Other, Method::DELETE, &path, None, &[]).await;
            }
        }
        self.0 = kept;
        for object_id in users.values() {
            if self.0.iter().any(|s| s.object_id == *object_id) {
                continue;
            }
            match subscribe(app, graph, object_id).await {
                Ok(sub) => self.0.push(sub),
                Err(e) => tracing::warn!(error = %e, "graph events subscription not created"),
            }
        }
    }

    /// How long until the first subscription is due for renewal.
    pub fn renew_due(&self, app: &App, graph: &Connector) -> std::time::Duration {
        let now = app.hub.clock.now();
        let day = std::time::Duration::from_secs(24 * 3600);
        let Some(first) = self.0.iter().map(|s| s.expires).min() else { return day };
        let at = first.saturating_sub(graph.config.renew_before.0).unwrap_or(first);
        if at <= now {
            std::time::Duration::ZERO
        } else {
            at.duration_since(now).unsigned_abs().min(day)
        }
    }

    /// Renews every subscription due for renewal.
    pub async fn renew_all(&mut self, app: &App, graph: &Connector) {
        let now = app.hub.clock.now();
        let due: Vec<String> = self
            .0
            .iter()
            .filter(|s| s.expires.saturating_sub(graph.config.renew_before.0).unwrap_or(now) <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in due {
            self.renew_one(app, graph, &id).await;
        }
    }

    /// Renews one subscription; when Graph refuses, makes it anew.
    pub async fn renew_one(&mut self, app: &App, graph: &Connector, id: &str) {
        let Some(i) = self.0.iter().position(|s| s.id == id) else { return };
        let expires = expiry(app, graph);
        let body = json!({ "expirationDateTime": expires.to_string() });
        let path = format!("/subscriptions/{id}");
        match graph.client.send(Kind::Other, Method::PATCH, &path, Some(&body), &[]).await {
            Ok(_) => self.0[i].expires = expires,
            Err(e) => {
                tracing::warn!(subscription = id, error = %e, "graph events subscription not renewed");
                self.recreate(app, graph, id).await;
            }
        }
    }

    /// Makes a subscription Graph removed anew.
    pub async fn recreate(&mut self, app: &App, graph: &Connector, id: &str) {
        let Some(i) = self.0.iter().position(|s| s.id == id) else { return };
        let old = self.0.remove(i);
        match subscribe(app, graph, &old.object_id).await {
            Ok(sub) => self.0.push(sub),
            Err(e) => tracing::warn!(error = %e, "graph events subscription not created"),
        }
    }
}

fn expiry(app: &App, graph: &Connector) -> Timestamp {
    let now = app.hub.clock.now();
    let lifetime = graph.config.subscription_lifetime.0;
    let lifetime = lifetime.min(jiff::SignedDuration::from_mins(MAX_LIFETIME_MINUTES));
    now.saturating_add(lifetime).unwrap_or(now)
}

async fn subscribe(
    app: &App,
    graph: &Connector,
    object_id: &str,
) -> Result<Subscription, GraphError> {
    let expires = expiry(app, graph);
    let body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": graph.config.notification_url,
        "lifecycleNotificationUrl": graph.config.lifecycle_url(),
        "resource": resource(object_id),
        "expirationDateTime": expires.to_string(),
        "clientState": graph.client_state.expose(),
    });
    let (id, expires) = create_subscription(graph, &body, expires).await?;
    tracing::info!(subscription = %id, "graph events subscription created");
    Ok(Subscription { id, object_id: object_id.to_owned(), expires })
}
