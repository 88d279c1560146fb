//! A calendar source as configured: where the calendar is and how to log in to it.
//!
//! Sources come from the server configuration file's `[calendar]` section and from the
//! administration API, which keeps them in the settings table (area `calendar`, one key per
//! source name). Passwords are kept there and in memory only: [`SourceView`] is what leaves.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The settings area of calendar sources.
pub const AREA: &str = "calendar";

/// What kind of place a calendar is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An iCalendar file on the server's disk.
    File,
    /// An iCalendar URL, polled.
    Url,
    /// A CalDAV calendar collection.
    Caldav,
}

/// One source, as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What kind of place.
    pub kind: Kind,
    /// The file path, or the URL of the feed or the CalDAV collection.
    pub location: String,
    /// The user name for basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password for basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("kind", &self.kind)
            .field("has_credentials", &self.username.is_some())
            .finish_non_exhaustive()
    }
}

impl SourceConfig {
    /// Checks the source; the error names the field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let location = self.location.trim();
        if location.is_empty() || location.len() > 2048 {
            return Err(("location", "must hold 1 to 2048 characters".into()));
        }
        let http = location.starts_with("http://") || location.starts_with("https://");
        match self.kind {
            Kind::Url | Kind::Caldav if !http => {
                Err(("location", "must be an http:// or https:// URL".into()))
            }
            Kind::Url | Kind::Caldav if !readable_url(location) => {
                Err(("location", "is not a readable URL with a host".into()))
            }
            Kind::File if http => Err(("location", "must be a file path, not a URL".into())),
            _ if self.password.is_some() && self.username.is_none() => {
                Err(("username", "is needed with a password".into()))
            }
            _ => Ok(()),
        }
    }

    /// What may be shown of the source: no password, and no user-info or query in the URL.
    pub fn view(&self, name: &str) -> SourceView {
        let location = match self.kind {
            Kind::File => self.location.clone(),
            Kind::Url | Kind::Caldav => redact_url(&self.location),
        };
        SourceView {
            name: name.to_owned(),
            kind: self.kind,
            location,
            username: self.username.clone(),
            has_password: self.password.is_some(),
        }
    }
}

/// True when `url` parses and names a host, so that a typing error is refused when the source
/// is set rather than found in its health later.
fn readable_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

/// A URL without user-info and query, which often carry secrets.
fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else { return "(unreadable URL)".into() };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if parsed.query().is_some() {
        parsed.set_query(Some("…"));
    }
    parsed.to_string()
}

/// A source as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// The source's name, unique per user.
    pub name: String,
    /// What kind of place.
    pub kind: Kind,
    /// Where, with secrets removed from URLs.
    pub location: String,
    /// The user name for basic authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether a password is stored; the password itself never leaves.
    pub has_password: bool,
}

/// A source in the server configuration file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// The user whose calendar it is.
    pub user: String,
    /// The source's name, unique per user.
    pub name: String,
    /// Where and how.
    #[serde(flatten)]
    pub source: SourceConfig,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("user", &self.user)
            .field("name", &self.name)
            .field("source", &self.source)
            .finish()
    }
}

/// The `[calendar]` section of the server configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarSection {
    /// Seconds between two fetches of each source.
    pub poll_s: u64,
    /// Hours ahead for which meetings are placed as facts.
    pub window_h: u32,
    /// The largest feed read, in bytes.
    pub max_bytes: usize,
    /// The most occurrences expanded per source and window.
    pub max_occurrences: usize,
    /// Sources configured here rather than through the API.
    pub sources: Vec<FileSource>,
}

impl Default for CalendarSection {
    fn default() -> CalendarSection {
        CalendarSection {
            poll_s: 300,
            window_h: 36,
            max_bytes: 8 << 20,
            max_occurrences: 5_000,
            sources: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_the_view() {
        let source = SourceConfig {
            kind: Kind::Url,
            location: "https://bob:pw@cal.example.com/feed.ics?token=s3cret".into(),
            username: Some("bob".into()),
            password: Some("hunter2".into()),
        };
        let shown = serde_json::to_string(&source.view("work")).unwrap();
        assert!(!shown.contains("s3cret") && !shown.contains("hunter2") && !shown.contains("pw@"));
        assert!(!format!("{source:?}").contains("hunter2"));
    }

    #[test]
    fn an_unreadable_url_is_refused_when_set() {
        for location in ["http://", "https://exa mple.com/x.ics", "http://[::1/x", "http://:80/"] {
            let source = SourceConfig {
                kind: Kind::Url,
                location: location.into(),
                username: None,
                password: None,
            };
            assert_eq!(
                source.validate().map_err(|(field, _)| field),
                Err("location"),
                "{location}"
            );
        }
    }
}
