//! Live presence over Server-Sent Events and WebSocket.
//!
//! Both send a snapshot of every watched user first and then every change of what the watcher
//! may see, each once; nothing is sent for a change the watcher cannot see. Each message is the
//! same JSON object that `GET /users/{id}/presence` returns. A watcher that reads slowly gets
//! the latest state of each user, not a backlog (see `hub::watch`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::presence::{UsersQuery, users_of};
use crate::App;
use crate::auth::Caller;
use crate::hub::watch::Conn;
use crate::problem::{Problem, Query, parse_json};

/// The largest command a WebSocket client may send, in bytes.
const MAX_COMMAND: usize = 256 * 1024;

/// How much a WebSocket reads at once. Clients send only short commands; tungstenite fills this
/// much with zeros before every read, and keeps it for the life of the connection.
const READ_BUFFER: usize = 1024;

/// How many bytes of queued frames go to the socket in one write: about ten notifications.
/// tungstenite keeps a buffer of up to twice this for the life of the connection, which at 100
/// subscriptions per connection is a large share of what each of them costs.
const WRITE_BUFFER: usize = 2048;

/// The most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/stream", get(stream)).route("/ws", get(websocket))
}

/// Ends a connection's subscriptions when its stream or socket is dropped, however that happens.
struct Watching {
    app: Arc<App>,
    conn: Arc<Conn>,
}

impl Watching {
    fn new(app: &Arc<App>, caller: crate::auth::Principal) -> Watching {
        app.hub.metrics.watch_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Watching { app: Arc::clone(app), conn: Arc::new(Conn::new(caller)) }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.app.hub.close(&self.conn);
        self.app.hub.metrics.watch_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Server-Sent Events: `event: presence` with the presence as `data`, a snapshot first.
#[utoipa::path(get, path = "/api/v1/stream", tag = "push", params(UsersQuery),
    responses((status = 200, content_type = "text/event-stream", description = "presence events"),
        (status = 400, description = "The request is malformed", body = Problem), (status = 404, description = "No such user or session", body = Problem)))]
pub async fn stream(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Query(query): Query<UsersQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let slots = users_of(&app, &query.users)?;
    let watching = Watching::new(&app, caller);
    for slot in &slots {
        app.hub.watch(&watching.conn, slot);
    }
    let events =
        futures_util::stream::unfold((watching, Vec::new()), |(watching, mut batch)| async move {
            batch.clear();
            watching.conn.next_batch(&mut batch).await?;
            let events: Vec<Result<Event, Infallible>> =
                batch.iter().map(|b| Ok(sse_event(b))).collect();
            Some((futures_util::stream::iter(events), (watching, batch)))
        })
        .flatten();
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn sse_event(update: &Bytes) -> Event {
    // The projection is serde_json output: valid UTF-8 without newlines.
    Event::default().event("presence").data(String::from_utf8_lossy(update))
}

/// What a WebSocket client may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    unsubscribe: Vec<String>,
}

/// WebSocket: presence objects as text messages, a snapshot of each user on subscription.
/// Subscribe with `?users=` or by sending `{"subscribe": [...]}`; `{"unsubscribe": [...]}`
/// stops. A bad command is answered with `{"error": PROBLEM}` and the connection stays open.
#[utoipa::path(get, path = "/api/v1/ws", tag = "push",
    responses((status = 101, description = "switching to WebSocket"), (status = 401, description = "No valid token", body = Problem)))]
pub async fn websocket(
    State(app): State<Arc<App>>,
    Caller(caller): Caller,
    Query(query): Query<OptionalUsers>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let initial = match query.users.as_deref().map(|u| users_of(&app, u)).transpose() {
        Ok(slots) => slots.unwrap_or_default(),
        Err(problem) => return problem.into_response(),
    };
    upgrade
        .max_message_size(MAX_COMMAND)
        .max_frame_size(MAX_COMMAND)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(1024 * 1024)
        .on_upgrade(move |socket| async move {
            let watching = Arc::new(Watching::new(&app, caller));
            for slot in &initial {
                app.hub.watch(&watching.conn, slot);
            }
            serve_socket(socket, watching).await;
        })
}

/// `?users=` for the WebSocket, which may also start without.
#[derive(Debug, Deserialize)]
pub struct OptionalUsers {
    users: Option<String>,
}

/// What the reader asks the writer to send besides presence updates.
enum Reply {
    Problem(Bytes),
    /// Close with this frame, or, after the client's close, flush the answer to it.
    Close(Option<CloseFrame>),
}

async fn serve_socket(socket: WebSocket, watching: Arc<Watching>) {
    let (mut sink, incoming) = socket.split();
    let (replies, mut reply_rx) = mpsc::channel::<Reply>(16);
    let conn = Arc::clone(&watching.conn);
    let mut stopping = watching.app.stopping.clone();
    let writer = async move {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            tokio::select! {
                // An upgraded connection is no longer the HTTP server's to close.
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                    let frame = close(close_code::AWAY, "the server is stopping");
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
                more = conn.next_batch(&mut batch) => if more.is_none() { return },
                reply = reply_rx.recv() => match reply {
                    Some(Reply::Problem(body)) => batch.push(body),
                    Some(Reply::Close(Some(frame))) => {
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        return;
                    }
                    Some(Reply::Close(None)) => {
                        // The WebSocket layer queued the answer to the client's close frame.
                        let _ = sink.close().await;
                        return;
                    }
                    None => return,
                },
            }
            // Queue every message of the batch, then write them in one go. A client that does
            // not read fills the write buffer up to its limit, and then the connection ends.
            for update in batch.drain(..) {
                let Ok(text) = Utf8Bytes::try_from(update) else { return };
                if sink.feed(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    // The reader runs in a task of its own, so that waking the writer for every update does not
    // poll the socket's read side too.
    let reader = tokio::spawn(read_commands(Arc::clone(&watching), incoming, replies));
    writer.await;
    reader.abort();
}

/// Reads the client's commands and hands replies to the writer; returns when the client is gone
/// or closed the connection.
async fn read_commands(
    watching: Arc<Watching>,
    mut incoming: futures_util::stream::SplitStream<WebSocket>,
    replies: mpsc::Sender<Reply>,
) {
    loop {
        let reply = match incoming.next().await {
            None => return,
            Some(Ok(Message::Text(text))) => {
                command(&watching, text.as_bytes()).err().map(problem_reply)
            }
            Some(Ok(Message::Binary(_))) => {
                Some(problem_reply(Problem::bad_request("send commands as text messages")))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Ok(Message::Close(_))) => Some(Reply::Close(None)),
            Some(Err(e)) => Some(Reply::Close(Some(close_for(&e)))),
        };
        let closing = matches!(reply, Some(Reply::Close(_)));
        if let Some(reply) = reply
            && replies.send(reply).await.is_err()
        {
            return;
        }
        if closing {
            return;
        }
        // A command may touch a thousand users; let other connections and requests run.
        tokio::task::yield_now().await;
    }
}

fn problem_reply(problem: Problem) -> Reply {
    Reply::Problem(Bytes::from(serde_json::json!({ "error": problem }).to_string()))
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: Utf8Bytes::from_static(reason) }
}

/// The close frame for a protocol fault of the client (RFC 6455 §7.4.1).
fn close_for(error: &axum::Error) -> CloseFrame {
    let text = error.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        close(close_code::SIZE, "message too big")
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        close(close_code::INVALID, "text is not UTF-8")
    } else {
        close(close_code::PROTOCOL, "protocol error")
    }
}

fn command(watching: &Watching, text: &[u8]) -> Result<(), Problem> {
    let command: Command = parse_json(text)?;
    let app = &watching.app;
    let joined = command.subscribe.join(",");
    let subscribe = if command.subscribe.is_empty() {
        Vec::new()
    } else {
        users_of(app, &joined).map_err(|p| p.field("subscribe"))?
    };
    if watching.conn.watched_count() + subscribe.len() > MAX_SUBSCRIPTIONS {
        return Err(Problem::bad_request(format!(
            "at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
        )));
    }
    for slot in &subscribe {
        app.hub.watch(&watching.conn, slot);
    }
    for id in &command.unsubscribe {
        if let Ok(slot) = super::user(app, id) {
            app.hub.unwatch(&watching.conn, &slot);
        }
    }
    Ok(())
}
