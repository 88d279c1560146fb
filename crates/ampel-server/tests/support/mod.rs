//! A real server on 127.0.0.1:0 with its database in a temporary directory, and a small HTTP
//! client for the tests.

#![allow(dead_code)] // each test file uses a different part of this support module

pub mod port;

use std::sync::Arc;

use ampel_core::Policy;
use ampel_server::clock::{Clock, SystemClock};
use ampel_server::{Config, Running};
use serde_json::{Value, json};

pub struct Server {
    pub running: Running,
    pub admin: String,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Policy::default(), Arc::new(SystemClock)).await
    }

    pub async fn start_with(policy: Policy, clock: Arc<dyn Clock>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, policy, clock).await
    }

    pub async fn start_in(dir: tempfile::TempDir, policy: Policy, clock: Arc<dyn Clock>) -> Server {
        Server::start_full(dir, policy, clock, Default::default()).await
    }

    /// A server with this server configuration file (for example with SIP listening).
    pub async fn start_with_file(file: ampel_server::server_file::ServerFile) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_full(dir, Policy::default(), Arc::new(SystemClock), file).await
    }

    pub async fn start_full(
        dir: tempfile::TempDir,
        policy: Policy,
        clock: Arc<dyn Clock>,
        file: ampel_server::server_file::ServerFile,
    ) -> Server {
        let http = "127.0.0.1:0".parse().unwrap();
        Server::start_configured(dir, policy, clock, http, file).await
    }

    /// A server with a server configuration file, listening on `http`.
    pub async fn start_configured(
        dir: tempfile::TempDir,
        policy: Policy,
        clock: Arc<dyn Clock>,
        http: std::net::SocketAddr,
        file: ampel_server::server_file::ServerFile,
    ) -> Server {
        let config = Config {
            data_dir: dir.path().to_owned(),
            http,
            policy,
            clock,
            max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
            file,
        };
        let running = ampel_server::start(config).await.expect("server starts");
        Server::started(dir, running)
    }

    /// A server on a listener bound already: its address can go into the configuration (as
    /// Graph's notification URL) and nobody else can take the port before the server serves.
    pub async fn start_on(
        dir: tempfile::TempDir,
        policy: Policy,
        clock: Arc<dyn Clock>,
        listener: tokio::net::TcpListener,
        file: ampel_server::server_file::ServerFile,
    ) -> Server {
        let config = Config {
            data_dir: dir.path().to_owned(),
            http: listener.local_addr().unwrap(),
            policy,
            clock,
            max_connections: ampel_server::DEFAULT_MAX_CONNECTIONS,
            file,
        };
        let running = ampel_server::start_on(config, listener).await.expect("server starts");
        Server::started(dir, running)
    }

    fn started(dir: tempfile::TempDir, running: Running) -> Server {
        let admin =
            std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
        let base = format!("http://{}", running.http);
        Server { running, admin, base, dir, http: reqwest::Client::new() }
    }

    /// Creates a user and returns a token for it.
    pub async fn user(&self, id: &str, groups: &[&str]) -> String {
        let body = json!({ "id": id, "name": id.split('@').next().unwrap(), "groups": groups });
        let (status, _) = self.call("POST", "/api/v1/users", &self.admin, Some(body)).await;
        assert_eq!(status, 201, "user {id} created");
        let (status, token) =
            self.call("POST", &format!("/api/v1/users/{id}/tokens"), &self.admin, None).await;
        assert_eq!(status, 201);
        token["token"].as_str().unwrap().to_owned()
    }

    /// Opens a device session ("Laptop") for `user` and returns its id.
    pub async fn session(&self, user: &str, token: &str) -> String {
        let path = format!("/api/v1/users/{user}/sessions");
        let (status, body) =
            self.call("POST", &path, token, Some(json!({"device": "Laptop"}))).await;
        assert_eq!(status, 201, "{body}");
        body["session_id"].as_str().unwrap().to_owned()
    }

    /// Sets `user`'s manual status and returns the answer.
    pub async fn manual(&self, user: &str, token: &str, status: Value) -> (u16, Value) {
        self.call("PUT", &format!("/api/v1/users/{user}/presence/manual"), token, Some(status))
            .await
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// A listener on a port of the system's choosing, kept until a server takes it over.
pub async fn listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Waits until `check` holds, for at most 15 seconds of real time, and fails with what it last
/// saw otherwise.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (bool, Value)>,
{
    let mut last = Value::Null;
    for _ in 0..300 {
        let (ok, seen) = check().await;
        if ok {
            return seen;
        }
        last = seen;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen; last seen: {last}");
}

/// What the tests of one file logged at info level and above, once [`capture_log`] ran.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the info-level log of every test in this file to [`captured_log`].
pub fn capture_log() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// The log captured so far.
pub fn captured_log() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}
