//! baresip (Debian package `baresip`) as a real soft phone against a real server: it
//! authenticates with digest, publishes its user's presence and watches a colleague's. Ampel
//! must show what baresip published, and baresip must show the colleague's status set over
//! REST. baresip is driven through its `cons` module (commands over UDP).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ampel_server::server_file::ServerFile;
use ampel_server::sip::{DigestAlgorithm, SipSettings};
use serde_json::json;
use support::Server;
use support::port::free_port;
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};

/// Writes baresip's configuration for bob, with alice as a contact, and starts it.
fn start_baresip(dir: &Path, ampel: SocketAddr, console: u16) -> Child {
    let sip_port = free_port();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nmodule_path /usr/lib/baresip/modules\n\
         module cons.so\ncons_listen 127.0.0.1:{console}\nmodule_app account.so\n\
         module_app contact.so\nmodule_app menu.so\nmodule_app presence.so\n"
    );
    std::fs::write(dir.join("config"), config).unwrap();
    let account = format!(
        "<sip:bob@example.com>;auth_pass=secret-pw;outbound=\"sip:{ampel}\";regint=0;pubint=60\n"
    );
    std::fs::write(dir.join("accounts"), account).unwrap();
    std::fs::write(dir.join("contacts"), "\"Alice\" <sip:alice@example.com>;presence=p2p\n")
        .unwrap();
    let spawned = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    spawned.expect("baresip is missing: install the Debian package baresip (.ci/setup.d/sip.sh)")
}

/// Sends a console command to baresip and returns what it answered.
async fn console(port: u16, command: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(format!("/{command}\n").as_bytes(), ("127.0.0.1", port)).await.unwrap();
    let mut text = String::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await
    {
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

/// Asks again until `done` holds for the answer, for at most 15 seconds; returns the last
/// answer.
async fn until<F, Fut>(mut ask: F, done: impl Fn(&str) -> bool) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut last = String::new();
    for _ in 0..75 {
        last = ask().await;
        if done(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn availability(s: &Server, user: &str) -> String {
    let (_, body) = s.call("GET", &format!("/api/v1/users/{user}/presence"), &s.admin, None).await;
    body["availability"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn baresip_publishes_its_state_and_shows_a_colleagues() {
    // baresip 1.0 reads only the first challenge and knows only MD5.
    let sip = SipSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        algorithms: vec![DigestAlgorithm::Md5],
        ..SipSettings::default()
    };
    let s = Server::start_with_file(ServerFile { sip, ..Default::default() }).await;
    let ampel = s.running.sip.as_ref().unwrap().local;
    let alice = s.user("alice@example.com", &["sales"]).await;
    s.user("bob@example.com", &["sales"]).await;
    let (status, _) = s
        .call(
            "PUT",
            "/api/v1/users/bob@example.com/sip-credentials",
            &s.admin,
            Some(json!({"password": "secret-pw"})),
        )
        .await;
    assert_eq!(status, 204);
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut phone = start_baresip(dir.path(), ampel, port);

    // baresip shows alice's status, set over REST.
    let contacts = until(|| console(port, "contacts"), |t| t.contains("Busy")).await;
    assert!(contacts.contains("Busy") && contacts.contains("Alice"), "{contacts}");

    // Ampel shows what baresip publishes.
    console(port, "presence_online").await;
    let bob = until(|| availability(&s, "bob@example.com"), |a| a == "available").await;
    assert_eq!(bob, "available");
    console(port, "presence_offline").await;
    let bob = until(|| availability(&s, "bob@example.com"), |a| a == "offline").await;
    assert_eq!(bob, "offline");

    // A change of alice's status reaches baresip: away is not busy any more.
    s.manual("alice@example.com", &alice, json!({"availability": "available"})).await;
    let contacts = until(|| console(port, "contacts"), |t| !t.contains("Busy")).await;
    assert!(contacts.contains("Online") || contacts.contains("Open"), "{contacts}");

    phone.kill().await.unwrap();
}
