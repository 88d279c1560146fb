//! PBX call state out: while a PBX call runs, Ampel sets the user's Teams presence to
//! Busy/InACall through a presence session (`setPresence`, with Ampel's application id as the
//! session id), renews it at half its lifetime while the call lasts, and clears it
//! (`clearPresence`) when the last call ends.
//!
//! Graph aggregates the session into the user's Teams presence, and that presence comes back to
//! Ampel through [`super::presence_in`]. To keep Ampel from reading its own write as a Teams call
//! (and keeping the user busy after hanging up), a Teams Busy/InACall is ignored while Ampel's
//! session is set and for a short grace after it is cleared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ampel_core::aggregate::end_of;
use ampel_core::fact::{CallState, TeamsState};
use ampel_core::{Activity, Availability, FactState, Source};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::json;

use super::Connector;
use super::client::Kind;
use crate::App;
use crate::auth::Principal;
use crate::hub::Slot;
use crate::hub::watch::Conn;

/// The settings area and key that mark a user whose Teams session Ampel has set.
const SETTINGS_AREA: &str = "graph";
const SETTINGS_KEY: &str = "presence-session";

/// Ampel's presence sessions in Teams, by Ampel user.
#[derive(Debug, Default)]
pub struct Outbound {
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone, Copy)]
enum Session {
    /// Set; renew at this instant.
    Set { renew_at: Timestamp },
    /// Cleared at this instant.
    Cleared { at: Timestamp },
}

impl Outbound {
    /// True when `state` is what Ampel's own session shows, while it is set or within `grace`
    /// after it was cleared.
    pub fn is_echo(
        &self,
        user: &str,
        state: &TeamsState,
        now: Timestamp,
        grace: SignedDuration,
    ) -> bool {
        let ours = state.availability == Availability::Busy && state.activity == Activity::InACall;
        let sessions = self.sessions.lock().expect("sessions lock");
        ours && match sessions.get(user) {
            Some(Session::Set { .. }) => true,
            Some(Session::Cleared { at }) => at.saturating_add(grace).is_ok_and(|t| now < t),
            None => false,
        }
    }

    fn get(&self, user: &str) -> Option<Session> {
        self.sessions.lock().expect("sessions lock").get(user).copied()
    }

    fn put(&self, user: &str, session: Session) {
        self.sessions.lock().expect("sessions lock").insert(user.to_owned(), session);
    }
}

/// The presence-out task: watches the mapped users and reconciles each one whose presence
/// changes, and every user on a tick for renewals.
pub async fn run(app: Arc<App>, graph: Arc<Connector>) {
    // Sessions set before a restart may still show a call that ended meanwhile: they are
    // taken as set, so that the first round clears them.
    let now = app.hub.clock.now();
    for (user, key, _) in app.settings.area::<bool>(SETTINGS_AREA) {
        if key == SETTINGS_KEY {
            graph.outbound.put(&user, Session::Set { renew_at: now });
        }
    }
    let conn = Arc::new(Conn::new(Principal::Admin));
    let half = graph.config.session_lifetime.0.unsigned_abs() / 2;
    let poll = graph.config.poll_interval.0.unsigned_abs();
    let mut tick = tokio::time::interval(half.min(poll).max(std::time::Duration::from_millis(10)));
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            woke = conn.next_batch(&mut batch) => {
                if woke.is_none() {
                    return;
                }
                for bytes in batch.drain(..) {
                    let user = serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["user"].as_str().map(str::to_owned));
                    if let Some(slot) = user.and_then(|u| app.hub.user(&u)) {
                        reconcile(&app, &graph, &slot).await;
                    }
                }
            }
            _ = tick.tick() => {
                // Users created after the start are watched from the next tick on.
                let slots: Vec<Arc<Slot>> =
                    graph.users().keys().filter_map(|user| app.hub.user(user)).collect();
                for slot in &slots {
                    app.hub.watch(&conn, slot);
                    reconcile(&app, &graph, slot).await;
                }
            }
        }
    }
}

/// True while the user has a live PBX call that is answered or held.
fn in_call(app: &App, slot: &Slot, now: Timestamp) -> bool {
    app.hub.facts(slot).iter().any(|f| {
        f.source == Source::Telephony
            && matches!(f.state, FactState::Call { state: CallState::Connected | CallState::Held })
            && end_of(f, &app.hub.policy).is_none_or(|end| end > now)
    })
}

/// Sets, renews or clears the user's session so that it matches their PBX calls.
async fn reconcile(app: &App, graph: &Connector, slot: &Slot) {
    let Some(object_id) = graph.object_id(&slot.id) else { return };
    let now = app.hub.clock.now();
    let calling = in_call(app, slot, now);
    let session = graph.outbound.get(&slot.id);
    let due = match session {
        Some(Session::Set { renew_at }) => !calling || renew_at <= now,
        _ => calling,
    };
    if !due {
        return;
    }
    let (path, body) = if calling {
        let body = json!({
            "sessionId": graph.config.client_id,
            "availability": "Busy",
            "activity": "InACall",
            "expirationDuration": iso_duration(graph.config.session_lifetime.0),
        });
        (format!("/users/{object_id}/presence/setPresence"), body)
    } else {
        let body = json!({ "sessionId": graph.config.client_id });
        (format!("/users/{object_id}/presence/clearPresence"), body)
    };
    let sent = graph.client.send(Kind::Presence, Method::POST, &path, Some(&body), &[]).await;
    // Clearing a session Graph no longer holds (it expired) is done, too.
    let sent = match sent {
        Err(e) if !calling && e.status() == Some(404) => Ok(serde_json::Value::Null),
        other => other,
    };
    match sent {
        Ok(_) if calling => {
            let renew_at = now.saturating_add(graph.config.session_lifetime.0 / 2).unwrap_or(now);
            let first = !matches!(session, Some(Session::Set { .. }));
            graph.outbound.put(&slot.id, Session::Set { renew_at });
            if first {
                remember(app, &slot.id, true).await;
            }
            tracing::debug!(user = %slot.id, "teams shows the pbx call");
        }
        Ok(_) => {
            graph.outbound.put(&slot.id, Session::Cleared { at: now });
            remember(app, &slot.id, false).await;
            tracing::debug!(user = %slot.id, "teams session cleared");
        }
        // Not recorded: the next change or tick tries again.
        Err(e) => tracing::warn!(user = %slot.id, error = %e, "teams session not changed"),
    }
}

/// Keeps whether a user's session is set in the settings, so that a restart clears what is
/// left over.
async fn remember(app: &App, user: &str, set: bool) {
    let persist = app.hub.persist();
    let done = if set {
        app.settings.put(persist, user, SETTINGS_AREA, SETTINGS_KEY, &true).await
    } else {
        app.settings.remove(persist, user, SETTINGS_AREA, SETTINGS_KEY).await.map(|_| ())
    };
    if let Err(e) = done {
        tracing::warn!(user, error = %e, "teams session state not stored");
    }
}

/// An ISO 8601 duration as Graph takes it (`PT1H30M`).
pub fn iso_duration(d: SignedDuration) -> String {
    let secs = d.as_secs().max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    if s > 0 || (h == 0 && m == 0) {
        out.push_str(&format!("{s}S"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_iso_8601() {
        assert_eq!(iso_duration(SignedDuration::from_hours(1)), "PT1H");
        assert_eq!(iso_duration(SignedDuration::from_secs(5400)), "PT1H30M");
        assert_eq!(iso_duration(SignedDuration::from_secs(300)), "PT5M");
        assert_eq!(iso_duration(SignedDuration::ZERO), "PT0S");
    }

    #[test]
    fn only_a_busy_in_a_call_while_the_session_is_set_or_just_cleared_is_an_echo() {
        let out = Outbound::default();
        let t0: Timestamp = "2026-04-21T10:00:00Z".parse().unwrap();
        let grace = SignedDuration::from_secs(30);
        let in_call = TeamsState {
            availability: Availability::Busy,
            activity: Activity::InACall,
            idle: false,
            out_of_office: false,
            raw_activity: None,
        };
        assert!(!out.is_echo("a", &in_call, t0, grace));
        out.put("a", Session::Set { renew_at: t0 });
        assert!(out.is_echo("a", &in_call, t0, grace));
        let meeting = TeamsState { activity: Activity::InAMeeting, ..in_call.clone() };
        assert!(!out.is_echo("a", &meeting, t0, grace));
        out.put("a", Session::Cleared { at: t0 });
        let later = |s| t0.saturating_add(SignedDuration::from_secs(s)).unwrap();
        assert!(out.is_echo("a", &in_call, later(29), grace));
        assert!(!out.is_echo("a", &in_call, later(30), grace));
    }
}
