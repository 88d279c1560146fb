//! Calendars from other servers: a real Radicale CalDAV server, and a small iCalendar feed
//! server that answers conditionally and then fails. A source that fails keeps its last good
//! calendar in force, is marked stale in the explanation, and recovers when it answers again.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::calendar::Calendars;
use ampel_server::clock::TokioClock;
use serde_json::{Value, json};
use support::Server;
use support::port::free_port;

const ALICE: &str = "alice@example.com";

/// The Radicale program: the Debian package's, else the one on `PATH`.
fn radicale_program() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/radicale");
    if debian.exists() {
        return debian;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|p| p.join("radicale")).find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!("the CalDAV tests need Radicale: install the Debian package `radicale` (.ci/setup.d/calendar.sh)")
    })
}

/// A Radicale server on a free port with its storage in a temporary directory.
struct Radicale {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Radicale {
    fn start() -> Radicale {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice:secret\n").unwrap();
        let mut radicale = Radicale { child: None, port: free_port(), dir };
        // Radicale cannot be told to choose its own port: the free port it is given may be
        // taken by another program before it binds it, and then it exits; it gets another.
        for _ in 0..3 {
            if radicale.try_run() {
                return radicale;
            }
            radicale.stop();
            radicale.port = free_port();
        }
        radicale.run();
        radicale
    }

    /// Starts Radicale again on its port (a restart of the same server).
    fn run(&mut self) {
        assert!(self.try_run(), "radicale did not listen on port {}", self.port);
    }

    /// Starts Radicale and waits until it listens; false when it exited or never listened.
    fn try_run(&mut self) -> bool {
        let d = self.dir.path();
        let config = format!(
            "[server]\nhosts = 127.0.0.1:{}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\n\
             htpasswd_encryption = plain\n[storage]\nfilesystem_folder = {}\n[rights]\n\
             type = owner_only\n[web]\ntype = none\n",
            self.port,
            d.join("users").display(),
            d.join("collections").display()
        );
        std::fs::write(d.join("config"), config).unwrap();
        let child = Command::new(radicale_program())
            .arg("--config")
            .arg(d.join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("radicale starts");
        let child = self.child.insert(child);
        for _ in 0..200 {
            if child.try_wait().is_ok_and(|exited| exited.is_some()) {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Another program holding the port answers at once, and Radicale, failing to
                // bind, exits soon after it started.
                std::thread::sleep(Duration::from_millis(500));
                return child.try_wait().is_ok_and(|exited| exited.is_none());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn dav(method: &str, url: &str, body: String) -> u16 {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request =
        reqwest::Client::new().request(method, url).basic_auth("alice", Some("secret"));
    if !body.is_empty() {
        request = request.header("Content-Type", "text/calendar; charset=utf-8").body(body);
    }
    request.send().await.unwrap().status().as_u16()
}

fn event(uid: &str, start: &str, end: &str, extra: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Ampel tests//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
         DTSTAMP:20260401T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:Review\r\n{extra}\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

async fn serve_at(now: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = ampel_server::Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(TokioClock::starting_at(now.parse().unwrap())),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file: Default::default(),
    };
    let running = ampel_server::start(config).await.expect("server starts");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
    let base = format!("http://{}", running.http);
    let server = Server { running, admin, base, dir, http: reqwest::Client::new() };
    let user = json!({"id": ALICE, "name": "Alice", "tz": "Europe/Berlin", "lang": "en"});
    assert_eq!(server.call("POST", "/api/v1/users", &server.admin, Some(user)).await.0, 201);
    server
}

async fn set_source(server: &Server, name: &str, source: Value) -> Value {
    let path = format!("/api/v1/users/{ALICE}/calendars/{name}");
    let (status, body) = server.call("PUT", &path, &server.admin, Some(source)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls once and returns the presence and the standing of the named source.
async fn poll(server: &Server, name: &str) -> (Value, Value) {
    Calendars::poll_once(&server.running.app).await;
    let path = format!("/api/v1/users/{ALICE}/presence/explain");
    let (status, explain) = server.call("GET", &path, &server.admin, None).await;
    assert_eq!(status, 200, "{explain}");
    let health = explain["calendars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap_or(Value::Null);
    (explain["presence"].clone(), health)
}

#[tokio::test]
async fn a_radicale_calendar_sets_presence_and_survives_failures_of_its_server() {
    let mut radicale = Radicale::start();
    let collection = radicale.url("/alice/work/");
    assert_eq!(dav("MKCALENDAR", &collection, String::new()).await, 201);
    let meeting = event("m1", "20260420T100000Z", "20260420T110000Z", "");
    assert_eq!(dav("PUT", &format!("{collection}m1.ics"), meeting).await, 201);
    let far = event("m0", "20260101T100000Z", "20260101T110000Z", "");
    assert_eq!(dav("PUT", &format!("{collection}m0.ics"), far).await, 201);

    let server = serve_at("2026-04-20T10:15:00Z").await;
    let good = json!({"kind": "caldav", "location": collection, "username": "alice", "password": "secret"});
    let shown = set_source(&server, "work", good.clone()).await;
    assert_eq!(shown["has_password"], true);
    assert!(!shown.to_string().contains("secret"), "{shown}");

    let (p, health) = poll(&server, "work").await;
    assert_eq!(
        (p["availability"].as_str(), p["until"].as_str()),
        (Some("busy"), Some("2026-04-20T11:00:00Z"))
    );
    assert_eq!((health["standing"].as_str(), health["events"].as_u64()), (Some("ok"), Some(1)));

    // A wrong password: 401. The last good calendar stays in force, marked stale.
    let wrong =
        json!({"kind": "caldav", "location": collection, "username": "alice", "password": "wrong"});
    set_source(&server, "work", wrong).await;
    let (p, health) = poll(&server, "work").await;
    assert_eq!(p["availability"], "busy");
    assert_eq!(health["standing"], "stale");
    assert_eq!(health["error"], "the server answered 401");

    // The server is down.
    set_source(&server, "work", good).await;
    radicale.stop();
    let (p, health) = poll(&server, "work").await;
    assert_eq!(p["availability"], "busy");
    assert_eq!(health["standing"], "stale");
    assert!(health["error"].as_str().unwrap().starts_with("cannot reach the server"), "{health}");

    // Back, with the meeting moved an hour later: the new plan replaces the old one.
    radicale.run();
    let moved = event("m1", "20260420T113000Z", "20260420T120000Z", "");
    let replaced = dav("PUT", &format!("{collection}m1.ics"), moved).await;
    assert!(matches!(replaced, 201 | 204), "{replaced}");
    let (p, health) = poll(&server, "work").await;
    assert_eq!(health["standing"], "ok");
    assert_eq!(p["availability"], "offline");
    let facts = server.running.app.hub.facts(&server.running.app.hub.user(ALICE).unwrap());
    let starts: Vec<String> =
        facts.iter().filter_map(|f| f.starts.map(|s| s.to_string())).collect();
    assert_eq!(starts, ["2026-04-20T11:30:00Z"]);

    // Removing the source removes what it placed.
    let path = format!("/api/v1/users/{ALICE}/calendars/work");
    assert_eq!(server.call("DELETE", &path, &server.admin, None).await.0, 204);
    assert!(server.running.app.hub.facts(&server.running.app.hub.user(ALICE).unwrap()).is_empty());
}

/// What the feed server answers.
#[derive(Default)]
struct Feed {
    /// 0: the feed with an ETag (and 304 to a matching If-None-Match); 1: 500; 2: not iCalendar.
    mode: AtomicU32,
    requests: AtomicUsize,
    conditional: AtomicUsize,
}

async fn feed_server(feed: Arc<Feed>) -> String {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let body = event("f1", "20260420T100000Z", "20260420T110000Z", "");
    let app = axum::Router::new().route(
        "/feed.ics",
        axum::routing::get(move |headers: HeaderMap| {
            let feed = Arc::clone(&feed);
            let body = body.clone();
            async move {
                feed.requests.fetch_add(1, Ordering::SeqCst);
                match feed.mode.load(Ordering::SeqCst) {
                    0 if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") => {
                        feed.conditional.fetch_add(1, Ordering::SeqCst);
                        StatusCode::NOT_MODIFIED.into_response()
                    }
                    0 => ([(header::ETAG, "\"v1\"")], body).into_response(),
                    1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    _ => "<html>Login</html>".into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/feed.ics")
}

#[tokio::test]
async fn a_feed_is_fetched_conditionally_and_its_failures_leave_the_plan_in_force() {
    let feed = Arc::new(Feed::default());
    let url = feed_server(Arc::clone(&feed)).await;
    let server = serve_at("2026-04-20T10:15:00Z").await;
    set_source(&server, "feed", json!({"kind": "url", "location": url})).await;

    let (p, health) = poll(&server, "feed").await;
    assert_eq!(
        (p["availability"].as_str(), health["standing"].as_str()),
        (Some("busy"), Some("ok"))
    );
    let (p, health) = poll(&server, "feed").await;
    assert_eq!(
        (p["availability"].as_str(), health["standing"].as_str()),
        (Some("busy"), Some("ok"))
    );
    assert_eq!(feed.conditional.load(Ordering::SeqCst), 1, "the second fetch was answered 304");

    feed.mode.store(1, Ordering::SeqCst);
    let (p, health) = poll(&server, "feed").await;
    assert_eq!(
        (p["availability"].as_str(), health["standing"].as_str()),
        (Some("busy"), Some("stale"))
    );
    assert_eq!(health["error"], "the server answered 500");

    feed.mode.store(2, Ordering::SeqCst);
    let (p, health) = poll(&server, "feed").await;
    assert_eq!(
        (p["availability"].as_str(), health["standing"].as_str()),
        (Some("busy"), Some("stale"))
    );
    assert_eq!(health["error"], "the feed is not iCalendar: no BEGIN:VCALENDAR line");

    feed.mode.store(0, Ordering::SeqCst);
    let (_, health) = poll(&server, "feed").await;
    assert_eq!(health["standing"], "ok");
}

#[tokio::test]
async fn a_broken_event_is_named_in_the_sources_warnings_and_the_rest_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.ics");
    let good = event("good", "20260420T100000Z", "20260420T110000Z", "");
    let broken = good
        .replace("UID:good", "UID:broken")
        .replace("DTSTART:20260420T100000Z", "DTSTART:tomorrow");
    std::fs::write(
        &file,
        format!(
            "{}{}",
            good.trim_end_matches("END:VCALENDAR\r\n"),
            &broken[broken.find("BEGIN:VEVENT").unwrap()..]
        ),
    )
    .unwrap();
    let server = serve_at("2026-04-20T10:15:00Z").await;
    set_source(&server, "file", json!({"kind": "file", "location": file})).await;
    let (p, health) = poll(&server, "file").await;
    assert_eq!(
        (p["availability"].as_str(), health["standing"].as_str()),
        (Some("busy"), Some("ok"))
    );
    assert_eq!(health["first_warnings"][0], "broken: the event has no readable DTSTART");
}

#[tokio::test]
async fn sources_are_checked_and_only_administrators_set_them() {
    let server = serve_at("2026-04-20T10:15:00Z").await;
    let path = format!("/api/v1/users/{ALICE}/calendars/work");
    let bad = json!({"kind": "caldav", "location": "/etc/passwd"});
    let (status, problem) = server.call("PUT", &path, &server.admin, Some(bad)).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("location")));
    let token = {
        let (_, t) = server
            .call("POST", &format!("/api/v1/users/{ALICE}/tokens"), &server.admin, None)
            .await;
        t["token"].as_str().unwrap().to_owned()
    };
    let ok = json!({"kind": "url", "location": "https://example.com/a.ics"});
    assert_eq!(server.call("PUT", &path, &token, Some(ok)).await.0, 403);
    let bad_name = format!("/api/v1/users/{ALICE}/calendars/{}", "x".repeat(65));
    let ok = json!({"kind": "url", "location": "https://example.com/a.ics"});
    assert_eq!(server.call("PUT", &bad_name, &server.admin, Some(ok)).await.0, 422);
}
