//! A small W3C WebDriver client over plain HTTP, driving a headless Chromium through
//! chromedriver; just what the browser tests need: open pages, find elements, type, click,
//! read text, run a script, take a screenshot.

#![allow(dead_code)] // shared by the browser tests of two crates, each using a part of it

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::port::free_port;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page lasts before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A running chromedriver with one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile, `width` pixels wide.
    pub async fn start(width: u32) -> Browser {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("the browser tests need Chromium: install the Debian package `chromium`");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, with the browser it starts, so that all of it can be ended.
            .process_group(0)
            .spawn()
            .expect(
                "the browser tests need chromedriver: install the Debian package `chromium-driver`",
            );
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait_ready(&http, &base).await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--window-size={width},900"),
            &format!("--user-data-dir={}", profile.path().display()),
            "--lang=en-GB",
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let answer = http.post(format!("{base}/session")).json(&capabilities).send().await;
        let body: Value = answer.unwrap().json().await.unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromium did not start: {body}"))
            .to_owned();
        Browser { driver, base, session, http, _profile: profile }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Opens a page and waits until it has loaded.
    pub async fn open(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current address.
    pub async fn url(&self) -> String {
        let value = self.command(reqwest::Method::GET, "/url", None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// The element a CSS selector finds now, if any.
    pub async fn find(&self, selector: &str) -> Option<String> {
        let value =
            self.post("/element", json!({ "using": "css selector", "value": selector })).await;
        value[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for an element.
    pub async fn wait_for(&self, selector: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(element) = self.find(selector).await {
                return element;
            }
            assert!(tokio::time::Instant::now() < deadline, "no element {selector} appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks an element.
    pub async fn click(&self, selector: &str) {
        let element = self.wait_for(selector).await;
        self.post(&format!("/element/{element}/click"), json!({})).await;
    }

    /// Types into an element after clearing it.
    pub async fn fill(&self, selector: &str, text: &str) {
        let element = self.wait_for(selector).await;
        self.post(&format!("/element/{element}/clear"), json!({})).await;
        self.post(&format!("/element/{element}/value"), json!({ "text": text })).await;
    }

    /// Sends keys to an element; special keys are the WebDriver code points (`\u{E015}` is
    /// the down arrow).
    pub async fn keys(&self, selector: &str, keys: &str) {
        let element = self.wait_for(selector).await;
        self.post(&format!("/element/{element}/value"), json!({ "text": keys })).await;
    }

    /// The rendered text of an element.
    pub async fn text(&self, selector: &str) -> String {
        let element = self.wait_for(selector).await;
        let path = format!("/element/{element}/text");
        let value = self.command(reqwest::Method::GET, &path, None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The text content of an element, shown or not.
    pub async fn content(&self, selector: &str) -> String {
        self.wait_for(selector).await;
        let script = "return document.querySelector(arguments[0]).textContent";
        let value = self.script(script, json!([selector])).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until a script run in the page returns `true`, and fails with `what` otherwise.
    pub async fn until(&self, what: &str, script: &str, args: Value) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if self.script(script, args.clone()).await == Value::Bool(true) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "waited in vain for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an attribute of the element `selector` finds has `value`.
    pub async fn until_attribute(&self, selector: &str, name: &str, value: &str) {
        let script = "const e = document.querySelector(arguments[0]); \
                      return !!e && e.getAttribute(arguments[1]) === arguments[2];";
        let what = format!("{selector} to have {name}={value}");
        self.until(&what, script, json!([selector, name, value])).await;
    }

    /// Writes a screenshot of the page as a PNG file.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let value = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png = decode_base64(value.as_str().expect("a screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser (a killed chromedriver would leave it running);
        // killing the process group then ends whatever is left, also after a failed test.
        let _ = end_session(&self.base, &self.session);
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` over a plain socket: `Drop` cannot wait for the async client.
fn end_session(base: &str, session: &str) -> std::io::Result<()> {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    // The answer comes once the browser is closed.
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(())
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(answer) = http.get(format!("{base}/status")).send().await
            && let Ok(body) = answer.json::<Value>().await
            && body["value"]["ready"] == Value::Bool(true)
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "chromedriver did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
