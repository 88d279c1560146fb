//! Who is calling: a caller's number or address resolved to a name, from Ampel's own users
//! first, then the CSV directory, then the CardDAV address book. The contacts of Microsoft 365
//! mailboxes come after these (see [`crate::routing::find_caller`]), since they depend on whose
//! calls are looked at.
//!
//! Numbers are compared in E.164 only ([`super::number`]). The users' numbers are indexed
//! from the hub's records and re-indexed when the number of users changes or the index is
//! older than [`USER_INDEX_AGE`]; the directory and the address book are replaced whole when
//! they are read again. A caller found among the users is internal; anyone else is external.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use jiff::{SignedDuration, Timestamp};
use phonenumber::country::Id;
use serde::Serialize;

use super::carddav::Card;
use super::number::{NumberError, normalise};
use crate::hub::Hub;

/// How long a user's changed phone number may go unnoticed.
pub const USER_INDEX_AGE: SignedDuration = SignedDuration::from_secs(30);
/// The longest number a PBX uses as an internal extension.
const MAX_EXTENSION: usize = 6;

/// Where a name was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// An Ampel user.
    User,
    /// The CSV directory.
    Directory,
    /// The CardDAV address book.
    Carddav,
    /// The contacts of a Microsoft 365 mailbox: the callee's own, or else a colleague's.
    Graph,
}

/// What is known about a caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Found {
    /// The number in E.164, when the caller was given as a number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The caller's name, when found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Ampel user who calls, if it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The caller's language, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Where the name was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

impl Found {
    /// True for a caller inside the company.
    pub fn internal(&self) -> bool {
        self.user.is_some()
    }
}

/// A name by number.
#[derive(Clone, Debug)]
struct Named {
    name: String,
    lang: Option<String>,
}

#[derive(Debug, Default)]
struct UserIndex {
    /// E.164 and bare extensions to user ids.
    numbers: HashMap<String, String>,
    users: usize,
    built: Option<Timestamp>,
}

/// Why the CSV directory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file cannot be read.
    #[error("cannot read the directory {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not CSV with `name` and `number` columns.
    #[error("the directory {path} is not CSV with the columns name and number: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The caller lookup.
#[derive(Debug)]
pub struct Lookup {
    country: Option<Id>,
    users: RwLock<UserIndex>,
    directory: RwLock<HashMap<String, Named>>,
    contacts: RwLock<HashMap<String, Named>>,
}

impl Lookup {
    /// An empty lookup reading national numbers as numbers of `country`.
    pub fn new(country: Option<Id>) -> Lookup {
        Lookup {
            country,
            users: RwLock::default(),
            directory: RwLock::default(),
            contacts: RwLock::default(),
        }
    }

    /// The number in E.164 for this company.
    pub fn normalise(&self, text: &str) -> Result<String, NumberError> {
        normalise(text, self.country)
    }

    /// Resolves a caller given as a number, a `tel:` or `sip:` URI, or a user address;
    /// `anonymous` (a withheld number) is an unknown external caller.
    pub fn find(&self, hub: &Hub, text: &str) -> Result<Found, NumberError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("anonymous") {
            return Ok(Found::default());
        }
        let address =
            text.strip_prefix("sip:").or_else(|| text.strip_prefix("sips:")).unwrap_or(text);
        let address = address.split(';').next().unwrap_or(address);
        if let Some((local, _)) = address.split_once('@')
            && !local.starts_with('+')
            && !local.bytes().all(|b| b.is_ascii_digit())
        {
            return Ok(self.user_by_id(hub, address));
        }
        let digits = address.split('@').next().unwrap_or(address);
        if digits.len() <= MAX_EXTENSION
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Some(found) = self.user_by_number(hub, digits)
        {
            return Ok(found);
        }
        let number = self.normalise(text)?;
        if let Some(found) = self.user_by_number(hub, &number) {
            return Ok(Found { number: Some(number), ..found });
        }
        for (names, origin) in
            [(&self.directory, Origin::Directory), (&self.contacts, Origin::Carddav)]
        {
            if let Some(named) = names.read().expect("lookup lock").get(&number) {
                return Ok(Found {
                    number: Some(number),
                    name: Some(named.name.clone()),
                    user: None,
                    lang: named.lang.clone(),
                    origin: Some(origin),
                });
            }
        }
        Ok(Found { number: Some(number), ..Found::default() })
    }

    fn user_by_id(&self, hub: &Hub, id: &str) -> Found {
        let Some(slot) = hub.user(&id.to_ascii_lowercase()) else { return Found::default() };
        let record = slot.record();
        Found {
            number: record.phone.as_deref().and_then(|p| self.normalise(p).ok()),
            name: Some(record.name.clone()),
            user: Some(record.id.clone()),
            lang: record.lang.clone(),
            origin: Some(Origin::User),
        }
    }

    fn user_by_number(&self, hub: &Hub, number: &str) -> Option<Found> {
        self.reindex_if_stale(hub);
        let id = self.users.read().expect("lookup lock").numbers.get(number)?.clone();
        Some(self.user_by_id(hub, &id))
    }

    fn reindex_if_stale(&self, hub: &Hub) {
        let now = hub.clock.now();
        let stale = |index: &UserIndex| {
            index.users != hub.user_count()
                || index.built.is_none_or(|b| now.duration_since(b) > USER_INDEX_AGE)
        };
        if !stale(&self.users.read().expect("lookup lock")) {
            return;
        }
        let mut numbers = HashMap::new();
        for record in hub.records() {
            let Some(phone) = record.phone.as_deref() else { continue };
            let bare: String = phone.chars().filter(|c| !c.is_whitespace()).collect();
            if bare.len() <= MAX_EXTENSION && bare.bytes().all(|b| b.is_ascii_digit()) {
                numbers.insert(bare, record.id.clone());
            } else if let Ok(number) = self.normalise(phone) {
                numbers.insert(number, record.id.clone());
            }
        }
        *self.users.write().expect("lookup lock") =
            UserIndex { numbers, users: hub.user_count(), built: Some(now) };
    }

    /// Replaces the directory with the file's entries; returns how many numbers it holds.
    pub fn load_directory(&self, path: &Path) -> Result<usize, DirectoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path)
            .map_err(|source| DirectoryError::Io { path: shown.clone(), source })?;
        let format = |message: String| DirectoryError::Format { path: shown.clone(), message };
        let mut reader =
            csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(&text[..]);
        let headers = reader.headers().map_err(|e| format(e.to_string()))?.clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(name_at), Some(number_at)) = (column("name"), column("number")) else {
            return Err(format("the header must name the columns name and number".into()));
        };
        let lang_at = column("lang");
        let mut entries = HashMap::new();
        for (row, record) in reader.records().enumerate() {
            let Ok(record) = record else {
                tracing::warn!(directory = %shown, row = row + 2, "directory row skipped");
                continue;
            };
            let (Some(name), Some(number)) = (record.get(name_at), record.get(number_at)) else {
                continue;
            };
            let Ok(number) = self.normalise(number) else {
                tracing::warn!(directory = %shown, row = row + 2, "directory number not understood");
                continue;
            };
            let lang =
                lang_at.and_then(|i| record.get(i)).filter(|l| !l.is_empty()).map(str::to_owned);
            entries.insert(number, Named { name: name.to_owned(), lang });
        }
        let count = entries.len();
        *self.directory.write().expect("lookup lock") = entries;
        Ok(count)
    }

    /// Replaces the address book's entries; returns how many numbers they hold.
    pub fn set_contacts(&self, cards: &[Card]) -> usize {
        let mut entries = HashMap::new();
        for card in cards {
            for number in &card.numbers {
                if let Ok(number) = self.normalise(number) {
                    entries
                        .insert(number, Named { name: card.name.clone(), lang: card.lang.clone() });
                }
            }
        }
        let count = entries.len();
        *self.contacts.write().expect("lookup lock") = entries;
        count
    }
}
