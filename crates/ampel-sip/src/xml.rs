//! The XML reading both document formats share: a namespace-aware pull reader with the limits a
//! server facing phones needs.
//!
//! Elements are identified by namespace URI and local name, never by prefix. A document type
//! declaration is refused outright, so no entity is ever defined, let alone expanded (billion
//! laughs, external entities); only the five predefined entities and character references are
//! read. Depth and element count are bounded, and the input is bounded by the SIP message size.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;

/// The deepest element nesting accepted.
const MAX_DEPTH: usize = 32;

/// The most elements one document may hold.
const MAX_ELEMENTS: usize = 4096;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// The bytes are not well-formed XML (or end early).
    #[error("the document is not well-formed XML: {0}")]
    Malformed(String),
    /// The document carries a document type declaration, which Ampel never reads.
    #[error("document type declarations are not accepted")]
    DocType,
    /// An entity other than the five predefined ones is referenced.
    #[error("the entity {0} is not defined")]
    UnknownEntity(String),
    /// Elements nest deeper than the limit, or there are too many.
    #[error("the document is too deeply nested or has too many elements")]
    TooBig,
    /// The root element is not the one the format requires.
    #[error("the root element is not {0}")]
    WrongRoot(&'static str),
    /// A value in the document is not acceptable.
    #[error("{0}")]
    Value(String),
}

/// What the walk tells its visitor.
pub(crate) enum Step<'a> {
    /// An element opens; `path` holds the open elements above it (namespace, local name).
    Open { ns: &'a str, local: &'a str, attrs: Vec<(String, String)>, depth: usize },
    /// Text inside the innermost open element.
    Text(&'a str),
    /// The innermost open element closes.
    Close { ns: &'a str, local: &'a str },
}

/// Walks a document, handing each step to `visit`.
pub(crate) fn walk(
    bytes: &[u8],
    mut visit: impl FnMut(Step<'_>) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    let text = std::str::from_utf8(bytes).map_err(|_| XmlError::Malformed("not UTF-8".into()))?;
    let mut reader = NsReader::from_str(text);
    let mut open: Vec<(String, String)> = Vec::new();
    let mut elements = 0usize;
    let mut seen_root = false;
    loop {
        let (resolved, event) =
            reader.read_resolved_event().map_err(|e| XmlError::Malformed(e.to_string()))?;
        let ns = namespace(&resolved);
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                elements += 1;
                if open.len() >= MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(XmlError::TooBig);
                }
                if open.is_empty() && seen_root {
                    return Err(XmlError::Malformed("more than one root element".into()));
                }
                seen_root = true;
                let local = local_name(e)?;
                let attrs = attributes(e)?;
                visit(Step::Open { ns: &ns, local: &local, attrs, depth: open.len() })?;
                if matches!(event, Event::Start(_)) {
                    open.push((ns, local));
                } else {
                    visit(Step::Close { ns: &ns, local: &local })?;
                }
            }
            Event::End(_) => {
                let (ns, local) =
                    open.pop().ok_or_else(|| XmlError::Malformed("stray end".into()))?;
                visit(Step::Close { ns: &ns, local: &local })?;
            }
            Event::Text(t) => visit(Step::Text(&t.xml10_content()))?,
            Event::CData(t) => {
                let raw = t.into_inner();
                visit(Step::Text(&raw))?;
            }
            Event::GeneralRef(r) => visit(Step::Text(&entity(&r)?))?,
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !open.is_empty() || !seen_root {
        return Err(XmlError::Malformed("the document ends early".into()));
    }
    Ok(())
}

fn namespace(resolved: &ResolveResult<'_>) -> String {
    match resolved {
        ResolveResult::Bound(ns) => AsRef::<str>::as_ref(ns).to_owned(),
        _ => String::new(),
    }
}

fn local_name(e: &BytesStart<'_>) -> Result<String, XmlError> {
    let local = e.local_name();
    Ok(AsRef::<str>::as_ref(&local).to_owned())
}

/// The attributes with their raw names (prefix included: only `xml:lang` and unprefixed
/// attributes are read, and the `xml` prefix is fixed by the XML specification).
fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, XmlError> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = AsRef::<str>::as_ref(&attr.key).to_owned();
        if key.starts_with("xmlns") {
            continue;
        }
        let value =
            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|e| match e {
                quick_xml::Error::Escape(esc) => XmlError::UnknownEntity(esc.to_string()),
                other => XmlError::Malformed(other.to_string()),
            })?;
        out.push((key, value.into_owned()));
    }
    Ok(out)
}

/// The text of a predefined entity or a character reference.
fn entity(r: &BytesRef<'_>) -> Result<Cow<'static, str>, XmlError> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(Cow::Owned(c.to_string())),
            _ => Err(XmlError::Malformed("a character reference is invalid".into())),
        };
    }
    let name = r.xml10_content();
    let text = match name.as_ref() {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        other => return Err(XmlError::UnknownEntity(other.chars().take(64).collect())),
    };
    Ok(Cow::Borrowed(text))
}

/// The value of an attribute by name.
pub(crate) fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Text escaped for element content and attribute values.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(text)
}
