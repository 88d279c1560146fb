//! SUBSCRIBE and NOTIFY (RFC 6665) for the `presence` package (RFC 3856) and for busy lamps,
//! the `dialog` package (RFC 4235) about Ampel's users.
//!
//! A subscription is a watcher of the hub like a WebSocket connection: it holds a
//! [`Conn`](crate::hub::watch::Conn) for the watcher's principal, so it receives the projection
//! the hub made once for the watcher's relation, and only when that projection changed. Each
//! update becomes one NOTIFY; an update whose document equals the last one sent is not sent.
//! A blocked watcher, or one that is not a user, sees what a stranger sees: offline.
//!
//! The dialog (RFC 3261 §12) is kept per subscription: Ampel's tag, the subscriber's tag and
//! contact, and the peer to write to. Every NOTIFY is sent only after the response to the
//! SUBSCRIBE that caused it, so that the subscriber sees them in order. Subscriptions have no
//! task of their own: [`notify`](super::notify) sends, paces and retransmits the NOTIFYs of
//! all of them and ends those that expire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ampel_core::fact::{CallState, FactState};
use ampel_core::mapping::pidf::{Basic, to_pidf};
use ampel_core::{Activity, Availability, Note, Presence, Source};
use ampel_sip::message::{Request, Response, aor_of, tag_of, uri_of};
use ampel_sip::pidf;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::time::{Duration, Instant};

use super::auth;
use super::notify::{self, Notifier, Progress};
use super::publish::{bad, event, granted};
use super::transport::Peer;
use super::{Sip, random_token};
use crate::auth::Principal;
use crate::hub::Slot;
use crate::hub::watch::Conn;

/// The most subscriptions held at once, all subscribers together. Each subscriber and each
/// source address has its own smaller share (`[sip]` settings), so that nobody can take all of
/// them; and a source address outside the trusted networks must authenticate, so that a forged
/// one cannot have NOTIFYs sent to someone else.
const MAX_SUBSCRIPTIONS: usize = 200_000;

/// The event package of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// Presence (RFC 3856).
    Presence,
    /// Dialog state for busy lamps (RFC 4235).
    Dialog,
}

/// What the subscription does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing pending.
    None,
    /// Send the current state (after a refresh).
    Refresh,
    /// Send a final NOTIFY with this reason and end.
    End(&'static str),
    /// End without another NOTIFY (the subscriber rejected one).
    Drop,
}

/// One subscription and its dialog.
pub struct Subscription {
    pub(super) package: Package,
    pub(super) call_id: String,
    pub(super) our_tag: String,
    /// Our From: the SUBSCRIBE's To with our tag.
    pub(super) from: String,
    /// Our To: the SUBSCRIBE's From.
    pub(super) to: String,
    /// The subscriber's Contact URI.
    pub(super) target: String,
    /// The Event header as the subscriber wrote it (with its `id`).
    pub(super) event: String,
    pub(super) peer: Peer,
    pub(super) local: std::net::SocketAddr,
    pub(super) slot: Arc<Slot>,
    pub(super) conn: Arc<Conn>,
    pub(super) state: Mutex<State>,
    /// Who holds the subscription, for the caps: the subscriber and its source address.
    holder: Holder,
    /// Told when the subscription is forgotten, so that a busy lamp's listener ends.
    gone: tokio::sync::Notify,
}

pub(super) struct State {
    pub(super) expires: Instant,
    pub(super) action: Action,
    /// What a refresh asked for, taken up once its response is on its way.
    requested: Option<Action>,
    /// The projection last received from the hub.
    pub(super) latest: Option<Bytes>,
    /// What the last NOTIFY said: its document, or for the dialog package the document
    /// without its version.
    pub(super) sent: Option<Bytes>,
    pub(super) started: bool,
    /// The NOTIFY transaction, its pacing and timers.
    pub(super) progress: Progress,
}

/// Every subscription, by Call-ID and Ampel's tag.
#[derive(Default)]
pub struct Subscriptions {
    map: Mutex<HashMap<(String, String), Arc<Subscription>>>,
    held: Mutex<Held>,
    /// The sender of every subscription's NOTIFYs.
    pub(super) notifier: Arc<Notifier>,
}

/// Who a subscription counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    subscriber: String,
    address: IpAddr,
}

/// How many subscriptions each subscriber and each source address holds.
#[derive(Debug, Default)]
struct Held {
    by_subscriber: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a new subscription is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Subscriber,
    Address,
}

impl Held {
    /// Counts a new subscription of `holder`, unless that takes it past a cap.
    fn take(&mut self, holder: &Holder, settings: &super::SipSettings) -> Result<(), Over> {
        let subscriber = self.by_subscriber.get(&holder.subscriber).copied().unwrap_or(0);
        if subscriber >= settings.max_subscriptions_per_subscriber {
            return Err(Over::Subscriber);
        }
        let address = self.by_address.get(&holder.address).copied().unwrap_or(0);
        if address >= settings.max_subscriptions_per_address {
            return Err(Over::Address);
        }
        *self.by_subscriber.entry(holder.subscriber.clone()).or_default() += 1;
        *self.by_address.entry(holder.address).or_default() += 1;
        Ok(())
    }

    /// Gives back what [`Held::take`] counted.
    fn give_back(&mut self, holder: &Holder) {
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        down(&mut self.by_subscriber, &holder.subscriber);
        down(&mut self.by_address, &holder.address);
    }
}

impl Subscriptions {
    /// The subscription of a dialog, while it lasts.
    fn get(&self, call_id: &str, tag: &str) -> Option<Arc<Subscription>> {
        self.find(call_id, tag)
            .filter(|sub| !sub.state.lock().expect("subscription lock").progress.ended())
    }

    /// The subscription of a dialog, also while its terminating NOTIFY awaits its answer.
    fn find(&self, call_id: &str, tag: &str) -> Option<Arc<Subscription>> {
        self.map
            .lock()
            .expect("subscriptions lock")
            .get(&(call_id.to_owned(), tag.to_owned()))
            .cloned()
    }

    pub(super) fn remove(&self, sub: &Subscription) {
        let removed = self
            .map
            .lock()
            .expect("subscriptions lock")
            .remove(&(sub.call_id.clone(), sub.our_tag.clone()));
        if removed.is_some() {
            self.held.lock().expect("subscriptions lock").give_back(&sub.holder);
            sub.gone.notify_one();
        }
    }

    /// Counts a new subscription against its subscriber's and its address's share, or answers
    /// why not: 403 for a subscriber over its cap (its own doing, not cured by waiting), 503
    /// with Retry-After for an address, which many phones behind one router may share.
    fn admit(
        &self,
        holder: &Holder,
        settings: &super::SipSettings,
        request: &Request,
    ) -> Result<(), Response> {
        let taken = self.held.lock().expect("subscriptions lock").take(holder, settings);
        match taken {
            Ok(()) => Ok(()),
            Err(Over::Subscriber) => {
                tracing::debug!(watcher = %holder.subscriber, "sip subscriber over its cap");
                Err(request
                    .response(403, "Too Many Subscriptions", None)
                    .with("warning", "399 ampel \"too many subscriptions for this subscriber\""))
            }
            Err(Over::Address) => {
                tracing::debug!(address = %holder.address, "sip address over its subscription cap");
                Err(request
                    .response(503, "Service Unavailable", None)
                    .with("retry-after", "60")
                    .with("warning", "399 ampel \"too many subscriptions from this address\""))
            }
        }
    }

    /// Every subscription held now.
    pub(super) fn all(&self) -> Vec<Arc<Subscription>> {
        self.map.lock().expect("subscriptions lock").values().cloned().collect()
    }

    /// How many subscriptions are held.
    pub fn len(&self) -> usize {
        self.map.lock().expect("subscriptions lock").len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A subscriber answered a NOTIFY; an error answer ends the subscription (RFC 6665 §4.1.3).
    pub fn answered(&self, response: &Response) {
        if response.status < 200 {
            return;
        }
        let (Some(call_id), Some(tag)) =
            (response.header("call-id"), response.header("from").and_then(tag_of))
        else {
            return;
        };
        let Some(sub) = self.find(call_id, tag) else { return };
        let cseq = response.header("cseq").and_then(|c| c.split_whitespace().next()?.parse().ok());
        let Some(cseq) = cseq else { return };
        if self.notifier.answered(&sub, cseq, response.status) {
            self.remove(&sub);
        }
    }
}

/// Answers a SUBSCRIBE; the NOTIFYs it causes follow from [`after_response`].
pub async fn handle(sip: &Arc<Sip>, request: &Request, peer: &Peer) -> Response {
    match subscribe(sip, request, peer) {
        Ok(response) | Err(response) => response,
    }
}

fn subscribe(sip: &Arc<Sip>, request: &Request, peer: &Peer) -> Result<Response, Response> {
    let package = match event(request) {
        Some("presence") => Package::Presence,
        Some("dialog") => Package::Dialog,
        _ => {
            return Err(request
                .response(489, "Bad Event", None)
                .with("allow-events", "presence, dialog"));
        }
    };
    let call_id = request.header("call-id").unwrap_or_default();
    if let Some(tag) = request.header("to").and_then(tag_of) {
        let sub = sip
            .subscriptions
            .get(call_id, tag)
            .ok_or_else(|| request.response(481, "Subscription Does Not Exist", None))?;
        let expires = granted(sip, request)?;
        sub.extend(expires);
        sub.request(if expires == 0 { Action::End("timeout") } else { Action::Refresh });
        return Ok(request
            .response(200, "OK", None)
            .with("expires", expires.to_string())
            .with("contact", format!("<sip:ampel@{}>", sip.local)));
    }
    let target =
        aor_of(&request.uri).ok_or_else(|| bad(request, "the Request-URI has no user part"))?;
    let slot = sip.user(&target).ok_or_else(|| request.response(404, "Not Found", None))?;
    if let Some(accept) = request.header("accept") {
        let wanted = match package {
            Package::Presence => "application/pidf+xml",
            Package::Dialog => "application/dialog-info+xml",
        };
        if !accept.to_ascii_lowercase().contains(wanted) {
            return Err(request.response(406, "Not Acceptable", None));
        }
    }
    let contact =
        request.header("contact").ok_or_else(|| bad(request, "the Contact header is missing"))?;
    let claimed = aor_of(uri_of(request.header("from").unwrap_or_default())).unwrap_or_default();
    let identity = auth::identify(sip, request, &claimed, peer.addr().ip())?;
    let expires = granted(sip, request)?;
    if sip.subscriptions.len() >= MAX_SUBSCRIPTIONS {
        return Err(request.response(503, "Service Unavailable", None).with("retry-after", "60"));
    }
    let holder =
        Holder { subscriber: identity.user().to_owned(), address: peer.addr().ip().to_canonical() };
    sip.subscriptions.admit(&holder, &sip.settings, request)?;
    let our_tag = random_token();
    let viewer = match package {
        Package::Presence => Principal::User(identity.user().to_owned()),
        // A busy lamp shows calls only; whoever may see the user's presence at all sees them.
        Package::Dialog => Principal::User(identity.user().to_owned()),
    };
    let sub = Arc::new_cyclic(|weak| Subscription {
        package,
        call_id: call_id.to_owned(),
        our_tag: our_tag.clone(),
        from: format!("{};tag={our_tag}", request.header("to").unwrap_or_default()),
        to: request.header("from").unwrap_or_default().to_owned(),
        target: uri_of(contact).to_owned(),
        event: request.header("event").unwrap_or_default().to_owned(),
        peer: peer.clone(),
        local: sip.local,
        slot,
        conn: Arc::new(notify::conn(viewer, weak, &sip.subscriptions.notifier)),
        holder,
        gone: tokio::sync::Notify::new(),
        state: Mutex::new(State {
            expires: Instant::now() + Duration::from_secs(u64::from(expires)),
            action: if expires == 0 { Action::End("timeout") } else { Action::None },
            requested: None,
            latest: None,
            sent: None,
            started: false,
            progress: Progress::default(),
        }),
    });
    sip.subscriptions
        .map
        .lock()
        .expect("subscriptions lock")
        .insert((call_id.to_owned(), our_tag.clone()), sub);
    tracing::debug!(watcher = %identity.user(), "sip subscription");
    Ok(request
        .response(200, "OK", Some(&our_tag))
        .with("expires", expires.to_string())
        .with("contact", format!("<sip:ampel@{}>", sip.local)))
}

/// Starts or wakes the subscription a successful SUBSCRIBE created or refreshed, once its
/// response is on its way.
pub fn after_response(sip: &Arc<Sip>, response: &Response) {
    if response.status != 200 {
        return;
    }
    let (Some(call_id), Some(tag)) =
        (response.header("call-id"), response.header("to").and_then(tag_of))
    else {
        return;
    };
    let Some(sub) = sip.subscriptions.get(call_id, tag) else { return };
    let (first, fetch) = {
        let mut state = sub.state.lock().expect("subscription lock");
        if let Some(action) = state.requested.take() {
            set(&mut state, action);
        }
        let first = !std::mem::replace(&mut state.started, true);
        (first, matches!(state.action, Action::End(_)))
    };
    if first && fetch {
        // A fetch (Expires 0) gets the state once, in the final NOTIFY.
        store_latest(sip, &sub);
    } else if first {
        sip.app.hub.watch(&sub.conn, &sub.slot);
        if sub.package == Package::Dialog {
            super::spawn_until_stopped(sip, listen_to_calls(Arc::clone(sip), Arc::downgrade(&sub)));
        }
    }
    sip.subscriptions.notifier.arm(&sub);
    sip.subscriptions.notifier.mark(&sub, false);
}

/// A busy lamp hears of every change of the user's calls, also of one (a call put on hold)
/// that leaves the presence as it was; the sender then compares the calls with those it last
/// showed. Ends when the subscription is forgotten.
async fn listen_to_calls(sip: Arc<Sip>, sub: std::sync::Weak<Subscription>) {
    let Some(strong) = sub.upgrade() else { return };
    let mut calls = strong.slot.calls_changed();
    let gone = async move { strong.gone.notified().await };
    tokio::pin!(gone);
    loop {
        tokio::select! {
            () = &mut gone => return,
            changed = calls.changed() => {
                let Some(sub) = sub.upgrade().filter(|_| changed.is_ok()) else { return };
                sip.subscriptions.notifier.mark(&sub, true);
            }
        }
    }
}

/// Sets the next action, unless the subscription is already ending.
fn set(state: &mut State, action: Action) {
    if !matches!(state.action, Action::End(_) | Action::Drop) {
        state.action = action;
    }
}

impl Subscription {
    fn extend(&self, seconds: u32) {
        self.state.lock().expect("subscription lock").expires =
            Instant::now() + Duration::from_secs(u64::from(seconds));
    }

    /// Asks for an action once the response to the refresh that asks for it is on its way.
    fn request(&self, action: Action) {
        self.state.lock().expect("subscription lock").requested = Some(action);
    }
}

/// For a fetch, which does not watch: the projection as the watcher may see it now.
fn store_latest(sip: &Sip, sub: &Subscription) {
    let projected = sip.app.hub.presence_for(&sub.conn.viewer, &sub.slot);
    let bytes = crate::hub::encode(&projected);
    sub.state.lock().expect("subscription lock").latest = Some(bytes);
}

/// The projection as the hub encodes it, read back for the PIDF document.
#[derive(Debug, Default, Deserialize)]
struct View {
    availability: Option<Availability>,
    activity: Option<Activity>,
    idle: Option<bool>,
    note: Option<Note>,
    until: Option<Timestamp>,
}

/// The presence document for an encoded projection (`None`: nothing is known, offline).
pub(super) fn presence_document(entity: &str, projection: Option<&Bytes>) -> Bytes {
    let view: View = projection.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
    Bytes::from(render_presence(entity, &view))
}

fn render_presence(entity: &str, view: &View) -> String {
    let availability = view.availability.unwrap_or(Availability::Offline);
    let presence = Presence {
        availability,
        activity: view.activity.unwrap_or_else(|| availability.plain_activity()),
        idle: view.idle.unwrap_or(false),
        out_of_office: false,
        note: None,
        until: None,
        since: Timestamp::UNIX_EPOCH,
        location: None,
        last_active: None,
    };
    let (basic, activity) = to_pidf(&presence);
    let open = basic == Basic::Open;
    pidf::render(&pidf::Outgoing {
        entity,
        basic,
        activity: if open { activity } else { None },
        until: if open { view.until } else { None },
        idle: open && presence.idle,
        note: if open { view.note.as_ref() } else { None },
    })
}

/// The calls a busy lamp shows: the user's telephony facts, or none for a watcher who may
/// see nothing.
pub(super) fn dialog_calls(sip: &Sip, sub: &Subscription) -> Vec<(String, CallState)> {
    let projected = sip.app.hub.presence_for(&sub.conn.viewer, &sub.slot);
    if projected.availability.is_none()
        || projected.availability == Some(Availability::Offline)
            && projected.activity == Some(Activity::Offline)
    {
        // Polite blocking: a watcher who may see nothing sees no calls.
        return Vec::new();
    }
    let mut calls: Vec<(String, CallState)> = sip
        .app
        .hub
        .facts(&sub.slot)
        .into_iter()
        .filter_map(|f| match f.state {
            FactState::Call { state } if f.source == Source::Telephony => Some((f.key, state)),
            _ => None,
        })
        .collect();
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_view_is_a_closed_document_and_nothing_else() {
        let view = View {
            availability: Some(Availability::Offline),
            activity: Some(Activity::Offline),
            ..View::default()
        };
        let text = render_presence("sip:a@example.com", &view);
        assert!(text.contains("<basic>closed</basic>"), "{text}");
        assert!(!text.contains("rpid:activities"), "{text}");
    }

    #[test]
    fn a_meeting_goes_out_with_its_end_and_note() {
        let view = View {
            availability: Some(Availability::Busy),
            activity: Some(Activity::InAMeeting),
            idle: Some(false),
            note: Some(Note::new("Planung", Some("de"))),
            until: Some("2026-04-20T10:00:00Z".parse().unwrap()),
        };
        let text = render_presence("sip:a@example.com", &view);
        let back = pidf::parse(text.as_bytes()).unwrap();
        assert_eq!(back.activities, ["meeting"]);
        assert_eq!(back.until, view.until);
        assert_eq!(back.notes[0].text, "Planung");
    }
}
