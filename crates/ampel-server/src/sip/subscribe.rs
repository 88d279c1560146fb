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
//! contact, the peer to write to and the CSeq of the NOTIFYs. Every NOTIFY is sent only after
//! the response to the SUBSCRIBE that caused it, so that the subscriber sees them in order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use ampel_core::fact::{CallState, FactState};
use ampel_core::mapping::pidf::{Basic, to_pidf};
use ampel_core::{Activity, Availability, Note, Presence, Source};
use ampel_sip::message::{Headers, Request, Response, aor_of, tag_of, uri_of};
use ampel_sip::{dialog_info, pidf};
use bytes::Bytes;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::auth;
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

/// What the subscription's task does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
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
    package: Package,
    call_id: String,
    our_tag: String,
    /// Our From: the SUBSCRIBE's To with our tag.
    from: String,
    /// Our To: the SUBSCRIBE's From.
    to: String,
    /// The subscriber's Contact URI.
    target: String,
    /// The Event header as the subscriber wrote it (with its `id`).
    event: String,
    peer: Peer,
    local: std::net::SocketAddr,
    cseq: AtomicU32,
    version: AtomicU64,
    /// For a busy lamp: the calls the last document showed, so that only a change of them
    /// makes a new version.
    calls: Mutex<Option<Vec<(String, CallState)>>>,
    slot: Arc<Slot>,
    conn: Arc<Conn>,
    /// Who holds the subscription, for the caps: the subscriber and its source address.
    holder: Holder,
    state: Mutex<State>,
    poke: Notify,
    /// The CSeq of the NOTIFY sent over UDP that has not been answered yet.
    awaiting: Mutex<Option<u32>>,
}

struct State {
    expires: Instant,
    action: Action,
    /// The projection last received from the hub.
    latest: Option<Bytes>,
    /// The body of the last NOTIFY sent.
    sent: Option<Vec<u8>>,
    started: bool,
}

/// Every subscription, by Call-ID and Ampel's tag.
#[derive(Default)]
pub struct Subscriptions {
    map: Mutex<HashMap<(String, String), Arc<Subscription>>>,
    held: Mutex<Held>,
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
    fn get(&self, call_id: &str, tag: &str) -> Option<Arc<Subscription>> {
        self.map
            .lock()
            .expect("subscriptions lock")
            .get(&(call_id.to_owned(), tag.to_owned()))
            .cloned()
    }

    fn remove(&self, sub: &Subscription) {
        let removed = self
            .map
            .lock()
            .expect("subscriptions lock")
            .remove(&(sub.call_id.clone(), sub.our_tag.clone()));
        if removed.is_some() {
            self.held.lock().expect("subscriptions lock").give_back(&sub.holder);
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
        let (Some(call_id), Some(tag)) =
            (response.header("call-id"), response.header("from").and_then(tag_of))
        else {
            return;
        };
        let Some(sub) = self.get(call_id, tag) else { return };
        if response.status < 200 {
            return;
        }
        let cseq = response.header("cseq").and_then(|c| c.split_whitespace().next()?.parse().ok());
        let mut awaiting = sub.awaiting.lock().expect("subscription lock");
        if cseq.is_some() && *awaiting == cseq {
            *awaiting = None;
        }
        drop(awaiting);
        if response.status >= 300 && !matches!(response.status, 401 | 407) {
            sub.act(Action::Drop);
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
        sub.act(if expires == 0 { Action::End("timeout") } else { Action::Refresh });
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
    let sub = Arc::new(Subscription {
        package,
        call_id: call_id.to_owned(),
        our_tag: our_tag.clone(),
        from: format!("{};tag={our_tag}", request.header("to").unwrap_or_default()),
        to: request.header("from").unwrap_or_default().to_owned(),
        target: uri_of(contact).to_owned(),
        event: request.header("event").unwrap_or_default().to_owned(),
        peer: peer.clone(),
        local: sip.local,
        cseq: AtomicU32::new(1),
        version: AtomicU64::new(0),
        calls: Mutex::new(None),
        slot,
        conn: Arc::new(Conn::new(viewer)),
        holder,
        state: Mutex::new(State {
            expires: Instant::now() + Duration::from_secs(u64::from(expires)),
            action: if expires == 0 { Action::End("timeout") } else { Action::None },
            latest: None,
            sent: None,
            started: false,
        }),
        poke: Notify::new(),
        awaiting: Mutex::new(None),
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
    let start = {
        let mut state = sub.state.lock().expect("subscription lock");
        !std::mem::replace(&mut state.started, true)
    };
    if start {
        super::spawn_until_stopped(sip, run(Arc::clone(sip), sub));
    } else {
        sub.poke.notify_one();
    }
}

impl Subscription {
    fn extend(&self, seconds: u32) {
        self.state.lock().expect("subscription lock").expires =
            Instant::now() + Duration::from_secs(u64::from(seconds));
    }

    fn act(&self, action: Action) {
        let mut state = self.state.lock().expect("subscription lock");
        if !matches!(state.action, Action::End(_) | Action::Drop) {
            state.action = action;
        }
        drop(state);
        self.poke.notify_one();
    }
}

/// The life of one subscription: the first NOTIFY, one per change, refreshes, and the end.
async fn run(sip: Arc<Sip>, sub: Arc<Subscription>) {
    let fetch = matches!(sub.state.lock().expect("subscription lock").action, Action::End(_));
    if fetch {
        // A fetch (Expires 0) gets the state once, in the final NOTIFY.
        store_latest(&sip, &sub);
    } else {
        sip.app.hub.watch(&sub.conn, &sub.slot);
    }
    let mut batch = Vec::new();
    // A busy lamp hears of every change of the user's calls, also of one (a call put on hold)
    // that leaves the presence as it was.
    let mut calls = sub.slot.calls_changed();
    let lamp = sub.package == Package::Dialog;
    loop {
        if !sub.peer.is_open() {
            // The subscriber's TCP connection is gone; nothing can reach it any more.
            break;
        }
        let (deadline, action) = {
            let mut state = sub.state.lock().expect("subscription lock");
            (state.expires, std::mem::replace(&mut state.action, Action::None))
        };
        match action {
            Action::End(reason) => {
                notify(&sip, &sub, Some(reason), true).await;
                break;
            }
            Action::Drop => break,
            Action::Refresh => notify(&sip, &sub, None, true).await,
            Action::None => {}
        }
        tokio::select! {
            more = sub.conn.next_batch(&mut batch) => {
                if more.is_none() {
                    break;
                }
                if let Some(latest) = batch.drain(..).last() {
                    sub.state.lock().expect("subscription lock").latest = Some(latest);
                    notify(&sip, &sub, None, false).await;
                }
            }
            Ok(()) = calls.changed(), if lamp => notify(&sip, &sub, None, false).await,
            () = sub.poke.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= sub.state.lock().expect("subscription lock").expires {
                    sub.act(Action::End("timeout"));
                }
            }
        }
    }
    sip.app.hub.close(&sub.conn);
    sip.subscriptions.remove(&sub);
}

/// For a fetch, which does not watch: the projection as the watcher may see it now.
fn store_latest(sip: &Sip, sub: &Subscription) {
    let projected = sip.app.hub.presence_for(&sub.conn.viewer, &sub.slot);
    let bytes = crate::hub::encode(&projected);
    sub.state.lock().expect("subscription lock").latest = Some(bytes);
}

/// Sends the current state; unless `force`, only when it differs from the last one sent.
async fn notify(sip: &Sip, sub: &Arc<Subscription>, terminated: Option<&'static str>, force: bool) {
    let body = match sub.package {
        Package::Presence => presence_body(sub),
        Package::Dialog => dialog_body(sip, sub, force),
    };
    {
        let mut state = sub.state.lock().expect("subscription lock");
        if !force && state.sent.as_ref() == Some(&body) {
            return;
        }
        state.sent = Some(body.clone());
    }
    let remaining = {
        let state = sub.state.lock().expect("subscription lock");
        state.expires.saturating_duration_since(Instant::now()).as_secs()
    };
    let subscription_state = match terminated {
        Some(reason) => format!("terminated;reason={reason}"),
        None => format!("active;expires={remaining}"),
    };
    let content_type = match sub.package {
        Package::Presence => "application/pidf+xml",
        Package::Dialog => "application/dialog-info+xml",
    };
    let mut headers = Headers::default();
    let branch = format!("z9hG4bK{}", random_token());
    headers.push(
        "via",
        format!("SIP/2.0/{} {};branch={branch};rport", sub.peer.transport(), sub.local),
    );
    headers.push("max-forwards", "70");
    headers.push("from", sub.from.clone());
    headers.push("to", sub.to.clone());
    headers.push("call-id", sub.call_id.clone());
    let cseq = sub.cseq.fetch_add(1, Relaxed);
    headers.push("cseq", format!("{cseq} NOTIFY"));
    headers.push("contact", format!("<sip:ampel@{}>", sub.local));
    headers.push("event", sub.event.clone());
    headers.push("subscription-state", subscription_state);
    headers.push("content-type", content_type);
    let request = Request { method: "NOTIFY".to_owned(), uri: sub.target.clone(), headers, body };
    let bytes = request.to_bytes();
    sub.peer.send(bytes.clone()).await;
    if matches!(sub.peer, Peer::Udp { .. }) {
        *sub.awaiting.lock().expect("subscription lock") = Some(cseq);
        super::spawn_until_stopped(sip, retransmit(Arc::clone(sub), cseq, bytes));
    }
}

/// Sends a NOTIFY over UDP again until it is answered or superseded by a newer one, doubling
/// the wait from T1 = 500 ms up to T2 = 4 s (RFC 3261 §17.1.2.2); after 64·T1 without an answer
/// the subscriber is taken to be gone and the subscription ends (RFC 6665 §4.2.2).
async fn retransmit(sub: Arc<Subscription>, cseq: u32, bytes: Vec<u8>) {
    let mut wait = Duration::from_millis(500);
    let mut waited = Duration::ZERO;
    while waited < Duration::from_secs(32) {
        tokio::time::sleep(wait).await;
        waited += wait;
        if *sub.awaiting.lock().expect("subscription lock") != Some(cseq) {
            return;
        }
        sub.peer.send(bytes.clone()).await;
        wait = (wait * 2).min(Duration::from_secs(4));
    }
    if *sub.awaiting.lock().expect("subscription lock") == Some(cseq) {
        sub.act(Action::Drop);
    }
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

fn presence_body(sub: &Subscription) -> Vec<u8> {
    let latest = sub.state.lock().expect("subscription lock").latest.clone();
    let view: View = latest.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let entity = format!("sip:{}", sub.slot.id);
    render_presence(&entity, &view).into_bytes()
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

/// The busy lamp's document. Its version goes up with each change of the calls shown, and
/// with each NOTIFY sent regardless (`force`); unchanged calls give the last document again,
/// which is then not sent.
fn dialog_body(sip: &Sip, sub: &Subscription, force: bool) -> Vec<u8> {
    let projected = sip.app.hub.presence_for(&sub.conn.viewer, &sub.slot);
    let mut calls: Vec<(String, CallState)> = if projected.availability.is_none()
        || projected.availability == Some(Availability::Offline)
            && projected.activity == Some(Activity::Offline)
    {
        // Polite blocking: a watcher who may see nothing sees no calls.
        Vec::new()
    } else {
        sip.app
            .hub
            .facts(&sub.slot)
            .into_iter()
            .filter_map(|f| match f.state {
                FactState::Call { state } if f.source == Source::Telephony => Some((f.key, state)),
                _ => None,
            })
            .collect()
    };
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    let mut shown = sub.calls.lock().expect("subscription lock");
    let version = if force || shown.as_ref() != Some(&calls) {
        *shown = Some(calls.clone());
        sub.version.fetch_add(1, Relaxed)
    } else {
        sub.version.load(Relaxed).saturating_sub(1)
    };
    drop(shown);
    dialog_info::render(&format!("sip:{}", sub.slot.id), version, &calls).into_bytes()
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
