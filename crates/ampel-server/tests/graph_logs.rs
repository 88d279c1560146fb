//! What an administrator reads at the default log level when Microsoft 365 cannot be reached or
//! names a user Ampel does not have: one warning per fault, not one per poll, and never the
//! client secret.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_server::clock::SystemClock;
use ampel_server::server_file::ServerFile;
use support::Server;

const SECRET: &str = "s3cret-never-logged";

#[tokio::test]
async fn an_unreachable_authority_and_an_unknown_user_are_each_warned_about_once() {
    support::capture_log();
    // A port nobody listens on: every connection is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let file = ServerFile::from_toml(&format!(
        "[graph]\ntenant = \"contoso\"\nclient_id = \"app\"\nclient_secret = \"{SECRET}\"\n\
         authority = \"http://{closed}\"\nbase_url = \"http://{closed}/v1.0\"\n\
         backoff = \"10ms\"\nmax_backoff = \"20ms\"\nattempts = 2\n\
         calendar_interval = \"100ms\"\ncontacts_interval = \"100ms\"\npoll_interval = \"100ms\"\n\
         [graph.users]\n\"alice@example.com\" = \"oid-alice\"\n\"ghost@example.com\" = \"oid-ghost\"\n"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = support::listener().await;
    let s = Server::start_on(dir, Policy::default(), Arc::new(SystemClock), listener, file).await;
    s.user("alice@example.com", &[]).await;

    // Many polls of calendars, contacts and presence fail meanwhile.
    for _ in 0..100 {
        if support::captured_log().contains("graph token not obtained") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = support::captured_log();
    let lines = |what: &str| text.lines().filter(|l| l.contains(what)).collect::<Vec<_>>();

    // Each test of this file has an authority of its own; only this one's lines count here.
    let url = format!("http://{closed}/contoso/oauth2/v2.0/token");
    let token: Vec<&str> =
        lines("graph token not obtained").into_iter().filter(|l| l.contains(&url)).collect();
    assert_eq!(token.len(), 1, "once, not per poll:\n{text}");
    assert!(token[0].contains("WARN"), "{}", token[0]);
    let first: Vec<&str> = lines("graph token attempt failed; retrying");
    let first: Vec<&str> = first.into_iter().filter(|l| l.contains(&url)).collect();
    assert_eq!(first.len(), 1, "once for the outage, before the last attempt:\n{text}");
    assert!(text.find(first[0]) < text.find(token[0]), "{text}");
    // Alice is created just after the server starts and may be reported before; the ghost never is.
    let ghost = lines("ghost@example.com");
    assert_eq!(ghost.len(), 1, "once:\n{text}");
    assert!(ghost[0].contains("graph maps a user ampel does not know"), "{}", ghost[0]);
    assert!(ghost[0].contains("WARN") && ghost[0].contains("ghost@example.com"), "{}", ghost[0]);
    let requests = lines("graph request failed");
    assert!(requests.is_empty(), "a missing token is the one fault reported:\n{text}");
    assert!(!text.contains(SECRET), "the secret never reaches the log:\n{text}");
}

#[tokio::test]
async fn an_unreachable_authority_is_warned_about_at_the_first_attempt_not_after_the_last() {
    support::capture_log();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // Eight attempts a few seconds apart: the last one fails long after this test has ended.
    let file = ServerFile::from_toml(&format!(
        "[graph]\ntenant = \"fabrikam\"\nclient_id = \"app\"\nclient_secret = \"{SECRET}\"\n\
         authority = \"http://{closed}\"\nbase_url = \"http://{closed}/v1.0\"\n\
         backoff = \"4s\"\nmax_backoff = \"60s\"\nattempts = 8\n\
         calendar_interval = \"100ms\"\ncontacts_interval = \"100ms\"\npoll_interval = \"100ms\"\n\
         [graph.users]\n\"alice@example.com\" = \"oid-alice\"\n"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = support::listener().await;
    let started = std::time::Instant::now();
    let _s = Server::start_on(dir, Policy::default(), Arc::new(SystemClock), listener, file).await;

    let url = format!("http://{closed}/fabrikam/oauth2/v2.0/token");
    let ours = |what: &str| {
        let text = support::captured_log();
        text.lines().filter(|l| l.contains(what) && l.contains(&url)).map(str::to_owned).collect()
    };
    let mut first: Vec<String> = Vec::new();
    while first.is_empty() && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = ours("graph token attempt failed; retrying");
    }
    // The second attempt comes two to four seconds after the first.
    assert!(started.elapsed() < Duration::from_secs(2), "no warning within 2 s");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("WARN") && first[0].contains("attempts=8"), "{}", first[0]);
    assert!(first[0].contains("error="), "the reason is given: {}", first[0]);
    assert!(ours("graph token not obtained").is_empty(), "the retries are not spent yet");
    assert!(!support::captured_log().contains(SECRET), "the secret never reaches the log");
}
