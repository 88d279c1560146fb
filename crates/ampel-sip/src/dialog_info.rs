//! Dialog state documents (RFC 4235): read from a PBX, kept per presentity, written for busy
//! lamps.
//!
//! A PBX reports calls as dialogs. [`Tracker`] keeps the dialogs of one presentity by call-id
//! and tags, so that a forked branch ending does not end the answered branch; it drops a
//! document whose version is not newer than the last from the same source (RFC 4235 §4.1), and
//! a dialog that reached `terminated` stays terminated whatever arrives later. Versions count
//! per source: each subscription starts again at 0, and so does each publication. What comes out are call states for
//! the telephony source; an early dialog that is never updated ends by itself after
//! [`EARLY_LIFETIME`], which the caller puts on the fact as its end.

use std::collections::{BTreeMap, VecDeque};

use ampel_core::fact::CallState;
use jiff::{SignedDuration, Timestamp};

use crate::xml::{Step, XmlError, attr, escape, walk};

/// The dialog-info namespace (RFC 4235 §4.1).
pub const DIALOG_INFO: &str = "urn:ietf:params:xml:ns:dialog-info";

/// How long a ringing dialog lasts without an update: longer than any PBX lets a phone ring.
pub const EARLY_LIFETIME: SignedDuration = SignedDuration::from_secs(180);

/// The most dialogs read from one document and kept per presentity.
const MAX_DIALOGS: usize = 64;

/// How many terminated dialogs are remembered per presentity.
const MAX_TERMINATED: usize = 256;

/// How many sources of documents (subscriptions, publications) have their last version
/// remembered per presentity; a source forgotten is taken as new when it speaks again.
const MAX_SOURCES: usize = 16;

/// The state of one dialog (RFC 4235 §3.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Trying, proceeding or early: the call is being set up; for the callee, it rings.
    Early,
    /// The call is answered.
    Confirmed,
    /// The call is over.
    Terminated,
}

/// One dialog of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// The dialog's id in the document.
    pub id: String,
    /// The call-id, when given.
    pub call_id: Option<String>,
    /// The local tag, when given.
    pub local_tag: Option<String>,
    /// The remote tag, when given.
    pub remote_tag: Option<String>,
    /// Where the call stands.
    pub state: DialogState,
    /// The local side does not render media (`+sip.rendering` is `no`): the call is on hold.
    pub held: bool,
}

/// A dialog-info document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    /// The presentity.
    pub entity: String,
    /// The document's version.
    pub version: u64,
    /// `full` (true) or `partial`.
    pub full: bool,
    /// The dialogs.
    pub dialogs: Vec<Dialog>,
}

/// Reads a dialog-info document.
pub fn parse(bytes: &[u8]) -> Result<DialogInfo, XmlError> {
    let mut info =
        DialogInfo { entity: String::new(), version: 0, full: true, dialogs: Vec::new() };
    let mut current: Option<Dialog> = None;
    let mut in_state = false;
    let mut in_local = false;
    let mut text = String::new();
    walk(bytes, |step| {
        match step {
            Step::Open { ns, local, attrs, depth } => {
                if depth == 0 {
                    if ns != DIALOG_INFO || local != "dialog-info" {
                        return Err(XmlError::WrongRoot("a <dialog-info>"));
                    }
                    info.entity = attr(&attrs, "entity").unwrap_or_default().to_owned();
                    info.version =
                        attr(&attrs, "version").and_then(|v| v.trim().parse().ok()).ok_or_else(
                            || XmlError::Value("version is missing or not a number".into()),
                        )?;
                    info.full = match attr(&attrs, "state").map(str::trim) {
                        Some("full") => true,
                        Some("partial") => false,
                        _ => return Err(XmlError::Value("state must be full or partial".into())),
                    };
                } else if ns == DIALOG_INFO && local == "dialog" && depth == 1 {
                    if info.dialogs.len() >= MAX_DIALOGS {
                        return Err(XmlError::TooBig);
                    }
                    let owned = |name| attr(&attrs, name).map(str::to_owned);
                    current = Some(Dialog {
                        id: owned("id").unwrap_or_default(),
                        call_id: owned("call-id"),
                        local_tag: owned("local-tag"),
                        remote_tag: owned("remote-tag"),
                        state: DialogState::Early,
                        held: false,
                    });
                } else if ns == DIALOG_INFO && local == "state" && depth == 2 {
                    in_state = true;
                    text.clear();
                } else if ns == DIALOG_INFO && local == "local" && depth == 2 {
                    in_local = true;
                } else if in_local && local == "param" {
                    let rendering = attr(&attrs, "pname")
                        .is_some_and(|n| n.eq_ignore_ascii_case("+sip.rendering"));
                    if rendering
                        && attr(&attrs, "pvalue").is_some_and(|v| v.eq_ignore_ascii_case("no"))
                        && let Some(d) = current.as_mut()
                    {
                        d.held = true;
                    }
                }
            }
            Step::Text(t) => {
                if in_state && text.len() < 64 {
                    text.push_str(t);
                }
            }
            Step::Close { ns, local } => {
                if ns == DIALOG_INFO && local == "state" && in_state {
                    in_state = false;
                    let state = match text.trim() {
                        "trying" | "proceeding" | "early" => DialogState::Early,
                        "confirmed" => DialogState::Confirmed,
                        "terminated" => DialogState::Terminated,
                        other => {
                            return Err(XmlError::Value(format!("unknown dialog state {other:?}")));
                        }
                    };
                    if let Some(d) = current.as_mut() {
                        d.state = state;
                    }
                } else if ns == DIALOG_INFO && local == "local" {
                    in_local = false;
                } else if ns == DIALOG_INFO && local == "dialog" {
                    info.dialogs.extend(current.take());
                }
            }
        }
        Ok(())
    })?;
    Ok(info)
}

/// A dialog's identity: call-id (or the document's dialog id) and the tags where present.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialogKey {
    call: String,
    local_tag: Option<String>,
    remote_tag: Option<String>,
}

impl DialogKey {
    fn of(d: &Dialog) -> DialogKey {
        DialogKey {
            call: d.call_id.clone().unwrap_or_else(|| d.id.clone()),
            local_tag: d.local_tag.clone(),
            remote_tag: d.remote_tag.clone(),
        }
    }

    fn tagless(&self) -> bool {
        self.local_tag.is_none() && self.remote_tag.is_none()
    }

    /// The key of the telephony fact for this dialog.
    pub fn fact_key(&self) -> String {
        let tag = |t: &Option<String>| t.clone().unwrap_or_default();
        format!("dialog:{};{};{}", self.call, tag(&self.local_tag), tag(&self.remote_tag))
    }
}

/// What changed for one dialog: its new call state, or `Ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallChange {
    /// The telephony fact key.
    pub key: String,
    /// The new state.
    pub state: CallState,
    /// For a ringing call, when it ends by itself unless updated.
    pub ends: Option<Timestamp>,
}

/// The dialogs of one presentity as the PBX reported them.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// The last version applied from each source, the source heard from last at the back.
    versions: VecDeque<(String, u64)>,
    calls: BTreeMap<DialogKey, CallState>,
    terminated: VecDeque<DialogKey>,
}

/// Why a document was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Its version is not newer than the last one applied from the same source.
    #[error("version {got} is not newer than {last}")]
    Stale {
        /// The document's version.
        got: u64,
        /// The last version applied.
        last: u64,
    },
}

impl Tracker {
    /// Applies a document from `source` and returns the changes of call state, in order.
    ///
    /// The source is what a version counts in: a subscription's dialog (its Call-ID) or a
    /// publication. RFC 4235 §4.1 starts the versions of every subscription at 0, so a
    /// document from a new source is taken whatever its version.
    pub fn apply(
        &mut self,
        source: &str,
        info: &DialogInfo,
        now: Timestamp,
    ) -> Result<Vec<CallChange>, Dropped> {
        self.admit_version(source, info.version)?;
        let mut changes = Vec::new();
        let mut seen = Vec::new();
        for d in &info.dialogs {
            let key = DialogKey::of(d);
            seen.push(key.clone());
            if self.is_terminated(&key) {
                continue;
            }
            match d.state {
                DialogState::Terminated => self.terminate(&key, &mut changes),
                state => {
                    let call = match (state, d.held) {
                        (DialogState::Early, _) => CallState::Ringing,
                        (_, true) => CallState::Held,
                        _ => CallState::Connected,
                    };
                    self.put(key, call, now, &mut changes);
                }
            }
        }
        if info.full {
            let gone: Vec<DialogKey> =
                self.calls.keys().filter(|k| !seen.contains(k)).cloned().collect();
            for key in gone {
                self.end(&key, &mut changes);
            }
        }
        Ok(changes)
    }

    /// Records `version` as the last from `source` if it is newer than the one before.
    fn admit_version(&mut self, source: &str, version: u64) -> Result<(), Dropped> {
        match self.versions.iter().position(|(s, _)| s == source) {
            Some(i) => {
                let last = self.versions[i].1;
                if version <= last {
                    return Err(Dropped::Stale { got: version, last });
                }
                self.versions.remove(i);
            }
            None if self.versions.len() >= MAX_SOURCES => {
                self.versions.pop_front();
            }
            None => {}
        }
        self.versions.push_back((source.to_owned(), version));
        Ok(())
    }

    fn is_terminated(&self, key: &DialogKey) -> bool {
        self.terminated.iter().any(|t| t == key || (t.tagless() && t.call == key.call))
    }

    fn put(&mut self, key: DialogKey, call: CallState, now: Timestamp, out: &mut Vec<CallChange>) {
        // An early dialog reported without tags becomes the tagged dialog once it has them.
        if !key.tagless() {
            let bare = DialogKey { call: key.call.clone(), local_tag: None, remote_tag: None };
            if self.calls.contains_key(&bare) {
                self.end(&bare, out);
            }
        }
        if self.calls.get(&key) == Some(&call) && call != CallState::Ringing {
            return;
        }
        if self.calls.len() >= MAX_DIALOGS && !self.calls.contains_key(&key) {
            return;
        }
        let ends = (call == CallState::Ringing).then(|| now + EARLY_LIFETIME);
        out.push(CallChange { key: key.fact_key(), state: call, ends });
        self.calls.insert(key, call);
    }

    fn terminate(&mut self, key: &DialogKey, out: &mut Vec<CallChange>) {
        let ended: Vec<DialogKey> = self
            .calls
            .keys()
            .filter(|k| {
                *k == key
                    || (key.tagless() && k.call == key.call)
                    || (k.tagless() && k.call == key.call)
            })
            .cloned()
            .collect();
        for k in ended {
            self.end(&k, out);
        }
        if self.terminated.len() >= MAX_TERMINATED {
            self.terminated.pop_front();
        }
        self.terminated.push_back(key.clone());
    }

    fn end(&mut self, key: &DialogKey, out: &mut Vec<CallChange>) {
        if self.calls.remove(key).is_some() {
            out.push(CallChange { key: key.fact_key(), state: CallState::Ended, ends: None });
        }
    }
}

/// Writes a full dialog-info document for a busy lamp from a user's calls. Each dialog's id
/// stays the same for the life of its call (a hash of the fact key, which names no party), and
/// a held call is a confirmed dialog whose local side renders no media (RFC 4235 §4.1.6.2), so
/// that a lamp can blink for it.
pub fn render(entity: &str, version: u64, calls: &[(String, CallState)]) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<dialog-info xmlns=\"{DIALOG_INFO}\" version=\"{version}\" state=\"full\" entity=\"{}\">\n",
        escape(entity)
    ));
    for (key, state) in calls {
        let word = match state {
            CallState::Ringing => "early",
            CallState::Connected | CallState::Held => "confirmed",
            CallState::Ended => "terminated",
        };
        let id = dialog_id(key);
        s.push_str(&format!(" <dialog id=\"{id}\"><state>{word}</state>"));
        if *state == CallState::Held {
            s.push_str(&format!(
                "<local><target uri=\"{}\"><param pname=\"+sip.rendering\" pvalue=\"no\"/></target></local>",
                escape(entity)
            ));
        }
        s.push_str("</dialog>\n");
    }
    s.push_str("</dialog-info>\n");
    s
}

/// A short id for a call, stable across documents: FNV-1a of its fact key.
fn dialog_id(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("call-{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_is_read_from_the_local_target() {
        let doc = br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:a@b">
<dialog id="x" call-id="c"><state>confirmed</state><local><target uri="sip:a@b"><param pname="+sip.rendering" pvalue="no"/></target></local></dialog></dialog-info>"#;
        let info = parse(doc).unwrap();
        let mut t = Tracker::default();
        let changes = t.apply("s", &info, Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(changes[0].state, CallState::Held);
    }

    #[test]
    fn a_full_document_without_a_dialog_ends_it() {
        let one = br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:a@b"><dialog id="x" call-id="c"><state>confirmed</state></dialog></dialog-info>"#;
        let none = br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:a@b"/>"#;
        let mut t = Tracker::default();
        t.apply("s", &parse(one).unwrap(), Timestamp::UNIX_EPOCH).unwrap();
        let changes = t.apply("s", &parse(none).unwrap(), Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(
            changes,
            [CallChange { key: "dialog:c;;".into(), state: CallState::Ended, ends: None }]
        );
        assert!(matches!(
            t.apply("s", &parse(none).unwrap(), Timestamp::UNIX_EPOCH),
            Err(Dropped::Stale { .. })
        ));
    }

    #[test]
    fn versions_start_again_with_each_source() {
        let doc = |version: u64, state: &str| {
            format!(
                r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full" entity="sip:a@b"><dialog id="x" call-id="c"><state>{state}</state></dialog></dialog-info>"#
            )
        };
        let at = Timestamp::UNIX_EPOCH;
        let mut t = Tracker::default();
        t.apply("first", &parse(doc(5, "early").as_bytes()).unwrap(), at).unwrap();
        let stale = t.apply("first", &parse(doc(0, "confirmed").as_bytes()).unwrap(), at);
        assert_eq!(stale, Err(Dropped::Stale { got: 0, last: 5 }));

        // A new subscription counts from 0; the old one's count stays its own.
        let fresh = t.apply("second", &parse(doc(0, "confirmed").as_bytes()).unwrap(), at);
        assert_eq!(
            fresh.unwrap(),
            [CallChange { key: "dialog:c;;".into(), state: CallState::Connected, ends: None }]
        );
        let old = t.apply("first", &parse(doc(5, "early").as_bytes()).unwrap(), at);
        assert_eq!(old, Err(Dropped::Stale { got: 5, last: 5 }));
    }

    #[test]
    fn the_busy_lamp_document() {
        let text = render("sip:bob@example.com", 3, &[("k".into(), CallState::Ringing)]);
        expect_test::expect![[r#"
            <?xml version="1.0" encoding="UTF-8"?>
            <dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="3" state="full" entity="sip:bob@example.com">
             <dialog id="call-af63e64c8601fd8a"><state>early</state></dialog>
            </dialog-info>
        "#]]
        .assert_eq(&text);
        assert_eq!(parse(text.as_bytes()).unwrap().dialogs[0].state, DialogState::Early);
    }

    #[test]
    fn a_held_call_reads_back_as_held_under_the_same_id() {
        let ringing = render("sip:bob@example.com", 1, &[("k".into(), CallState::Ringing)]);
        let held = render("sip:bob@example.com", 2, &[("k".into(), CallState::Held)]);
        let connected = render("sip:bob@example.com", 3, &[("k".into(), CallState::Connected)]);
        let (ringing, held, connected) =
            (parse(ringing.as_bytes()), parse(held.as_bytes()), parse(connected.as_bytes()));
        let held = held.unwrap().dialogs.remove(0);
        let connected = connected.unwrap().dialogs.remove(0);
        assert_eq!((held.state, held.held), (DialogState::Confirmed, true));
        assert_eq!((connected.state, connected.held), (DialogState::Confirmed, false));
        assert_eq!(ringing.unwrap().dialogs[0].id, held.id);
        assert_eq!(held.id, connected.id);
    }
}
