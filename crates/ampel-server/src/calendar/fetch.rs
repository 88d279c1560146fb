//! Fetching a calendar's bytes: a file, an iCalendar URL, or a CalDAV calendar.
//!
//! URLs are fetched conditionally (`If-None-Match`, `If-Modified-Since`) so that an unchanged
//! feed costs one short answer. A CalDAV calendar is asked with a `calendar-query` `REPORT`
//! limited to a time range (RFC 4791, 7.8) and the `calendar-data` of every answer is joined
//! into one feed. Bodies are read up to a cap and no further. Nothing here parses iCalendar.

use std::time::Duration;

use jiff::Timestamp;
use quick_xml::events::Event as XmlEvent;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use super::source::{Kind, SourceConfig};

/// How long one fetch may take in all.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a calendar could not be fetched. Messages name the source's kind and the status, never
/// credentials or calendar contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    File(String),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered with a failure status.
    #[error("the server answered {0}")]
    Status(u16),
    /// The body is larger than allowed.
    #[error("the calendar is larger than {0} bytes")]
    TooLarge(usize),
    /// The CalDAV answer is not a readable multistatus document.
    #[error("the CalDAV answer cannot be read: {0}")]
    Dav(String),
    /// The fetch took too long.
    #[error("the fetch took longer than {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// What the last successful fetch of a URL said about its version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag`.
    pub etag: Option<String>,
    /// The `Last-Modified` date.
    pub last_modified: Option<String>,
}

/// What a fetch brought.
#[derive(Debug)]
pub enum Fetched {
    /// New bytes, with the validators to send next time.
    Body(Vec<u8>, Validators),
    /// The feed did not change since the validators were given.
    NotModified,
}

/// Fetches a source; `from` and `to` bound a CalDAV query.
pub async fn fetch(
    client: &reqwest::Client,
    source: &SourceConfig,
    known: &Validators,
    window: (Timestamp, Timestamp),
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let work = async {
        match source.kind {
            Kind::File => read_file(&source.location, max_bytes).await,
            Kind::Url => get(client, source, known, max_bytes).await,
            Kind::Caldav => report(client, source, window, max_bytes).await,
        }
    };
    tokio::time::timeout(FETCH_TIMEOUT, work).await.map_err(|_| FetchError::Timeout)?
}

/// Reads a regular file up to `max_bytes`. A device (`/dev/zero`) or a pipe is refused, since
/// it may never end, and the read stops at the cap whatever size the file claims (files under
/// `/proc` claim none).
async fn read_file(path: &str, max_bytes: usize) -> Result<Fetched, FetchError> {
    use tokio::io::AsyncReadExt;
    let path = path.strip_prefix("file://").unwrap_or(path);
    let failed = |e: std::io::Error| FetchError::File(e.kind().to_string());
    let meta = tokio::fs::metadata(path).await.map_err(failed)?;
    if !meta.is_file() {
        return Err(FetchError::File("not a regular file".into()));
    }
    if meta.len() > max_bytes as u64 {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let file = tokio::fs::File::open(path).await.map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes).await.map_err(failed)?;
    if bytes.len() > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    Ok(Fetched::Body(bytes, Validators::default()))
}

fn with_auth(request: reqwest::RequestBuilder, source: &SourceConfig) -> reqwest::RequestBuilder {
    match &source.username {
        Some(user) => request.basic_auth(user, source.password.as_ref()),
        None => request,
    }
}

/// A conditional GET of an iCalendar URL.
async fn get(
    client: &reqwest::Client,
    source: &SourceConfig,
    known: &Validators,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let mut request = with_auth(client.get(&source.location), source);
    if let Some(etag) = &known.etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header(IF_MODIFIED_SINCE, date);
    }
    let response = request.send().await.map_err(unreachable)?;
    if response.status() == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let validators = Validators { etag: header(ETAG), last_modified: header(LAST_MODIFIED) };
    let body = capped(response, max_bytes).await?;
    Ok(Fetched::Body(body, validators))
}

fn unreachable(e: reqwest::Error) -> FetchError {
    // The URL is left out of the message: it may carry a secret token in its query.
    FetchError::Unreachable(e.without_url().to_string())
}

/// Reads a body up to `max_bytes`.
async fn capped(mut response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `calendar-query` REPORT for the events that overlap a window (RFC 4791, 7.8.1).
fn query_body(from: Timestamp, to: Timestamp) -> String {
    let fmt = |t: Timestamp| t.strftime("%Y%m%dT%H%M%SZ").to_string();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  <c:filter>
    <c:comp-filter name="VCALENDAR">
      <c:comp-filter name="VEVENT">
        <c:time-range start="{}" end="{}"/>
      </c:comp-filter>
    </c:comp-filter>
  </c:filter>
</c:calendar-query>"#,
        fmt(from),
        fmt(to)
    )
}

// FIXME: every poll asks for the whole window again; a `sync-collection` REPORT (RFC 6578)
// would fetch only what changed, which matters for calendars with many events in the window.
async fn report(
    client: &reqwest::Client,
    source: &SourceConfig,
    (from, to): (Timestamp, Timestamp),
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let method = reqwest::Method::from_bytes(b"REPORT").expect("REPORT is a valid method");
    let request = client
        .request(method, &source.location)
        .header("Depth", "1")
        .header(reqwest::header::CONTENT_TYPE, "application/xml; charset=utf-8")
        .body(query_body(from, to));
    let response = with_auth(request, source).send().await.map_err(unreachable)?;
    if response.status() != StatusCode::MULTI_STATUS && !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let body = capped(response, max_bytes).await?;
    let feeds = calendar_data(&body)?;
    Ok(Fetched::Body(feeds.join("\r\n").into_bytes(), Validators::default()))
}

/// The text of every `calendar-data` element of a multistatus answer, whatever its prefix.
pub fn calendar_data(xml: &[u8]) -> Result<Vec<String>, FetchError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut inside = false;
    let mut current = String::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| FetchError::Dav(e.to_string()))? {
            XmlEvent::Start(e) if AsRef::<str>::as_ref(&e.local_name()) == "calendar-data" => {
                inside = true;
                current.clear();
            }
            XmlEvent::End(e) if AsRef::<str>::as_ref(&e.local_name()) == "calendar-data" => {
                inside = false;
                out.push(std::mem::take(&mut current));
            }
            XmlEvent::Text(t) if inside => {
                // Entities arrive as references of their own; text has none left.
                current.push_str(&t.xml10_content());
            }
            XmlEvent::CData(t) if inside => current.push_str(&t.into_inner()),
            XmlEvent::GeneralRef(r) if inside => {
                let reference = format!("&{};", r.xml10_content());
                let text = quick_xml::escape::unescape(&reference)
                    .map_err(|e| FetchError::Dav(e.to_string()))?;
                current.push_str(&text);
            }
            XmlEvent::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_data_is_taken_from_every_response_whatever_the_prefix() {
        let xml = br#"<?xml version="1.0"?>
<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
 <response><href>/a.ics</href><propstat><prop>
  <C:calendar-data>BEGIN:VCALENDAR&#13;
UID:a&amp;b
END:VCALENDAR</C:calendar-data></prop></propstat></response>
 <response><href>/b.ics</href><propstat><prop>
  <cal:calendar-data xmlns:cal="urn:ietf:params:xml:ns:caldav"><![CDATA[BEGIN:VCALENDAR]]></cal:calendar-data>
 </prop></propstat></response>
</multistatus>"#;
        let data = calendar_data(xml).unwrap();
        assert_eq!(data, vec!["BEGIN:VCALENDAR\r\nUID:a&b\nEND:VCALENDAR", "BEGIN:VCALENDAR"]);
    }
}
