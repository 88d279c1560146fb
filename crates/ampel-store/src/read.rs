//! Reading the store back: everything at start-up, and one user's history on demand.
//!
//! Reads decode what [`crate::write`] encoded and report a value that does not decode as
//! [`StoreError::Corrupt`] rather than skipping it, because a silently lost user or fact
//! is worse than a start-up that stops and says why.

use jiff::Timestamp;
use rusqlite::{Connection, Params, Row, params};

use crate::codec::{from_json, nanos_clamped, timestamp, user_id};
use crate::{HistoryEntry, SettingRecord, StoreError, TokenRecord, UserRecord};

pub(crate) fn users(conn: &Connection) -> Result<Vec<UserRecord>, StoreError> {
    let sql = "SELECT id, name, phone, lang, tz, groups, delegates, blocked, created
               FROM users ORDER BY id";
    collect(conn, sql, [], user_from_row)
}

fn user_from_row(row: &Row<'_>) -> Result<UserRecord, StoreError> {
    let id: String = row.get(0)?;
    let list = |idx: usize, field: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.get(idx)?;
        from_json(&text, || format!("{field} of user {id}"))
    };

    Ok(UserRecord {
        name: row.get(1)?,
        phone: row.get(2)?,
        lang: row.get(3)?,
        tz: row.get(4)?,
        groups: list(5, "groups")?,
        delegates: list(6, "delegates")?,
        blocked: list(7, "blocked")?,
        created: timestamp(row, 8)?,
        id,
    })
}

pub(crate) fn tokens(conn: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
    let sql = "SELECT hash, user_id, created FROM tokens ORDER BY user_id, hash";
    collect(conn, sql, [], |row| {
        Ok(TokenRecord { hash: row.get(0)?, user: row.get(1)?, created: timestamp(row, 2)? })
    })
}

pub(crate) fn settings(conn: &Connection) -> Result<Vec<SettingRecord>, StoreError> {
    let sql = "SELECT user_id, area, key, value FROM settings ORDER BY user_id, area, key";
    collect(conn, sql, [], |row| {
        Ok(SettingRecord {
            user: row.get(0)?,
            area: row.get(1)?,
            key: row.get(2)?,
            value: row.get(3)?,
        })
    })
}

pub(crate) fn facts(conn: &Connection) -> Result<Vec<(String, ampel_core::Fact)>, StoreError> {
    let sql = "SELECT user_id, source, fact_key, fact FROM facts
               ORDER BY user_id, source, fact_key";
    collect(conn, sql, [], |row| {
        let user: String = row.get(0)?;
        let text: String = row.get(3)?;
        let fact = from_json(&text, || {
            let source = row.get::<_, String>(1).unwrap_or_default();
            let key = row.get::<_, String>(2).unwrap_or_default();
            format!("fact {source}/{key} of user {user}")
        })?;
        Ok((user, fact))
    })
}

pub(crate) fn history(
    conn: &Connection,
    user: &str,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let sql = "SELECT id, at, presence FROM history
               WHERE user_id = ?1 AND at >= ?2 AND at < ?3
               ORDER BY at, id LIMIT ?4";
    let user = user_id(user);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let args = params![user, nanos_clamped(from), nanos_clamped(to), limit];

    collect(conn, sql, args, |row| {
        let id: i64 = row.get(0)?;
        let text: String = row.get(2)?;
        Ok(HistoryEntry {
            user: user.to_string(),
            at: timestamp(row, 1)?,
            presence: from_json(&text, || format!("history entry {id} of user {user}"))?,
        })
    })
}

/// Each user's newest history entry. It walks the users, not the history: for every user the
/// (user_id, at) index finds the newest entry in one search, so start-up costs the same with a
/// day of history as with a month of it. Walking the history instead ran the search once per
/// entry.
const LATEST_HISTORY: &str = "SELECT h.id, h.user_id, h.at, h.presence FROM users u
    JOIN history h ON h.id = (SELECT id FROM history WHERE user_id = u.id
                              ORDER BY at DESC, id DESC LIMIT 1)
    ORDER BY u.id";

pub(crate) fn latest_history(conn: &Connection) -> Result<Vec<HistoryEntry>, StoreError> {
    collect(conn, LATEST_HISTORY, [], |row| {
        let id: i64 = row.get(0)?;
        let user: String = row.get(1)?;
        let text: String = row.get(3)?;
        Ok(HistoryEntry {
            at: timestamp(row, 2)?,
            presence: from_json(&text, || format!("history entry {id} of user {user}"))?,
            user,
        })
    })
}

/// Runs a query and decodes every row it yields.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    args: impl Params,
    mut decode: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps SQLite plans for `sql`, one line each.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map([], |row| row.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn the_newest_entries_are_found_per_user_without_reading_the_whole_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let steps = plan(&conn, LATEST_HISTORY);
        let scans: Vec<_> = steps.iter().filter(|s| s.starts_with("SCAN")).collect();
        assert_eq!(scans.len(), 1, "plan: {steps:?}");
        assert!(scans[0].starts_with("SCAN u "), "only the users are walked; plan: {steps:?}");
        assert!(
            steps.iter().any(|s| s.contains("INDEX history_by_user (user_id=?)")),
            "plan: {steps:?}"
        );
    }
}
