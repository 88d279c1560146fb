//! The records the store keeps and the ops that change them.
//!
//! These are plain data shaped for storage, not the server's working types: a user's live
//! presence, sessions and subscriptions are held in memory and never appear here.

use ampel_core::{Fact, Presence, Source};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A user as provisioned by an administrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// `user@domain`; stored lowercase.
    pub id: String,
    /// The display name.
    pub name: String,
    /// The phone number, as the PBX knows it.
    pub phone: Option<String>,
    /// The preferred language, a BCP 47 tag.
    pub lang: Option<String>,
    /// The time zone, an IANA name.
    pub tz: Option<String>,
    /// The groups (teams) the user belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Users who may act for this one and see as much as the user does.
    #[serde(default)]
    pub delegates: Vec<String>,
    /// Viewers who see this user as offline.
    #[serde(default)]
    pub blocked: Vec<String>,
    /// When the user was created.
    pub created: Timestamp,
}

/// A bearer token, known only by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The SHA-256 of the token ([`token_hash`]); the token itself is never stored.
    pub hash: [u8; 32],
    /// The user the token acts for; `None` for an administrator's token.
    pub user: Option<String>,
    /// When the token was issued.
    pub created: Timestamp,
}

/// A user's aggregated presence from some moment on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The user's id.
    pub user: String,
    /// When the presence began.
    pub at: Timestamp,
    /// The presence, complete; who may see which part of it is decided when it is read.
    pub presence: Presence,
}

/// One setting of a user (or of the company, with an empty user id) in one area: a calendar
/// source, SIP credentials, a password hash. The store does not read the value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettingRecord {
    /// The user's id; empty for a company-wide setting.
    pub user: String,
    /// The area, such as `calendar` or `sip`.
    pub area: String,
    /// The key within the area.
    pub key: String,
    /// The value, JSON.
    pub value: String,
}

/// One change to the store. User ids in ops are lowercased before they are stored or compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Inserts the user, or replaces every field of the user with that id.
    PutUser(UserRecord),
    /// Deletes a user with everything kept about them: tokens, facts and history (a
    /// data-protection erasure).
    DeleteUser {
        /// The user's id.
        id: String,
    },
    /// Inserts a token; storing a hash twice fails the batch.
    PutToken(TokenRecord),
    /// Deletes every token of a user.
    RevokeTokens {
        /// The user's id.
        user: String,
    },
    /// Inserts the fact, or replaces the user's fact with the same source and key.
    PutFact {
        /// The user the fact is about.
        user: String,
        /// The fact.
        fact: Fact,
    },
    /// Deletes one fact.
    RemoveFact {
        /// The user the fact is about.
        user: String,
        /// The fact's source.
        source: Source,
        /// The fact's key.
        key: String,
    },
    /// Deletes every fact of one source whose key starts with a prefix (all facts of one
    /// session, say). The prefix is compared exactly: case matters and no character is a
    /// wildcard; an empty prefix deletes every fact of the source.
    RemoveFacts {
        /// The user the facts are about.
        user: String,
        /// The facts' source.
        source: Source,
        /// The start of the keys to delete.
        key_prefix: String,
    },
    /// Inserts or replaces one setting.
    PutSetting(SettingRecord),
    /// Deletes one setting; an empty key deletes every setting of the user in that area.
    RemoveSetting {
        /// The user's id; empty for a company-wide setting.
        user: String,
        /// The area, such as `calendar` or `sip`.
        area: String,
        /// The setting's key within the area.
        key: String,
    },
    /// Appends a history entry.
    AppendHistory(HistoryEntry),
    /// Deletes every history entry, of every user, with `at < before`.
    PurgeHistory {
        /// The cut-off.
        before: Timestamp,
    },
}

/// The SHA-256 of a bearer token: what the store keeps in place of the token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
