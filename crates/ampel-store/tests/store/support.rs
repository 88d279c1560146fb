//! Fixtures and a self-removing temporary directory shared by the store's tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ampel_core::fact::DeviceState;
use ampel_core::{Availability, Fact, FactState, Note, Presence, Source};
use ampel_store::{HistoryEntry, TokenRecord, UserRecord, token_hash};
use jiff::Timestamp;

/// A directory under the system's temp dir, unique to this process and call, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir()
            .join(format!("ampel-store-test-{}-{name}-{n}", std::process::id()));
        // A directory left by an earlier run that had the same process id.
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A timestamp with sub-microsecond digits, to show none are lost.
pub fn at(second: i64) -> Timestamp {
    Timestamp::new(1_750_000_000 + second, 123_456_789).unwrap()
}

pub fn user(id: &str, name: &str) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        phone: Some("+49 89 1234-56".to_owned()),
        lang: Some("de".to_owned()),
        tz: Some("Europe/Berlin".to_owned()),
        groups: vec!["sales".to_owned(), "munich".to_owned()],
        delegates: vec!["bob@example.com".to_owned()],
        blocked: vec![],
        created: at(0),
    }
}

pub fn token(secret: &str, user: Option<&str>) -> TokenRecord {
    TokenRecord { hash: token_hash(secret), user: user.map(str::to_owned), created: at(1) }
}

pub fn device(key: &str, state: DeviceState, observed: i64) -> Fact {
    Fact::new(Source::Session, key, FactState::device(state), at(observed))
}

pub fn manual(availability: Availability, note: &str, observed: i64) -> Fact {
    Fact::new(
        Source::Manual,
        "status",
        FactState::Status { availability, activity: None },
        at(observed),
    )
    .ending(Some(at(observed + 3600)))
    .with_note(Some(Note::new(note, Some("de"))))
}

pub fn presence(availability: Availability, since: i64) -> Presence {
    Presence {
        availability,
        activity: availability.plain_activity(),
        idle: false,
        out_of_office: false,
        note: Some(Note::new("zurück um 16:00", Some("de"))),
        until: Some(at(since + 1800)),
        since: at(since),
        location: None,
        last_active: Some(at(since)),
    }
}

pub fn entry(user: &str, second: i64, availability: Availability) -> HistoryEntry {
    HistoryEntry { user: user.to_owned(), at: at(second), presence: presence(availability, second) }
}
