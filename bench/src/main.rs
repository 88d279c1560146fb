//! `ampel-bench`: measures Ampel's server under a steady stream of presence changes on loopback,
//! and the bare WebSocket broadcaster it is compared with.
//!
//! A run starts the server as a child process, creates users, tokens and device sessions over
//! REST, opens the watching WebSocket connections and subscribes them, waits for every
//! snapshot, and then runs phases of changes for a fixed time each: the first at a given rate or
//! as fast as the server acknowledges, the next at half the rate the first achieved. It reports
//! notifications per second, latency percentiles, the server's memory per subscription and its
//! CPU time per notification. Every loop is bounded in time and all traffic stays on
//! 127.0.0.1. See `BENCHMARKS.md` at the root for the commands and the figures.

/// The allocator of the `ampel` binary, so that the bare broadcaster, which runs in this
/// process, is compared with Ampel like for like.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod broadcaster;
mod load;
mod report;
mod route;
mod server;
mod setup;
mod watchers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use load::Load;
use report::{Memory, Phase, Run};
use server::{Server, Target, Usage};
use setup::Sizes;
use watchers::Watchers;

/// Load tool for Ampel's server and the bare WebSocket broadcaster it is compared with.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Bench(Bench),
    /// Runs the bare broadcaster; started by `bare` and `compare`.
    #[command(hide = true)]
    Broadcaster {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        http: SocketAddr,
        #[command(flatten)]
        options: broadcaster::Options,
    },
}

/// The commands that put load on a server.
#[derive(Debug, Subcommand)]
enum Bench {
    /// Measures Ampel's server (`ampel serve`, started as a child process).
    Ampel(AmpelArgs),
    /// Measures the bare broadcaster (this binary, started as a child process).
    Bare(BareArgs),
    /// Measures routing decisions per second on Ampel's `POST /api/v1/route`.
    Route(route::RouteArgs),
    /// Measures Ampel (flat out, then paced at the rate it achieved, then at half of it), then
    /// the bare broadcaster paced at the same rates, and compares their CPU time per
    /// notification.
    Compare {
        #[command(flatten)]
        ampel: AmpelArgs,
        #[command(flatten)]
        bare: broadcaster::Options,
    },
}

#[derive(Debug, Args)]
struct BareArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    options: broadcaster::Options,
}

#[derive(Debug, Args)]
struct AmpelArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The `ampel` binary to start.
    #[arg(long, default_value = "target/release/ampel")]
    server: PathBuf,
    /// The server's log filter (`AMPEL_LOG`); its log goes to a file in the data directory.
    #[arg(long, default_value = "info")]
    server_log: String,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Users in the directory.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Watching WebSocket connections.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Subscriptions over all connections, spread evenly over connections and users.
    #[arg(long, default_value_t = 100_000)]
    subscriptions: usize,
    /// Seconds of changes in each phase.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Changes per second in the first phase; 0 sends them as fast as they are acknowledged.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Leaves out the phase at half the rate the first phase achieved.
    #[arg(long)]
    no_half: bool,
    /// Further phases at these rates, changes per second (`--also 15000,20000`).
    #[arg(long, value_delimiter = ',')]
    also: Vec<f64>,
    /// Changes in flight at most: one worker each, each with its own share of the users.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// HTTP clients (connection pools) the workers share.
    #[arg(long, default_value_t = 8)]
    http_clients: usize,
    /// Requests and handshakes in flight while setting up.
    #[arg(long, default_value_t = 32)]
    setup_concurrency: usize,
    /// Also writes the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How fast a phase sends.
#[derive(Debug, Clone, Copy)]
enum Rate {
    /// As fast as acknowledged.
    Max,
    /// Changes per second.
    Fixed(f64),
    /// This share of what the first phase achieved.
    OfFirst(f64),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Broadcaster { data, http, options } => broadcaster::serve(data, http, options),
        Command::Bench(command) => tokio::runtime::Runtime::new()?.block_on(async {
            // On an interrupt the run is dropped, which stops the server and removes its data.
            tokio::select! {
                result = bench(command) => result,
                signal = interrupted() => Err(anyhow::anyhow!("stopped by {}", signal?)),
            }
        }),
    }
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok("SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
    }
}

async fn bench(command: Bench) -> anyhow::Result<()> {
    match command {
        Bench::Ampel(args) => {
            let target = Target::Ampel { binary: args.server, log: args.server_log };
            let run = measure(&target, &args.run, &first_phases(&args.run, false)).await?;
            finish(&args.run, &[run])
        }
        Bench::Bare(args) => {
            let target = Target::Bare(args.options);
            let run = measure(&target, &args.run, &first_phases(&args.run, false)).await?;
            finish(&args.run, &[run])
        }
        Bench::Compare { ampel, bare } => compare(ampel, bare).await,
        Bench::Route(args) => route::run(args).await,
    }
}

/// The phases of a standalone run; `paced` adds one at the rate a flat-out first phase achieved.
fn first_phases(args: &RunArgs, paced: bool) -> Vec<(String, Rate)> {
    let first = if args.rate > 0.0 { Rate::Fixed(args.rate) } else { Rate::Max };
    let mut phases = vec![("main".to_owned(), first)];
    if paced && matches!(first, Rate::Max) {
        phases.push(("paced".to_owned(), Rate::OfFirst(1.0)));
    }
    if !args.no_half {
        phases.push(("half".to_owned(), Rate::OfFirst(0.5)));
    }
    phases.extend(args.also.iter().map(|r| (format!("at {r:.0}/s"), Rate::Fixed(*r))));
    phases
}

async fn compare(args: AmpelArgs, options: broadcaster::Options) -> anyhow::Result<()> {
    let target = Target::Ampel { binary: args.server.clone(), log: args.server_log.clone() };
    let ampel = measure(&target, &args.run, &first_phases(&args.run, true)).await?;

    // The bare broadcaster runs flat out first, then at each rate Ampel was paced at, so that
    // the CPU per notification is compared at equal load and with the same shape of load: both
    // batch more notifications per write as load grows, and a paced load (its workers wake on
    // the same timer tick) batches better than one sent as fast as acknowledged. A flat-out
    // phase of Ampel is therefore compared through the paced phase at the rate it achieved.
    let paced: Vec<&Phase> = ampel.phases.iter().filter(|p| p.target_rate.is_some()).collect();
    let mut phases = vec![("max".to_owned(), Rate::Max)];
    phases.extend(
        paced.iter().map(|p| (format!("as ampel {}", p.label), Rate::Fixed(p.updates_per_s))),
    );
    let bare = measure(&Target::Bare(options), &args.run, &phases).await?;

    println!("== CPU per notification, Ampel against the bare broadcaster at the same paced rate");
    for (a, b) in paced.iter().zip(&bare.phases[1..]) {
        println!(
            "{:>5}: {:.0} changes/s, ampel {:.2} µs, bare {:.2} µs, ratio {:.2}",
            a.label,
            a.updates_per_s,
            a.server_cpu_us_per_notification,
            b.server_cpu_us_per_notification,
            a.server_cpu_us_per_notification / b.server_cpu_us_per_notification
        );
    }
    finish(&args.run, &[ampel, bare])
}

fn finish(args: &RunArgs, runs: &[Run]) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(runs)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One whole run against `target`: set-up, subscriptions, then each phase.
async fn measure(
    target: &Target,
    args: &RunArgs,
    phases: &[(String, Rate)],
) -> anyhow::Result<Run> {
    let sizes = Sizes {
        users: args.users,
        connections: args.connections,
        subscriptions: args.subscriptions,
    };
    sizes.check()?;
    let quiet = quiet_machine().await?;
    if quiet > 0.2 {
        eprintln!("warning: other processes keep {quiet:.2} cores busy; the figures will show it");
    }

    eprintln!("{}: starting the server", target.name());
    let server = Server::start(target).await?;
    let client = reqwest::Client::new();
    let ready = get_ready(&server, &client, args, sizes).await?;

    let load = Load::new(
        server.addr,
        &server.admin_token,
        &ready.prepared.users,
        args.http_clients,
        ready.base,
    );
    let mut results: Vec<Phase> = Vec::new();
    for (label, rate) in phases {
        let rate = match rate {
            Rate::Max => None,
            Rate::Fixed(r) => Some(*r),
            Rate::OfFirst(share) => {
                Some(results.first().context("no first phase")?.updates_per_s * share)
            }
        };
        eprintln!(
            "  phase {label}: {}",
            rate.map_or("as fast as acknowledged".to_owned(), |r| format!("{r:.0} changes/s"))
        );
        let phase = run_phase(&server, &client, &ready.watchers, &load, args, label, rate).await?;
        results.push(phase);
    }
    let end = server.sample()?;
    ready.watchers.close().await;

    let [before, connected, subscribed] = ready.usage.map(|u| u.rss_kib);
    let run = Run {
        target: target.name().to_owned(),
        variant: target.variant(),
        users: args.users,
        connections: args.connections,
        subscriptions: args.subscriptions,
        concurrency: args.concurrency,
        setup_s: ready.setup_s,
        subscribe_s: ready.subscribe_s,
        idle_cpu_percent: ready.idle_cpu_percent,
        busy_cores_before: quiet,
        memory: Memory::new([before, connected, subscribed, end.rss_kib], sizes),
        phases: results,
    };
    println!("{}", run.text());
    Ok(run)
}

/// A server with its users, tokens, sessions and subscribed watchers.
struct Ready {
    prepared: setup::Prepared,
    watchers: Watchers,
    /// The instant every time stamp of the run counts from.
    base: Instant,
    setup_s: f64,
    subscribe_s: f64,
    idle_cpu_percent: f64,
    /// The server's usage before the connections, with them, and with the subscriptions.
    usage: [Usage; 3],
}

/// Sets up the directory, connects and subscribes the watchers, and waits for every snapshot.
async fn get_ready(
    server: &Server,
    client: &reqwest::Client,
    args: &RunArgs,
    sizes: Sizes,
) -> anyhow::Result<Ready> {
    let base = Instant::now();
    let in_flight = args.setup_concurrency;
    let prepared = setup::prepare(client, server.addr, &server.admin_token, sizes, in_flight)
        .await
        .with_context(|| format!("setting up failed; see {}", server.log_path().display()))?;
    let setup_s = base.elapsed().as_secs_f64();
    let before = settled(server).await?;

    let mut watchers =
        Watchers::connect(server.addr, &prepared.connections, base, in_flight).await?;
    let connected = settled(server).await?;
    eprintln!("  {} connections open", prepared.connections.len());

    let started = Instant::now();
    watchers.subscribe(&prepared.connections, &prepared.users, in_flight).await?;
    watchers.wait_for(args.subscriptions as u64, Duration::from_secs(300)).await?;
    let subscribe_s = started.elapsed().as_secs_f64();
    let subscribed = settled(server).await?;
    eprintln!("  {} snapshots received in {subscribe_s:.1} s", args.subscriptions);

    tokio::time::sleep(IDLE).await;
    let idle_cpu_percent = (server.sample()?.cpu_s - subscribed.cpu_s) / IDLE.as_secs_f64() * 100.0;
    Ok(Ready {
        prepared,
        watchers,
        base,
        setup_s,
        subscribe_s,
        idle_cpu_percent,
        usage: [before, connected, subscribed],
    })
}

/// How many cores the machine keeps busy without this run, over one second.
async fn quiet_machine() -> anyhow::Result<f64> {
    let (busy0, own0) = (server::machine_busy_s()?, Usage::own()?.cpu_s);
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(server::machine_busy_s()? - busy0 - (Usage::own()?.cpu_s - own0))
}

/// How long the server's CPU is watched while nothing changes.
const IDLE: Duration = Duration::from_secs(2);

/// The server's usage after a short pause, so that work still in flight has finished.
async fn settled(server: &Server) -> anyhow::Result<Usage> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.sample()
}

/// One phase: changes for the configured time, then waiting until the notifications stop.
async fn run_phase(
    server: &Server,
    client: &reqwest::Client,
    watchers: &Watchers,
    load: &Load,
    args: &RunArgs,
    label: &str,
    rate: Option<f64>,
) -> anyhow::Result<Phase> {
    let counters = &watchers.counters;
    let (server0, own0, machine0) = (server.sample()?, Usage::own()?, server::machine_busy_s()?);
    let metrics0 = server::scrape(client, server.addr).await;
    let (messages0, bytes0) = (counters.messages.load(Relaxed), counters.bytes.load(Relaxed));
    let started = Instant::now();

    let outcome = load.run(args.concurrency, rate, Duration::from_secs_f64(args.duration)).await;
    let last = drain(watchers, messages0 + outcome.expected).await;

    let (server1, own1, machine1) = (server.sample()?, Usage::own()?, server::machine_busy_s()?);
    let metrics = server::scrape(client, server.addr).await.since(metrics0);
    let notifications = counters.messages.load(Relaxed) - messages0;
    let bytes = counters.bytes.load(Relaxed) - bytes0;
    let delivering_s = last.duration_since(started).as_secs_f64();
    let server_cpu_s = server1.cpu_s - server0.cpu_s;
    let latency = report::latencies(&watchers.take_receipts(), &outcome.acks, outcome.seqs.clone());
    let per = |x: f64, n: u64| if n == 0 { 0.0 } else { x / n as f64 };
    Ok(Phase {
        label: label.to_owned(),
        target_rate: rate,
        updates: outcome.ok,
        failed: outcome.failed,
        first_failure: outcome.first_failure,
        sending_s: outcome.sending.as_secs_f64(),
        updates_per_s: outcome.ok as f64 / outcome.sending.as_secs_f64(),
        notifications,
        expected: outcome.expected,
        delivering_s,
        notifications_per_s: notifications as f64 / delivering_s,
        message_bytes: per(bytes as f64, notifications),
        latency,
        server_cpu_s,
        server_cpu_us_per_notification: per(server_cpu_s * 1e6, notifications),
        client_cpu_s: own1.cpu_s - own0.cpu_s,
        other_cpu_s: (machine1 - machine0)
            - (server1.cpu_s - server0.cpu_s)
            - (own1.cpu_s - own0.cpu_s),
        server_queued: metrics.notifications,
        server_coalesced: metrics.coalesced,
        store_commits: metrics.store_commits,
    })
}

/// Waits until `expected` messages arrived or none arrived for a second (30 s at most), and
/// returns when the last one arrived.
async fn drain(watchers: &Watchers, expected: u64) -> Instant {
    let started = Instant::now();
    let mut seen = watchers.counters.messages.load(Relaxed);
    let mut last = Instant::now();
    while seen < expected
        && last.elapsed() < Duration::from_secs(1)
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = watchers.counters.messages.load(Relaxed);
        if now != seen {
            seen = now;
            last = Instant::now();
        }
    }
    last
}
