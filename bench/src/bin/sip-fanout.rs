//! `sip-fanout`: one PUBLISH fanned out to N SIP watchers, on loopback.
//!
//! It starts `ampel serve` as a child process with SIP on a free port, creates a publisher and
//! N watcher users over REST, subscribes every watcher to the publisher's presence from a pool
//! of UDP sockets (each NOTIFY is answered with 200, as a phone does), and waits for every
//! first NOTIFY. Then the publisher PUBLISHes a new note, and the tool counts the NOTIFYs that
//! carry it and times each from the PUBLISH. The first phase publishes as soon as the previous
//! fan-out has arrived (the highest rate); the second publishes at half that rate. It reports
//! NOTIFYs per second, latency percentiles and NOTIFYs that never arrived (UDP drops).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// One PUBLISH fanned out to N SIP watchers.
#[derive(Debug, Parser)]
struct Args {
    /// The `ampel` binary (a release build).
    #[arg(long, default_value = "target/release/ampel")]
    ampel: PathBuf,
    /// How many watchers subscribe to the publisher.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// How many UDP sockets the watchers share.
    #[arg(long, default_value_t = 64)]
    sockets: usize,
    /// How many PUBLISHes each phase sends.
    #[arg(long, default_value_t = 20)]
    publishes: usize,
}

/// A started `ampel serve`, killed on drop.
struct Ampel {
    child: Child,
    http: SocketAddr,
    sip: SocketAddr,
    token: String,
    _data: tempfile::TempDir,
}

impl Drop for Ampel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

async fn start(binary: &PathBuf) -> anyhow::Result<Ampel> {
    let data = tempfile::tempdir()?;
    let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let config = data.path().join("server.toml");
    std::fs::write(&config, "[sip]\nauthenticate = false\nmax_expires = 7200\n")?;
    let child = Command::new(binary)
        .args(["serve", "--data"])
        .arg(data.path().join("d"))
        .args(["--http", &http.to_string(), "--sip", &sip.to_string(), "--server-config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let token_file = data.path().join("d/admin.token");
    for _ in 0..100 {
        if let Ok(token) = std::fs::read_to_string(&token_file)
            && reqwest::get(format!("http://{http}/healthz")).await.is_ok()
        {
            return Ok(Ampel { child, http, sip, token: token.trim().to_owned(), _data: data });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("ampel did not start")
}

async fn create_users(ampel: &Ampel, n: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let ids: Vec<String> = std::iter::once("pub@bench.example".to_owned())
        .chain((0..n).map(|i| format!("w{i}@bench.example")))
        .collect();
    for chunk in ids.chunks(64) {
        let requests = chunk.iter().map(|id| {
            client
                .post(format!("http://{}/api/v1/users", ampel.http))
                .bearer_auth(&ampel.token)
                .json(&serde_json::json!({"id": id, "name": id}))
                .send()
        });
        for r in futures_util::future::join_all(requests).await {
            let status = r?.status();
            if !status.is_success() {
                bail!("creating a user answered {status}");
            }
        }
    }
    Ok(())
}

/// What the watchers saw: for each publish sequence number, its send instant, and the latency
/// histogram and count of the NOTIFYs that carried it.
struct Seen {
    sent: Mutex<Vec<Option<Instant>>>,
    histogram: Mutex<Histogram<u64>>,
    notifies: AtomicU64,
    per_seq: Vec<AtomicU64>,
}

/// Reads NOTIFYs on one socket, answers each with 200, and records the sequence number in its
/// note.
async fn watch(socket: Arc<UdpSocket>, server: SocketAddr, seen: Arc<Seen>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else { return };
        let at = Instant::now();
        let text = String::from_utf8_lossy(&buf[..n]);
        if !text.starts_with("NOTIFY") {
            continue;
        }
        if let Some(seq) = text.split("seq-").nth(1).and_then(|r| r.split('<').next())
            && let Ok(seq) = seq.parse::<usize>()
        {
            let sent = seen.sent.lock().await.get(seq).copied().flatten();
            if let Some(sent) = sent {
                let micros = at.duration_since(sent).as_micros() as u64;
                let _ = seen.histogram.lock().await.record(micros.max(1));
            }
            if let Some(count) = seen.per_seq.get(seq) {
                count.fetch_add(1, Relaxed);
            }
        }
        seen.notifies.fetch_add(1, Relaxed);
        let _ = socket.send_to(ok(&text).as_bytes(), server).await;
    }
}

/// The 200 to a NOTIFY.
fn ok(notify: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in notify.lines() {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if matches!(name.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
            out.push_str(line.trim_end());
            out.push_str("\r\n");
        }
        if line.trim().is_empty() {
            break;
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

fn subscribe(i: usize, local: SocketAddr) -> String {
    format!(
        "SUBSCRIBE sip:pub@bench.example SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKs{i}\r\n\
         From: <sip:w{i}@bench.example>;tag=w{i}\r\nTo: <sip:pub@bench.example>\r\n\
         Call-ID: sub-{i}@bench\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w{i}@{local}>\r\n\
         Event: presence\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n"
    )
}

fn publish(seq: usize, local: SocketAddr) -> String {
    let body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:pub@bench.example\">\
         <tuple id=\"t\"><status><basic>open</basic></status><note>seq-{seq}</note></tuple></presence>"
    );
    format!(
        "PUBLISH sip:pub@bench.example SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKp{seq}\r\n\
         From: <sip:pub@bench.example>;tag=p\r\nTo: <sip:pub@bench.example>\r\nCall-ID: pub-{seq}@bench\r\n\
         CSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits until `count` reaches `target` or `limit` passes; returns whether it did.
async fn wait_for(count: impl Fn() -> u64, target: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while count() < target {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    true
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ampel = start(&args.ampel).await?;
    create_users(&ampel, args.watchers).await?;
    let total = 2 * args.publishes + 1;
    let seen = Arc::new(Seen {
        sent: Mutex::new(vec![None; total]),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        notifies: AtomicU64::new(0),
        per_seq: (0..total).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut sockets = Vec::new();
    for _ in 0..args.sockets.min(args.watchers).max(1) {
        let socket = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
        tokio::spawn(watch(Arc::clone(&socket), ampel.sip, Arc::clone(&seen)));
        sockets.push(socket);
    }
    for i in 0..args.watchers {
        let socket = &sockets[i % sockets.len()];
        socket.send_to(subscribe(i, socket.local_addr()?).as_bytes(), ampel.sip).await?;
        if i % 200 == 199 {
            // Subscriptions arrive in bursts a server would see at a start of the working day.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let n = args.watchers as u64;
    if !wait_for(|| seen.notifies.load(Relaxed), n, Duration::from_secs(60)).await {
        bail!("only {} of {n} first NOTIFYs arrived", seen.notifies.load(Relaxed));
    }
    let publisher = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let local = publisher.local_addr()?;
    println!("watchers {n}, UDP sockets {}", sockets.len());

    let mut interval = None;
    for (phase, range) in
        [("fastest", 1..=args.publishes), ("half rate", args.publishes + 1..=2 * args.publishes)]
    {
        *seen.histogram.lock().await = Histogram::new_with_bounds(1, 60_000_000, 3)?;
        let before = seen.notifies.load(Relaxed);
        let start = Instant::now();
        for seq in range.clone() {
            let sent = Instant::now();
            seen.sent.lock().await[seq] = Some(sent);
            publisher.send_to(publish(seq, local).as_bytes(), ampel.sip).await?;
            let arrived =
                wait_for(|| seen.per_seq[seq].load(Relaxed), n, Duration::from_secs(5)).await;
            if !arrived {
                eprintln!(
                    "publish {seq}: {} of {n} NOTIFYs arrived",
                    seen.per_seq[seq].load(Relaxed)
                );
            }
            if let Some(every) = interval {
                let next = sent + every;
                tokio::time::sleep_until(next.into()).await;
            }
        }
        let elapsed = start.elapsed();
        let got = seen.notifies.load(Relaxed) - before;
        let expected = n * range.clone().count() as u64;
        let h = seen.histogram.lock().await;
        println!(
            "{phase}: {got} of {expected} NOTIFYs in {:.2} s = {:.0} NOTIFY/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; missing {}",
            elapsed.as_secs_f64(),
            got as f64 / elapsed.as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            expected.saturating_sub(got),
        );
        interval = Some(elapsed * 2 / range.count() as u32);
    }
    Ok(())
}
