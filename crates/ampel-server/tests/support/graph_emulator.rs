//! A Microsoft Graph emulator for the tests: the identity platform's token endpoint and the
//! parts of Graph v1.0 Ampel uses, over real HTTP on 127.0.0.1:0, with Microsoft's documented
//! request and answer shapes, error bodies, throttling (429 with `Retry-After`), presence
//! sessions and their aggregation, and change-notification subscriptions with the validation
//! handshake, calendar delta rounds (`calendarView/delta` with `nextLink` paging, `deltaLink`,
//! `@removed` entries and 410 Gone for a token it no longer knows) and change notifications on a
//! mailbox's events.
//!
//! Events keep the time zone they were written in (`start.timeZone`, a Windows or IANA name) and
//! are answered in the zone a `Prefer: outlook.timezone="…"` header asks for, UTC without one,
//! with `Preference-Applied` and the `originalStartTimeZone` and `originalEndTimeZone` Graph
//! adds; all-day events are answered as written.
//!
//! Tests drive it directly: they set a user's Teams client state (as if the user joined a Teams
//! call) and automatic replies, add, change and delete calendar events and contacts, throttle the
//! next requests (with or without `Retry-After`), take the whole service down, expire every
//! token, and read what Ampel set. Every expiry runs on tokio's clock, so that a test on the
//! paused clock sees sessions and tokens expire in its own time.

#![allow(dead_code)] // each test file uses a different part of the emulator

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::time::Instant;

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const CLIENT_ID: &str = "6e1a8d6b-0b8b-4c5f-9a3c-ampel0000001";
pub const CLIENT_SECRET: &str = "emulated~secret~value";

/// Graph's documented order of session availabilities, most restrictive first.
const PRECEDENCE: &[&str] =
    &["DoNotDisturb", "Busy", "Available", "Away", "BeRightBack", "Offline"];

#[derive(Clone)]
pub struct Emulator {
    pub base: String,
    state: Arc<Mutex<World>>,
    http: reqwest::Client,
}

#[derive(Default)]
struct World {
    tokens: HashMap<String, Instant>,
    token_lifetime: u64,
    token_requests: usize,
    users: HashMap<String, User>,
    subscriptions: HashMap<String, Subscription>,
    next_id: u64,
    throttle: VecDeque<Fault>,
    /// While set, every request (tokens too) is refused with 503.
    down: bool,
    presence_window: VecDeque<Instant>,
    requests: Vec<String>,
    /// When each of `requests` came.
    request_times: Vec<Instant>,
    page_size: usize,
    deltas: HashMap<String, Delta>,
    /// Delta and skip tokens of an older generation answer 410 Gone.
    delta_generation: u64,
    /// How many rounds ended with a `deltaLink`, per user.
    delta_rounds: HashMap<String, usize>,
    /// Delta entries leave out `showAs` and `sensitivity`.
    lean_delta: bool,
    /// The windows of the full syncs asked for, per user, in order.
    delta_windows: HashMap<String, Vec<(Timestamp, Timestamp)>>,
}

/// The state a delta or skip token stands for.
#[derive(Clone)]
struct Delta {
    user: String,
    from: Timestamp,
    to: Timestamp,
    generation: u64,
    /// What the client was told so far: event id to version.
    seen: HashMap<String, u64>,
    /// For a skip token: the entries of the round still to send.
    remaining: Option<Vec<Value>>,
}

#[derive(Clone)]
struct User {
    /// What the user's Teams client reports.
    client: (String, String),
    sessions: HashMap<String, (String, String, Instant)>,
    preferred: Option<(String, String)>,
    time_zone: String,
    events: Vec<Value>,
    /// Each event's version, raised on every change.
    versions: HashMap<String, u64>,
    contacts: Vec<Value>,
    /// `outOfOfficeSettings`: whether automatic replies are on, and their message.
    out_of_office: (bool, Option<String>),
}

/// A scripted failure of one of the next requests.
struct Fault {
    status: u16,
    /// `Retry-After` in seconds, if sent.
    retry_after: Option<u64>,
    /// Only a request whose path contains this fails; any request when `None`.
    path: Option<String>,
}

#[derive(Clone)]
struct Subscription {
    /// Presence subscriptions: the users.
    ids: Vec<String>,
    /// Events subscriptions: the mailbox.
    events_of: Option<String>,
    notification_url: String,
    lifecycle_url: Option<String>,
    client_state: String,
    expires: Timestamp,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message,
        "innerError": {"date": Timestamp::now().to_string(), "request-id": "emulated"}}})),
    )
        .into_response()
}

impl Emulator {
    pub async fn start() -> Emulator {
        let state =
            Arc::new(Mutex::new(World { token_lifetime: 3599, page_size: 2, ..World::default() }));
        let emulator = Emulator { base: String::new(), state, http: reqwest::Client::new() };
        let graph = Router::new()
            .route("/communications/getPresencesByUserId", post(get_presences))
            .route("/users/{id}/presence", get(get_presence))
            .route("/users/{id}/presence/setPresence", post(set_presence))
            .route("/users/{id}/presence/clearPresence", post(clear_presence))
            .route("/users/{id}/calendarView", get(calendar_view))
            .route("/users/{id}/calendarView/delta", get(calendar_delta))
            .route("/users/{id}/events/{event}", get(get_event))
            .route("/users/{id}/mailboxSettings", get(mailbox_settings))
            .route("/users/{id}/contacts", get(contacts))
            .route("/subscriptions", post(create_subscription))
            .route("/subscriptions/{id}", patch(renew_subscription).delete(delete_subscription))
            .layer(axum::middleware::from_fn_with_state(emulator.clone(), gate));
        let router = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .nest("/v1.0", graph)
            .with_state(emulator.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Emulator { base: format!("http://{addr}"), ..emulator }
    }

    /// The `[graph]` section pointing Ampel at this emulator.
    pub fn config(&self, users: &[(&str, &str)], extra: &str) -> String {
        let mut text = format!(
            "[graph]\ntenant = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret = \"{CLIENT_SECRET}\"\nauthority = \"{base}\"\n\
             base_url = \"{base}/v1.0\"\nbackoff = \"50ms\"\nmax_backoff = \"2s\"\n{extra}\n\
             [graph.users]\n",
            base = self.base
        );
        for (user, oid) in users {
            text.push_str(&format!("\"{user}\" = \"{oid}\"\n"));
        }
        text
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.state.lock().unwrap()
    }

    pub fn add_user(&self, oid: &str, time_zone: &str) {
        let user = User {
            client: ("Available".into(), "Available".into()),
            sessions: HashMap::new(),
            preferred: None,
            time_zone: time_zone.into(),
            events: Vec::new(),
            versions: HashMap::new(),
            contacts: Vec::new(),
            out_of_office: (false, None),
        };
        self.world().users.insert(oid.into(), user);
    }

    /// The user's Teams client changes state (joins or leaves a call), and subscribers hear.
    pub async fn set_client(&self, oid: &str, availability: &str, activity: &str) {
        self.set_client_quietly(oid, availability, activity);
        self.notify(oid).await;
    }

    /// The user's Teams client changes state, and no notification is sent.
    pub fn set_client_quietly(&self, oid: &str, availability: &str, activity: &str) {
        self.world().users.get_mut(oid).unwrap().client = (availability.into(), activity.into());
    }

    /// The user turns automatic replies on or off (Outlook's out of office), and subscribers hear.
    pub async fn set_out_of_office(&self, oid: &str, on: bool, message: Option<&str>) {
        let settings = (on, message.map(str::to_owned));
        self.world().users.get_mut(oid).unwrap().out_of_office = settings;
        self.notify(oid).await;
    }

    /// Adds an event to the user's calendar, without a notification.
    pub fn add_event(&self, oid: &str, event: Value) {
        let mut world = self.world();
        world.next_id += 1;
        let version = world.next_id;
        let user = world.users.get_mut(oid).unwrap();
        user.versions.insert(event["id"].as_str().unwrap().to_owned(), version);
        user.events.push(event);
    }

    /// Changes fields of an event (moves it, cancels it), without a notification.
    pub fn change_event(&self, oid: &str, id: &str, fields: Value) {
        let mut world = self.world();
        world.next_id += 1;
        let version = world.next_id;
        let user = world.users.get_mut(oid).unwrap();
        let event = user.events.iter_mut().find(|e| e["id"] == id).unwrap();
        for (key, value) in fields.as_object().unwrap() {
            event[key] = value.clone();
        }
        user.versions.insert(id.to_owned(), version);
    }

    /// Deletes an event, without a notification.
    pub fn delete_event(&self, oid: &str, id: &str) {
        let mut world = self.world();
        let user = world.users.get_mut(oid).unwrap();
        user.events.retain(|e| e["id"] != id);
        user.versions.remove(id);
    }

    /// Tells the subscribers of the user's events that one was created, updated or deleted.
    pub async fn notify_event(&self, oid: &str, id: &str, change: &str) {
        let subs: Vec<(String, Subscription)> = self
            .world()
            .subscriptions
            .iter()
            .filter(|(_, s)| s.events_of.as_deref() == Some(oid) && s.expires > Timestamp::now())
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (sub_id, sub) in subs {
            let body = json!({"value": [{
                "subscriptionId": sub_id,
                "clientState": sub.client_state,
                "changeType": change,
                "resource": format!("Users/{oid}/Events/{id}"),
                "subscriptionExpirationDateTime": sub.expires.to_string(),
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "@odata.id": format!("Users/{oid}/Events/{id}"),
                    "@odata.etag": "W/\"DwAAABYAAAA=\"",
                    "id": id,
                },
                "tenantId": TENANT,
            }]});
            let _ = self.http.post(&sub.notification_url).json(&body).send().await;
        }
    }

    /// Every delta and skip token issued so far is forgotten: using one answers 410 Gone.
    pub fn expire_delta_tokens(&self) {
        self.world().delta_generation += 1;
    }

    /// How many delta rounds of the user's calendar ended with a `deltaLink`.
    pub fn delta_rounds(&self, oid: &str) -> usize {
        self.world().delta_rounds.get(oid).copied().unwrap_or(0)
    }

    /// The windows of the full syncs of the user's calendar, in the order they were asked for.
    pub fn delta_windows(&self, oid: &str) -> Vec<(Timestamp, Timestamp)> {
        self.world().delta_windows.get(oid).cloned().unwrap_or_default()
    }

    /// Delta entries leave out `showAs` and `sensitivity` from now on.
    pub fn lean_delta(&self) {
        self.world().lean_delta = true;
    }

    /// The events subscriptions: `(id, mailbox, expiry)`.
    pub fn event_subscriptions(&self) -> Vec<(String, String, Timestamp)> {
        let world = self.world();
        world
            .subscriptions
            .iter()
            .filter_map(|(id, s)| Some((id.clone(), s.events_of.clone()?, s.expires)))
            .collect()
    }

    pub fn add_contact(&self, oid: &str, contact: Value) {
        self.world().users.get_mut(oid).unwrap().contacts.push(contact);
    }

    /// The user's aggregated presence as Graph would answer it.
    pub fn presence(&self, oid: &str) -> (String, String) {
        let world = self.world();
        aggregate(world.users.get(oid).unwrap())
    }

    /// The presence sessions set on a user: `(sessionId, availability, activity)`.
    pub fn sessions(&self, oid: &str) -> Vec<(String, String, String)> {
        let world = self.world();
        let now = Instant::now();
        let user = world.users.get(oid).unwrap();
        user.sessions
            .iter()
            .filter(|(_, (_, _, exp))| *exp > now)
            .map(|(id, (a, b, _))| (id.clone(), a.clone(), b.clone()))
            .collect()
    }

    /// The next Graph requests answer with these statuses (429 or 503, with `Retry-After: 1`).
    pub fn fail_next(&self, statuses: &[u16]) {
        let faults =
            statuses.iter().map(|&status| Fault { status, retry_after: Some(1), path: None });
        self.world().throttle.extend(faults);
    }

    /// The next `count` requests whose path contains `path` are throttled with a 429 that has
    /// no `Retry-After`, which Graph sends too at times.
    pub fn throttle_without_retry_after(&self, path: &str, count: usize) {
        let fault = || Fault { status: 429, retry_after: None, path: Some(path.to_owned()) };
        self.world().throttle.extend(std::iter::repeat_with(fault).take(count));
    }

    /// Graph and the identity platform refuse every request with 503 until [`Emulator::up`].
    pub fn down(&self) {
        self.world().down = true;
    }

    /// Graph answers again.
    pub fn up(&self) {
        self.world().down = false;
    }

    /// Every token issued so far stops being valid.
    pub fn expire_tokens(&self) {
        self.world().tokens.clear();
    }

    /// Tokens issued from now on live this many seconds.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.world().token_lifetime = seconds;
    }

    pub fn token_requests(&self) -> usize {
        self.world().token_requests
    }

    /// `METHOD path` of every Graph request, in order, and how each was answered.
    pub fn requests(&self) -> Vec<String> {
        self.world().requests.clone()
    }

    /// The same, each with the instant it came (on tokio's clock).
    pub fn requests_timed(&self) -> Vec<(Instant, String)> {
        let world = self.world();
        world.request_times.iter().copied().zip(world.requests.iter().cloned()).collect()
    }

    /// A Graph `GET` as another client would send it, with a token of its own and these
    /// headers: the status, the `Preference-Applied` header and the body.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>, Value) {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ];
        let url = format!("{}/{TENANT}/oauth2/v2.0/token", self.base);
        let token: Value =
            self.http.post(url).form(&form).send().await.unwrap().json().await.unwrap();
        let mut request = self
            .http
            .get(format!("{}/v1.0{path}", self.base))
            .bearer_auth(token["access_token"].as_str().unwrap());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let applied =
            response.headers().get("Preference-Applied").map(|v| v.to_str().unwrap().to_owned());
        (status, applied, response.json().await.unwrap_or(Value::Null))
    }

    /// The presence subscriptions: `(id, users, expiry)`.
    pub fn subscriptions(&self) -> Vec<(String, Vec<String>, Timestamp)> {
        let world = self.world();
        world
            .subscriptions
            .iter()
            .filter(|(_, s)| s.events_of.is_none())
            .map(|(id, s)| (id.clone(), s.ids.clone(), s.expires))
            .collect()
    }

    /// Graph sends a lifecycle notification for a subscription.
    pub async fn lifecycle(&self, subscription: &str, event: &str) -> u16 {
        let sub = self.world().subscriptions.get(subscription).cloned().unwrap();
        let body = json!({"value": [{
            "subscriptionId": subscription,
            "subscriptionExpirationDateTime": sub.expires.to_string(),
            "tenantId": TENANT,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }]});
        if event == "subscriptionRemoved" {
            self.world().subscriptions.remove(subscription);
        }
        let url = sub.lifecycle_url.unwrap();
        self.http.post(url).json(&body).send().await.unwrap().status().as_u16()
    }

    /// Posts a change notification with a client state of the caller's choice (a forgery).
    pub async fn forge_notification(&self, url: &str, oid: &str, client_state: &str) -> u16 {
        let body = notification_body("forged", client_state, oid);
        self.http.post(url).json(&body).send().await.unwrap().status().as_u16()
    }

    /// Tells every subscriber of `oid` that its presence changed.
    async fn notify(&self, oid: &str) {
        let subs: Vec<(String, Subscription)> = self
            .world()
            .subscriptions
            .iter()
            .filter(|(_, s)| s.ids.iter().any(|i| i == oid) && s.expires > Timestamp::now())
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect();
        for (id, sub) in subs {
            let body = notification_body(&id, &sub.client_state, oid);
            let _ = self.http.post(&sub.notification_url).json(&body).send().await;
        }
    }

    async fn validate(&self, url: &str) -> bool {
        let token =
            "Validation: Testing client application reachability for subscription Request-Id: 4e0d";
        let response = self
            .http
            .post(url)
            .query(&[("validationToken", token)])
            .header(header::CONTENT_TYPE, "text/plain")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 200 => {
                let plain = r
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
                plain && r.text().await.unwrap_or_default() == token
            }
            _ => false,
        }
    }
}

fn notification_body(subscription: &str, client_state: &str, oid: &str) -> Value {
    json!({"value": [{
        "subscriptionId": subscription,
        "clientState": client_state,
        "changeType": "updated",
        "resource": format!("communications/presences/{oid}"),
        "subscriptionExpirationDateTime": Timestamp::now().to_string(),
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.presence",
            "@odata.id": format!("communications/presences/{oid}"),
            "id": oid,
        },
        "tenantId": TENANT,
    }]})
}

/// Graph's aggregation: the user's preferred presence if set, else the most restrictive of the
/// Teams client and the live sessions.
fn aggregate(user: &User) -> (String, String) {
    if let Some(p) = &user.preferred {
        return p.clone();
    }
    let now = Instant::now();
    let live = user.sessions.values().filter(|(_, _, exp)| *exp > now).map(|(a, b, _)| (a, b));
    std::iter::once((&user.client.0, &user.client.1))
        .chain(live)
        .min_by_key(|(a, _)| PRECEDENCE.iter().position(|p| p == a).unwrap_or(PRECEDENCE.len()))
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap()
}

fn presence_json(oid: &str, user: &User) -> Value {
    let (availability, activity) = aggregate(user);
    let (out_of_office, message) = &user.out_of_office;
    json!({
        "id": oid,
        "availability": availability,
        "activity": activity,
        "statusMessage": null,
        "outOfOfficeSettings": {"message": message, "isOutOfOffice": out_of_office},
    })
}

impl World {
    /// Logs a request and how it was answered.
    fn log(&mut self, line: String) {
        self.requests.push(line);
        self.request_times.push(Instant::now());
    }

    /// The first scripted failure for a request to `path`, taken from the queue.
    fn fault_for(&mut self, path: &str) -> Option<Fault> {
        let i = self
            .throttle
            .iter()
            .position(|f| f.path.as_deref().is_none_or(|p| path.contains(p)))?;
        self.throttle.remove(i)
    }
}

/// Graph's answer while the service is down.
fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceNotAvailable",
        "The service is temporarily unavailable.",
    )
}

/// Authentication, scripted failures and the request log for every Graph request.
async fn gate(
    State(emu): State<Emulator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    let line = format!("{} {path}", request.method());
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let failure = {
        let mut world = emu.world();
        if world.down {
            world.log(format!("{line} -> 503"));
            return unavailable();
        }
        let valid = token
            .as_ref()
            .and_then(|t| world.tokens.get(t))
            .is_some_and(|exp| *exp > Instant::now());
        if !valid {
            world.log(format!("{line} -> 401"));
            return error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            );
        }
        world.fault_for(&path)
    };
    if let Some(fault) = failure {
        emu.world().log(format!("{line} -> {}", fault.status));
        let (code, message) = match fault.status {
            429 => ("TooManyRequests", "Too many requests."),
            _ => ("ServiceNotAvailable", "The service is temporarily unavailable."),
        };
        let mut response = error(StatusCode::from_u16(fault.status).unwrap(), code, message);
        if let Some(seconds) = fault.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        return response;
    }
    let response = next.run(request).await;
    emu.world().log(format!("{line} -> {}", response.status().as_u16()));
    response
}

async fn token(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let oauth_error = |status: StatusCode, code: &str, description: &str| {
        (status, Json(json!({"error": code, "error_description": description}))).into_response()
    };
    if tenant != TENANT {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "AADSTS70003");
    }
    if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "AADSTS1002012");
    }
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let mut world = emu.world();
    if world.down {
        return unavailable();
    }
    world.token_requests += 1;
    world.next_id += 1;
    let access = format!("eyJ0eXAiOiJKV1Qi.emulated.{}", world.next_id);
    let lifetime = world.token_lifetime;
    world.tokens.insert(access.clone(), Instant::now() + Duration::from_secs(lifetime));
    Json(json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": access}))
    .into_response()
}

/// Counts a presence request against 1,500 per 30 seconds.
fn presence_allowed(world: &mut World) -> bool {
    let now = Instant::now();
    while world.presence_window.front().is_some_and(|t| now - *t >= Duration::from_secs(30)) {
        world.presence_window.pop_front();
    }
    if world.presence_window.len() >= 1500 {
        return false;
    }
    world.presence_window.push_back(now);
    true
}

fn throttled() -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Too many requests.");
    r.headers_mut().insert(header::RETRY_AFTER, 1.into());
    r
}

async fn get_presences(State(emu): State<Emulator>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to read JSON request payload.",
        );
    };
    let Some(ids) = body["ids"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "BadRequest", "ids is required.");
    };
    if ids.is_empty() || ids.len() > 650 {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The number of ids must be between 1 and 650.",
        );
    }
    let mut world = emu.world();
    if !presence_allowed(&mut world) {
        return throttled();
    }
    let value: Vec<Value> = ids
        .iter()
        .filter_map(|id| id.as_str())
        .filter_map(|id| Some(presence_json(id, world.users.get(id)?)))
        .collect();
    Json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.presence)", "value": value}))
        .into_response()
}

async fn get_presence(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    let mut world = emu.world();
    if !presence_allowed(&mut world) {
        return throttled();
    }
    match world.users.get(&id) {
        Some(user) => {
            let mut body = presence_json(&id, user);
            body["@odata.context"] = format!(
                "https://graph.microsoft.com/v1.0/$metadata#users('{id}')/presence/$entity"
            )
            .into();
            Json(body).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "NotFound", "The requested user is not found."),
    }
}

const SESSION_STATES: &[(&str, &str)] = &[
    ("Available", "Available"),
    ("Busy", "InACall"),
    ("Busy", "InAConferenceCall"),
    ("Away", "Away"),
    ("DoNotDisturb", "Presenting"),
];

async fn set_presence(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let session = body["sessionId"].as_str().unwrap_or_default();
    let availability = body["availability"].as_str().unwrap_or_default().to_owned();
    let activity = body["activity"].as_str().unwrap_or_default().to_owned();
    if session != CLIENT_ID {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "sessionId must be the application id.",
        );
    }
    if !SESSION_STATES.contains(&(availability.as_str(), activity.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unsupported availability and activity.",
        );
    }
    let duration = body["expirationDuration"].as_str().unwrap_or("PT5M");
    let Ok(duration) = duration.parse::<SignedDuration>() else {
        return error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid expirationDuration.");
    };
    if duration < SignedDuration::from_mins(5) || duration > SignedDuration::from_hours(4) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expirationDuration must be PT5M to PT4H.",
        );
    }
    {
        let mut world = emu.world();
        if !presence_allowed(&mut world) {
            return throttled();
        }
        let Some(user) = world.users.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "NotFound", "The requested user is not found.");
        };
        let expires = Instant::now() + duration.unsigned_abs();
        user.sessions.insert(session.to_owned(), (availability, activity, expires));
    }
    let notifier = emu.clone();
    tokio::spawn(async move { notifier.notify(&id).await });
    StatusCode::OK.into_response()
}

async fn clear_presence(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let session = body["sessionId"].as_str().unwrap_or_default().to_owned();
    {
        let mut world = emu.world();
        if !presence_allowed(&mut world) {
            return throttled();
        }
        let Some(user) = world.users.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "NotFound", "The requested user is not found.");
        };
        if user.sessions.remove(&session).is_none() {
            return error(StatusCode::NOT_FOUND, "NotFound", "The presence session is not found.");
        }
    }
    let notifier = emu.clone();
    tokio::spawn(async move { notifier.notify(&id).await });
    StatusCode::OK.into_response()
}

/// A time zone as Exchange names it: the Windows names the tests use, or an IANA name. The
/// emulator keeps its own short table, so that it does not check Ampel with Ampel's own.
fn zone(name: &str) -> Option<jiff::tz::TimeZone> {
    const WINDOWS: &[(&str, &str)] = &[
        ("UTC", "UTC"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("Romance Standard Time", "Europe/Paris"),
        ("GMT Standard Time", "Europe/London"),
        ("Eastern Standard Time", "America/New_York"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
    ];
    let iana = WINDOWS.iter().find(|(w, _)| *w == name).map_or(name, |(_, iana)| iana);
    jiff::tz::TimeZone::get(iana).ok()
}

/// The instant of a `dateTimeTimeZone`, read in its own `timeZone`.
fn parse_time(v: &Value) -> Option<Timestamp> {
    let civil: jiff::civil::DateTime = v["dateTime"].as_str()?.parse().ok()?;
    let zone = zone(v["timeZone"].as_str().unwrap_or("UTC"))?;
    civil.to_zoned(zone).ok().map(|z| z.timestamp())
}

/// The zone of `Prefer: outlook.timezone="…"`, when given and known: its name and the zone.
fn preferred_zone(headers: &HeaderMap) -> Option<(String, jiff::tz::TimeZone)> {
    let name = headers.get_all("Prefer").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        let rest = &v[v.find("outlook.timezone=\"")? + "outlook.timezone=\"".len()..];
        Some(rest[..rest.find('"')?].to_owned())
    })?;
    let zone = zone(&name)?;
    Some((name, zone))
}

/// An event as Graph answers it: a timed event's start and end in the preferred zone (UTC
/// without one), with the zones it was written in kept as `originalStartTimeZone` and
/// `originalEndTimeZone`; an all-day event as written.
fn answered(event: &Value, preferred: Option<&(String, jiff::tz::TimeZone)>) -> Value {
    let mut event = event.clone();
    if event["isAllDay"] == true || event.get("@removed").is_some() {
        return event;
    }
    let (name, zone) = match preferred {
        Some((name, zone)) => (name.as_str(), zone.clone()),
        None => ("UTC", jiff::tz::TimeZone::UTC),
    };
    for (field, original) in [("start", "originalStartTimeZone"), ("end", "originalEndTimeZone")] {
        let Some(at) = parse_time(&event[field]) else { continue };
        if event.get(original).is_none() {
            event[original] = event[field]["timeZone"].clone();
        }
        let local = at.to_zoned(zone.clone()).datetime();
        event[field] = json!({
            "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000").to_string(),
            "timeZone": name,
        });
    }
    event
}

/// Says which time zone the answer's times are in, as Graph does when it honours the header.
fn preference_applied(response: &mut Response, preferred: Option<&(String, jiff::tz::TimeZone)>) {
    if let Some((name, _)) = preferred {
        let value = format!("outlook.timezone=\"{name}\"");
        response.headers_mut().insert("Preference-Applied", value.parse().unwrap());
    }
}

async fn calendar_view(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let (Some(from), Some(to)) = (query.get("startDateTime"), query.get("endDateTime")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        );
    };
    let (Ok(from), Ok(to)) = (from.parse::<Timestamp>(), to.parse::<Timestamp>()) else {
        return error(StatusCode::BAD_REQUEST, "ErrorInvalidParameter", "Invalid date.");
    };
    let world = emu.world();
    let Some(user) = world.users.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        );
    };
    let preferred = preferred_zone(&headers);
    let matching: Vec<Value> = user
        .events
        .iter()
        .filter(|e| parse_time(&e["start"]).is_some_and(|s| s < to))
        .filter(|e| parse_time(&e["end"]).is_some_and(|end| end > from))
        .cloned()
        .collect();
    let skip: usize = query.get("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let top: usize = query.get("$top").and_then(|s| s.parse().ok()).unwrap_or(10);
    let page = top.min(world.page_size);
    let value: Vec<Value> =
        matching.iter().skip(skip).take(page).map(|e| answered(e, preferred.as_ref())).collect();
    let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('id')/calendarView", "value": value});
    if skip + page < matching.len() {
        let mut next: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| *k != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next.push(("$skip".into(), (skip + page).to_string()));
        let mut url =
            reqwest::Url::parse(&format!("{}/v1.0/users/{id}/calendarView", emu_base(&headers)))
                .unwrap();
        url.query_pairs_mut().extend_pairs(next);
        body["@odata.nextLink"] = url.to_string().into();
    }
    let mut response = Json(body).into_response();
    preference_applied(&mut response, preferred.as_ref());
    response
}

fn emu_base(headers: &HeaderMap) -> String {
    format!("http://{}", headers.get(header::HOST).unwrap().to_str().unwrap())
}

async fn mailbox_settings(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    let world = emu.world();
    match world.users.get(&id) {
        Some(user) => Json(json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('id')/mailboxSettings(timeZone)", "timeZone": user.time_zone})).into_response(),
        None => error(StatusCode::NOT_FOUND, "ErrorItemNotFound", "The specified object was not found in the store."),
    }
}

async fn contacts(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    let world = emu.world();
    match world.users.get(&id) {
        Some(user) => Json(json!({"value": user.contacts})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
    }
}

/// The user ids of a presence subscription resource.
fn resource_ids(resource: &str) -> Option<Vec<String>> {
    let resource = resource.trim_start_matches('/');
    if let Some(id) = resource.strip_prefix("communications/presences/") {
        return Some(vec![id.to_owned()]);
    }
    let filter =
        resource.strip_prefix("communications/presences?$filter=id in (")?.strip_suffix(')')?;
    Some(filter.split(',').map(|s| s.trim().trim_matches('\'').to_owned()).collect())
}

/// The mailbox of an events subscription resource (`users/{id}/events`).
fn events_resource(resource: &str) -> Option<String> {
    let rest = resource.trim_start_matches('/').strip_prefix("users/")?;
    let id = rest.strip_suffix("/events")?;
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

async fn create_subscription(State(emu): State<Emulator>, Json(body): Json<Value>) -> Response {
    let resource = body["resource"].as_str().unwrap_or_default();
    let events_of = events_resource(resource);
    let ids = match (&events_of, resource_ids(resource)) {
        (Some(_), _) => Vec::new(),
        (None, Some(ids)) => ids,
        (None, None) => {
            return error(StatusCode::BAD_REQUEST, "ExtensionError", "Unsupported resource.");
        }
    };
    if let Some(oid) = &events_of {
        let change = body["changeType"].as_str().unwrap_or_default();
        let known = change.split(',').all(|c| ["created", "updated", "deleted"].contains(&c));
        if !known || !emu.world().users.contains_key(oid) {
            return error(
                StatusCode::BAD_REQUEST,
                "ExtensionError",
                "Invalid events subscription.",
            );
        }
    } else if ids.is_empty() || ids.len() > 650 {
        return error(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            "At most 650 ids per subscription.",
        );
    }
    let Some(expires) =
        body["expirationDateTime"].as_str().and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "ExtensionError", "expirationDateTime is required.");
    };
    let longest = if events_of.is_some() { 4230 } else { 60 };
    if expires > Timestamp::now() + SignedDuration::from_mins(longest) {
        return error(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            &format!("Subscription expiration can only be {longest} minutes in the future."),
        );
    }
    let Some(url) = body["notificationUrl"].as_str().map(str::to_owned) else {
        return error(StatusCode::BAD_REQUEST, "ExtensionError", "notificationUrl is required.");
    };
    let lifecycle = body["lifecycleNotificationUrl"].as_str().map(str::to_owned);
    if !emu.validate(&url).await {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
        );
    }
    if let Some(l) = &lifecycle
        && !emu.validate(l).await
    {
        return error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "Subscription validation request failed for the lifecycle notification URL.",
        );
    }
    let client_state = body["clientState"].as_str().unwrap_or_default().to_owned();
    let mut world = emu.world();
    world.next_id += 1;
    let id = format!("sub-{}", world.next_id);
    let sub = Subscription {
        ids,
        events_of,
        notification_url: url.clone(),
        lifecycle_url: lifecycle,
        client_state,
        expires,
    };
    world.subscriptions.insert(id.clone(), sub);
    (
        StatusCode::CREATED,
        Json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": id,
            "resource": body["resource"],
            "changeType": body["changeType"],
            "notificationUrl": url,
            "expirationDateTime": expires.to_string(),
            "clientState": body["clientState"],
        })),
    )
        .into_response()
}

async fn renew_subscription(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(expires) =
        body["expirationDateTime"].as_str().and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "ExtensionError", "expirationDateTime is required.");
    };
    let mut world = emu.world();
    let events = world.subscriptions.get(&id).is_some_and(|s| s.events_of.is_some());
    let longest = if events { 4230 } else { 60 };
    if expires > Timestamp::now() + SignedDuration::from_mins(longest) {
        return error(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            &format!("Subscription expiration can only be {longest} minutes in the future."),
        );
    }
    match world.subscriptions.get_mut(&id) {
        Some(sub) => {
            sub.expires = expires;
            Json(json!({"id": id, "expirationDateTime": expires.to_string()})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "The object was not found."),
    }
}

async fn delete_subscription(State(emu): State<Emulator>, Path(id): Path<String>) -> Response {
    match emu.world().subscriptions.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "ResourceNotFound", "The object was not found."),
    }
}

/// The events of a user that overlap a window, with their versions.
fn in_window(user: &User, from: Timestamp, to: Timestamp) -> Vec<(Value, u64)> {
    user.events
        .iter()
        .filter(|e| parse_time(&e["start"]).is_some_and(|s| s < to))
        .filter(|e| parse_time(&e["end"]).is_some_and(|end| end > from))
        .map(|e| {
            (
                e.clone(),
                user.versions.get(e["id"].as_str().unwrap_or_default()).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// `odata.maxpagesize` of a `Prefer` header, as many entries as a page may hold.
fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    headers
        .get_all("Prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize=")?.trim().parse().ok())
}

fn gone() -> Response {
    error(
        StatusCode::GONE,
        "SyncStateNotFound",
        "The sync state is not found or has expired. Restart the synchronization without a token.",
    )
}

/// `calendarView/delta`: a round starts with `startDateTime` and `endDateTime` (a full sync), or
/// with a `$deltatoken` (the changes since the round it ended); `$skiptoken` pages on.
async fn calendar_delta(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut world = emu.world();
    let generation = world.delta_generation;
    let lean = world.lean_delta;
    let page = max_page_size(&headers).unwrap_or(10).min(world.page_size).max(1);
    let (from, to, remaining, seen_after) = if let Some(token) = query.get("$skiptoken") {
        let Some(state) = world.deltas.get(token).cloned() else { return gone() };
        if state.generation != generation || state.user != id {
            return gone();
        }
        (state.from, state.to, state.remaining.unwrap_or_default(), state.seen)
    } else {
        let (from, to, seen) = if let Some(token) = query.get("$deltatoken") {
            let Some(state) = world.deltas.get(token).cloned() else { return gone() };
            if state.generation != generation || state.user != id || state.remaining.is_some() {
                return gone();
            }
            (state.from, state.to, state.seen)
        } else {
            let (Some(from), Some(to)) = (query.get("startDateTime"), query.get("endDateTime"))
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidParameter",
                    "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
                );
            };
            let (Ok(from), Ok(to)) = (from.parse::<Timestamp>(), to.parse::<Timestamp>()) else {
                return error(StatusCode::BAD_REQUEST, "ErrorInvalidParameter", "Invalid date.");
            };
            world.delta_windows.entry(id.clone()).or_default().push((from, to));
            (from, to, HashMap::new())
        };
        let Some(user) = world.users.get(&id) else {
            return error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            );
        };
        let now = in_window(user, from, to);
        let mut entries: Vec<Value> = now
            .iter()
            .filter(|(e, v)| seen.get(e["id"].as_str().unwrap_or_default()) != Some(v))
            .map(|(e, _)| {
                let mut e = e.clone();
                e["@odata.type"] = "#microsoft.graph.event".into();
                if lean {
                    let fields = e.as_object_mut().unwrap();
                    fields.remove("showAs");
                    fields.remove("sensitivity");
                }
                e
            })
            .collect();
        for gone_id in seen.keys().filter(|k| !now.iter().any(|(e, _)| e["id"] == k.as_str())) {
            entries.push(json!({"@odata.type": "#microsoft.graph.event", "id": gone_id, "@removed": {"reason": "deleted"}}));
        }
        let after: HashMap<String, u64> = now
            .iter()
            .map(|(e, v)| (e["id"].as_str().unwrap_or_default().to_owned(), *v))
            .collect();
        (from, to, entries, after)
    };
    let mut remaining = remaining;
    let preferred = preferred_zone(&headers);
    let value: Vec<Value> = remaining
        .drain(..page.min(remaining.len()))
        .map(|e| answered(&e, preferred.as_ref()))
        .collect();
    world.next_id += 1;
    let token = format!("tok{}", world.next_id);
    let base = format!("{}/v1.0/users/{id}/calendarView/delta", emu_base(&headers));
    let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)", "value": value});
    let more = !remaining.is_empty();
    let state = Delta {
        user: id.clone(),
        from,
        to,
        generation,
        seen: seen_after,
        remaining: more.then_some(remaining),
    };
    world.deltas.insert(token.clone(), state);
    if more {
        body["@odata.nextLink"] = format!("{base}?$skiptoken={token}").into();
    } else {
        body["@odata.deltaLink"] = format!("{base}?$deltatoken={token}").into();
        *world.delta_rounds.entry(id).or_default() += 1;
    }
    let mut response = Json(body).into_response();
    preference_applied(&mut response, preferred.as_ref());
    response
}

async fn get_event(
    State(emu): State<Emulator>,
    Path((id, event)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let world = emu.world();
    let found =
        world.users.get(&id).and_then(|u| u.events.iter().find(|e| e["id"] == event.as_str()));
    match found {
        Some(e) => {
            let preferred = preferred_zone(&headers);
            let mut response = Json(answered(e, preferred.as_ref())).into_response();
            preference_applied(&mut response, preferred.as_ref());
            response
        }
        None => error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ),
    }
}
