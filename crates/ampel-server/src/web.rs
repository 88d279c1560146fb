//! The web page: the presence board, the user's own status, the explanation and the policy
//! page, served from files compiled into the binary (no build step), plus the few endpoints
//! only the page needs: sign-in, sign-out, who is signed in, and the policy in plain words.
//!
//! Everything else the page does goes through the REST and push endpoints under `/api/v1`,
//! authenticated by the session cookie (see [`session`]). Nothing here decides presence or
//! visibility; the page shows what those endpoints return.

pub mod password;
pub mod session;

use std::sync::Arc;

use ampel_core::Policy;
use ampel_core::policy::render::{Lang, render};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::{Caller, Principal};
use crate::problem::{Json, Problem, Query};

/// The `[web]` section of the server configuration file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Marks the session cookie `Secure` even when no proxy sends `X-Forwarded-Proto: https`;
    /// set it when Ampel itself is reached over HTTPS.
    #[serde(default)]
    pub secure_cookies: bool,
}

const INDEX: &str = include_str!("../web/index.html");
const SIGNIN: &str = include_str!("../web/signin.html");
const APP_JS: &str = include_str!("../web/app.js");
const APP_CSS: &str = include_str!("../web/app.css");
const ICON: &str = include_str!("../web/icon.svg");

/// The page is allowed to load its own files and talk to its own server, nothing else; an
/// injected script tag could not run even if it reached the page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes outside `/api/v1`.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(board))
        .route("/signin", get(sign_in_page))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        .route("/web/signin", post(sign_in))
        .route("/web/signout", post(sign_out))
        .route("/web/session", get(who))
        .route("/web/policy", get(policy))
        .route("/web/policy/check", post(check_policy))
}

/// The routes the page adds under `/api/v1`.
pub fn api_routes() -> Router<Arc<App>> {
    Router::new().route("/users/{id}/password", put(password::set))
}

/// The board, or the sign-in page for a browser without a session.
async fn board(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match session::cookie(&headers).and_then(|id| session::principal(&app, &id)) {
        Some(_) => page(INDEX),
        None => Redirect::to("/signin").into_response(),
    }
}

/// The sign-in page, or the board for a browser that is signed in already.
async fn sign_in_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match session::cookie(&headers).and_then(|id| session::principal(&app, &id)) {
        Some(_) => Redirect::to("/").into_response(),
        None => page(SIGNIN),
    }
}

fn page(html: &'static str) -> Response {
    let mut response = asset("text/html; charset=utf-8", html);
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body).into_response()
}

/// Credentials for signing in: an address and a password, or a token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Who is signed in, and the token the page sends with every change.
#[derive(Debug, Serialize)]
struct Signed {
    /// The user, absent for the administrator.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    name: String,
    admin: bool,
    csrf: String,
}

/// Signs in and sets the session cookie. The body is JSON, which a form on another site cannot
/// send without the browser asking this server first, and a foreign `Origin` is refused.
async fn sign_in(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<Response, Problem> {
    session::same_origin(&headers)?;
    let principal = match (body.token, body.user, body.password) {
        (Some(token), _, _) => app
            .tokens
            .principal(token.trim())
            .ok_or_else(|| Problem::unauthorized("this token is not valid").field("token"))?,
        (None, Some(user), Some(password)) => by_password(&app, &user, password).await?,
        (None, None, _) => {
            return Err(Problem::invalid("enter your address or a token").field("user"));
        }
        (None, Some(_), None) => {
            return Err(Problem::invalid("enter your password").field("password"));
        }
    };
    let id = session::start(&app, &principal).await.map_err(|e| {
        tracing::error!(error = %e, "session not stored");
        Problem::unavailable("the sign-in could not be stored; try again")
    })?;
    let secure = session::is_secure(app.web.secure_cookies, &headers);
    let signed = signed(&app, &principal, &id);
    let mut response = axum::Json(signed).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::set_cookie(&id, secure));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// FIXME: failed sign-ins are not limited per address or per client. Argon2 makes each guess
// cost tens of milliseconds of server time, but a delay or lockout after repeated failures is
// still missing; it needs a place to count failures that survives a restart.
async fn by_password(app: &App, user: &str, password: String) -> Result<Principal, Problem> {
    let id = user.trim().to_ascii_lowercase();
    if id.is_empty() {
        return Err(Problem::invalid("enter your address").field("user"));
    }
    if password::too_long(&password) {
        return Err(Problem::unauthorized("the address or the password is wrong").field("password"));
    }
    let known = app.hub.user(&id).is_some();
    if password::verify(app, &id, password).await && known {
        tracing::info!(user = %id, "signed in");
        Ok(Principal::User(id))
    } else {
        tracing::info!("sign-in refused");
        Err(Problem::unauthorized("the address or the password is wrong").field("password"))
    }
}

fn signed(app: &App, principal: &Principal, id: &str) -> Signed {
    let (user, name) = match principal {
        Principal::Admin => (None, "Administrator".to_owned()),
        Principal::User(user) => {
            let name = app.hub.user(user).map_or_else(|| user.clone(), |s| s.record().name.clone());
            (Some(user.clone()), name)
        }
    };
    Signed { user, name, admin: principal.is_admin(), csrf: session::csrf_of(id) }
}

/// Ends the session; needs the CSRF token like every other change.
async fn sign_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    _caller: Caller,
) -> Result<Response, Problem> {
    if let Some(id) = session::cookie(&headers) {
        session::end(&app, &id).await.map_err(|e| {
            tracing::error!(error = %e, "session not ended");
            Problem::unavailable("the sign-out could not be stored; try again")
        })?;
    }
    let secure = session::is_secure(app.web.secure_cookies, &headers);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie(secure));
    Ok(response)
}

/// Who the session belongs to; 401 without one.
async fn who(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, Problem> {
    let id = session::cookie(&headers).ok_or_else(|| Problem::unauthorized("not signed in"))?;
    let principal = session::principal(&app, &id)
        .ok_or_else(|| Problem::unauthorized("the session has ended; sign in again"))?;
    let mut response = axum::Json(signed(&app, &principal, &id)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct LangQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// The policy page: the plain-language text for everyone, and for the administrator also the
/// effective policy file and its check.
#[derive(Debug, Serialize)]
struct PolicyPage {
    lang: &'static str,
    /// Markdown, as `ampel policy render` prints it.
    page: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    toml: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<Checked>,
}

/// The outcome of checking a policy file.
#[derive(Debug, Serialize)]
struct Checked {
    ok: bool,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<usize>,
}

async fn policy(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Query(query): Query<LangQuery>,
) -> Result<axum::Json<PolicyPage>, Problem> {
    let lang = match query.lang.as_deref() {
        None => Lang::En,
        Some(tag) => {
            let primary = tag.split('-').next().unwrap_or_default();
            primary.parse().map_err(|e| Problem::bad_request(format!("{e}")).field("lang"))?
        }
    };
    let policy = &app.hub.policy;
    let admin = caller.is_admin();
    let toml = admin.then(|| policy.to_toml());
    let check = toml.as_deref().map(check);
    Ok(axum::Json(PolicyPage { lang: lang.as_str(), page: render(policy, lang), toml, check }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyText {
    text: String,
}

/// Checks a policy file the administrator pastes, as `ampel policy check` does.
async fn check_policy(
    Caller(caller): Caller,
    Json(body): Json<PolicyText>,
) -> Result<axum::Json<Checked>, Problem> {
    caller.require_admin()?;
    Ok(axum::Json(check(&body.text)))
}

fn check(text: &str) -> Checked {
    match Policy::from_toml(text) {
        Ok(_) => {
            Checked { ok: true, message: "the policy is valid".into(), line: None, column: None }
        }
        Err(e) => Checked { ok: false, message: e.message, line: e.line, column: e.column },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_section_of_the_server_file_marks_cookies_secure() {
        let file = crate::server_file::ServerFile::from_toml("[web]\nsecure_cookies = true\n");
        assert!(file.unwrap().web.secure_cookies);
        assert!(!crate::server_file::ServerFile::from_toml("").unwrap().web.secure_cookies);
        let typo = crate::server_file::ServerFile::from_toml("[web]\nsecure_cookie = true\n");
        assert!(typo.unwrap_err().contains("secure_cookie"));
    }

    #[test]
    fn a_policy_check_names_the_line_of_the_fault() {
        assert!(check(&Policy::default().to_toml()).ok);
        let fault = check("[dynamics]\nidle_after = 5\n");
        assert_eq!((fault.ok, fault.line), (false, Some(2)));
    }
}
