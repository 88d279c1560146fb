//! PIDF presence documents (RFC 3863) with the data model (RFC 4479) and RPID (RFC 4480), read
//! from a PUBLISH and written for a NOTIFY.
//!
//! Reading keeps only what Ampel uses: the entity, the `<basic>` status of the tuples, the RPID
//! activities and `until`, `<user-input>` idle and the notes with their language. Elements are
//! matched by namespace URI and local name, so prefixes do not matter and an element called
//! `basic` in a foreign namespace is ignored. What the words mean is decided in
//! `ampel_core::mapping::pidf`, not here.

use ampel_core::mapping::pidf::{Basic, PidfState, from_pidf};
use ampel_core::model::Note;
use jiff::Timestamp;

use crate::xml::{Step, XmlError, attr, escape, walk};

/// The PIDF namespace (RFC 3863 §4.4).
pub const PIDF: &str = "urn:ietf:params:xml:ns:pidf";
/// The data model namespace (RFC 4479 §4.1).
pub const DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// The RPID namespace (RFC 4480 §5).
pub const RPID: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// Namespaces that drafts of RPID used and phones still send.
const LEGACY_RPID: &[&str] = &[
    "urn:ietf:params:xml:ns:pidf:status:rpid-status",
    "urn:ietf:params:xml:ns:pidf:rpid-status",
    "urn:ietf:params:xml:ns:rpid",
    "urn:ietf:params:xml:ns:pidf:person",
];

/// The most notes kept from one document, and the longest note text.
const MAX_NOTES: usize = 8;
const MAX_NOTE_CHARS: usize = 500;

fn is_rpid(ns: &str) -> bool {
    ns == RPID || LEGACY_RPID.contains(&ns)
}

/// What a published PIDF document says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// The presentity, as written (`sip:alice@example.com`).
    pub entity: String,
    /// Open when any tuple is open, closed when all that say are closed, `None` when no tuple
    /// has a `<basic>` (RFC 3863 §4.1.4: with several tuples, one open tuple makes the
    /// presentity reachable).
    pub basic: Option<Basic>,
    /// The RPID activity element names, in document order.
    pub activities: Vec<String>,
    /// When the activities are expected to end (`until` on `<activities>`).
    pub until: Option<Timestamp>,
    /// `<user-input>` said idle.
    pub idle: bool,
    /// The notes with their `xml:lang`, person notes first.
    pub notes: Vec<Note>,
}

impl Document {
    /// The state in Ampel's words.
    pub fn state(&self) -> PidfState {
        let words: Vec<&str> = self.activities.iter().map(String::as_str).collect();
        from_pidf(self.basic, &words, self.idle)
    }
}

/// What the reader is collecting text for.
enum Capture {
    None,
    Basic,
    UserInput,
    /// An old-style `<activity>busy</activity>` of the RPID drafts.
    Activity,
    Note {
        lang: Option<String>,
        person: bool,
    },
}

/// Reads a PIDF document.
pub fn parse(bytes: &[u8]) -> Result<Document, XmlError> {
    let mut doc = Document::default();
    let mut basics: Vec<Basic> = Vec::new();
    let mut person_notes = Vec::new();
    let mut tuple_notes = Vec::new();
    let mut capture = Capture::None;
    let mut text = String::new();
    // Each open element: (namespace is PIDF, data model or RPID, local name).
    let mut stack: Vec<(String, String)> = Vec::new();
    walk(bytes, |step| {
        match step {
            Step::Open { ns, local, attrs, depth } => {
                if depth == 0 {
                    if ns != PIDF || local != "presence" {
                        return Err(XmlError::WrongRoot("a PIDF <presence>"));
                    }
                    doc.entity = attr(&attrs, "entity").unwrap_or_default().to_owned();
                }
                let parent = stack.last();
                let in_activities =
                    parent.is_some_and(|(pns, pl)| is_rpid(pns) && pl == "activities");
                if in_activities && depth > 0 && local != "activity" {
                    doc.activities.push(local.to_owned());
                }
                if is_rpid(ns) && local == "activities" {
                    doc.until = attr(&attrs, "until").and_then(|u| u.trim().parse().ok());
                }
                capture = match (ns, local) {
                    (PIDF, "basic") => Capture::Basic,
                    (n, "activity") if in_activities && is_rpid(n) => Capture::Activity,
                    (n, "user-input") if is_rpid(n) => Capture::UserInput,
                    (n, "note") if n == PIDF || n == DATA_MODEL || is_rpid(n) => Capture::Note {
                        lang: attr(&attrs, "xml:lang").map(str::to_owned),
                        person: stack.iter().any(|(_, l)| l == "person"),
                    },
                    _ => Capture::None,
                };
                text.clear();
                stack.push((ns.to_owned(), local.to_owned()));
            }
            Step::Text(t) => {
                if !matches!(capture, Capture::None) && text.len() < 4 * MAX_NOTE_CHARS {
                    text.push_str(t);
                }
            }
            Step::Close { .. } => {
                stack.pop();
                match std::mem::replace(&mut capture, Capture::None) {
                    Capture::None => {}
                    // A word other than open or closed (some clients send `unknown`) says nothing.
                    Capture::Basic => basics.extend(text.parse::<Basic>().ok()),
                    Capture::Activity => doc.activities.push(text.trim().to_owned()),
                    Capture::UserInput => doc.idle = text.trim().eq_ignore_ascii_case("idle"),
                    Capture::Note { lang, person } => {
                        let note = text.trim();
                        if !note.is_empty() {
                            let note = Note::new(
                                note.chars().take(MAX_NOTE_CHARS).collect::<String>(),
                                lang.as_deref(),
                            );
                            if person { person_notes.push(note) } else { tuple_notes.push(note) }
                        }
                    }
                }
                text.clear();
            }
        }
        Ok(())
    })?;
    doc.basic =
        if basics.contains(&Basic::Open) { Some(Basic::Open) } else { basics.first().copied() };
    doc.notes = person_notes.into_iter().chain(tuple_notes).take(MAX_NOTES).collect();
    Ok(doc)
}

/// What a NOTIFY says about a presentity, already projected for the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// The presentity URI.
    pub entity: &'a str,
    /// The basic status.
    pub basic: Basic,
    /// The RPID activity element, when there is one.
    pub activity: Option<&'a str>,
    /// When the activity is expected to end.
    pub until: Option<Timestamp>,
    /// Every device is idle.
    pub idle: bool,
    /// The note.
    pub note: Option<&'a Note>,
}

/// Writes one clean PIDF document: one tuple (the service, with its basic status) and one
/// person (activity, idle, note), as RFC 4479 §3 lays out.
pub fn render(out: &Outgoing<'_>) -> String {
    let mut s = String::with_capacity(512);
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<presence xmlns=\"{PIDF}\" xmlns:dm=\"{DATA_MODEL}\" xmlns:rpid=\"{RPID}\" entity=\"{}\">\n",
        escape(out.entity)
    ));
    s.push_str(&format!(" <tuple id=\"ampel\"><status><basic>{}</basic></status>", out.basic));
    if let Some(note) = out.note {
        s.push_str(&note_element("note", note));
    }
    s.push_str("</tuple>\n <dm:person id=\"p\">");
    if let Some(activity) = out.activity {
        match out.until {
            Some(until) => s.push_str(&format!("<rpid:activities until=\"{until}\">")),
            None => s.push_str("<rpid:activities>"),
        }
        s.push_str(&format!("<rpid:{activity}/></rpid:activities>"));
    }
    if out.idle {
        s.push_str("<rpid:user-input>idle</rpid:user-input>");
    }
    if let Some(note) = out.note {
        s.push_str(&note_element("dm:note", note));
    }
    s.push_str("</dm:person>\n</presence>\n");
    s
}

fn note_element(name: &str, note: &Note) -> String {
    match &note.lang {
        Some(lang) => {
            format!("<{name} xml:lang=\"{}\">{}</{name}>", escape(lang), escape(&note.text))
        }
        None => format!("<{name}>{}</{name}>", escape(&note.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampel_core::model::{Activity, Availability};

    #[test]
    fn rpid_person_device_and_service_are_read() {
        let doc = br#"<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:frank@example.com">
 <tuple id="s1"><status><basic>open</basic></status><note>tuple &amp; note</note></tuple>
 <dm:device id="d1"><dm:deviceID>mac:1</dm:deviceID></dm:device>
 <dm:person id="p1"><r:activities until="2026-04-20T10:00:00Z"><r:on-the-phone/></r:activities>
  <r:user-input>idle</r:user-input><dm:note xml:lang="de">Telefonat</dm:note></dm:person>
</presence>"#;
        let d = parse(doc).unwrap();
        assert_eq!(d.entity, "sip:frank@example.com");
        assert_eq!(d.activities, ["on-the-phone"]);
        assert_eq!(d.until, Some("2026-04-20T10:00:00Z".parse().unwrap()));
        assert!(d.idle);
        assert_eq!(d.notes[0], Note::new("Telefonat", Some("de")));
        assert_eq!(d.notes[1], Note::new("tuple & note", None));
        let s = d.state();
        assert_eq!((s.availability, s.activity), (Availability::Busy, Activity::InACall));
    }

    #[test]
    fn legacy_rpid_in_the_tuple_status_is_read() {
        let doc = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:g@example.com">
 <tuple id="t"><status><basic>open</basic><es:activities><es:activity>busy</es:activity></es:activities></status></tuple></presence>"#;
        let d = parse(doc).unwrap();
        assert_eq!(d.activities, ["busy"]);
        let doc2 = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:g@example.com">
 <tuple id="t"><status><basic>open</basic><es:activities><es:away/></es:activities></status></tuple></presence>"#;
        assert_eq!(parse(doc2).unwrap().state().availability, Availability::Away);
    }

    #[test]
    fn hostile_documents_are_refused() {
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><note>&lol2;</note></presence>"#;
        assert_eq!(parse(laughs), Err(XmlError::DocType));
        let external = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><note>&xxe;</note></tuple></presence>"#;
        assert_eq!(parse(external), Err(XmlError::UnknownEntity("xxe".into())));
        let truncated =
            br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t">"#;
        assert!(matches!(parse(truncated), Err(XmlError::Malformed(_))));
        let other_root = br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info"/>"#;
        assert_eq!(parse(other_root), Err(XmlError::WrongRoot("a PIDF <presence>")));
        let deep = format!(
            "<presence xmlns=\"{PIDF}\" entity=\"x\">{}{}</presence>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooBig));
        let odd_basic = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status><basic>unknown</basic></status></tuple></presence>"#;
        assert_eq!(parse(odd_basic).unwrap().basic, None);
    }

    #[test]
    fn the_outgoing_document_reads_back() {
        let note = Note::new("Back <soon> & \"then\"", Some("en"));
        let out = Outgoing {
            entity: "sip:alice@example.com",
            basic: Basic::Open,
            activity: Some("meeting"),
            until: Some("2026-04-20T10:00:00Z".parse().unwrap()),
            idle: false,
            note: Some(&note),
        };
        let text = render(&out);
        expect_test::expect![[r#"
            <?xml version="1.0" encoding="UTF-8"?>
            <presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">
             <tuple id="ampel"><status><basic>open</basic></status><note xml:lang="en">Back &lt;soon&gt; &amp; &quot;then&quot;</note></tuple>
             <dm:person id="p"><rpid:activities until="2026-04-20T10:00:00Z"><rpid:meeting/></rpid:activities><dm:note xml:lang="en">Back &lt;soon&gt; &amp; &quot;then&quot;</dm:note></dm:person>
            </presence>
        "#]]
        .assert_eq(&text);
        let back = parse(text.as_bytes()).unwrap();
        assert_eq!(back.activities, ["meeting"]);
        assert_eq!(back.notes[0], note);
        assert_eq!(back.basic, Some(Basic::Open));
    }
}
