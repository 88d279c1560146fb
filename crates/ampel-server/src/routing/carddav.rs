//! Reading a CardDAV address book (RFC 6352): one `addressbook-query` REPORT returns every
//! vCard of the collection with its `address-data`, from which the names, numbers and
//! languages of contacts are taken.
//!
//! Only what caller identification needs is read (FN or N, TEL, LANG); the rest of a vCard
//! is ignored. The answer is bounded in size and time, and a malformed vCard is skipped, not
//! a reason to drop the whole book.

use std::time::Duration;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The largest address book answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the address book is and how to log in. Its `Debug` leaves the password and the URL's
/// query out, since the server configuration it is part of may be printed.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The address book collection's URL.
    pub url: String,
    /// The user name for HTTP basic authentication.
    #[serde(default)]
    pub user: Option<String>,
    /// The password for HTTP basic authentication.
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = reqwest::Url::parse(&self.url).map_or_else(
            |_| "(unreadable URL)".to_owned(),
            |mut u| {
                let _ = u.set_password(None);
                u.set_query(None);
                u.to_string()
            },
        );
        f.debug_struct("Source")
            .field("url", &url)
            .field("user", &self.user)
            .field("has_password", &self.password.is_some())
            .finish()
    }
}

/// One contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// The formatted name.
    pub name: String,
    /// The telephone numbers as written in the card.
    pub numbers: Vec<String>,
    /// The preferred language, a tag such as `de`.
    pub lang: Option<String>,
}

/// Why the address book could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CardDavError {
    /// The server could not be reached or did not answer in time.
    #[error("the address book cannot be reached: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused the query.
    #[error("the address book answered {0}")]
    Status(u16),
    /// The answer is larger than Ampel reads.
    #[error("the address book answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The answer is not a WebDAV multistatus document.
    #[error("the address book answer is not valid XML: {0}")]
    Xml(String),
}

const QUERY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
  <D:prop><D:getetag/><C:address-data/></D:prop>
</C:addressbook-query>"#;

/// Reads every card of the address book.
pub async fn fetch(client: &reqwest::Client, source: &Source) -> Result<Vec<Card>, CardDavError> {
    let report = reqwest::Method::from_bytes(b"REPORT").expect("a valid method");
    let mut request = client
        .request(report, &source.url)
        .header("Depth", "1")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(QUERY)
        .timeout(FETCH_TIMEOUT);
    if let Some(user) = &source.user {
        request = request.basic_auth(user, source.password.as_deref());
    }
    let mut response = request.send().await?;
    if response.status().as_u16() != 207 {
        return Err(CardDavError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(CardDavError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    Ok(address_data(&text)?.iter().flat_map(|data| parse_vcards(data)).collect())
}

/// The text of every `address-data` element of a multistatus answer.
fn address_data(xml: &str) -> Result<Vec<String>, CardDavError> {
    let mut reader = Reader::from_str(xml);
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    loop {
        let event = reader.read_event().map_err(|e| CardDavError::Xml(e.to_string()))?;
        match event {
            Event::Start(e) if AsRef::<str>::as_ref(&e.local_name()) == "address-data" => {
                current = Some(String::new());
            }
            Event::End(e) if AsRef::<str>::as_ref(&e.local_name()) == "address-data" => {
                found.extend(current.take());
            }
            Event::Text(t) => {
                if let Some(text) = current.as_mut() {
                    text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(text) = current.as_mut() {
                    text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(text) = current.as_mut() {
                    text.push_str(&entity(&r)?);
                }
            }
            Event::Eof => return Ok(found),
            _ => {}
        }
    }
}

/// The character an entity reference in XML text stands for.
fn entity(r: &quick_xml::events::BytesRef<'_>) -> Result<String, CardDavError> {
    let bad = |what: String| CardDavError::Xml(format!("unknown entity &{what};"));
    if let Some(c) = r.resolve_char_ref().map_err(|e| CardDavError::Xml(e.to_string()))? {
        return Ok(c.to_string());
    }
    let name = r.xml10_content();
    let c = match name.as_ref() {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        other => return Err(bad(other.to_owned())),
    };
    Ok(c.to_owned())
}

/// A card being read: FN, N, the TELs and LANG.
type Partial = (Option<String>, Option<String>, Vec<String>, Option<String>);

/// The cards in a vCard text (RFC 6350): lines unfolded, then FN, N, TEL and LANG read.
pub fn parse_vcards(text: &str) -> Vec<Card> {
    let unfolded = text.replace("\r\n", "\n").replace("\n ", "").replace("\n\t", "");
    let mut cards = Vec::new();
    let mut card: Option<Partial> = None;
    for line in unfolded.lines() {
        let Some((head, value)) = line.split_once(':') else { continue };
        let mut params = head.split(';');
        // A property may carry a group prefix, `item1.TEL`.
        let name =
            params.next().unwrap_or("").rsplit('.').next().unwrap_or("").to_ascii_uppercase();
        match (name.as_str(), value.trim()) {
            ("BEGIN", v) if v.eq_ignore_ascii_case("VCARD") => card = Some(Default::default()),
            ("END", v) if v.eq_ignore_ascii_case("VCARD") => {
                if let Some((fn_, n, numbers, lang)) = card.take()
                    && let Some(name) = fn_.or(n).filter(|n| !n.is_empty())
                {
                    cards.push(Card { name, numbers, lang });
                }
            }
            ("FN", v) => set(&mut card, |c| c.0 = Some(unescape(v))),
            ("N", v) => {
                let parts: Vec<_> = v.split(';').map(unescape).collect();
                let given = parts.get(1).cloned().unwrap_or_default();
                let family = parts.first().cloned().unwrap_or_default();
                let joined = format!("{given} {family}").trim().to_owned();
                set(&mut card, |c| c.1 = Some(joined))
            }
            ("TEL", v) if !v.is_empty() => set(&mut card, |c| c.2.push(v.to_owned())),
            ("LANG", v) if !v.is_empty() => {
                set(&mut card, |c| c.3 = c.3.take().or_else(|| Some(v.to_owned())))
            }
            _ => {}
        }
    }
    cards
}

fn set<T>(card: &mut Option<T>, f: impl FnOnce(&mut T)) {
    if let Some(card) = card.as_mut() {
        f(card);
    }
}

/// Undoes vCard text escaping (`\,`, `\;`, `\n`, `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let source = Source {
            url: "https://bob:pa55@dav.example.com/book/?key=t0ken".into(),
            user: Some("bob".into()),
            password: Some("hunter2".into()),
        };
        let printed = format!("{source:?}");
        for secret in ["hunter2", "pa55", "t0ken"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("dav.example.com"), "{printed}");
    }

    #[test]
    fn folded_lines_groups_and_escapes_are_read() {
        let text = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:M\u{fc}ller\\, Hans\r\nitem1.TEL;TYPE=work:+49 3\r\n 0 1234567\r\nTEL;VALUE=uri:tel:+49-170-1234567\r\nLANG;PREF=1:de\r\nEND:VCARD\r\nBEGIN:VCARD\r\nN:Doe;Jane;;;\r\nTEL:+1 650 253 0000\r\nEND:VCARD\r\nBEGIN:VCARD\r\nTEL:123\r\nEND:VCARD\r\n";
        let cards = parse_vcards(text);
        assert_eq!(cards.len(), 2, "a card without a name is skipped");
        assert_eq!(cards[0].name, "Müller, Hans");
        assert_eq!(cards[0].numbers, ["+49 30 1234567", "tel:+49-170-1234567"]);
        assert_eq!(cards[0].lang.as_deref(), Some("de"));
        assert_eq!(cards[1].name, "Jane Doe");
    }

    #[test]
    fn address_data_is_taken_from_a_multistatus_with_entities() {
        let xml = r#"<?xml version="1.0"?><multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><response><href>/a/1.vcf</href><propstat><prop><C:address-data>BEGIN:VCARD
FN:Tom &amp; Jerry&#33;
END:VCARD
</C:address-data></prop></propstat></response></multistatus>"#;
        let data = address_data(xml).unwrap();
        assert_eq!(parse_vcards(&data[0])[0].name, "Tom & Jerry!");
        assert!(address_data("<a></b>").is_err());
    }
}
