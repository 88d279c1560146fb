//! The writing side: a steady stream of presence changes over REST for a fixed time, at a
//! target rate or as fast as the server acknowledges them.
//!
//! Each worker owns a fixed share of the users and changes them one request at a time, so that
//! no user ever has two changes in flight and each change is sure to flip what its watchers
//! see. Workers alternate between a manual status (whose note carries the send time, for the
//! latency) and a session heartbeat that toggles the device between `active` and `busy`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::setup::{Kind, User};
use crate::watchers::note;

/// The users and their toggles, shared by every phase so that the alternation carries on.
pub struct Load {
    users: Arc<Vec<Target>>,
    clients: Vec<reqwest::Client>,
    admin: Arc<str>,
    seq: Arc<AtomicU64>,
    base: Instant,
}

struct Target {
    user: User,
    url: String,
    /// Which way the next change goes.
    flip: AtomicBool,
}

/// One acknowledged manual update.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// Its sequence number.
    pub seq: u64,
    /// When the `200` arrived, in nanoseconds since the base instant.
    pub at: u64,
}

/// What one phase of load did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes acknowledged with a success status.
    pub ok: u64,
    /// Changes that failed or were refused.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Notifications the acknowledged changes should cause: the sum of their users' watchers.
    pub expected: u64,
    /// The acknowledgements of manual updates, for latency from the acknowledgement.
    pub acks: Vec<Ack>,
    /// The sequence numbers this phase used, `first..end`.
    pub seqs: std::ops::Range<u64>,
    /// How long requests were being sent.
    pub sending: Duration,
}

impl Load {
    /// A load over `users`, with `clients` HTTP clients (each keeps its own connections).
    pub fn new(
        addr: SocketAddr,
        admin: &str,
        users: &[User],
        clients: usize,
        base: Instant,
    ) -> Load {
        let targets = users
            .iter()
            .map(|u| Target {
                url: match &u.kind {
                    Kind::Manual => format!("http://{addr}/api/v1/users/{}/presence/manual", u.id),
                    Kind::Session(sid) => {
                        format!("http://{addr}/api/v1/users/{}/sessions/{sid}", u.id)
                    }
                },
                user: u.clone(),
                flip: AtomicBool::new(false),
            })
            .collect();
        let clients = (0..clients.max(1))
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(usize::MAX)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("an HTTP client without TLS configuration builds")
            })
            .collect();
        Load {
            users: Arc::new(targets),
            clients,
            admin: admin.into(),
            seq: Arc::new(AtomicU64::new(0)),
            base,
        }
    }

    /// Sends changes for `duration` with `workers` in flight, at `rate` changes per second in
    /// all, or as fast as they are acknowledged when `rate` is `None`.
    pub async fn run(&self, workers: usize, rate: Option<f64>, duration: Duration) -> Outcome {
        let workers = workers.clamp(1, self.users.len());
        let first = self.seq.load(Relaxed);
        let started = Instant::now();
        let deadline = started + duration;
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let worker = Worker {
                    users: Arc::clone(&self.users),
                    mine: (w..self.users.len()).step_by(workers).collect(),
                    client: self.clients[w % self.clients.len()].clone(),
                    admin: Arc::clone(&self.admin),
                    seq: Arc::clone(&self.seq),
                    base: self.base,
                };
                // Workers start staggered over one interval so that a paced load is smooth.
                let pace = rate.map(|r| {
                    let interval = Duration::from_secs_f64(workers as f64 / r);
                    (interval, started + interval.mul_f64(w as f64 / workers as f64))
                });
                tokio::spawn(worker.run(pace, deadline))
            })
            .collect();

        let mut outcome = Outcome::default();
        for handle in handles {
            let part = handle.await.expect("a load worker does not panic");
            outcome.ok += part.ok;
            outcome.failed += part.failed;
            outcome.expected += part.expected;
            outcome.acks.extend(part.acks);
            outcome.first_failure = outcome.first_failure.or(part.first_failure);
        }
        outcome.sending = started.elapsed();
        outcome.seqs = first..self.seq.load(Relaxed);
        outcome
    }
}

struct Worker {
    users: Arc<Vec<Target>>,
    mine: Vec<usize>,
    client: reqwest::Client,
    admin: Arc<str>,
    seq: Arc<AtomicU64>,
    base: Instant,
}

impl Worker {
    async fn run(self, pace: Option<(Duration, Instant)>, deadline: Instant) -> Outcome {
        let (manual, session): (Vec<usize>, Vec<usize>) =
            self.mine.iter().partition(|u| matches!(self.users[**u].user.kind, Kind::Manual));
        let mut cursors = [0usize, 0usize];
        let mut outcome = Outcome::default();
        for n in 0u64.. {
            if let Some((interval, start)) = pace {
                let at = start + interval.mul_f64(n as f64);
                if at >= deadline {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
            }
            if Instant::now() >= deadline {
                break;
            }
            // Alternate the two kinds; a worker that owns users of only one kind uses that one.
            let lists = [&manual, &session];
            let pick = if lists[(n % 2) as usize].is_empty() {
                1 - (n % 2) as usize
            } else {
                (n % 2) as usize
            };
            let list = lists[pick];
            let Some(&u) = list.get(cursors[pick] % list.len().max(1)) else { break };
            cursors[pick] += 1;
            self.change(u, &mut outcome).await;
        }
        outcome
    }

    async fn change(&self, u: usize, outcome: &mut Outcome) {
        let target = &self.users[u];
        let up = !target.flip.fetch_xor(true, Relaxed);
        let (request, seq) = match target.user.kind {
            Kind::Manual => {
                let seq = self.seq.fetch_add(1, Relaxed);
                let sent = self.base.elapsed().as_nanos() as u64;
                let availability = if up { "busy" } else { "available" };
                let body = json!({ "availability": availability, "note": note(sent, seq) });
                (self.client.put(&target.url).json(&body), Some(seq))
            }
            Kind::Session(_) => {
                let state = if up { "busy" } else { "active" };
                (self.client.put(&target.url).json(&json!({ "state": state })), None)
            }
        };
        let result = request.bearer_auth(&*self.admin).send().await;
        let at = self.base.elapsed().as_nanos() as u64;
        match result {
            Ok(response) if response.status().is_success() => {
                // The body is read so that the connection goes back to the pool.
                let _ = response.bytes().await;
                outcome.ok += 1;
                outcome.expected += u64::from(target.user.watchers);
                if let Some(seq) = seq {
                    outcome.acks.push(Ack { seq, at });
                }
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                outcome.fail(format!("{} answered {status}: {text}", target.user.id));
            }
            Err(e) => outcome.fail(format!("{}: {e}", target.user.id)),
        }
    }
}

impl Outcome {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }
}
