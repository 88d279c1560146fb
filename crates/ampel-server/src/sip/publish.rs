//! PUBLISH (RFC 3903): a device publishes its presence (`presence`, PIDF) or a PBX its calls
//! (`dialog`, dialog-info).
//!
//! Each presence publication is one `session` fact for its device, kept under a key that stays
//! the same across refreshes and modifications while the entity tag changes with each of them
//! (RFC 3903 §6). The fact ends when the publication expires, so the hub forgets it by itself;
//! a removal (Expires 0) removes it at once. Dialog publications feed the telephony source
//! through the same per-user dialog tracking as the PBX subscription, with the versions of
//! each publication counted on their own.
//!
//! A user may publish only for themself; the PBX's publisher account (`[sip.pbx] publisher`)
//! may also publish the calls, and only the calls, of every user.
//!
//! A request is refused before its entity tag is spent: the document is read and checked
//! first, so that a modification with a bad body leaves the publication as it was (RFC 3903
//! §6) and the phone's corrected retry still finds it.

use std::collections::HashMap;
use std::sync::Mutex;

use ampel_core::fact::{Details, DeviceState};
use ampel_core::mapping::pidf::Basic;
use ampel_core::{Availability, Fact, FactState, Source};
use ampel_sip::dialog_info::{self, DialogInfo};
use ampel_sip::message::{Request, Response, aor_of, uri_of};
use ampel_sip::pidf;
use jiff::{SignedDuration, Timestamp};

use super::Sip;
use super::auth::{self, Identity, StoredCredentials};
use super::transport::Peer;
use crate::hub::{Change, Slot};

/// The body types a PUBLISH may carry.
pub const ACCEPT: &str = "application/pidf+xml, application/dialog-info+xml";

/// The most publications held at once, all users together.
const MAX_PUBLICATIONS: usize = 100_000;

/// What a publication is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Presence,
    Dialog,
}

#[derive(Debug, Clone)]
struct Publication {
    /// The user published for.
    user: String,
    kind: Kind,
    /// The fact key, stable for the life of the publication.
    key: String,
    expires: Timestamp,
}

/// A published document, read before anything changes.
enum Document {
    Presence(pidf::Document),
    Dialog(DialogInfo),
}

/// The publications by current entity tag.
#[derive(Debug, Default)]
pub struct Publications {
    by_etag: Mutex<HashMap<String, Publication>>,
}

/// Answers a PUBLISH.
pub async fn handle(sip: &Sip, request: &Request, peer: &Peer) -> Response {
    match publish(sip, request, peer).await {
        Ok(response) | Err(response) => response,
    }
}

async fn publish(sip: &Sip, request: &Request, peer: &Peer) -> Result<Response, Response> {
    let kind = match event(request) {
        Some("presence") => Kind::Presence,
        Some("dialog") => Kind::Dialog,
        _ => {
            return Err(request
                .response(489, "Bad Event", None)
                .with("allow-events", "presence, dialog"));
        }
    };
    let target = aor_of(&request.uri)
        .or_else(|| aor_of(uri_of(request.header("to").unwrap_or_default())))
        .ok_or_else(|| {
            request
                .response(400, "Bad Request", None)
                .with("warning", "399 ampel \"the target has no user part\"")
        })?;
    let Some(slot) = sip.user(&target) else {
        return Err(request.response(404, "Not Found", None));
    };
    let claimed = aor_of(uri_of(request.header("from").unwrap_or_default())).unwrap_or_default();
    let identity = auth::identify(sip, request, &claimed, peer.addr().ip())?;
    if let Identity::Authenticated(user) = &identity
        && *user != slot.id
        && !publishes_for_the_pbx(sip, user, kind)
    {
        return Err(request
            .response(403, "Forbidden", None)
            .with("warning", "399 ampel \"you may publish only for yourself\""));
    }
    let expires = granted(sip, request)?;
    if sip.app.hub.admit(&slot).is_err() {
        return Err(request.response(503, "Service Unavailable", None).with("retry-after", "1"));
    }
    // Read before the entity tag is spent: a refused document leaves the publication as it was.
    let document =
        if expires == 0 || request.body.is_empty() { None } else { Some(read(request, kind)?) };
    let if_match = request.header("sip-if-match").map(str::trim);
    let previous = match if_match {
        Some(etag) => Some(
            sip.publications
                .take(etag, &slot.id, kind, sip.app.hub.clock.now())
                .ok_or_else(|| request.response(412, "Conditional Request Failed", None))?,
        ),
        None => None,
    };
    let now = sip.app.hub.clock.now();
    // When the change cannot be stored, the publication stays as it was, under its old tag,
    // for the phone's retry.
    let failed = |()| {
        if let (Some(etag), Some(publication)) = (if_match, previous.clone()) {
            sip.publications.put(etag.to_owned(), publication, now);
        }
        server_error(request)
    };
    if expires == 0 {
        let Some(publication) = previous.clone() else {
            return Err(bad(request, "Expires 0 needs SIP-If-Match"));
        };
        remove(sip, &slot, &publication).await.map_err(failed)?;
        return Ok(request.response(200, "OK", None).with("expires", "0"));
    }
    let key = previous
        .as_ref()
        .map_or_else(|| format!("sip:{}", super::random_token()), |p| p.key.clone());
    let ends = now + SignedDuration::from_secs(i64::from(expires));
    match document {
        None if previous.is_none() => return Err(bad(request, "an initial PUBLISH needs a body")),
        // A refresh: the state stays, its lifetime grows.
        None => refresh(sip, &slot, kind, &key, ends).await.map_err(failed)?,
        Some(document) => {
            let changes = match document {
                Document::Presence(doc) => presence_changes(request, &doc, &key, now, ends),
                // Versions count per publication: its key stays while its entity tag changes.
                Document::Dialog(info) => sip.pbx.dialog_changes(&slot.id, &key, &info, now),
            };
            commit(sip, &slot, changes).await.map_err(failed)?;
        }
    }
    let etag = super::random_token();
    let publication = Publication { user: slot.id.clone(), kind, key, expires: ends };
    if !sip.publications.put(etag.clone(), publication, now) {
        return Err(request.response(503, "Service Unavailable", None).with("retry-after", "60"));
    }
    Ok(request
        .response(200, "OK", None)
        .with("sip-etag", etag)
        .with("expires", expires.to_string()))
}

/// The event package, without parameters.
pub(super) fn event(request: &Request) -> Option<&str> {
    request.header("event").map(|e| e.split(';').next().unwrap_or("").trim())
}

/// The lifetime granted, or 423 / 400.
pub(super) fn granted(sip: &Sip, request: &Request) -> Result<u32, Response> {
    let s = &sip.settings;
    match request.expires() {
        Err(e) => Err(bad(request, &e.to_string())),
        Ok(None) => Ok(s.max_expires),
        Ok(Some(0)) => Ok(0),
        Ok(Some(n)) if n < s.min_expires => Err(request
            .response(423, "Interval Too Brief", None)
            .with("min-expires", s.min_expires.to_string())),
        Ok(Some(n)) => Ok(n.min(s.max_expires)),
    }
}

/// Whether `user` is the PBX's publisher account (`[sip.pbx] publisher`, a digest user
/// name), which may publish the calls of every user but nobody's presence.
fn publishes_for_the_pbx(sip: &Sip, user: &str, kind: Kind) -> bool {
    let publisher = sip.settings.pbx.as_ref().and_then(|p| p.publisher.as_deref());
    let Some(publisher) = publisher.filter(|_| kind == Kind::Dialog) else { return false };
    let stored = sip.app.settings.get::<StoredCredentials>(user, auth::AREA, auth::KEY);
    stored.is_some_and(|c| c.username == publisher)
}

/// The document of a PUBLISH, or 415 for the wrong type and 400 for one that cannot be read.
fn read(request: &Request, kind: Kind) -> Result<Document, Response> {
    check_type(request, kind)?;
    let unreadable = |e: ampel_sip::xml::XmlError| bad(request, &e.to_string());
    match kind {
        Kind::Presence => pidf::parse(&request.body).map(Document::Presence).map_err(unreadable),
        Kind::Dialog => dialog_info::parse(&request.body).map(Document::Dialog).map_err(unreadable),
    }
}

fn check_type(request: &Request, kind: Kind) -> Result<(), Response> {
    let given = request.header("content-type").unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let wanted = match kind {
        Kind::Presence => "application/pidf+xml",
        Kind::Dialog => "application/dialog-info+xml",
    };
    if media == wanted {
        Ok(())
    } else {
        Err(request.response(415, "Unsupported Media Type", None).with("accept", wanted))
    }
}

pub(super) fn bad(request: &Request, reason: &str) -> Response {
    let reason = reason.replace(['"', '\r', '\n'], " ");
    request.response(400, "Bad Request", None).with("warning", format!("399 ampel \"{reason}\""))
}

fn server_error(request: &Request) -> Response {
    request.response(500, "Server Internal Error", None)
}

/// The device fact a PIDF document makes; a closed document ends the device's session.
fn presence_changes(
    request: &Request,
    doc: &pidf::Document,
    key: &str,
    now: Timestamp,
    ends: Timestamp,
) -> Vec<Change> {
    let state = doc.state();
    if doc.basic == Some(Basic::Closed) && state.availability == Availability::Offline {
        return vec![Change::Remove(Source::Session, key.to_owned())];
    }
    let device = match state.availability {
        Availability::Away | Availability::BeRightBack => DeviceState::Away,
        Availability::Busy => DeviceState::Busy,
        Availability::DoNotDisturb => DeviceState::DoNotDisturb,
        _ if state.idle => DeviceState::Idle,
        _ => DeviceState::Active,
    };
    // What the device says its user does beyond its state (on the phone, in a meeting, on
    // holiday) goes with the fact, so that the aggregate shows it while the document says so.
    let activity = FactState::DEVICE_ACTIVITIES.contains(&state.activity).then_some(state.activity);
    let agent = request.header("user-agent").map(|a| a.chars().take(100).collect::<String>());
    let fact_state = FactState::Device { state: device, activity };
    let mut fact = Fact::new(Source::Session, key, fact_state, now)
        .ending(Some(ends))
        .with_note(doc.notes.first().cloned());
    fact.details =
        Some(Details { device: agent.or_else(|| Some("SIP".to_owned())), ..Details::default() });
    vec![Change::Put(fact)]
}

async fn commit(sip: &Sip, slot: &Slot, changes: Vec<Change>) -> Result<(), ()> {
    if changes.is_empty() {
        return Ok(());
    }
    let pending = sip.app.hub.update(slot, changes);
    sip.app.hub.committed(slot, pending).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "publication not stored");
    })
}

async fn refresh(sip: &Sip, slot: &Slot, kind: Kind, key: &str, ends: Timestamp) -> Result<(), ()> {
    if kind == Kind::Dialog {
        return Ok(());
    }
    let Some(mut fact) =
        sip.app.hub.facts(slot).into_iter().find(|f| f.same_key(Source::Session, key))
    else {
        // A closed publication holds no fact; refreshing it keeps it closed.
        return Ok(());
    };
    fact.observed = sip.app.hub.clock.now();
    fact.ends = Some(ends);
    commit(sip, slot, vec![Change::Put(fact)]).await
}

async fn remove(sip: &Sip, slot: &Slot, publication: &Publication) -> Result<(), ()> {
    match publication.kind {
        Kind::Presence => {
            commit(sip, slot, vec![Change::Remove(Source::Session, publication.key.clone())]).await
        }
        // Dialog state belongs to the calls, which the PBX ends; removing the publication
        // leaves them to their own end.
        Kind::Dialog => Ok(()),
    }
}

impl Publications {
    /// Takes the publication with this entity tag if it is the user's, of this kind and not
    /// expired; its tag is spent either way.
    fn take(&self, etag: &str, user: &str, kind: Kind, now: Timestamp) -> Option<Publication> {
        let mut map = self.by_etag.lock().expect("publications lock");
        let p = map.remove(etag)?;
        (p.user == user && p.kind == kind && p.expires > now).then_some(p)
    }

    /// Stores a publication; false when the table is full of live publications.
    fn put(&self, etag: String, publication: Publication, now: Timestamp) -> bool {
        let mut map = self.by_etag.lock().expect("publications lock");
        if map.len() >= MAX_PUBLICATIONS {
            map.retain(|_, p| p.expires > now);
            if map.len() >= MAX_PUBLICATIONS {
                return false;
            }
        }
        map.insert(etag, publication);
        true
    }
}
