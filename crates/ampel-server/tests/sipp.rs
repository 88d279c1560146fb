//! sipp (Debian package `sip-tester`) runs the scenarios in `tests/sipp/` against a real server:
//! every method Ampel answers and every error it gives, over UDP and TCP. A scenario passes
//! when sipp exits 0, which it does only when every expected message arrived and every check
//! in it matched.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use ampel_server::server_file::ServerFile;
use ampel_server::sip::pbx::PbxSettings;
use ampel_server::sip::{DigestAlgorithm, SipSettings};
use serde_json::json;
use support::Server;

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

/// A port nobody listens on now, for sipp's own socket.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
async fn sipp_as_pbx_reports_calls_to_the_dialog_subscription() {
    sipp_installed();
    // The PBX listens before Ampel starts, as Ampel subscribes at once.
    let pbx_port = free_port();
    let pbx = tokio::spawn(async move { sipp("pbx.xml", &[], pbx_port).await });
    let pbx = async move { pbx.await.unwrap() };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let settings = SipSettings {
        authenticate: false,
        pbx: Some(PbxSettings {
            address: SocketAddr::from(([127, 0, 0, 1], pbx_port)),
            domain: None,
            users: vec!["bob@example.com".into()],
            expires: 600,
        }),
        ..SipSettings::default()
    };
    // Bob exists before Ampel subscribes for him: a first start without SIP creates him.
    let first = Server::start().await;
    let bob = first.user("bob@example.com", &[]).await;
    first.session("bob@example.com", &bob).await;
    let Server { running, dir, .. } = first;
    running.stop().await.unwrap();
    let sip = SipSettings { listen: Some("127.0.0.1:0".parse().unwrap()), ..settings };
    let clock = std::sync::Arc::new(ampel_server::clock::SystemClock);
    let file = ServerFile { sip, ..Default::default() };
    let s = Server::start_full(dir, ampel_core::Policy::default(), clock, file).await;
    pbx.await.check("pbx.xml");
    let (_, presence) = s.call("GET", "/api/v1/users/bob@example.com/presence", &bob, None).await;
    assert_eq!(presence["availability"], "busy", "{presence}");
}
