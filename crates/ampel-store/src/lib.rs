//! Ampel's durable state: users, tokens, facts and presence history in one SQLite file,
//! `DIR/ampel.db`.
//!
//! The server owns one [`Store`] on a dedicated writer thread and hands it batches of [`Op`]s.
//! [`Store::apply`] writes a whole batch in one transaction, so many clients' writes share one
//! commit (group commit) and each client is told "done" only after that commit. The file runs
//! in write-ahead-log mode with `synchronous=NORMAL`: a committed batch survives the process
//! being killed at any moment, though not necessarily a power cut in the next instant.
//!
//! This crate is not where anything is decided. It does not aggregate, expire facts, check
//! permissions or read the clock (every timestamp comes in with the op), and it keeps no cache:
//! the server holds the live state in memory and reads the store back only at start-up and for
//! history queries.

mod codec;
mod error;
mod read;
mod record;
mod schema;
mod write;

use std::fs::DirBuilder;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::Connection;

pub use error::StoreError;
pub use record::{HistoryEntry, Op, SettingRecord, TokenRecord, UserRecord, token_hash};

/// The name of the database file inside the data directory.
pub const DB_FILE: &str = "ampel.db";

/// How long a statement waits for a lock held by another connection (an operator's `sqlite3`
/// shell, a backup) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Room for every statement the store prepares, so that none is ever compiled twice.
const STATEMENT_CACHE: usize = 32;

/// The WAL file is truncated back to this size after a checkpoint, so that one burst of writes
/// does not leave a large file behind for good.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// A handle on the database. Not shared between threads: one writer thread owns it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens `dir/ampel.db`, creating the directory (owner-only on unix) and the file as needed,
    /// and brings the schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;

        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { mode });
        }
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;

        Store::finish(conn)
    }

    /// A store that lives in memory and vanishes when dropped; for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::finish(Connection::open_in_memory()?)
    }

    fn finish(mut conn: Connection) -> Result<Store, StoreError> {
        // In WAL mode NORMAL syncs at checkpoints only; a commit is in the WAL file (and so
        // in the operating system's hands) when it returns, which is what a process crash needs.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Applies every op in one transaction: when this returns `Ok` all of them are committed,
    /// when it returns an error none of them is.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        write::apply(&mut self.conn, ops)
    }

    /// Like [`Store::apply`], for ops gathered from several places (a group commit), without
    /// copying them into one slice.
    pub fn apply_all<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a Op>,
    ) -> Result<(), StoreError> {
        write::apply(&mut self.conn, ops)
    }

    /// Each existing user's most recent history entry: the presence Ampel last told watchers
    /// about, and since when. A restarted server starts from these, so that `since` survives
    /// the restart.
    pub fn latest_history(&self) -> Result<Vec<HistoryEntry>, StoreError> {
        read::latest_history(&self.conn)
    }

    /// Every user, ordered by id.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        read::users(&self.conn)
    }

    /// Every token, ordered by user (admin tokens first) and hash.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        read::tokens(&self.conn)
    }

    /// Every setting, ordered by user (company-wide first), area and key.
    pub fn settings(&self) -> Result<Vec<SettingRecord>, StoreError> {
        read::settings(&self.conn)
    }

    /// Every fact with its user's id, ordered by user, source and key.
    pub fn facts(&self) -> Result<Vec<(String, ampel_core::Fact)>, StoreError> {
        read::facts(&self.conn)
    }

    /// The history of `user` with `from <= at < to`, oldest first, at most `limit` entries.
    pub fn history(
        &self,
        user: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        read::history(&self.conn, user, from, to, limit)
    }
}

/// Creates `dir` and its missing parents. Presence is personal data, so a directory the store
/// creates is readable by its owner only; one that already exists is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::Io { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_opened_for_crash_safe_group_commit() {
        let dir = std::env::temp_dir().join(format!("ampel-store-unit-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let pragma = |name: &str| -> String {
            store
                .conn
                .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };

        assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
        assert_eq!(pragma("synchronous"), "Integer(1)");
        assert_eq!(pragma("busy_timeout"), "Integer(5000)");
        assert_eq!(pragma("user_version"), format!("Integer({})", schema::VERSION));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
