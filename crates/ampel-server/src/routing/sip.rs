//! The SIP redirect server: an INVITE to a user is answered by the routing decision, as
//! [`redirect::answer`] maps it (302 with the target in Contact, 486, or 480 with
//! Retry-After), and Ampel leaves the call at that. It never answers 2xx, never relays media
//! and sends no 100 Trying, because the decision is made before any timer of the caller's
//! transaction could fire (RFC 3261 §17.2.1 asks for 100 only after 200 ms). The transaction
//! layer of the SIP front end absorbs the ACK of the final answer and answers a retransmitted
//! INVITE with the same response, To tag included.
//!
//! What the INVITE says is read as the PBX sends it: the caller from P-Asserted-Identity
//! (RFC 3325) or From, the callee from the Request-URI (a user's address, a user part Ampel's
//! own address names, or a number), the caller's class from [`CLASS_HEADER`], the language
//! from Accept-Language, and where the call has been from Diversion (RFC 5806) and
//! History-Info (RFC 7044). A decision to ring redirects to the callee's own phones at the
//! address [`RoutingFile::ring_contact`] makes for them, which carries `ampel=ring` so that a
//! PBX can tell it from a call to route; such an address arriving here is a loop.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use ampel_core::routing::{Action, CallerClass, Decision, Lang};
use ampel_sip::message::{Request, Response, aor_of, param, uri_of};

use super::redirect::{self, SipAnswer};
use super::{CallRequest, RouteError, RoutingFile, language};
use crate::sip::transport::Peer;
use crate::sip::{InviteHandler, Sip};

/// The header a PBX may send with the caller's class: `internal`, `external`, `vip` or
/// `emergency`. Without it the class comes from the caller lookup.
pub const CLASS_HEADER: &str = "x-ampel-caller-class";

/// The URI parameter that marks a ring address.
pub const RING_PARAM: &str = "ampel";

/// Answers INVITEs by the routing decision.
#[derive(Debug, Clone)]
pub struct Redirect {
    ring_contact: String,
    announcement_contact: Option<String>,
    audio_base: String,
}

/// An INVITE Ampel does not route, with the status and reason phrase it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: u16,
    reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

impl Redirect {
    /// The redirect server of the `[routing]` section; `http` is the HTTP address the
    /// announcements' audio is served at when the section names no `audio_base`.
    pub fn new(file: &RoutingFile, http: SocketAddr) -> Redirect {
        let audio_base = file.audio_base.clone().unwrap_or_else(|| format!("http://{http}"));
        Redirect {
            ring_contact: file.ring_contact.clone(),
            announcement_contact: file.announcement_contact.clone(),
            audio_base: audio_base.trim_end_matches('/').to_owned(),
        }
    }

    /// The address where the user `id` (`user@domain`) is rung.
    pub fn ring(&self, id: &str) -> String {
        let (user, domain) = id.split_once('@').unwrap_or((id, ""));
        self.ring_contact.replace("{user}", user).replace("{domain}", domain).replace("{id}", id)
    }

    /// The answer for a decision: [`redirect::answer`], with a forward to a colleague whom
    /// the decision rings sent straight to their phones, and an announcement played first
    /// when a media server is configured.
    fn answer(&self, sip: &Sip, decision: &Decision) -> SipAnswer {
        let callee = decision.hops.first().map_or("", |h| h.user.as_str());
        let mut answer = redirect::answer(decision, &self.ring(callee), sip.app.hub.clock.now());
        let last = decision.hops.last().map(|h| h.user.as_str());
        if decision.action == Action::Forward
            && decision.hops.len() > 1
            && let (Some(last), Some(target)) = (last, decision.target.as_deref())
            && target.strip_prefix("sip:") == Some(last)
        {
            answer.contacts = vec![self.ring(last)];
        }
        let routing = &sip.app.routing;
        if let (Some(template), Some(announcement)) =
            (&self.announcement_contact, &decision.announcement)
            && routing.speaks.load(Relaxed)
        {
            let hash = routing.speech.announce(&announcement.speech, &announcement.lang);
            let audio_url = format!("{}/api/v1/announcements/{hash}.wav", self.audio_base);
            let target = answer.contacts.first().map(|c| escape(c)).unwrap_or_default();
            let contact = template.replace("{audio_url}", &audio_url).replace("{target}", &target);
            answer = SipAnswer {
                status: 302,
                reason: "Moved Temporarily",
                contacts: vec![contact],
                retry_after: None,
            };
        }
        answer
    }

    /// The decision for an INVITE, or why there is none.
    fn decide(&self, sip: &Sip, request: &Request) -> Result<Decision, Refusal> {
        if let Some(hops) = request.header("max-forwards") {
            match hops.trim().parse::<u32>() {
                Ok(0) => return Err(refuse(483, "Too Many Hops")),
                Ok(_) => {}
                Err(_) => return Err(refuse(400, "Bad Max-Forwards")),
            }
        }
        if param(&request.uri, RING_PARAM) == Some("ring") {
            return Err(refuse(482, "Loop Detected: a ring address came back to Ampel"));
        }
        let aor = aor_of(&request.uri).ok_or_else(|| refuse(404, "Not Found"))?;
        let to = match sip.user(&aor) {
            Some(slot) => slot.id.clone(),
            None => match aor.split_once('@') {
                Some((user, _)) if is_number(user) => user.to_owned(),
                _ => aor,
            },
        };
        let identity = request
            .header("p-asserted-identity")
            .and_then(|v| split_values(v).into_iter().next())
            .or_else(|| request.header("from"))
            .ok_or_else(|| refuse(400, "Missing From"))?;
        let from = caller(sip, uri_of(identity));
        let class = match request.header(CLASS_HEADER) {
            None => None,
            Some(text) => Some(
                class(text).ok_or_else(|| refuse(400, format!("Bad {}", display(CLASS_HEADER))))?,
            ),
        };
        let lang = request.header("accept-language").and_then(accept_language);
        let call = CallRequest { from: &from, to: &to, class, lang };
        let (decision, _) = super::decide(&sip.app, &call).map_err(|e| match e {
            RouteError::UnknownCallee(_) => refuse(404, "Not Found"),
            RouteError::Caller(_) => refuse(400, "Bad Caller Number"),
        })?;
        let forwards = matches!(decision.action, Action::Forward | Action::Voicemail);
        if forwards
            && let Some(target) = decision.target.as_deref()
            && diverted(request).contains(&address(target))
        {
            // FIXME: the call's history only stops a forward back to where it has been; it
            // does not seed the core's visited set (`ampel_core::routing::decide` has no
            // parameter for one), so a forward to such a user is not replaced by the next
            // rule or the voicemail as a loop inside one decision is.
            return Err(refuse(482, "Loop Detected"));
        }
        Ok(decision)
    }
}

impl InviteHandler for Redirect {
    fn invite(&self, sip: &Sip, request: &Request, _peer: &Peer) -> Response {
        let tag = crate::sip::random_token();
        let decision = match self.decide(sip, request) {
            Ok(decision) => decision,
            Err(Refusal { status, reason }) => {
                tracing::debug!(uri = %request.uri, status, %reason, "call not routed");
                return request.response(status, &reason, Some(&tag));
            }
        };
        let answer = self.answer(sip, &decision);
        tracing::debug!(uri = %request.uri, status = answer.status, reason = %decision.reason, "call redirected");
        let mut response = request.response(answer.status, answer.reason, Some(&tag));
        for contact in &answer.contacts {
            response = response.with("contact", format!("<{contact}>"));
        }
        if let Some(seconds) = answer.retry_after {
            response = response.with("retry-after", seconds.to_string());
        }
        response
    }
}

/// The caller as the decision reads it: a user of Ampel, a number, or an address.
fn caller(sip: &Sip, uri: &str) -> String {
    if uri.starts_with("tel:") {
        return uri.split(';').next().unwrap_or(uri).to_owned();
    }
    let Some(aor) = aor_of(uri) else { return uri.to_owned() };
    if let Some(slot) = sip.user(&aor) {
        return slot.id.clone();
    }
    match aor.split_once('@') {
        Some((user, _)) if is_number(user) => user.to_owned(),
        Some(("anonymous", _)) => "anonymous".to_owned(),
        _ => aor,
    }
}

/// True for a user part that is a telephone number (RFC 3966 visual separators allowed).
fn is_number(user: &str) -> bool {
    let digits = user.strip_prefix('+').unwrap_or(user);
    digits.bytes().any(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'(' | b')'))
}

/// The caller's class as the PBX names it.
fn class(text: &str) -> Option<CallerClass> {
    match text.trim().to_ascii_lowercase().as_str() {
        "internal" => Some(CallerClass::Internal),
        "external" => Some(CallerClass::External),
        "vip" => Some(CallerClass::Vip),
        "emergency" => Some(CallerClass::Emergency),
        _ => None,
    }
}

/// The preferred language Ampel speaks of an Accept-Language value (RFC 3261 §20.3, with
/// q-values as in HTTP).
fn accept_language(value: &str) -> Option<Lang> {
    let mut ranked: Vec<(f32, Lang)> = value
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let lang = language(parts.next()?.trim())?;
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").map(|q| q.trim().parse().unwrap_or(0.0)))
                .unwrap_or(1.0);
            (q > 0.0).then_some((q, lang))
        })
        .collect();
    // Stable: of equal weights the first listed wins.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.first().map(|(_, lang)| *lang)
}

/// The values of a header that may list several, split at commas outside quotes and `<>`.
fn split_values(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut angle) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|v| !v.is_empty());
    out
}

/// An address as the loop check compares it: `user@host` of a SIP URI, the number of a
/// `tel:` URI.
fn address(uri: &str) -> String {
    if let Some(number) = uri.strip_prefix("tel:") {
        return number.split(';').next().unwrap_or(number).to_owned();
    }
    match aor_of(uri) {
        Some(aor) => match aor.split_once('@') {
            Some((user, _)) if user.starts_with('+') => user.to_owned(),
            _ => aor,
        },
        None => uri.to_owned(),
    }
}

/// Where the call has been before it came here: the diverting parties of Diversion and the
/// targets of History-Info.
fn diverted(request: &Request) -> HashSet<String> {
    ["diversion", "history-info"]
        .iter()
        .flat_map(|name| request.headers.all(name))
        .flat_map(split_values)
        .map(|value| address(uri_of(value)))
        .collect()
}

/// A URI made safe for a parameter value of another URI (RFC 3261 §25.1 `paramchar`).
fn escape(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    for b in uri.bytes() {
        let plain = b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:&+$".contains(&b);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A header's usual spelling, for reason phrases.
fn display(name: &str) -> String {
    name.split('-')
        .map(|w| {
            if w.len() <= 3 {
                return w.to_ascii_uppercase();
            }
            let mut c = w.chars();
            c.next().map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_takes_the_preferred_language_ampel_speaks() {
        assert_eq!(accept_language("fr, de-AT;q=0.8, en;q=0.9"), Some(Lang::En));
        assert_eq!(accept_language("de-CH"), Some(Lang::De));
        assert_eq!(accept_language("en;q=0, fr"), None);
        assert_eq!(accept_language(""), None);
    }

    #[test]
    fn history_headers_name_where_the_call_has_been() {
        let values = split_values(
            "\"Doe, Jane\" <sip:+4930111@pbx.example.com;user=phone>;reason=unconditional, <tel:+4930222>",
        );
        assert_eq!(values.len(), 2);
        assert_eq!(address(uri_of(values[0])), "+4930111");
        assert_eq!(address(uri_of(values[1])), "+4930222");
        assert_eq!(address("sip:Bob@Example.com;transport=tcp"), "bob@example.com");
    }

    #[test]
    fn callers_and_classes_are_read_as_the_pbx_sends_them() {
        assert!(is_number("+49-30-1234") && is_number("2001"));
        assert!(!is_number("alice") && !is_number("+"));
        assert_eq!(class(" VIP "), Some(CallerClass::Vip));
        assert_eq!(class("boss"), None);
        assert_eq!(display(CLASS_HEADER), "X-Ampel-Caller-Class");
        assert_eq!(
            escape("sip:voicemail@example.com;mailbox=alice"),
            "sip:voicemail%40example.com%3Bmailbox%3Dalice"
        );
    }

    #[test]
    fn the_ring_template_names_the_user() {
        let file = RoutingFile {
            ring_contact: "sip:{user}@pbx.example.com;ampel=ring;for={id};d={domain}".into(),
            ..RoutingFile::default()
        };
        let redirect = Redirect::new(&file, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            redirect.ring("alice@example.com"),
            "sip:alice@pbx.example.com;ampel=ring;for=alice@example.com;d=example.com"
        );
        assert_eq!(redirect.audio_base, "http://127.0.0.1:8080");
    }
}
