//! Regression tests for faults found by throwing bad input at a running server: each is named
//! after the fault it pins.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn socket(
    s: &Server,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{}/api/v1/ws?access_token={token}", s.running.http);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("the connection broke instead of closing: {e}"),
            None => return None,
        }
    }
}

#[tokio::test]
async fn websocket_close_from_the_client_is_answered_with_a_close_frame() {
    let s = Server::start().await;
    let bob = s.user("bob@example.com", &[]).await;
    let mut ws = socket(&s, &bob).await;
    let bye = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
}

#[tokio::test]
async fn websocket_message_over_the_limit_is_closed_with_1009() {
    let s = Server::start().await;
    let bob = s.user("bob@example.com", &[]).await;
    let mut ws = socket(&s, &bob).await;
    let huge = format!("{{\"subscribe\": [\"{}\"]}}", "x".repeat(300 * 1024));
    let _ = ws.send(Message::text(huge)).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
}

#[tokio::test]
async fn concurrent_creation_of_one_user_succeeds_exactly_once() {
    let s = Server::start().await;
    let attempts = (0..20).map(|i| {
        let body = json!({"id": "race@example.com", "name": format!("n{i}")});
        s.call("POST", "/api/v1/users", &s.admin, Some(body))
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.into_iter().map(|(st, _)| st).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 19, "{statuses:?}");
}

#[tokio::test]
async fn framework_rejections_are_problems_too() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let (status, problem) = s.call("DELETE", "/api/v1/users", &s.admin, None).await;
    assert_eq!((status, problem["status"].as_u64()), (405, Some(405)));
    let (status, problem) = s.call("GET", "/api/v1/users/%FF/presence", &alice, None).await;
    assert_eq!((status, problem["status"].as_u64()), (400, Some(400)));
    let (status, problem) = s.call("GET", "/api/v1/ws", &alice, None).await;
    assert!(
        status >= 400 && problem["status"].as_u64() == Some(u64::from(status)),
        "{status} {problem}"
    );
}

#[tokio::test]
async fn a_token_in_the_query_is_taken_only_by_the_push_endpoints() {
    let s = Server::start().await;
    let url = format!("{}/api/v1/users?access_token={}", s.base, s.admin);
    let response =
        s.http.post(url).json(&json!({"id": "q@example.com", "name": "Q"})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = s
        .http
        .get(format!("{}/api/v1/users", s.base))
        .header("authorization", "Bearer  ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = s
        .http
        .get(format!("{}/api/v1/users", s.base))
        .header("authorization", format!("bearer {}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the scheme is case-insensitive");
}

#[tokio::test]
async fn only_json_in_utf8_is_read() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    for content_type in
        ["application/notjson", "image/fakejson", "application/json; charset=iso-8859-1"]
    {
        let response = s
            .http
            .put(format!("{}/api/v1/users/alice@example.com/presence/manual", s.base))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(r#"{"availability": "busy"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
    }
}

#[tokio::test]
async fn spoofing_text_and_malformed_addresses_are_refused() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    for id in ["e@example..com", "f@example.com-", "..@example.com", "a@-x.com"] {
        let (status, problem) =
            s.call("POST", "/api/v1/users", &s.admin, Some(json!({"id": id, "name": "X"}))).await;
        assert_eq!((status, problem["field"].as_str()), (422, Some("id")), "{id}");
    }
    let (status, problem) = s
        .call(
            "POST",
            "/api/v1/users",
            &s.admin,
            Some(json!({"id": "z@example.com", "name": "\u{200b}"})),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("name")));
    let manual = "/api/v1/users/alice@example.com/presence/manual";
    let body = json!({"availability": "busy", "note": "back at 16:00 \u{202e}00:01"});
    let (status, problem) = s.call("PUT", manual, &alice, Some(body)).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("note")));
    let body = json!({"availability": "busy", "note": {"text": "x", "colour": "red"}});
    assert_eq!(s.call("PUT", manual, &alice, Some(body)).await.0, 422);
}

#[tokio::test]
async fn appearing_offline_cannot_be_told_from_being_offline() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let manual = "/api/v1/users/alice@example.com/presence/manual";
    let (_, offline) = s.call("GET", "/api/v1/users/alice@example.com/presence", &bob, None).await;

    s.session("alice@example.com", &alice).await;
    let (status, problem) = s
        .call(
            "PUT",
            manual,
            &alice,
            Some(json!({"availability": "offline", "activity": "in-a-call"})),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("activity")));
    let (status, _) = s
        .call(
            "PUT",
            manual,
            &alice,
            Some(json!({"availability": "offline", "activity": "off-work", "note": "secret"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, hidden) = s.call("GET", "/api/v1/users/alice@example.com/presence", &bob, None).await;
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().retain(|k, _| !["since", "last_active"].contains(&k.as_str()));
        v
    };
    assert_eq!(strip(&hidden), strip(&offline));
}

#[tokio::test]
async fn a_request_body_that_never_arrives_does_not_hold_the_server() {
    let s = Server::start().await;
    let mut stream = tokio::net::TcpStream::connect(s.running.http).await.unwrap();
    let head = format!(
        "PUT /api/v1/users/x@example.com/presence/manual HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{",
        s.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let health = s.http.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status(), 200, "other clients are served meanwhile");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the stalled request is ended by the server");
}

#[tokio::test]
async fn one_client_flooding_a_users_status_is_slowed_down_with_429() {
    // The allowance refills with the server's clock; on a loaded machine the requests could
    // come slower than it refills, so here the clock stands still.
    let s = Server::start_with(ampel_core::Policy::default(), Arc::new(StandingClock)).await;
    let alice = s.user("alice@example.com", &[]).await;
    let mut refused = None;
    for i in 0..400 {
        let availability = ["busy", "away"][i % 2];
        let body = json!({ "availability": availability });
        let response = s
            .http
            .put(format!("{}/api/v1/users/alice@example.com/presence/manual", s.base))
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            refused = Some((i, response.headers()["retry-after"].to_str().unwrap().to_owned()));
            break;
        }
    }
    let (after, retry) = refused.expect("the flood is refused");
    assert!(after >= 100, "a burst of ordinary size is taken: refused after {after}");
    assert!(retry.parse::<u64>().unwrap() >= 1);
    let (status, _) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(status, 200, "reading is not limited");
}

/// A clock that always reads the same instant.
struct StandingClock;

impl ampel_server::clock::Clock for StandingClock {
    fn now(&self) -> jiff::Timestamp {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }
}
