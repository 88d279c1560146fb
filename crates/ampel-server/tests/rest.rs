//! The REST contract: users and tokens, presence, the manual status, sessions, call events,
//! the explanation, and the problem answers for everything that is wrong.

mod support;

use serde_json::{Value, json};
use support::Server;

#[tokio::test]
async fn a_new_user_without_sessions_is_offline_and_a_session_makes_them_available() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;

    let (status, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(status, 200);
    assert_eq!((p["availability"].as_str(), p["color"].as_str()), (Some("offline"), Some("grey")));

    let (status, session) = s
        .call(
            "POST",
            "/api/v1/users/alice@example.com/sessions",
            &alice,
            Some(json!({"device": "Laptop"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(session["heartbeat_s"], 60);
    let (_, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("available"), Some("available"))
    );

    let sid = session["session_id"].as_str().unwrap();
    let path = format!("/api/v1/users/alice@example.com/sessions/{sid}");
    let (status, _) = s.call("PUT", &path, &alice, Some(json!({"state": "do-not-disturb"}))).await;
    assert_eq!(status, 200);
    let (_, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(p["availability"], "do-not-disturb");

    let (status, _) = s.call("DELETE", &path, &alice, None).await;
    assert_eq!(status, 204);
    let (_, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(p["availability"], "offline");
    let (status, problem) = s.call("PUT", &path, &alice, Some(json!({"state": "active"}))).await;
    assert_eq!((status, problem["title"].as_str()), (404, Some("Not found")));
}

#[tokio::test]
async fn a_device_that_says_its_user_presents_or_is_on_the_phone_is_weighed_for_it() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let presence = async || {
        let (_, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
        (p["availability"].as_str().unwrap().to_owned(), p["activity"].as_str().unwrap().to_owned())
    };
    let (status, session) = s
        .call(
            "POST",
            "/api/v1/users/alice@example.com/sessions",
            &alice,
            Some(json!({"device": "Laptop", "activity": "presenting"})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(presence().await, ("do-not-disturb".into(), "presenting".into()));

    // A softphone's call: busy in a call, and the router says so to a second caller.
    let path = format!(
        "/api/v1/users/alice@example.com/sessions/{}",
        session["session_id"].as_str().unwrap()
    );
    let beat = json!({"state": "busy", "activity": "in-a-call"});
    assert_eq!(s.call("PUT", &path, &alice, Some(beat)).await.0, 200);
    assert_eq!(presence().await, ("busy".into(), "in-a-call".into()));
    let call = json!({"from": "bob@example.com", "to": "alice@example.com"});
    let (_, d) = s.call("POST", "/api/v1/route", &s.admin, Some(call)).await;
    assert_eq!(
        (d["action"].as_str(), d["reason"].as_str()),
        (Some("busy"), Some("in-a-call")),
        "{d}"
    );

    // A heartbeat without an activity says the call is over.
    assert_eq!(s.call("PUT", &path, &alice, Some(json!({"state": "active"}))).await.0, 200);
    assert_eq!(presence().await, ("available".into(), "available".into()));

    // What a device cannot know about its user is refused, naming the field, and so is a way
    // of being away from a device that is not away.
    for wrong in [
        json!({"state": "active", "activity": "offline"}),
        json!({"state": "active", "activity": "dancing"}),
        json!({"state": "active", "activity": "out-of-office"}),
    ] {
        let (status, problem) = s.call("PUT", &path, &alice, Some(wrong)).await;
        assert_eq!((status, problem["field"].as_str()), (422, Some("activity")), "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("in-a-call") || detail.contains("state away"), "{detail}");
    }
    assert_eq!(presence().await, ("available".into(), "available".into()));
    let holiday = json!({"state": "away", "activity": "out-of-office"});
    assert_eq!(s.call("PUT", &path, &alice, Some(holiday)).await.0, 200);
    assert_eq!(presence().await, ("away".into(), "out-of-office".into()));
}

#[tokio::test]
async fn a_manual_status_wins_and_clearing_it_brings_back_the_state_before() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;

    let status_body = json!({"availability": "busy", "activity": "focusing", "note": "Quarterly report", "lang": "en"});
    let (status, p) = s
        .call("PUT", "/api/v1/users/alice@example.com/presence/manual", &alice, Some(status_body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (p["availability"].as_str(), p["activity"].as_str()),
        (Some("busy"), Some("focusing"))
    );
    assert_eq!(p["note"], json!({"text": "Quarterly report", "lang": "en"}));

    let (status, p) =
        s.call("DELETE", "/api/v1/users/alice@example.com/presence/manual", &alice, None).await;
    assert_eq!(status, 200);
    assert_eq!(p["availability"], "available");
    assert!(p.get("note").is_none());
}

#[tokio::test]
async fn calls_make_busy_until_the_last_one_ends() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    let event = |call: &str, state: &str| json!({"user": "alice@example.com", "call_id": call, "state": state});
    let presence = || s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None);

    assert_eq!(
        s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c1", "ringing"))).await.0,
        204
    );
    assert_eq!(presence().await.1["availability"], "busy");
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c1", "connected"))).await;
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c2", "ringing"))).await;
    assert_eq!(presence().await.1["activity"], "in-a-call");
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c1", "held"))).await;
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c2", "connected"))).await;
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c1", "ended"))).await;
    assert_eq!(presence().await.1["activity"], "in-a-call");
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(event("c2", "ended"))).await;
    assert_eq!(presence().await.1["availability"], "available");
}

#[tokio::test]
async fn the_explanation_names_the_facts_and_the_rule_that_won() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    s.manual("alice@example.com", &alice, json!({"availability": "away"})).await;
    let call = json!({"user": "alice@example.com", "call_id": "c1", "state": "connected"});
    s.call("POST", "/api/v1/telephony/events", &s.admin, Some(call)).await;

    let (status, e) =
        s.call("GET", "/api/v1/users/alice@example.com/presence/explain", &alice, None).await;
    assert_eq!(status, 200);
    assert_eq!(e["rule"], "call");
    let verdicts: Vec<(String, String)> = e["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["source"].as_str().unwrap().to_owned(),
                f["verdict"]["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(verdicts.contains(&("telephony".into(), "decided".into())), "{verdicts:?}");
    assert!(verdicts.contains(&("manual".into(), "outranked".into())), "{verdicts:?}");
    assert!(verdicts.contains(&("session".into(), "outranked".into())), "{verdicts:?}");
}

#[tokio::test]
async fn colleagues_see_what_the_policy_grants_and_blocked_viewers_see_offline() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    let bob = s.user("bob@example.com", &["sales"]).await;
    let carol = s.user("carol@example.com", &["support"]).await;
    let erin = s.user("erin@partner.example", &[]).await;
    s.session("alice@example.com", &alice).await;
    let status = json!({"availability": "busy", "note": "Workshop"});
    s.call("PUT", "/api/v1/users/alice@example.com/presence/manual", &alice, Some(status)).await;

    let view = |token: &str| {
        let token = token.to_owned();
        let s = &s;
        async move { s.call("GET", "/api/v1/users/alice@example.com/presence", &token, None).await.1 }
    };
    assert_eq!(view(&bob).await["note"]["text"], "Workshop");
    let colleague = view(&carol).await;
    assert_eq!(colleague["availability"], "busy");
    assert!(colleague.get("location").is_none());
    let external = view(&erin).await;
    assert_eq!(keys(&external), ["availability", "color", "since", "user"]);

    let privacy = json!({"blocked": ["carol@example.com"]});
    let (status, _) =
        s.call("PUT", "/api/v1/users/alice@example.com/privacy", &alice, Some(privacy)).await;
    assert_eq!(status, 200);
    let blocked = view(&carol).await;
    assert_eq!(
        blocked,
        json!({"user": "alice@example.com", "color": "grey", "availability": "offline", "activity": "offline"})
    );

    let (status, _) =
        s.call("GET", "/api/v1/users/alice@example.com/presence/explain", &bob, None).await;
    assert_eq!(status, 403, "a team member may not see the sources by default");
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_and_others_status_is_403() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    s.user("bob@example.com", &[]).await;

    let response = s
        .http
        .get(format!("{}/api/v1/users/alice@example.com/presence", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let (status, _) =
        s.call("GET", "/api/v1/users/alice@example.com/presence", "ampel_wrong", None).await;
    assert_eq!(status, 401);

    let body = json!({"availability": "busy"});
    let (status, problem) =
        s.call("PUT", "/api/v1/users/bob@example.com/presence/manual", &alice, Some(body)).await;
    assert_eq!((status, problem["title"].as_str()), (403, Some("Forbidden")));
    let (status, _) = s
        .call("POST", "/api/v1/users", &alice, Some(json!({"id": "x@example.com", "name": "X"})))
        .await;
    assert_eq!(status, 403);
    let (status, _) = s.call("POST", "/api/v1/users/bob@example.com/tokens", &alice, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn bad_input_is_answered_with_a_problem_that_names_the_field() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let manual = "/api/v1/users/alice@example.com/presence/manual";

    let cases: Vec<(Value, u16, Option<&str>)> = vec![
        (json!({"availability": "sleeping"}), 422, Some("availability")),
        (json!({"availability": 3}), 422, Some("availability")),
        (json!({"availability": "busy", "until": "yesterday"}), 422, Some("until")),
        (json!({"availability": "busy", "until": "2001-01-01T00:00:00Z"}), 422, Some("until")),
        (json!({"availability": "busy", "until": "9999-01-01T00:00:00Z"}), 422, Some("until")),
        (json!({"availability": "busy", "note": "x".repeat(501)}), 422, Some("note")),
        (json!({"availability": "busy", "lang": "not a language"}), 422, Some("lang")),
        (json!({"availability": "busy", "colour": "red"}), 422, Some("colour")),
        (json!({}), 422, Some("availability")),
    ];
    for (body, status, field) in cases {
        let (got, problem) = s.call("PUT", manual, &alice, Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {problem}");
        assert_eq!(problem["field"].as_str(), field, "{body}: {problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    let raw = |body: &'static str, content_type: &'static str| {
        s.http
            .put(format!("{}{manual}", s.base))
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = raw("{\"availability\": ", "application/json").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(raw("availability=busy", "text/plain").await.unwrap().status(), 415);

    let huge = json!({"availability": "busy", "note": "x".repeat(200_000)});
    let (status, problem) = s.call("PUT", manual, &alice, Some(huge)).await;
    assert_eq!((status, problem["title"].as_str()), (413, Some("Payload too large")));

    let (status, problem) =
        s.call("GET", "/api/v1/users/nobody@example.com/presence", &alice, None).await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("nobody@example.com"));
    let (status, problem) = s
        .call("GET", "/api/v1/presence?users=alice@example.com,ghost@example.com", &alice, None)
        .await;
    assert_eq!((status, problem["field"].as_str()), (404, Some("users")));

    let (status, problem) = s
        .call("POST", "/api/v1/users", &s.admin, Some(json!({"id": "no-domain", "name": "X"})))
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("id")));
    let (status, problem) = s
        .call(
            "POST",
            "/api/v1/users",
            &s.admin,
            Some(json!({"id": "alice@example.com", "name": "A"})),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (409, Some("id")));
    let body = json!({"id": "z@example.com", "name": "Z", "tz": "Mars/Olympus"});
    let (status, problem) = s.call("POST", "/api/v1/users", &s.admin, Some(body)).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("tz")));

    let (status, problem) = s.call("GET", "/api/v1/no/such/thing", &alice, None).await;
    assert_eq!((status, problem["status"].as_u64()), (404, Some(404)));
    let (status, problem) =
        s.call("GET", "/api/v1/users/alice@example.com/history?limit=0", &alice, None).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("limit")));
    let (status, _) =
        s.call("GET", "/api/v1/users/alice@example.com/history?from=soon", &alice, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_server_describes_itself() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;

    let health = s.http.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, openapi) = s.call("GET", "/api/v1/openapi.json", &alice, None).await;
    assert_eq!(status, 200);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let paths = openapi["paths"].as_object().unwrap();
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(!description.is_empty(), "{method} {path} {status} is described");
            }
        }
    }
    for path in [
        "/api/v1/users/{id}/presence",
        "/api/v1/users/{id}/presence/manual",
        "/api/v1/stream",
        "/api/v1/ws",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }

    let metrics =
        s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE ampel_users gauge\nampel_users 1\n"), "{metrics}");
    assert!(metrics.contains("ampel_http_responses_total{class=\"2xx\"}"));

    let (status, policy) = s.call("GET", "/api/v1/policy", &alice, None).await;
    assert_eq!(status, 200);
    assert!(policy.as_str().unwrap().contains("precedence"));
}

#[tokio::test]
async fn history_records_each_change_for_the_user_only() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let manual = "/api/v1/users/alice@example.com/presence/manual";
    s.call("PUT", manual, &alice, Some(json!({"availability": "busy"}))).await;
    s.call("PUT", manual, &alice, Some(json!({"availability": "away"}))).await;

    let (status, history) =
        s.call("GET", "/api/v1/users/alice@example.com/history", &alice, None).await;
    assert_eq!(status, 200);
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["presence"]["availability"].as_str().unwrap())
        .collect();
    assert!(
        states.ends_with(&["busy", "away"]) || states.starts_with(&["away", "busy"]),
        "{states:?}"
    );
    let (status, _) = s.call("GET", "/api/v1/users/alice@example.com/history", &bob, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn revoked_tokens_stop_working_also_after_a_restart() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    let presence = "/api/v1/users/alice@example.com/presence";

    let (status, _) = s.call("DELETE", "/api/v1/users/alice@example.com/tokens", &bob, None).await;
    assert_eq!(status, 403, "bob may not revoke alice's tokens");
    let (status, _) =
        s.call("DELETE", "/api/v1/users/alice@example.com/tokens", &alice, None).await;
    assert_eq!(status, 204);
    assert_eq!(s.call("GET", presence, &alice, None).await.0, 401);
    assert_eq!(s.call("GET", presence, &bob, None).await.0, 200, "other users' tokens still work");

    let support::Server { dir, running, .. } = s;
    running.stop().await.unwrap();
    let s = Server::start_in(
        dir,
        ampel_core::Policy::default(),
        std::sync::Arc::new(ampel_server::clock::SystemClock),
    )
    .await;
    assert_eq!(s.call("GET", presence, &alice, None).await.0, 401);
    assert_eq!(s.call("GET", presence, &bob, None).await.0, 200);
}

#[tokio::test]
async fn erasing_a_user_removes_everything_and_watchers_see_offline() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    let bob = s.user("bob@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    s.manual("alice@example.com", &alice, json!({"availability": "busy"})).await;
    let hub = &s.running.app.hub;
    let conn = std::sync::Arc::new(ampel_server::hub::watch::Conn::new(
        ampel_server::auth::Principal::User("bob@example.com".into()),
    ));
    hub.watch(&conn, &hub.user("alice@example.com").unwrap());
    let mut batch = Vec::new();
    conn.next_batch(&mut batch).await.unwrap();

    let (status, _) = s.call("DELETE", "/api/v1/users/alice@example.com", &bob, None).await;
    assert_eq!(status, 403, "only an administrator erases users");
    let (status, _) = s.call("DELETE", "/api/v1/users/alice@example.com", &s.admin, None).await;
    assert_eq!(status, 204);

    batch.clear();
    conn.next_batch(&mut batch).await.unwrap();
    let last: Value = serde_json::from_slice(&batch[0]).unwrap();
    assert_eq!(last["availability"], "offline");
    assert_eq!(conn.watched_count(), 0);
    assert_eq!(s.call("GET", "/api/v1/users/alice@example.com/presence", &bob, None).await.0, 404);
    assert_eq!(s.call("GET", "/api/v1/users/bob@example.com/presence", &alice, None).await.0, 401);
    let (_, users) = s.call("GET", "/api/v1/users", &bob, None).await;
    assert_eq!(users.as_array().unwrap().len(), 1);

    let history = hub
        .persist()
        .read(|store| {
            store.history("alice@example.com", jiff::Timestamp::MIN, jiff::Timestamp::MAX, 10)
        })
        .await
        .unwrap();
    assert!(history.is_empty(), "no history is left");
    let facts = hub.persist().read(|store| store.facts()).await.unwrap();
    assert!(facts.iter().all(|(user, _)| user != "alice@example.com"));

    assert_eq!(
        s.user("alice@example.com", &[]).await.len(),
        "ampel_".len() + 43,
        "the id can be used again"
    );
}
