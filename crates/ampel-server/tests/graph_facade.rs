//! The Graph-shaped presence facade as a busy light or attendant console uses it: Graph's JSON
//! shapes and words, presence sessions with their precedence and expiry rules, the preferred
//! presence, status messages, Graph error bodies, and the same visibility as every interface.

mod support;

use serde_json::{Value, json};
use support::Server;

const ALICE: &str = "alice@example.com";

async fn graph(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.call(method, &format!("/graph/v1.0{path}"), token, body).await
}

async fn alice_as_seen_by(s: &Server, token: &str) -> Value {
    let (status, body) = graph(s, "GET", &format!("/users/{ALICE}/presence"), token, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a_busy_light_reads_graph_shaped_presence() {
    let s = Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    let bob = s.user("bob@example.com", &[]).await;

    let p = alice_as_seen_by(&s, &bob).await;
    assert_eq!(
        p["@odata.context"],
        format!("http://{}/graph/v1.0/$metadata#users('{ALICE}')/presence/$entity", s.running.http)
    );
    assert_eq!(
        (p["id"].as_str(), p["availability"].as_str(), p["activity"].as_str()),
        (Some(ALICE), Some("Offline"), Some("Offline"))
    );
    assert_eq!(p["outOfOfficeSettings"], json!({"message": null, "isOutOfOffice": false}));
    assert_eq!(p["statusMessage"], Value::Null);

    s.session(ALICE, &alice).await;
    let event = json!({"user": ALICE, "call_id": "c1", "state": "connected"});
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event)).await;
    let p = alice_as_seen_by(&s, &bob).await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("Busy"), Some("InACall"))
    );

    let (status, me) = graph(&s, "GET", "/me/presence", &alice, None).await;
    assert_eq!(
        (status, me["id"].as_str(), me["activity"].as_str()),
        (200, Some(ALICE), Some("InACall"))
    );

    let ids = json!({"ids": [ALICE, "bob@example.com", "nobody@example.com"]});
    let (status, batch) =
        graph(&s, "POST", "/communications/getPresencesByUserId", &bob, Some(ids)).await;
    assert_eq!(status, 200);
    let value = batch["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    assert_eq!(
        (value[0]["id"].as_str(), value[1]["availability"].as_str()),
        (Some(ALICE), Some("Offline"))
    );
}

#[tokio::test]
async fn an_external_viewer_sees_only_the_availability() {
    let s = Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    let eve = s.user("eve@other.example", &[]).await;
    s.session(ALICE, &alice).await;
    s.manual(
        ALICE,
        &alice,
        json!({"availability": "busy", "activity": "focusing", "note": "Report"}),
    )
    .await;

    let p = alice_as_seen_by(&s, &eve).await;
    assert_eq!((p["availability"].as_str(), p["activity"].as_str()), (Some("Busy"), Some("Busy")));
    assert_eq!(p["statusMessage"], Value::Null);
    let p = alice_as_seen_by(&s, &alice).await;
    assert_eq!(p["activity"], "Focusing");
    assert_eq!(p["statusMessage"]["message"]["content"], "Report");
}

#[tokio::test]
async fn presence_sessions_follow_graph_precedence_and_the_preferred_presence_beats_them() {
    let s = Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    let action = |name: &str| format!("/users/{ALICE}/presence/{name}");
    let session = |id: &str, availability: &str, activity: &str| json!({"sessionId": id, "availability": availability, "activity": activity, "expirationDuration": "PT1H"});

    let (status, _) = graph(
        &s,
        "POST",
        &action("setPresence"),
        &alice,
        Some(session("app-1", "Available", "Available")),
    )
    .await;
    assert_eq!(status, 200);
    graph(&s, "POST", &action("setPresence"), &alice, Some(session("app-2", "Away", "Away"))).await;
    // Available outranks Away among sessions, although Away was set later.
    assert_eq!(alice_as_seen_by(&s, &alice).await["availability"], "Available");

    graph(&s, "POST", &action("setPresence"), &alice, Some(session("app-3", "Busy", "InACall")))
        .await;
    assert_eq!(alice_as_seen_by(&s, &alice).await["activity"], "InACall");
    graph(&s, "POST", &action("clearPresence"), &alice, Some(json!({"sessionId": "app-3"}))).await;
    assert_eq!(alice_as_seen_by(&s, &alice).await["activity"], "Available");

    let preferred = json!({"availability": "DoNotDisturb", "activity": "DoNotDisturb", "expirationDuration": "PT8H"});
    let (status, _) =
        graph(&s, "POST", &action("setUserPreferredPresence"), &alice, Some(preferred)).await;
    assert_eq!(status, 200);
    let message = json!({"statusMessage": {"message": {"content": "Heads down until noon", "contentType": "text"}}});
    let (status, _) =
        graph(&s, "POST", "/me/presence/setStatusMessage", &alice, Some(message)).await;
    assert_eq!(status, 200);
    let p = alice_as_seen_by(&s, &alice).await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("DoNotDisturb"), Some("DoNotDisturb"))
    );
    assert_eq!(p["statusMessage"]["message"]["content"], "Heads down until noon");

    graph(&s, "POST", &action("clearUserPreferredPresence"), &alice, Some(json!({}))).await;
    assert_eq!(alice_as_seen_by(&s, &alice).await["availability"], "Available");
}

#[tokio::test]
async fn errors_come_in_graph_shape() {
    let s = Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let set = format!("/users/{ALICE}/presence/setPresence");

    let (status, body) = graph(&s, "GET", &format!("/users/{ALICE}/presence"), "wrong", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("InvalidAuthenticationToken")));

    let odd = json!({"sessionId": "app", "availability": "Available", "activity": "InACall"});
    let (status, body) = graph(&s, "POST", &set, &alice, Some(odd)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BadRequest")));
    assert!(body["error"]["message"].as_str().unwrap().contains("InACall"));

    let long = json!({"sessionId": "app", "availability": "Busy", "activity": "InACall", "expirationDuration": "PT5H"});
    let (status, _) = graph(&s, "POST", &set, &alice, Some(long)).await;
    assert_eq!(status, 400);

    let ok = json!({"sessionId": "app", "availability": "Busy", "activity": "InACall"});
    let (status, body) = graph(&s, "POST", &set, &bob, Some(ok)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("Forbidden")));

    let (status, body) = graph(&s, "GET", "/users/nobody@example.com/presence", &alice, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NotFound")));

    let many: Vec<String> = (0..651).map(|i| format!("u{i}@example.com")).collect();
    let (status, _) = graph(
        &s,
        "POST",
        "/communications/getPresencesByUserId",
        &alice,
        Some(json!({"ids": many})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, body) =
        graph(&s, "POST", "/communications/getPresencesByUserId", &alice, Some(json!({"id": 1})))
            .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BadRequest")));

    let (status, body) = graph(&s, "GET", "/me/presence", &s.admin, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BadRequest")));
}

/// A facade request straight to the router, for tests on tokio's paused clock (no socket, whose
/// timeouts the paused clock would fire).
async fn oneshot(
    app: &std::sync::Arc<ampel_server::App>,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(format!("/graph/v1.0{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let router = ampel_server::api::router(std::sync::Arc::clone(app));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A server on tokio's paused clock with Alice, and a short timer that keeps the paused clock
/// from leaping ahead to the next timer of the server while a request waits for the database
/// or the network.
async fn paused_server() -> (Server, String, tokio::task::JoinHandle<()>) {
    let ticker = tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    let clock =
        ampel_server::clock::TokioClock::starting_at("2026-12-03T09:00:00Z".parse().unwrap());
    let s = Server::start_with(ampel_core::Policy::default(), std::sync::Arc::new(clock)).await;
    let alice = s.user(ALICE, &[]).await;
    (s, alice, ticker)
}

#[tokio::test(start_paused = true)]
async fn a_presence_session_lasts_its_own_expiration_duration_past_the_teams_lifetime() {
    let (s, alice, ticker) = paused_server().await;
    let app = std::sync::Arc::clone(&s.running.app);
    let set = format!("/users/{ALICE}/presence/setPresence");
    let session = json!({"sessionId": "console", "availability": "Busy", "activity": "InACall", "expirationDuration": "PT3H"});
    let (status, body) = oneshot(&app, "POST", &set, &alice, Some(session)).await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/users/{ALICE}/presence");
    let read = || oneshot(&app, "GET", &path, &alice, None);

    // Past the policy's one-hour Teams lifetime, the session still holds.
    tokio::time::advance(std::time::Duration::from_secs(2 * 3600)).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let (_, p) = read().await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("Busy"), Some("InACall"))
    );

    // At its own end it is over.
    tokio::time::advance(std::time::Duration::from_secs(3600 + 60)).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let (_, p) = read().await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("Offline"), Some("Offline"))
    );
    ticker.abort();
}

#[tokio::test(start_paused = true)]
async fn a_status_message_stands_alone_changes_no_availability_and_ends_at_its_expiry() {
    let (s, alice, ticker) = paused_server().await;
    let app = std::sync::Arc::clone(&s.running.app);
    let path = format!("/users/{ALICE}/presence");
    let read = || oneshot(&app, "GET", &path, &alice, None);
    let preferred = json!({"availability": "Busy", "activity": "Busy"});
    oneshot(&app, "POST", &format!("{path}/setUserPreferredPresence"), &alice, Some(preferred))
        .await;

    eprintln!("NOW {}", app.hub.clock.now());
    // An hour and a half from now, written in Berlin's time.
    let now = app.hub.clock.now().round(jiff::Unit::Minute).unwrap();
    let expiry = now.checked_add(jiff::SignedDuration::from_mins(90)).unwrap();
    let berlin = expiry.in_tz("Europe/Berlin").unwrap().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let message = json!({"statusMessage": {
        "message": {"content": "Back after lunch", "contentType": "text"},
        "expiryDateTime": {"dateTime": berlin, "timeZone": "W. Europe Standard Time"},
    }});
    let (status, body) =
        oneshot(&app, "POST", "/me/presence/setStatusMessage", &alice, Some(message)).await;
    assert_eq!(status, 200, "{body}");
    let (_, p) = read().await;
    assert_eq!(p["availability"], "Busy");
    assert_eq!(
        p["statusMessage"],
        json!({"message": {"content": "Back after lunch", "contentType": "text"},
               "expiryDateTime": {"dateTime": expiry.strftime("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": "UTC"}})
    );

    // The message outlives the preferred presence it was set beside, and changes nothing else.
    oneshot(&app, "POST", &format!("{path}/clearUserPreferredPresence"), &alice, Some(json!({})))
        .await;
    let (_, p) = read().await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("Offline"), Some("Offline"))
    );
    assert_eq!(p["statusMessage"]["message"]["content"], "Back after lunch");

    // At its expiry it is gone.
    tokio::time::advance(std::time::Duration::from_secs(92 * 60)).await;
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let (_, p) = read().await;
    assert_eq!(p["statusMessage"], Value::Null, "{p}");

    // An expiry in the past is refused; an empty message clears one without an expiry.
    let past = json!({"statusMessage": {"message": {"content": "x"},
        "expiryDateTime": {"dateTime": "2026-12-03T08:59:00", "timeZone": "UTC"}}});
    let (status, body) =
        oneshot(&app, "POST", "/me/presence/setStatusMessage", &alice, Some(past)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("BadRequest")));
    let lasting =
        json!({"statusMessage": {"message": {"content": "On leave", "contentType": "text"}}});
    oneshot(&app, "POST", "/me/presence/setStatusMessage", &alice, Some(lasting)).await;
    let (_, p) = read().await;
    assert_eq!(p["statusMessage"]["expiryDateTime"], Value::Null);
    assert_eq!(p["statusMessage"]["message"]["content"], "On leave");
    let empty = json!({"statusMessage": {"message": {"content": "", "contentType": "text"}}});
    oneshot(&app, "POST", "/me/presence/setStatusMessage", &alice, Some(empty)).await;
    assert_eq!(read().await.1["statusMessage"], Value::Null);
    ticker.abort();
}

#[tokio::test]
async fn the_openapi_document_describes_the_facade() {
    let s = Server::start().await;
    let alice = s.user(ALICE, &[]).await;
    let response = s.http.get(format!("{}/api/v1/openapi.json", s.base)).bearer_auth(&alice);
    let text = response.send().await.unwrap().text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let facade: Vec<&String> = paths.keys().filter(|p| p.starts_with("/graph/v1.0/")).collect();
    let mut expected = vec![
        "/graph/v1.0/users/{id}/presence".to_owned(),
        "/graph/v1.0/me/presence".to_owned(),
        "/graph/v1.0/communications/getPresencesByUserId".to_owned(),
    ];
    for action in [
        "setPresence",
        "clearPresence",
        "setUserPreferredPresence",
        "clearUserPreferredPresence",
        "setStatusMessage",
    ] {
        expected.push(format!("/graph/v1.0/users/{{id}}/presence/{action}"));
        expected.push(format!("/graph/v1.0/me/presence/{action}"));
    }
    let mut listed: Vec<String> = facade.into_iter().cloned().collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    // The REST interface is still there beside it.
    assert!(paths.contains_key("/api/v1/users/{id}/presence"));
    assert!(paths.contains_key("/api/v1/users/{id}/graph"));

    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let set = &paths["/graph/v1.0/users/{id}/presence/setPresence"]["post"];
    assert_eq!(set["tags"], json!(["graph-facade"]));
    assert_eq!(set["parameters"][0]["name"], "id");
    let body = &set["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/SetPresence");
    assert_eq!(
        schemas["SetPresence"]["required"],
        json!(["sessionId", "availability", "activity"])
    );
    for status in ["200", "400", "401", "403", "404", "429", "503"] {
        assert!(set["responses"][status]["description"].is_string(), "{status}: {set}");
    }
    let error = &set["responses"]["403"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(error, "#/components/schemas/ErrorBody");
    let read = &paths["/graph/v1.0/users/{id}/presence"]["get"]["responses"]["200"];
    assert_eq!(
        read["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PresenceBody"
    );
    let presence = schemas["PresenceBody"]["properties"].as_object().unwrap();
    for field in
        ["@odata.context", "id", "availability", "activity", "statusMessage", "outOfOfficeSettings"]
    {
        assert!(presence.contains_key(field), "{field}: {presence:?}");
    }

    // Every reference names a schema the document holds.
    for (at, _) in text.match_indices("#/components/schemas/") {
        let name: String = text[at + 21..].chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "{name} is not among the schemas");
    }
}
