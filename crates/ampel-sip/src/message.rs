//! SIP messages (RFC 3261 §7): framing, header lookup and serialising.
//!
//! The parser is deliberately small: it frames a message, splits the start line and the header
//! fields (unfolding continuation lines, expanding compact names) and leaves each header value
//! as text for the few places that need its parts ([`tag_of`], [`uri_of`], [`aor_of`]). It
//! bounds everything it keeps: message size, header count and line length, so that a hostile
//! peer costs at most [`MAX_MESSAGE`] bytes per message. It is not a SIP stack: transactions,
//! dialogs and transports belong to the server.

use std::fmt::Write as _;

/// The largest message Ampel accepts, head and body together. PIDF documents from phones are a
/// few kilobytes; RFC 3261 §18.1.1 expects UDP messages to stay under the path MTU anyway.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The most header fields one message may carry.
pub const MAX_HEADERS: usize = 128;

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// More bytes are needed (a stream transport waits for them).
    #[error("the message is incomplete")]
    Incomplete,
    /// The message is larger than [`MAX_MESSAGE`].
    #[error("the message is larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The first line is neither a request line nor a status line.
    #[error("the start line is malformed")]
    StartLine,
    /// A header line has no colon or is not text.
    #[error("header line {0} is malformed")]
    Header(usize),
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Content-Length is not a number, or disagrees with the datagram.
    #[error("Content-Length is malformed")]
    ContentLength,
    /// A header every request needs is missing (RFC 3261 §8.1.1).
    #[error("the {0} header is missing")]
    Missing(&'static str),
}

/// An Expires header that is not a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Expires is not a number")]
pub struct BadExpires;

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Header fields in arrival order; names are stored lowercase and in their long form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// The first value of a header (name in any case, long or compact).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical(name);
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical(name);
        self.0.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((canonical(name), value.into()));
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive, RFC 3261 §7.1).
    pub method: String,
    /// The Request-URI.
    pub uri: String,
    /// The header fields.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// The long, lowercase form of a header name (RFC 3261 §7.3.3 and the event extensions).
fn canonical(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let long = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "o" => "event",
        "u" => "allow-events",
        _ => return lower,
    };
    long.to_owned()
}

/// Parses one message from the start of `buf`. On a stream (`datagram` false) the message
/// ends where Content-Length says and the bytes used are returned, so that the caller keeps the
/// rest; in a datagram the body is the rest of the datagram.
pub fn parse(buf: &[u8], datagram: bool) -> Result<(Message, usize), ParseError> {
    // Keep-alive CRLFs between messages on a stream (RFC 5626 §3.5.1) are skipped.
    let skipped = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    let buf = &buf[skipped..];
    let Some(head_end) = find_head_end(buf) else {
        return Err(if buf.len() > MAX_MESSAGE {
            ParseError::TooLarge
        } else if datagram {
            ParseError::StartLine
        } else {
            ParseError::Incomplete
        });
    };
    if head_end.0 > MAX_MESSAGE {
        return Err(ParseError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end.0]).map_err(|_| ParseError::Header(0))?;
    let mut lines = unfold(head);
    let start = lines.next().ok_or(ParseError::StartLine)?;
    let mut headers = Headers::default();
    for (i, line) in lines.enumerate() {
        if headers.0.len() >= MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        let (name, value) = line.split_once(':').ok_or(ParseError::Header(i + 2))?;
        if name.is_empty() || !name.trim().bytes().all(is_token) || name.trim().is_empty() {
            return Err(ParseError::Header(i + 2));
        }
        headers.push(name, value.trim());
    }
    let body_start = head_end.1;
    let body = body_of(&headers, &buf[body_start..], datagram)?;
    let used = skipped + body_start + body.len();
    let body = body.to_vec();
    Ok((start_line(start, headers, body)?, used))
}

/// Where the head ends (before the blank line) and where the body starts.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let window = &buf[..buf.len().min(MAX_MESSAGE + 4)];
    for i in 0..window.len() {
        if window[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
        if window[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
    }
    None
}

/// Header lines with continuation lines (leading white space) joined to the line before.
fn unfold(head: &str) -> impl Iterator<Item = String> + '_ {
    let mut out: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
            continue;
        }
        out.push(line.to_owned());
    }
    out.into_iter()
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn body_of<'a>(headers: &Headers, rest: &'a [u8], datagram: bool) -> Result<&'a [u8], ParseError> {
    let length = match headers.get("content-length") {
        Some(text) => Some(text.trim().parse::<usize>().map_err(|_| ParseError::ContentLength)?),
        None if datagram => None,
        // RFC 3261 §18.3: on a stream Content-Length is mandatory; without it there is no body.
        None => Some(0),
    };
    match length {
        Some(n) if n > MAX_MESSAGE => Err(ParseError::TooLarge),
        Some(n) if n > rest.len() => {
            if datagram {
                Err(ParseError::ContentLength)
            } else {
                Err(ParseError::Incomplete)
            }
        }
        Some(n) => Ok(&rest[..n]),
        None => Ok(rest),
    }
}

fn start_line(line: String, headers: Headers, body: Vec<u8>) -> Result<Message, ParseError> {
    let mut parts = line.splitn(3, ' ');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    match (a, b, c) {
        (Some("SIP/2.0"), Some(code), reason) => {
            let status = code.parse::<u16>().map_err(|_| ParseError::StartLine)?;
            if !(100..700).contains(&status) {
                return Err(ParseError::StartLine);
            }
            let reason = reason.unwrap_or("").to_owned();
            Ok(Message::Response(Response { status, reason, headers, body }))
        }
        (Some(method), Some(uri), Some("SIP/2.0"))
            if !method.is_empty() && method.bytes().all(is_token) && !uri.is_empty() =>
        {
            let request = Request { method: method.to_owned(), uri: uri.to_owned(), headers, body };
            request.check()?;
            Ok(Message::Request(request))
        }
        _ => Err(ParseError::StartLine),
    }
}

impl Request {
    /// Fails unless the headers every request needs are there (RFC 3261 §8.1.1).
    fn check(&self) -> Result<(), ParseError> {
        for name in ["via", "from", "to", "call-id", "cseq"] {
            if self.headers.get(name).is_none() {
                return Err(ParseError::Missing(match name {
                    "via" => "Via",
                    "from" => "From",
                    "to" => "To",
                    "call-id" => "Call-ID",
                    _ => "CSeq",
                }));
            }
        }
        Ok(())
    }

    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The CSeq number, when it is well-formed.
    pub fn cseq(&self) -> Option<u32> {
        self.header("cseq")?.split_whitespace().next()?.parse().ok()
    }

    /// The branch of the top Via (the server transaction's key, RFC 3261 §17.2.3).
    pub fn branch(&self) -> Option<&str> {
        param(self.header("via")?, "branch")
    }

    /// The Expires header as seconds, `Err` when present but not a number.
    pub fn expires(&self) -> Result<Option<u32>, BadExpires> {
        match self.header("expires") {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map(|s| Some(u32::try_from(s).unwrap_or(u32::MAX)))
                .map_err(|_| BadExpires),
        }
    }

    /// A response to this request with the headers RFC 3261 §8.2.6.2 copies. A To tag is added
    /// when the request had none and `to_tag` is given.
    pub fn response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        let mut headers = Headers::default();
        for via in self.headers.all("via") {
            headers.push("via", via);
        }
        for name in ["from", "call-id", "cseq"] {
            if let Some(value) = self.header(name) {
                headers.push(name, value);
            }
        }
        let to = self.header("to").unwrap_or_default();
        let to = match to_tag {
            Some(tag) if tag_of(to).is_none() => format!("{to};tag={tag}"),
            _ => to.to_owned(),
        };
        headers.push("to", to);
        Response { status, reason: reason.to_owned(), headers, body: Vec::new() }
    }
}

impl Response {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The CSeq number, when it is well-formed: which request of the dialog this answers.
    pub fn cseq(&self) -> Option<u32> {
        self.header("cseq")?.split_whitespace().next()?.parse().ok()
    }

    /// The response with a body of this type.
    pub fn with_body(mut self, content_type: &str, body: Vec<u8>) -> Response {
        self.headers.push("content-type", content_type);
        self.body = body;
        self
    }

    /// The response with one more header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push(name, value);
        self
    }

    /// The wire form, with Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}", self.status, self.reason);
        serialise(&start, &self.headers, &self.body)
    }
}

impl Request {
    /// The wire form, with Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        serialise(&start, &self.headers, &self.body)
    }
}

fn serialise(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut head = String::with_capacity(256 + body.len());
    head.push_str(start);
    head.push_str("\r\n");
    for (name, value) in headers.iter() {
        if name == "content-length" {
            continue;
        }
        let _ = write!(head, "{}: {}\r\n", display_name(name), value);
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The usual spelling of a header name on the wire.
fn display_name(name: &str) -> String {
    match name {
        "call-id" => "Call-ID".to_owned(),
        "cseq" => "CSeq".to_owned(),
        "www-authenticate" => "WWW-Authenticate".to_owned(),
        "sip-etag" => "SIP-ETag".to_owned(),
        "sip-if-match" => "SIP-If-Match".to_owned(),
        _ => name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// A parameter of a header value (`;name=value`), outside the `<...>` of a name-addr.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after_uri = value.rfind('>').map_or(value, |i| &value[i + 1..]);
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// The entries of a header that lists name-addrs (`Record-Route`, `Route`), split at the
/// commas between them and not at commas inside `<...>` or quotes (RFC 3261 §7.3.1).
pub fn list_of(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut angle, mut quoted) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !angle && !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|entry| !entry.is_empty());
    out
}

/// The tag of a From or To value.
pub fn tag_of(value: &str) -> Option<&str> {
    param(value, "tag").filter(|t| !t.is_empty())
}

/// The URI of a name-addr or addr-spec (`"Alice" <sip:alice@example.com>;tag=1`).
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(open), Some(close)) if open < close => value[open + 1..close].trim(),
        _ => value.split(';').next().unwrap_or("").trim(),
    }
}

/// The address of record `user@host` of a SIP URI: scheme, port, parameters and headers are
/// dropped and both parts are lowercased. `None` for a URI without user part.
pub fn aor_of(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("pres:"))?;
    let rest = rest.split([';', '?']).next()?;
    let (user, host) = rest.split_once('@')?;
    let user = user.split(':').next()?;
    let host = host
        .rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    if user.is_empty() || host.is_empty() {
        return None;
    }
    Some(format!("{}@{}", user.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH: &str = "PUBLISH sip:alice@example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
        Max-Forwards: 70\r\n\
        f: <sip:alice@example.com>;tag=abc\r\n\
        To: <sip:alice@example.com>\r\n\
        i: 1@127.0.0.1\r\n\
        CSeq: 1 PUBLISH\r\n\
        Event: presence\r\n\
        Subject: a folded\r\n  header\r\n\
        c: application/pidf+xml\r\n\
        l: 5\r\n\r\nhello";

    #[test]
    fn a_request_with_compact_and_folded_headers_is_read() {
        let (msg, used) = parse(PUBLISH.as_bytes(), true).unwrap();
        assert_eq!(used, PUBLISH.len());
        let Message::Request(req) = msg else { panic!("a request") };
        assert_eq!(req.method, "PUBLISH");
        assert_eq!(req.header("Call-ID"), Some("1@127.0.0.1"));
        assert_eq!(req.header("subject"), Some("a folded header"));
        assert_eq!(req.branch(), Some("z9hG4bK-1"));
        assert_eq!(req.cseq(), Some(1));
        assert_eq!(req.body, b"hello");
        assert_eq!(tag_of(req.header("from").unwrap()), Some("abc"));
    }

    #[test]
    fn a_stream_waits_for_the_whole_body_and_keeps_what_follows() {
        let mut two = PUBLISH.as_bytes().to_vec();
        assert_eq!(parse(&two[..two.len() - 2], false), Err(ParseError::Incomplete));
        two.extend_from_slice(PUBLISH.as_bytes());
        let (_, used) = parse(&two, false).unwrap();
        assert_eq!(used, PUBLISH.len());
    }

    #[test]
    fn broken_messages_are_errors_with_a_reason() {
        assert_eq!(parse(b"HELLO\r\n\r\n", true), Err(ParseError::StartLine));
        let no_cseq = PUBLISH.replace("CSeq: 1 PUBLISH\r\n", "");
        assert_eq!(parse(no_cseq.as_bytes(), true), Err(ParseError::Missing("CSeq")));
        let long_body = PUBLISH.replace("l: 5", "l: 50");
        assert_eq!(parse(long_body.as_bytes(), true), Err(ParseError::ContentLength));
        let bad_len = PUBLISH.replace("l: 5", "l: five");
        assert_eq!(parse(bad_len.as_bytes(), true), Err(ParseError::ContentLength));
        let huge = vec![b'a'; MAX_MESSAGE + 10];
        assert_eq!(parse(&huge, false), Err(ParseError::TooLarge));
        let no_colon = PUBLISH.replace("Max-Forwards: 70", "Max-Forwards 70");
        assert_eq!(parse(no_colon.as_bytes(), true), Err(ParseError::Header(3)));
    }

    #[test]
    fn addresses_of_record_are_normalised() {
        assert_eq!(
            aor_of("sip:Alice@Example.com:5060;transport=udp"),
            Some("alice@example.com".into())
        );
        assert_eq!(aor_of("sips:bob:secret@example.com"), Some("bob@example.com".into()));
        assert_eq!(aor_of("sip:example.com"), None);
        assert_eq!(uri_of("\"A\" <sip:a@b.c>;tag=1"), "sip:a@b.c");
        assert_eq!(uri_of("sip:a@b.c;tag=1"), "sip:a@b.c");
    }

    #[test]
    fn a_response_copies_the_dialog_headers_and_adds_a_tag() {
        let (Message::Request(req), _) = parse(PUBLISH.as_bytes(), true).unwrap() else {
            panic!("a request")
        };
        let bytes = req.response(200, "OK", Some("t1")).with("expires", "60").to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        expect_test::expect![[r#"
            SIP/2.0 200 OK
            Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1
            From: <sip:alice@example.com>;tag=abc
            Call-ID: 1@127.0.0.1
            CSeq: 1 PUBLISH
            To: <sip:alice@example.com>;tag=t1
            Expires: 60
            Content-Length: 0

        "#]]
        .assert_eq(&text.replace("\r\n", "\n"));
    }

    #[test]
    fn a_route_list_splits_between_entries_only() {
        let value =
            r#"<sip:p1.example.com;lr>, "Proxy, two" <sip:p2.example.com;lr?x=a,b>,<sip:p3>"#;
        assert_eq!(
            list_of(value),
            [
                r#"<sip:p1.example.com;lr>"#,
                r#""Proxy, two" <sip:p2.example.com;lr?x=a,b>"#,
                "<sip:p3>"
            ]
        );
        assert!(list_of(" ").is_empty());
    }
}
