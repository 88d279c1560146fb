//! A private calendar entry makes its owner busy, and none of its words leave Ampel: not in a
//! presence answer, the explanation, the history, a Server-Sent Events or WebSocket push, the
//! calendar API, or an info-level log line.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::calendar::Calendars;
use ampel_server::calendar::source::{CalendarSection, FileSource, Kind, SourceConfig};
use ampel_server::clock::TokioClock;
use ampel_server::server_file::ServerFile;
use futures_util::StreamExt;
use support::Server;

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const SECRETS: [&str; 4] = ["Doctor appointment", "Clinic", "referral", "Bring"];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
    }
}

#[tokio::test]
async fn no_word_of_a_private_entry_leaves_through_any_interface() {
    support::capture_log();

    let dir = tempfile::tempdir().unwrap();
    let ics =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/C10-private-event.ics");
    let source = SourceConfig {
        kind: Kind::File,
        location: ics.to_string_lossy().into(),
        username: None,
        password: None,
    };
    let calendar = CalendarSection {
        sources: vec![FileSource { user: ALICE.into(), name: "private".into(), source }],
        ..CalendarSection::default()
    };
    let config = ampel_server::Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(TokioClock::starting_at("2026-04-21T08:30:00Z".parse().unwrap())),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file: ServerFile { calendar, ..Default::default() },
    };
    let running = ampel_server::start(config).await.expect("server starts");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
    let base = format!("http://{}", running.http);
    let s = Server { running, admin, base, dir, http: reqwest::Client::new() };
    let alice = s.user(ALICE, &["team"]).await;
    let bob = s.user(BOB, &["team"]).await;

    // Bob watches Alice over both push channels before the calendar is read.
    let sse = s
        .http
        .get(format!("{}/api/v1/stream?users={ALICE}", s.base))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    let ws_url = format!("ws://{}/api/v1/ws?users={ALICE}&access_token={bob}", s.running.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    Calendars::poll_once(&s.running.app).await;

    let mut answers = Vec::new();
    for token in [&alice, &bob, &s.admin] {
        for path in [
            format!("/api/v1/users/{ALICE}/presence"),
            format!("/api/v1/presence?users={ALICE}"),
            format!("/api/v1/users/{ALICE}/presence/explain"),
            format!("/api/v1/users/{ALICE}/history"),
            format!("/api/v1/users/{ALICE}/calendars"),
        ] {
            answers.push((path.clone(), s.call("GET", &path, token, None).await.1.to_string()));
        }
    }
    let (_, presence) = s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &bob, None).await;
    assert_eq!(
        (presence["availability"].as_str(), presence["until"].as_str()),
        (Some("busy"), Some("2026-04-21T09:00:00Z"))
    );
    assert_eq!(presence["note"]["text"], "In a meeting until 09:00");

    let mut pushed = String::new();
    let mut body = sse.bytes_stream();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), body.next()).await
    {
        pushed.push_str(&String::from_utf8_lossy(&chunk));
    }
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(500), ws.next()).await
    {
        pushed.push_str(&message.to_string());
    }
    assert!(pushed.contains("in-a-meeting"), "the pushes carry the meeting: {pushed}");
    assert_clean("a push", &pushed);
    for (path, answer) in &answers {
        assert_clean(path, answer);
    }
    let log = support::captured_log();
    assert!(log.contains("calendar read"), "the log was captured: {log}");
    assert_clean("the info log", &log);
}
