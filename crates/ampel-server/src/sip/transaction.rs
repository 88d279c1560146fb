//! Server transactions, as far as a presence server needs them (RFC 3261 §17.2.2): a request
//! that arrives again (a UDP retransmission) is answered with the response already sent, and
//! not processed twice. Entries live for 32 seconds (64·T1) and their number is bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ampel_sip::message::Request;
use tokio::time::{Duration, Instant};

/// How long an answered request is remembered.
const LIFETIME: Duration = Duration::from_secs(32);

/// The most requests remembered at once.
const MAX_ENTRIES: usize = 50_000;

type Key = (String, String, String);

/// The answered requests.
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    answers: HashMap<Key, Vec<u8>>,
    order: VecDeque<(Instant, Key)>,
}

fn key(request: &Request) -> Option<Key> {
    let branch = request.branch()?;
    let call_id = request.header("call-id")?;
    Some((branch.to_owned(), request.method.clone(), call_id.to_owned()))
}

impl Cache {
    /// The response sent to this request before, if it is a retransmission.
    pub fn retransmitted(&self, request: &Request) -> Option<Vec<u8>> {
        let key = key(request)?;
        let inner = self.inner.lock().expect("transaction lock");
        inner.answers.get(&key).cloned()
    }

    /// Remembers the response to a request.
    pub fn remember(&self, request: &Request, response: &[u8]) {
        let Some(key) = key(request) else { return };
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("transaction lock");
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < LIFETIME && inner.order.len() < MAX_ENTRIES {
                break;
            }
            let (_, old) = inner.order.pop_front().expect("front exists");
            inner.answers.remove(&old);
        }
        inner.answers.insert(key.clone(), response.to_vec());
        inner.order.push_back((now, key));
    }
}
