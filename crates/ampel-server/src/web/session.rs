//! Browser sessions: a random id in an HttpOnly cookie, known to the server only by its hash,
//! and the CSRF token that every state-changing request of the page must carry.
//!
//! A session authenticates like a bearer token (see [`crate::auth::Caller`]), so the page uses
//! the same REST and push endpoints as every other client. Sessions are kept in the settings
//! table, so a restarted server still knows them and an open page reconnects by itself.
//! The CSRF token is derived from the session id and never stored: whoever holds the cookie's
//! value can compute it, whoever only has the database cannot. This module does not decide
//! what a principal may do; that stays with the handlers.

use std::sync::Arc;

use ampel_store::token_hash;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::Principal;
use crate::persist::PersistError;
use crate::problem::Problem;

/// The cookie's name.
pub const COOKIE: &str = "ampel_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub const LIFETIME: SignedDuration = SignedDuration::from_hours(7 * 24);
/// The settings area of sessions; company-wide, keyed by the hash of the session id.
const AREA: &str = "web-session";
/// The most live sessions one principal keeps. Signing in once more ends the oldest, so that a
/// script signing in over and over cannot grow the table (and the scan of it) without bound.
const MAX_SESSIONS: usize = 32;

/// What is stored about a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// The user, or none for the administrator.
    user: Option<String>,
    /// When the session ends.
    expires: Timestamp,
}

/// Starts a session for `principal` and returns its id, the cookie's value.
pub async fn start(app: &App, principal: &Principal) -> Result<String, PersistError> {
    let id = crate::auth::new_token();
    let user = match principal {
        Principal::Admin => None,
        Principal::User(user) => Some(user.clone()),
    };
    let now = app.hub.clock.now();
    let expires = now.saturating_add(LIFETIME).unwrap_or(now);
    let stored = Stored { user, expires };
    let key = key_of(&id);
    app.settings.put(app.hub.persist(), "", AREA, &key, &stored).await?;
    purge(app, now, &stored.user, &key).await;
    Ok(id)
}

/// Ends a session; an unknown id is no error.
pub async fn end(app: &App, id: &str) -> Result<(), PersistError> {
    app.settings.remove(app.hub.persist(), "", AREA, &key_of(id)).await.map(|_| ())
}

/// Ends every session of a user, whose tokens were just revoked: a lost laptop or a leaving
/// employee signs out of the page too.
pub async fn end_all(app: &App, user: &str) -> Result<(), PersistError> {
    let keys: Vec<String> = app
        .settings
        .area::<Stored>(AREA)
        .into_iter()
        .filter(|(_, _, s)| s.user.as_deref() == Some(user))
        .map(|(_, key, _)| key)
        .collect();
    for key in keys {
        app.settings.remove(app.hub.persist(), "", AREA, &key).await?;
    }
    Ok(())
}

/// The principal of a live session. A session of a user who has been erased has ended too.
pub fn principal(app: &App, id: &str) -> Option<Principal> {
    let stored: Stored = app.settings.get("", AREA, &key_of(id))?;
    if stored.expires <= app.hub.clock.now() {
        return None;
    }
    match stored.user {
        None => Some(Principal::Admin),
        Some(user) => app.hub.user(&user).map(|_| Principal::User(user)),
    }
}

/// The CSRF token of a session.
pub fn csrf_of(id: &str) -> String {
    hex(&token_hash(&format!("ampel-csrf:{id}")))
}

/// The session id in the request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// Authenticates a request by its session cookie. Requests from another site are refused, and
/// every request that may change something must carry the session's CSRF token.
pub fn authenticate(app: &Arc<App>, parts: &Parts, id: &str) -> Result<Principal, Problem> {
    let principal = principal(app, id)
        .ok_or_else(|| Problem::unauthorized("the session has ended; sign in again"))?;
    same_origin(&parts.headers)?;
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let presented = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !safe && presented != Some(csrf_of(id).as_str()) {
        return Err(Problem::forbidden(format!("the {CSRF_HEADER} header is missing or wrong")));
    }
    Ok(principal)
}

/// Refuses a request whose `Origin` names another host than the one it was sent to. Browsers
/// send `Origin` with every cross-site request that could change something and with every
/// WebSocket handshake, so a page elsewhere cannot act with the user's cookie.
pub fn same_origin(headers: &HeaderMap) -> Result<(), Problem> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(Problem::forbidden("requests from another site are not accepted"))
    }
}

/// The `Set-Cookie` value that starts a session in the browser.
pub fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    let max_age = LIFETIME.as_secs();
    cookie_header(&format!("{COOKIE}={id}; Max-Age={max_age}"), secure)
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header(&format!("{COOKIE}=; Max-Age=0"), secure)
}

fn cookie_header(start: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!("{start}; Path=/; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::try_from(value).expect("the cookie is ASCII")
}

/// True when the page is served over HTTPS: configured so, or a proxy in front says so.
pub fn is_secure(configured: bool, headers: &HeaderMap) -> bool {
    configured
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Removes the sessions that expired, and those of `user` beyond the newest [`MAX_SESSIONS`]
/// (counting the one just started, `keep`).
async fn purge(app: &App, now: Timestamp, user: &Option<String>, keep: &str) {
    let mut gone = Vec::new();
    let mut theirs = Vec::new();
    for (_, key, s) in app.settings.area::<Stored>(AREA) {
        if s.expires <= now {
            gone.push(key);
        } else if s.user == *user && key != keep {
            theirs.push((s.expires, key));
        }
    }
    theirs.sort_unstable_by(|a, b| b.cmp(a));
    gone.extend(theirs.into_iter().skip(MAX_SESSIONS - 1).map(|(_, key)| key));
    for key in gone {
        if let Err(e) = app.settings.remove(app.hub.persist(), "", AREA, &key).await {
            tracing::warn!(error = %e, "ended session not removed");
        }
    }
}

fn key_of(id: &str) -> String {
    hex(&token_hash(id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; ampel_session=xyz; b=2"));
        assert_eq!(cookie(&headers).as_deref(), Some("xyz"));
        headers.insert(header::COOKIE, HeaderValue::from_static("ampel_session="));
        assert_eq!(cookie(&headers), None);
    }

    #[test]
    fn a_request_from_another_site_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("ampel.example.com"));
        assert!(same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://ampel.example.com"));
        assert!(same_origin(&headers).is_ok());
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(same_origin(&headers).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_https() {
        let plain = set_cookie("abc", false);
        assert_eq!(
            plain.to_str().unwrap(),
            "ampel_session=abc; Max-Age=604800; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie("abc", true).to_str().unwrap().ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_secure(false, &headers));
        assert!(!is_secure(false, &HeaderMap::new()));
    }

    #[test]
    fn the_csrf_token_differs_from_the_session_key() {
        assert_ne!(csrf_of("abc"), key_of("abc"));
        assert_eq!(csrf_of("abc").len(), 64);
    }
}
