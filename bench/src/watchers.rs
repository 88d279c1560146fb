//! The watching side: WebSocket connections that subscribe, count every message and note the
//! arrival time of the updates that carry a send time.
//!
//! Reading has to stay cheap, because the load generator shares the machine with the server:
//! a message is counted, and only a manual update's note is looked at, by a substring search
//! rather than a JSON parse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::setup::{CHUNK, Connection, User};

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// One update seen by one watcher.
#[derive(Clone, Copy, Debug)]
pub struct Receipt {
    /// The update's sequence number.
    pub seq: u64,
    /// When it was sent, in nanoseconds since the run's base instant.
    pub sent: u64,
    /// When it arrived, on the same scale.
    pub received: u64,
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received.
    pub messages: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// `{"error": ...}` answers and failed connections.
    pub errors: AtomicU64,
    /// The first of those, for the report.
    pub first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        self.first_error.lock().expect("error lock").get_or_insert(what);
    }
}

/// The open connections.
pub struct Watchers {
    sinks: Vec<Sink>,
    readers: Vec<JoinHandle<()>>,
    receipts: Vec<Arc<Mutex<Vec<Receipt>>>>,
    /// What every connection counted.
    pub counters: Arc<Counters>,
}

impl Watchers {
    /// Opens one WebSocket per planned connection, without subscribing yet.
    pub async fn connect(
        addr: SocketAddr,
        plan: &[Connection],
        base: Instant,
        in_flight: usize,
    ) -> anyhow::Result<Watchers> {
        let counters = Arc::new(Counters::default());
        let opened: Vec<_> = futures_util::stream::iter(plan)
            .map(|c| {
                let url = format!("ws://{addr}/api/v1/ws?access_token={}", c.token);
                async move {
                    tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
                        .await
                        .context("WebSocket handshake")
                }
            })
            .buffered(in_flight)
            .try_collect()
            .await?;

        let mut watchers =
            Watchers { sinks: Vec::new(), readers: Vec::new(), receipts: Vec::new(), counters };
        for (socket, _) in opened {
            let (sink, stream) = socket.split();
            let receipts = Arc::new(Mutex::new(Vec::new()));
            let counters = Arc::clone(&watchers.counters);
            let reader = tokio::spawn(read(stream, counters, Arc::clone(&receipts), base));
            watchers.sinks.push(sink);
            watchers.readers.push(reader);
            watchers.receipts.push(receipts);
        }
        Ok(watchers)
    }

    /// Sends the subscribe commands, at most [`CHUNK`] ids each.
    pub async fn subscribe(
        &mut self,
        plan: &[Connection],
        users: &[User],
        in_flight: usize,
    ) -> anyhow::Result<()> {
        futures_util::stream::iter(self.sinks.iter_mut().zip(plan))
            .map(|(sink, connection)| async move {
                for chunk in connection.watches.chunks(CHUNK) {
                    let ids: Vec<&str> = chunk.iter().map(|u| users[*u].id.as_str()).collect();
                    let command = serde_json::json!({ "subscribe": ids }).to_string();
                    sink.send(Message::text(command)).await?;
                }
                anyhow::Ok(())
            })
            .buffer_unordered(in_flight)
            .try_collect::<()>()
            .await
    }

    /// Waits until `count` messages have arrived in all, or fails after `limit`.
    pub async fn wait_for(&self, count: u64, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let seen = self.counters.messages.load(Relaxed);
            if seen >= count {
                return Ok(());
            }
            if let Some(error) = self.counters.first_error.lock().expect("error lock").clone() {
                bail!("a watcher failed: {error}");
            }
            if started.elapsed() > limit {
                bail!("only {seen} of {count} snapshots arrived within {} s", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes every receipt noted so far.
    pub fn take_receipts(&self) -> Vec<Receipt> {
        let mut all = Vec::new();
        for r in &self.receipts {
            all.append(&mut r.lock().expect("receipt lock"));
        }
        all
    }

    /// Closes every connection.
    pub async fn close(mut self) {
        for sink in &mut self.sinks {
            let _ = sink.close().await;
        }
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// The watchers' WebSocket settings. tungstenite fills its whole read buffer with zeros before
/// each read (128 KiB by default), which would make the load generator pay for its buffer
/// rather than for the messages; 16 KiB still takes dozens of batched updates in one read.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}

async fn read(
    mut stream: futures_util::stream::SplitStream<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    counters: Arc<Counters>,
    receipts: Arc<Mutex<Vec<Receipt>>>,
    base: Instant,
) {
    while let Some(message) = stream.next().await {
        let received = base.elapsed().as_nanos() as u64;
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                counters.error(format!("connection failed: {e}"));
                break;
            }
        };
        counters.messages.fetch_add(1, Relaxed);
        counters.bytes.fetch_add(text.len() as u64, Relaxed);
        if text.starts_with("{\"error\"") {
            counters.error(text.to_string());
        } else if let Some((sent, seq)) = stamp(&text) {
            receipts.lock().expect("receipt lock").push(Receipt { seq, sent, received });
        }
    }
}

/// The note written by the load (`"text":"t=<sent> k=<seq>"`), if the message has one.
pub fn stamp(message: &str) -> Option<(u64, u64)> {
    const MARK: &str = "\"text\":\"t=";
    let rest = &message[message.find(MARK)? + MARK.len()..];
    let (sent, rest) = rest.split_once(" k=")?;
    let seq = &rest[..rest.find('"')?];
    Some((sent.parse().ok()?, seq.parse().ok()?))
}

/// The note that [`stamp`] reads back.
pub fn note(sent: u64, seq: u64) -> String {
    format!("t={sent} k={seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_presence_json() {
        let json = format!(
            r#"{{"user":"u000001@example.com","color":"red","note":{{"text":"{}"}},"since":"x"}}"#,
            note(123_456_789, 42)
        );
        assert_eq!(stamp(&json), Some((123_456_789, 42)));
    }

    #[test]
    fn messages_without_a_stamp_are_ignored() {
        assert_eq!(stamp(r#"{"user":"a@b","color":"green"}"#), None);
        assert_eq!(stamp(r#"{"note":{"text":"back at 4"}}"#), None);
    }
}
