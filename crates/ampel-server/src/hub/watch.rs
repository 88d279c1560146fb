//! Watching connections and their outgoing queues.
//!
//! A connection (one WebSocket or one Server-Sent Events stream) holds one queue with at most
//! one pending update per watched user: when a newer state arrives before the older one was
//! written, it replaces it. A slow or stalled watcher therefore costs at most one entry per
//! subscription and never holds up the hub, which only ever appends to queues and wakes their
//! writers. The writer drains the whole queue at once, so that updates that queued up while it
//! was busy leave in one socket write. A watcher without a task of its own (a SIP
//! subscription, served by one shared sender) gives a [`Waker`] instead, which the push calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::auth::Principal;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a push calls for a watcher that has no task waiting on its queue. It runs under the
/// watched user's lock, so it must only note the work and return.
pub struct Waker(Box<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that calls `wake`.
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> Waker {
        Waker(Box::new(wake))
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// One watching connection.
#[derive(Debug)]
pub struct Conn {
    /// Unique for the life of the process.
    pub id: u64,
    /// Who watches.
    pub viewer: Principal,
    queue: Mutex<Queue>,
    wake: Notify,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: HashMap<u32, Bytes>,
    /// The users this connection watches, by directory index.
    watched: Vec<u32>,
    closed: bool,
}

impl Conn {
    /// A new connection for `viewer`.
    pub fn new(viewer: Principal) -> Conn {
        Conn {
            id: NEXT_ID.fetch_add(1, Relaxed),
            viewer,
            queue: Mutex::default(),
            wake: Notify::new(),
            waker: None,
        }
    }

    /// A new connection for `viewer` whose pushes call `waker` instead of waking a task; its
    /// updates are taken with [`Conn::take_batch`].
    pub fn with_waker(viewer: Principal, waker: Waker) -> Conn {
        Conn { waker: Some(waker), ..Conn::new(viewer) }
    }

    /// Queues the latest state of `user`; returns true when it replaced an unsent one.
    pub fn push(&self, user: u32, update: Bytes) -> bool {
        let mut q = self.queue.lock().expect("queue lock");
        if q.closed {
            return false;
        }
        let replaced = q.pending.insert(user, update).is_some();
        drop(q);
        match &self.waker {
            Some(waker) => (waker.0)(),
            None => self.wake.notify_one(),
        }
        replaced
    }

    /// Waits for updates and takes all of them, or `None` once the connection is closed.
    pub async fn next_batch(&self, into: &mut Vec<Bytes>) -> Option<()> {
        loop {
            if self.take_batch(into)? {
                return Some(());
            }
            self.wake.notified().await;
        }
    }

    /// Takes the queued updates without waiting: true when there were some, `None` once the
    /// connection is closed.
    pub fn take_batch(&self, into: &mut Vec<Bytes>) -> Option<bool> {
        let mut q = self.queue.lock().expect("queue lock");
        if q.closed {
            return None;
        }
        if q.pending.is_empty() {
            return Some(false);
        }
        into.extend(q.pending.drain().map(|(_, b)| b));
        // The snapshots of a large subscription or a burst of changes grow the map; keeping
        // that capacity would cost memory for every subscription of an idle connection. A
        // small map is kept for the usual few updates.
        if q.pending.capacity() > 16 {
            q.pending.shrink_to(0);
        }
        Some(true)
    }

    /// Records that this connection watches `user`; false when it already did.
    pub fn add_watched(&self, user: u32) -> bool {
        let mut q = self.queue.lock().expect("queue lock");
        if q.closed || q.watched.contains(&user) {
            return false;
        }
        q.watched.push(user);
        true
    }

    /// Forgets that this connection watches `user`; false when it did not.
    pub fn remove_watched(&self, user: u32) -> bool {
        let mut q = self.queue.lock().expect("queue lock");
        let before = q.watched.len();
        q.watched.retain(|u| *u != user);
        q.pending.remove(&user);
        q.watched.len() != before
    }

    /// Forgets that this connection watches `user` but keeps its last queued update, so that
    /// a final state still goes out.
    pub fn forget_watched(&self, user: u32) {
        self.queue.lock().expect("queue lock").watched.retain(|u| *u != user);
    }

    /// How many users this connection watches.
    pub fn watched_count(&self) -> usize {
        self.queue.lock().expect("queue lock").watched.len()
    }

    /// Closes the queue and returns the users it watched, so that the hub can drop the
    /// subscriptions.
    pub fn close(&self) -> Vec<u32> {
        let mut q = self.queue.lock().expect("queue lock");
        q.closed = true;
        q.pending = HashMap::new();
        let watched = std::mem::take(&mut q.watched);
        drop(q);
        self.wake.notify_one();
        watched
    }
}
