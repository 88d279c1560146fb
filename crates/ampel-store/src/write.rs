//! Applying a batch of ops in one transaction.
//!
//! This is the hot path: the server pushes tens of thousands of fact upserts per second
//! through here in batches of hundreds, so every statement comes from the connection's cache
//! of prepared statements. Validation of what an op means is the server's job; this module
//! only writes.

use ampel_core::{Fact, Source};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::codec::{nanos, nanos_clamped, to_json, user_id};
use crate::{HistoryEntry, Op, StoreError, TokenRecord, UserRecord};

/// Applies all ops or none of them.
pub(crate) fn apply<'a>(
    conn: &mut Connection,
    ops: impl IntoIterator<Item = &'a Op>,
) -> Result<(), StoreError> {
    let mut ops = ops.into_iter().peekable();
    if ops.peek().is_none() {
        return Ok(());
    }

    // Immediate: take the write lock up front, so that a reader elsewhere cannot make the
    // upgrade from a read transaction fail half way through the batch.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for op in ops {
        apply_one(&tx, op)?;
    }
    // An early return above drops `tx`, which rolls back every op applied before the failure.
    tx.commit()?;
    Ok(())
}

fn apply_one(tx: &Transaction<'_>, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::PutUser(user) => put_user(tx, user),
        Op::DeleteUser { id } => delete_user(tx, id),
        Op::PutToken(token) => put_token(tx, token),
        Op::RevokeTokens { user } => {
            let sql = "DELETE FROM tokens WHERE user_id = ?1";
            tx.prepare_cached(sql)?.execute([user_id(user)])?;
            Ok(())
        }
        Op::PutFact { user, fact } => put_fact(tx, user, fact),
        Op::RemoveFact { user, source, key } => remove_fact(tx, user, *source, key),
        Op::RemoveFacts { user, source, key_prefix } => remove_facts(tx, user, *source, key_prefix),
        Op::PutSetting(setting) => {
            let sql = "INSERT OR REPLACE INTO settings (user_id, area, key, value)
                       VALUES (?1, ?2, ?3, ?4)";
            let user = user_id(&setting.user);
            tx.prepare_cached(sql)?.execute(params![
                user,
                setting.area,
                setting.key,
                setting.value
            ])?;
            Ok(())
        }
        Op::RemoveSetting { user, area, key } => {
            let user = user_id(user);
            if key.is_empty() {
                let sql = "DELETE FROM settings WHERE user_id = ?1 AND area = ?2";
                tx.prepare_cached(sql)?.execute(params![user, area])?;
            } else {
                let sql = "DELETE FROM settings WHERE user_id = ?1 AND area = ?2 AND key = ?3";
                tx.prepare_cached(sql)?.execute(params![user, area, key])?;
            }
            Ok(())
        }
        Op::AppendHistory(entry) => append_history(tx, entry),
        Op::PurgeHistory { before } => {
            // A cut-off is a bound, not a stored value: one past 2262 simply means everything.
            let sql = "DELETE FROM history WHERE at < ?1";
            tx.prepare_cached(sql)?.execute([nanos_clamped(*before)])?;
            Ok(())
        }
    }
}

fn put_user(tx: &Transaction<'_>, user: &UserRecord) -> Result<(), StoreError> {
    let sql = "INSERT OR REPLACE INTO users
               (id, name, phone, lang, tz, groups, delegates, blocked, created)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    let args = params![
        user_id(&user.id),
        user.name,
        user.phone,
        user.lang,
        user.tz,
        to_json("groups", &user.groups)?,
        to_json("delegates", &user.delegates)?,
        to_json("blocked", &user.blocked)?,
        nanos(user.created)?,
    ];
    tx.prepare_cached(sql)?.execute(args)?;
    Ok(())
}

fn delete_user(tx: &Transaction<'_>, id: &str) -> Result<(), StoreError> {
    let id = user_id(id);
    for sql in [
        "DELETE FROM users WHERE id = ?1",
        "DELETE FROM tokens WHERE user_id = ?1",
        "DELETE FROM facts WHERE user_id = ?1",
        "DELETE FROM history WHERE user_id = ?1",
        "DELETE FROM settings WHERE user_id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([&id])?;
    }
    Ok(())
}

fn put_token(tx: &Transaction<'_>, token: &TokenRecord) -> Result<(), StoreError> {
    let sql = "INSERT INTO tokens (hash, user_id, created) VALUES (?1, ?2, ?3)";
    let user = token.user.as_deref().map(user_id);
    tx.prepare_cached(sql)?.execute(params![token.hash, user, nanos(token.created)?])?;
    Ok(())
}

fn put_fact(tx: &Transaction<'_>, user: &str, fact: &Fact) -> Result<(), StoreError> {
    let sql = "INSERT INTO facts (user_id, source, fact_key, fact) VALUES (?1, ?2, ?3, ?4)
               ON CONFLICT (user_id, source, fact_key) DO UPDATE SET fact = excluded.fact";
    let json = to_json("fact", fact)?;
    let args = params![user_id(user), fact.source.as_str(), fact.key, json];
    tx.prepare_cached(sql)?.execute(args)?;
    Ok(())
}

fn remove_fact(
    tx: &Transaction<'_>,
    user: &str,
    source: Source,
    key: &str,
) -> Result<(), StoreError> {
    let sql = "DELETE FROM facts WHERE user_id = ?1 AND source = ?2 AND fact_key = ?3";
    tx.prepare_cached(sql)?.execute(params![user_id(user), source.as_str(), key])?;
    Ok(())
}

fn remove_facts(
    tx: &Transaction<'_>,
    user: &str,
    source: Source,
    prefix: &str,
) -> Result<(), StoreError> {
    // Not LIKE: it ignores ASCII case and treats `%` and `_` in a key as wildcards.
    let sql = "DELETE FROM facts WHERE user_id = ?1 AND source = ?2
               AND substr(fact_key, 1, length(?3)) = ?3";
    tx.prepare_cached(sql)?.execute(params![user_id(user), source.as_str(), prefix])?;
    Ok(())
}

fn append_history(tx: &Transaction<'_>, entry: &HistoryEntry) -> Result<(), StoreError> {
    let sql = "INSERT INTO history (user_id, at, presence) VALUES (?1, ?2, ?3)";
    let presence = to_json("presence", &entry.presence)?;
    let args = params![user_id(&entry.user), nanos(entry.at)?, presence];
    tx.prepare_cached(sql)?.execute(args)?;
    Ok(())
}
