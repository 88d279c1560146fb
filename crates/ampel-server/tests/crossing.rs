//! Where Ampel's parts meet, each tested against real parts: Teams presence and Graph calendars
//! read from the Graph emulator, and an iCalendar file, steering the call routing decision; and
//! a private calendar entry (case C10, both its iCalendar and its Graph half) whose words stay
//! inside through every interface: routing answers, announcements, the Graph-shaped facade, SIP
//! NOTIFY bodies, the calls the web page makes and the info-level log.

#[path = "support/graph_emulator.rs"]
mod graph_emulator;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::calendar::Calendars;
use ampel_server::calendar::source::{CalendarSection, FileSource, Kind, SourceConfig};
use ampel_server::clock::{Clock, SystemClock, TokioClock};
use ampel_server::server_file::ServerFile;
use ampel_server::sip::SipSettings;
use ampel_sip::message::{self, Message};
use graph_emulator::Emulator;
use serde_json::{Value, json};
use support::{Server, eventually};
use tokio::net::UdpSocket;

const ALICE: &str = "alice@example.com";
const ALICE_OID: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";
const BOB: &str = "bob@example.com";
/// A caller from outside the company, in London.
const EXTERNAL: &str = "+44 20 7946 0958";

/// Alice (Berlin, English) and Bob, colleagues in one team; returns Bob's token.
async fn alice_and_bob(s: &Server) -> String {
    let alice = json!({"id": ALICE, "name": "Alice Example", "groups": ["team"],
        "tz": "Europe/Berlin", "lang": "en"});
    let bob = json!({"id": BOB, "name": "Bob Builder", "groups": ["team"], "phone": "2001"});
    for body in [alice, bob] {
        let (status, answer) = s.call("POST", "/api/v1/users", &s.admin, Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, token) =
        s.call("POST", &format!("/api/v1/users/{BOB}/tokens"), &s.admin, None).await;
    assert_eq!(status, 201, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

/// Calls for Alice go to Bob while she is in a meeting or away.
async fn absence_target_bob(s: &Server) {
    let settings = json!({"absence_target": format!("user:{BOB}")});
    let path = format!("/api/v1/users/{ALICE}/routing");
    let (status, stored) = s.call("PUT", &path, &s.admin, Some(settings)).await;
    assert_eq!(status, 200, "{stored}");
}

async fn route(s: &Server, from: &str) -> Value {
    let body = json!({"from": from, "to": ALICE, "lang": "en-GB"});
    let (status, decision) = s.call("POST", "/api/v1/route", &s.admin, Some(body)).await;
    assert_eq!(status, 200, "{decision}");
    decision
}

/// Waits until a call from `from` to Alice is decided by `reason`, and returns the decision.
async fn route_is(s: &Server, from: &str, reason: &str) -> Value {
    eventually(&format!("a call decided by {reason}"), || async {
        let d = route(s, from).await;
        (d["reason"] == reason, d)
    })
    .await
}

/// A server connected to the emulator, polling it often, on a port it holds from the start
/// (named as the notification URL when `notified`).
async fn graph_server(emu: &Emulator, clock: Arc<dyn Clock>, notified: bool) -> Server {
    let listener = support::listener().await;
    let mut extra = "poll_interval = \"300ms\"\ncalendar_interval = \"300ms\"\n\
                     contacts_interval = \"300ms\"\n"
        .to_owned();
    if notified {
        let http = listener.local_addr().unwrap();
        extra.push_str(&format!("notification_url = \"http://{http}/graph/notifications\"\n"));
    }
    let file = ServerFile::from_toml(&emu.config(&[(ALICE, ALICE_OID)], &extra)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    Server::start_on(dir, Policy::default(), clock, listener, file).await
}

fn clock_at(now: &str) -> Arc<dyn Clock> {
    Arc::new(TokioClock::starting_at(now.parse().unwrap()))
}

/// A Graph date and time in UTC.
fn utc(at: &str) -> Value {
    json!({"dateTime": format!("{at}.0000000"), "timeZone": "UTC"})
}

#[tokio::test]
async fn a_teams_call_makes_the_user_busy_and_a_parallel_pbx_call_is_refused() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    let s = graph_server(&emu, Arc::new(SystemClock), true).await;
    let bob = alice_and_bob(&s).await;
    eventually("a subscription", || async { (!emu.subscriptions().is_empty(), Value::Null) }).await;
    route_is(&s, EXTERNAL, "default").await;

    emu.set_client(ALICE_OID, "Busy", "InACall").await;
    let p = eventually("alice in a Teams call", || async {
        let p = s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &bob, None).await.1;
        (p["activity"] == "in-a-call", p)
    })
    .await;
    assert_eq!(p["availability"], "busy");
    let d = route(&s, EXTERNAL).await;
    assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("busy"), Some("in-a-call")));
    assert!(d["explanation"].as_str().unwrap().contains("rule `in-a-call` matched"), "{d}");
    let d = route(&s, "2001").await;
    assert_eq!(d["action"], "busy", "a colleague's call is refused too: {d}");

    // The Teams call ends, and calls ring again.
    emu.set_client(ALICE_OID, "Available", "Available").await;
    let d = route_is(&s, EXTERNAL, "default").await;
    assert_eq!(d["action"], "ring");
}

#[tokio::test]
async fn a_graph_meeting_forwards_calls_to_the_absence_target_until_it_ends() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    emu.add_event(ALICE_OID, json!({
        "id": "AAMk-meeting", "subject": "Design review", "sensitivity": "normal", "showAs": "busy",
        "isAllDay": false, "isCancelled": false, "responseStatus": {"response": "accepted"},
        "start": utc("2026-12-03T09:30:00"), "end": utc("2026-12-03T11:00:00"),
    }));
    let s = graph_server(&emu, clock_at("2026-12-03T10:00:00Z"), false).await;
    alice_and_bob(&s).await;
    absence_target_bob(&s).await;

    let d = route_is(&s, "2001", "in-a-meeting").await;
    assert_eq!(d["action"], "forward");
    assert_eq!(d["target"], "sip:bob@example.com");
    assert_eq!(d["until"], "2026-12-03T11:00:00Z");
    let d = route(&s, EXTERNAL).await;
    assert_eq!(
        (d["reason"].as_str(), d["action"].as_str()),
        (Some("in-a-meeting-external"), Some("forward"))
    );
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is in a meeting until 12 pm. Your call is being forwarded."
    );
    assert!(!d.to_string().contains("Design review"), "{d}");
}

#[tokio::test]
async fn a_graph_meeting_added_moved_cancelled_and_deleted_between_rounds_steers_calls() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    // A free entry beside the meeting, so that every full round takes more than one page.
    emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-focus", "subject": "Focus time", "sensitivity": "normal", "showAs": "free",
            "start": utc("2026-12-03T08:00:00"), "end": utc("2026-12-03T16:00:00"),
        }),
    );
    let s = graph_server(&emu, clock_at("2026-12-03T10:00:00Z"), false).await;
    let bob = alice_and_bob(&s).await;
    absence_target_bob(&s).await;
    let presence =
        || async { s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &bob, None).await.1 };
    let rounds = emu.delta_rounds(ALICE_OID);
    eventually("a delta round", || async { (emu.delta_rounds(ALICE_OID) > rounds, Value::Null) })
        .await;
    route_is(&s, "2001", "default").await;

    // Added: calls go to Bob until the meeting ends.
    emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-sync", "subject": "Weekly sync", "sensitivity": "normal", "showAs": "busy",
            "isAllDay": false, "isCancelled": false, "responseStatus": {"response": "accepted"},
            "start": utc("2026-12-03T09:45:00"), "end": utc("2026-12-03T10:30:00"),
        }),
    );
    let d = route_is(&s, "2001", "in-a-meeting").await;
    assert_eq!(
        (d["action"].as_str(), d["until"].as_str()),
        (Some("forward"), Some("2026-12-03T10:30:00Z"))
    );

    // Moved to the afternoon: Alice is free now, and the meeting waits in her facts.
    emu.change_event(
        ALICE_OID,
        "AAMk-sync",
        json!({
            "start": utc("2026-12-03T14:00:00"), "end": utc("2026-12-03T15:00:00"),
        }),
    );
    route_is(&s, "2001", "default").await;
    let (_, why) =
        s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &s.admin, None).await;
    let sync = why["facts"].as_array().unwrap().iter().find(|f| f["key"] == "graph:AAMk-sync");
    assert_eq!(sync.map(|f| &f["verdict"]["verdict"]), Some(&json!("not-started")), "{why}");

    // Moved back to now and longer: busy until its new end.
    emu.change_event(
        ALICE_OID,
        "AAMk-sync",
        json!({
            "start": utc("2026-12-03T09:50:00"), "end": utc("2026-12-03T11:15:00"),
        }),
    );
    let p = eventually("the meeting moved back", || async {
        let p = presence().await;
        (p["until"] == "2026-12-03T11:15:00Z", p)
    })
    .await;
    assert_eq!(p["activity"], "in-a-meeting");
    assert_eq!(route(&s, "2001").await["until"], "2026-12-03T11:15:00Z");

    // Cancelled by its organiser: calls ring again.
    emu.change_event(ALICE_OID, "AAMk-sync", json!({"isCancelled": true}));
    route_is(&s, "2001", "default").await;
    assert_eq!(presence().await["activity"], "available");

    // Restored, then deleted: busy again, then free with no fact left behind.
    emu.change_event(ALICE_OID, "AAMk-sync", json!({"isCancelled": false}));
    route_is(&s, "2001", "in-a-meeting").await;
    emu.delete_event(ALICE_OID, "AAMk-sync");
    route_is(&s, "2001", "default").await;
    let (_, why) =
        s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &s.admin, None).await;
    let keys: Vec<&str> =
        why["facts"].as_array().unwrap().iter().filter_map(|f| f["key"].as_str()).collect();
    assert!(!keys.contains(&"graph:AAMk-sync"), "{why}");

    // Every read was a delta request; none read the whole calendar view.
    let requests = emu.requests();
    assert!(requests.iter().all(|r| !r.contains("/calendarView -> ")), "{requests:#?}");
    let path = format!("GET /v1.0/users/{ALICE_OID}/calendarView/delta -> 200");
    assert!(requests.iter().filter(|r| **r == path).count() > 6, "{requests:#?}");
}

#[tokio::test]
async fn a_meeting_written_in_a_windows_time_zone_forwards_calls_until_its_end_in_utc() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    // 10:30 to 12:15 in Berlin, as Outlook writes a meeting set up there: 09:30 to 11:15 UTC.
    let berlin = |at: &str| json!({"dateTime": at, "timeZone": "W. Europe Standard Time"});
    emu.add_event(ALICE_OID, json!({
        "id": "AAMk-berlin", "subject": "Budget", "sensitivity": "normal", "showAs": "busy",
        "isAllDay": false, "isCancelled": false, "responseStatus": {"response": "accepted"},
        "start": berlin("2026-12-03T10:30:00.0000000"), "end": berlin("2026-12-03T12:15:00.0000000"),
    }));

    // Graph answers in the zone a client prefers, and in UTC for a client that prefers none.
    let view = "/users/a1b2c3d4-0000-4000-8000-00000000a11c/calendarView\
                ?startDateTime=2026-12-03T00:00:00Z&endDateTime=2026-12-04T00:00:00Z";
    let prefer = [("Prefer", "outlook.timezone=\"Eastern Standard Time\"")];
    let (status, applied, body) = emu.get(view, &prefer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(applied.as_deref(), Some("outlook.timezone=\"Eastern Standard Time\""));
    let event = &body["value"][0];
    assert_eq!(
        event["start"],
        json!({"dateTime": "2026-12-03T04:30:00.0000000", "timeZone": "Eastern Standard Time"})
    );
    assert_eq!(event["originalStartTimeZone"], "W. Europe Standard Time");
    let (_, applied, body) = emu.get(view, &[]).await;
    assert_eq!(applied, None);
    assert_eq!(body["value"][0]["end"], utc("2026-12-03T11:15:00"));

    let s = graph_server(&emu, clock_at("2026-12-03T10:00:00Z"), false).await;
    alice_and_bob(&s).await;
    absence_target_bob(&s).await;
    let d = route_is(&s, "2001", "in-a-meeting").await;
    assert_eq!(
        (d["action"].as_str(), d["until"].as_str()),
        (Some("forward"), Some("2026-12-03T11:15:00Z"))
    );
    let d = route(&s, EXTERNAL).await;
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is in a meeting until 12:15 pm. Your call is being forwarded."
    );
}

#[tokio::test]
async fn the_calendar_window_moves_on_at_the_mailbox_midnight() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    // Sunday morning in Berlin: beyond the window of Thursday, within Friday's.
    emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-sunday", "subject": "Hike", "sensitivity": "normal", "showAs": "oof",
            "start": utc("2026-12-06T08:00:00"), "end": utc("2026-12-06T12:00:00"),
        }),
    );
    // Five seconds before midnight in Berlin.
    let s = graph_server(&emu, clock_at("2026-12-03T22:59:55Z"), false).await;
    alice_and_bob(&s).await;
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
    let thursday = (at("2026-12-02T23:00:00Z"), at("2026-12-05T23:00:00Z"));
    let friday = (at("2026-12-03T23:00:00Z"), at("2026-12-06T23:00:00Z"));

    let why = eventually("a full sync of the new day's window", || async {
        let (_, why) =
            s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &s.admin, None).await;
        let held = why["facts"].as_array().unwrap().iter().any(|f| f["key"] == "graph:AAMk-sunday");
        (emu.delta_windows(ALICE_OID).contains(&friday) && held, why)
    })
    .await;
    let windows = emu.delta_windows(ALICE_OID);
    assert_eq!(windows.first(), Some(&thursday), "{windows:?}");
    assert_eq!(windows.last(), Some(&friday), "{windows:?}");
    let sunday = why["facts"].as_array().unwrap().iter().find(|f| f["key"] == "graph:AAMk-sunday");
    assert_eq!(sunday.unwrap()["verdict"]["verdict"], "not-started");
}

#[tokio::test]
async fn an_all_day_graph_absence_tells_an_external_caller_when_the_user_is_back() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    // Graph gives an all-day event in UTC midnights that mean the mailbox's own day.
    emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-vacation", "subject": "Vacation", "showAs": "oof", "isAllDay": true,
            "start": utc("2026-12-03T00:00:00"), "end": utc("2026-12-04T00:00:00"),
        }),
    );
    // Thursday, 3 December, 11:00 in Berlin.
    let s = graph_server(&emu, clock_at("2026-12-03T10:00:00Z"), false).await;
    let bob = alice_and_bob(&s).await;

    let d = route_is(&s, EXTERNAL, "out-of-office-external").await;
    assert_eq!(d["action"], "voicemail");
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is out of the office and back on Friday, 4 December. Please leave a \
         message after the tone."
    );
    let (_, p) = s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &bob, None).await;
    assert_eq!(
        (p["out_of_office"].as_bool(), p["until"].as_str()),
        (Some(true), Some("2026-12-03T23:00:00Z"))
    );
    let d = route(&s, "2001").await;
    assert_eq!((d["reason"].as_str(), d["action"].as_str()), (Some("out-of-office"), Some("ring")));
}

#[tokio::test]
async fn a_caller_in_the_callees_microsoft_365_contacts_is_named_in_the_routing_answer() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    // Written nationally in the mailbox; the PBX gives the number as E.164.
    emu.add_contact(
        ALICE_OID,
        json!({"displayName": "Carol Customer", "businessPhones": [],
               "homePhones": ["020 7946 0958"], "mobilePhone": null}),
    );
    let s = graph_server(&emu, Arc::new(SystemClock), false).await;
    let bob = alice_and_bob(&s).await;

    let d = eventually("the caller named", || async {
        let d = route(&s, EXTERNAL).await;
        (d["caller"]["name"] == "Carol Customer", d)
    })
    .await;
    assert_eq!(
        d["caller"],
        json!({"number": "+442079460958", "name": "Carol Customer", "origin": "graph"})
    );
    // Still an external caller: a contact is no colleague. Alice's contacts are hers: they
    // name the caller to her and to an administrator, not to Bob.
    let lookup = "/api/v1/lookup?number=%2B442079460958";
    let (status, token) =
        s.call("POST", &format!("/api/v1/users/{ALICE}/tokens"), &s.admin, None).await;
    assert_eq!(status, 201, "{token}");
    let alice = token["token"].as_str().unwrap().to_owned();
    let (_, found) = s.call("GET", lookup, &alice, None).await;
    assert_eq!(found["name"], "Carol Customer", "{found}");
    assert_eq!(found.get("user"), None, "{found}");
    let (_, found) = s.call("GET", lookup, &s.admin, None).await;
    assert_eq!(found["name"], "Carol Customer", "{found}");
    let (_, found) = s.call("GET", lookup, &bob, None).await;
    assert_eq!(found, json!({"number": "+442079460958"}), "{found}");
    // A number in nobody's contacts stays unnamed.
    let d = route(&s, "+44 20 7946 0000").await;
    assert_eq!(d["caller"], json!({"number": "+442079460000"}));
}

/// The words of case C10 that no interface may ever show.
fn secrets() -> Vec<String> {
    let text = std::fs::read_to_string(data("C10-private-event.expect.json")).unwrap();
    let expect: Value = serde_json::from_str(&text).unwrap();
    let words: Vec<String> = expect["must_not_appear"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    assert!(words.contains(&"Salary review".to_owned()), "{words:?}");
    words
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The info-level log holds lines of this server, and none of the private words.
fn assert_clean_log() {
    let log = support::captured_log();
    assert!(log.contains("ampel is serving"), "the log was captured: {log}");
    assert_clean("the info log", &log);
}

fn assert_clean(what: &str, text: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} shows {secret:?}: {text}");
    }
}

/// Everything Bob (a teammate, who sees the most) and the PBX get to read about Alice: the
/// routing decisions with their announcements, the Graph-shaped facade, and the web page's
/// calls; each answer with the place it came from.
async fn everything_about_alice(s: &Server, bob: &str) -> Vec<(String, String)> {
    let mut answers = Vec::new();
    for from in [EXTERNAL, "2001"] {
        answers.push((format!("route from {from}"), route(s, from).await.to_string()));
    }
    let ids = json!({"ids": [ALICE]});
    let batch = "/graph/v1.0/communications/getPresencesByUserId";
    answers.push((batch.to_owned(), s.call("POST", batch, bob, Some(ids)).await.1.to_string()));
    for path in [
        format!("/graph/v1.0/users/{ALICE}/presence"),
        "/api/v1/users".to_owned(),
        format!("/api/v1/users/{ALICE}/presence/explain"),
        format!("/api/v1/users/{ALICE}/presence"),
    ] {
        answers.push((path.clone(), s.call("GET", &path, bob, None).await.1.to_string()));
    }
    answers
}

/// Subscribes to Alice's presence over SIP as Bob and returns the first NOTIFY's body.
async fn notify_body(sip: SocketAddr) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = socket.local_addr().unwrap();
    let subscribe = format!(
        "SUBSCRIBE sip:{ALICE} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcrossing1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{BOB}>;tag=crossing\r\nTo: <sip:{ALICE}>\r\n\
         Call-ID: crossing-{port}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:bob@{me}>\r\n\
         Event: presence\r\nAccept: application/pidf+xml\r\nExpires: 600\r\n\
         Content-Length: 0\r\n\r\n",
        port = me.port()
    );
    socket.send_to(subscribe.as_bytes(), sip).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        match message::parse(&buf[..n], true).unwrap().0 {
            Message::Response(r) => assert_eq!(r.status, 200, "the subscription is taken"),
            Message::Request(r) if r.method == "NOTIFY" => {
                let ok = r.response(200, "OK", None).to_bytes();
                socket.send_to(&ok, sip).await.unwrap();
                return String::from_utf8(r.body).unwrap();
            }
            Message::Request(r) => panic!("unexpected {}", r.method),
        }
    }
}

#[tokio::test]
async fn a_private_ics_meeting_forwards_calls_until_it_ends_and_none_of_its_words_leave() {
    support::capture_log();
    // C10's private entry runs from 08:00 to 09:00 UTC; the clock starts ten seconds before
    // its end.
    let source = SourceConfig {
        kind: Kind::File,
        location: data("C10-private-event.ics").to_string_lossy().into(),
        username: None,
        password: None,
    };
    let calendar = CalendarSection {
        sources: vec![FileSource { user: ALICE.into(), name: "private".into(), source }],
        ..CalendarSection::default()
    };
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        authenticate: false,
        ..Default::default()
    };
    let file = ServerFile { calendar, sip, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let clock = clock_at("2026-04-21T08:59:50Z");
    let s = Server::start_on(dir, Policy::default(), clock, support::listener().await, file).await;
    let bob = alice_and_bob(&s).await;
    absence_target_bob(&s).await;
    Calendars::poll_once(&s.running.app).await;

    let d = route(&s, "2001").await;
    assert_eq!(
        (d["action"].as_str(), d["reason"].as_str()),
        (Some("forward"), Some("in-a-meeting"))
    );
    assert_eq!(
        (d["target"].as_str(), d["until"].as_str()),
        (Some("sip:bob@example.com"), Some("2026-04-21T09:00:00Z"))
    );
    let d = route(&s, EXTERNAL).await;
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is in a meeting until 11 am. Your call is being forwarded."
    );
    for (what, answer) in everything_about_alice(&s, &bob).await {
        assert_clean(&what, &answer);
    }
    let body = notify_body(s.running.sip.as_ref().unwrap().local).await;
    assert!(body.contains("<presence") && body.contains("meeting"), "{body}");
    assert_clean("a NOTIFY", &body);

    // At nine the entry ends, and calls ring again without anyone asking.
    let d = route_is(&s, "2001", "default").await;
    assert_eq!(d["action"], "ring");
    assert_clean_log();
}

#[tokio::test]
async fn a_private_graph_meeting_makes_the_user_busy_and_none_of_its_words_leave() {
    support::capture_log();
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    let text = std::fs::read_to_string(data("C10-private-event.graph.json")).unwrap();
    let view: Value = serde_json::from_str(&text).unwrap();
    for event in view["value"].as_array().unwrap() {
        emu.add_event(ALICE_OID, event.clone());
    }
    // C10's check: at 10:10 the private entry makes Alice busy until 10:30.
    let s = graph_server(&emu, clock_at("2026-04-21T10:10:00Z"), false).await;
    let bob = alice_and_bob(&s).await;
    absence_target_bob(&s).await;

    let p = eventually("alice busy in the private meeting", || async {
        let p = s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), &bob, None).await.1;
        (p["activity"] == "in-a-meeting", p)
    })
    .await;
    assert_eq!(
        (p["availability"].as_str(), p["until"].as_str()),
        (Some("busy"), Some("2026-04-21T10:30:00Z"))
    );
    let d = route(&s, EXTERNAL).await;
    assert_eq!(
        (d["action"].as_str(), d["until"].as_str()),
        (Some("forward"), Some("2026-04-21T10:30:00Z"))
    );
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is in a meeting until 12:30 pm. Your call is being forwarded."
    );
    for (what, answer) in everything_about_alice(&s, &bob).await {
        assert_clean(&what, &answer);
    }
    let (_, graph) = s.call("GET", "/graph/v1.0/me/presence", &bob, None).await;
    assert_clean("Bob's own Graph presence", &graph.to_string());
    assert_clean_log();
}
