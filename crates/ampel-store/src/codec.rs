//! How values are laid out in SQLite columns: timestamps, JSON and user ids.
//!
//! Timestamps are integer nanoseconds since the Unix epoch, so that history sorts and ranges
//! on an index and every timestamp comes back exactly as it went in. Structured values the
//! database never looks inside (facts, presences, lists) are JSON text.
//! This module does not talk to the database; it only converts.

use std::borrow::Cow;

use jiff::Timestamp;
use rusqlite::Row;
use rusqlite::types::Type;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// The column value of a timestamp that is to be stored.
pub(crate) fn nanos(at: Timestamp) -> Result<i64, StoreError> {
    i64::try_from(at.as_nanosecond()).map_err(|_| StoreError::OutOfRange { at })
}

/// The column value of a query bound. Every stored timestamp fits in an `i64`, so a bound
/// beyond that range means the same as the nearest end of it.
pub(crate) fn nanos_clamped(at: Timestamp) -> i64 {
    let n = at.as_nanosecond();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

/// Reads a timestamp column.
pub(crate) fn timestamp(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let n: i64 = row.get(idx)?;
    // Every i64 of nanoseconds is a valid timestamp, so this fails only if jiff's range shrinks.
    Timestamp::from_nanosecond(i128::from(n))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
}

/// Encodes a value as JSON text.
pub(crate) fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode { what, source })
}

/// Decodes JSON text; `what` names the value for the error and is built only on failure.
pub(crate) fn from_json<T: DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt { what: what(), source })
}

/// A user id as stored: lowercase. Ids are nearly always lowercase ASCII already, and that
/// case costs no allocation on the hot path of fact upserts.
pub(crate) fn user_id(id: &str) -> Cow<'_, str> {
    if id.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(id.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_every_nanosecond() {
        let at = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        let n = nanos(at).unwrap();
        assert_eq!(n, 1_700_000_000_123_456_789);
        assert_eq!(Timestamp::from_nanosecond(i128::from(n)).unwrap(), at);
    }

    #[test]
    fn timestamps_beyond_2262_are_refused_but_clamp_as_bounds() {
        let far = Timestamp::MAX;
        assert!(matches!(nanos(far), Err(StoreError::OutOfRange { at }) if at == far));
        assert_eq!(nanos_clamped(far), i64::MAX);
        assert_eq!(nanos_clamped(Timestamp::MIN), i64::MIN);
    }

    #[test]
    fn user_ids_are_lowercased_without_copying_when_already_lower() {
        assert!(matches!(user_id("alice@example.com"), Cow::Borrowed("alice@example.com")));
        assert_eq!(user_id("Alice@Example.COM"), "alice@example.com");
        assert_eq!(user_id("JÖRG@example.de"), "jörg@example.de");
    }
}
