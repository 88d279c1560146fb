//! Ampel's server: the presence hub with its timers, the durable store behind it, and the
//! HTTP front end (REST, Server-Sent Events, WebSocket, metrics).
//!
//! [`start`] opens the data directory, loads users, tokens and facts, starts the writer thread,
//! the timers and the HTTP listener, and returns once Ampel is serving. The decisions about
//! presence are not made here but in `ampel-core`; this crate moves facts in and projections
//! out, and keeps them durable.

pub mod api;
pub mod auth;
pub mod calendar;
pub mod clock;
pub mod graph;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod persist;
pub mod problem;
pub mod routing;
pub mod server_file;
pub mod settings;
pub mod sip;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ampel_core::Policy;
use ampel_store::{Op, Store, StoreError, TokenRecord, token_hash};
use jiff::Timestamp;

use auth::{Principal, Tokens};
use clock::Clock;
use hub::Hub;
use metrics::Metrics;
use persist::Persist;
use settings::Settings;

/// Shared state of every request handler.
pub struct App {
    /// The presence hub.
    pub hub: Arc<Hub>,
    /// The accepted tokens.
    pub tokens: Tokens,
    /// Settings per user and area, kept in the database.
    pub settings: Settings,
    /// The Microsoft 365 connector, when the server configuration file has a `[graph]` section.
    pub graph: Option<Arc<graph::Connector>>,
    /// The SIP digest realm, which stored SIP credentials are made for.
    pub sip_realm: String,
    /// How the web page is served.
    pub web: web::WebSection,
    /// Caller lookup and announcements for routing calls.
    pub routing: Arc<routing::Routing>,
    /// The calendar sources and their health.
    pub calendars: calendar::Calendars,
    /// Held for the life of the server, so that no second server opens the same data.
    _lock: std::fs::File,
    /// Turns true when the server stops, for connections that outlive their HTTP exchange
    /// (WebSockets) to close themselves.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl App {
    /// Completes when the server stops. Every task that holds the `App` ends then, so that the
    /// data directory's lock is released with the last of them.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|stop| *stop).await;
    }
}

/// How to start the server.
pub struct Config {
    /// Where the database and the admin token live.
    pub data_dir: PathBuf,
    /// Where to listen for HTTP.
    pub http: SocketAddr,
    /// The policy in force.
    pub policy: Policy,
    /// The clock; the system clock outside tests.
    pub clock: Arc<dyn Clock>,
    /// The most HTTP connections open at once (watchers included).
    pub max_connections: usize,
    /// The server configuration file's contents.
    pub file: server_file::ServerFile,
}

/// The default for [`Config::max_connections`]: well below the usual limit of 20,000 open
/// files, with room for the database and the SIP sockets.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_000;

/// A started server.
pub struct Running {
    /// The address HTTP listens on (useful when the configured port was 0).
    pub http: SocketAddr,
    /// The SIP front end, when the server configuration asked for one.
    pub sip: Option<Arc<sip::Sip>>,
    /// The administrator token, when this start created it; it is never shown again.
    pub new_admin_token: Option<String>,
    /// The shared state, for tests and embedding.
    pub app: Arc<App>,
    /// Completes when the HTTP server stops.
    pub serving: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The calendar poller, stopped with the server.
    calendar: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Closes the listener and every connection, and waits until they are closed. Writes that
    /// were acknowledged are in the database already; nothing else needs saving.
    pub async fn stop(self) -> std::io::Result<()> {
        if let Some(graph) = &self.app.graph {
            graph.stop();
        }
        if let Some(sip) = &self.sip {
            sip.farewell().await;
        }
        let _ = self.stop.send(true);
        // The poller holds the shared state while it polls; it goes first, so that the state
        // (and the data directory's lock) is gone when this returns.
        self.calendar.abort();
        let _ = self.calendar.await;
        let served = self.serving.await.unwrap_or(Ok(()));
        // Every other task that holds the server (SIP sockets, connections and subscriptions)
        // ends once it sees the stop. Waiting for them, within a bound, means the data
        // directory and the ports are free when this returns.
        drop(self.sip);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.app) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!("stopped serving");
        served
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or read.
    #[error("cannot open the database in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// What SQLite said.
        source: StoreError,
    },
    /// The administrator token could not be written.
    #[error("cannot write the administrator token to {path}: {source}")]
    AdminToken {
        /// Where it was to be written.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another server holds the data directory.
    #[error("another ampel server is using {dir}")]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory cannot be created or locked.
    #[error("cannot use the data directory {dir}: {source}")]
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The `[graph]` section of the server configuration file is not usable.
    #[error("{0}")]
    Graph(#[from] graph::config::ConfigError),
    /// The HTTP address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Opens the data directory and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_listening(config, None).await
}

/// Like [`start`], on a listener bound already (then [`Config::http`] is not used): a caller
/// that must know the address before the server starts, to name it in the configuration
/// (Microsoft Graph's notification URL), keeps the port from the moment it binds it.
pub async fn start_on(
    config: Config,
    listener: tokio::net::TcpListener,
) -> Result<Running, StartError> {
    start_listening(config, Some(listener)).await
}

async fn start_listening(
    config: Config,
    listener: Option<tokio::net::TcpListener>,
) -> Result<Running, StartError> {
    if let Some(graph) = &config.file.graph {
        graph.validate()?;
    }
    let lock = lock_data_dir(&config.data_dir)?;
    let store_error = |source| StartError::Store { dir: config.data_dir.clone(), source };
    let store = Store::open(&config.data_dir).map_err(store_error)?;
    let users = store.users().map_err(store_error)?;
    let token_records = store.tokens().map_err(store_error)?;
    let facts = store.facts().map_err(store_error)?;
    let settings = Settings::new(store.settings().map_err(store_error)?);
    let latest = store.latest_history().map_err(store_error)?;

    let metrics = Arc::new(Metrics::default());
    let persist = Persist::start(store, Arc::clone(&metrics));
    let tokens = Tokens::from_records(token_records);
    let new_admin_token = if tokens.has_admin() {
        None
    } else {
        Some(create_admin_token(&config.data_dir, &persist, &tokens, config.clock.now()).await?)
    };

    let file = config.file.routing.clone();
    let calls = Arc::new(routing::Routing::new(&config.data_dir, &config.policy, file));
    let hub =
        Arc::new(Hub::new(config.policy, config.clock, metrics, persist, users, facts, latest));
    hub.spawn_timers();
    tokio::spawn(purge_history(Arc::clone(&hub)));
    let graph = config
        .file
        .graph
        .clone()
        .map(|c| Arc::new(graph::Connector::new(c, Arc::clone(&hub.metrics))));
    let sip_realm = config.file.sip.realm.clone();
    let web = config.file.web.clone();
    let calendars = calendar::Calendars::new(config.file.calendar.clone());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        hub,
        tokens,
        settings,
        graph,
        sip_realm,
        web,
        routing: calls,
        calendars,
        _lock: lock,
        stopping: stopping.clone(),
    });
    routing::Routing::spawn_refresh(&app.routing);
    let calendar = calendar::spawn(Arc::clone(&app));

    let listener = match listener {
        Some(listener) => listener,
        None => tokio::net::TcpListener::bind(config.http)
            .await
            .map_err(|source| StartError::Listen { addr: config.http, source })?,
    };
    let http =
        listener.local_addr().map_err(|source| StartError::Listen { addr: config.http, source })?;
    let sip = match config.file.sip.listen {
        Some(addr) => Some(
            sip::Sip::start_with(
                Arc::clone(&app),
                config.file.sip.clone(),
                addr,
                Box::new(routing::sip::Redirect::new(&config.file.routing, http)),
            )
            .await
            .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    let router = api::router(Arc::clone(&app));
    let serving = tokio::spawn(http::serve(listener, router, config.max_connections, stopping));
    graph::spawn(&app);
    tracing::info!(%http, users = app.hub.user_count(), "ampel is serving");
    Ok(Running { http, sip, new_admin_token, app, serving, calendar, stop })
}

/// Creates the data directory if needed and takes its lock; two servers over one database
/// would each keep their own state and timers and overwrite each other.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    let io = |source| StartError::DataDir { dir: dir.to_owned(), source };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("ampel.lock"))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked { dir: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

async fn create_admin_token(
    dir: &Path,
    persist: &Persist,
    tokens: &Tokens,
    now: Timestamp,
) -> Result<String, StartError> {
    let token = auth::new_token();
    let path = dir.join("admin.token");
    write_private(&path, &format!("{token}\n"))
        .map_err(|source| StartError::AdminToken { path: path.clone(), source })?;
    let record = TokenRecord { hash: token_hash(&token), user: None, created: now };
    persist.submit(vec![Op::PutToken(record)]).committed().await.map_err(|e| {
        StartError::AdminToken { path, source: std::io::Error::other(e.to_string()) }
    })?;
    tokens.insert(token_hash(&token), Principal::Admin);
    Ok(token)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Purges history older than the retention, once at start and then every hour.
async fn purge_history(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        hub.purge_history();
    }
}
