//! Routing calls against a real server: the decision API for users in a calendar meeting, in
//! a call and out of office, the announcement with its audio from espeak-ng, the users'
//! routing settings, the caller lookup from users, a CSV directory and a CardDAV address book
//! served by Radicale, and the answers to bad input.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ampel_core::fact::ShowAs;
use ampel_core::{Fact, FactState, Policy, Source};
use ampel_server::clock::TokioClock;
use ampel_server::hub::Change;
use ampel_server::server_file::ServerFile;
use ampel_server::{Config, Running};
use jiff::Timestamp;
use serde_json::{Value, json};
use support::Server;

/// Thursday, 3 December 2026, 11:00 in Berlin.
const NOW: &str = "2026-12-03T10:00:00Z";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

async fn start(file: ServerFile) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(TokioClock::starting_at(at(NOW))),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file,
    };
    let running: Running = ampel_server::start(config).await.expect("server starts");
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
    let base = format!("http://{}", running.http);
    Server { running, admin, base, dir, http: reqwest::Client::new() }
}

async fn add_user(server: &Server, body: Value) {
    let (status, answer) = server.call("POST", "/api/v1/users", &server.admin, Some(body)).await;
    assert_eq!(status, 201, "{answer}");
}

/// Puts a calendar entry for `user` straight into the hub, as a calendar source would.
async fn calendar(
    server: &Server,
    user: &str,
    key: &str,
    show_as: ShowAs,
    from: &str,
    until: &str,
) {
    let app = &server.running.app;
    let slot = app.hub.user(user).unwrap();
    let fact = Fact::new(Source::Calendar, key, FactState::Calendar { show_as }, at(NOW))
        .starting(Some(at(from)))
        .ending(Some(at(until)));
    app.hub.committed(&slot, app.hub.update(&slot, vec![Change::Put(fact)])).await.unwrap();
}

async fn route(server: &Server, body: Value) -> (u16, Value) {
    server.call("POST", "/api/v1/route", &server.admin, Some(body)).await
}

async fn alice_and_bob(server: &Server) {
    let alice = json!({"id": "alice@example.com", "name": "Alice Example", "phone": "+49 30 1234567", "tz": "Europe/Berlin", "lang": "de"});
    add_user(server, alice).await;
    add_user(server, json!({"id": "bob@example.com", "name": "Bob Builder", "phone": "2001"}))
        .await;
}

#[tokio::test]
async fn a_meeting_forwards_to_the_absence_target_and_a_call_is_busy() {
    let server = start(ServerFile::default()).await;
    alice_and_bob(&server).await;
    let settings = json!({"absence_target": "user:bob@example.com"});
    let (status, stored) = server
        .call("PUT", "/api/v1/users/alice@example.com/routing", &server.admin, Some(settings))
        .await;
    assert_eq!(status, 200, "{stored}");
    calendar(
        &server,
        "alice@example.com",
        "standup",
        ShowAs::Busy,
        "2026-12-03T09:30:00Z",
        "2026-12-03T13:30:00Z",
    )
    .await;

    let (status, d) =
        route(&server, json!({"from": "bob@example.com", "to": "alice@example.com"})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["action"], "forward");
    assert_eq!(d["target"], "sip:bob@example.com");
    assert_eq!(d["reason"], "in-a-meeting");
    assert_eq!(d["until"], "2026-12-03T13:30:00Z");
    assert_eq!(
        d["explanation"],
        "rule `in-a-meeting` matched: alice@example.com is in-a-meeting, busy; forwarded through \
         alice@example.com (in-a-meeting) -> bob@example.com (default); the call is forwarded to \
         sip:bob@example.com."
    );
    assert_eq!(d["caller"]["user"], "bob@example.com");
    assert!(d.get("announcement").is_none(), "colleagues hear nothing: {d}");

    // Bob takes a call; a call to him is busy, and so is one forwarded to him.
    let event = json!({"user": "bob@example.com", "call_id": "c1", "state": "connected"});
    let (status, _) =
        server.call("POST", "/api/v1/telephony/events", &server.admin, Some(event)).await;
    assert_eq!(status, 204);
    let (_, d) =
        route(&server, json!({"from": "+49 30 1234567", "to": "sip:bob@example.com"})).await;
    assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("busy"), Some("in-a-call")));
    assert_eq!(d["caller"]["name"], "Alice Example", "the number belongs to alice: {d}");
    assert!(d["explanation"].as_str().unwrap().contains("the call is rejected as busy"), "{d}");
    let (_, d) = route(&server, json!({"from": "2001", "to": "tel:+49301234567"})).await;
    assert_eq!(d["hops"][0]["user"], "alice@example.com", "the callee named by number: {d}");
    assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("busy"), Some("in-a-meeting")));
    assert_eq!(d["hops"][1]["rule"], "in-a-call");
}

/// Reads a WAV header: (channels, sample rate, bits per sample, bytes of audio).
fn wav_format(bytes: &[u8]) -> (u16, u32, u16, usize) {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    let mut i = 12;
    let mut format = None;
    while i + 8 <= bytes.len() {
        let (id, len) = (&bytes[i..i + 4], u32_at(i + 4) as usize);
        if id == b"fmt " {
            assert_eq!(u16_at(i + 8), 1, "PCM");
            format = Some((u16_at(i + 10), u32_at(i + 12), u16_at(i + 22)));
        }
        if id == b"data" {
            let (channels, rate, bits) = format.expect("fmt before data");
            // espeak-ng writes a streaming header whose length may be 0 or too large.
            let len = len.min(bytes.len() - i - 8);
            let len = if len == 0 { bytes.len() - i - 8 } else { len };
            return (channels, rate, bits, len);
        }
        i += 8 + len + (len & 1);
    }
    panic!("no data chunk");
}

async fn wav(server: &Server, url: &str) -> Vec<u8> {
    assert!(url.starts_with(&server.base), "{url}");
    let response = server.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    response.bytes().await.unwrap().to_vec()
}

fn require_espeak() {
    let ok = Command::new("espeak-ng").arg("--version").stdout(Stdio::null()).status();
    assert!(
        ok.is_ok_and(|s| s.success()),
        "these tests need espeak-ng (Debian package espeak-ng, installed by .ci/setup.d/routing.sh)"
    );
}

/// Waits until the server has checked for the synthesiser at start.
async fn until_speaking(server: &Server) {
    for _ in 0..100 {
        if server.running.app.routing.speaks.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not find espeak-ng");
}

#[tokio::test]
async fn an_external_caller_hears_when_an_absent_user_is_back_in_both_languages() {
    require_espeak();
    let server = start(ServerFile::default()).await;
    until_speaking(&server).await;
    alice_and_bob(&server).await;
    // Out of office from Tuesday to the end of Sunday, Berlin time.
    calendar(
        &server,
        "alice@example.com",
        "holiday",
        ShowAs::OutOfOffice,
        "2026-11-30T23:00:00Z",
        "2026-12-06T23:00:00Z",
    )
    .await;

    let mut texts = Vec::new();
    for (lang, expected) in [
        (
            None,
            "Alice Example ist nicht im Büro und ab Montag, 7. Dezember wieder da. Bitte hinterlassen Sie nach dem Signalton eine Nachricht.",
        ),
        (
            Some("en-GB"),
            "Alice Example is out of the office and back on Monday, 7 December. Please leave a message after the tone.",
        ),
    ] {
        let mut body = json!({"from": "+44 20 7946 0958", "to": "alice@example.com"});
        if let Some(lang) = lang {
            body["lang"] = json!(lang);
        }
        let (status, d) = route(&server, body).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(
            (d["action"].as_str(), d["reason"].as_str()),
            (Some("voicemail"), Some("out-of-office-external"))
        );
        assert_eq!(d["target"], "sip:voicemail@example.com;mailbox=alice");
        assert_eq!(d["caller"]["number"], "+442079460958");
        let announcement = &d["announcement"];
        assert_eq!(announcement["text"], expected);
        texts.push(expected.len());

        let audio = wav(&server, announcement["audio_url"].as_str().unwrap()).await;
        let (channels, rate, bits, len) = wav_format(&audio);
        assert_eq!((channels, rate, bits), (1, 22050, 16));
        let seconds = len as f64 / f64::from(rate) / 2.0;
        // Speech runs at roughly 10 to 20 characters a second.
        let chars = expected.chars().count() as f64;
        assert!(
            seconds > chars / 25.0 && seconds < chars / 6.0,
            "{seconds} s for {chars} characters"
        );
    }
    assert_ne!(texts[0], texts[1]);

    // The same words are rendered once and served from the cache.
    let (_, d) =
        route(&server, json!({"from": "+44 20 7946 0958", "to": "alice@example.com"})).await;
    let files = std::fs::read_dir(server.dir.path().join("announcements")).unwrap().count();
    assert_eq!(files, 2, "one file per text and voice");
    assert!(d["announcement"]["audio_url"].as_str().unwrap().ends_with(".wav"));

    let (status, problem) = server
        .call(
            "GET",
            "/api/v1/announcements/0123456789abcdef0123456789abcdef.wav",
            &server.admin,
            None,
        )
        .await;
    assert_eq!((status, problem["status"].as_u64()), (404, Some(404)));
    let (status, _) =
        server.call("GET", "/api/v1/announcements/..%2Fampel.db", &server.admin, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn routing_settings_are_the_user_own_and_checked() {
    let server = start(ServerFile::default()).await;
    alice_and_bob(&server).await;
    let bob = {
        let (_, t) =
            server.call("POST", "/api/v1/users/bob@example.com/tokens", &server.admin, None).await;
        t["token"].as_str().unwrap().to_owned()
    };
    let path = "/api/v1/users/bob@example.com/routing";
    let (status, d) = server.call("GET", path, &bob, None).await;
    assert_eq!((status, d), (200, json!({})));

    let body = json!({"busy_target": "tel:0170 1234567", "mobile": "0170 7654321", "lists": {"vip": ["030 999888", "Alice@Example.com"]}});
    let (status, d) = server.call("PUT", path, &bob, Some(body)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        d,
        json!({"busy_target": "tel:+491701234567", "mobile": "+491707654321", "lists": {"vip": ["+4930999888", "alice@example.com"]}})
    );
    let (_, d) = server.call("GET", path, &bob, None).await;
    assert_eq!(d["mobile"], "+491707654321");

    let (status, _) =
        server.call("GET", "/api/v1/users/alice@example.com/routing", &bob, None).await;
    assert_eq!(status, 403);
    let (status, p) =
        server.call("GET", "/api/v1/users/nobody@example.com/routing", &server.admin, None).await;
    assert_eq!((status, p["type"].as_str()), (404, Some("https://ampel.dev/problems/not-found")));

    for (body, field) in [
        (json!({"mobile": "call me"}), "mobile"),
        (json!({"absence_target": "user:ghost@example.com"}), "absence_target"),
        (json!({"absence_target": "team:sales"}), "absence_target"),
        (json!({"busy_target": "absence-target"}), "busy_target"),
        (json!({"lists": {"board": ["+4930123456"]}}), "lists.board"),
        (json!({"lists": {"vip": ["12ab"]}}), "lists.vip[0]"),
        (json!({"absence": "user:alice@example.com"}), "absence"),
    ] {
        let (status, p) = server.call("PUT", path, &bob, Some(body.clone())).await;
        assert_eq!((status, p["field"].as_str()), (422, Some(field)), "{body} -> {p}");
    }
}

#[tokio::test]
async fn bad_calls_are_answered_with_problems_naming_the_field() {
    let server = start(ServerFile::default()).await;
    alice_and_bob(&server).await;
    let cases = [
        (json!({"from": "+4930111", "to": "nobody@example.com"}), 404, "to"),
        (json!({"from": "call me maybe", "to": "alice@example.com"}), 422, "from"),
        (json!({"from": "+49 1", "to": "alice@example.com"}), 422, "from"),
        (json!({"from": "+4930111", "to": "alice@example.com", "class": "friend"}), 422, "class"),
        (json!({"from": "+4930111", "to": "alice@example.com", "lang": "fr"}), 422, "lang"),
        (json!({"to": "alice@example.com"}), 422, "from"),
    ];
    for (body, status, field) in cases {
        let (got, p) = route(&server, body.clone()).await;
        assert_eq!((got, p["field"].as_str()), (status, Some(field)), "{body} -> {p}");
    }
    // A withheld number is an unknown external caller, not an error.
    let (status, d) = route(&server, json!({"from": "anonymous", "to": "alice@example.com"})).await;
    assert_eq!(
        (status, d["action"].as_str(), d["reason"].as_str()),
        (200, Some("ring"), Some("default"))
    );

    let bob = {
        let (_, t) =
            server.call("POST", "/api/v1/users/bob@example.com/tokens", &server.admin, None).await;
        t["token"].as_str().unwrap().to_owned()
    };
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/route",
            &bob,
            Some(json!({"from": "+4930111", "to": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = server
        .call(
            "POST",
            "/api/v1/route",
            &bob,
            Some(json!({"from": "+4930111", "to": "bob@example.com"})),
        )
        .await;
    assert_eq!(status, 200);

    let (status, p) = server.call("GET", "/api/v1/lookup?number=abc", &server.admin, None).await;
    assert_eq!((status, p["field"].as_str()), (422, Some("number")));

    let (_, doc) = server.call("GET", "/api/v1/openapi.json", &server.admin, None).await;
    for path in [
        "/api/v1/route",
        "/api/v1/lookup",
        "/api/v1/users/{id}/routing",
        "/api/v1/announcements/{file}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

async fn look(server: &Server, number: &str) -> Value {
    let path = format!("/api/v1/lookup?number={}", number.replace('+', "%2B").replace(' ', "%20"));
    let (status, body) = server.call("GET", &path, &server.admin, None).await;
    assert_eq!(status, 200, "{number}: {body}");
    body
}

/// A Radicale server on a free port with its collections in a temporary directory.
struct Radicale {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Radicale {
    async fn start() -> Radicale {
        let available = Command::new("python3").args(["-c", "import radicale"]).status();
        assert!(
            available.is_ok_and(|s| s.success()),
            "this test needs Radicale (pip package radicale, installed by .ci/setup.d/routing.sh)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = support::port::free_port();
        let child = Command::new("python3")
            .args(["-m", "radicale", "--server-hosts", &format!("127.0.0.1:{port}")])
            .args(["--storage-filesystem-folder", dir.path().join("collections").to_str().unwrap()])
            .args([
                "--auth-type",
                "none",
                "--rights-type",
                "authenticated",
                "--logging-level",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("radicale starts");
        let radicale = Radicale { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(&radicale.base).send().await.is_ok() {
                return radicale;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("radicale did not answer on {}", radicale.base);
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn callers_are_named_from_users_the_directory_and_the_address_book() {
    let radicale = Radicale::start().await;
    let http = reqwest::Client::new();
    let book = format!("{}/ampel/contacts/", radicale.base);
    let mkcol = r#"<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop>
<D:resourcetype><D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#;
    let made = http
        .request(reqwest::Method::from_bytes(b"MKCOL").unwrap(), &book)
        .basic_auth("ampel", Some("x"))
        .body(mkcol)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let cards = [
        (
            "hans",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:hans\r\nFN:Hans M\u{fc}ller\r\nTEL;TYPE=CELL:0171 5550123\r\nLANG:de\r\nEND:VCARD\r\n",
        ),
        (
            "jane",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:jane\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\nTEL:+1 650 253 0000\r\nLANG:en\r\nEND:VCARD\r\n",
        ),
    ];
    for (uid, card) in cards {
        let put = http
            .put(format!("{book}{uid}.vcf"))
            .basic_auth("ampel", Some("x"))
            .header("Content-Type", "text/vcard; charset=utf-8")
            .body(card)
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "{uid}");
    }

    let csv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        csv.path(),
        "name,number,lang\n\"Pizza, Bella\",089 1234567,de\nNo Number,,\nBroken,abc,\n",
    )
    .unwrap();
    let file = ServerFile::from_toml(&format!(
        "[routing]\ndirectory = {:?}\n[routing.carddav]\nurl = {book:?}\nuser = \"ampel\"\npassword = \"x\"\n",
        csv.path().to_str().unwrap()
    ))
    .unwrap();
    let server = start(file).await;
    alice_and_bob(&server).await;
    let count =
        server.running.app.routing.refresh_contacts().await.expect("the address book is read");
    assert_eq!(count, 2);

    assert_eq!(
        look(&server, "0171 5550123").await,
        json!({"number": "+491715550123", "name": "Hans Müller", "lang": "de", "origin": "carddav"})
    );
    assert_eq!(look(&server, "tel:+16502530000").await["name"], "Jane Doe");
    assert_eq!(
        look(&server, "0891234567").await,
        json!({"number": "+49891234567", "name": "Pizza, Bella", "lang": "de", "origin": "directory"})
    );
    assert_eq!(
        look(&server, "030 1234567").await,
        json!({"number": "+49301234567", "name": "Alice Example", "user": "alice@example.com", "lang": "de", "origin": "user"})
    );
    assert_eq!(look(&server, "2001").await["user"], "bob@example.com");
    assert_eq!(look(&server, "+49 40 999999").await, json!({"number": "+4940999999"}));

    // The contact's language decides the announcement's; the lookup makes the caller external.
    calendar(
        &server,
        "alice@example.com",
        "review",
        ShowAs::Busy,
        "2026-12-03T09:30:00Z",
        "2026-12-03T13:30:00Z",
    )
    .await;
    let (_, d) =
        route(&server, json!({"from": "+1 650 253 0000", "to": "alice@example.com"})).await;
    assert_eq!(d["reason"], "in-a-meeting-external");
    assert_eq!(d["action"], "ring", "no absence target: the call rings, with nothing announced");
    let settings = json!({"absence_target": "tel:+4930555"});
    server
        .call("PUT", "/api/v1/users/alice@example.com/routing", &server.admin, Some(settings))
        .await;
    let (_, d) =
        route(&server, json!({"from": "+1 650 253 0000", "to": "alice@example.com"})).await;
    assert_eq!(
        (d["action"].as_str(), d["target"].as_str()),
        (Some("forward"), Some("tel:+4930555"))
    );
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example is in a meeting until 2:30 pm. Your call is being forwarded."
    );
    let (_, d) = route(&server, json!({"from": "0171 5550123", "to": "alice@example.com"})).await;
    assert_eq!(
        d["announcement"]["text"],
        "Alice Example ist bis 14:30 Uhr in einer Besprechung. Ihr Anruf wird weitergeleitet."
    );
}
