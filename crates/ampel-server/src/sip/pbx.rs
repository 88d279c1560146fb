//! Call state from the PBX: Ampel subscribes to the `dialog` event (RFC 4235) of the configured
//! users at the configured PBX and turns each NOTIFY into telephony facts; a PBX may instead
//! PUBLISH the same dialog-info documents (see `publish`). Both go through one
//! [`Tracker`] per user, which keeps dialogs by call-id and tags and drops stale versions;
//! versions count per subscription dialog and per publication, since each starts again at 0
//! (RFC 4235 §4.1).
//!
//! Each subscription at the PBX is kept by a task of its own as a dialog (RFC 3261 §12.1.2,
//! RFC 6665 §4.1.2): the PBX's tag, Contact and record-route from its 2xx, rising CSeqs, and
//! refreshes sent inside that dialog before the granted lifetime runs out. SUBSCRIBEs are sent
//! again over UDP until answered (RFC 3261 §17.1.2.2); a 423 raises the lifetime to the
//! PBX's Min-Expires, a 481 or a terminating NOTIFY starts a fresh subscription, and other
//! failures are retried after a wait that grows with each failure in a row.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ampel_core::fact::CallState;
use ampel_core::{Fact, FactState, Source};
use ampel_sip::dialog_info::{self, DialogInfo, Tracker};
use ampel_sip::message::{Headers, Request, Response, aor_of, list_of, param, tag_of, uri_of};
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::transport::Peer;
use super::{Sip, random_token};
use crate::hub::Change;

/// The `[sip.pbx]` section: where the PBX is, whose calls to follow, and the account it
/// publishes calls with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbxSettings {
    /// The PBX's SIP address (UDP).
    pub address: SocketAddr,
    /// The SIP domain of the PBX's users, for the Request-URI; the user's own domain when left
    /// out.
    #[serde(default)]
    pub domain: Option<String>,
    /// The users whose calls to follow, `user@domain`.
    pub users: Vec<String>,
    /// The subscription lifetime asked for, in seconds.
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// The digest user name of the SIP credentials the PBX PUBLISHes with, if it does: that
    /// account may publish dialog state (the `dialog` event) for every user, though nobody's
    /// presence. Anyone else may publish only for themself.
    #[serde(default)]
    pub publisher: Option<String>,
}

fn default_expires() -> u32 {
    600
}

/// The dialog trackers and Ampel's own subscriptions at the PBX.
#[derive(Debug, Default)]
pub struct Pbx {
    trackers: Mutex<HashMap<String, Tracker>>,
    /// Ampel's subscriptions by Call-ID.
    subscriptions: Mutex<HashMap<String, Subscribed>>,
}

/// One of Ampel's subscriptions at the PBX, as the receiving side sees it.
#[derive(Debug, Clone)]
struct Subscribed {
    /// The user it is for.
    user: String,
    /// Where what the PBX says about it goes: the task that keeps it.
    events: mpsc::Sender<Event>,
}

/// What the PBX said about a subscription, for the task that keeps it.
#[derive(Debug)]
enum Event {
    /// A response to one of its SUBSCRIBEs.
    Answer(Response),
    /// A NOTIFY said the subscription is over (RFC 6665 §4.1.3), with the reason given.
    Terminated(Option<String>),
}

impl Pbx {
    /// The changes of telephony facts a dialog-info document about `user` makes. `source` is
    /// what its version counts in: the subscription's Call-ID or the publication's key. A
    /// document with a version that is not newer than the last from its source is dropped
    /// (and makes no change).
    pub fn dialog_changes(
        &self,
        user: &str,
        source: &str,
        info: &DialogInfo,
        now: Timestamp,
    ) -> Vec<Change> {
        let mut trackers = self.trackers.lock().expect("tracker lock");
        let tracker = trackers.entry(user.to_owned()).or_default();
        let changes = match tracker.apply(source, info, now) {
            Ok(changes) => changes,
            Err(dropped) => {
                tracing::debug!(user, reason = %dropped, "dialog document dropped");
                return Vec::new();
            }
        };
        changes
            .into_iter()
            .map(|c| match c.state {
                CallState::Ended => Change::Remove(Source::Telephony, c.key),
                state => Change::Put(
                    Fact::new(Source::Telephony, c.key, FactState::Call { state }, now)
                        .ending(c.ends),
                ),
            })
            .collect()
    }

    /// The PBX answered one of Ampel's SUBSCRIBEs: the answer goes to the task that keeps the
    /// subscription. A task too busy to take it misses a retransmitted answer only.
    pub async fn answered(&self, _sip: &Sip, call_id: &str, response: &Response) {
        let subscribed = self.subscriptions.lock().expect("pbx lock").get(call_id).cloned();
        if let Some(subscribed) = subscribed {
            let _ = subscribed.events.try_send(Event::Answer(response.clone()));
        }
    }

    fn user_of(&self, call_id: &str) -> Option<Subscribed> {
        self.subscriptions.lock().expect("pbx lock").get(call_id).cloned()
    }
}

/// A NOTIFY: from the PBX for one of Ampel's dialog subscriptions.
pub async fn notify(sip: &Sip, request: &Request) -> Response {
    let call_id = request.header("call-id").unwrap_or_default();
    let Some(subscribed) = sip.pbx.user_of(call_id) else {
        return request.response(481, "Subscription Does Not Exist", None);
    };
    let Some(slot) = sip.user(&subscribed.user) else {
        return request.response(481, "Subscription Does Not Exist", None);
    };
    let state = request.header("subscription-state").unwrap_or_default();
    if state.trim_start().to_ascii_lowercase().starts_with("terminated") {
        let reason = param(state, "reason").map(str::to_ascii_lowercase);
        let _ = subscribed.events.try_send(Event::Terminated(reason));
    }
    if request.body.is_empty() {
        return request.response(200, "OK", None);
    }
    let info = match dialog_info::parse(&request.body) {
        Ok(info) => info,
        Err(e) => return super::publish::bad(request, &e.to_string()),
    };
    let now = sip.app.hub.clock.now();
    let changes = sip.pbx.dialog_changes(&slot.id, call_id, &info, now);
    if !changes.is_empty() {
        let pending = sip.app.hub.update(&slot, changes);
        if let Err(e) = sip.app.hub.committed(&slot, pending).await {
            tracing::error!(user = %slot.id, error = %e, "call state not stored");
            return request.response(500, "Server Internal Error", None);
        }
    }
    request.response(200, "OK", None)
}

/// Starts a subscription at the PBX for each configured user, refreshed before it runs out.
pub(super) fn spawn(sip: Arc<Sip>) {
    let Some(settings) = sip.settings.pbx.clone() else { return };
    for user in &settings.users {
        let task = keep_subscribed(Arc::clone(&sip), settings.clone(), user.clone());
        super::spawn_until_stopped(&sip, task);
    }
}

/// RFC 3261 §17.1.2.2's timers for a non-INVITE transaction over UDP: retransmit after T1,
/// doubling up to T2, and give up after 64·T1.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);

/// The longest lifetime Ampel asks for, however high the PBX's Min-Expires.
const MAX_EXPIRES: u32 = 86_400;

/// After a failure, the first wait before subscribing again, doubled on each failure in a row
/// up to the longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(30);
const BACKOFF_LONGEST: Duration = Duration::from_secs(30 * 60);

/// The pause before a fresh subscription replaces one the PBX forgot or ended, so that a PBX
/// that ends every subscription at once gets one SUBSCRIBE a second per user, not a flood.
const RENEW_PAUSE: Duration = Duration::from_secs(1);

/// Keeps one user's dialog subscription at the PBX for as long as the server runs: subscribes,
/// refreshes inside the dialog before it runs out, and subscribes afresh when the PBX has
/// forgotten it, waiting longer after each failure in a row.
async fn keep_subscribed(sip: Arc<Sip>, settings: PbxSettings, user: String) {
    // A user configured before they exist in Ampel is subscribed for once they do.
    while sip.user(&user).is_none() {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let Some(aor) = aor_of(&format!("sip:{user}")) else { return };
    let (name, domain) = aor.split_once('@').unwrap_or((&aor, ""));
    let domain = settings.domain.as_deref().unwrap_or(domain);
    let uri = format!("sip:{name}@{domain}");
    let mut expires = settings.expires.clamp(1, MAX_EXPIRES);
    let mut backoff = Backoff::default();
    loop {
        let (tx, mut events) = mpsc::channel(16);
        let mut dialog = Dialog::new(&sip, &uri);
        let subscribed = Subscribed { user: user.clone(), events: tx };
        sip.pbx.subscriptions.lock().expect("pbx lock").insert(dialog.call_id.clone(), subscribed);
        let lost =
            keep(&sip, &settings, &mut dialog, &mut expires, &mut events, &mut backoff).await;
        sip.pbx.subscriptions.lock().expect("pbx lock").remove(&dialog.call_id);
        let wait = match lost {
            Lost::Renew => RENEW_PAUSE,
            Lost::Later(wait, why) => {
                tracing::warn!(
                    user = %user,
                    reason = %why,
                    wait_s = wait.as_secs(),
                    "pbx dialog subscription failed"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Why a subscription ended, and when to subscribe afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lost {
    /// After a short pause: the PBX forgot the subscription or ended it in the ordinary way.
    Renew,
    /// After this long: it failed, for this reason.
    Later(Duration, Failure),
}

/// Why a subscription failed, as the warning gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The PBX answered the SUBSCRIBE with this final status and reason phrase.
    Refused(u16, String),
    /// The PBX ended the subscription with this reason (RFC 6665 §4.1.3).
    Ended(String),
    /// No final answer within the transaction's time: the PBX is unreachable or silent.
    NoAnswer,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(status, reason) => write!(f, "{status} {reason}"),
            Failure::Ended(reason) => write!(f, "ended by the pbx: {reason}"),
            Failure::NoAnswer => write!(
                f,
                "no answer within {} s: the pbx is unreachable or silent",
                TRANSACTION_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Failure {
    fn refused(response: &Response) -> Failure {
        Failure::Refused(response.status, response.reason.clone())
    }
}

/// Waits that grow with each failure in a row.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(10));
        self.failures = self.failures.saturating_add(1);
        wait.min(BACKOFF_LONGEST)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Ampel's side of a subscription dialog (RFC 3261 §12.1.2): fixed once the PBX accepted it.
#[derive(Debug)]
struct Dialog {
    call_id: String,
    our_tag: String,
    /// The user's URI at the PBX: the To of every request, the Request-URI until a Contact.
    uri: String,
    /// The PBX's tag, once it answered 2xx.
    remote_tag: Option<String>,
    /// The PBX's Contact: the Request-URI of refreshes.
    remote_target: Option<String>,
    /// The Record-Route of the 2xx, reversed: the Route of refreshes.
    route: Vec<String>,
    cseq: u32,
    local: SocketAddr,
}

impl Dialog {
    fn new(sip: &Sip, uri: &str) -> Dialog {
        Dialog {
            call_id: format!("{}@ampel", random_token()),
            our_tag: random_token(),
            uri: uri.to_owned(),
            remote_tag: None,
            remote_target: None,
            route: Vec::new(),
            cseq: 0,
            local: sip.local,
        }
    }

    /// The next SUBSCRIBE: initial until the PBX accepted, inside the dialog after.
    fn subscribe(&mut self, expires: u32) -> Request {
        self.cseq += 1;
        let mut headers = Headers::default();
        headers.push(
            "via",
            format!("SIP/2.0/UDP {};branch=z9hG4bK{};rport", self.local, random_token()),
        );
        headers.push("max-forwards", "70");
        headers.push("from", format!("<sip:ampel@{}>;tag={}", self.local, self.our_tag));
        headers.push(
            "to",
            match &self.remote_tag {
                Some(tag) => format!("<{}>;tag={tag}", self.uri),
                None => format!("<{}>", self.uri),
            },
        );
        headers.push("call-id", self.call_id.clone());
        headers.push("cseq", format!("{} SUBSCRIBE", self.cseq));
        for route in &self.route {
            headers.push("route", route.clone());
        }
        headers.push("contact", format!("<sip:ampel@{}>", self.local));
        headers.push("event", "dialog");
        headers.push("accept", "application/dialog-info+xml");
        headers.push("expires", expires.to_string());
        let uri = self.remote_target.clone().unwrap_or_else(|| self.uri.clone());
        Request { method: "SUBSCRIBE".into(), uri, headers, body: Vec::new() }
    }

    /// Learns the dialog from the 2xx that created it.
    fn accepted(&mut self, response: &Response) {
        if self.remote_tag.is_some() {
            return;
        }
        self.remote_tag = response.header("to").and_then(tag_of).map(str::to_owned);
        self.remote_target = response.header("contact").map(|c| uri_of(c).to_owned());
        let mut route: Vec<String> =
            response.headers.all("record-route").flat_map(list_of).map(str::to_owned).collect();
        route.reverse();
        self.route = route;
    }
}

/// Keeps one subscription dialog until it is lost.
async fn keep(
    sip: &Sip,
    settings: &PbxSettings,
    dialog: &mut Dialog,
    expires: &mut u32,
    events: &mut mpsc::Receiver<Event>,
    backoff: &mut Backoff,
) -> Lost {
    let peer = Peer::Udp { socket: Arc::clone(&sip.udp), addr: settings.address };
    loop {
        let request = dialog.subscribe(*expires);
        let response = match transaction(&peer, &request, events).await {
            Outcome::Final(response) => response,
            Outcome::Terminated(reason) => return terminated(reason.as_deref(), backoff),
            Outcome::TimedOut => return Lost::Later(backoff.next(), Failure::NoAnswer),
        };
        match response.status {
            200..=299 => {
                dialog.accepted(&response);
                backoff.reset();
                let granted = granted_by(&response).unwrap_or(*expires);
                if let Some(reason) = wait_for_refresh(granted, events).await {
                    return terminated(reason.as_deref(), backoff);
                }
            }
            423 => {
                let min = response.header("min-expires").and_then(|m| m.trim().parse().ok());
                match min {
                    Some(min) if min > *expires && min <= MAX_EXPIRES => *expires = min,
                    _ => return Lost::Later(backoff.next(), Failure::refused(&response)),
                }
            }
            // The PBX no longer knows the dialog (restarted, say): a fresh subscription.
            481 if dialog.remote_tag.is_some() => return Lost::Renew,
            _ => {
                let retry_after = response
                    .header("retry-after")
                    .and_then(|r| r.split([';', ' ']).next()?.trim().parse().ok())
                    .map(Duration::from_secs);
                let wait = backoff.next();
                let wait = retry_after.map_or(wait, |r| r.clamp(wait, BACKOFF_LONGEST));
                return Lost::Later(wait, Failure::refused(&response));
            }
        }
    }
}

/// The lifetime the PBX granted in a 2xx.
fn granted_by(response: &Response) -> Option<u32> {
    response.header("expires")?.trim().parse().ok()
}

/// What to do when the PBX ended the subscription (RFC 6665 §4.1.3): at once after an
/// ordinary end, later after a refusal.
fn terminated(reason: Option<&str>, backoff: &mut Backoff) -> Lost {
    match reason {
        None | Some("deactivated" | "timeout") => Lost::Renew,
        Some(other) => Lost::Later(backoff.next(), Failure::Ended(other.to_owned())),
    }
}

/// Waits until the subscription is due for a refresh, a little before `granted` seconds run
/// out. `Some` with the reason when the PBX ended the subscription meanwhile.
async fn wait_for_refresh(
    granted: u32,
    events: &mut mpsc::Receiver<Event>,
) -> Option<Option<String>> {
    let granted = u64::from(granted.max(1));
    let wait = Duration::from_millis(granted * 1000 * 4 / 5);
    let until = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return None,
            event = events.recv() => match event {
                Some(Event::Terminated(reason)) => return Some(reason),
                // A retransmitted answer to the last SUBSCRIBE.
                Some(Event::Answer(_)) => {}
                None => return Some(None),
            },
        }
    }
}

/// How a SUBSCRIBE transaction ended.
#[derive(Debug)]
enum Outcome {
    Final(Response),
    Terminated(Option<String>),
    TimedOut,
}

/// Sends `request` and waits for its final response, sending it again over UDP after T1,
/// doubling up to T2 (and every T2 once the PBX answered provisionally), until 64·T1 have
/// passed (RFC 3261 §17.1.2.2).
async fn transaction(
    peer: &Peer,
    request: &Request,
    events: &mut mpsc::Receiver<Event>,
) -> Outcome {
    let bytes = request.to_bytes();
    let cseq = request.cseq();
    let deadline = tokio::time::Instant::now() + TRANSACTION_TIMEOUT;
    let mut wait = T1;
    peer.send(bytes.clone()).await;
    let mut next = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next.min(deadline)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Outcome::TimedOut;
                }
                peer.send(bytes.clone()).await;
                wait = (wait * 2).min(T2);
                next = tokio::time::Instant::now() + wait;
            }
            event = events.recv() => match event {
                Some(Event::Answer(r)) if r.cseq() != cseq => {}
                Some(Event::Answer(r)) if r.status < 200 => wait = T2,
                Some(Event::Answer(r)) => return Outcome::Final(r),
                Some(Event::Terminated(reason)) => return Outcome::Terminated(reason),
                None => return Outcome::TimedOut,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_why() {
        let refused = Failure::Refused(403, "Forbidden".into());
        assert_eq!(refused.to_string(), "403 Forbidden");
        assert_eq!(Failure::Ended("rejected".into()).to_string(), "ended by the pbx: rejected");
        let silent = Failure::NoAnswer.to_string();
        assert_eq!(silent, "no answer within 32 s: the pbx is unreachable or silent");
        let mut backoff = Backoff::default();
        assert_eq!(
            terminated(Some("rejected"), &mut backoff),
            Lost::Later(BACKOFF_FIRST, Failure::Ended("rejected".into()))
        );
    }

    #[test]
    fn failures_in_a_row_wait_longer_up_to_a_limit() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.next().as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1800, 1800]);
        backoff.reset();
        assert_eq!(backoff.next().as_secs(), 30);
    }
}
