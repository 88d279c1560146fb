//! sipp (Debian package `sip-tester`) runs the scenarios in `tests/sipp/` against a real server:
//! every method Ampel answers and every error it gives, over UDP and TCP. A scenario passes
//! when sipp exits 0, which it does only when every expected message arrived and every check
//! in it matched.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use ampel_core::fact::ShowAs;
use ampel_core::{Fact, FactState, Policy, Source};
use ampel_server::clock::TokioClock;
use ampel_server::hub::Change;
use ampel_server::routing::RoutingFile;
use ampel_server::server_file::ServerFile;
use ampel_server::sip::pbx::PbxSettings;
use ampel_server::sip::{DigestAlgorithm, SipSettings};
use serde_json::json;
use support::Server;
use support::port::free_port;

fn sipp_installed() {
    let found = Command::new("sipp").arg("-v").output().is_ok();
    assert!(found, "sipp is missing: install the Debian package sip-tester (.ci/setup.d/sip.sh)");
}

async fn server(authenticate: bool) -> (Server, SocketAddr) {
    server_with(SipSettings { authenticate, ..SipSettings::default() }).await
}

async fn server_with(settings: SipSettings) -> (Server, SocketAddr) {
    let sip = SipSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..settings };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    (s, addr)
}

/// Runs one scenario as `service` over `transport` (`u1` or `t1`) and fails with sipp's error
/// log when it does not pass.
async fn run(scenario: &str, service: &str, addr: SocketAddr, transport: &str) {
    let port = free_port();
    let output = sipp(scenario, &[&addr.to_string(), "-s", service, "-t", transport], port).await;
    output.check(&format!("{scenario} over {transport}"));
}

/// What a sipp run left.
struct Output {
    status: std::process::ExitStatus,
    stderr: String,
    log: String,
}

impl Output {
    fn check(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n{}\n{}",
            self.status,
            self.log,
            self.stderr
        );
    }
}

/// Runs sipp with a scenario, extra arguments and its own port.
async fn sipp(scenario: &str, extra: &[&str], port: u16) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(scenario);
    let errors = dir.path().join("errors.log");
    let mut command = Command::new("sipp");
    command
        .args(extra)
        .args(["-sf", file.to_str().unwrap()])
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", "1", "-l", "1", "-timeout", "20s", "-timeout_error", "-nostdin"])
        .args(["-trace_err", "-error_file", errors.to_str().unwrap()])
        // Scenarios include bodies from files beside them (`[file name=...]`).
        .current_dir(file.parent().unwrap());
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(&errors).unwrap_or_default();
    Output { status: output.status, stderr: String::from_utf8_lossy(&output.stderr).into(), log }
}

#[tokio::test]
async fn sipp_publish_modify_refresh_remove() {
    sipp_installed();
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    run("publish.xml", "alice", addr, "u1").await;
    run("publish.xml", "alice", addr, "t1").await;
}

#[tokio::test]
async fn sipp_every_error_of_publish_and_invite() {
    sipp_installed();
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    run("errors.xml", "alice", addr, "u1").await;
}

#[tokio::test]
async fn sipp_subscribe_refresh_unsubscribe_and_fetch() {
    sipp_installed();
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    run("subscribe.xml", "alice", addr, "u1").await;
    run("subscribe.xml", "alice", addr, "t1").await;
    run("fetch.xml", "alice", addr, "u1").await;
}

#[tokio::test]
async fn sipp_dialog_publish_and_busy_lamp() {
    sipp_installed();
    let (s, addr) = server(false).await;
    s.user("bob@example.com", &[]).await;
    s.user("erin@example.com", &[]).await;
    run("dialog.xml", "bob", addr, "u1").await;
}

#[tokio::test]
async fn sipp_digest_authentication() {
    sipp_installed();
    // sipp answers only the first challenge and knows only MD5; SHA-256 is tested in sip.rs.
    let md5 = vec![DigestAlgorithm::Md5];
    let (s, addr) = server_with(SipSettings { algorithms: md5, ..SipSettings::default() }).await;
    s.user("alice@example.com", &[]).await;
    let body = json!({"password": "secret-pw"});
    let (status, _) = s
        .call("PUT", "/api/v1/users/alice@example.com/sip-credentials", &s.admin, Some(body))
        .await;
    assert_eq!(status, 204);
    run("auth.xml", "alice", addr, "u1").await;
}

#[tokio::test]
async fn sipp_publish_for_someone_else_is_forbidden() {
    sipp_installed();
    let md5 = vec![DigestAlgorithm::Md5];
    let (s, addr) = server_with(SipSettings { algorithms: md5, ..SipSettings::default() }).await;
    s.user("alice@example.com", &[]).await;
    s.user("bob@example.com", &[]).await;
    let body = json!({"password": "secret-pw"});
    let (status, _) = s
        .call("PUT", "/api/v1/users/alice@example.com/sip-credentials", &s.admin, Some(body))
        .await;
    assert_eq!(status, 204);
    run("publish-for-another.xml", "alice", addr, "u1").await;
    let (_, presence) =
        s.call("GET", "/api/v1/users/bob@example.com/presence", &s.admin, None).await;
    assert_eq!(presence["availability"], "offline", "{presence}");
}

#[tokio::test]
async fn sipp_subscribe_refusals_for_accept_and_expires() {
    sipp_installed();
    let (s, addr) = server(false).await;
    s.user("alice@example.com", &[]).await;
    run("subscribe-errors.xml", "alice", addr, "u1").await;
    run("subscribe-errors.xml", "alice", addr, "t1").await;
}

#[tokio::test]
async fn sipp_a_blocked_watcher_is_told_closed() {
    sipp_installed();
    let (s, addr) = server(false).await;
    let alice = s.user("alice@example.com", &[]).await;
    s.user("mallory@example.com", &[]).await;
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    let blocked = json!({"blocked": ["mallory@example.com"]});
    let path = "/api/v1/users/alice@example.com/privacy";
    assert_eq!(s.call("PUT", path, &alice, Some(blocked)).await.0, 200);
    run("blocked.xml", "alice", addr, "u1").await;
}

/// A server that subscribes for Bob's calls at a PBX on `pbx_port`. Bob exists before Ampel
/// subscribes for him: a first start without SIP creates him. Returns the server and Bob's token.
async fn pbx_server(pbx_port: u16) -> (Server, String) {
    let settings = SipSettings {
        authenticate: false,
        pbx: Some(PbxSettings {
            address: SocketAddr::from(([127, 0, 0, 1], pbx_port)),
            domain: None,
            users: vec!["bob@example.com".into()],
            expires: 600,
            publisher: None,
        }),
        ..SipSettings::default()
    };
    let first = Server::start().await;
    let bob = first.user("bob@example.com", &[]).await;
    first.session("bob@example.com", &bob).await;
    let Server { running, dir, .. } = first;
    running.stop().await.unwrap();
    let sip = SipSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..settings };
    let clock = std::sync::Arc::new(ampel_server::clock::SystemClock);
    let file = ServerFile { sip, ..Default::default() };
    (Server::start_full(dir, ampel_core::Policy::default(), clock, file).await, bob)
}

#[tokio::test]
async fn sipp_as_pbx_reports_calls_to_the_dialog_subscription() {
    sipp_installed();
    // The PBX listens before Ampel starts, as Ampel subscribes at once.
    let pbx_port = free_port();
    let pbx = tokio::spawn(async move { sipp("pbx.xml", &[], pbx_port).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (s, bob) = pbx_server(pbx_port).await;
    pbx.await.unwrap().check("pbx.xml");
    let (_, presence) = s.call("GET", "/api/v1/users/bob@example.com/presence", &bob, None).await;
    assert_eq!(presence["availability"], "busy", "{presence}");
}

#[tokio::test]
async fn sipp_as_pbx_sees_min_expires_honoured_and_the_refresh_inside_the_dialog() {
    sipp_installed();
    let pbx_port = free_port();
    let pbx = tokio::spawn(async move { sipp("pbx-refresh.xml", &[], pbx_port).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_s, _bob) = pbx_server(pbx_port).await;
    pbx.await.unwrap().check("pbx-refresh.xml");
}

/// Thursday, 3 December 2026, 11:00 in Berlin, where the redirect tests' clock starts.
const NOW: &str = "2026-12-03T10:00:00Z";

/// A redirect server with users in each situation: Alice in a calendar meeting with Erin as
/// absence target, Bob in a call, Carol out of office until the end of Sunday, and Dave
/// calling.
async fn redirect_server(policy: Policy, routing: RoutingFile) -> (Server, SocketAddr) {
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        authenticate: false,
        ..SipSettings::default()
    };
    let clock = Arc::new(TokioClock::starting_at(NOW.parse().unwrap()));
    let file = ServerFile { sip, routing, ..Default::default() };
    let s = Server::start_full(tempfile::tempdir().unwrap(), policy, clock, file).await;
    let addr = s.running.sip.as_ref().unwrap().local;
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        s.user(&format!("{user}@example.com"), &[]).await;
    }
    let settings = json!({"absence_target": "user:erin@example.com"});
    let path = "/api/v1/users/alice@example.com/routing";
    let (status, body) = s.call("PUT", path, &s.admin, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let meeting = ("standup", ShowAs::Busy, "2026-12-03T09:30:00Z", "2026-12-03T13:30:00Z");
    calendar(&s, "alice@example.com", meeting).await;
    let holiday = ("holiday", ShowAs::OutOfOffice, "2026-11-30T23:00:00Z", "2026-12-06T23:00:00Z");
    calendar(&s, "carol@example.com", holiday).await;
    let event = json!({"user": "bob@example.com", "call_id": "c1", "state": "connected"});
    let (status, _) = s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event)).await;
    assert_eq!(status, 204);
    (s, addr)
}

/// Puts a calendar entry (key, show-as, start, end) for `user` into the hub, as the calendar
/// poller does.
async fn calendar(s: &Server, user: &str, (key, show_as, from, until): (&str, ShowAs, &str, &str)) {
    let app = &s.running.app;
    let slot = app.hub.user(user).unwrap();
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
    let fact = Fact::new(Source::Calendar, key, FactState::Calendar { show_as }, at(NOW))
        .starting(Some(at(from)))
        .ending(Some(at(until)));
    app.hub.committed(&slot, app.hub.update(&slot, vec![Change::Put(fact)])).await.unwrap();
}

#[tokio::test]
async fn sipp_invites_are_redirected_by_the_routing_decision() {
    sipp_installed();
    let mut policy = Policy::default();
    // No voicemail: a call that would go there is turned away until the callee is back.
    policy.routing.voicemail = String::new();
    let routing = RoutingFile {
        ring_contact: "sip:{user}@pbx.example.com;ampel=ring".into(),
        ..RoutingFile::default()
    };
    let (s, addr) = redirect_server(policy, routing).await;
    run("redirect.xml", "alice", addr, "u1").await;
    run("redirect.xml", "alice", addr, "t1").await;

    // The decision API explains the first two answers.
    let call = json!({"from": "dave@example.com", "to": "alice@example.com"});
    let (status, d) = s.call("POST", "/api/v1/route", &s.admin, Some(call)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["action"].as_str(), d["target"].as_str()),
        (Some("forward"), Some("sip:erin@example.com"))
    );
    assert_eq!(d["reason"], "in-a-meeting");
    assert_eq!(
        d["explanation"],
        "rule `in-a-meeting` matched: alice@example.com is in-a-meeting, busy; forwarded through \
         alice@example.com (in-a-meeting) -> erin@example.com (default); the call is forwarded to \
         sip:erin@example.com."
    );
    let call = json!({"from": "+44 20 7946 0958", "to": "bob@example.com", "lang": "en"});
    let (status, d) = s.call("POST", "/api/v1/route", &s.admin, Some(call)).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!((d["action"].as_str(), d["reason"].as_str()), (Some("busy"), Some("in-a-call")));
    assert!(d["explanation"].as_str().unwrap().contains("the call is rejected as busy"), "{d}");
}

#[tokio::test]
async fn sipp_an_announcement_is_played_by_the_media_server_before_the_voicemail() {
    sipp_installed();
    let speaks = Command::new("espeak-ng").arg("--version").output().is_ok();
    assert!(
        speaks,
        "espeak-ng is missing: install the Debian package espeak-ng (.ci/setup.d/routing.sh)"
    );
    let routing = RoutingFile {
        announcement_contact: Some(
            "sip:annc@media.example.com;play={audio_url};next={target}".into(),
        ),
        ..RoutingFile::default()
    };
    let (s, addr) = redirect_server(Policy::default(), routing).await;
    // The server checks the synthesiser once at start.
    for _ in 0..100 {
        if s.running.app.routing.speaks.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(s.running.app.routing.speaks.load(std::sync::atomic::Ordering::Relaxed));
    run("announce.xml", "carol", addr, "u1").await;
    // The audio the media server is sent to is rendered once, in the background.
    let dir = s.dir.path().join("announcements");
    let mut files = 0;
    for _ in 0..200 {
        files = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        if files == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(files, 1, "the announcement's audio");
}
