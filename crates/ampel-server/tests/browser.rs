//! The web page in a real headless Chromium against a real server: signing in, a colleague
//! turning red when a call arrives through REST, a status with an end time that expires on
//! the server's real clock, the explanation, bad input, notes holding HTML, 2,000 colleagues,
//! and a narrow screen (reconnecting after a restart is tested with the `ampel` binary). A screenshot of the board is written
//! to `target/tmp/` as a test artefact.
//!
//! The tests need the Debian packages `chromium` and `chromium-driver` (CI installs them in
//! `.ci/setup.d/web.sh`) and fail with a message naming them when they are missing.

mod support;
#[path = "browser/webdriver.rs"]
mod webdriver;

use serde_json::json;
use support::Server;
use webdriver::Browser;

/// One browser at a time: the machine running the tests may have only two cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server with Alice (who has a password) and Bob, both in sales.
async fn office() -> (Server, String, String) {
    let server = Server::start().await;
    let alice = server.user("alice@example.com", &["sales"]).await;
    let bob = server.user("bob@example.com", &["sales"]).await;
    let path = "/api/v1/users/alice@example.com/password";
    let (status, body) =
        server.call("PUT", path, &server.admin, Some(json!({"password": "alice-secret"}))).await;
    assert_eq!(status, 204, "{body}");
    (server, alice, bob)
}

async fn sign_in_with_password(browser: &Browser, server: &Server, user: &str, password: &str) {
    browser.open(&format!("{}/", server.base)).await;
    browser.wait_for("#signin-form").await;
    assert!(browser.url().await.ends_with("/signin"), "the board sends strangers to sign in");
    browser.fill("#user", user).await;
    browser.fill("#password", password).await;
    browser.click("#signin-submit").await;
    browser.wait_for("#board .row").await;
}

async fn sign_in_with_token(browser: &Browser, server: &Server, token: &str) {
    browser.open(&format!("{}/signin", server.base)).await;
    browser.click("input[name=method][value=token]").await;
    browser.fill("#token", token).await;
    browser.click("#signin-submit").await;
    browser.wait_for("#board .row").await;
}

fn row(user: &str) -> String {
    format!("#board .row[data-id=\"{user}\"]")
}

async fn call(server: &Server, user: &str, state: &str) {
    let event = json!({"user": user, "call_id": "c1", "state": state});
    let (status, body) =
        server.call("POST", "/api/v1/telephony/events", &server.admin, Some(event)).await;
    assert!(status < 300, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colleague_turns_red_when_a_call_arrives_and_back_when_it_ends() {
    let _one = ONE_BROWSER.lock().await;
    let (server, _alice, bob) = office().await;
    server.session("bob@example.com", &bob).await;
    let browser = Browser::start(1200).await;

    browser.open(&format!("{}/signin", server.base)).await;
    browser.click("#signin-submit").await;
    let message = browser.text("#user-error").await;
    assert!(message.contains("address"), "an empty address is refused next to it: {message}");
    browser.fill("#user", "alice@example.com").await;
    browser.fill("#password", "wrong password").await;
    browser.click("#signin-submit").await;
    browser
        .until(
            "the wrong password is named",
            "return !!document.querySelector('#password-error').textContent",
            json!([]),
        )
        .await;

    sign_in_with_password(&browser, &server, "alice@example.com", "alice-secret").await;
    let cookie = browser.script("return document.cookie", json!([])).await;
    assert!(!cookie.as_str().unwrap_or_default().contains("ampel_session"), "HttpOnly: {cookie}");

    let bob_row = row("bob@example.com");
    browser.until_attribute(&bob_row, "data-color", "green").await;
    call(&server, "bob@example.com", "connected").await;
    browser.until_attribute(&bob_row, "data-color", "red").await;
    let text = browser.text(&bob_row).await;
    assert!(text.contains("Busy") && text.contains("In a call"), "{text}");
    assert_eq!(browser.text(&format!("{bob_row} .icon")).await, "✕", "an icon beside the colour");

    let artefact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("board.png");
    browser.screenshot(&artefact).await;

    call(&server, "bob@example.com", "ended").await;
    browser.until_attribute(&bob_row, "data-color", "green").await;

    browser.click(&format!("{bob_row} .why")).await;
    let why = browser.text("#why-body").await;
    assert!(why.contains("policy does not let you see"), "colleagues see no sources: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_with_an_end_time_is_explained_and_expires() {
    let _one = ONE_BROWSER.lock().await;
    let (server, alice, _bob) = office().await;
    server.session("alice@example.com", &alice).await;
    let browser = Browser::start(1200).await;
    sign_in_with_token(&browser, &server, &alice).await;
    browser.click("#nav-me").await;
    browser.until_attribute("#me-now", "data-color", "green").await;
    let shown = browser.text("#me-now").await;
    assert!(shown.contains("Available") && !shown.contains("null"), "{shown}");
    let picker_hidden = "return document.getElementById('until-custom').hidden;";
    assert_eq!(browser.script(picker_hidden, json!([])).await, json!(true), "no end: no picker");
    let live = "return document.querySelector('h1 #conn').textContent;";
    assert_eq!(browser.script(live, json!([])).await, json!("● Live"), "next to the title");

    browser.click("input[name=availability][value=busy]").await;
    browser.fill("#note", "Quarterly report").await;
    browser.click("#until-choice-custom").await;
    assert_eq!(browser.script(picker_hidden, json!([])).await, json!(false), "a chosen time");
    // A few seconds from now in the browser's own time zone, as a person would pick it.
    let set_soon = "const d = new Date(Date.now() + 4000); \
        const p = (n) => String(n).padStart(2, '0'); \
        document.getElementById('until-custom').value = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;";
    browser.script(set_soon, json!([])).await;
    browser.click("#set-status").await;

    browser.until_attribute("#me-now", "data-color", "red").await;
    let now = browser.text("#me-now").await;
    assert!(now.contains("Busy") && now.contains("Quarterly report"), "{now}");
    assert!(now.contains("Set by hand"), "the source is named: {now}");
    let row_text = browser.content(&row("alice@example.com")).await;
    assert!(row_text.contains("back at"), "the board says when: {row_text}");

    browser.click("#me-why").await;
    let why = browser.text("#why-body").await;
    assert!(why.contains("Alice") || why.contains("alice"), "{why}");
    assert!(why.contains("A status is set by hand"), "the rule in words: {why}");
    assert!(why.contains("decided"), "the deciding fact: {why}");
    assert!(why.contains("changes by itself at"), "when it ends: {why}");
    browser.click("#why-close").await;

    // The server's timer ends the status; the page hears it without reloading.
    browser.until_attribute("#me-now", "data-color", "green").await;

    browser.click("#appear-offline").await;
    browser.until_attribute("#me-now", "data-color", "grey").await;
    browser.click("#reset").await;
    browser.until_attribute("#me-now", "data-color", "green").await;

    browser.click("input[name=availability][value=away]").await;
    browser.click("#until-choice-1h").await;
    browser.click("#set-status").await;
    browser.until_attribute("#me-now", "data-color", "yellow").await;
    let (_, presence) =
        server.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    let since: jiff::Timestamp = presence["since"].as_str().unwrap().parse().unwrap();
    let until: jiff::Timestamp = presence["until"].as_str().unwrap().parse().unwrap();
    let minutes = until.duration_since(since).as_secs() / 60;
    assert!((59..=60).contains(&minutes), "an hour from when it was set: {presence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_next_to_the_field_and_html_stays_text() {
    let _one = ONE_BROWSER.lock().await;
    let (server, alice, bob) = office().await;
    let note = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">";
    let (status, _) =
        server.manual("bob@example.com", &bob, json!({"availability": "away", "note": note})).await;
    assert_eq!(status, 200);
    let browser = Browser::start(1200).await;
    sign_in_with_token(&browser, &server, &alice).await;

    let bob_note = format!("{} .note", row("bob@example.com"));
    browser.wait_for(&bob_note).await;
    assert_eq!(browser.text(&bob_note).await, note, "the note is shown as it was typed");
    let pwned = browser.script("return window.pwned === undefined", json!([])).await;
    assert_eq!(pwned, json!(true), "nothing in the note ran");

    browser.click("#nav-me").await;
    browser.click("#until-choice-custom").await;
    browser
        .script("document.getElementById('until-custom').value = '2001-01-01T10:00:00'", json!([]))
        .await;
    browser.fill("#note", &"x".repeat(501)).await;
    browser.click("#set-status").await;
    assert!(browser.text("#until-error").await.contains("future"));
    assert!(browser.text("#note-error").await.contains("500"));
    let invalid = browser
        .script("return document.getElementById('note').getAttribute('aria-invalid')", json!([]))
        .await;
    assert_eq!(invalid, json!("true"));
    let (_, presence) =
        server.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(presence["availability"], "offline", "nothing was set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_colleagues_render_filter_and_update_live() {
    let _one = ONE_BROWSER.lock().await;
    let server = Server::start().await;
    let ids: Vec<String> = (0..2000).map(|i| format!("user{i:04}@example.com")).collect();
    for chunk in ids.chunks(100) {
        let creations = chunk.iter().map(|id| {
            let group = if id.ends_with("7@example.com") { "support" } else { "sales" };
            let body = json!({"id": id, "name": format!("Person {id}"), "groups": [group]});
            server.call("POST", "/api/v1/users", &server.admin, Some(body))
        });
        for (status, body) in futures_util::future::join_all(creations).await {
            assert_eq!(status, 201, "{body}");
        }
    }
    let browser = Browser::start(1200).await;
    sign_in_with_token(&browser, &server, &server.admin).await;
    assert_eq!(browser.text("#count").await, "Showing 100 of 2000 colleagues");
    // Reported, not asserted: a loaded test machine must not fail the suite.
    let script = "return performance.getEntriesByName('ampel-board-rendered')[0].startTime";
    let rendered = browser.script(script, json!([])).await;
    eprintln!("the board of 2000 colleagues rendered {rendered} ms after navigation");

    // The last colleague is watched too, beyond the first thousand subscriptions.
    let last = "user1999@example.com";
    browser.fill("#q", "user1999").await;
    browser.wait_for(&row(last)).await;
    assert_eq!(browser.text("#count").await, "Showing 1 of 1 colleagues");
    let (status, _) =
        server.manual(last, &server.admin, json!({"availability": "do-not-disturb"})).await;
    assert_eq!(status, 200);
    browser.until_attribute(&row(last), "data-color", "red").await;

    browser.fill("#q", "").await;
    browser.script("const s = document.getElementById('group'); s.value = 'support'; s.dispatchEvent(new Event('change'));", json!([])).await;
    browser.until("the team filter", "return document.getElementById('count').textContent === 'Showing 100 of 200 colleagues'", json!([])).await;
    browser.script("const s = document.getElementById('color'); s.value = 'red'; s.dispatchEvent(new Event('change'));", json!([])).await;
    browser
        .until(
            "the colour filter",
            "return document.querySelectorAll('#board .row').length === 0",
            json!([]),
        )
        .await;
}

/// Lists every shown text element whose contrast against its background is below 4.5:1, and
/// counts the elements checked.
const CONTRAST: &str = r#"
const channel = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
const luminance = (rgb) => { const [r, g, b] = rgb.match(/[\d.]+/g).map(Number);
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b); };
const background = (el) => { for (; el; el = el.parentElement) {
  const bg = getComputedStyle(el).backgroundColor;
  if (bg && !bg.startsWith('rgba(0, 0, 0, 0)') && bg !== 'transparent') return bg; }
  return 'rgb(255, 255, 255)'; };
const low = [];
let checked = 0;
for (const el of document.querySelectorAll('body *')) {
  if (!el.offsetParent || ![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  checked += 1;
  const [a, b] = [luminance(getComputedStyle(el).color), luminance(background(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)}`);
}
return { low, checked };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_fits_a_narrow_screen_and_keeps_favourites_at_the_top() {
    let _one = ONE_BROWSER.lock().await;
    let (server, alice, _bob) = office().await;
    let browser = Browser::start(320).await;
    sign_in_with_token(&browser, &server, &alice).await;
    let fits = "return document.documentElement.scrollWidth <= window.innerWidth";
    browser.until("no sideways scrolling at 320 px", fits, json!([])).await;
    let contrast = browser.script(CONTRAST, json!([])).await;
    assert!(contrast["checked"].as_u64().unwrap() > 20, "{contrast}");
    assert_eq!(contrast["low"], json!([]), "text below the WCAG AA contrast of 4.5:1");

    // The arrow keys move between colleagues, on the same button.
    let first_why = "#board .row:first-child .why";
    browser.script("document.querySelector(arguments[0]).focus()", json!([first_why])).await;
    browser.keys(first_why, "\u{E015}").await;
    let moved = "return document.activeElement.matches('#board .row:nth-child(2) .why')";
    browser.until("the arrow key moved the focus down", moved, json!([])).await;

    let star = format!("{} .fav", row("bob@example.com"));
    browser.click(&star).await;
    browser.until_attribute(&star, "aria-pressed", "true").await;
    let first = "return document.querySelector('#board .row').dataset.id === 'bob@example.com'";
    browser.until("the favourite at the top", first, json!([])).await;
    browser.open(&format!("{}/", server.base)).await;
    browser.wait_for("#board .row").await;
    browser.until("the favourite stays at the top after a reload", first, json!([])).await;

    // German by choice, remembered; the policy page in German too.
    let german = "const s = document.getElementById('lang'); s.value = 'de'; \
                  s.dispatchEvent(new Event('change'));";
    browser.script(german, json!([])).await;
    let counted =
        "return document.getElementById('count').textContent === '2 von 2 Personen angezeigt'";
    browser.until("the board in German", counted, json!([])).await;
    browser.click("button[data-view=policy]").await;
    let heading = "return document.querySelector('#policy-page h3')?.textContent === 'Wie Ampel Ihre Präsenz anzeigt'";
    browser.until("the policy page in German", heading, json!([])).await;

    browser.open(&format!("{}/signin", server.base)).await;
    browser.wait_for("#board .row").await;
    browser.until("German after a reload", counted, json!([])).await;
    assert!(!browser.url().await.ends_with("/signin"), "signed in, the sign-in page leads on");
    browser.click("#signout").await;
    browser.wait_for("#signin-form").await;
    browser.open(&format!("{}/", server.base)).await;
    browser.wait_for("#signin-form").await;
}
