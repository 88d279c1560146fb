//! The web page against the `ampel` binary: a page left open keeps watching through a restart
//! of the server (killed hard, started again on the same address and data), without a reload.
//!
//! Needs the Debian packages `chromium` and `chromium-driver`, like the browser tests of
//! `ampel-server`.

mod support;
#[path = "../../ampel-server/tests/browser/webdriver.rs"]
mod webdriver;

use serde_json::{Value, json};
use support::{serve, serve_on};
use webdriver::Browser;

async fn call(base: &str, method: &str, path: &str, token: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let request = reqwest::Client::new().request(method, format!("{base}{path}"));
    let response = request.bearer_auth(token).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_board_reconnects_after_the_server_restarts() {
    let data = tempfile::tempdir().unwrap();
    // The first start takes a port of the system's choosing; the restart takes the same one.
    let server = serve(data.path());
    let base = server.base.clone();
    let addr = base.strip_prefix("http://").unwrap().to_owned();
    let admin = std::fs::read_to_string(data.path().join("admin.token")).unwrap().trim().to_owned();
    for (id, name) in [("alice@example.com", "Alice"), ("bob@example.com", "Bob")] {
        call(&base, "POST", "/api/v1/users", &admin, json!({"id": id, "name": name})).await;
    }
    let alice = call(&base, "POST", "/api/v1/users/alice@example.com/tokens", &admin, json!({}));
    let alice = alice.await["token"].as_str().unwrap().to_owned();

    let browser = Browser::start(1000).await;
    browser.open(&format!("{base}/signin")).await;
    browser.click("input[name=method][value=token]").await;
    browser.fill("#token", &alice).await;
    browser.click("#signin-submit").await;
    let bob = "#board .row[data-id=\"bob@example.com\"]";
    browser.until_attribute(bob, "data-color", "grey").await;
    let live = "return document.getElementById('conn').className === 'conn'";
    browser.until("the page is live", live, json!([])).await;

    drop(server);
    let lost = "return document.getElementById('conn').classList.contains('lost')";
    browser.until("the page notices the lost connection", lost, json!([])).await;
    let _server = serve_on(data.path(), &addr);
    browser.until("the page reconnects", live, json!([])).await;

    let event = json!({"user": "bob@example.com", "call_id": "c1", "state": "connected"});
    call(&base, "POST", "/api/v1/telephony/events", &admin, event).await;
    browser.until_attribute(bob, "data-color", "red").await;
}
