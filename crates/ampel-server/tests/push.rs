//! Live presence over WebSocket and Server-Sent Events against a real server: a snapshot first,
//! then every change once, nothing for a change nobody can see, and changes that happen by
//! themselves pushed without any request.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::Server;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &Server, token: &str, users: &str) -> Socket {
    let url = format!("ws://{}/api/v1/ws?users={users}&access_token={token}", s.running.http);
    tokio_tungstenite::connect_async(url).await.expect("websocket connects").0
}

async fn next(ws: &mut Socket) -> Value {
    let message =
        tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a message arrives");
    match message.unwrap().unwrap() {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn silent(ws: &mut Socket) {
    let r = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(r.is_err(), "no message expected, got {r:?}");
}

#[tokio::test]
async fn websocket_sends_a_snapshot_then_each_change_once() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    let bob = s.user("bob@example.com", &["sales"]).await;
    let mut ws = connect(&s, &bob, "alice@example.com").await;

    let snapshot = next(&mut ws).await;
    assert_eq!(
        (snapshot["user"].as_str(), snapshot["availability"].as_str()),
        (Some("alice@example.com"), Some("offline"))
    );

    s.session("alice@example.com", &alice).await;
    assert_eq!(next(&mut ws).await["availability"], "available");

    let manual = "/api/v1/users/alice@example.com/presence/manual";
    s.call("PUT", manual, &alice, Some(json!({"availability": "busy", "note": "Call me later"})))
        .await;
    let busy = next(&mut ws).await;
    assert_eq!(
        (busy["availability"].as_str(), busy["note"]["text"].as_str()),
        (Some("busy"), Some("Call me later"))
    );

    // The same status again changes a fact but not the aggregate: nothing is sent.
    s.call("PUT", manual, &alice, Some(json!({"availability": "busy", "note": "Call me later"})))
        .await;
    silent(&mut ws).await;

    s.call("DELETE", manual, &alice, None).await;
    assert_eq!(next(&mut ws).await["availability"], "available");
    silent(&mut ws).await;
}

#[tokio::test]
async fn websocket_commands_subscribe_unsubscribe_and_bad_ones_get_a_problem() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let url = format!("ws://{}/api/v1/ws", s.running.http);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {bob}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    ws.send(Message::text(r#"{"subscribe": ["alice@example.com"]}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["user"], "alice@example.com");

    ws.send(Message::text(r#"{"subscribe": ["ghost@example.com"]}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["error"]["status"], 404);
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut ws).await["error"]["status"], 400);

    ws.send(Message::text(r#"{"unsubscribe": ["alice@example.com"]}"#)).await.unwrap();
    // The unsubscribe is handled before the next command; the error proves it was read.
    ws.send(Message::text(r#"{"nonsense": 1}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["error"]["status"], 422);
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    silent(&mut ws).await;
}

#[tokio::test]
async fn a_manual_status_with_an_end_time_ends_by_itself_and_watchers_are_told() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    let mut ws = connect(&s, &bob, "alice@example.com").await;
    assert_eq!(next(&mut ws).await["availability"], "available");

    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    let body = json!({"availability": "do-not-disturb", "until": until.to_string()});
    s.call("PUT", "/api/v1/users/alice@example.com/presence/manual", &alice, Some(body)).await;
    let dnd = next(&mut ws).await;
    assert_eq!(dnd["availability"], "do-not-disturb");
    assert_eq!(dnd["until"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), until);

    let back = next(&mut ws).await;
    assert_eq!(back["availability"], "available");
    assert!(back.get("until").is_none());
    silent(&mut ws).await;
}

#[tokio::test]
async fn server_sent_events_send_a_snapshot_then_changes() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let response = s
        .http
        .get(format!("{}/api/v1/stream?users=alice@example.com,bob@example.com", s.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut read_events = async |n: usize, events: &mut Vec<Value>| {
        while events.len() < n {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(event.starts_with("event: presence\n"), "{event}");
                    events.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    };
    read_events(2, &mut events).await;
    let mut users: Vec<&str> = events.iter().map(|e| e["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["alice@example.com", "bob@example.com"]);

    s.manual("alice@example.com", &alice, json!({"availability": "away"})).await;
    read_events(3, &mut events).await;
    assert_eq!(
        (events[2]["user"].as_str(), events[2]["availability"].as_str()),
        (Some("alice@example.com"), Some("away"))
    );

    let unknown = s
        .http
        .get(format!("{}/api/v1/stream?users=ghost@example.com", s.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_watcher_that_does_not_read_gets_the_latest_state_not_a_backlog() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let hub = &s.running.app.hub;
    let slot = hub.user("alice@example.com").unwrap();
    let conn = std::sync::Arc::new(ampel_server::hub::watch::Conn::new(
        ampel_server::auth::Principal::User("bob@example.com".into()),
    ));
    hub.watch(&conn, &slot);

    let manual = "/api/v1/users/alice@example.com/presence/manual";
    for i in 0..100 {
        let availability = ["busy", "away"][i % 2];
        s.call(
            "PUT",
            manual,
            &alice,
            Some(json!({"availability": availability, "note": format!("n{i}")})),
        )
        .await;
    }
    let mut batch = Vec::new();
    conn.next_batch(&mut batch).await.unwrap();
    assert_eq!(batch.len(), 1, "one pending update per watched user");
    let latest: Value = serde_json::from_slice(&batch[0]).unwrap();
    assert_eq!(latest["note"]["text"], "n99");
    hub.close(&conn);
    let _ = bob;
}

#[tokio::test]
async fn a_watcher_who_gets_blocked_sees_offline_at_once() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let carol = s.user("carol@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    let mut ws = connect(&s, &carol, "alice@example.com").await;
    assert_eq!(next(&mut ws).await["availability"], "available");

    let block = json!({"blocked": ["carol@example.com"]});
    s.call("PUT", "/api/v1/users/alice@example.com/privacy", &alice, Some(block)).await;
    assert_eq!(next(&mut ws).await["availability"], "offline");
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    silent(&mut ws).await;

    s.call("PUT", "/api/v1/users/alice@example.com/privacy", &alice, Some(json!({"blocked": []})))
        .await;
    assert_eq!(next(&mut ws).await["availability"], "busy");
}

#[tokio::test]
async fn a_server_that_stops_closes_its_websockets_as_going_away() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let mut ws = connect(&s, &alice, "alice@example.com").await;
    assert_eq!(next(&mut ws).await["user"], "alice@example.com");

    s.running.stop().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the socket hears of the stop");
    match message {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
}
