//! The SIP answer of a redirect server for a routing decision (RFC 3261 section 8.3.1 and
//! 21.3-21.4): 302 Moved Temporarily with the new target in Contact, 486 Busy Here, or 480
//! Temporarily Unavailable, each with Retry-After when the callee's situation has a known end.
//!
//! This is a plain function so that the SIP front end and the tests agree on one mapping;
//! Ampel never relays media, so an announcement is for the PBX to play from `audio_url`.

use ampel_core::routing::{Action, Decision};
use jiff::Timestamp;

/// The status line and headers a redirect server answers an INVITE with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipAnswer {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'static str,
    /// The Contact addresses of a 3xx answer, most preferred first.
    pub contacts: Vec<String>,
    /// Seconds after which the caller may try again (RFC 3261 section 20.33).
    pub retry_after: Option<u64>,
}

/// The answer to an INVITE for `decision`. `ring` is where the callee's own phones are
/// reached (the PBX's address for the user), which a decision to ring redirects to.
pub fn answer(decision: &Decision, ring: &str, now: Timestamp) -> SipAnswer {
    let retry_after = decision.until.filter(|u| *u > now).map(|until| {
        let seconds = until.duration_since(now).as_secs_f64().ceil();
        (seconds as u64).max(1)
    });
    let moved = |contact: String| SipAnswer {
        status: 302,
        reason: "Moved Temporarily",
        contacts: vec![contact],
        retry_after: None,
    };
    match (decision.action, &decision.target) {
        (Action::Ring, _) => moved(ring.to_owned()),
        (Action::Forward | Action::Voicemail, Some(target)) => moved(target.clone()),
        (Action::Busy, _) => {
            SipAnswer { status: 486, reason: "Busy Here", contacts: Vec::new(), retry_after }
        }
        (Action::Forward | Action::Voicemail, None) => SipAnswer {
            status: 480,
            reason: "Temporarily Unavailable",
            contacts: Vec::new(),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(action: Action, target: Option<&str>, until: Option<&str>) -> Decision {
        Decision {
            action,
            target: target.map(str::to_owned),
            devices: Vec::new(),
            reason: "rule".into(),
            explanation: String::new(),
            announcement: None,
            until: until.map(|u| u.parse().unwrap()),
            hops: Vec::new(),
        }
    }

    #[test]
    fn each_action_has_its_answer() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let ring = "sip:alice@pbx.example.com";

        let a = answer(&decision(Action::Forward, Some("sip:bob@example.com"), None), ring, now);
        assert_eq!(
            (a.status, a.contacts.as_slice()),
            (302, &["sip:bob@example.com".to_owned()][..])
        );

        let a = answer(&decision(Action::Ring, None, None), ring, now);
        assert_eq!((a.status, a.contacts[0].as_str()), (302, ring));

        let a = answer(&decision(Action::Busy, None, Some("2026-12-03T10:20:00.5Z")), ring, now);
        assert_eq!((a.status, a.reason, a.retry_after), (486, "Busy Here", Some(1201)));

        let a = answer(&decision(Action::Voicemail, None, Some("2026-12-07T00:00:00Z")), ring, now);
        assert_eq!((a.status, a.retry_after), (480, Some(309_600)), "3 days and 14 hours");

        let a = answer(&decision(Action::Busy, None, Some("2026-12-03T09:00:00Z")), ring, now);
        assert_eq!(a.retry_after, None, "an end in the past says nothing");
    }
}
