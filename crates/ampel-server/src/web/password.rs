//! Passwords for signing in to the web page: Argon2id hashes in the settings table (area
//! `password`), set by the administrator or by the user who knows the current one.
//!
//! Only the PHC string of the hash is stored. Hashing and checking take tens of milliseconds
//! on purpose, so they run on the blocking pool and never on the threads that serve requests.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::App;
use crate::api::user as user_slot;
use crate::auth::{Caller, Principal};
use crate::problem::{Json, Problem};

/// The settings area and key of a user's password hash.
const AREA: &str = "password";
const KEY: &str = "argon2";
/// The shortest and the longest password accepted, in characters.
const MIN_LEN: usize = 8;
const MAX_LEN: usize = 256;
/// The most Argon2 runs at once. Each holds 19 MiB and a core for tens of milliseconds, so a
/// flood of sign-ins waits for a turn here instead of filling the blocking pool and memory.
const HASHING_AT_ONCE: usize = 4;
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHING_AT_ONCE);

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password, 8 to 256 characters.
    password: String,
    /// The current password; required when users change their own password and have one.
    #[serde(default)]
    current: Option<String>,
}

/// Sets a user's password for signing in to the web page. The administrator may set or reset
/// any user's; users may change their own when they give the current one.
#[utoipa::path(put, path = "/api/v1/users/{id}/password", tag = "users", request_body = SetPassword,
    responses((status = 204, description = "Set"), (status = 403, description = "The caller may not do this", body = Problem),
        (status = 404, description = "No such user", body = Problem), (status = 422, description = "A value is not acceptable", body = Problem)))]
pub async fn set(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Json(body): Json<SetPassword>,
) -> Result<StatusCode, Problem> {
    let slot = user_slot(&app, &id)?;
    caller.require_act_for(&slot.id)?;
    check_new(&body.password).map_err(|p| p.field("password"))?;
    if caller == Principal::User(slot.id.clone()) && has_password(&app, &slot.id) {
        let current = body.current.unwrap_or_default();
        if !verify(&app, &slot.id, current).await {
            return Err(Problem::forbidden("the current password is wrong").field("current"));
        }
    }
    let hash = hash(body.password).await?;
    app.settings.put(app.hub.persist(), &slot.id, AREA, KEY, &hash).await.map_err(|e| {
        tracing::error!(user = %slot.id, error = %e, "password not stored");
        Problem::unavailable("the password could not be stored; try again")
    })?;
    tracing::info!(user = %slot.id, "password set");
    Ok(StatusCode::NO_CONTENT)
}

fn check_new(password: &str) -> Result<(), Problem> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(Problem::invalid(format!("must be at least {MIN_LEN} characters")));
    }
    if len > MAX_LEN {
        return Err(Problem::invalid(format!("must be at most {MAX_LEN} characters")));
    }
    if password.chars().any(char::is_control) {
        return Err(Problem::invalid("must not contain control characters"));
    }
    Ok(())
}

fn has_password(app: &App, user: &str) -> bool {
    app.settings.get::<String>(user, AREA, KEY).is_some()
}

/// True when `password` is the user's. A user without a password never matches; the hash is
/// computed anyway so that the answer takes as long as for a user with one.
pub async fn verify(app: &App, user: &str, password: String) -> bool {
    let stored = app.settings.get::<String>(user, AREA, KEY);
    let checked = hashing(move || match stored {
        Some(phc) => PasswordHash::new(&phc)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok()),
        None => {
            let _ = hash_now(&password);
            false
        }
    });
    checked.await.unwrap_or(false)
}

/// Whether a password given to sign in is too long to be anyone's, so that it is refused
/// before it costs a hash.
pub fn too_long(password: &str) -> bool {
    password.chars().count() > MAX_LEN
}

async fn hash(password: String) -> Result<String, Problem> {
    hashing(move || hash_now(&password))
        .await
        .flatten()
        .ok_or_else(|| Problem::internal("the password could not be hashed"))
}

/// Runs Argon2 work on the blocking pool when it is its turn. The turn is held by the work
/// itself, so a request given up by its client does not free a turn while its hash still runs.
async fn hashing<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let turn = HASHING.acquire().await.ok()?;
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(turn);
        result
    })
    .await
    .ok()
}

fn hash_now(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).ok()?;
    let salt = SaltString::encode_b64(&salt).ok()?;
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt).ok()?;
    Some(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash_now("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());
    }

    #[test]
    fn short_long_and_control_passwords_are_refused() {
        assert!(check_new("short").is_err());
        assert!(check_new(&"x".repeat(257)).is_err());
        assert!(check_new("with\u{7}bell!").is_err());
        assert!(check_new("long enough").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flood_of_hashes_runs_a_few_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static RUNNING: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        let runs = (0..24).map(|_| {
            hashing(|| {
                let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
                PEAK.fetch_max(now, Ordering::SeqCst);
                // Long enough for the runs to overlap were they not held back.
                std::thread::sleep(std::time::Duration::from_millis(20));
                RUNNING.fetch_sub(1, Ordering::SeqCst);
            })
        });
        let done = futures_util::future::join_all(runs).await;
        assert_eq!(done.iter().filter(|d| d.is_some()).count(), 24);
        let peak = PEAK.load(Ordering::SeqCst);
        assert!((1..=HASHING_AT_ONCE).contains(&peak), "{peak} hashes ran at once");
    }
}
