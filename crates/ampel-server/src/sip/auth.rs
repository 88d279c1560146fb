//! Digest authentication of PUBLISH and SUBSCRIBE (RFC 3261 §22, RFC 8760) with per-user SIP
//! credentials kept in the settings table (area `sip`, key `credentials`), set by an
//! administrator through `PUT /api/v1/users/{id}/sip-credentials`.
//!
//! The stored value holds the digest hashes (`HA1`) for MD5 and SHA-256, never the password.
//! A challenge offers SHA-256 first and MD5 second, as RFC 8760 §2.4 asks.
//!
//! Each nonce may be used with rising nonce counts only (RFC 7616 §3.4.5): [`NonceCounts`]
//! keeps the last count of every nonce that proved a password, for as long as the nonce
//! lives, so a captured request sent again is challenged afresh instead of accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ampel_sip::digest::{self, Algorithm, Credentials, NONCE_LIFETIME_S};
use ampel_sip::message::{Request, Response};
use serde::{Deserialize, Serialize};

use super::Sip;

/// The settings area and key.
pub const AREA: &str = "sip";
/// The key of a user's credentials in [`AREA`].
pub const KEY: &str = "credentials";

/// A user's stored SIP credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredentials {
    /// The digest user name the phone sends.
    pub username: String,
    /// The realm the hashes were made for.
    pub realm: String,
    /// `MD5(username:realm:password)`.
    pub ha1_md5: String,
    /// `SHA-256(username:realm:password)`.
    pub ha1_sha256: String,
}

impl StoredCredentials {
    /// The hashes for a password.
    pub fn new(username: &str, realm: &str, password: &str) -> StoredCredentials {
        StoredCredentials {
            username: username.to_owned(),
            realm: realm.to_owned(),
            ha1_md5: digest::ha1(Algorithm::Md5, username, realm, password),
            ha1_sha256: digest::ha1(Algorithm::Sha256, username, realm, password),
        }
    }
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A user proved who they are.
    Authenticated(String),
    /// Nobody asked: the From address is taken at its word (authentication is off and the
    /// user has no SIP credentials).
    Asserted(String),
}

impl Identity {
    /// The user, `user@domain`.
    pub fn user(&self) -> &str {
        match self {
            Identity::Authenticated(u) | Identity::Asserted(u) => u,
        }
    }
}

/// Works out who sent `request`, or the response that asks them to prove it (401) or refuses
/// them (403). `claimed` is the From address of record, `from` the address the request came
/// from: with authentication off, only a trusted network's word is taken.
pub fn identify(
    sip: &Sip,
    request: &Request,
    claimed: &str,
    from: IpAddr,
) -> Result<Identity, Response> {
    let settings = &sip.app.settings;
    let has_credentials = settings.get::<StoredCredentials>(claimed, AREA, KEY).is_some();
    let header = request.header("authorization").or_else(|| request.header("proxy-authorization"));
    let required = sip.settings.authenticate || !sip.settings.trusts(from);
    if !required && !has_credentials && header.is_none() {
        return Ok(Identity::Asserted(claimed.to_owned()));
    }
    let now = sip.app.hub.clock.now().as_second();
    let Some(given) = header.and_then(Credentials::parse) else {
        return Err(challenge(sip, request, now, false));
    };
    let Some((user, stored)) = find(sip, &given.username) else {
        return Err(request.response(403, "Forbidden", None));
    };
    match digest::nonce_fresh(sip.secret(), &given.nonce, now) {
        None => return Err(challenge(sip, request, now, false)),
        Some(false) => return Err(challenge(sip, request, now, true)),
        Some(true) => {}
    }
    let offered = |a: Algorithm| sip.settings.algorithms.iter().any(|o| o.algorithm() == a);
    let ha1 = match given.algorithm() {
        Some(Algorithm::Md5) if offered(Algorithm::Md5) => &stored.ha1_md5,
        Some(Algorithm::Sha256) if offered(Algorithm::Sha256) => &stored.ha1_sha256,
        _ => return Err(challenge(sip, request, now, false)),
    };
    if stored.realm != sip.settings.realm || !given.verify(&request.method, ha1) {
        tracing::debug!(user = %user, "sip digest does not match");
        return Err(request.response(403, "Forbidden", None));
    }
    // Counted only once the password is proven, so that nobody else can fill the table.
    let issued = digest::nonce_issued(sip.secret(), &given.nonce).unwrap_or(now);
    match given.count().map(|nc| sip.nonces.admit(&given.nonce, nc, issued, now)) {
        Some(Count::Rising) => Ok(Identity::Authenticated(user)),
        Some(Count::Full) => {
            tracing::warn!("sip nonce table is full");
            Err(request.response(503, "Service Unavailable", None).with("retry-after", "5"))
        }
        None | Some(Count::Repeated) => {
            tracing::debug!(user = %user, "sip nonce count repeated");
            Err(challenge(sip, request, now, false))
        }
    }
}

/// The most nonces whose counts are kept at once; a nonce lives five minutes, so this is far
/// above what the phones of a company authenticate with in that time.
const MAX_NONCES: usize = 100_000;

/// The last nonce count used with each live nonce.
#[derive(Debug, Default)]
pub struct NonceCounts {
    /// By nonce: the last count and when the nonce was issued (seconds).
    map: Mutex<HashMap<String, (u32, i64)>>,
}

/// What became of a nonce count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Higher than any count used with the nonce before: the request is new.
    Rising,
    /// Used before, or lower: a replay.
    Repeated,
    /// The table is full of live nonces.
    Full,
}

impl NonceCounts {
    /// Records `nc` for `nonce` (issued at `issued`) if it is higher than the last one.
    pub fn admit(&self, nonce: &str, nc: u32, issued: i64, now: i64) -> Count {
        let mut map = self.map.lock().expect("nonce lock");
        if let Some((last, _)) = map.get_mut(nonce) {
            if nc <= *last {
                return Count::Repeated;
            }
            *last = nc;
            return Count::Rising;
        }
        if nc == 0 {
            return Count::Repeated;
        }
        if map.len() >= MAX_NONCES {
            map.retain(|_, (_, at)| now - *at <= NONCE_LIFETIME_S);
            if map.len() >= MAX_NONCES {
                return Count::Full;
            }
        }
        map.insert(nonce.to_owned(), (nc, issued));
        Count::Rising
    }
}

/// The user whose stored user name is `username`.
fn find(sip: &Sip, username: &str) -> Option<(String, StoredCredentials)> {
    sip.app
        .settings
        .area::<StoredCredentials>(AREA)
        .into_iter()
        .find(|(_, key, c)| key == KEY && c.username == username)
        .map(|(user, _, c)| (user, c))
}

fn challenge(sip: &Sip, request: &Request, now: i64, stale: bool) -> Response {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).expect("the operating system provides randomness");
    let nonce = digest::nonce(sip.secret(), now, u64::from_be_bytes(salt));
    let realm = &sip.settings.realm;
    let mut response = request.response(401, "Unauthorized", Some(&super::random_token()));
    for algorithm in &sip.settings.algorithms {
        let offer = digest::challenge(realm, &nonce, algorithm.algorithm(), stale);
        response = response.with("www-authenticate", offer);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_count_is_taken_once_and_only_rising() {
        let counts = NonceCounts::default();
        assert_eq!(counts.admit("n1", 1, 100, 100), Count::Rising);
        assert_eq!(counts.admit("n1", 1, 100, 101), Count::Repeated);
        assert_eq!(counts.admit("n1", 3, 100, 102), Count::Rising);
        assert_eq!(counts.admit("n1", 2, 100, 103), Count::Repeated);
        assert_eq!(counts.admit("n2", 1, 100, 103), Count::Rising);
        assert_eq!(counts.admit("n3", 0, 100, 103), Count::Repeated);
    }

    #[test]
    fn a_full_table_makes_room_from_expired_nonces_only() {
        let counts = NonceCounts::default();
        for i in 0..MAX_NONCES {
            assert_eq!(counts.admit(&format!("n{i}"), 1, 0, 0), Count::Rising);
        }
        assert_eq!(counts.admit("late", 1, 10, 10), Count::Full);
        let later = NONCE_LIFETIME_S + 1;
        assert_eq!(counts.admit("late", 1, later, later), Count::Rising);
        assert_eq!(counts.map.lock().unwrap().len(), 1);
    }
}
