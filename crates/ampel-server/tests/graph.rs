//! The Microsoft 365 connector end to end over HTTP against the Graph emulator: Teams presence
//! in through subscriptions and polling, PBX calls out as a presence session, calendars,
//! throttling and token faults, lifecycle notifications, and the Graph-shaped facade.

#[path = "support/graph_emulator.rs"]
mod graph_emulator;
mod support;

use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::clock::SystemClock;
use ampel_server::server_file::ServerFile;
use graph_emulator::{CLIENT_ID, Emulator};
use serde_json::{Value, json};
use support::{Server, eventually};

const ALICE: &str = "alice@example.com";
const ALICE_OID: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

struct Setup {
    s: Server,
    emu: Emulator,
    alice: String,
    http: std::net::SocketAddr,
}

/// An emulator with Alice's mailbox in Berlin, and Ampel connected to it with short intervals.
async fn setup(extra: &str) -> Setup {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    let listener = support::listener().await;
    let http = listener.local_addr().unwrap();
    let defaults = [
        format!("notification_url = \"http://{http}/graph/notifications\""),
        "poll_interval = \"300ms\"".to_owned(),
        "refresh_interval = \"1s\"".to_owned(),
        "calendar_interval = \"300ms\"".to_owned(),
        "contacts_interval = \"300ms\"".to_owned(),
    ];
    // A key the test names itself replaces the default.
    let mut lines: Vec<String> = defaults
        .into_iter()
        .filter(|line| !extra.contains(line.split(" =").next().unwrap()))
        .collect();
    lines.push(extra.to_owned());
    let extra = lines.join("\n");
    let file = ServerFile::from_toml(&emu.config(&[(ALICE, ALICE_OID)], &extra)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_on(dir, Policy::default(), Arc::new(SystemClock), listener, file).await;
    let alice = s.user(ALICE, &[]).await;
    Setup { s, emu, alice, http }
}

/// A server for this server configuration file, on a port of the system's choosing.
async fn start(dir: tempfile::TempDir, policy: Policy, file: ServerFile) -> Server {
    Server::start_on(dir, policy, Arc::new(SystemClock), support::listener().await, file).await
}

async fn presence(s: &Server, token: &str) -> Value {
    s.call("GET", &format!("/api/v1/users/{ALICE}/presence"), token, None).await.1
}

/// Waits until Ampel has read no Teams presence for a moment, and returns how many requests it
/// had sent the emulator by then: the reads that the start and Alice's creation cause may still
/// be under way when her presence first shows.
async fn settled(t: &Setup) -> usize {
    let reads = |requests: &[String]| {
        requests.iter().filter(|r| r.contains("/communications/getPresencesByUserId")).count()
    };
    let mut seen = reads(&t.emu.requests());
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let requests = t.emu.requests();
        if reads(&requests) == seen {
            return requests.len();
        }
        seen = reads(&requests);
    }
}

async fn presence_is(t: &Setup, availability: &str, activity: &str) -> Value {
    let what = format!("alice {availability}/{activity}");
    eventually(&what, || async {
        let p = presence(&t.s, &t.alice).await;
        (p["availability"] == availability && p["activity"] == activity, p)
    })
    .await
}

#[tokio::test]
async fn a_teams_call_makes_the_user_busy_in_a_call_through_a_validated_subscription() {
    let t = setup("").await;
    let subs = eventually("a subscription", || async {
        let subs = t.emu.subscriptions();
        (!subs.is_empty(), json!(subs.len()))
    })
    .await;
    assert_eq!(subs, 1);
    assert_eq!(t.emu.subscriptions()[0].1, vec![ALICE_OID.to_owned()]);

    presence_is(&t, "available", "available").await;
    t.emu.set_client(ALICE_OID, "Busy", "InACall").await;
    let p = presence_is(&t, "busy", "in-a-call").await;
    assert_eq!(p["color"], "red");
    let (_, why) =
        t.s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &t.alice, None).await;
    assert_eq!(why["rule"], "call");
    assert_eq!(why["facts"][0]["source"], "teams");

    t.emu.set_client(ALICE_OID, "DoNotDisturb", "Presenting").await;
    presence_is(&t, "do-not-disturb", "presenting").await;
    t.emu.set_client(ALICE_OID, "Away", "Away").await;
    presence_is(&t, "away", "away").await;
}

#[tokio::test]
async fn a_pbx_call_shows_in_teams_as_in_a_call_and_clears_at_hang_up_without_echo() {
    let t = setup("").await;
    presence_is(&t, "available", "available").await;
    let event = |state: &str| json!({"user": ALICE, "call_id": "pbx-1", "state": state});
    let (status, _) =
        t.s.call("POST", "/api/v1/telephony/events", &t.s.admin, Some(event("connected"))).await;
    assert_eq!(status, 204);

    let sessions = eventually("a teams session", || async {
        let sessions = t.emu.sessions(ALICE_OID);
        (!sessions.is_empty(), json!(sessions))
    })
    .await;
    assert_eq!(sessions, json!([[CLIENT_ID, "Busy", "InACall"]]));
    assert_eq!(t.emu.presence(ALICE_OID), ("Busy".to_owned(), "InACall".to_owned()));
    presence_is(&t, "busy", "in-a-call").await;

    // Teams now reports Busy/InACall, which is Ampel's own write: it must not become a Teams
    // call that outlives the PBX call.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, why) =
        t.s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &t.alice, None).await;
    let teams: Vec<&Value> =
        why["facts"].as_array().unwrap().iter().filter(|f| f["source"] == "teams").collect();
    assert!(teams.iter().all(|f| f["state"]["activity"] != "in-a-call"), "{why}");

    t.s.call("POST", "/api/v1/telephony/events", &t.s.admin, Some(event("ended"))).await;
    eventually("the session cleared", || async {
        let sessions = t.emu.sessions(ALICE_OID);
        (sessions.is_empty(), json!(sessions))
    })
    .await;
    assert_eq!(t.emu.presence(ALICE_OID), ("Available".to_owned(), "Available".to_owned()));
    presence_is(&t, "available", "available").await;
    assert!(
        t.emu
            .requests()
            .iter()
            .any(|r| r == &format!("POST /v1.0/users/{ALICE_OID}/presence/clearPresence -> 200"))
    );
}

/// Today's date in Berlin, as Graph writes an all-day event's start given in UTC.
fn berlin_today() -> (String, String, jiff::Timestamp) {
    let now = jiff::Timestamp::now().in_tz("Europe/Berlin").unwrap();
    let today = now.date();
    let tomorrow = today.tomorrow().unwrap();
    let midnight = tomorrow.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap()).unwrap();
    (today.to_string(), tomorrow.to_string(), midnight.timestamp())
}

fn utc(t: jiff::Timestamp) -> Value {
    json!({"dateTime": t.strftime("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"})
}

#[tokio::test]
async fn a_calendar_meeting_and_an_all_day_absence_show_correctly_and_private_subjects_stay_inside()
{
    let t = setup("").await;
    let now = jiff::Timestamp::now();
    let minutes = |m: i64| now.checked_add(jiff::SignedDuration::from_mins(m)).unwrap();
    let meeting_end = minutes(20).round(jiff::Unit::Second).unwrap();
    t.emu.add_event(ALICE_OID, json!({
        "id": "AAMk-meeting", "subject": "Design review", "sensitivity": "normal", "showAs": "busy",
        "isAllDay": false, "isCancelled": false, "responseStatus": {"response": "accepted"},
        "start": utc(minutes(-10)), "end": utc(meeting_end),
    }));
    t.emu.add_event(ALICE_OID, json!({
        "id": "AAMk-private", "subject": "Salary review", "sensitivity": "private", "showAs": "busy",
        "isAllDay": false, "isCancelled": false,
        "start": utc(minutes(-5)), "end": utc(minutes(15)),
    }));
    t.emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-cancelled", "subject": "Old sync", "showAs": "busy", "isCancelled": true,
            "start": utc(minutes(-5)), "end": utc(minutes(50)),
        }),
    );

    let p = presence_is(&t, "busy", "in-a-meeting").await;
    assert_eq!(p["until"], meeting_end.to_string());
    let (_, why) =
        t.s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &t.alice, None).await;
    let keys: Vec<&str> = why["facts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["source"] == "calendar")
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2, "{why}");
    assert!(!keys.contains(&"graph:AAMk-cancelled"));

    let (today, tomorrow, berlin_midnight) = berlin_today();
    t.emu.add_event(
        ALICE_OID,
        json!({
            "id": "AAMk-vacation", "subject": "Vacation", "showAs": "oof", "isAllDay": true,
            "start": {"dateTime": format!("{today}T00:00:00.0000000"), "timeZone": "UTC"},
            "end": {"dateTime": format!("{tomorrow}T00:00:00.0000000"), "timeZone": "UTC"},
        }),
    );
    let p = presence_is(&t, "away", "out-of-office").await;
    assert_eq!(p["out_of_office"], true);
    assert_eq!(p["until"], berlin_midnight.to_string());

    // The private subject is nowhere in what Ampel answers.
    let (_, why) =
        t.s.call("GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &t.alice, None).await;
    let everything = format!("{why}{}", presence(&t.s, &t.alice).await);
    assert!(!everything.contains("Salary review"), "{everything}");
}

#[tokio::test]
async fn a_429_storm_is_ridden_out_with_retry_after() {
    let t = setup("").await;
    presence_is(&t, "available", "available").await;
    t.emu.fail_next(&[429, 429, 503, 429, 429]);
    t.emu.set_client(ALICE_OID, "Busy", "InACall").await;
    presence_is(&t, "busy", "in-a-call").await;
    let requests = t.emu.requests();
    assert!(requests.iter().filter(|r| r.ends_with("-> 429")).count() >= 4, "{requests:?}");
    assert!(requests.iter().any(|r| r.ends_with("-> 503")), "{requests:?}");

    let (_, metrics) = t.s.call("GET", "/metrics", "", None).await;
    let retried = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ampel_graph_requests_total{outcome=\"retried\"} "))
        .unwrap();
    assert!(retried.parse::<u64>().unwrap() >= 5, "{metrics}");
}

#[tokio::test]
async fn an_expired_token_is_fetched_anew_and_the_secret_is_never_shown() {
    let t = setup("").await;
    presence_is(&t, "available", "available").await;
    let before = t.emu.token_requests();
    t.emu.expire_tokens();
    t.emu.set_client(ALICE_OID, "Busy", "InAMeeting").await;
    presence_is(&t, "busy", "in-a-meeting").await;
    assert!(t.emu.token_requests() > before);
    assert!(t.emu.requests().iter().any(|r| r.ends_with("-> 401")));

    let config = format!("{:?}", t.s.running.app.graph.as_ref().unwrap().config);
    assert!(!config.contains(graph_emulator::CLIENT_SECRET), "{config}");
}

#[tokio::test]
async fn a_notification_with_a_wrong_client_state_is_ignored() {
    // Neither polling, nor looking for new users, nor the refresh reads Teams presence during
    // this test: only the reads at the start (of everyone, and of Alice when she is created)
    // and one read per valid notification.
    let t = setup("poll_interval = \"1h\"\nrefresh_interval = \"1h\"").await;
    eventually("a subscription", || async {
        let subscriptions = t.emu.subscriptions();
        (!subscriptions.is_empty(), json!(subscriptions.len()))
    })
    .await;
    t.emu.set_client(ALICE_OID, "Away", "Away").await;
    presence_is(&t, "away", "away").await;
    // The reads are done, so none still under way can see what comes next.
    let reads = || {
        let reads = t.emu.requests();
        reads
            .iter()
            .filter(|r| r.starts_with("POST /v1.0/communications/getPresencesByUserId"))
            .count()
    };
    settled(&t).await;
    let done = reads();
    assert!((2..=3).contains(&done), "{done} reads");

    t.emu.set_client_quietly(ALICE_OID, "Busy", "InACall");
    let url = format!("http://{}/graph/notifications", t.http);
    assert_eq!(t.emu.forge_notification(&url, ALICE_OID, "guessed").await, 202);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let requests = t.emu.requests();
    assert_eq!(reads(), done, "{requests:#?}");
    assert_eq!(presence(&t.s, &t.alice).await["availability"], "away", "{requests:#?}");

    // The validation handshake echoes the token as plain text.
    let answer = reqwest::Client::new()
        .post(format!("{url}?validationToken=abc%3A+def"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["content-type"], "text/plain");
    assert_eq!(answer.text().await.unwrap(), "abc: def");
}

#[tokio::test]
async fn lifecycle_notifications_renew_recreate_and_resync() {
    let t = setup("refresh_interval = \"1h\"").await;
    eventually("a subscription", || async { (!t.emu.subscriptions().is_empty(), Value::Null) })
        .await;
    let (first, _, _) = t.emu.subscriptions()[0].clone();

    assert_eq!(t.emu.lifecycle(&first, "reauthorizationRequired").await, 202);
    eventually("a renewal", || async {
        let patched = t
            .emu
            .requests()
            .iter()
            .any(|r| r.starts_with(&format!("PATCH /v1.0/subscriptions/{first}")));
        (patched, Value::Null)
    })
    .await;

    t.emu.set_client_quietly(ALICE_OID, "Busy", "Busy");
    assert_eq!(t.emu.lifecycle(&first, "missed").await, 202);
    presence_is(&t, "busy", "busy").await;

    assert_eq!(t.emu.lifecycle(&first, "subscriptionRemoved").await, 202);
    let subs = eventually("a new subscription", || async {
        let subs = t.emu.subscriptions();
        (subs.len() == 1 && subs[0].0 != first, json!(subs.len()))
    })
    .await;
    assert_eq!(subs, 1);
}

#[tokio::test]
async fn subscriptions_are_renewed_before_they_expire() {
    let t = setup("subscription_lifetime = \"3s\"\nrenew_before = \"2s\"").await;
    eventually("a subscription", || async { (!t.emu.subscriptions().is_empty(), Value::Null) })
        .await;
    let (id, _, first_expiry) = t.emu.subscriptions()[0].clone();
    eventually("a later expiry", || async {
        let subs = t.emu.subscriptions();
        (subs.len() == 1 && subs[0].0 == id && subs[0].2 > first_expiry, Value::Null)
    })
    .await;
}

#[tokio::test]
async fn without_a_notification_url_presence_is_polled() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "UTC");
    let text = emu.config(&[(ALICE, ALICE_OID)], "poll_interval = \"200ms\"");
    let file = ServerFile::from_toml(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir, Policy::default(), file).await;
    let alice = s.user(ALICE, &[]).await;
    emu.set_client(ALICE_OID, "Busy", "InAConferenceCall").await;
    eventually("polled presence", || async {
        let p = presence(&s, &alice).await;
        (p["activity"] == "in-a-conference-call", p)
    })
    .await;
    assert!(emu.subscriptions().is_empty());
    assert!(emu.requests().iter().all(|r| !r.contains("/subscriptions")));
}

#[tokio::test]
async fn graph_being_down_does_not_stop_other_sources() {
    let t = setup("attempts = 2").await;
    presence_is(&t, "available", "available").await;
    t.emu.fail_next(&[503; 200]);
    let (status, p) =
        t.s.manual(ALICE, &t.alice, json!({"availability": "busy", "activity": "focusing"})).await;
    assert_eq!((status, p["activity"].as_str()), (200, Some("focusing")));
}

#[tokio::test]
async fn contacts_are_looked_up_by_number() {
    let t = setup("").await;
    t.emu.add_contact(
        ALICE_OID,
        json!({"displayName": "Carol Customer",
        "businessPhones": ["+49 30 1234567"], "homePhones": [], "mobilePhone": null}),
    );
    let graph = t.s.running.app.graph.clone().unwrap();
    let found = eventually("the contact", || {
        let graph = Arc::clone(&graph);
        async move {
            let c = graph.contacts.lookup(Some(ALICE), "030 1234567");
            (c.is_some(), json!(c.map(|c| c.name)))
        }
    })
    .await;
    assert_eq!(found, "Carol Customer");
}

#[tokio::test]
async fn more_than_650_users_are_split_into_batches_graph_accepts() {
    let emu = Emulator::start().await;
    let oids: Vec<String> = (0..700).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let ids: Vec<String> = (0..700).map(|i| format!("user{i}@example.com")).collect();
    for oid in &oids {
        emu.add_user(oid, "UTC");
    }
    let users: Vec<(&str, &str)> =
        ids.iter().map(String::as_str).zip(oids.iter().map(String::as_str)).collect();
    let listener = support::listener().await;
    let http = listener.local_addr().unwrap();
    let extra = format!(
        "notification_url = \"http://{http}/graph/notifications\"\nrefresh_interval = \"1h\""
    );
    let file = ServerFile::from_toml(&emu.config(&users, &extra)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start_on(dir, Policy::default(), Arc::new(SystemClock), listener, file).await;

    let sizes = eventually("two subscriptions", || async {
        let mut sizes: Vec<usize> = emu.subscriptions().iter().map(|s| s.1.len()).collect();
        sizes.sort_unstable();
        (sizes.len() == 2, json!(sizes))
    })
    .await;
    assert_eq!(sizes, json!([50, 650]));
    let reads = eventually("two presence reads", || async {
        let reads: Vec<String> = emu
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("POST /v1.0/communications/getPresencesByUserId"))
            .collect();
        (reads.len() >= 2, json!(reads))
    })
    .await;
    assert!(
        reads.as_array().unwrap().iter().all(|r| r.as_str().unwrap().ends_with("-> 200")),
        "{reads}"
    );
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "UTC");
    emu.set_token_lifetime(2);
    let text = emu.config(&[(ALICE, ALICE_OID)], "poll_interval = \"100ms\"");
    let file = ServerFile::from_toml(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _s = start(dir, Policy::default(), file).await;
    eventually("three tokens", || async {
        (emu.token_requests() >= 3, json!(emu.token_requests()))
    })
    .await;
    let refused: Vec<String> =
        emu.requests().into_iter().filter(|r| r.ends_with("-> 401")).collect();
    assert!(refused.is_empty(), "{refused:?}");
}

#[tokio::test]
async fn a_session_left_over_from_before_a_restart_is_cleared() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "UTC");
    let text = emu.config(&[(ALICE, ALICE_OID)], "poll_interval = \"200ms\"");
    // A call the PBX never ends is forgotten after two seconds under this policy.
    let policy = || Policy::from_toml("[lifetime]\ntelephony = \"2s\"\n").unwrap();
    let file = || ServerFile::from_toml(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir, policy(), file()).await;
    let alice = s.user(ALICE, &[]).await;
    let event = json!({"user": ALICE, "call_id": "pbx-9", "state": "connected"});
    s.call("POST", "/api/v1/telephony/events", &alice, Some(event)).await;
    eventually("a teams session", || async { (!emu.sessions(ALICE_OID).is_empty(), Value::Null) })
        .await;

    let Server { running, dir, .. } = s;
    running.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let s = start(dir, policy(), file()).await;
    eventually("the left-over session cleared", || async {
        let sessions = emu.sessions(ALICE_OID);
        (sessions.is_empty(), json!(sessions))
    })
    .await;
    drop(s);
}

/// A busy meeting of Alice's from ten minutes ago for another `minutes`.
fn meeting(id: &str, subject: &str, sensitivity: &str, minutes: i64) -> Value {
    let now = jiff::Timestamp::now();
    let at = |m: i64| now.checked_add(jiff::SignedDuration::from_mins(m)).unwrap();
    json!({
        "id": id, "subject": subject, "sensitivity": sensitivity, "showAs": "busy",
        "isAllDay": false, "isCancelled": false, "responseStatus": {"response": "accepted"},
        "start": utc(at(-10)), "end": utc(at(minutes).round(jiff::Unit::Second).unwrap()),
    })
}

async fn delta_round_done(emu: &Emulator) {
    let before = emu.delta_rounds(ALICE_OID);
    eventually("a delta round", || async {
        (emu.delta_rounds(ALICE_OID) > before, json!(emu.delta_rounds(ALICE_OID)))
    })
    .await;
}

/// The keys of Alice's calendar facts and the explanation they are in.
async fn calendar_keys(t: &Setup) -> (Vec<Value>, Value) {
    let path = format!("/api/v1/users/{ALICE}/presence/explain");
    let (_, why) = t.s.call("GET", &path, &t.alice, None).await;
    let facts = why["facts"].as_array().cloned().unwrap_or_default();
    let keys = facts.iter().filter(|f| f["source"] == "calendar").map(|f| f["key"].clone());
    (keys.collect(), why)
}

/// Waits until Alice's calendar facts are exactly `keys`, and returns the explanation.
async fn calendar_is(t: &Setup, keys: &[&str]) -> Value {
    eventually(&format!("calendar facts {keys:?}"), || async {
        let (held, why) = calendar_keys(t).await;
        (held == keys.iter().map(|k| json!(k)).collect::<Vec<_>>(), why)
    })
    .await
}

#[tokio::test]
async fn an_expired_delta_token_is_recovered_by_a_full_sync() {
    let t = setup("").await;
    t.emu.add_event(ALICE_OID, meeting("AAMk-one", "Standup", "normal", 20));
    presence_is(&t, "busy", "in-a-meeting").await;
    delta_round_done(&t.emu).await;

    t.emu.expire_delta_tokens();
    t.emu.delete_event(ALICE_OID, "AAMk-one");
    t.emu.add_event(ALICE_OID, meeting("AAMk-two", "Retro", "normal", 40));
    calendar_is(&t, &["graph:AAMk-two"]).await;
    assert_eq!(presence(&t.s, &t.alice).await["activity"], "in-a-meeting");
    let gone = format!("GET /v1.0/users/{ALICE_OID}/calendarView/delta -> 410");
    assert!(t.emu.requests().contains(&gone), "{:#?}", t.emu.requests());
}

#[tokio::test]
async fn a_change_notification_on_the_events_starts_a_round_before_the_interval() {
    // Without the notification the next round would come in an hour.
    let t = setup("calendar_interval = \"1h\"").await;
    let subs = eventually("an events subscription", || async {
        let subs = t.emu.event_subscriptions();
        (!subs.is_empty(), json!(subs.iter().map(|s| &s.1).collect::<Vec<_>>()))
    })
    .await;
    assert_eq!(subs, json!([ALICE_OID]));
    eventually("the first round", || async { (t.emu.delta_rounds(ALICE_OID) >= 1, Value::Null) })
        .await;
    presence_is(&t, "available", "available").await;

    t.emu.add_event(ALICE_OID, meeting("AAMk-call", "Customer call", "normal", 30));
    t.emu.notify_event(ALICE_OID, "AAMk-call", "created").await;
    presence_is(&t, "busy", "in-a-meeting").await;

    // A delta entry without showAs and sensitivity is read on its own, and a private event
    // keeps its subject inside.
    t.emu.lean_delta();
    t.emu.delete_event(ALICE_OID, "AAMk-call");
    t.emu.add_event(ALICE_OID, meeting("AAMk-secret", "Salary review", "private", 30));
    t.emu.notify_event(ALICE_OID, "AAMk-call", "deleted").await;
    let why = calendar_is(&t, &["graph:AAMk-secret"]).await;
    let read = format!("GET /v1.0/users/{ALICE_OID}/events/AAMk-secret -> 200");
    assert!(t.emu.requests().contains(&read), "{:#?}", t.emu.requests());
    assert_eq!(presence(&t.s, &t.alice).await["activity"], "in-a-meeting", "{why}");
    assert!(!why.to_string().contains("Salary review"), "{why}");
}

#[tokio::test]
async fn an_account_mapped_through_the_api_takes_effect_without_a_restart() {
    const BOB: &str = "bob@example.com";
    const BOB_OID: &str = "b0b0b0b0-0000-4000-8000-0000000000b0";
    let t = setup("").await;
    t.emu.add_user(BOB_OID, "UTC");
    t.emu.add_event(BOB_OID, meeting("AAMk-bob", "Planning", "normal", 30));
    let bob = t.s.user(BOB, &[]).await;
    let path = format!("/api/v1/users/{BOB}/graph");
    let (status, _) = t.s.call("GET", &path, &t.s.admin, None).await;
    assert_eq!(status, 404);
    let bob_is = |activity: &'static str| {
        let (s, bob) = (&t.s, bob.clone());
        async move {
            eventually(&format!("bob {activity}"), || async {
                let p = s.call("GET", &format!("/api/v1/users/{BOB}/presence"), &bob, None).await.1;
                (p["activity"] == activity, p)
            })
            .await
        }
    };

    let account = json!({"object_id": BOB_OID.to_uppercase()});
    let (status, stored) = t.s.call("PUT", &path, &t.s.admin, Some(account)).await;
    assert_eq!((status, stored), (200, json!({"object_id": BOB_OID, "origin": "api"})));
    bob_is("in-a-meeting").await;
    let (status, p) =
        t.s.call("GET", &format!("/graph/v1.0/users/{BOB_OID}/presence"), &bob, None).await;
    assert_eq!((status, p["activity"].as_str()), (200, Some("InAMeeting")));
    t.emu.set_client(BOB_OID, "DoNotDisturb", "Presenting").await;
    bob_is("presenting").await;

    // Alice's account cannot be given to Bob, and only an administrator maps.
    let alice_account = json!({"object_id": ALICE_OID});
    let (status, _) = t.s.call("PUT", &path, &t.s.admin, Some(alice_account)).await;
    assert_eq!(status, 409);
    let (status, _) = t.s.call("PUT", &path, &bob, Some(json!({"object_id": BOB_OID}))).await;
    assert_eq!(status, 403);
    let (status, _) = t.s.call("PUT", &path, &t.s.admin, Some(json!({"object_id": "../me"}))).await;
    assert_eq!(status, 422);
    let (_, alice) = t.s.call("GET", &format!("/api/v1/users/{ALICE}/graph"), &t.alice, None).await;
    assert_eq!(alice, json!({"object_id": ALICE_OID, "origin": "file"}));
    // An answer can be put back as it came.
    let (_, answer) = t.s.call("GET", &path, &t.s.admin, None).await;
    let (status, _) = t.s.call("PUT", &path, &t.s.admin, Some(answer)).await;
    assert_eq!(status, 200);

    // Unmapped: Bob's Graph facts go, and nothing of his mailbox comes back.
    let (status, _) = t.s.call("DELETE", &path, &t.s.admin, None).await;
    assert_eq!(status, 204);
    bob_is("offline").await;
    let (_, why) =
        t.s.call("GET", &format!("/api/v1/users/{BOB}/presence/explain"), &t.s.admin, None).await;
    assert_eq!(why["facts"], json!([]), "{why}");
}

#[tokio::test]
async fn the_account_api_refuses_whom_it_must_before_it_looks_for_a_graph_section() {
    const BOB: &str = "bob@example.com";
    let s = support::Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    s.user(BOB, &[]).await;
    let bobs = format!("/api/v1/users/{BOB}/graph");
    let account = json!({"object_id": ALICE_OID});
    let detail = |answer: &Value| answer["detail"].as_str().unwrap_or_default().to_owned();

    // A user is refused what is not theirs, whether Graph is set up or not.
    let (status, answer) = s.call("GET", &bobs, &alice, None).await;
    assert_eq!(
        (status, detail(&answer)),
        (403, "you may not see the settings of bob@example.com".into())
    );
    for method in ["PUT", "DELETE"] {
        let body = (method == "PUT").then(|| account.clone());
        let (status, answer) = s.call(method, &bobs, &alice, body).await;
        assert_eq!((status, detail(&answer)), (403, "only an administrator may do this".into()));
    }

    // Whoever may ask learns that there is no Graph, the same way for every method.
    let no_graph = (409, "the server configuration has no [graph] section".to_owned());
    let (status, answer) =
        s.call("GET", &format!("/api/v1/users/{ALICE}/graph"), &alice, None).await;
    assert_eq!((status, detail(&answer)), no_graph);
    for method in ["GET", "PUT", "DELETE"] {
        let body = (method == "PUT").then(|| account.clone());
        let (status, answer) = s.call(method, &bobs, &s.admin, body).await;
        assert_eq!((status, detail(&answer)), no_graph, "{method}");
    }
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_exponentially() {
    // Presence is read only at the start and when Graph notifies a change.
    let t = setup("poll_interval = \"1h\"\nrefresh_interval = \"1h\"").await;
    eventually("a subscription", || async { (!t.emu.subscriptions().is_empty(), Value::Null) })
        .await;
    presence_is(&t, "available", "available").await;
    let before = settled(&t).await;
    t.emu.throttle_without_retry_after("/communications/getPresencesByUserId", 4);
    t.emu.set_client(ALICE_OID, "Busy", "InACall").await;
    presence_is(&t, "busy", "in-a-call").await;

    let reads: Vec<(tokio::time::Instant, String)> = t
        .emu
        .requests_timed()
        .into_iter()
        .skip(before)
        .filter(|(_, r)| r.starts_with("POST /v1.0/communications/getPresencesByUserId"))
        .collect();
    let statuses: Vec<&str> = reads.iter().map(|(_, r)| r.rsplit(' ').next().unwrap()).collect();
    assert_eq!(statuses, ["429", "429", "429", "429", "200"], "{reads:?}");
    // The configured backoff is 50 ms: attempt n waits between half of 50 ms * 2^n and all of
    // it (the jitter), far less than a second a Retry-After would name.
    for (n, pair) in reads.windows(2).enumerate() {
        let gap = pair[1].0 - pair[0].0;
        let ceiling = Duration::from_millis(50 << n);
        assert!(gap >= ceiling / 2, "attempt {n} waited {gap:?}");
        assert!(gap < ceiling + Duration::from_millis(400), "attempt {n} waited {gap:?}");
    }
}

#[tokio::test]
async fn automatic_replies_in_outlook_show_the_teams_user_out_of_office() {
    let t = setup("").await;
    eventually("a subscription", || async { (!t.emu.subscriptions().is_empty(), Value::Null) })
        .await;
    presence_is(&t, "available", "available").await;

    // Case C12 P2: away with automatic replies on.
    t.emu.set_client_quietly(ALICE_OID, "Away", "Away");
    t.emu.set_out_of_office(ALICE_OID, true, Some("Back on Monday")).await;
    let p = presence_is(&t, "away", "away").await;
    assert_eq!(p["out_of_office"], true, "{p}");
    assert!(!p.to_string().contains("Back on Monday"), "{p}");

    // Case C12 P3: a Teams call while automatic replies are on.
    t.emu.set_client(ALICE_OID, "Busy", "InACall").await;
    let p = presence_is(&t, "busy", "in-a-call").await;
    assert_eq!(p["out_of_office"], true, "{p}");

    t.emu.set_out_of_office(ALICE_OID, false, None).await;
    let p = eventually("automatic replies off", || async {
        let p = presence(&t.s, &t.alice).await;
        (p["out_of_office"] == false, p)
    })
    .await;
    assert_eq!(p["activity"], "in-a-call");
}

/// A server on tokio's paused clock connected to the emulator, reading Teams presence every
/// minute (no subscriptions: the emulator's subscriptions run on the wall clock), and a short
/// timer that keeps the paused clock from leaping ahead while a request waits for the database
/// or the emulator.
async fn paused_setup(extra: &str) -> (Setup, tokio::task::JoinHandle<()>) {
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    let listener = support::listener().await;
    let http = listener.local_addr().unwrap();
    let extra = format!(
        "poll_interval = \"1m\"\nrefresh_interval = \"10m\"\ncalendar_interval = \"1h\"\n\
         contacts_interval = \"1h\"\n{extra}"
    );
    let file = ServerFile::from_toml(&emu.config(&[(ALICE, ALICE_OID)], &extra)).unwrap();
    let clock =
        ampel_server::clock::TokioClock::starting_at("2026-12-03T09:00:00Z".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_on(dir, Policy::default(), Arc::new(clock), listener, file).await;
    let alice = s.user(ALICE, &[]).await;
    (Setup { s, emu, alice, http }, ticker)
}

/// An API request straight to the router: on the paused clock, a socket's timeouts would fire.
async fn api(
    t: &Setup,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let router = ampel_server::api::router(Arc::clone(&t.s.running.app));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Waits on the paused clock, a second at a time for at most ten minutes, until `check` holds.
async fn paused_until<F, Fut>(what: &str, mut check: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, Value)>,
{
    let mut last = Value::Null;
    for _ in 0..600 {
        let (ok, seen) = check().await;
        if ok {
            return seen;
        }
        last = seen;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{what} did not happen; last seen: {last}");
}

async fn paused_presence_is(t: &Setup, availability: &str, activity: &str) -> Value {
    let path = format!("/api/v1/users/{ALICE}/presence");
    paused_until(&format!("alice {availability}/{activity}"), || async {
        let (_, p) = api(t, "GET", &path, &t.alice, None).await;
        (p["availability"] == availability && p["activity"] == activity, p)
    })
    .await
}

/// Alice's Teams fact as the explanation shows it.
async fn teams_fact(t: &Setup) -> Value {
    let (_, why) =
        api(t, "GET", &format!("/api/v1/users/{ALICE}/presence/explain"), &t.alice, None).await;
    let facts = why["facts"].as_array().cloned().unwrap_or_default();
    facts.into_iter().find(|f| f["source"] == "teams").unwrap_or(Value::Null)
}

fn now(t: &Setup) -> jiff::Timestamp {
    t.s.running.app.hub.clock.now()
}

fn pbx(state: &str) -> Option<Value> {
    Some(json!({"user": ALICE, "call_id": "pbx-long", "state": state}))
}

#[tokio::test(start_paused = true)]
async fn a_pbx_call_longer_than_the_session_renews_it_before_it_expires_and_clears_at_hang_up() {
    let (t, ticker) = paused_setup("session_lifetime = \"5m\"").await;
    paused_presence_is(&t, "available", "available").await;
    let (status, _) =
        api(&t, "POST", "/api/v1/telephony/events", &t.s.admin, pbx("connected")).await;
    assert_eq!(status, 204);
    let ours = vec![(CLIENT_ID.to_owned(), "Busy".to_owned(), "InACall".to_owned())];
    paused_until("a teams session", || async {
        (t.emu.sessions(ALICE_OID) == ours, json!(t.emu.sessions(ALICE_OID)))
    })
    .await;

    // Half an hour, six times the session's five minutes: Graph never lets it lapse.
    for minute in 1..=30 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(t.emu.sessions(ALICE_OID), ours, "minute {minute}");
    }
    let sets: Vec<tokio::time::Instant> = t
        .emu
        .requests_timed()
        .into_iter()
        .filter(|(_, r)| r == &format!("POST /v1.0/users/{ALICE_OID}/presence/setPresence -> 200"))
        .map(|(at, _)| at)
        .collect();
    assert!(sets.len() >= 10, "{} writes", sets.len());
    for pair in sets.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap < Duration::from_secs(5 * 60), "renewed {gap:?} after the last write");
    }

    api(&t, "POST", "/api/v1/telephony/events", &t.s.admin, pbx("ended")).await;
    paused_until("the session cleared", || async {
        (t.emu.sessions(ALICE_OID).is_empty(), json!(t.emu.sessions(ALICE_OID)))
    })
    .await;
    let cleared = format!("POST /v1.0/users/{ALICE_OID}/presence/clearPresence -> 200");
    assert!(t.emu.requests().contains(&cleared), "{:#?}", t.emu.requests());
    paused_presence_is(&t, "available", "available").await;
    ticker.abort();
}

#[tokio::test(start_paused = true)]
async fn during_a_long_pbx_call_the_teams_fact_stays_fresh_although_its_echo_is_skipped() {
    let (t, ticker) = paused_setup("").await;
    paused_presence_is(&t, "available", "available").await;
    api(&t, "POST", "/api/v1/telephony/events", &t.s.admin, pbx("connected")).await;
    paused_until("a teams session", || async {
        (!t.emu.sessions(ALICE_OID).is_empty(), Value::Null)
    })
    .await;

    // Eighty minutes: past half the policy's one-hour Teams lifetime, and past all of it.
    tokio::time::sleep(Duration::from_secs(80 * 60)).await;
    assert_eq!(t.emu.presence(ALICE_OID), ("Busy".to_owned(), "InACall".to_owned()));
    let fact = teams_fact(&t).await;
    assert_eq!(fact["state"]["availability"], "available", "the echo is no Teams call: {fact}");
    assert_eq!(fact.get("stale"), None, "{fact}");
    let observed: jiff::Timestamp = fact["observed"].as_str().unwrap().parse().unwrap();
    let age = now(&t).duration_since(observed);
    assert!(age <= jiff::SignedDuration::from_mins(6), "confirmed {age} ago: {fact}");
    paused_presence_is(&t, "busy", "in-a-call").await;

    api(&t, "POST", "/api/v1/telephony/events", &t.s.admin, pbx("ended")).await;
    paused_presence_is(&t, "available", "available").await;
    ticker.abort();
}

#[tokio::test(start_paused = true)]
async fn graph_down_for_an_hour_leaves_other_sources_working_and_the_teams_fact_stale() {
    let (t, ticker) = paused_setup("").await;
    paused_presence_is(&t, "available", "available").await;
    t.emu.down();

    // Five minutes into the outage, a manual status and a device session still work.
    tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    let manual = json!({"availability": "busy", "activity": "focusing"});
    let path = format!("/api/v1/users/{ALICE}/presence/manual");
    let (status, p) = api(&t, "PUT", &path, &t.alice, Some(manual)).await;
    assert_eq!((status, p["activity"].as_str()), (200, Some("focusing")), "{p}");
    let sessions = format!("/api/v1/users/{ALICE}/sessions");
    let (status, body) =
        api(&t, "POST", &sessions, &t.alice, Some(json!({"device": "Laptop"}))).await;
    assert_eq!(status, 201, "{body}");
    api(&t, "DELETE", &path, &t.alice, None).await;
    paused_presence_is(&t, "available", "available").await;

    // Forty-five minutes in, the Teams fact has gone unconfirmed for more than half its life.
    tokio::time::sleep(Duration::from_secs(40 * 60)).await;
    let fact = teams_fact(&t).await;
    assert_eq!(fact["stale"], true, "{fact}");
    let refused = t.emu.requests().iter().filter(|r| r.ends_with("-> 503")).count();
    assert!(refused >= 40, "{refused} requests refused");

    // An hour in, Graph answers again, and Teams presence is read and fresh.
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    t.emu.up();
    let back = now(&t);
    let fact = paused_until("a fresh teams fact", || async {
        let fact = teams_fact(&t).await;
        let observed = fact["observed"].as_str().and_then(|o| o.parse::<jiff::Timestamp>().ok());
        (observed.is_some_and(|o| o >= back) && fact.get("stale").is_none(), fact)
    })
    .await;
    assert_eq!(fact["state"]["availability"], "available", "{fact}");
    ticker.abort();
}

#[tokio::test]
async fn a_mapped_user_created_after_the_first_read_is_read_at_once() {
    let emu = Emulator::start().await;
    emu.add_user(ALICE_OID, "W. Europe Standard Time");
    let extra = "poll_interval = \"1h\"\nrefresh_interval = \"1h\"\ncalendar_interval = \"1h\"";
    let file = ServerFile::from_toml(&emu.config(&[(ALICE, ALICE_OID)], extra)).unwrap();
    let s = start(tempfile::tempdir().unwrap(), Policy::default(), file).await;
    // The start's full read finds no Alice in Ampel yet.
    eventually("the first full read", || async {
        let reads = emu.requests().iter().filter(|r| r.contains("getPresencesByUserId")).count();
        (reads > 0, Value::Null)
    })
    .await;
    emu.set_client_quietly(ALICE_OID, "Busy", "InACall");

    let alice = s.user(ALICE, &[]).await;
    let p = eventually("alice read", || async {
        let p = presence(&s, &alice).await;
        (p["activity"] == "in-a-call", p)
    })
    .await;
    assert_eq!(p["availability"], "busy", "{p}");
}
