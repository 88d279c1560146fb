//! The web page's server side over HTTP: passwords, sign-in, the session cookie standing in for
//! a bearer token on the REST API, CSRF and cross-site refusal, sign-out, and the policy page.

mod support;

use reqwest::header;
use serde_json::{Value, json};
use support::Server;

/// A signed-in browser as the server sees it: the cookie and the CSRF token.
struct Signed {
    cookie: String,
    csrf: String,
}

async fn sign_in(
    server: &Server,
    body: Value,
    proto: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = server.http.post(format!("{}/web/signin", server.base)).json(&body);
    if let Some(proto) = proto {
        request = request.header("x-forwarded-proto", proto);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cookie = response.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), cookie)
}

async fn alice_with_password(server: &Server) -> String {
    let alice = server.user("alice@example.com", &["sales"]).await;
    let path = "/api/v1/users/alice@example.com/password";
    let (status, body) =
        server.call("PUT", path, &server.admin, Some(json!({"password": "alice-secret"}))).await;
    assert_eq!(status, 204, "{body}");
    alice
}

async fn signed_in(server: &Server) -> Signed {
    let body = json!({"user": "Alice@Example.com", "password": "alice-secret"});
    let (status, answer, cookie) = sign_in(server, body, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user"], "alice@example.com");
    let cookie = cookie.unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    Signed { cookie: pair, csrf: answer["csrf"].as_str().unwrap().to_owned() }
}

async fn with_cookie(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    signed: &Signed,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .http
        .request(method, format!("{}{path}", server.base))
        .header("cookie", &signed.cookie);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn a_password_signs_in_and_a_wrong_one_is_named() {
    let server = Server::start().await;
    alice_with_password(&server).await;

    let wrong = json!({"user": "alice@example.com", "password": "not hers"});
    let (status, body, cookie) = sign_in(&server, wrong, None).await;
    assert_eq!((status, body["field"].as_str()), (401, Some("password")));
    assert!(cookie.is_none());
    let nobody = json!({"user": "nobody@example.com", "password": "alice-secret"});
    assert_eq!(sign_in(&server, nobody, None).await.0, 401);
    let (status, body, _) = sign_in(&server, json!({"user": "alice@example.com"}), None).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("password")));
    let (status, body, _) = sign_in(&server, json!({"token": "ampel_nonsense"}), None).await;
    assert_eq!((status, body["field"].as_str()), (401, Some("token")));

    let right = json!({"user": "alice@example.com", "password": "alice-secret"});
    let (status, _, cookie) = sign_in(&server, right.clone(), None).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP cannot keep a Secure cookie: {cookie}");
    let (_, _, cookie) = sign_in(&server, right, Some("https")).await;
    assert!(cookie.unwrap().contains("; Secure"), "behind an HTTPS proxy the cookie is Secure");
}

#[tokio::test]
async fn the_session_cookie_works_on_the_api_and_changes_need_the_csrf_token() {
    let server = Server::start().await;
    alice_with_password(&server).await;
    let signed = signed_in(&server).await;
    let path = "/api/v1/users/alice@example.com/presence/manual";
    let busy = json!({"availability": "busy"});
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;

    let (status, body) =
        with_cookie(&server, get.clone(), "/api/v1/users", &signed, &[], None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) =
        with_cookie(&server, put.clone(), path, &signed, &[], Some(busy.clone())).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("x-csrf-token"));
    let wrong = [("x-csrf-token", "0000")];
    assert_eq!(
        with_cookie(&server, put.clone(), path, &signed, &wrong, Some(busy.clone())).await.0,
        403
    );
    let foreign = [("x-csrf-token", signed.csrf.as_str()), ("origin", "https://evil.example")];
    assert_eq!(
        with_cookie(&server, put.clone(), path, &signed, &foreign, Some(busy.clone())).await.0,
        403
    );

    let csrf = [("x-csrf-token", signed.csrf.as_str())];
    let (status, body) = with_cookie(&server, put.clone(), path, &signed, &csrf, Some(busy)).await;
    assert_eq!((status, body["availability"].as_str()), (200, Some("busy")));

    let (status, _) =
        with_cookie(&server, reqwest::Method::POST, "/web/signout", &signed, &csrf, None).await;
    assert_eq!(status, 204);
    let (status, _) = with_cookie(&server, get, "/api/v1/users", &signed, &[], None).await;
    assert_eq!(status, 401, "the session ended with the sign-out");
}

#[tokio::test]
async fn revoking_a_users_tokens_ends_their_web_sign_ins() {
    let server = Server::start().await;
    let alice = alice_with_password(&server).await;
    let signed = signed_in(&server).await;
    let get = reqwest::Method::GET;
    assert_eq!(with_cookie(&server, get.clone(), "/api/v1/users", &signed, &[], None).await.0, 200);
    let path = "/api/v1/users/alice@example.com/tokens";
    assert_eq!(server.call("DELETE", path, &alice, None).await.0, 204);
    assert_eq!(with_cookie(&server, get, "/api/v1/users", &signed, &[], None).await.0, 401);
}

#[tokio::test]
async fn the_board_sends_strangers_to_sign_in_and_forbids_scripts_from_elsewhere() {
    let server = Server::start().await;
    alice_with_password(&server).await;
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = no_redirects.get(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/signin");

    let signed = signed_in(&server).await;
    let response =
        no_redirects.get(format!("{}/", server.base)).header("cookie", &signed.cookie).send();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(response.text().await.unwrap().contains("<ul id=\"board\""));
}

#[tokio::test]
async fn passwords_are_set_by_the_admin_or_changed_with_the_current_one() {
    let server = Server::start().await;
    let alice = alice_with_password(&server).await;
    let bob = server.user("bob@example.com", &[]).await;
    let path = "/api/v1/users/alice@example.com/password";

    let (status, body) = server.call("PUT", path, &alice, Some(json!({"password": "short"}))).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("password")));
    let (status, _) =
        server.call("PUT", path, &bob, Some(json!({"password": "bob sets it"}))).await;
    assert_eq!(status, 403, "only the admin or the user");
    let (status, body) =
        server.call("PUT", path, &alice, Some(json!({"password": "new secret"}))).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("current")));
    let change = json!({"password": "new secret", "current": "alice-secret"});
    assert_eq!(server.call("PUT", path, &alice, Some(change)).await.0, 204);

    let old = json!({"user": "alice@example.com", "password": "alice-secret"});
    assert_eq!(sign_in(&server, old, None).await.0, 401);
    let new = json!({"user": "alice@example.com", "password": "new secret"});
    assert_eq!(sign_in(&server, new, None).await.0, 200);
}

#[tokio::test]
async fn the_policy_page_is_plain_words_and_the_admin_sees_the_file_checked() {
    let server = Server::start().await;
    let alice = alice_with_password(&server).await;

    let (status, page) = server.call("GET", "/web/policy?lang=de", &alice, None).await;
    assert_eq!(status, 200);
    assert!(page["page"].as_str().unwrap().starts_with("# Wie Ampel"), "{page}");
    assert!(page.get("toml").is_none(), "employees read the words, not the file");
    let (status, body) = server.call("GET", "/web/policy?lang=fr", &alice, None).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("lang")));

    let (_, page) = server.call("GET", "/web/policy?lang=en-GB", &server.admin, None).await;
    assert!(page["page"].as_str().unwrap().starts_with("# How Ampel"));
    assert!(page["toml"].as_str().unwrap().contains("[dynamics]"));
    assert_eq!(page["check"]["ok"], true);

    let bad = json!({"text": "[dynamics]\nidle_after = \"soon\"\n"});
    let (status, check) = server.call("POST", "/web/policy/check", &server.admin, Some(bad)).await;
    assert_eq!(status, 200);
    assert_eq!((check["ok"].as_bool(), check["line"].as_u64()), (Some(false), Some(2)), "{check}");
    let text = json!({"text": ""});
    assert_eq!(server.call("POST", "/web/policy/check", &alice, Some(text)).await.0, 403);
}
