//! The server under test as a child process: starting it on a free loopback port, waiting until
//! it answers, reading its memory and CPU time from `/proc`, and stopping it.
//!
//! Both targets (Ampel and the bare broadcaster) run as separate processes so that their CPU
//! time and memory are read the same way and never mixed with the load generator's.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running server process; it is killed when this is dropped.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The administrator token it wrote.
    pub admin_token: String,
    /// Its data directory; removed when this is dropped.
    data: tempfile::TempDir,
}

/// What to start.
pub enum Target {
    /// `ampel serve`, from this binary path, logging at this level.
    Ampel { binary: PathBuf, log: String },
    /// This binary's hidden `broadcaster` subcommand.
    Bare(crate::broadcaster::Options),
}

impl Target {
    /// The name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Ampel { .. } => "ampel",
            Target::Bare(_) => "bare",
        }
    }

    /// How the target was configured, for reports.
    pub fn variant(&self) -> String {
        match self {
            Target::Ampel { binary, log } => format!("{} with AMPEL_LOG={log}", binary.display()),
            Target::Bare(o) => format!(
                "writer {}, read buffer {} B, write buffer {} B, Nagle {}",
                if o.joined_writer { "joined with the reader" } else { "in its own task" },
                o.read_buffer,
                o.write_buffer,
                if o.nagle { "on" } else { "off" },
            ),
        }
    }
}

impl Server {
    /// Starts the target on a free port of 127.0.0.1 and waits until it answers `/healthz`
    /// and has written its administrator token.
    pub async fn start(target: &Target) -> anyhow::Result<Server> {
        let data = tempfile::Builder::new().prefix("ampel-bench-").tempdir()?;
        let addr = free_port()?;
        let log = std::fs::File::create(data.path().join("server.log"))?;
        let mut command = match target {
            Target::Ampel { binary, log } => {
                let mut c = Command::new(binary);
                // SIP on a free port, so that a SIP server on 5060 does not stop the run.
                c.args(["serve", "--sip", "127.0.0.1:0"]).env("AMPEL_LOG", log);
                c
            }
            Target::Bare(options) => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg("broadcaster").args(options.to_args());
                c
            }
        };
        command.arg("--data").arg(data.path()).arg("--http").arg(addr.to_string());
        // Ampel prints the new administrator token on standard output; it is read from the
        // file instead and never shown.
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = command.spawn().with_context(|| format!("cannot start {}", target.name()))?;
        let mut server = Server { child, addr, admin_token: String::new(), data };
        server.admin_token = server.wait_ready().await?;
        Ok(server)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data.path().join("server.log")
    }

    async fn wait_ready(&mut self) -> anyhow::Result<String> {
        let started = Instant::now();
        let client = reqwest::Client::new();
        let health = format!("http://{}/healthz", self.addr);
        let token_path = self.data.path().join("admin.token");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited with {status} before it served; see {}",
                    self.log_path().display()
                );
            }
            let up = client.get(&health).send().await.is_ok_and(|r| r.status().is_success());
            if up && let Ok(token) = std::fs::read_to_string(&token_path) {
                return Ok(token.trim().to_owned());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the server did not answer within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory and CPU time, now.
    pub fn sample(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only this child, by its handle; it holds no state worth a graceful stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory and CPU of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Resident set size, in KiB.
    pub rss_kib: u64,
    /// User plus system CPU time of all its threads, dead ones included, in seconds.
    pub cpu_s: f64,
}

impl Usage {
    /// Reads `/proc/PID/status` and `/proc/PID/stat`.
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        Ok(Usage { rss_kib: rss_kib(pid)?, cpu_s: cpu_seconds(&format!("/proc/{pid}/stat"))? })
    }

    /// This process.
    pub fn own() -> anyhow::Result<Usage> {
        Usage::of(std::process::id())
    }
}

/// CPU seconds every process of the machine has used since boot, from `/proc/stat`: all time
/// that was neither idle nor waiting for I/O, over all cores.
pub fn machine_busy_s() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu ")).context("no cpu line")?;
    let ticks: Vec<u64> =
        line.split_whitespace().skip(1).map(str::parse).collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 =
        ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Ok(busy as f64 / clock_ticks())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib = line.split_whitespace().nth(1).context("no VmRSS value")?;
    Ok(kib.parse()?)
}

/// `utime + stime` (fields 14 and 15 of `proc_pid_stat(5)`), in seconds. The command name in
/// field 2 may hold spaces and parentheses, so the fields are counted from its closing one.
fn cpu_seconds(path: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(path)?;
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let ticks: u64 = fields.get(11).context("no utime")?.parse::<u64>()?
        + fields.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once; 100 on every Linux this runs on.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Reads the counters of Ampel's `/metrics`; empty for a server without them.
pub async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> Metrics {
    let url = format!("http://{addr}/metrics");
    let Ok(response) = client.get(url).send().await else { return Metrics::default() };
    if !response.status().is_success() {
        return Metrics::default();
    }
    let text = response.text().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    Metrics {
        notifications: value("ampel_notifications_total"),
        coalesced: value("ampel_notifications_coalesced_total"),
        store_commits: value("ampel_store_commits_total"),
    }
}

/// The server-side counters the report uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Metrics {
    /// Updates queued to watchers.
    pub notifications: Option<f64>,
    /// Queued updates replaced before they were written.
    pub coalesced: Option<f64>,
    /// Database transactions.
    pub store_commits: Option<f64>,
}

impl Metrics {
    /// `self - before`, field by field.
    pub fn since(self, before: Metrics) -> Metrics {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Metrics {
            notifications: d(self.notifications, before.notifications),
            coalesced: d(self.coalesced, before.coalesced),
            store_commits: d(self.store_commits, before.store_commits),
        }
    }
}
