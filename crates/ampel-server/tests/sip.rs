//! The SIP front end against a real server on 127.0.0.1:0, spoken to by a small UDP phone:
//! PUBLISH with its conditions and errors, SUBSCRIBE/NOTIFY driven by the hub, busy lamps,
//! digest authentication and bad input.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use ampel_server::server_file::ServerFile;
use ampel_server::sip::SipSettings;
use ampel_server::sip::notify::PER_ADDRESS;
use ampel_sip::digest::{self, Algorithm};
use ampel_sip::message::{self, Message, Request, Response, tag_of};
use serde_json::json;
use support::Server;
use tokio::net::UdpSocket;

async fn server(authenticate: bool) -> (Server, SocketAddr) {
    server_with(SipSettings { authenticate, ..SipSettings::default() }).await
}

async fn server_with(settings: SipSettings) -> (Server, SocketAddr) {
    let sip = SipSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..settings };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    (s, addr)
}

/// A phone: one UDP socket, requests written out in full.
struct Phone {
    socket: UdpSocket,
    server: SocketAddr,
    aor: String,
    call: u32,
}

impl Phone {
    async fn new(server: SocketAddr, aor: &str) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Phone { socket, server, aor: aor.to_owned(), call: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// A request to `target` on a fresh Call-ID unless `dialog` gives Call-ID and To tag.
    fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        self.call += 1;
        let mut text = format!(
            "{method} sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{}-{}\r\nMax-Forwards: 70\r\nFrom: <sip:{}>;tag=ft{}\r\n",
            self.addr(),
            self.aor.replace(['@', '.'], ""),
            self.call,
            self.aor,
            self.call
        );
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !has("to") {
            text.push_str(&format!("To: <sip:{target}>\r\n"));
        }
        if !has("call-id") {
            text.push_str(&format!("Call-ID: c{}-{}\r\n", self.call, self.addr().port()));
        }
        if !has("cseq") {
            text.push_str(&format!("CSeq: 1 {method}\r\n"));
        }
        text.push_str(&format!(
            "Contact: <sip:{}@{}>\r\n",
            self.aor.split('@').next().unwrap(),
            self.addr()
        ));
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        text
    }

    async fn send(&self, text: &str) {
        self.socket.send_to(text.as_bytes(), self.server).await.unwrap();
    }

    async fn recv(&self) -> Message {
        let mut buf = vec![0u8; 70_000];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.socket.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        message::parse(&buf[..n], true).unwrap().0
    }

    async fn response(&self) -> Response {
        match self.recv().await {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {} ", r.method),
        }
    }

    /// The next NOTIFY, answered with 200.
    async fn notify(&self) -> Request {
        match self.recv().await {
            Message::Request(r) if r.method == "NOTIFY" => {
                self.socket
                    .send_to(&r.response(200, "OK", None).to_bytes(), self.server)
                    .await
                    .unwrap();
                r
            }
            other => panic!("expected a NOTIFY, got {other:?}"),
        }
    }

    async fn ask(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let text = self.request(method, target, headers, body);
        self.send(&text).await;
        self.response().await
    }
}

fn pidf(entity: &str, basic: &str, activity: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:{entity}"><tuple id="t"><status><basic>{basic}</basic></status></tuple><dm:person id="p"><rpid:activities><rpid:{activity}/></rpid:activities><dm:note xml:lang="en">Call me later</dm:note></dm:person></presence>"#
    )
}

const PIDF: (&str, &str) = ("Content-Type", "application/pidf+xml");
const PRESENCE: (&str, &str) = ("Event", "presence");

async fn availability(s: &Server, user: &str, token: &str) -> String {
    let (status, body) =
        s.call("GET", &format!("/api/v1/users/{user}/presence"), token, None).await;
    assert_eq!(status, 200, "{body}");
    body["availability"].as_str().unwrap_or("hidden").to_owned()
}

#[tokio::test]
async fn publish_creates_modifies_refreshes_and_removes_a_device() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let admin = s.admin.clone();
    let mut phone = Phone::new(addr, "alice@example.com").await;
    let target = "alice@example.com";

    let r = phone
        .ask(
            "PUBLISH",
            target,
            &[PRESENCE, PIDF, ("Expires", "120")],
            &pidf(target, "open", "on-the-phone"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("expires"), Some("120"));
    let etag = r.header("sip-etag").unwrap().to_owned();
    assert_eq!(availability(&s, target, &admin).await, "busy");
    let (_, presence) =
        s.call("GET", &format!("/api/v1/users/{target}/presence"), &admin, None).await;
    assert_eq!(presence["note"]["text"], "Call me later");

    // Modify: a new document under the entity tag; the tag changes.
    let r = phone
        .ask(
            "PUBLISH",
            target,
            &[PRESENCE, PIDF, ("SIP-If-Match", &etag)],
            &pidf(target, "open", "away"),
        )
        .await;
    assert_eq!(r.status, 200);
    let etag2 = r.header("sip-etag").unwrap().to_owned();
    assert_ne!(etag, etag2);
    assert_eq!(availability(&s, target, &admin).await, "away");

    // The spent tag is unknown now.
    let r = phone.ask("PUBLISH", target, &[PRESENCE, ("SIP-If-Match", &etag)], "").await;
    assert_eq!(r.status, 412);

    // Refresh without a body keeps the state.
    let r = phone
        .ask("PUBLISH", target, &[PRESENCE, ("SIP-If-Match", &etag2), ("Expires", "300")], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("expires"), Some("300"));
    let etag3 = r.header("sip-etag").unwrap().to_owned();
    assert_eq!(availability(&s, target, &admin).await, "away");

    // Remove.
    let r = phone
        .ask("PUBLISH", target, &[PRESENCE, ("SIP-If-Match", &etag3), ("Expires", "0")], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(availability(&s, target, &admin).await, "offline");
}

#[tokio::test]
async fn publish_errors_carry_their_codes_and_reasons() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "alice@example.com").await;
    let t = "alice@example.com";
    let body = pidf(t, "open", "away");

    let r = phone.ask("PUBLISH", t, &[("Event", "weather"), PIDF], &body).await;
    assert_eq!((r.status, r.header("allow-events")), (489, Some("presence, dialog")));
    let r = phone.ask("PUBLISH", t, &[PRESENCE, ("Content-Type", "text/plain")], "open").await;
    assert_eq!((r.status, r.header("accept")), (415, Some("application/pidf+xml")));
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF, ("Expires", "5")], &body).await;
    assert_eq!((r.status, r.header("min-expires")), (423, Some("60")));
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF, ("Expires", "999999")], &body).await;
    assert_eq!((r.status, r.header("expires")), (200, Some("3600")));
    let r = phone.ask("PUBLISH", t, &[PRESENCE, ("SIP-If-Match", "nonsense")], "").await;
    assert_eq!(r.status, 412);
    let r = phone.ask("PUBLISH", "nobody@example.com", &[PRESENCE, PIDF], &body).await;
    assert_eq!(r.status, 404);
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">&b;</presence>"#;
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], laughs).await;
    assert_eq!(r.status, 400);
    assert!(
        r.header("warning").unwrap().contains("document type declarations"),
        "{:?}",
        r.header("warning")
    );
    let r = phone
        .ask(
            "PUBLISH",
            t,
            &[PRESENCE, PIDF],
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple",
        )
        .await;
    assert_eq!(r.status, 400);
    let r = phone.ask("INVITE", t, &[], "").await;
    assert_eq!(r.status, 302, "a call to a user with no facts rings their phones");
    let r = phone.ask("REGISTER", t, &[], "").await;
    assert_eq!(r.status, 405);
}

/// The keys of a user's session facts: one per publishing device.
fn sessions(s: &Server, user: &str) -> Vec<String> {
    let hub = &s.running.app.hub;
    let facts = hub.facts(&hub.user(user).unwrap());
    facts.into_iter().filter(|f| f.source == ampel_core::Source::Session).map(|f| f.key).collect()
}

#[tokio::test]
async fn a_refused_modification_leaves_its_publication_to_the_corrected_retry() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "alice@example.com").await;
    let t = "alice@example.com";
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], &pidf(t, "open", "away")).await;
    assert_eq!(r.status, 200);
    let etag = r.header("sip-etag").unwrap().to_owned();
    let device = sessions(&s, t);
    assert_eq!(device.len(), 1);

    // A broken document and a wrong type are refused; the entity tag stays good.
    let if_match = ("SIP-If-Match", etag.as_str());
    let broken = "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple";
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF, if_match], broken).await;
    assert_eq!(r.status, 400);
    let text = ("Content-Type", "text/plain");
    let r = phone.ask("PUBLISH", t, &[PRESENCE, text, if_match], "busy").await;
    assert_eq!((r.status, r.header("accept")), (415, Some("application/pidf+xml")));

    // The corrected retry modifies the same device: no second session.
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF, if_match], &pidf(t, "open", "busy")).await;
    assert_eq!(r.status, 200);
    assert_eq!(availability(&s, t, &s.admin).await, "busy");
    assert_eq!(sessions(&s, t), device);
}

#[tokio::test]
async fn a_subscriber_is_notified_of_each_change_and_never_of_an_unchanged_state() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let sub = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("Expires", "600"), ("Accept", "application/pidf+xml")],
        "",
    );
    bob.send(&sub).await;
    let ok = bob.response().await;
    assert_eq!((ok.status, ok.header("expires")), (200, Some("600")));
    let to_tag = tag_of(ok.header("to").unwrap()).unwrap().to_owned();
    let first = bob.notify().await;
    assert!(first.header("subscription-state").unwrap().starts_with("active;expires="));
    let body = String::from_utf8(first.body.clone()).unwrap();
    assert!(body.contains("<basic>closed</basic>"), "{body}");

    s.manual("alice@example.com", &alice, json!({"availability": "busy", "note": "Workshop"}))
        .await;
    let busy = String::from_utf8(bob.notify().await.body).unwrap();
    assert!(busy.contains("<basic>open</basic>") && busy.contains("<rpid:busy/>"), "{busy}");
    assert!(busy.contains("Workshop"), "{busy}");

    // The same status again changes nothing and sends nothing: the next NOTIFY is the away.
    s.manual("alice@example.com", &alice, json!({"availability": "busy", "note": "Workshop"}))
        .await;
    s.manual("alice@example.com", &alice, json!({"availability": "away"})).await;
    let away = String::from_utf8(bob.notify().await.body).unwrap();
    assert!(away.contains("<rpid:away/>"), "{away}");

    // Refresh inside the dialog, then unsubscribe.
    let call_id = first.header("call-id").unwrap().to_owned();
    let to = format!("<sip:alice@example.com>;tag={to_tag}");
    let refresh = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[
            PRESENCE,
            ("Expires", "300"),
            ("To", &to),
            ("Call-ID", &call_id),
            ("CSeq", "2 SUBSCRIBE"),
        ],
        "",
    );
    bob.send(&refresh).await;
    assert_eq!(bob.response().await.header("expires"), Some("300"));
    assert!(bob.notify().await.header("subscription-state").unwrap().starts_with("active"));
    let end = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("Expires", "0"), ("To", &to), ("Call-ID", &call_id), ("CSeq", "3 SUBSCRIBE")],
        "",
    );
    bob.send(&end).await;
    assert_eq!(bob.response().await.status, 200);
    let last = bob.notify().await;
    assert_eq!(last.header("subscription-state"), Some("terminated;reason=timeout"));

    // The dialog is gone.
    let again = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("To", &to), ("Call-ID", &call_id), ("CSeq", "4 SUBSCRIBE")],
        "",
    );
    bob.send(&again).await;
    assert_eq!(bob.response().await.status, 481);
}

#[tokio::test]
async fn a_fetch_and_a_blocked_watcher() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &[]).await;
    s.user("mallory@example.com", &[]).await;
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    let (status, _) = s
        .call(
            "PUT",
            "/api/v1/users/alice@example.com/privacy",
            &alice,
            Some(json!({"blocked": ["mallory@example.com"]})),
        )
        .await;
    let mut carol = Phone::new(addr, "carol@example.com").await;
    let fetch = carol.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "0")], "");
    carol.send(&fetch).await;
    assert_eq!(carol.response().await.status, 200);
    let n = carol.notify().await;
    assert_eq!(n.header("subscription-state"), Some("terminated;reason=timeout"));
    // carol is no user of Ampel: she sees what a stranger sees.
    assert!(String::from_utf8(n.body).unwrap().contains("<basic>closed</basic>"));

    assert_eq!(status, 200);
    {
        let mut mallory = Phone::new(addr, "mallory@example.com").await;
        let sub =
            mallory.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "0")], "");
        mallory.send(&sub).await;
        assert_eq!(mallory.response().await.status, 200);
        let body = String::from_utf8(mallory.notify().await.body).unwrap();
        assert!(body.contains("<basic>closed</basic>") && !body.contains("busy"), "{body}");
    }
}

#[tokio::test]
async fn dialog_events_make_calls_and_light_busy_lamps() {
    let (s, addr) = server(false).await;
    let bob = s.user("bob@example.com", &[]).await;
    s.user("erin@example.com", &[]).await;
    s.session("bob@example.com", &bob).await;
    let mut pbx = Phone::new(addr, "bob@example.com").await;
    let mut lamp = Phone::new(addr, "erin@example.com").await;
    let sub = lamp.request(
        "SUBSCRIBE",
        "bob@example.com",
        &[("Event", "dialog"), ("Expires", "600")],
        "",
    );
    lamp.send(&sub).await;
    assert_eq!(lamp.response().await.status, 200);
    let idle = String::from_utf8(lamp.notify().await.body).unwrap();
    assert!(!idle.contains("<dialog "), "{idle}");

    let early = r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:bob@example.com"><dialog id="d1" call-id="call-1" direction="recipient"><state>early</state></dialog></dialog-info>"#;
    let r = pbx
        .ask(
            "PUBLISH",
            "bob@example.com",
            &[("Event", "dialog"), ("Content-Type", "application/dialog-info+xml")],
            early,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(availability(&s, "bob@example.com", &bob).await, "busy");
    let ringing = String::from_utf8(lamp.notify().await.body).unwrap();
    assert!(ringing.contains("<state>early</state>"), "{ringing}");

    let ended = early
        .replace("version=\"1\"", "version=\"2\"")
        .replace("<state>early</state>", "<state>terminated</state>");
    let r = pbx
        .ask(
            "PUBLISH",
            "bob@example.com",
            &[("Event", "dialog"), ("Content-Type", "application/dialog-info+xml")],
            &ended,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(availability(&s, "bob@example.com", &bob).await, "available");
    let over = String::from_utf8(lamp.notify().await.body).unwrap();
    assert!(!over.contains("<dialog "), "{over}");
}

#[tokio::test]
async fn digest_authentication_with_sha256_and_md5() {
    let (s, addr) = server(true).await;
    s.user("alice@example.com", &[]).await;
    s.user("bob@example.com", &[]).await;
    let (status, body) = s
        .call(
            "PUT",
            "/api/v1/users/alice@example.com/sip-credentials",
            &s.admin,
            Some(json!({"password": "secret-pw"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = s
        .call(
            "PUT",
            "/api/v1/users/alice@example.com/sip-credentials",
            &s.admin,
            Some(json!({"password": "short"})),
        )
        .await;
    assert_eq!(status, 422);

    let mut phone = Phone::new(addr, "alice@example.com").await;
    for algorithm in [Algorithm::Sha256, Algorithm::Md5] {
        let body = pidf("alice@example.com", "open", "away");
        let challenge = phone.ask("PUBLISH", "alice@example.com", &[PRESENCE, PIDF], &body).await;
        assert_eq!(challenge.status, 401);
        let offers: Vec<&str> = challenge.headers.all("www-authenticate").collect();
        assert!(
            offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"),
            "{offers:?}"
        );
        let nonce = &nonce_of(&challenge);
        let authorization =
            |target: &str, nc: u32| digest_header(algorithm, nonce, "PUBLISH", target, nc);
        let ok = phone
            .ask(
                "PUBLISH",
                "alice@example.com",
                &[PRESENCE, PIDF, ("Authorization", &authorization("alice@example.com", 1))],
                &body,
            )
            .await;
        assert_eq!(ok.status, 200, "{algorithm:?}");
        // Alice may publish only for herself.
        let other = phone
            .ask(
                "PUBLISH",
                "bob@example.com",
                &[PRESENCE, PIDF, ("Authorization", &authorization("bob@example.com", 2))],
                &body,
            )
            .await;
        assert_eq!(other.status, 403);
        let wrong = authorization("alice@example.com", 3).replace("response=\"", "response=\"0");
        let bad = phone
            .ask(
                "PUBLISH",
                "alice@example.com",
                &[PRESENCE, PIDF, ("Authorization", &wrong)],
                &body,
            )
            .await;
        assert_eq!(bad.status, 403);
    }
    assert_eq!(availability(&s, "alice@example.com", &s.admin).await, "away");
}

#[tokio::test]
async fn a_subscribe_authenticates_with_sha256() {
    let (s, addr) = server(true).await;
    s.user("alice@example.com", &["sales"]).await;
    let bob = s.user("bob@example.com", &["sales"]).await;
    s.manual("bob@example.com", &bob, json!({"availability": "busy"})).await;
    let path = "/api/v1/users/alice@example.com/sip-credentials";
    assert_eq!(s.call("PUT", path, &s.admin, Some(json!({"password": "secret-pw"}))).await.0, 204);
    let mut alice = Phone::new(addr, "alice@example.com").await;
    let t = "bob@example.com";
    let headers = [PRESENCE, ("Expires", "600")];

    let challenge = alice.ask("SUBSCRIBE", t, &headers, "").await;
    assert_eq!(challenge.status, 401);
    let offers: Vec<&str> = challenge.headers.all("www-authenticate").collect();
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert!(
        offers[0].contains("algorithm=SHA-256") && offers[1].contains("algorithm=MD5"),
        "{offers:?}"
    );
    let authorization = digest_header(Algorithm::Sha256, &nonce_of(&challenge), "SUBSCRIBE", t, 1);
    assert!(authorization.contains("algorithm=SHA-256"));
    let sub = alice.request(
        "SUBSCRIBE",
        t,
        &[PRESENCE, ("Expires", "600"), ("Authorization", &authorization)],
        "",
    );
    alice.send(&sub).await;
    let ok = alice.response().await;
    assert_eq!((ok.status, ok.header("expires")), (200, Some("600")));
    let notify = alice.notify().await;
    assert!(notify.header("subscription-state").unwrap().starts_with("active;expires="));
    let body = String::from_utf8(notify.body).unwrap();
    assert!(body.contains("<basic>open</basic>") && body.contains("<rpid:busy/>"), "{body}");
}

/// Alice's Authorization header for a request, answering `nonce` with count `nc`.
fn digest_header(algorithm: Algorithm, nonce: &str, method: &str, target: &str, nc: u32) -> String {
    digest_as(("alice", "secret-pw"), algorithm, nonce, (method, target), nc)
}

/// The Authorization header of a user name and password for a request (method, target),
/// answering `nonce` with count `nc`.
fn digest_as(
    (username, password): (&str, &str),
    algorithm: Algorithm,
    nonce: &str,
    (method, target): (&str, &str),
    nc: u32,
) -> String {
    let uri = format!("sip:{target}");
    let ha1 = digest::ha1(algorithm, username, "ampel", password);
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    let response = algorithm.hash(&format!("{ha1}:{nonce}:{nc:08x}:abc:auth:{ha2}"));
    format!(
        "Digest username=\"{username}\", realm=\"ampel\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"abc\", response=\"{response}\"",
        algorithm.as_str()
    )
}

/// The nonce of the first challenge in a 401.
fn nonce_of(challenge: &Response) -> String {
    let offer = challenge.header("www-authenticate").unwrap();
    offer.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_pbx_publisher_publishes_calls_for_every_user_and_nothing_else() {
    let pbx = ampel_server::sip::pbx::PbxSettings {
        address: "127.0.0.1:9".parse().unwrap(),
        domain: None,
        users: Vec::new(),
        expires: 600,
        publisher: Some("pbx".into()),
    };
    let (s, addr) =
        server_with(SipSettings { authenticate: true, pbx: Some(pbx), ..SipSettings::default() })
            .await;
    let bob = s.user("bob@example.com", &[]).await;
    s.session("bob@example.com", &bob).await;
    for (user, password) in [("pbx@example.com", "pbx-secret"), ("alice@example.com", "secret-pw")]
    {
        s.user(user, &[]).await;
        let path = format!("/api/v1/users/{user}/sip-credentials");
        let body = Some(json!({ "password": password }));
        assert_eq!(s.call("PUT", &path, &s.admin, body).await.0, 204);
    }
    let t = "bob@example.com";
    let dialog = [("Event", "dialog"), ("Content-Type", "application/dialog-info+xml")];
    let talking = bob_calls(1, &[("call-1", "confirmed")]);
    let mut pbx = Phone::new(addr, "pbx@example.com").await;
    let challenge = pbx.ask("PUBLISH", t, &dialog, &talking).await;
    assert_eq!(challenge.status, 401);
    let nonce = nonce_of(&challenge);
    let as_pbx =
        |nc| digest_as(("pbx", "pbx-secret"), Algorithm::Sha256, &nonce, ("PUBLISH", t), nc);

    // Bob's calls, from the PBX's account.
    let authorization = as_pbx(1);
    let headers = [dialog[0], dialog[1], ("Authorization", authorization.as_str())];
    assert_eq!(pbx.ask("PUBLISH", t, &headers, &talking).await.status, 200);
    assert_eq!(
        (availability(&s, t, &s.admin).await, activity(&s, t).await),
        ("busy".into(), "in-a-call".into())
    );

    // Bob's presence is not the PBX's to publish.
    let authorization = as_pbx(2);
    let headers = [PRESENCE, PIDF, ("Authorization", authorization.as_str())];
    let r = pbx.ask("PUBLISH", t, &headers, &pidf(t, "open", "away")).await;
    let only_yourself = Some("399 ampel \"you may publish only for yourself\"");
    assert_eq!((r.status, r.header("warning")), (403, only_yourself));

    // Nor are Bob's calls Alice's.
    let mut alice = Phone::new(addr, "alice@example.com").await;
    let challenge = alice.ask("PUBLISH", t, &dialog, &talking).await;
    let authorization = digest_header(Algorithm::Sha256, &nonce_of(&challenge), "PUBLISH", t, 1);
    let headers = [dialog[0], dialog[1], ("Authorization", authorization.as_str())];
    let ended = bob_calls(2, &[("call-1", "terminated")]);
    let r = alice.ask("PUBLISH", t, &headers, &ended).await;
    assert_eq!((r.status, r.header("warning")), (403, only_yourself));
    assert_eq!(activity(&s, t).await, "in-a-call");
}

#[tokio::test]
async fn a_replayed_authorization_is_challenged_afresh() {
    let (s, addr) = server(true).await;
    s.user("alice@example.com", &[]).await;
    let password = Some(json!({"password": "secret-pw"}));
    let path = "/api/v1/users/alice@example.com/sip-credentials";
    assert_eq!(s.call("PUT", path, &s.admin, password).await.0, 204);
    let mut phone = Phone::new(addr, "alice@example.com").await;
    let t = "alice@example.com";
    let body = pidf(t, "open", "away");
    let challenge = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], &body).await;
    assert_eq!(challenge.status, 401);
    let nonce = nonce_of(&challenge);
    let authorization = digest_header(Algorithm::Sha256, &nonce, "PUBLISH", t, 1);
    let headers = [PRESENCE, PIDF, ("Authorization", authorization.as_str())];
    assert_eq!(phone.ask("PUBLISH", t, &headers, &body).await.status, 200);

    // The captured request again, as a new transaction: the same count is refused.
    let replay = phone.ask("PUBLISH", t, &headers, &body).await;
    assert_eq!(replay.status, 401);
    assert_ne!(nonce_of(&replay), nonce, "a fresh nonce");
    assert!(!replay.header("www-authenticate").unwrap().contains("stale"));
    // A lower count too; the phone's next count on the same nonce goes through.
    let next = digest_header(Algorithm::Sha256, &nonce, "PUBLISH", t, 3);
    let headers = [PRESENCE, PIDF, ("Authorization", next.as_str())];
    assert_eq!(phone.ask("PUBLISH", t, &headers, &body).await.status, 200);
    let lower = digest_header(Algorithm::Sha256, &nonce, "PUBLISH", t, 2);
    let headers = [PRESENCE, PIDF, ("Authorization", lower.as_str())];
    assert_eq!(phone.ask("PUBLISH", t, &headers, &body).await.status, 401);
    // A nonce from two challenges in the same second is each its own.
    let again = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], &body).await;
    let other = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], &body).await;
    assert_ne!(nonce_of(&again), nonce_of(&other));
}

#[tokio::test]
async fn garbage_is_ignored_or_answered_with_400_and_the_server_goes_on() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "alice@example.com").await;
    phone.send("\u{0}\u{1}garbage that is no SIP").await;
    phone.send(&"A".repeat(60_000)).await;
    let broken = phone
        .request("PUBLISH", "alice@example.com", &[PRESENCE, PIDF], "")
        .replace("Content-Length: 0", "Content-Length: 99");
    phone.send(&broken).await;
    let r = phone.response().await;
    assert_eq!(r.status, 400);
    assert!(r.header("warning").unwrap().contains("Content-Length"), "{:?}", r.header("warning"));
    let r = phone.ask("OPTIONS", "alice@example.com", &[], "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_unanswered_notify_over_udp_is_sent_again() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let sub = bob.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "600")], "");
    bob.send(&sub).await;
    assert_eq!(bob.response().await.status, 200);
    let Message::Request(first) = bob.recv().await else { panic!("a NOTIFY") };
    // Not answered: the same NOTIFY comes again (RFC 3261 Timer E), and stops once answered.
    let Message::Request(again) = bob.recv().await else { panic!("a NOTIFY") };
    assert_eq!(again.header("cseq"), first.header("cseq"));
    assert_eq!(again.body, first.body);
    bob.socket.send_to(&again.response(200, "OK", None).to_bytes(), addr).await.unwrap();
}

#[tokio::test]
async fn a_redirect_back_to_where_the_call_has_been_is_a_loop() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &[]).await;
    s.user("bob@example.com", &[]).await;
    let (status, _) =
        s.manual("alice@example.com", &alice, json!({"availability": "do-not-disturb"})).await;
    assert_eq!(status, 200);
    let mut phone = Phone::new(addr, "bob@example.com").await;
    let t = "alice@example.com";

    let r = phone.ask("INVITE", t, &[], "").await;
    assert_eq!(
        (r.status, r.header("contact")),
        (302, Some("<sip:voicemail@example.com;mailbox=alice>"))
    );
    // The PBX says the call already came from the voicemail, by either header.
    let diversion = ("Diversion", "<sip:voicemail@example.com;mailbox=alice>;reason=no-answer");
    let r = phone.ask("INVITE", t, &[diversion], "").await;
    assert_eq!((r.status, r.reason.as_str()), (482, "Loop Detected"));
    let history = (
        "History-Info",
        "<sip:voicemail@example.com?Reason=SIP%3Bcause%3D408>;index=1, <sip:alice@example.com>;index=1.1",
    );
    let r = phone.ask("INVITE", t, &[history], "").await;
    assert_eq!(r.status, 482);
    // A ring address the PBX sent back to Ampel.
    let r = phone.ask("INVITE", "alice@example.com;ampel=ring", &[], "").await;
    assert_eq!(r.status, 482);
    assert!(r.reason.contains("ring address"), "{}", r.reason);
    // The caller's identity from P-Asserted-Identity, which must be a number or an address.
    let asserted = ("P-Asserted-Identity", "<tel:+49 30 12>");
    let r = phone.ask("INVITE", t, &[asserted], "").await;
    assert_eq!((r.status, r.reason.as_str()), (400, "Bad Caller Number"));
    let r = phone.ask("INVITE", "example.com", &[], "").await;
    assert_eq!(r.status, 404, "no user part, no callee");
}

#[tokio::test]
async fn a_stopped_server_lets_go_of_its_sip_port_and_data_with_subscriptions_open() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let sub = bob.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "600")], "");
    bob.send(&sub).await;
    assert_eq!(bob.response().await.status, 200);

    let Server { running, dir, .. } = s;
    running.stop().await.unwrap();
    // The same data directory and the same SIP address serve again at once.
    let sip = SipSettings { listen: Some(addr), authenticate: false, ..SipSettings::default() };
    let file = ServerFile { sip, ..Default::default() };
    let clock = std::sync::Arc::new(ampel_server::clock::SystemClock);
    let again = Server::start_full(dir, ampel_core::Policy::default(), clock, file).await;
    assert_eq!(again.running.sip.as_ref().unwrap().local, addr);
}

async fn activity(s: &Server, user: &str) -> String {
    let (status, body) =
        s.call("GET", &format!("/api/v1/users/{user}/presence"), &s.admin, None).await;
    assert_eq!(status, 200, "{body}");
    body["activity"].as_str().unwrap_or("hidden").to_owned()
}

#[tokio::test]
async fn a_published_on_the_phone_is_a_call_until_the_phone_says_otherwise() {
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "alice@example.com").await;
    let t = "alice@example.com";

    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF], &pidf(t, "open", "on-the-phone")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (availability(&s, t, &s.admin).await, activity(&s, t).await),
        ("busy".into(), "in-a-call".into())
    );
    let call = json!({"from": "bob@example.com", "to": t});
    let (status, d) = s.call("POST", "/api/v1/route", &s.admin, Some(call.clone())).await;
    assert_eq!(
        (status, d["action"].as_str(), d["reason"].as_str()),
        (200, Some("busy"), Some("in-a-call")),
        "{d}"
    );

    // An older phone's draft namespace says the same.
    let legacy = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:alice@example.com"><tuple id="t"><status><basic>open</basic><es:activities><es:activity>on-the-phone</es:activity></es:activities></status></tuple></presence>"#;
    let etag = r.header("sip-etag").unwrap().to_owned();
    let r = phone.ask("PUBLISH", t, &[PRESENCE, PIDF, ("SIP-If-Match", &etag)], legacy).await;
    assert_eq!(r.status, 200);
    assert_eq!(activity(&s, t).await, "in-a-call");

    // Vacation keeps its meaning; available clears everything.
    let etag = r.header("sip-etag").unwrap().to_owned();
    let r = phone
        .ask("PUBLISH", t, &[PRESENCE, PIDF, ("SIP-If-Match", &etag)], &pidf(t, "open", "vacation"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (availability(&s, t, &s.admin).await, activity(&s, t).await),
        ("away".into(), "out-of-office".into())
    );
    let etag = r.header("sip-etag").unwrap().to_owned();
    let r = phone
        .ask("PUBLISH", t, &[PRESENCE, PIDF, ("SIP-If-Match", &etag)], &pidf(t, "open", "working"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (availability(&s, t, &s.admin).await, activity(&s, t).await),
        ("available".into(), "available".into())
    );
    let (_, d) = s.call("POST", "/api/v1/route", &s.admin, Some(call)).await;
    assert_eq!(d["action"], "ring", "{d}");
}

/// The version of a dialog-info document and its dialogs' states (`held` for a held one).
fn lamp(notify: &Request) -> (u64, Vec<String>) {
    let info = ampel_sip::dialog_info::parse(&notify.body).unwrap();
    let states = info
        .dialogs
        .iter()
        .map(|d| match (d.state, d.held) {
            (_, true) => "held".to_owned(),
            (state, false) => format!("{state:?}").to_lowercase(),
        })
        .collect();
    (info.version, states)
}

#[tokio::test]
async fn a_busy_lamp_sees_every_change_of_the_calls_and_nothing_else() {
    let (s, addr) = server(false).await;
    let bob = s.user("bob@example.com", &[]).await;
    s.user("erin@example.com", &[]).await;
    s.session("bob@example.com", &bob).await;
    let mut pbx = Phone::new(addr, "bob@example.com").await;
    let mut erin = Phone::new(addr, "erin@example.com").await;
    let sub = erin.request(
        "SUBSCRIBE",
        "bob@example.com",
        &[("Event", "dialog"), ("Expires", "600")],
        "",
    );
    erin.send(&sub).await;
    assert_eq!(erin.response().await.status, 200);
    assert_eq!(lamp(&erin.notify().await), (0, vec![]));

    let mut version = 0;
    let mut report = async |state: &str, held: bool| {
        version += 1;
        let local = if held {
            r#"<local><target uri="sip:bob@example.com"><param pname="+sip.rendering" pvalue="no"/></target></local>"#
        } else {
            ""
        };
        let doc = format!(
            r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full" entity="sip:bob@example.com"><dialog id="d1" call-id="call-1" direction="recipient"><state>{state}</state>{local}</dialog></dialog-info>"#
        );
        let headers = [("Event", "dialog"), ("Content-Type", "application/dialog-info+xml")];
        assert_eq!(pbx.ask("PUBLISH", "bob@example.com", &headers, &doc).await.status, 200);
    };
    report("early", false).await;
    assert_eq!(lamp(&erin.notify().await), (1, vec!["early".into()]));
    // Ringing to held and connected to held leave Bob busy in a call; the lamp still hears.
    report("confirmed", true).await;
    assert_eq!(lamp(&erin.notify().await), (2, vec!["held".into()]));
    report("confirmed", false).await;
    assert_eq!(lamp(&erin.notify().await), (3, vec!["confirmed".into()]));
    report("confirmed", true).await;
    assert_eq!(lamp(&erin.notify().await), (4, vec!["held".into()]));
    // The same state again sends nothing: the next NOTIFY is the end of the call.
    report("confirmed", true).await;
    report("terminated", false).await;
    assert_eq!(lamp(&erin.notify().await), (5, vec![]));
}

/// A subscription to `target` from `phone`: the answer, and the NOTIFY that follows a 200.
async fn subscribe(phone: &mut Phone, target: &str) -> Response {
    let sub = phone.request("SUBSCRIBE", target, &[PRESENCE, ("Expires", "600")], "");
    phone.send(&sub).await;
    let answer = phone.response().await;
    if answer.status == 200 {
        phone.notify().await;
    }
    answer
}

#[tokio::test]
async fn a_subscriber_over_its_cap_is_refused_until_it_lets_one_go() {
    let settings = SipSettings {
        authenticate: false,
        max_subscriptions_per_subscriber: 2,
        ..SipSettings::default()
    };
    let (s, addr) = server_with(settings).await;
    for user in ["alice", "bob", "carol", "dave"] {
        s.user(&format!("{user}@example.com"), &[]).await;
    }
    let mut dave = Phone::new(addr, "dave@example.com").await;
    let first = subscribe(&mut dave, "alice@example.com").await;
    assert_eq!(first.status, 200);
    assert_eq!(subscribe(&mut dave, "bob@example.com").await.status, 200);
    let over = subscribe(&mut dave, "carol@example.com").await;
    assert_eq!((over.status, over.reason.as_str()), (403, "Too Many Subscriptions"));
    assert!(over.header("warning").unwrap().contains("too many subscriptions"), "{over:?}");
    // Another subscriber from the same address is not affected.
    let mut erin = Phone::new(addr, "erin@example.com").await;
    assert_eq!(subscribe(&mut erin, "carol@example.com").await.status, 200);

    // Dave ends one subscription and may take another.
    let to = first.header("to").unwrap().to_owned();
    let call_id = first.header("call-id").unwrap().to_owned();
    let end = dave.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("Expires", "0"), ("To", &to), ("Call-ID", &call_id), ("CSeq", "2 SUBSCRIBE")],
        "",
    );
    dave.send(&end).await;
    assert_eq!(dave.response().await.status, 200);
    dave.notify().await;
    let mut again = subscribe(&mut dave, "carol@example.com").await;
    for _ in 0..50 {
        if again.status == 200 {
            break;
        }
        // The subscription is let go right after its final NOTIFY is answered.
        tokio::time::sleep(Duration::from_millis(20)).await;
        again = subscribe(&mut dave, "carol@example.com").await;
    }
    assert_eq!(again.status, 200);
}

#[tokio::test]
async fn an_address_over_its_cap_is_told_to_come_back_later() {
    let settings = SipSettings {
        authenticate: false,
        max_subscriptions_per_address: 2,
        ..SipSettings::default()
    };
    let (s, addr) = server_with(settings).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "w1@example.com").await;
    assert_eq!(subscribe(&mut phone, "alice@example.com").await.status, 200);
    phone.aor = "w2@example.com".into();
    assert_eq!(subscribe(&mut phone, "alice@example.com").await.status, 200);
    phone.aor = "w3@example.com".into();
    let over = subscribe(&mut phone, "alice@example.com").await;
    assert_eq!((over.status, over.header("retry-after")), (503, Some("60")));
    assert!(over.header("warning").unwrap().contains("from this address"), "{over:?}");
}

#[tokio::test]
async fn without_authentication_only_trusted_networks_are_taken_at_their_word() {
    // Loopback is not among the trusted networks here: it stands for a stranger's address.
    let settings = SipSettings {
        authenticate: false,
        trusted_networks: vec!["10.0.0.0/8".parse().unwrap()],
        ..SipSettings::default()
    };
    let (s, addr) = server_with(settings).await;
    s.user("alice@example.com", &[]).await;
    let mut phone = Phone::new(addr, "bob@example.com").await;
    let challenge = subscribe(&mut phone, "alice@example.com").await;
    assert_eq!(challenge.status, 401);
    let body = pidf("alice@example.com", "open", "away");
    let r = phone.ask("PUBLISH", "alice@example.com", &[PRESENCE, PIDF], &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(availability(&s, "alice@example.com", &s.admin).await, "offline");
}

#[test]
fn trusted_networks_are_read_as_addresses_and_blocks() {
    let settings = SipSettings::default();
    for trusted in ["127.0.0.1", "10.1.2.3", "172.31.0.1", "192.168.7.7", "::1", "fd00::1"] {
        assert!(settings.trusts(trusted.parse().unwrap()), "{trusted}");
    }
    for stranger in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
        assert!(!settings.trusts(stranger.parse().unwrap()), "{stranger}");
    }
    assert!(settings.trusts("::ffff:10.0.0.1".parse().unwrap()));
    let one: ampel_server::sip::Network = "192.0.2.7".parse().unwrap();
    assert!(one.contains("192.0.2.7".parse().unwrap()));
    assert!(!one.contains("192.0.2.8".parse().unwrap()));
    let all: ampel_server::sip::Network = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.1".parse().unwrap()));
    assert!(!all.contains("2001:db8::1".parse().unwrap()));
    for bad in ["10.0.0.0/33", "nonsense", "::/129", "10.0.0.0/x"] {
        assert!(bad.parse::<ampel_server::sip::Network>().is_err(), "{bad}");
    }
}

/// A server that subscribes for Bob's calls at the PBX on `pbx`; Bob exists before it starts.
async fn pbx_server(pbx: SocketAddr) -> Server {
    let first = Server::start().await;
    let bob = first.user("bob@example.com", &[]).await;
    first.session("bob@example.com", &bob).await;
    let Server { running, dir, .. } = first;
    running.stop().await.unwrap();
    let pbx = ampel_server::sip::pbx::PbxSettings {
        address: pbx,
        domain: None,
        users: vec!["bob@example.com".into()],
        expires: 600,
        publisher: None,
    };
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        authenticate: false,
        pbx: Some(pbx),
        ..SipSettings::default()
    };
    let clock = std::sync::Arc::new(ampel_server::clock::SystemClock);
    let file = ServerFile { sip, ..Default::default() };
    Server::start_full(dir, ampel_core::Policy::default(), clock, file).await
}

/// The next SUBSCRIBE that reaches the PBX, skipping retransmissions of `answered` branches.
async fn next_subscribe(pbx: &UdpSocket, answered: &[String]) -> (Request, SocketAddr) {
    loop {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), pbx.recv_from(&mut buf))
            .await
            .expect("a SUBSCRIBE within 5 s")
            .unwrap();
        let Message::Request(r) = message::parse(&buf[..n], true).unwrap().0 else { continue };
        if !answered.iter().any(|b| Some(b.as_str()) == r.branch()) {
            return (r, from);
        }
    }
}

#[tokio::test]
async fn the_pbx_subscription_is_retransmitted_refreshed_in_its_dialog_and_renewed_when_lost() {
    let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _s = pbx_server(pbx.local_addr().unwrap()).await;
    let mut answered = Vec::new();

    // Unanswered, the SUBSCRIBE comes again: the same transaction.
    let (first, ampel) = next_subscribe(&pbx, &answered).await;
    let (again, _) = next_subscribe(&pbx, &answered).await;
    assert_eq!((again.branch(), again.cseq()), (first.branch(), first.cseq()));
    assert_eq!(tag_of(first.header("to").unwrap()), None);
    let ok = again
        .response(200, "OK", Some("pbx-tag"))
        .with("contact", "<sip:pbx@127.0.0.1:5999>")
        .with("expires", "1");
    pbx.send_to(&ok.to_bytes(), ampel).await.unwrap();
    answered.push(again.branch().unwrap().to_owned());

    // The refresh, inside the dialog, a second later.
    let (refresh, _) = next_subscribe(&pbx, &answered).await;
    assert_eq!(refresh.uri, "sip:pbx@127.0.0.1:5999");
    assert_eq!(tag_of(refresh.header("to").unwrap()), Some("pbx-tag"));
    assert_eq!(refresh.header("call-id"), first.header("call-id"));
    assert_eq!(refresh.cseq(), Some(first.cseq().unwrap() + 1));
    pbx.send_to(&refresh.response(481, "Subscription Does Not Exist", None).to_bytes(), ampel)
        .await
        .unwrap();
    answered.push(refresh.branch().unwrap().to_owned());

    // The PBX forgot it: Ampel subscribes afresh, in a new dialog.
    let (fresh, _) = next_subscribe(&pbx, &answered).await;
    assert_ne!(fresh.header("call-id"), first.header("call-id"));
    assert_eq!(tag_of(fresh.header("to").unwrap()), None);
    assert_eq!(fresh.uri, "sip:bob@example.com");
    let ok = fresh.response(200, "OK", Some("pbx-tag-2")).with("expires", "600");
    pbx.send_to(&ok.to_bytes(), ampel).await.unwrap();
    answered.push(fresh.branch().unwrap().to_owned());

    // The PBX ends it with a NOTIFY: Ampel subscribes afresh once more.
    let pbx_addr = pbx.local_addr().unwrap();
    let notify = format!(
        "NOTIFY sip:ampel@{ampel} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bKend\r\n\
         From: <sip:bob@example.com>;tag=pbx-tag-2\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 1 NOTIFY\r\nEvent: dialog\r\nSubscription-State: terminated;reason=deactivated\r\n\
         Content-Length: 0\r\n\r\n",
        fresh.header("from").unwrap(),
        fresh.header("call-id").unwrap()
    );
    pbx.send_to(notify.as_bytes(), ampel).await.unwrap();
    let (renewed, _) = next_subscribe(&pbx, &answered).await;
    assert_ne!(renewed.header("call-id"), fresh.header("call-id"));
    assert_eq!(tag_of(renewed.header("to").unwrap()), None);
}

#[tokio::test]
async fn a_refused_pbx_subscription_is_warned_about_with_the_pbx_answer() {
    support::capture_log();
    let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let _s = pbx_server(pbx.local_addr().unwrap()).await;
    let (subscribe, ampel) = next_subscribe(&pbx, &[]).await;
    let refusal = subscribe.response(403, "Forbidden", Some("pbx-tag"));
    pbx.send_to(&refusal.to_bytes(), ampel).await.unwrap();

    let mut warning = None;
    for _ in 0..100 {
        let log = support::captured_log();
        warning =
            log.lines().find(|l| l.contains("pbx dialog subscription failed")).map(str::to_owned);
        if warning.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warning = warning.expect("a warning within 5 s");
    assert!(warning.contains("WARN") && warning.contains("user=bob@example.com"), "{warning}");
    assert!(warning.contains("reason=403 Forbidden wait_s=30"), "{warning}");
}

/// A NOTIFY from the PBX in the dialog its `tag` and the SUBSCRIBE `sub` made, answered by
/// Ampel: the status of the answer.
async fn pbx_notify(
    pbx: &UdpSocket,
    ampel: SocketAddr,
    (sub, tag): (&Request, &str),
    (cseq, state): (u32, &str),
    body: &str,
) -> u16 {
    let pbx_addr = pbx.local_addr().unwrap();
    let content_type =
        if body.is_empty() { "" } else { "Content-Type: application/dialog-info+xml\r\n" };
    let notify = format!(
        "NOTIFY sip:ampel@{ampel} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx_addr};branch=z9hG4bKn{cseq}{tag}\r\n\
         From: <sip:bob@example.com>;tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} NOTIFY\r\nEvent: dialog\r\nSubscription-State: {state}\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        sub.header("from").unwrap(),
        sub.header("call-id").unwrap(),
        body.len()
    );
    pbx.send_to(notify.as_bytes(), ampel).await.unwrap();
    loop {
        // Retransmitted SUBSCRIBEs whose answer crossed them are passed over.
        if let Message::Response(r) = next_message(pbx).await
            && r.header("cseq") == Some(format!("{cseq} NOTIFY").as_str())
        {
            return r.status;
        }
    }
}

/// Bob's calls as a dialog-info document of `version` with one dialog per (call-id, state).
fn bob_calls(version: u32, calls: &[(&str, &str)]) -> String {
    let dialogs: String = calls
        .iter()
        .map(|(call, state)| {
            format!(r#"<dialog id="{call}" call-id="{call}"><state>{state}</state></dialog>"#)
        })
        .collect();
    format!(
        r#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full" entity="sip:bob@example.com">{dialogs}</dialog-info>"#
    )
}

#[tokio::test]
async fn versions_start_again_in_a_renewed_pbx_subscription() {
    let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let s = pbx_server(pbx.local_addr().unwrap()).await;
    let (first, ampel) = next_subscribe(&pbx, &[]).await;
    let ok = first.response(200, "OK", Some("pbx-1")).with("expires", "600");
    pbx.send_to(&ok.to_bytes(), ampel).await.unwrap();
    let mut answered = vec![first.branch().unwrap().to_owned()];

    // The first subscription counts its documents up to 6.
    let dialog = (&first, "pbx-1");
    let talking = bob_calls(5, &[("call-1", "confirmed")]);
    assert_eq!(pbx_notify(&pbx, ampel, dialog, (1, "active;expires=600"), &talking).await, 200);
    assert_eq!(activity(&s, "bob@example.com").await, "in-a-call");
    let over = bob_calls(6, &[("call-1", "terminated")]);
    assert_eq!(pbx_notify(&pbx, ampel, dialog, (2, "active;expires=600"), &over).await, 200);
    assert_eq!(activity(&s, "bob@example.com").await, "available");

    // The PBX ends it; Ampel subscribes afresh and the new dialog counts from 0.
    let end = "terminated;reason=deactivated";
    assert_eq!(pbx_notify(&pbx, ampel, dialog, (3, end), "").await, 200);
    let (renewed, _) = next_subscribe(&pbx, &answered).await;
    assert_ne!(renewed.header("call-id"), first.header("call-id"));
    let ok = renewed.response(200, "OK", Some("pbx-2")).with("expires", "600");
    pbx.send_to(&ok.to_bytes(), ampel).await.unwrap();
    answered.push(renewed.branch().unwrap().to_owned());
    let talking = bob_calls(0, &[("call-2", "confirmed")]);
    let dialog = (&renewed, "pbx-2");
    assert_eq!(pbx_notify(&pbx, ampel, dialog, (1, "active;expires=600"), &talking).await, 200);
    assert_eq!(
        (
            availability(&s, "bob@example.com", &s.admin).await,
            activity(&s, "bob@example.com").await
        ),
        ("busy".into(), "in-a-call".into())
    );
}

/// Reads the next SIP message on a socket, if one comes within 5 s.
async fn next_message(socket: &UdpSocket) -> Message {
    let mut buf = vec![0u8; 70_000];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("a message within 5 s")
        .unwrap();
    message::parse(&buf[..n], true).unwrap().0
}

#[tokio::test]
async fn a_burst_to_many_subscriptions_at_one_address_is_paced_and_all_of_it_arrives() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    // Watchers behind one address, as behind a proxy: more than the NOTIFYs Ampel lets await
    // their answer per address.
    let watchers = PER_ADDRESS + 8;
    let mut proxy = Phone::new(addr, "proxy@example.com").await;
    for i in 0..watchers {
        let watcher = format!("w{i}@example.com");
        s.user(&watcher, &["sales"]).await;
        proxy.aor = watcher;
        let sub = proxy.request("SUBSCRIBE", "alice@example.com", &[PRESENCE], "");
        proxy.send(&sub).await;
    }

    // Unanswered, the first NOTIFYs stop at the window until their retransmission timers
    // fire: no more than the window's worth arrive before the first retransmission.
    let mut seen = std::collections::HashSet::new();
    let mut answers = Vec::new();
    loop {
        match next_message(&proxy.socket).await {
            Message::Response(r) => assert_eq!(r.status, 200),
            Message::Request(n) => {
                let key = (n.header("call-id").unwrap().to_owned(), n.cseq().unwrap());
                answers.push(n.response(200, "OK", None).to_bytes());
                if !seen.insert(key) {
                    break;
                }
            }
        }
    }
    let before = seen.len();
    assert!((1..=PER_ADDRESS).contains(&before), "{before} NOTIFYs before a retransmission");

    // Answered, the rest follow: each subscription gets exactly its first NOTIFY.
    for answer in &answers {
        proxy.socket.send_to(answer, addr).await.unwrap();
    }
    while seen.len() < watchers {
        let Message::Request(n) = next_message(&proxy.socket).await else { continue };
        proxy.socket.send_to(&n.response(200, "OK", None).to_bytes(), addr).await.unwrap();
        seen.insert((n.header("call-id").unwrap().to_owned(), n.cseq().unwrap()));
    }
    let dialogs: std::collections::HashSet<_> = seen.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(dialogs.len(), watchers, "one first NOTIFY per subscription");

    // One change reaches every watcher once, with the new state.
    s.manual("alice@example.com", &alice, json!({"availability": "busy", "note": "Fan-out"})).await;
    let mut busy = std::collections::HashSet::new();
    while busy.len() < watchers {
        let Message::Request(n) = next_message(&proxy.socket).await else { continue };
        proxy.socket.send_to(&n.response(200, "OK", None).to_bytes(), addr).await.unwrap();
        if seen.contains(&(n.header("call-id").unwrap().to_owned(), n.cseq().unwrap())) {
            // A retransmission of a first NOTIFY whose answer crossed it.
            continue;
        }
        let body = String::from_utf8(n.body.clone()).unwrap();
        assert!(body.contains("<rpid:busy/>") && body.contains("Fan-out"), "{body}");
        assert!(busy.insert(n.header("call-id").unwrap().to_owned()), "one NOTIFY per change");
    }
}

#[tokio::test]
async fn newer_state_waits_for_the_answer_and_only_the_newest_goes_out() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let sub = bob.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "600")], "");
    bob.send(&sub).await;
    assert_eq!(bob.response().await.status, 200);
    let Message::Request(first) = bob.recv().await else { panic!("a NOTIFY") };

    // While the first NOTIFY awaits its answer, Alice changes three times.
    for (availability, note) in [("busy", "one"), ("away", "two"), ("available", "three")] {
        let state = json!({"availability": availability, "note": note});
        assert_eq!(s.manual("alice@example.com", &alice, state).await.0, 200);
    }
    bob.socket.send_to(&first.response(200, "OK", None).to_bytes(), addr).await.unwrap();

    // Then one NOTIFY follows, with the newest state only.
    let next = loop {
        let Message::Request(n) = bob.recv().await else { panic!("a NOTIFY") };
        if n.cseq() != first.cseq() {
            break n;
        }
    };
    assert_eq!(next.cseq(), first.cseq().map(|c| c + 1));
    let body = String::from_utf8(next.body.clone()).unwrap();
    assert!(body.contains("three") && !body.contains("two"), "{body}");
}

#[tokio::test]
async fn a_subscription_that_is_not_refreshed_ends_with_reason_timeout() {
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        authenticate: false,
        min_expires: 1,
        ..SipSettings::default()
    };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    s.user("alice@example.com", &[]).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let sub = bob.request("SUBSCRIBE", "alice@example.com", &[PRESENCE, ("Expires", "1")], "");
    bob.send(&sub).await;
    let ok = bob.response().await;
    assert_eq!((ok.status, ok.header("expires")), (200, Some("1")));
    let first = bob.notify().await;
    assert!(first.header("subscription-state").unwrap().starts_with("active;expires="));
    let last = bob.notify().await;
    assert_eq!(last.header("subscription-state"), Some("terminated;reason=timeout"));
    assert_eq!(last.cseq(), first.cseq().map(|c| c + 1));

    // The dialog is gone.
    let to = ok.header("to").unwrap();
    let refresh = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("To", to), ("Call-ID", first.header("call-id").unwrap())],
        "",
    );
    bob.send(&refresh).await;
    assert_eq!(bob.response().await.status, 481);
}

#[tokio::test]
async fn a_watched_user_who_is_erased_ends_the_subscription_with_noresource() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    s.session("alice@example.com", &alice).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    let ok = subscribe(&mut bob, "alice@example.com").await;
    assert_eq!(ok.status, 200);

    let (status, _) = s.call("DELETE", "/api/v1/users/alice@example.com", &s.admin, None).await;
    assert_eq!(status, 204);
    let last = bob.notify().await;
    assert_eq!(last.header("subscription-state"), Some("terminated;reason=noresource"));
    let body = String::from_utf8(last.body.clone()).unwrap();
    assert!(body.contains("<basic>closed</basic>"), "{body}");

    // The dialog is gone, and so is the user.
    let refresh = bob.request(
        "SUBSCRIBE",
        "alice@example.com",
        &[PRESENCE, ("To", ok.header("to").unwrap()), ("Call-ID", ok.header("call-id").unwrap())],
        "",
    );
    bob.send(&refresh).await;
    assert_eq!(bob.response().await.status, 481);
    assert_eq!(subscribe(&mut bob, "alice@example.com").await.status, 404);
}

#[tokio::test]
async fn a_graceful_stop_tells_every_subscriber_to_come_back() {
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    s.session("alice@example.com", &alice).await;
    let mut bob = Phone::new(addr, "bob@example.com").await;
    assert_eq!(subscribe(&mut bob, "alice@example.com").await.status, 200);
    let lamp = bob.request("SUBSCRIBE", "alice@example.com", &[("Event", "dialog")], "");
    bob.send(&lamp).await;
    assert_eq!(bob.response().await.status, 200);
    bob.notify().await;

    let Server { running, .. } = s;
    let stopping = tokio::spawn(running.stop());
    let mut ends = Vec::new();
    for _ in 0..2 {
        let last = bob.notify().await;
        assert_eq!(last.header("subscription-state"), Some("terminated;reason=deactivated"));
        ends.push(last.header("event").unwrap().to_owned());
    }
    ends.sort();
    assert_eq!(ends, ["dialog", "presence"]);
    stopping.await.unwrap().unwrap();
}
