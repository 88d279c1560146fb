//! Bearer tokens: who is calling.
//!
//! Tokens are random, shown once, and stored only as SHA-256 hashes; a lookup hashes the
//! presented token and finds its principal in memory. Browsers cannot set headers on
//! `EventSource` and WebSocket requests, so the push endpoints also accept the token as the
//! `access_token` query parameter (RFC 6750 §2.3); the request log never records query strings.
//! The web page's session cookie counts as a token too (see `web::session`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ampel_store::{TokenRecord, token_hash};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::App;
use crate::problem::Problem;

/// Who a request acts for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The administrator.
    Admin,
    /// A user, `user@domain`.
    User(String),
}

impl Principal {
    /// True for the administrator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// True when this principal may act for `user`: the user themself or the administrator.
    pub fn may_act_for(&self, user: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::User(id) => id == user,
        }
    }

    /// Fails with 403 unless this is the administrator.
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("only an administrator may do this"))
        }
    }

    /// Fails with 403 unless this principal may act for `user`, for a change.
    pub fn require_act_for(&self, user: &str) -> Result<(), Problem> {
        if self.may_act_for(user) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("you may not change {user}")))
        }
    }

    /// Fails with 403 unless this principal may act for `user`, for reading what only the user
    /// and the administrator see (their settings, not their presence).
    pub fn require_read_for(&self, user: &str) -> Result<(), Problem> {
        if self.may_act_for(user) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("you may not see the settings of {user}")))
        }
    }
}

/// The tokens the server accepts, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: RwLock<HashMap<[u8; 32], Principal>>,
}

impl Tokens {
    /// Tokens loaded from the store.
    pub fn from_records(records: Vec<TokenRecord>) -> Tokens {
        let by_hash = records
            .into_iter()
            .map(|r| (r.hash, r.user.map_or(Principal::Admin, Principal::User)))
            .collect();
        Tokens { by_hash: RwLock::new(by_hash) }
    }

    /// Accepts a new token from now on.
    pub fn insert(&self, hash: [u8; 32], principal: Principal) {
        self.by_hash.write().expect("token lock").insert(hash, principal);
    }

    /// Stops accepting every token of `user`.
    pub fn revoke(&self, user: &str) {
        self.by_hash
            .write()
            .expect("token lock")
            .retain(|_, p| *p != Principal::User(user.to_owned()));
    }

    /// True when no administrator token exists yet.
    pub fn has_admin(&self) -> bool {
        self.by_hash.read().expect("token lock").values().any(Principal::is_admin)
    }

    /// Who holds `token`.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.by_hash.read().expect("token lock").get(&token_hash(token)).cloned()
    }
}

/// Makes a new random token: `ampel_` and 43 characters of URL-safe base64 (256 bits).
pub fn new_token() -> String {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).expect("the operating system provides randomness");
    let mut out = String::from("ampel_");
    base64url(&raw, &mut out);
    out
}

fn base64url(bytes: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
}

/// The caller, from `Authorization: Bearer` or the `access_token` query parameter.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Caller, Problem> {
        // The web page authenticates with its session cookie and a CSRF header instead.
        if parts.headers.get(header::AUTHORIZATION).is_none()
            && let Some(id) = crate::web::session::cookie(&parts.headers)
            && (crate::web::session::principal(app, &id).is_some() || !has_query_token(parts))
        {
            return crate::web::session::authenticate(app, parts, &id).map(Caller);
        }
        let token = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => bearer(value.as_bytes())?,
            None if is_push(parts) => query_token(parts.uri.query())
                .ok_or_else(|| Problem::unauthorized("a bearer token is required"))?,
            None => return Err(Problem::unauthorized("a bearer token is required")),
        };
        app.tokens
            .principal(&token)
            .map(Caller)
            .ok_or_else(|| Problem::unauthorized("the token is not valid"))
    }
}

/// The token of an `Authorization: Bearer` header (RFC 6750 §2.1; the scheme is
/// case-insensitive).
fn bearer(value: &[u8]) -> Result<String, Problem> {
    let malformed = || Problem::unauthorized("the Authorization header must be `Bearer <token>`");
    let value = std::str::from_utf8(value).map_err(|_| malformed())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !token.is_ascii() {
        return Err(malformed());
    }
    Ok(token.to_owned())
}

/// Only the push endpoints take a token in the query: tokens in URLs end up in browser
/// histories and proxy logs, so nothing else accepts them there.
fn is_push(parts: &Parts) -> bool {
    // Nested routers see the path without its prefix; the original one names the endpoint.
    let original = parts.extensions.get::<axum::extract::OriginalUri>().map(|u| u.path());
    let path = original.unwrap_or(parts.uri.path());
    path == "/api/v1/stream" || path == "/api/v1/ws"
}

fn has_query_token(parts: &Parts) -> bool {
    is_push(parts) && query_token(parts.uri.query()).is_some()
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| pair.strip_prefix("access_token=")).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), "ampel_".len() + 43);
        assert!(
            a["ampel_".len()..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn only_the_admin_and_the_user_may_act_for_a_user() {
        let alice = Principal::User("alice@example.com".into());
        assert!(alice.may_act_for("alice@example.com"));
        assert!(!alice.may_act_for("bob@example.com"));
        assert!(Principal::Admin.may_act_for("bob@example.com"));
    }
}
