//! Regression tests for faults found by throwing hostile input at the calendar sources, the web
//! sign-in and the Graph webhook of a running server: each is named after the fault it pins.

mod support;

use std::time::Duration;

use ampel_server::calendar::Calendars;
use serde_json::{Value, json};
use support::Server;

/// A rule that counts every second since 1900; `COUNT` keeps it from being moved closer to now.
fn second_by_second_feed() -> String {
    let hours = (0..24).map(|h| h.to_string()).collect::<Vec<_>>().join(",");
    let sixty = (0..60).map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:bomb\r\n\
         DTSTART:19000101T000000Z\r\nDURATION:PT1S\r\n\
         RRULE:FREQ=DAILY;COUNT=4000000000;BYHOUR={hours};BYMINUTE={sixty};BYSECOND={sixty}\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

async fn set_file_source(s: &Server, user: &str, name: &str, text: &str) {
    let path = s.dir.path().join(format!("{name}.ics"));
    std::fs::write(&path, text).unwrap();
    let body = json!({"kind": "file", "location": path.to_string_lossy()});
    let at = format!("/api/v1/users/{user}/calendars/{name}");
    let (status, answer) = s.call("PUT", &at, &s.admin, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

async fn standing(s: &Server, user: &str, name: &str) -> Value {
    let at = format!("/api/v1/users/{user}/calendars/{name}");
    let (status, answer) = s.call("GET", &at, &s.admin, None).await;
    assert_eq!(status, 200, "{answer}");
    answer["health"]["standing"].clone()
}

#[tokio::test]
async fn a_calendar_rule_walked_second_by_second_does_not_stall_the_poller() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    s.user("alice@example.com", &[]).await;
    set_file_source(&s, "bob@example.com", "bomb", &second_by_second_feed()).await;
    let plain = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n";
    set_file_source(&s, "alice@example.com", "work", plain).await;

    // One round of polling reads both; before the fix it walked the rule for hours.
    let round = Calendars::poll_once(&s.running.app);
    tokio::time::timeout(Duration::from_secs(300), round).await.expect("the poll ends");
    assert_eq!(standing(&s, "bob@example.com", "bomb").await, "ok");
    assert_eq!(standing(&s, "alice@example.com", "work").await, "ok");
}

#[tokio::test]
async fn an_unreadable_calendar_url_is_refused_naming_the_location() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    let at = "/api/v1/users/bob@example.com/calendars/work";
    for location in ["http://", "https://exa mple.com/feed.ics", "http://[::1/feed.ics"] {
        let body = json!({"kind": "url", "location": location});
        let (status, problem) = s.call("PUT", at, &s.admin, Some(body)).await;
        assert_eq!((status, &problem["field"]), (422, &json!("location")), "{location}: {problem}");
    }
}

#[tokio::test]
async fn a_password_in_a_calendar_url_is_never_shown() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    let at = "/api/v1/users/bob@example.com/calendars/work";
    let location = "http://bob:pa55w0rd@127.0.0.1:9/feed.ics?key=t0ken";
    let body =
        json!({"kind": "url", "location": location, "username": "bob", "password": "hunter2"});
    let (status, stored) = s.call("PUT", at, &s.admin, Some(body)).await;
    assert_eq!(status, 200, "{stored}");
    Calendars::poll_once(&s.running.app).await;
    let (_, shown) = s.call("GET", at, &s.admin, None).await;
    for answer in [stored.to_string(), shown.to_string()] {
        for secret in ["pa55w0rd", "t0ken", "hunter2"] {
            assert!(!answer.contains(secret), "{secret} shown in {answer}");
        }
    }
    assert!(shown["location"].as_str().unwrap().starts_with("http://127.0.0.1:9/feed.ics"));
}

#[tokio::test]
async fn a_sign_in_with_a_password_longer_than_any_is_refused_naming_the_password() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    let body = json!({"user": "bob@example.com", "password": "x".repeat(10_000)});
    let response = s.http.post(format!("{}/web/signin", s.base)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "password", "{problem}");
}

#[tokio::test]
async fn a_sign_in_that_is_not_json_or_too_large_is_a_problem() {
    let s = Server::start().await;
    let url = format!("{}/web/signin", s.base);
    let form = s.http.post(&url).body("user=a&password=b").header("content-type", "text/plain");
    let response = form.send().await.unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    let huge = format!("{{\"user\": \"{}\"}}", "a".repeat(8 << 20));
    let response =
        s.http.post(&url).body(huge).header("content-type", "application/json").send().await;
    // The server may close the connection while the body is still being sent.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn the_graph_webhook_echoes_nothing_without_the_connector() {
    let s = Server::start().await;
    let url = format!("{}/graph/notifications?validationToken=%3Cscript%3E", s.base);
    let response = s.http.post(url).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(!response.text().await.unwrap().contains("<script>"));
}

#[tokio::test]
async fn a_calendar_nested_thousands_deep_is_read_without_ending_the_server() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    let depth = 50_000;
    let text = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:deep\r\n\
         DTSTART:20260101T100000Z\r\nDTEND:20260101T110000Z\r\n{}{}END:VEVENT\r\nEND:VCALENDAR\r\n",
        "BEGIN:X-NEST\r\n".repeat(depth),
        "END:X-NEST\r\n".repeat(depth)
    );
    set_file_source(&s, "bob@example.com", "deep", &text).await;
    Calendars::poll_once(&s.running.app).await;
    let at = "/api/v1/users/bob@example.com/calendars/deep";
    let (status, answer) = s.call("GET", at, &s.admin, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["health"]["standing"], "ok", "{answer}");
    assert_eq!(answer["health"]["events"], 0, "{answer}");
    let first = answer["health"]["first_warnings"][0].as_str().unwrap_or_default();
    assert!(first.starts_with("deep:") && first.contains("nested"), "{answer}");
}

/// Signs in with a token and returns the session cookie, `name=value`.
async fn session_cookie(s: &Server, token: &str) -> String {
    let url = format!("{}/web/signin", s.base);
    let response = s.http.post(url).json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let set = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn with_cookie(s: &Server, cookie: &str) -> u16 {
    let url = format!("{}/api/v1/users/alice@example.com/presence", s.base);
    s.http.get(url).header("cookie", cookie).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn signing_in_in_a_loop_keeps_a_bounded_number_of_sessions() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let mut cookies = Vec::new();
    for _ in 0..40 {
        cookies.push(session_cookie(&s, &alice).await);
    }
    let live: Vec<u16> =
        futures_util::future::join_all(cookies.iter().map(|c| with_cookie(&s, c))).await;
    assert_eq!(live.iter().filter(|st| **st == 200).count(), 32, "{live:?}");
    assert_eq!(live.last(), Some(&200));
    assert_eq!(live.first(), Some(&401));
}

/// A feed server that answers every request after a while and notes how many it held at once.
async fn slow_feed_server(peak: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> String {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (peak, running) = (peak.clone(), running.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await;
                peak.fetch_max(running.fetch_add(1, SeqCst) + 1, SeqCst);
                // Long enough for the polls to overlap were they not held back.
                tokio::time::sleep(Duration::from_millis(200)).await;
                running.fetch_sub(1, SeqCst);
                let body = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/feed.ics")
}

#[tokio::test]
async fn many_calendar_sources_are_fetched_a_bounded_number_at_a_time() {
    let s = Server::start().await;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = slow_feed_server(peak.clone()).await;
    s.user("bob@example.com", &[]).await;
    let sources = 80;
    for i in 0..sources {
        let at = format!("/api/v1/users/bob@example.com/calendars/feed{i}");
        let body = json!({"kind": "url", "location": url});
        assert_eq!(s.call("PUT", &at, &s.admin, Some(body)).await.0, 200);
    }
    // The server's own poller reads them (woken by each change); its rounds never overlap.
    let mut read = 0;
    for _ in 0..600 {
        let at = "/api/v1/users/bob@example.com/calendars";
        let (_, list) = s.call("GET", at, &s.admin, None).await;
        let all = list["calendars"].as_array().unwrap().iter();
        read = all.filter(|c| c["health"]["standing"] == "ok").count();
        if read == sources {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read, sources);
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=ampel_server::calendar::POLLS_AT_ONCE).contains(&peak), "{peak} fetched at once");
}

#[tokio::test]
async fn a_calendar_file_that_never_ends_is_refused_not_read_into_memory() {
    let s = Server::start().await;
    s.user("bob@example.com", &[]).await;
    let at = "/api/v1/users/bob@example.com/calendars/zero";
    let body = json!({"kind": "file", "location": "/dev/zero"});
    assert_eq!(s.call("PUT", at, &s.admin, Some(body)).await.0, 200);
    Calendars::poll_once(&s.running.app).await;
    let (_, answer) = s.call("GET", at, &s.admin, None).await;
    assert_eq!(answer["health"]["standing"], "failing", "{answer}");
    assert_eq!(answer["health"]["error"], "cannot read the file: not a regular file", "{answer}");
}
