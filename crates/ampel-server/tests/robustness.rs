//! A handler that panics is still answered, and state survives a restart of the server.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ampel_core::Policy;
use ampel_server::clock::SystemClock;
use axum::body::Body;
use axum::http::Request;
use serde_json::json;
use support::Server;
use tower::ServiceExt;

#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panic_inside_a_handler_is_answered_with_500_and_logged() {
    let s = Server::start().await;
    let app = Arc::clone(&s.running.app);
    let router = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            let empty: Vec<u8> = Vec::new();
            format!("{}", empty[1])
        }),
    );
    let router =
        ampel_server::api::with_layers(router, Arc::clone(&app)).with_state(Arc::clone(&app));

    let log = Captured::default();
    let writer = log.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let response =
        router.oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();

    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 500);
    assert_eq!(app.hub.metrics.panics.load(Relaxed), 1);
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("handler panicked") && logged.contains("index out of bounds"),
        "{logged}"
    );
}

#[tokio::test]
async fn users_tokens_statuses_and_sessions_survive_a_restart() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &["sales"]).await;
    let sid = s.session("alice@example.com", &alice).await;
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let body = json!({"availability": "busy", "note": {"text": "Kundentermin", "lang": "de"}, "until": until.to_string()});
    s.call("PUT", "/api/v1/users/alice@example.com/presence/manual", &alice, Some(body)).await;
    let (_, before) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;

    let Server { dir, admin, running, .. } = s;
    let second = ampel_server::Config {
        data_dir: dir.path().to_owned(),
        http: "127.0.0.1:0".parse().unwrap(),
        policy: Policy::default(),
        clock: Arc::new(SystemClock),
        max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
        file: Default::default(),
    };
    let refused = ampel_server::start(second).await.err().expect("a second server is refused");
    assert!(matches!(refused, ampel_server::StartError::Locked { .. }), "{refused}");

    drop(running.app.clone());
    let app = std::sync::Arc::downgrade(&running.app);
    running.stop().await.unwrap();
    assert!(app.upgrade().is_none(), "a stopped server lets go of its state");
    let s = Server::start_in(dir, Policy::default(), Arc::new(SystemClock)).await;
    assert_eq!(s.admin, admin, "the admin token is created once");
    assert!(s.running.new_admin_token.is_none());

    let (status, after) =
        s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(status, 200, "the user's token still works");
    assert_eq!(after, before);
    let path = format!("/api/v1/users/alice@example.com/sessions/{sid}");
    assert_eq!(s.call("PUT", &path, &alice, Some(json!({"state": "idle"}))).await.0, 200);
}

#[tokio::test]
async fn a_status_that_ended_while_the_server_was_down_dates_the_state_after_it() {
    let s = Server::start().await;
    let alice = s.user("alice@example.com", &[]).await;
    s.session("alice@example.com", &alice).await;
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(800);
    let status = json!({"availability": "do-not-disturb", "until": until.to_string()});
    assert_eq!(s.manual("alice@example.com", &alice, status).await.0, 200);

    let Server { dir, running, .. } = s;
    running.stop().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let s = Server::start_in(dir, Policy::default(), Arc::new(SystemClock)).await;
    let (_, p) = s.call("GET", "/api/v1/users/alice@example.com/presence", &alice, None).await;
    assert_eq!(p["availability"], "available");
    assert_eq!(p["since"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), until);
}
