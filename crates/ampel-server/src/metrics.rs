//! Counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! A handful of atomics is all Ampel needs; each is updated where the event happens and read
//! only when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Facts put or removed through any interface.
    pub fact_updates: AtomicU64,
    /// Changes of an aggregated presence that watchers were told about.
    pub presence_changes: AtomicU64,
    /// Presence updates queued to watching connections.
    pub notifications: AtomicU64,
    /// Updates a connection had not sent yet when a newer state replaced them.
    pub notifications_coalesced: AtomicU64,
    /// Open watching connections (WebSocket and Server-Sent Events).
    pub watch_connections: AtomicI64,
    /// Subscriptions held by those connections.
    pub subscriptions: AtomicI64,
    /// Timer firings that re-evaluated a presence.
    pub timer_evaluations: AtomicU64,
    /// Transactions committed.
    pub store_commits: AtomicU64,
    /// Operations written in those transactions.
    pub store_ops: AtomicU64,
    /// HTTP answers by class: 2xx, 4xx, 5xx (others count as 2xx).
    pub http_2xx: AtomicU64,
    /// See `http_2xx`.
    pub http_4xx: AtomicU64,
    /// See `http_2xx`.
    pub http_5xx: AtomicU64,
    /// Handlers that panicked.
    pub panics: AtomicU64,
    /// Requests sent to Microsoft Graph (each attempt counts).
    pub graph_requests: AtomicU64,
    /// Graph answers that asked Ampel to wait (429, 503) or failed transiently.
    pub graph_retries: AtomicU64,
    /// Graph requests given up or refused.
    pub graph_failures: AtomicU64,
    /// SIP messages over UDP dropped unread because too many were in hand (their senders
    /// retransmit them).
    pub sip_shed: AtomicU64,
}

impl Metrics {
    /// Counts one committed transaction of `ops` operations.
    pub fn store_commit(&self, ops: usize) {
        self.store_commits.fetch_add(1, Relaxed);
        self.store_ops.fetch_add(ops as u64, Relaxed);
    }

    /// Counts one HTTP answer.
    pub fn http_status(&self, status: u16) {
        match status {
            400..=499 => &self.http_4xx,
            500..=599 => &self.http_5xx,
            _ => &self.http_2xx,
        }
        .fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition, with the directory's and the timers' sizes as gauges.
    pub fn render(&self, users: usize, timer_entries: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        let gauge = |a: &AtomicI64| a.load(Relaxed).to_string();
        metric("ampel_users", "gauge", "Users in the directory.", users.to_string());
        metric("ampel_timer_entries", "gauge", "Armed timer entries.", timer_entries.to_string());
        metric(
            "ampel_fact_updates_total",
            "counter",
            "Facts put or removed.",
            get(&self.fact_updates),
        );
        metric(
            "ampel_presence_changes_total",
            "counter",
            "Changes of an aggregated presence.",
            get(&self.presence_changes),
        );
        metric(
            "ampel_notifications_total",
            "counter",
            "Presence updates queued to watching connections.",
            get(&self.notifications),
        );
        metric(
            "ampel_notifications_coalesced_total",
            "counter",
            "Queued updates replaced by a newer state before they were sent.",
            get(&self.notifications_coalesced),
        );
        metric(
            "ampel_watch_connections",
            "gauge",
            "Open WebSocket and Server-Sent Events connections.",
            gauge(&self.watch_connections),
        );
        metric(
            "ampel_subscriptions",
            "gauge",
            "Presence subscriptions held.",
            gauge(&self.subscriptions),
        );
        metric(
            "ampel_timer_evaluations_total",
            "counter",
            "Presences re-evaluated by a timer.",
            get(&self.timer_evaluations),
        );
        metric(
            "ampel_store_commits_total",
            "counter",
            "Database transactions.",
            get(&self.store_commits),
        );
        metric("ampel_store_ops_total", "counter", "Database writes.", get(&self.store_ops));
        metric(
            "ampel_sip_shed_total",
            "counter",
            "SIP messages over UDP dropped unread because too many were in hand.",
            get(&self.sip_shed),
        );
        let _ = writeln!(
            out,
            "# HELP ampel_http_responses_total HTTP answers by status class.\n\
             # TYPE ampel_http_responses_total counter\n\
             ampel_http_responses_total{{class=\"2xx\"}} {}\n\
             ampel_http_responses_total{{class=\"4xx\"}} {}\n\
             ampel_http_responses_total{{class=\"5xx\"}} {}",
            get(&self.http_2xx),
            get(&self.http_4xx),
            get(&self.http_5xx)
        );
        let _ = writeln!(
            out,
            "# HELP ampel_panics_total Handlers that panicked.\n# TYPE ampel_panics_total counter\n\
             ampel_panics_total {}",
            get(&self.panics)
        );
        let _ = writeln!(
            out,
            "# HELP ampel_graph_requests_total Microsoft Graph requests by outcome.\n\
             # TYPE ampel_graph_requests_total counter\n\
             ampel_graph_requests_total{{outcome=\"sent\"}} {}\n\
             ampel_graph_requests_total{{outcome=\"retried\"}} {}\n\
             ampel_graph_requests_total{{outcome=\"failed\"}} {}",
            get(&self.graph_requests),
            get(&self.graph_retries),
            get(&self.graph_failures)
        );
        out
    }
}
