//! Settings kept in the database, per user and area: a calendar source, SIP credentials, a
//! password hash. Each area owns its keys and the shape of its JSON values; this module only
//! keeps them in memory, writes them through the writer thread and forgets a user's settings
//! when the user is erased.
//!
//! Values may hold secrets (credentials for another system, a password hash). Nothing here
//! logs them, and no API answer may echo a value without the area removing its secrets first.

use std::collections::BTreeMap;
use std::sync::RwLock;

use ampel_store::{Op, SettingRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::persist::{Persist, PersistError};

/// `(user, area, key)`; the user is empty for a company-wide setting.
type Key = (String, String, String);

/// Every stored setting, read at start and kept in step with the database.
#[derive(Debug, Default)]
pub struct Settings {
    values: RwLock<BTreeMap<Key, String>>,
}

impl Settings {
    /// The settings read from the database at start.
    pub fn new(records: Vec<SettingRecord>) -> Settings {
        let values = records.into_iter().map(|r| ((r.user, r.area, r.key), r.value)).collect();
        Settings { values: RwLock::new(values) }
    }

    /// One setting's value, decoded; `None` when it is not set or no longer decodes (which
    /// is logged).
    pub fn get<T: DeserializeOwned>(&self, user: &str, area: &str, key: &str) -> Option<T> {
        let values = self.values.read().expect("settings lock");
        let text = values.get(&(user.to_owned(), area.to_owned(), key.to_owned()))?;
        decode(user, area, key, text)
    }

    /// Every setting of one area as `(user, key, value)`, ordered by user and key; values
    /// that no longer decode are left out (and logged).
    pub fn area<T: DeserializeOwned>(&self, area: &str) -> Vec<(String, String, T)> {
        let values = self.values.read().expect("settings lock");
        values
            .iter()
            .filter(|((_, a, _), _)| a == area)
            .filter_map(|((user, _, key), text)| {
                Some((user.clone(), key.clone(), decode(user, area, key, text)?))
            })
            .collect()
    }

    /// Every setting of one user in one area as `(key, value)`.
    pub fn of_user<T: DeserializeOwned>(&self, user: &str, area: &str) -> Vec<(String, T)> {
        let values = self.values.read().expect("settings lock");
        values
            .iter()
            .filter(|((u, a, _), _)| u == user && a == area)
            .filter_map(|((_, _, key), text)| Some((key.clone(), decode(user, area, key, text)?)))
            .collect()
    }

    /// Stores a setting and waits until it is committed; it takes effect in memory only then,
    /// so that nobody acts on a setting that is not stored.
    pub async fn put<T: Serialize>(
        &self,
        persist: &Persist,
        user: &str,
        area: &str,
        key: &str,
        value: &T,
    ) -> Result<(), PersistError> {
        let text = serde_json::to_string(value).expect("settings serialise to JSON");
        let record = SettingRecord {
            user: user.to_owned(),
            area: area.to_owned(),
            key: key.to_owned(),
            value: text.clone(),
        };
        persist.submit(vec![Op::PutSetting(record)]).committed().await?;
        let mut values = self.values.write().expect("settings lock");
        values.insert((user.to_owned(), area.to_owned(), key.to_owned()), text);
        Ok(())
    }

    /// Removes a setting, or with an empty key every setting of the user in the area, and
    /// waits until that is committed. Returns whether anything was there.
    pub async fn remove(
        &self,
        persist: &Persist,
        user: &str,
        area: &str,
        key: &str,
    ) -> Result<bool, PersistError> {
        let op =
            Op::RemoveSetting { user: user.to_owned(), area: area.to_owned(), key: key.to_owned() };
        persist.submit(vec![op]).committed().await?;
        let mut values = self.values.write().expect("settings lock");
        let before = values.len();
        values.retain(|(u, a, k), _| !(u == user && a == area && (key.is_empty() || k == key)));
        Ok(values.len() != before)
    }

    /// Forgets every setting of a user whose erasure is committed.
    pub fn forget_user(&self, user: &str) {
        self.values.write().expect("settings lock").retain(|(u, _, _), _| u != user);
    }
}

fn decode<T: DeserializeOwned>(user: &str, area: &str, key: &str, text: &str) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(value) => Some(value),
        Err(e) => {
            // The value is not logged: it may hold a secret.
            tracing::error!(user, area, key, error = %e, "a stored setting does not decode");
            None
        }
    }
}
