//! Call state from the PBX: Ampel subscribes to the `dialog` event (RFC 4235) of the configured
//! users at the configured PBX and turns each NOTIFY into telephony facts; a PBX may instead
//! PUBLISH the same dialog-info documents (see `publish`). Both go through one
//! [`Tracker`] per user, which keeps dialogs by call-id and tags and drops stale versions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ampel_core::fact::CallState;
use ampel_core::{Fact, FactState, Source};
use ampel_sip::dialog_info::{self, Tracker};
use ampel_sip::message::{Headers, Request, Response, aor_of};
use jiff::Timestamp;
use serde::Deserialize;

use super::transport::Peer;
use super::{Sip, random_token};
use crate::hub::Change;

/// The `[sip.pbx]` section: where the PBX is and whose calls to follow.
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
}

fn default_expires() -> u32 {
    600
}

/// The dialog trackers and Ampel's own subscriptions at the PBX.
#[derive(Debug, Default)]
pub struct Pbx {
    trackers: Mutex<HashMap<String, Tracker>>,
    /// Ampel's subscriptions by Call-ID: the user they are for.
    subscriptions: Mutex<HashMap<String, String>>,
}

impl Pbx {
    /// The changes of telephony facts a dialog-info document about `user` makes. A document
    /// with a version that is not newer is dropped (and makes no change).
    pub fn dialog_changes(
        &self,
        user: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Vec<Change>, String> {
        let info = dialog_info::parse(body).map_err(|e| e.to_string())?;
        let mut trackers = self.trackers.lock().expect("tracker lock");
        let tracker = trackers.entry(user.to_owned()).or_default();
        let changes = match tracker.apply(&info, now) {
            Ok(changes) => changes,
            Err(dropped) => {
                tracing::debug!(user, reason = %dropped, "dialog document dropped");
                return Ok(Vec::new());
            }
        };
        Ok(changes
            .into_iter()
            .map(|c| match c.state {
                CallState::Ended => Change::Remove(Source::Telephony, c.key),
                state => Change::Put(
                    Fact::new(Source::Telephony, c.key, FactState::Call { state }, now)
                        .ending(c.ends),
                ),
            })
            .collect())
    }

    /// The PBX answered one of Ampel's SUBSCRIBEs.
    pub async fn answered(&self, _sip: &Sip, call_id: &str, response: &Response) {
        let user = self.subscriptions.lock().expect("pbx lock").get(call_id).cloned();
        if let Some(user) = user
            && response.status >= 300
        {
            tracing::warn!(user = %user, status = response.status, "the pbx refused a dialog subscription");
        }
    }
}

/// A NOTIFY: from the PBX for one of Ampel's dialog subscriptions.
pub async fn notify(sip: &Sip, request: &Request) -> Response {
    let call_id = request.header("call-id").unwrap_or_default();
    let Some(user) = sip.pbx.subscriptions.lock().expect("pbx lock").get(call_id).cloned() else {
        return request.response(481, "Subscription Does Not Exist", None);
    };
    let Some(slot) = sip.user(&user) else {
        return request.response(481, "Subscription Does Not Exist", None);
    };
    if request.body.is_empty() {
        return request.response(200, "OK", None);
    }
    let now = sip.app.hub.clock.now();
    let changes = match sip.pbx.dialog_changes(&slot.id, &request.body, now) {
        Ok(changes) => changes,
        Err(reason) => return super::publish::bad(request, &reason),
    };
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

async fn keep_subscribed(sip: Arc<Sip>, settings: PbxSettings, user: String) {
    // A user configured before they exist in Ampel is subscribed for once they do.
    while sip.user(&user).is_none() {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let call_id = format!("{}@ampel", random_token());
    sip.pbx.subscriptions.lock().expect("pbx lock").insert(call_id.clone(), user.clone());
    let Some(aor) = aor_of(&format!("sip:{user}")) else { return };
    let (name, domain) = aor.split_once('@').unwrap_or((&aor, ""));
    let domain = settings.domain.as_deref().unwrap_or(domain);
    let uri = format!("sip:{name}@{domain}");
    let tag = random_token();
    let peer = Peer::Udp { socket: Arc::clone(&sip.udp), addr: settings.address };
    let mut cseq = 1u32;
    loop {
        let mut headers = Headers::default();
        headers.push(
            "via",
            format!("SIP/2.0/UDP {};branch=z9hG4bK{};rport", sip.local, random_token()),
        );
        headers.push("max-forwards", "70");
        headers.push("from", format!("<sip:ampel@{}>;tag={tag}", sip.local));
        headers.push("to", format!("<{uri}>"));
        headers.push("call-id", call_id.clone());
        headers.push("cseq", format!("{cseq} SUBSCRIBE"));
        headers.push("contact", format!("<sip:ampel@{}>", sip.local));
        headers.push("event", "dialog");
        headers.push("accept", "application/dialog-info+xml");
        headers.push("expires", settings.expires.to_string());
        let request =
            Request { method: "SUBSCRIBE".into(), uri: uri.clone(), headers, body: Vec::new() };
        peer.send(request.to_bytes()).await;
        cseq += 1;
        // FIXME: the refresh is sent as a new initial request on the same Call-ID rather than
        // inside the dialog the PBX's 200 created (no To tag, no route set); PBXs that insist
        // on in-dialog refreshes answer 481 and the next cycle subscribes afresh.
        let wait = u64::from(settings.expires.max(60)) * 4 / 5;
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}
