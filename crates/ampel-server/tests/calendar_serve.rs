//! A server whose user has an Outlook-style calendar file: the presence says "in a meeting
//! until ..." at the right instants on both sides of the spring DST change, the change at a
//! meeting's start is pushed by the timers without a poll, and live calls and manual statuses
//! still win over the plan.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::calendar::Calendars;
use ampel_server::calendar::source::{CalendarSection, FileSource, Kind, SourceConfig};
use ampel_server::clock::TokioClock;
use ampel_server::server_file::ServerFile;
use serde_json::{Value, json};
use support::Server;

const ALICE: &str = "alice@example.com";

/// A server whose clock reads `now` at start, with Alice's calendar from `file`.
async fn serve_at(now: &str, file: &str, lang: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(file);
    let source = SourceConfig {
        kind: Kind::File,
        location: path.to_string_lossy().into_owned(),
        username: None,
        password: None,
    };
    let calendar = CalendarSection {
        sources: vec![FileSource { user: ALICE.into(), name: "outlook".into(), source }],
        ..CalendarSection::default()
    };
    let config = ampel_server::Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(TokioClock::starting_at(now.parse().unwrap())),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file: ServerFile { calendar, ..Default::default() },
    };
    let running = ampel_server::start(config).await.expect("server starts");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
    let base = format!("http://{}", running.http);
    let server = Server { running, admin, base, dir, http: reqwest::Client::new() };
    let user = json!({"id": ALICE, "name": "Alice", "tz": "Europe/Berlin", "lang": lang});
    let (status, body) = server.call("POST", "/api/v1/users", &server.admin, Some(user)).await;
    assert_eq!(status, 201, "{body}");
    Calendars::poll_once(&server.running.app).await;
    server
}

async fn presence(server: &Server) -> Value {
    let (status, p) =
        server.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &server.admin, None).await;
    assert_eq!(status, 200, "{p}");
    p
}

fn summary(p: &Value) -> (String, String, String, String) {
    let s = |k: &str| p[k].as_str().unwrap_or("-").to_owned();
    (s("availability"), s("activity"), s("until"), p["note"]["text"].as_str().unwrap_or("-").into())
}

#[tokio::test]
async fn before_the_dst_change_the_meeting_is_at_nine_central_european_time() {
    let server = serve_at("2026-03-23T08:15:00Z", "outlook-weekly.ics", "en").await;
    let want = ("busy", "in-a-meeting", "2026-03-23T09:00:00Z", "In a meeting until 10:00");
    let got = summary(&presence(&server).await);
    assert_eq!((&*got.0, &*got.1, &*got.2, &*got.3), want);

    // The subject shows to Alice herself, not to a colleague.
    let bob = server.user("bob@example.com", &[]).await;
    let (_, alice) =
        server.call("POST", &format!("/api/v1/users/{ALICE}/tokens"), &server.admin, None).await;
    let alice = alice["token"].as_str().unwrap();
    let path = format!("/api/v1/users/{ALICE}/presence");
    assert_eq!(server.call("GET", &path, alice, None).await.1["subject"], "Team planning");
    let seen_by_bob = server.call("GET", &path, &bob, None).await.1;
    assert_eq!(seen_by_bob["availability"], "busy");
    assert!(!seen_by_bob.to_string().contains("Team planning"), "{seen_by_bob}");

    // A live call beats the plan; when it ends the plan is back.
    let call = |state: &str| json!({"user": ALICE, "call_id": "c1", "state": state});
    let events = "/api/v1/telephony/events";
    assert_eq!(server.call("POST", events, &server.admin, Some(call("connected"))).await.0, 204);
    assert_eq!(presence(&server).await["activity"], "in-a-call");
    assert_eq!(server.call("POST", events, &server.admin, Some(call("ended"))).await.0, 204);
    assert_eq!(presence(&server).await["activity"], "in-a-meeting");

    // The meeting ended early: a manual status set now wins over the rest of the plan.
    let available = json!({"availability": "available"});
    assert_eq!(server.manual(ALICE, &server.admin, available).await.0, 200);
    assert_eq!(presence(&server).await["availability"], "available");
}

#[tokio::test]
async fn after_the_dst_change_the_timers_start_the_meeting_at_nine_summer_time() {
    // Two seconds before 09:00 CEST on the Monday after the change.
    let server = serve_at("2026-03-30T06:59:58Z", "outlook-weekly.ics", "de").await;
    assert_eq!(presence(&server).await["availability"], "offline");

    let mut p = presence(&server).await;
    for _ in 0..100 {
        if p["availability"] == "busy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        p = presence(&server).await;
    }
    // Back-to-back with the follow-up: busy until 10:30 local, changed exactly at 09:00 local.
    let got = summary(&p);
    let want = ("busy", "in-a-meeting", "2026-03-30T08:30:00Z", "In einer Besprechung bis 10:30");
    assert_eq!((&*got.0, &*got.1, &*got.2, &*got.3), want);
    assert_eq!(p["since"], "2026-03-30T07:00:00Z");
    assert_eq!(p["note"]["lang"], "de");
}

#[tokio::test]
async fn the_explanation_names_the_calendar_source_and_its_standing() {
    let server = serve_at("2026-03-23T08:15:00Z", "outlook-weekly.ics", "en").await;
    let path = format!("/api/v1/users/{ALICE}/presence/explain");
    let (status, explain) = server.call("GET", &path, &server.admin, None).await;
    assert_eq!(status, 200, "{explain}");
    assert_eq!(explain["rule"], "calendar-busy");
    assert_eq!(explain["calendars"][0]["name"], "outlook");
    assert_eq!(explain["calendars"][0]["standing"], "ok");
    assert_eq!(explain["calendars"][0]["events"], 3);
}

#[tokio::test]
async fn an_all_day_absence_is_out_of_office_until_local_midnight() {
    let server = serve_at("2026-04-02T10:00:00Z", "outlook-weekly.ics", "en").await;
    let p = presence(&server).await;
    let got = summary(&p);
    let want =
        ("away", "out-of-office", "2026-04-03T22:00:00Z", "Out of office until Sat 4 Apr 00:00");
    assert_eq!((&*got.0, &*got.1, &*got.2, &*got.3), want);
    assert_eq!(p["out_of_office"], true);
}

#[tokio::test]
async fn a_source_taken_out_of_the_configuration_leaves_no_facts_after_a_restart() {
    let server = serve_at("2026-03-23T08:15:00Z", "outlook-weekly.ics", "en").await;
    let app = &server.running.app;
    assert!(!app.hub.facts(&app.hub.user(ALICE).unwrap()).is_empty());

    let Server { running, dir, .. } = server;
    running.stop().await.unwrap();
    let config = ampel_server::Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(TokioClock::starting_at("2026-03-23T08:16:00Z".parse().unwrap())),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file: ServerFile::default(),
    };
    let running = ampel_server::start(config).await.expect("server restarts");
    let slot = running.app.hub.user(ALICE).unwrap();
    for _ in 0..100 {
        if running.app.hub.facts(&slot).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running.app.hub.facts(&slot).is_empty(), "{:?}", running.app.hub.facts(&slot));
}
