//! The figures of a run and how they are printed.

use std::collections::HashMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::Ack;
use crate::setup::Sizes;
use crate::watchers::Receipt;

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// How many deliveries were measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// The slowest.
    pub max_us: u64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        Latency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        }
    }
}

/// Latencies of the deliveries of one phase's manual updates.
#[derive(Debug, Default, Serialize)]
pub struct Latencies {
    /// From the moment the request was sent to the watcher's receipt.
    pub from_send: Latency,
    /// From the moment the `200` arrived to the watcher's receipt; deliveries that came
    /// before the acknowledgement count as zero.
    pub from_ack: Latency,
    /// Deliveries that arrived before their update was acknowledged.
    pub before_ack: u64,
}

/// Works out the latencies of the receipts whose sequence number is in `seqs`.
pub fn latencies(receipts: &[Receipt], acks: &[Ack], seqs: std::ops::Range<u64>) -> Latencies {
    let new = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let (mut from_send, mut from_ack) = (new(), new());
    let acked: HashMap<u64, u64> = acks.iter().map(|a| (a.seq, a.at)).collect();
    let mut before_ack = 0;
    for r in receipts.iter().filter(|r| seqs.contains(&r.seq)) {
        from_send.saturating_record(micros(r.received.saturating_sub(r.sent)));
        if let Some(&ack) = acked.get(&r.seq) {
            if r.received < ack {
                before_ack += 1;
            }
            from_ack.saturating_record(micros(r.received.saturating_sub(ack)));
        }
    }
    Latencies { from_send: Latency::of(&from_send), from_ack: Latency::of(&from_ack), before_ack }
}

/// Nanoseconds to whole microseconds, at least 1 (the histogram's lowest value).
fn micros(ns: u64) -> u64 {
    (ns / 1000).max(1)
}

/// One phase: a fixed time of changes at one rate.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// What the phase was for.
    pub label: String,
    /// The rate aimed at, changes per second; `None` for as fast as acknowledged.
    pub target_rate: Option<f64>,
    /// Changes acknowledged.
    pub updates: u64,
    /// Changes that failed.
    pub failed: u64,
    /// The first failure.
    pub first_failure: Option<String>,
    /// Seconds during which changes were sent.
    pub sending_s: f64,
    /// Acknowledged changes per second of sending.
    pub updates_per_s: f64,
    /// Messages the watchers received during the phase and its drain.
    pub notifications: u64,
    /// Notifications the acknowledged changes should have caused.
    pub expected: u64,
    /// Seconds from the first change sent to the last notification received.
    pub delivering_s: f64,
    /// Notifications received per second of delivering.
    pub notifications_per_s: f64,
    /// Mean size of a received message, bytes.
    pub message_bytes: f64,
    /// Latencies of the manual updates' deliveries.
    pub latency: Latencies,
    /// CPU seconds the server used over the phase.
    pub server_cpu_s: f64,
    /// Server CPU per received notification, microseconds.
    pub server_cpu_us_per_notification: f64,
    /// CPU seconds the load generator used over the phase (it shares the machine).
    pub client_cpu_s: f64,
    /// CPU seconds the rest of the machine used over the phase: other processes, and kernel
    /// work not charged to either (interrupts). Large values mean the figures are disturbed.
    pub other_cpu_s: f64,
    /// Updates queued by the server, from its metrics (Ampel only).
    pub server_queued: Option<f64>,
    /// Queued updates the server replaced by newer ones before writing them (Ampel only).
    pub server_coalesced: Option<f64>,
    /// Database transactions (Ampel only).
    pub store_commits: Option<f64>,
}

/// Memory of the server at the points of a run, KiB.
#[derive(Debug, Default, Serialize)]
pub struct Memory {
    /// With the users created and the sessions open, before any WebSocket.
    pub before_kib: u64,
    /// With the connections open, before any subscription.
    pub connected_kib: u64,
    /// With every subscription's snapshot delivered.
    pub subscribed_kib: u64,
    /// After the last phase.
    pub end_kib: u64,
    /// (subscribed − before) / subscriptions, bytes: the connections' cost included.
    pub bytes_per_subscription: f64,
    /// (subscribed − connected) / subscriptions, bytes: the subscriptions alone.
    pub bytes_per_subscription_alone: f64,
    /// (connected − before) / connections, bytes.
    pub bytes_per_connection: f64,
}

impl Memory {
    /// The figures from the RSS before the connections, with them, with the subscriptions and
    /// at the end, in KiB.
    pub fn new(rss_kib: [u64; 4], sizes: Sizes) -> Memory {
        let [before, connected, subscribed, end] = rss_kib;
        let bytes = |a: u64, b: u64| (a as f64 - b as f64) * 1024.0;
        let subscriptions = sizes.subscriptions as f64;
        Memory {
            before_kib: before,
            connected_kib: connected,
            subscribed_kib: subscribed,
            end_kib: end,
            bytes_per_subscription: bytes(subscribed, before) / subscriptions,
            bytes_per_subscription_alone: bytes(subscribed, connected) / subscriptions,
            bytes_per_connection: bytes(connected, before) / sizes.connections as f64,
        }
    }
}

/// A whole run against one target.
#[derive(Debug, Serialize)]
pub struct Run {
    /// `ampel` or `bare`.
    pub target: String,
    /// How the target was configured.
    pub variant: String,
    /// Users in the directory.
    pub users: usize,
    /// Watching connections.
    pub connections: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Update workers (requests in flight at most).
    pub concurrency: usize,
    /// Seconds to set up users, tokens and sessions.
    pub setup_s: f64,
    /// Seconds from the first subscribe command to the last snapshot.
    pub subscribe_s: f64,
    /// Server CPU while nothing changes, with every connection open, percent of one core.
    pub idle_cpu_percent: f64,
    /// Cores other processes kept busy in the second before the run started.
    pub busy_cores_before: f64,
    /// Memory.
    pub memory: Memory,
    /// The phases, in order.
    pub phases: Vec<Phase>,
}

impl Run {
    /// A plain-text report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let m = &self.memory;
        let _ = writeln!(
            out,
            "== {}: {} users, {} connections, {} subscriptions, {} in flight",
            self.target, self.users, self.connections, self.subscriptions, self.concurrency
        );
        let _ = writeln!(
            out,
            "{}; other processes used {:.2} cores before the start",
            self.variant, self.busy_cores_before
        );
        let _ = writeln!(
            out,
            "setup {:.1} s, subscriptions and snapshots {:.1} s, idle server CPU {:.1} %",
            self.setup_s, self.subscribe_s, self.idle_cpu_percent
        );
        let _ = writeln!(
            out,
            "RSS KiB: before {} / connected {} / subscribed {} / end {}",
            m.before_kib, m.connected_kib, m.subscribed_kib, m.end_kib
        );
        let _ = writeln!(
            out,
            "memory: {:.0} B per subscription with connections, {:.0} B alone, {:.0} B per connection",
            m.bytes_per_subscription, m.bytes_per_subscription_alone, m.bytes_per_connection
        );
        for p in &self.phases {
            p.write(&mut out);
        }
        out
    }
}

impl Phase {
    fn write(&self, out: &mut String) {
        let rate = self.target_rate.map_or("max".to_owned(), |r| format!("{r:.0}/s"));
        let _ = writeln!(out, "-- phase {} (target {rate})", self.label);
        let _ = writeln!(
            out,
            "updates {} ok, {} failed, {:.0}/s over {:.1} s",
            self.updates, self.failed, self.updates_per_s, self.sending_s
        );
        if let Some(why) = &self.first_failure {
            let _ = writeln!(out, "first failure: {why}");
        }
        let _ = writeln!(
            out,
            "notifications {} of {} expected, {:.0}/s over {:.1} s, {:.0} B each",
            self.notifications,
            self.expected,
            self.notifications_per_s,
            self.delivering_s,
            self.message_bytes
        );
        let l = &self.latency;
        for (name, x) in [("from send", &l.from_send), ("from ack ", &l.from_ack)] {
            let _ = writeln!(
                out,
                "latency {name}: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs ({} deliveries)",
                x.p50_us, x.p90_us, x.p99_us, x.max_us, x.count
            );
        }
        let _ = writeln!(out, "delivered before the ack: {}", l.before_ack);
        let _ = writeln!(
            out,
            "server CPU {:.2} s = {:.2} µs per notification; load generator CPU {:.2} s; \
             rest of the machine {:.2} s",
            self.server_cpu_s,
            self.server_cpu_us_per_notification,
            self.client_cpu_s,
            self.other_cpu_s
        );
        if let (Some(q), Some(c), Some(s)) =
            (self.server_queued, self.server_coalesced, self.store_commits)
        {
            let _ = writeln!(out, "server metrics: {q} queued, {c} coalesced, {s} commits");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_only_its_phase_and_clamps_early_deliveries() {
        let receipts = [
            Receipt { seq: 1, sent: 1_000_000, received: 1_500_000 },
            Receipt { seq: 2, sent: 2_000_000, received: 2_100_000 },
            Receipt { seq: 9, sent: 0, received: 9_000_000_000 },
        ];
        let acks = [Ack { seq: 1, at: 1_400_000 }, Ack { seq: 2, at: 2_300_000 }];
        let l = latencies(&receipts, &acks, 0..5);
        assert_eq!(l.from_send.count, 2);
        assert_eq!(l.from_send.max_us, 500);
        assert_eq!(l.from_ack.p50_us, 1);
        assert_eq!(l.from_ack.max_us, 100);
        assert_eq!(l.before_ack, 1);
    }
}
