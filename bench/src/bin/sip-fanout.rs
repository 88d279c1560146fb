//! `sip-fanout`: one PUBLISH fanned out to N SIP watchers, on loopback.
//!
//! It starts `ampel serve` as a child process with SIP on a free port, creates a publisher and
//! N watcher users over REST, subscribes every watcher to the publisher's presence from a pool
//! of UDP sockets (one per watcher up to `--sockets`; each NOTIFY is answered with 200 at once,
//! as a phone does), and waits for every first NOTIFY. Then the publisher PUBLISHes a new note,
//! and the tool counts the NOTIFYs that carry it and times each from the PUBLISH. The first
//! phase publishes as soon as the previous fan-out has arrived (the highest rate); the second
//! publishes at half that rate.
//!
//! Per phase it reports NOTIFYs per second, latency percentiles, NOTIFYs that never arrived,
//! retransmitted NOTIFYs (a CSeq seen again on a dialog), the datagrams the kernel dropped
//! for a full receive buffer during the phase (`RcvbufErrors` of `/proc/net/snmp`, counted for
//! the whole machine), and the CPU time the server and the tool used per NOTIFY (from
//! `/proc/PID/task/*/schedstat`), which other load on the machine disturbs less than the rates.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::net::UdpSocket;

/// One PUBLISH fanned out to N SIP watchers.
#[derive(Debug, Parser)]
struct Args {
    /// The `ampel` binary (a release build).
    #[arg(long, default_value = "target/release/ampel")]
    ampel: PathBuf,
    /// How many watchers subscribe to the publisher.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// The most UDP sockets the watchers use; with fewer sockets than watchers, several
    /// watchers share one address, as behind a proxy.
    #[arg(long, default_value_t = 4096)]
    sockets: usize,
    /// The receive buffer asked for on each watcher socket, in bytes (0: the system default;
    /// the kernel caps it at net.core.rmem_max).
    #[arg(long, default_value_t = 1 << 20)]
    rcvbuf: usize,
    /// How many PUBLISHes each phase sends.
    #[arg(long, default_value_t = 20)]
    publishes: usize,
    /// The second phase's rate in NOTIFYs per second (each PUBLISH fans out to every
    /// watcher); without it, half the rate the first phase reached.
    #[arg(long)]
    rate: Option<u64>,
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

async fn start(binary: &Path) -> anyhow::Result<Ampel> {
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

/// What the watchers saw.
struct Seen {
    /// When each PUBLISH was sent, in microseconds since `epoch` (0: not yet).
    sent: Vec<AtomicU64>,
    epoch: Instant,
    histogram: Mutex<Histogram<u64>>,
    /// NOTIFYs with a new CSeq on their dialog.
    notifies: AtomicU64,
    /// NOTIFYs whose CSeq the dialog had seen already.
    retransmissions: AtomicU64,
    /// Per PUBLISH, the watchers that got its note.
    per_seq: Vec<AtomicU64>,
    /// Per watcher, the highest CSeq seen.
    cseq: Vec<AtomicU32>,
    /// Per watcher, whether its subscription was answered with a NOTIFY.
    subscribed: Vec<AtomicBool>,
    subscribed_count: AtomicU64,
    /// Per PUBLISH, whether a 2xx came back.
    published: Vec<AtomicBool>,
    /// Per PUBLISH, whether its last attempt was refused (a 503 once the publisher's
    /// allowance of changes per second is used up).
    refused: Vec<AtomicBool>,
    refused_count: AtomicU64,
}

/// The value of the first header line called `name` in a SIP message's head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads NOTIFYs on one socket, answers each with 200, and records what it carried. It reads
/// the bytes once, for the few headers it needs: the watchers share the two cores with the
/// server, where real phones would each have their own, so every microsecond they spend here
/// is one the server does not get.
async fn watch(socket: Arc<UdpSocket>, server: SocketAddr, seen: Arc<Seen>) {
    let mut buf = vec![0u8; 65_536];
    let mut answer = Vec::with_capacity(1024);
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else { return };
        let at = seen.epoch.elapsed().as_micros() as u64;
        let message = &buf[..n];
        if !message.starts_with(b"NOTIFY ") {
            continue;
        }
        let Some(end) = memchr::memmem::find(message, b"\r\n\r\n") else { continue };
        let (head, body) = (&message[..end], &message[end + 4..]);
        let notify = ok(head, &mut answer);
        let _ = socket.send_to(&answer, server).await;
        if let Some(notify) = notify {
            record(notify, body, at, &seen);
        }
    }
}

/// The dialog and transaction a NOTIFY belongs to.
struct Notify {
    watcher: usize,
    cseq: u32,
}

fn record(notify: Notify, body: &[u8], at: u64, seen: &Seen) {
    let Some(last) = seen.cseq.get(notify.watcher) else { return };
    if last.fetch_max(notify.cseq, Relaxed) >= notify.cseq {
        seen.retransmissions.fetch_add(1, Relaxed);
        return;
    }
    seen.notifies.fetch_add(1, Relaxed);
    if !seen.subscribed[notify.watcher].swap(true, Relaxed) {
        seen.subscribed_count.fetch_add(1, Relaxed);
    }
    let seq =
        memchr::memmem::find(body, b"seq-").and_then(|i| number::<usize>(&body[i + 4..], b'<'));
    let Some(seq) = seq.filter(|s| *s < seen.per_seq.len()) else { return };
    let sent = seen.sent[seq].load(Relaxed);
    if sent != 0 {
        let micros = at.saturating_sub(sent).max(1);
        let _ = seen.histogram.lock().expect("histogram lock").record(micros);
    }
    seen.per_seq[seq].fetch_add(1, Relaxed);
}

/// Writes the 200 to the NOTIFY with this head into `out`; returns the NOTIFY's watcher (from
/// the Call-ID the tool gave its subscription) and CSeq, when it has both.
fn ok(head: &[u8], out: &mut Vec<u8>) -> Option<Notify> {
    out.clear();
    out.extend_from_slice(b"SIP/2.0 200 OK\r\n");
    let (mut watcher, mut cseq) = (None, None);
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        let copy = if name.eq_ignore_ascii_case(b"call-id") {
            watcher = value.strip_prefix(b"sub-").and_then(|v| number(v, b'@'));
            true
        } else if name.eq_ignore_ascii_case(b"cseq") {
            cseq = number(value, b' ');
            true
        } else {
            [&b"via"[..], b"from", b"to"].iter().any(|h| name.eq_ignore_ascii_case(h))
        };
        if copy {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Notify { watcher: watcher?, cseq: cseq? })
}

/// The number at the start of `bytes`, up to `stop`.
fn number<T: std::str::FromStr>(bytes: &[u8], stop: u8) -> Option<T> {
    let digits = bytes.split(|b| *b == stop).next()?;
    std::str::from_utf8(digits).ok()?.trim().parse().ok()
}

fn subscribe(i: usize, local: SocketAddr) -> String {
    format!(
        "SUBSCRIBE sip:pub@bench.example SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKs{i}\r\n\
         From: <sip:w{i}@bench.example>;tag=w{i}\r\nTo: <sip:pub@bench.example>\r\n\
         Call-ID: sub-{i}@bench\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w{i}@{local}>\r\n\
         Event: presence\r\nExpires: 7200\r\nContent-Length: 0\r\n\r\n"
    )
}

fn publish(seq: usize, local: SocketAddr, attempt: u32) -> String {
    let body = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:pub@bench.example\">\
         <tuple id=\"t\"><status><basic>open</basic></status><note>seq-{seq}</note></tuple></presence>"
    );
    format!(
        "PUBLISH sip:pub@bench.example SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKp{seq}.{attempt}\r\n\
         From: <sip:pub@bench.example>;tag=p\r\nTo: <sip:pub@bench.example>\r\nCall-ID: pub-{seq}@bench\r\n\
         CSeq: {cseq} PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len(),
        cseq = attempt + 1,
    )
}

/// Reads the publisher's responses and notes which PUBLISHes were answered.
async fn publisher_answers(socket: Arc<UdpSocket>, seen: Arc<Seen>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else { return };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
        let Some(seq) = header(text, "call-id")
            .and_then(|c| number::<usize>(c.strip_prefix("pub-")?.as_bytes(), b'@'))
            .filter(|s| *s < seen.published.len())
        else {
            continue;
        };
        if text.starts_with("SIP/2.0 2") {
            seen.published[seq].store(true, Relaxed);
        } else {
            seen.refused[seq].store(true, Relaxed);
            seen.refused_count.fetch_add(1, Relaxed);
        }
    }
}

/// A watcher socket with the receive buffer asked for.
fn watcher_socket(rcvbuf: usize) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if rcvbuf > 0 {
        socket.set_recv_buffer_size(rcvbuf)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// Datagrams the kernel dropped for a full receive buffer, on the whole machine.
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors");
    column.and_then(|c| values.split_whitespace().nth(c)?.parse().ok()).unwrap_or(0)
}

/// The CPU time a process's threads have used, in nanoseconds (the first field of each
/// thread's `schedstat`; finer than the clock ticks of `stat`).
fn cpu_nanos(pid: &str) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    threads
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
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

/// Subscribes every watcher; a watcher without a NOTIFY after a while subscribes again (the
/// same request, as a phone retransmits it), up to five times.
async fn subscribe_all(
    sockets: &[Arc<UdpSocket>],
    server: SocketAddr,
    seen: &Seen,
    n: usize,
) -> anyhow::Result<()> {
    for round in 0..5 {
        let mut sent = 0;
        for i in (0..n).filter(|i| !seen.subscribed[*i].load(Relaxed)) {
            let socket = &sockets[i % sockets.len()];
            socket.send_to(subscribe(i, socket.local_addr()?).as_bytes(), server).await?;
            sent += 1;
            if sent % 50 == 0 {
                // Subscriptions arrive in bursts, as at the start of a working day.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let limit = Duration::from_secs(10 << round);
        if wait_for(|| seen.subscribed_count.load(Relaxed), n as u64, limit).await {
            return Ok(());
        }
    }
    bail!("only {} of {n} first NOTIFYs arrived", seen.subscribed_count.load(Relaxed))
}

/// Counters read before and after a phase.
struct Marks {
    at: Instant,
    retransmissions: u64,
    drops: u64,
    server: u64,
    tool: u64,
}

impl Marks {
    fn now(seen: &Seen, server_pid: &str) -> Marks {
        Marks {
            at: Instant::now(),
            retransmissions: seen.retransmissions.load(Relaxed),
            drops: rcvbuf_errors(),
            server: cpu_nanos(server_pid),
            tool: cpu_nanos("self"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ampel = start(&args.ampel).await?;
    let server_pid = ampel.child.id().to_string();
    create_users(&ampel, args.watchers).await?;
    let total = 2 * args.publishes + 1;
    let n = args.watchers;
    let seen = Arc::new(Seen {
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        epoch: Instant::now(),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        notifies: AtomicU64::new(0),
        retransmissions: AtomicU64::new(0),
        per_seq: (0..total).map(|_| AtomicU64::new(0)).collect(),
        cseq: (0..n).map(|_| AtomicU32::new(0)).collect(),
        subscribed: (0..n).map(|_| AtomicBool::new(false)).collect(),
        subscribed_count: AtomicU64::new(0),
        published: (0..total).map(|_| AtomicBool::new(false)).collect(),
        refused: (0..total).map(|_| AtomicBool::new(false)).collect(),
        refused_count: AtomicU64::new(0),
    });
    let mut sockets = Vec::new();
    for _ in 0..args.sockets.min(n).max(1) {
        let socket = Arc::new(watcher_socket(args.rcvbuf)?);
        tokio::spawn(watch(Arc::clone(&socket), ampel.sip, Arc::clone(&seen)));
        sockets.push(socket);
    }
    let rcvbuf = socket2::SockRef::from(&*sockets[0]).recv_buffer_size()?;
    subscribe_all(&sockets, ampel.sip, &seen, n).await?;
    let publisher = Arc::new(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
    tokio::spawn(publisher_answers(Arc::clone(&publisher), Arc::clone(&seen)));
    let local = publisher.local_addr()?;
    println!(
        "watchers {n}, UDP sockets {} (receive buffer {} KiB each), load average {}",
        sockets.len(),
        rcvbuf / 1024,
        load_average()
    );

    let mut interval = None;
    let mut republished = 0;
    let second = match args.rate {
        Some(rate) => format!("at {rate} NOTIFY/s"),
        None => "half rate".to_owned(),
    };
    for (phase, range) in [
        ("fastest", 1..=args.publishes),
        (second.as_str(), args.publishes + 1..=2 * args.publishes),
    ] {
        *seen.histogram.lock().expect("histogram lock") =
            Histogram::new_with_bounds(1, 60_000_000, 3)?;
        let before = Marks::now(&seen, &server_pid);
        for seq in range.clone() {
            let sent = Instant::now();
            seen.sent[seq].store(sent.duration_since(seen.epoch).as_micros() as u64, Relaxed);
            let mut attempt = 0;
            let mut request = publish(seq, local, attempt);
            publisher.send_to(request.as_bytes(), ampel.sip).await?;
            let mut arrived = false;
            // A PUBLISH whose 200 has not come back is sent again after T1, as a phone does; a
            // refused one is tried again as a new request.
            for _ in 0..10 {
                let count = || seen.per_seq[seq].load(Relaxed);
                arrived = wait_for(count, n as u64, Duration::from_millis(500)).await;
                if arrived || seen.published[seq].load(Relaxed) {
                    break;
                }
                if seen.refused[seq].swap(false, Relaxed) {
                    attempt += 1;
                    request = publish(seq, local, attempt);
                }
                publisher.send_to(request.as_bytes(), ampel.sip).await?;
                republished += 1;
            }
            if !arrived {
                arrived =
                    wait_for(|| seen.per_seq[seq].load(Relaxed), n as u64, Duration::from_secs(5))
                        .await;
            }
            if !arrived {
                eprintln!(
                    "publish {seq}: {} of {n} NOTIFYs arrived",
                    seen.per_seq[seq].load(Relaxed)
                );
            }
            if let Some(every) = interval {
                tokio::time::sleep_until((sent + every).into()).await;
            }
        }
        let elapsed = before.at.elapsed();
        // Late retransmissions and drops of the phase still count to it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = Marks::now(&seen, &server_pid);
        let got: u64 = range.clone().map(|s| seen.per_seq[s].load(Relaxed)).sum();
        let expected = (n * range.clone().count()) as u64;
        let h = seen.histogram.lock().expect("histogram lock");
        let per_notify = |nanos: u64| nanos as f64 / 1000.0 / got.max(1) as f64;
        println!(
            "{phase}: {got} of {expected} NOTIFYs in {:.2} s = {:.0} NOTIFY/s; latency p50 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms; missing {}; retransmitted {}; receive-buffer drops {}; \
             CPU per NOTIFY: server {:.1} µs, tool {:.1} µs; load average {}",
            elapsed.as_secs_f64(),
            got as f64 / elapsed.as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            expected.saturating_sub(got),
            after.retransmissions - before.retransmissions,
            after.drops - before.drops,
            per_notify(after.server - before.server),
            per_notify(after.tool - before.tool),
            load_average(),
        );
        interval = Some(match args.rate {
            Some(rate) => Duration::from_secs_f64(n as f64 / rate.max(1) as f64),
            None => elapsed * 2 / range.count() as u32,
        });
    }
    if republished > 0 {
        let refused = seen.refused_count.load(Relaxed);
        println!("PUBLISHes sent again for want of an answer: {republished} ({refused} refused)");
    }
    Ok(())
}
