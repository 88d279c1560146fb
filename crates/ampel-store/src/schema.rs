//! The database schema and its forward-only migrations.
//!
//! Migration N takes the schema from version N to N + 1, and `PRAGMA user_version` records how
//! many have run. A released migration is never edited; a change to the schema is a new one
//! appended to [`MIGRATIONS`]. There are no down-migrations: a file written by a newer build is
//! refused rather than guessed at. Reading and writing records is not this module's business.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Version 1: users, tokens, facts and history.
///
/// Timestamps are integer nanoseconds since the epoch; lists, facts and presences are JSON.
/// There are no foreign keys on purpose: the server batches many clients' ops into one
/// transaction, and a fact arriving for a user deleted in the same batch must not fail
/// everyone else's writes with it. `Op::DeleteUser` removes dependent rows itself.
const V1: &str = "
CREATE TABLE users (
    id        TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL,
    phone     TEXT,
    lang      TEXT,
    tz        TEXT,
    groups    TEXT NOT NULL,
    delegates TEXT NOT NULL,
    blocked   TEXT NOT NULL,
    created   INTEGER NOT NULL
) STRICT;

CREATE TABLE tokens (
    hash    BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    user_id TEXT,
    created INTEGER NOT NULL
) STRICT;
CREATE INDEX tokens_by_user ON tokens (user_id);

CREATE TABLE facts (
    user_id  TEXT NOT NULL,
    source   TEXT NOT NULL,
    fact_key TEXT NOT NULL,
    fact     TEXT NOT NULL,
    PRIMARY KEY (user_id, source, fact_key)
) STRICT, WITHOUT ROWID;

CREATE TABLE history (
    id       INTEGER PRIMARY KEY,
    user_id  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    presence TEXT NOT NULL
) STRICT;
CREATE INDEX history_by_user ON history (user_id, at);
CREATE INDEX history_by_time ON history (at);
";

/// Version 2: settings, per user and area (a calendar source, SIP credentials, a password
/// hash), each a JSON value. The empty user id holds company-wide settings. Secrets kept here
/// are hashes or credentials for other systems; they never leave through an API answer.
const V2: &str = "
CREATE TABLE settings (
    user_id TEXT NOT NULL,
    area    TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, area, key)
) STRICT, WITHOUT ROWID;
";

/// Every migration, in order.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Runs the migrations the file lacks, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        // The version is read inside the write transaction, so that two processes opening a
        // new file at once cannot both run the same migration.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let script = match usize::try_from(found).ok().filter(|&v| v <= MIGRATIONS.len()) {
            Some(v) if v == MIGRATIONS.len() => return Ok(()),
            Some(v) => MIGRATIONS[v],
            None => return Err(StoreError::SchemaVersion { found, supported: VERSION }),
        };

        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", found + 1)?;
        tx.commit()?;
    }
}
