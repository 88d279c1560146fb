//! The `ampel` command: runs the server, checks and renders the policy, replays timelines, and
//! talks to a running server as a client.

/// jemalloc instead of the system allocator: the server allocates and frees many small
/// buffers on different threads, which costs glibc malloc about a tenth of the server's time
/// (figures in BENCHMARKS.md §2). The load tool's bare broadcaster uses it too.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod calendar;
mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ampel_core::Policy;
use ampel_core::policy::render::{Lang, render};
use ampel_core::timeline;
use anyhow::Context;
use clap::{Parser, Subcommand};
use jiff::Timestamp;

/// Ampel, a presence server for unified communications.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server with its embedded database.
    Serve(ServeArgs),
    /// Checks or renders a policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Replays a timeline of facts (JSON Lines) and prints the presence after each change.
    Simulate {
        /// The timeline file.
        timeline: PathBuf,
        /// The policy to replay it under; the built-in default when left out.
        #[arg(long, env = "AMPEL_CONFIG")]
        config: Option<PathBuf>,
        /// Follow changes that happen by themselves up to this instant (RFC 3339).
        #[arg(long)]
        until: Option<Timestamp>,
        /// Print JSON, one step per line.
        #[arg(long)]
        json: bool,
    },
    /// Reads an iCalendar file or URL as the server does.
    #[command(subcommand)]
    Calendar(calendar::Command),
    #[command(flatten)]
    Client(client::Command),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where the database and the admin token are kept.
    #[arg(long, env = "AMPEL_DATA", default_value = "./ampel-data")]
    data: PathBuf,
    /// The HTTP address to listen on.
    #[arg(long, env = "AMPEL_HTTP", default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The policy file; the built-in default when left out.
    #[arg(long, env = "AMPEL_CONFIG")]
    config: Option<PathBuf>,
    /// The SIP address to listen on (UDP and TCP); `[sip] listen` in the server configuration
    /// file, or 127.0.0.1:5060, when left out.
    #[arg(long, env = "AMPEL_SIP")]
    sip: Option<SocketAddr>,
    /// The server configuration file (how Ampel reaches other systems); none by default.
    #[arg(long, env = "AMPEL_SERVER_CONFIG")]
    server_config: Option<PathBuf>,
    /// The most HTTP connections open at once, watchers included.
    #[arg(long, env = "AMPEL_MAX_CONNECTIONS", default_value_t = ampel_server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "AMPEL_LOG_JSON")]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Checks a policy file and reports the first fault with its line and column.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Prints the policy as a plain-language page for employees.
    Render {
        /// `de` or `en`.
        #[arg(long, default_value = "en")]
        lang: Lang,
        /// The policy file; the built-in default when left out.
        #[arg(long, env = "AMPEL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Prints the built-in default policy with its documentation.
    Default,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Policy(command) => policy(command),
        Command::Simulate { timeline, config, until, json } => {
            simulate(&timeline, config, until, json)
        }
        Command::Calendar(command) => calendar::run(command),
        Command::Client(command) => client::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ampel: {}", describe_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause only when the message before does not already say it.
fn describe_error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

/// Where SIP listens by default.
const DEFAULT_SIP: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 5060));

fn load_policy(path: Option<&PathBuf>) -> anyhow::Result<Policy> {
    let Some(path) = path else { return Ok(Policy::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Policy::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn load_server_file(
    path: Option<&PathBuf>,
) -> anyhow::Result<ampel_server::server_file::ServerFile> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ampel_server::server_file::ServerFile::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn serve(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    init_logging(args.log_json);
    let policy = load_policy(args.config.as_ref())?;
    let mut file = load_server_file(args.server_config.as_ref())?;
    file.sip.listen = args.sip.or(file.sip.listen).or(Some(DEFAULT_SIP));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let config = ampel_server::Config {
            data_dir: args.data.clone(),
            http: args.http,
            policy,
            clock: Arc::new(ampel_server::clock::SystemClock),
            max_connections: args.max_connections,
            file,
        };
        let running = ampel_server::start(config).await?;
        // A server goes on serving when whoever started it stops reading its output, so the
        // writes below may fail; "serves on" comes last, as the line to wait for.
        if let Some(token) = &running.new_admin_token {
            let path = args.data.join("admin.token");
            say(format_args!("Administrator token (shown once, also in {}):", path.display()));
            say(format_args!("{token}"));
        }
        if let Some(sip) = &running.sip {
            say(format_args!("Ampel serves SIP on {} (UDP and TCP)", sip.local));
        }
        say(format_args!("Ampel serves on http://{}", running.http));
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes a line to standard output, ignoring a closed or full pipe.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Waits for Ctrl-C or, on Unix, SIGTERM (what service managers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMPEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn policy(command: PolicyCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            // The time zone is checked here, not in the pure core, which has no time zone data.
            let checked = Policy::from_toml(&text).map_err(|e| e.to_string()).and_then(|p| {
                let tz = &p.routing.timezone;
                match jiff::tz::TimeZone::get(tz) {
                    Ok(_) => Ok(p),
                    Err(_) => Err(format!("routing.timezone `{tz}` is not a known time zone")),
                }
            });
            match checked {
                Ok(_) => {
                    println!("{}: the policy is valid", file.display());
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
        PolicyCommand::Render { lang, config } => {
            print!("{}", render(&load_policy(config.as_ref())?, lang));
            Ok(std::process::ExitCode::SUCCESS)
        }
        PolicyCommand::Default => {
            print!("{}", ampel_core::policy::DEFAULT_TOML);
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

fn simulate(
    path: &PathBuf,
    config: Option<PathBuf>,
    until: Option<Timestamp>,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let policy = load_policy(config.as_ref())?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let events = timeline::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let steps = timeline::simulate(&events, &policy, until);
    if json {
        for step in &steps {
            println!("{}", serde_json::to_string(step)?);
        }
    } else {
        print!("{}", timeline::render_steps(&steps));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
