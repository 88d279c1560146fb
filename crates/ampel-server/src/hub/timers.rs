//! Timers: the one task that re-evaluates a user's presence when it changes by itself (a manual
//! status ends, a device goes idle, a session expires, a meeting starts).
//!
//! Each user has at most one live entry in the heap, at the earliest instant its presence may
//! change. An entry that turns out early (a heartbeat moved the instant later) re-arms itself at
//! the new instant when it fires, so the heap stays as large as the number of users with
//! something pending, however many updates arrive.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Notify;

use super::Hub;

/// The timer heap.
#[derive(Debug, Default)]
pub struct Timers {
    heap: Mutex<BinaryHeap<Reverse<(Timestamp, u32)>>>,
    wake: Notify,
}

impl Timers {
    /// Arms a timer for `user` at `at`.
    pub fn schedule(&self, at: Timestamp, user: u32) {
        let mut heap = self.heap.lock().expect("timer lock");
        let earliest = heap.peek().is_none_or(|Reverse((t, _))| at < *t);
        heap.push(Reverse((at, user)));
        drop(heap);
        if earliest {
            self.wake.notify_one();
        }
    }

    fn pop_due(&self, now: Timestamp) -> Vec<(Timestamp, u32)> {
        let mut heap = self.heap.lock().expect("timer lock");
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            let Reverse(entry) = heap.pop().expect("peeked");
            due.push(entry);
        }
        due
    }

    /// How many entries the heap holds.
    pub fn len(&self) -> usize {
        self.heap.lock().expect("timer lock").len()
    }

    /// True when no entry is armed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the entries for which `keep(at, user)` is true.
    pub fn retain(&self, mut keep: impl FnMut(Timestamp, u32) -> bool) {
        self.heap.lock().expect("timer lock").retain(|Reverse((at, user))| keep(*at, *user));
    }

    fn earliest(&self) -> Option<Timestamp> {
        self.heap.lock().expect("timer lock").peek().map(|Reverse((t, _))| *t)
    }

    /// Runs the timers of `hub` until the process ends.
    pub async fn run(hub: Arc<Hub>) {
        let timers = &hub.timers;
        loop {
            let now = hub.clock.now();
            for (at, user) in timers.pop_due(now) {
                hub.timer_fired(user, at);
            }
            hub.compact_timers();
            match timers.earliest() {
                None => timers.wake.notified().await,
                Some(at) => {
                    let wait = Duration::try_from(at.duration_since(hub.clock.now()))
                        .unwrap_or(Duration::ZERO);
                    // Wake a millisecond late rather than early, so the entry is due when read.
                    let wait = wait + Duration::from_millis(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = timers.wake.notified() => {}
                    }
                }
            }
        }
    }
}
