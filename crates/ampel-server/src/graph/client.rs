//! The HTTP client for Microsoft Graph: the client credentials grant with a cached token that is
//! renewed before it expires, and requests that ride out throttling and faults.
//!
//! Graph answers throttled requests with 429 and a `Retry-After` in seconds, and a busy service
//! with 503 (also with `Retry-After`); both are retried after the time Graph asks for. Other
//! transient failures (a connection refused, 500, 502, 504) back off exponentially with full
//! jitter. A 401 means the token expired or was revoked: the token is fetched anew and the
//! request repeated once. Presence requests additionally pass a window that keeps Ampel under
//! Graph's documented 1,500 presence requests per 30 seconds per application and tenant.
//!
//! This module knows nothing about presence or calendars; it moves JSON.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{GraphConfig, Secret};
use crate::metrics::Metrics;

/// Graph's documented limit of presence requests per application and tenant.
pub const PRESENCE_REQUESTS: usize = 1500;
/// The window of that limit.
pub const PRESENCE_WINDOW: Duration = Duration::from_secs(30);
/// A token is renewed this long before it expires.
const RENEW_EARLY: Duration = Duration::from_secs(5 * 60);
/// How long one HTTP exchange may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a Graph request failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph could not be reached, or did not answer in time.
    #[error("graph unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The identity platform refused the client credentials.
    #[error("token refused ({status}): {code}")]
    Token {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code (`invalid_client`, ...).
        code: String,
    },
    /// Graph answered with an error (`{"error": {"code", "message"}}`).
    #[error("graph answered {status}: {code}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Graph's error code.
        code: String,
        /// Graph's message.
        message: String,
    },
    /// Graph still throttled or failed after every attempt.
    #[error("graph gave up after {attempts} attempts, last status {status}")]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last status (0 for no answer).
        status: u16,
    },
    /// The answer was not the JSON expected.
    #[error("graph answer does not decode: {0}")]
    Decode(String),
}

impl GraphError {
    /// The HTTP status Graph answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Status { status, .. } | GraphError::Token { status, .. } => Some(*status),
            _ => None,
        }
    }
}

struct Token {
    value: Secret,
    renew_at: Instant,
}

/// A Graph client for one tenant.
pub struct Client {
    http: reqwest::Client,
    token_url: String,
    base_url: String,
    client_id: String,
    client_secret: Secret,
    scope: String,
    backoff: Duration,
    max_backoff: Duration,
    attempts: u32,
    token: Mutex<Option<Token>>,
    presence_window: std::sync::Mutex<VecDeque<Instant>>,
    metrics: Arc<Metrics>,
    /// Whether the last token fetch failed, so that a failure is logged once, not per poll.
    token_failing: AtomicBool,
    /// Whether the last request failed (after its retries), for the same reason.
    requests_failing: AtomicBool,
}

/// Whether a request counts against the presence limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A presence read or write.
    Presence,
    /// Anything else.
    Other,
}

impl Client {
    /// A client for the configured tenant.
    pub fn new(config: &GraphConfig, metrics: Arc<Metrics>) -> Client {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a TLS backend is compiled in");
        let authority = config.authority.trim_end_matches('/');
        Client {
            http,
            token_url: format!("{authority}/{}/oauth2/v2.0/token", config.tenant),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: config.scope.clone(),
            backoff: config.backoff.0.unsigned_abs(),
            max_backoff: config.max_backoff.0.unsigned_abs(),
            attempts: config.attempts.max(1),
            token: Mutex::new(None),
            presence_window: std::sync::Mutex::new(VecDeque::new()),
            metrics,
            token_failing: AtomicBool::new(false),
            requests_failing: AtomicBool::new(false),
        }
    }

    /// Sends a request to `path` (relative to the base URL, or an absolute `@odata.nextLink`)
    /// and returns the decoded answer (`Value::Null` for an empty body).
    pub async fn send(
        &self,
        kind: Kind,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let result = self.attempt(kind, method, path, body, headers).await;
        match &result {
            Ok(_) => {
                if turns(&self.requests_failing, false) {
                    tracing::info!("graph requests succeed again");
                }
            }
            // A token failure is logged where the token is fetched.
            Err(_) if self.token_failing.load(Relaxed) => {}
            Err(e) => {
                if turns(&self.requests_failing, true) {
                    tracing::warn!(path = strip_query(path), error = %e, "graph request failed");
                }
            }
        }
        if result.is_err() {
            self.metrics.graph_failures.fetch_add(1, Relaxed);
        }
        result
    }

    async fn attempt(
        &self,
        kind: Kind,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base_url)
        };
        let mut refreshed = false;
        let mut last_status = 0;
        for attempt in 0..self.attempts {
            if kind == Kind::Presence {
                self.presence_slot().await;
            }
            let token = self.token().await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(token.expose());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            self.metrics.graph_requests.fetch_add(1, Relaxed);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if attempt + 1 == self.attempts => return Err(GraphError::Unreachable(e)),
                Err(e) => {
                    self.metrics.graph_retries.fetch_add(1, Relaxed);
                    tracing::debug!(error = %e, attempt, "graph unreachable, backing off");
                    tokio::time::sleep(self.backoff_for(attempt)).await;
                    continue;
                }
            };
            let status = response.status();
            last_status = status.as_u16();
            if status.is_success() {
                return decode(response).await;
            }
            let retry_after = retry_after(response.headers());
            if is_transient(status) {
                self.metrics.graph_retries.fetch_add(1, Relaxed);
            }
            match status {
                StatusCode::UNAUTHORIZED if !refreshed => {
                    // The token expired early or was revoked: fetch a new one, once.
                    refreshed = true;
                    *self.token.lock().await = None;
                    tracing::info!("graph refused the token, fetching a new one");
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let wait = retry_after.unwrap_or_else(|| self.backoff_for(attempt));
                    tracing::warn!(
                        status = last_status,
                        wait_ms = wait.as_millis() as u64,
                        "graph throttles"
                    );
                    tokio::time::sleep(wait).await;
                }
                StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::GATEWAY_TIMEOUT => {
                    tokio::time::sleep(retry_after.unwrap_or_else(|| self.backoff_for(attempt)))
                        .await;
                }
                _ => return Err(error_of(status, response).await),
            }
        }
        Err(GraphError::Exhausted { attempts: self.attempts, status: last_status })
    }

    /// A valid access token: the cached one, or a new one when it is due for renewal.
    async fn token(&self) -> Result<Secret, GraphError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.value.clone());
        }
        let token = match self.fetch_token().await {
            Ok(token) => {
                if turns(&self.token_failing, false) {
                    tracing::info!("graph token obtained again");
                }
                token
            }
            Err(e) => {
                if turns(&self.token_failing, true) {
                    // The error names a status and an OAuth code, never the secret.
                    tracing::warn!(url = %self.token_url, error = %e, "graph token not obtained");
                }
                return Err(e);
            }
        };
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<Token, GraphError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose()),
            ("scope", self.scope.as_str()),
        ];
        let mut last = None;
        for attempt in 0..self.attempts {
            let sent = self.http.post(&self.token_url).form(&form).send().await;
            match sent {
                Ok(response) if response.status().is_success() => {
                    let body: TokenAnswer = response
                        .json()
                        .await
                        .map_err(|e| GraphError::Decode(format!("token answer: {e}")))?;
                    let lifetime = Duration::from_secs(body.expires_in);
                    let renew_at =
                        Instant::now() + lifetime.saturating_sub(RENEW_EARLY.min(lifetime / 2));
                    tracing::debug!(expires_in = body.expires_in, "fetched a graph token");
                    return Ok(Token { value: Secret::new(body.access_token), renew_at });
                }
                Ok(response) if is_transient(response.status()) => {
                    self.token_attempt_failed(attempt, &response.status());
                    let wait = retry_after(response.headers()).unwrap_or(self.backoff_for(attempt));
                    last = Some(GraphError::Exhausted {
                        attempts: attempt + 1,
                        status: response.status().as_u16(),
                    });
                    tokio::time::sleep(wait).await;
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    let code = body["error"].as_str().unwrap_or("unknown").to_owned();
                    return Err(GraphError::Token { status, code });
                }
                Err(e) => {
                    self.token_attempt_failed(attempt, &e);
                    last = Some(GraphError::Unreachable(e));
                    tokio::time::sleep(self.backoff_for(attempt)).await;
                }
            }
        }
        Err(last.unwrap_or(GraphError::Exhausted { attempts: self.attempts, status: 0 }))
    }

    /// Warns at the first failed token attempt of an outage when more attempts follow: with
    /// the backoff between them they may take minutes before "graph token not obtained" says
    /// that they were all in vain. The error is a status or a connection fault, and the secret
    /// travels only in the request body, so neither names it.
    fn token_attempt_failed(&self, attempt: u32, error: &dyn std::fmt::Display) {
        if attempt == 0 && self.attempts > 1 && !self.token_failing.load(Relaxed) {
            tracing::warn!(
                url = %self.token_url,
                error = %error,
                attempts = self.attempts,
                "graph token attempt failed; retrying"
            );
        }
    }

    /// Waits until one more presence request fits in the window.
    async fn presence_slot(&self) {
        loop {
            let wait = {
                let mut window = self.presence_window.lock().expect("presence window lock");
                match admit(&mut window, Instant::now()) {
                    None => return,
                    Some(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Exponential backoff with full jitter: a random wait up to `backoff * 2^attempt`, capped.
    fn backoff_for(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(1 << attempt.min(16)).min(self.max_backoff);
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("the operating system provides randomness");
        let fraction = (u64::from_le_bytes(raw) >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(0.5 + fraction / 2.0)
    }
}

/// Sets a health flag to `failing` and says whether that changed it, so that a failure and a
/// recovery are each logged once and not on every poll.
fn turns(flag: &AtomicBool, failing: bool) -> bool {
    flag.swap(failing, Relaxed) != failing
}

/// A request path without its query, which may carry user ids in filters.
fn strip_query(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// Counts a presence request in the window at `now`, or says how long to wait for room.
fn admit(window: &mut VecDeque<Instant>, now: Instant) -> Option<Duration> {
    while window.front().is_some_and(|t| now.duration_since(*t) >= PRESENCE_WINDOW) {
        window.pop_front();
    }
    if window.len() < PRESENCE_REQUESTS {
        window.push_back(now);
        return None;
    }
    let oldest = *window.front().expect("the window is full");
    Some(PRESENCE_WINDOW - now.duration_since(oldest))
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds, as Graph sends it (RFC 9110 §10.2.3 also allows a date, which
/// Graph does not use; that form falls back to the backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.min(3600)))
}

async fn decode(response: reqwest::Response) -> Result<Value, GraphError> {
    let bytes = response.bytes().await.map_err(GraphError::Unreachable)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode(e.to_string()))
}

async fn error_of(status: StatusCode, response: reqwest::Response) -> GraphError {
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_owned();
    GraphError::Status { status: status.as_u16(), code: text("code"), message: text("message") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presence_window_admits_1500_requests_per_30_seconds() {
        let mut window = VecDeque::new();
        let start = Instant::now();
        for _ in 0..PRESENCE_REQUESTS {
            assert_eq!(admit(&mut window, start), None);
        }
        let later = start + Duration::from_secs(10);
        assert_eq!(admit(&mut window, later), Some(Duration::from_secs(20)));
        assert_eq!(admit(&mut window, start + PRESENCE_WINDOW), None);
    }

    #[test]
    fn a_failure_and_a_recovery_are_each_reported_once() {
        let flag = AtomicBool::new(false);
        assert!(turns(&flag, true));
        assert!(!turns(&flag, true));
        assert!(!turns(&flag, true));
        assert!(turns(&flag, false));
        assert!(!turns(&flag, false));
        assert_eq!(strip_query("/users/a/calendarView?startDateTime=x"), "/users/a/calendarView");
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_its_cap_with_jitter_in_the_upper_half() {
        let config: GraphConfig = toml::from_str(
            "tenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             backoff = \"100ms\"\nmax_backoff = \"1s\"",
        )
        .unwrap();
        let client = Client::new(&config, Arc::default());
        for (attempt, ceiling) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (12, 1000)] {
            let ceiling = Duration::from_millis(ceiling);
            let waits: std::collections::HashSet<Duration> =
                (0..50).map(|_| client.backoff_for(attempt)).collect();
            assert!(waits.iter().all(|w| *w >= ceiling / 2 && *w <= ceiling), "{waits:?}");
            assert!(waits.len() > 1, "attempt {attempt} always waits {waits:?}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers
            .insert(reqwest::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
