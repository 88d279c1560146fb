//! The bare broadcaster: the floor that Ampel's cost per notification is compared with.
//!
//! It answers the same REST and WebSocket calls the load makes, on the same HTTP and WebSocket
//! stack as Ampel (axum on a multi-threaded tokio runtime with as many workers as cores), and
//! sends a presence-shaped JSON message of the same size to every watcher of the changed user.
//! What it leaves out is everything that makes a presence server: no durable write, no facts,
//! no aggregation, no visibility, no token hashing, no coalescing of pending updates. The
//! outgoing path keeps Ampel's shape: each connection has a queue and a writer that feeds every
//! queued frame and then flushes once.
//!
//! By default it uses Ampel's socket settings (`TCP_NODELAY`, Ampel's WebSocket buffer
//! sizes, the writer in a task of its own), so that the two are compared
//! like for like. [`Options`] can change each of them, so that the cost of those choices can be
//! measured on their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

/// Stands in for the timestamps of Ampel's messages, so that the sizes match.
const INSTANT: &str = "2026-01-01T12:00:00.123456789Z";

/// How the broadcaster runs its connections.
#[derive(Clone, Copy, Debug, clap::Args)]
pub struct Options {
    /// Runs each connection's writer and reader in one task under `select!`, as Ampel does,
    /// instead of giving the writer a task of its own.
    #[arg(long)]
    pub joined_writer: bool,
    /// The WebSocket read buffer, bytes (tungstenite's `read_buffer_size`; Ampel's is 1 KiB,
    /// tungstenite's default 128 KiB).
    #[arg(long, default_value_t = 1024)]
    pub read_buffer: usize,
    /// The WebSocket write buffer, bytes (tungstenite's `write_buffer_size`; Ampel's is 2 KiB,
    /// tungstenite's default 128 KiB).
    #[arg(long, default_value_t = 2048)]
    pub write_buffer: usize,
    /// Leaves Nagle's algorithm on, as axum's `serve` does; Ampel sets `TCP_NODELAY` on every
    /// accepted connection, and so does the broadcaster without this flag.
    #[arg(long)]
    pub nagle: bool,
}

impl Options {
    /// The command-line arguments that give these options to a child process.
    pub fn to_args(self) -> Vec<String> {
        let mut args = vec![
            format!("--read-buffer={}", self.read_buffer),
            format!("--write-buffer={}", self.write_buffer),
        ];
        if self.joined_writer {
            args.push("--joined-writer".to_owned());
        }
        if self.nagle {
            args.push("--nagle".to_owned());
        }
        args
    }
}

struct Bare {
    options: Options,
    admin: String,
    users: RwLock<HashMap<String, Arc<User>>>,
    tokens: RwLock<HashMap<String, String>>,
}

struct User {
    id: String,
    state: Mutex<Utf8Bytes>,
    watchers: Mutex<Vec<mpsc::UnboundedSender<Utf8Bytes>>>,
}

/// Runs the broadcaster until the process is killed.
pub fn serve(data: PathBuf, http: SocketAddr, options: Options) -> anyhow::Result<()> {
    let admin = format!("bare-admin-{}", std::process::id());
    std::fs::create_dir_all(&data)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(http).await?;
        let bare = Arc::new(Bare {
            options,
            admin: admin.clone(),
            users: RwLock::default(),
            tokens: RwLock::default(),
        });
        // The token file is written once the port is bound, as Ampel does on its first start.
        std::fs::write(data.join("admin.token"), format!("{admin}\n"))?;
        if !options.nagle {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router(bare)).await?;
        } else {
            axum::serve(listener, router(bare)).await?;
        }
        anyhow::Ok(())
    })
}

fn router(bare: Arc<Bare>) -> Router {
    let api = Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}/tokens", post(create_token))
        .route("/users/{id}/presence/manual", put(set_manual))
        .route("/users/{id}/sessions", post(open_session))
        .route("/users/{id}/sessions/{sid}", put(heartbeat))
        .route("/ws", get(websocket));
    Router::new().nest("/api/v1", api).route("/healthz", get(|| async { "ok\n" })).with_state(bare)
}

impl Bare {
    fn admin(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match presented.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) if token == self.admin => Ok(()),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }

    fn user(&self, id: &str) -> Result<Arc<User>, StatusCode> {
        self.users.read().expect("users lock").get(id).cloned().ok_or(StatusCode::NOT_FOUND)
    }
}

impl User {
    /// Replaces the state and queues it for every watcher.
    fn broadcast(&self, message: Utf8Bytes) {
        *self.state.lock().expect("state lock") = message.clone();
        for watcher in self.watchers.lock().expect("watchers lock").iter() {
            let _ = watcher.send(message.clone());
        }
    }
}

/// A presence message shaped and sized like Ampel's projection for a colleague: a manual
/// status carries its note and `since`, a device's state `since` and a second instant (Ampel's
/// `until` for a busy device, `last_active` for an active one).
fn presence(user: &str, availability: &str, note: Option<&str>) -> Utf8Bytes {
    let color = match availability {
        "available" => "green",
        "busy" | "do-not-disturb" => "red",
        "away" | "be-right-back" => "yellow",
        _ => "grey",
    };
    let tail = match note {
        Some(n) => {
            format!(r#""note":{{"text":{}}},"since":"{INSTANT}""#, serde_json::Value::from(n))
        }
        None => format!(r#""since":"{INSTANT}","last_active":"{INSTANT}""#),
    };
    Utf8Bytes::from(format!(
        r#"{{"user":"{user}","color":"{color}","availability":"{availability}","activity":"{availability}","idle":false,"out_of_office":false,{tail}}}"#
    ))
}

#[derive(Deserialize)]
struct NewUser {
    id: String,
}

async fn create_user(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<NewUser>,
) -> Result<StatusCode, StatusCode> {
    bare.admin(&headers)?;
    let user = User {
        state: Mutex::new(presence(&body.id, "offline", None)),
        id: body.id.clone(),
        watchers: Mutex::default(),
    };
    bare.users.write().expect("users lock").insert(body.id, Arc::new(user));
    Ok(StatusCode::CREATED)
}

async fn create_token(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, StatusCode> {
    bare.admin(&headers)?;
    let user = bare.user(&id)?;
    let token = format!("bare-{}", user.id);
    bare.tokens.write().expect("tokens lock").insert(token.clone(), user.id.clone());
    Ok((StatusCode::CREATED, axum::Json(serde_json::json!({ "token": token }))).into_response())
}

#[derive(Deserialize)]
struct Manual {
    availability: String,
    note: Option<String>,
}

async fn set_manual(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Manual>,
) -> Result<Response, StatusCode> {
    bare.admin(&headers)?;
    let user = bare.user(&id)?;
    let message = presence(&user.id, &body.availability, body.note.as_deref());
    user.broadcast(message.clone());
    let json = [(header::CONTENT_TYPE, "application/json")];
    Ok((json, message.as_str().to_owned()).into_response())
}

async fn open_session(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, StatusCode> {
    bare.admin(&headers)?;
    let user = bare.user(&id)?;
    user.broadcast(presence(&user.id, "available", None));
    let view = serde_json::json!({ "session_id": format!("s-{}", user.id), "heartbeat_s": 60 });
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

#[derive(Deserialize)]
struct Heartbeat {
    state: String,
}

async fn heartbeat(
    State(bare): State<Arc<Bare>>,
    headers: HeaderMap,
    Path((id, sid)): Path<(String, String)>,
    axum::Json(body): axum::Json<Heartbeat>,
) -> Result<Response, StatusCode> {
    bare.admin(&headers)?;
    let user = bare.user(&id)?;
    let availability = if body.state == "active" { "available" } else { body.state.as_str() };
    user.broadcast(presence(&user.id, availability, None));
    let view = serde_json::json!({ "session_id": sid, "heartbeat_s": 60 });
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize)]
struct Access {
    access_token: String,
}

#[derive(Deserialize)]
struct Command {
    #[serde(default)]
    subscribe: Vec<String>,
}

async fn websocket(
    State(bare): State<Arc<Bare>>,
    Query(access): Query<Access>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !bare.tokens.read().expect("tokens lock").contains_key(&access.access_token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let options = bare.options;
    upgrade
        .read_buffer_size(options.read_buffer)
        .write_buffer_size(options.write_buffer)
        .on_upgrade(move |socket| serve_socket(bare, socket))
}

async fn serve_socket(bare: Arc<Bare>, socket: WebSocket) {
    let (sink, incoming) = socket.split();
    let (queue, pending) = mpsc::unbounded_channel::<Utf8Bytes>();
    let writer = write(sink, pending);
    let reader = read(&bare, incoming, queue);
    if bare.options.joined_writer {
        tokio::select! {
            () = writer => {}
            () = reader => {}
        }
    } else {
        let writer = tokio::spawn(writer);
        reader.await;
        writer.abort();
    }
}

/// Feeds everything queued, then writes it in one go, as Ampel's writer does.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut pending: mpsc::UnboundedReceiver<Utf8Bytes>,
) {
    while let Some(first) = pending.recv().await {
        let mut next = Some(first);
        while let Some(message) = next {
            if sink.feed(Message::Text(message)).await.is_err() {
                return;
            }
            next = pending.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Follows the subscribe commands: each subscription queues a snapshot and joins the user's
/// watchers.
async fn read(
    bare: &Bare,
    mut incoming: SplitStream<WebSocket>,
    queue: mpsc::UnboundedSender<Utf8Bytes>,
) {
    while let Some(Ok(message)) = incoming.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(command) = serde_json::from_str::<Command>(text.as_str()) else { continue };
        for id in &command.subscribe {
            let Ok(user) = bare.user(id) else { continue };
            let mut watchers = user.watchers.lock().expect("watchers lock");
            let _ = queue.send(user.state.lock().expect("state lock").clone());
            watchers.push(queue.clone());
        }
    }
}
