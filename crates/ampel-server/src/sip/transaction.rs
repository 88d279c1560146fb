//! Server transactions, as far as a presence server needs them (RFC 3261 §17.2.2): a request
//! that arrives again (a UDP retransmission) is answered with the response already sent, or
//! dropped while its first copy is still in hand, and never processed twice. Entries live for
//! 32 seconds (64·T1); their number and the bytes they hold are bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ampel_sip::message::Request;
use tokio::time::{Duration, Instant};

/// How long an answered request is remembered.
const LIFETIME: Duration = Duration::from_secs(32);

/// The most requests remembered at once.
const MAX_ENTRIES: usize = 50_000;

/// The most bytes of keys and responses remembered at once. A request's Via branch and Call-ID
/// may be tens of kilobytes, and its response echoes them; without this bound 50,000 such
/// requests would hold gigabytes. The oldest entries go first.
const MAX_BYTES: usize = 32 * 1024 * 1024;

type Key = (String, String, String);

/// The requests seen and their answers.
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The answer to each request, or `None` while it is being handled.
    answers: HashMap<Key, Option<Vec<u8>>>,
    order: VecDeque<(Instant, Key)>,
    /// Bytes of the keys and answers in `answers`.
    bytes: usize,
}

/// What a request is to the transaction layer.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// A new request: handle it, then [`Cache::remember`] its response.
    New,
    /// A copy of a request still being handled: drop it; the first copy is answered.
    InHand,
    /// A copy of a request answered before: send this again.
    Answered(Vec<u8>),
}

fn key(request: &Request) -> Option<Key> {
    let branch = request.branch()?;
    let call_id = request.header("call-id")?;
    Some((branch.to_owned(), request.method.clone(), call_id.to_owned()))
}

fn key_bytes(key: &Key) -> usize {
    key.0.len() + key.1.len() + key.2.len()
}

impl Inner {
    /// Forgets expired entries, and the oldest while more than the bounds are held.
    fn trim(&mut self, now: Instant, room: usize) {
        while let Some((at, _)) = self.order.front() {
            let full = self.order.len() >= MAX_ENTRIES || self.bytes + room > MAX_BYTES;
            if now.duration_since(*at) < LIFETIME && !full {
                break;
            }
            let (_, old) = self.order.pop_front().expect("front exists");
            if let Some(answer) = self.answers.remove(&old) {
                self.bytes -= key_bytes(&old) + answer.map_or(0, |a| a.len());
            }
        }
    }

    fn insert(&mut self, key: Key, answer: Option<Vec<u8>>, now: Instant) {
        self.bytes += key_bytes(&key) + answer.as_ref().map_or(0, Vec::len);
        self.answers.insert(key.clone(), answer);
        self.order.push_back((now, key));
    }
}

impl Cache {
    /// Whether this request is new, a copy of one in hand, or a copy of one answered; a new
    /// one is marked as in hand. A request without a branch or Call-ID is always new.
    pub fn begin(&self, request: &Request) -> Seen {
        let Some(key) = key(request) else { return Seen::New };
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("transaction lock");
        match inner.answers.get(&key) {
            Some(Some(answer)) => return Seen::Answered(answer.clone()),
            Some(None) => return Seen::InHand,
            None => {}
        }
        inner.trim(now, key_bytes(&key));
        inner.insert(key, None, now);
        Seen::New
    }

    /// Remembers the response to a request [`begin`](Self::begin) found new.
    pub fn remember(&self, request: &Request, response: &[u8]) {
        let Some(key) = key(request) else { return };
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("transaction lock");
        match inner.answers.get_mut(&key) {
            Some(slot @ None) => {
                *slot = Some(response.to_vec());
                inner.bytes += response.len();
                // Over the bound now: the oldest entries go, in the order they began.
                inner.trim(now, 0);
            }
            Some(Some(_)) => {}
            None => {
                // Forgotten while it was in hand, under pressure: remembered anew.
                inner.trim(now, key_bytes(&key) + response.len());
                inner.insert(key, Some(response.to_vec()), now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ampel_sip::message::{Message, parse};

    fn request(branch: &str, call_id: &str) -> Request {
        let text = format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{branch}\r\n\
             From: <sip:c@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes(), true) {
            Ok((Message::Request(r), _)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn a_copy_is_dropped_while_in_hand_and_answered_again_after() {
        let cache = Cache::default();
        let r = request("1", "c1");
        assert_eq!(cache.begin(&r), Seen::New);
        assert_eq!(cache.begin(&r), Seen::InHand);
        cache.remember(&r, b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(cache.begin(&r), Seen::Answered(b"SIP/2.0 200 OK\r\n\r\n".to_vec()));
        assert_eq!(cache.begin(&request("2", "c1")), Seen::New);
    }

    #[test]
    fn large_requests_cannot_hold_more_than_the_byte_bound() {
        let cache = Cache::default();
        let big = "x".repeat(30_000);
        let answer = vec![b'a'; 60_000];
        let mut first = None;
        for i in 0..600 {
            let r = request(&format!("{i}{big}"), &big);
            assert_eq!(cache.begin(&r), Seen::New);
            cache.remember(&r, &answer);
            first.get_or_insert(r);
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= MAX_BYTES, "{} bytes held", inner.bytes);
        assert!(inner.answers.len() < 600 && !inner.answers.is_empty());
        let held: usize =
            inner.answers.iter().map(|(k, a)| key_bytes(k) + a.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!(held, inner.bytes, "the count of bytes follows the entries");
        drop(inner);
        // The oldest went first.
        assert_eq!(cache.begin(first.as_ref().unwrap()), Seen::New);
    }
}
