//! `ampel-bench route`: routing decisions per second on `POST /api/v1/route`.
//!
//! The server runs as a child process with users whose presence covers the rules that
//! matter (in a call, do not disturb, an absence target that forwards to a colleague, plain
//! available), then workers ask for decisions back to back over keep-alive connections for a
//! fixed time, alternating internal callers (user addresses) and external numbers that the
//! server normalises and looks up. It reports decisions per second, the latency seen by the
//! client, and the server's CPU time per decision.
//!
//! With `--sip-rate`, the same users are called over SIP instead: sipp (Debian package
//! `sip-tester`) sends INVITEs to the redirect server at that rate with the scenario
//! `bench/sip-redirect.xml`, and the figures are the final answers per second and the
//! server's CPU time per answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::server::{Server, Target};

/// What to run.
#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    /// The `ampel` binary to start.
    #[arg(long, default_value = "target/release/ampel")]
    server: std::path::PathBuf,
    /// Users in the directory.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Seconds of decisions.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight at most, one worker each.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Calls per second that sipp offers to the SIP redirect server instead of the HTTP
    /// workers; `--concurrency` bounds the calls open at once.
    #[arg(long)]
    sip_rate: Option<u32>,
    /// The sipp scenario for `--sip-rate`.
    #[arg(long, default_value = "bench/sip-redirect.xml")]
    sip_scenario: std::path::PathBuf,
}

fn user(i: usize) -> String {
    format!("r{i}@example.com")
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: RouteArgs) -> anyhow::Result<()> {
    if args.users < 2 || args.concurrency == 0 {
        bail!("--users must be at least 2 and --concurrency at least 1");
    }
    // The SIP address is read from the server's log, which says it at `info`.
    let log = if args.sip_rate.is_some() { "info" } else { "warn" };
    let target = Target::Ampel { binary: args.server.clone(), log: log.into() };
    let server = Server::start(&target).await?;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    prepare(&client, &base, &server.admin_token, args.users).await?;
    if let Some(rate) = args.sip_rate {
        return sip(&server, &args, rate).await;
    }

    let before = server.sample()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let shared = Arc::new((client, base, server.admin_token.clone()));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|w| {
            tokio::spawn(worker(Arc::clone(&shared), w, args.concurrency, args.users, deadline))
        })
        .collect();
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut actions = std::collections::BTreeMap::<String, u64>::new();
    for worker in workers {
        let (histogram, counted) = worker.await??;
        latencies.add(histogram)?;
        for (action, n) in counted {
            *actions.entry(action).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = server.sample()?;

    let decisions = latencies.len();
    let cpu = after.cpu_s - before.cpu_s;
    println!("routing decisions on POST /api/v1/route");
    println!("  users {}, concurrency {}, {elapsed:.1} s", args.users, args.concurrency);
    println!("  decisions      {decisions} ({:.0}/s)", decisions as f64 / elapsed);
    println!("  actions        {actions:?}");
    println!(
        "  latency (µs)   p50 {}  p90 {}  p99 {}  max {}",
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.9),
        latencies.value_at_quantile(0.99),
        latencies.max()
    );
    println!(
        "  server CPU     {cpu:.2} s, {:.1} µs per decision",
        cpu * 1e6 / decisions.max(1) as f64
    );
    Ok(())
}

/// Users with phones; every third in a call (half of those forward to a colleague instead),
/// every fifth on do-not-disturb, the others with an absence target (a colleague) and the next
/// one on the VIP list.
async fn prepare(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    users: usize,
) -> anyhow::Result<()> {
    let send = |method: reqwest::Method, path: String, body: serde_json::Value| {
        let request =
            client.request(method, format!("{base}{path}")).bearer_auth(admin).json(&body);
        async move {
            let response = request.send().await?;
            if !response.status().is_success() {
                bail!("{path}: {}", response.text().await.unwrap_or_default());
            }
            anyhow::Ok(())
        }
    };
    let created = futures_util::stream::iter(0..users)
        .map(|i| {
            let body = json!({"id": user(i), "name": format!("User {i}"), "phone": format!("+49301{i:06}")});
            send(reqwest::Method::POST, "/api/v1/users".into(), body)
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>().context("creating users")?;
    let shaped = futures_util::stream::iter(0..users)
        .map(|i| {
            let id = user(i);
            let (method, path, body) = if i.is_multiple_of(3) {
                let event = json!({"user": id, "call_id": "bench", "state": "connected"});
                (reqwest::Method::POST, "/api/v1/telephony/events".to_owned(), event)
            } else if i.is_multiple_of(5) {
                let status = json!({"availability": "do-not-disturb"});
                (reqwest::Method::PUT, format!("/api/v1/users/{id}/presence/manual"), status)
            } else {
                let next = user((i + 1) % users);
                let settings =
                    json!({"absence_target": format!("user:{next}"), "lists": {"vip": [next]}});
                (reqwest::Method::PUT, format!("/api/v1/users/{id}/routing"), settings)
            };
            send(method, path, body)
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    shaped.into_iter().collect::<anyhow::Result<Vec<_>>>().context("setting presence")?;
    // Every sixth user is in a call and forwards to a colleague instead of answering busy.
    let forwarding = futures_util::stream::iter((0..users).step_by(6))
        .map(|i| {
            let settings = json!({"busy_target": format!("user:{}", user((i + 1) % users))});
            send(reqwest::Method::PUT, format!("/api/v1/users/{}/routing", user(i)), settings)
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    forwarding.into_iter().collect::<anyhow::Result<Vec<_>>>().context("setting busy targets")?;
    Ok(())
}

type Counted = (Histogram<u64>, std::collections::BTreeMap<String, u64>);

async fn worker(
    shared: Arc<(reqwest::Client, String, String)>,
    index: usize,
    workers: usize,
    users: usize,
    deadline: Instant,
) -> anyhow::Result<Counted> {
    let (client, base, admin) = &*shared;
    let url = format!("{base}/api/v1/route");
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut actions = std::collections::BTreeMap::new();
    let mut n = index;
    while Instant::now() < deadline {
        let to = user(n % users);
        let from = if n.is_multiple_of(2) {
            user((n + 7) % users)
        } else {
            format!("089 {:07}", n % 10_000_000)
        };
        let sent = Instant::now();
        let response = client
            .post(&url)
            .bearer_auth(admin)
            .json(&json!({"from": from, "to": to}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("route {from} -> {to}: {}", response.text().await.unwrap_or_default());
        }
        let body: serde_json::Value = response.json().await?;
        histogram.record(sent.elapsed().as_micros().max(1) as u64)?;
        let action = body["action"].as_str().unwrap_or("?").to_owned();
        *actions.entry(action).or_default() += 1;
        n += workers;
    }
    Ok((histogram, actions))
}

/// Calls the users over SIP with sipp and prints the answers per second.
async fn sip(server: &Server, args: &RouteArgs, rate: u32) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(server.log_path())?;
    let addr = log
        .lines()
        .filter(|l| l.contains("sip is serving"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("sip=")))
        .context("the server's log names no SIP address")?
        .to_owned();
    let dir = tempfile::tempdir()?;
    // One line per call: the callee, then the caller, alternating colleagues and external
    // numbers as the HTTP workers do.
    let calls = dir.path().join("calls.csv");
    let mut lines = String::from("SEQUENTIAL\n");
    for n in 0..args.users * 10 {
        let from = if n.is_multiple_of(2) {
            user((n + 7) % args.users)
        } else {
            format!("+4989{:07}@pbx.example.com", n % 10_000_000)
        };
        lines.push_str(&format!("{};{from};\n", user(n % args.users)));
    }
    std::fs::write(&calls, lines)?;
    let screen = dir.path().join("screen.log");
    let total = (f64::from(rate) * args.duration).round().max(1.0) as u64;
    let mut command = tokio::process::Command::new("sipp");
    command
        .arg(&addr)
        .arg("-sf")
        .arg(&args.sip_scenario)
        .arg("-inf")
        .arg(&calls)
        .args(["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-trace_screen", "-screen_file"])
        .arg(&screen)
        .args(["-r", &rate.to_string(), "-m", &total.to_string()])
        .args(["-l", &args.concurrency.to_string()])
        .args(["-timeout", &format!("{}s", args.duration.ceil() as u64 + 30)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let before = server.sample()?;
    let started = Instant::now();
    let status = command.status().await.context("cannot run sipp (Debian package sip-tester)")?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = server.sample()?;
    let text = std::fs::read_to_string(&screen).unwrap_or_default();
    let count = |label: &str| -> u64 {
        text.lines()
            .filter(|l| l.trim_start().starts_with(label))
            .filter_map(|l| l.rsplit('|').next()?.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    let (answered, failed) = (count("Successful call"), count("Failed call"));
    let response_time = text
        .lines()
        .rfind(|l| l.trim_start().starts_with("Response Time"))
        .unwrap_or("")
        .trim()
        .to_owned();
    let cpu = after.cpu_s - before.cpu_s;
    println!("routing decisions on the SIP redirect server (sipp, UDP)");
    println!(
        "  users {}, offered {rate}/s, at most {} open, {elapsed:.1} s, sipp {status}",
        args.users, args.concurrency
    );
    println!("  answered       {answered} ({:.0}/s), failed {failed}", answered as f64 / elapsed);
    println!("  sipp           {response_time}");
    println!(
        "  server CPU     {cpu:.2} s, {:.1} µs per decision",
        cpu * 1e6 / answered.max(1) as f64
    );
    Ok(())
}
