//! The one error type of the store.
//!
//! Every variant says what went wrong in the store's own terms; how a failure reaches an HTTP
//! client or a log line is the server's business, not this module's.

use std::path::PathBuf;

use jiff::Timestamp;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused: the file is not a database, the disk is full, a lock was held longer
    /// than the busy timeout, or an op broke a constraint (a token hash stored twice). The
    /// whole batch of [`crate::Store::apply`] is rolled back.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The database did not switch to write-ahead logging (a file system without shared
    /// memory, for instance), so commits would not be as durable as promised.
    #[error("database refused write-ahead logging, journal mode is {mode}")]
    NoWal {
        /// The journal mode SQLite kept.
        mode: String,
    },

    /// The file's schema version is not one this build knows: it was written by a newer
    /// Ampel, or changed by hand.
    #[error("database schema version {found} is unknown, this build knows 0 to {supported}")]
    SchemaVersion {
        /// The version in the file.
        found: i64,
        /// The newest version this build migrates to.
        supported: i64,
    },

    /// A timestamp to store lies outside what the store holds (nanoseconds in 64 bits).
    #[error("timestamp {at} is outside the storable range 1677-09-21 to 2262-04-11")]
    OutOfRange {
        /// The timestamp given.
        at: Timestamp,
    },

    /// A value could not be written as JSON.
    #[error("cannot encode {what} as json: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A stored JSON value does not decode: the file was changed outside Ampel, or by a
    /// version whose types this build does not know.
    #[error("stored {what} does not decode: {source}")]
    Corrupt {
        /// Which value, with the user and key it belongs to.
        what: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}
