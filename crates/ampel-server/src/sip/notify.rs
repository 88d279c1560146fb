//! The sending side of subscriptions: one task builds, sends, paces and retransmits every
//! NOTIFY, and ends subscriptions when they expire.
//!
//! A change of a watched user reaches a subscription through its hub queue, whose waker puts
//! the subscription on the ready queue here; no subscription has a task of its own. The sender
//! renders a presence document once per user and projection and shares its bytes with every
//! subscription that sees that projection; only the dialog's headers are written per NOTIFY.
//!
//! Pacing, so that a fan-out to thousands of subscribers arrives whole:
//! - A dialog has one NOTIFY transaction at a time. State that changes while one is
//!   unanswered waits in the subscription, and only the newest goes out when it is answered.
//! - Over UDP, at most [`PER_ADDRESS`] NOTIFYs per address and a window in all (sized from
//!   Ampel's receive buffer) wait for their answer. A burst drains at the pace the subscribers
//!   answer, no receiver has more unanswered NOTIFYs queued than a default socket buffer
//!   holds, and the 200s coming back cannot fill Ampel's own receive queue ahead of new
//!   requests.
//! - Retransmissions follow RFC 3261 §17.1.2.2 (T1, doubling up to T2). A NOTIFY unanswered
//!   after T1 no longer counts against the windows. One whose subscription has newer state
//!   waiting is not sent again: the newer state goes out in a new transaction instead. After
//!   64·T1 without an answer the subscriber is taken to be gone (RFC 6665 §4.2.2).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ampel_sip::dialog_info;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::Sip;
use super::subscribe::{Action, Package, Subscription, presence_document};
use super::transport::{Outbox, Peer};
use crate::auth::Principal;
use crate::hub::Slot;
use crate::hub::watch::{Conn, Waker};

/// The first retransmission interval (RFC 3261 §17.1.1.1).
const T1: Duration = Duration::from_millis(500);

/// The longest retransmission interval.
const T2: Duration = Duration::from_secs(4);

/// How long a NOTIFY may go unanswered before the subscriber is taken to be gone (64·T1).
const GIVE_UP: Duration = Duration::from_secs(32);

/// The most NOTIFYs over UDP awaiting their answer per address. A phone's socket buffer (a
/// few hundred kilobytes by default) holds that many; a proxy or PBX that fronts many
/// subscribers on one address gets them at the pace it answers.
pub const PER_ADDRESS: usize = 32;

/// The receive-buffer space counted for one answer to a NOTIFY: the kernel charges a small
/// datagram with a few times its length.
const ANSWER_COST: usize = 4096;

/// Bounds of the window of NOTIFYs over UDP awaiting their answer, in all.
const MIN_WINDOW: usize = 32;
const MAX_WINDOW: usize = 4096;

/// How many ready subscriptions the sender takes at once.
const BATCH: usize = 256;

/// The most rendered documents kept; the cache is emptied when it is full.
const MAX_BODIES: usize = 4096;

/// What a subscription's sending side keeps, under the subscription's lock.
#[derive(Debug)]
pub(super) struct Progress {
    /// The CSeq of the next NOTIFY.
    cseq: u32,
    /// The version of the next dialog-info document (RFC 4235 §4.1).
    version: u64,
    /// On the ready queue, or waiting for room at its address.
    queued: bool,
    /// The hub queued an update that has not gone out yet.
    pending: bool,
    /// The NOTIFY awaiting its answer.
    outstanding: Option<Outstanding>,
    /// Since when the subscriber has answered none of the NOTIFYs sent: a transaction replaced
    /// by a newer one does not start the count again.
    silent: Option<Instant>,
    /// The expiry the sender's heap holds an entry for.
    armed: Option<Instant>,
    /// The terminating NOTIFY went out; nothing follows it.
    ended: bool,
    /// The subscription is over and forgotten.
    finished: bool,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            cseq: 1,
            version: 0,
            queued: false,
            pending: false,
            outstanding: None,
            silent: None,
            armed: None,
            ended: false,
            finished: false,
        }
    }
}

impl Progress {
    /// True once the terminating NOTIFY went out or the subscription was dropped.
    pub(super) fn ended(&self) -> bool {
        self.ended || self.finished
    }
}

#[derive(Debug)]
struct Outstanding {
    cseq: u32,
    bytes: Bytes,
    /// Still counted against the windows of its address and of all.
    counted: bool,
}

/// The sender's queues: what is ready, what awaits room, and the timers.
#[derive(Default)]
pub struct Notifier {
    inner: Mutex<Inner>,
    wake: Notify,
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<Arc<Subscription>>,
    addresses: HashMap<SocketAddr, Address>,
    in_flight: usize,
    window: usize,
    /// The sender stopped at a full window: it is woken again once a quarter of the window is
    /// free, so that it sends in batches rather than one NOTIFY per answer.
    stalled: bool,
    /// Retransmissions due, one queue per interval (T1, 2·T1, 4·T1, T2), each in order.
    retries: [VecDeque<Retry>; 4],
    /// NOTIFYs over TCP, given up on when still unanswered.
    deadlines: VecDeque<Retry>,
    expiries: BinaryHeap<Reverse<Expiry>>,
}

#[derive(Default)]
struct Address {
    in_flight: usize,
    waiting: VecDeque<Arc<Subscription>>,
}

struct Retry {
    at: Instant,
    sub: Arc<Subscription>,
    cseq: u32,
}

struct Expiry {
    at: Instant,
    sub: Weak<Subscription>,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Expiry) -> bool {
        self.at == other.at
    }
}

impl Eq for Expiry {}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Expiry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiry {
    fn cmp(&self, other: &Expiry) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

/// One thing for the sender to do.
enum Work {
    /// Send what the subscription has; `counted` when it holds room in the windows.
    Send(Arc<Subscription>, bool),
    /// A retransmission timer of the given level.
    Retry(Retry, usize),
    /// A NOTIFY over TCP that may still be unanswered.
    Deadline(Retry),
    /// An expiry timer.
    Expire(Arc<Subscription>, Instant),
}

/// The hub queue of a subscription: each push puts the subscription on the ready queue.
pub(super) fn conn(viewer: Principal, sub: &Weak<Subscription>, notifier: &Arc<Notifier>) -> Conn {
    let sub = sub.clone();
    let notifier = Arc::downgrade(notifier);
    Conn::with_waker(
        viewer,
        Waker::new(move || {
            if let (Some(notifier), Some(sub)) = (notifier.upgrade(), sub.upgrade()) {
                notifier.mark(&sub, true);
            }
        }),
    )
}

fn lock(sub: &Subscription) -> MutexGuard<'_, super::subscribe::State> {
    sub.state.lock().expect("subscription lock")
}

impl Notifier {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("notifier lock")
    }

    /// Puts a subscription on the ready queue when it has something to do: an action, or
    /// (with `changed`) an update from the hub. Lock order: a subscription's lock may be held
    /// while taking the notifier's, never the reverse.
    pub(super) fn mark(&self, sub: &Arc<Subscription>, changed: bool) {
        let mut state = lock(sub);
        state.progress.pending |= changed;
        let dropped = state.action == Action::Drop;
        let p = &state.progress;
        // A dialog has one NOTIFY transaction at a time; its answer looks again.
        let idle = !p.ended && p.outstanding.is_none();
        if !state.started || p.queued || p.finished || !(dropped || idle) {
            return;
        }
        state.progress.queued = true;
        drop(state);
        self.inner().ready.push_back(Arc::clone(sub));
        self.wake.notify_one();
    }

    /// Arms the expiry timer of a subscription whose expiry was set or moved.
    pub(super) fn arm(&self, sub: &Arc<Subscription>) {
        let mut state = lock(sub);
        let at = state.expires;
        if state.progress.armed.is_some_and(|armed| armed <= at) {
            // The earlier entry fires first and arms again for the later time.
            return;
        }
        state.progress.armed = Some(at);
        drop(state);
        self.inner().expiries.push(Reverse(Expiry { at, sub: Arc::downgrade(sub) }));
        self.wake.notify_one();
    }

    /// A final answer to the NOTIFY with `cseq`; true when the subscription is over (its
    /// terminating NOTIFY was answered) and can be forgotten.
    pub(super) fn answered(&self, sub: &Arc<Subscription>, cseq: u32, status: u16) -> bool {
        let mut state = lock(sub);
        let progress = &mut state.progress;
        if progress.outstanding.as_ref().is_none_or(|o| o.cseq != cseq) {
            // A late answer, or one to a transaction given up on.
            return false;
        }
        let done = progress.outstanding.take().expect("checked above");
        progress.silent = None;
        let over = progress.ended;
        if over {
            progress.finished = true;
        }
        // An error ends the subscription (RFC 6665 §4.1.3); a challenge does not, as Ampel
        // does not authenticate its NOTIFYs.
        if status >= 300 && !matches!(status, 401 | 407) {
            state.action = Action::Drop;
        }
        let again = state.progress.pending || state.action != Action::None;
        drop(state);
        if done.counted {
            self.release(sub.peer.addr());
        }
        if again && !over {
            self.mark(sub, false);
        }
        over
    }

    /// Gives back the room a NOTIFY held in the windows and lets the next one at its address go.
    fn release(&self, addr: SocketAddr) {
        let mut guard = self.inner();
        let inner = &mut *guard;
        inner.in_flight = inner.in_flight.saturating_sub(1);
        let mut wake = false;
        if let Some(address) = inner.addresses.get_mut(&addr) {
            address.in_flight = address.in_flight.saturating_sub(1);
            if let Some(next) = address.waiting.pop_front() {
                inner.ready.push_back(next);
                wake = true;
            }
            if address.in_flight == 0 && address.waiting.is_empty() {
                inner.addresses.remove(&addr);
            }
        }
        let window = inner.window.max(MIN_WINDOW);
        if inner.stalled && inner.in_flight <= window - window / 4 {
            inner.stalled = false;
            wake = true;
        }
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Takes what is due and what the windows let go; also returns when the next timer is due.
    fn take(&self, now: Instant, into: &mut Vec<Work>) -> Option<Instant> {
        let mut guard = self.inner();
        let inner = &mut *guard;
        for (level, queue) in inner.retries.iter_mut().enumerate() {
            while queue.front().is_some_and(|r| r.at <= now) {
                into.push(Work::Retry(queue.pop_front().expect("front exists"), level));
            }
        }
        while inner.deadlines.front().is_some_and(|r| r.at <= now) {
            into.push(Work::Deadline(inner.deadlines.pop_front().expect("front exists")));
        }
        while inner.expiries.peek().is_some_and(|e| e.0.at <= now) {
            let Reverse(expiry) = inner.expiries.pop().expect("peeked");
            if let Some(sub) = expiry.sub.upgrade() {
                into.push(Work::Expire(sub, expiry.at));
            }
        }
        let mut taken = 0;
        while taken < BATCH {
            let Some(sub) = inner.ready.front() else { break };
            let Peer::Udp { addr, .. } = sub.peer else {
                into.push(Work::Send(inner.ready.pop_front().expect("front exists"), false));
                taken += 1;
                continue;
            };
            if inner.in_flight >= inner.window.max(MIN_WINDOW) {
                inner.stalled = true;
                break;
            }
            let sub = inner.ready.pop_front().expect("front exists");
            let address = inner.addresses.entry(addr).or_default();
            if address.in_flight >= PER_ADDRESS {
                address.waiting.push_back(sub);
                continue;
            }
            address.in_flight += 1;
            inner.in_flight += 1;
            into.push(Work::Send(sub, true));
            taken += 1;
        }
        let fronts = inner.retries.iter().filter_map(|q| q.front().map(|r| r.at));
        fronts
            .chain(inner.deadlines.front().map(|r| r.at))
            .chain(inner.expiries.peek().map(|e| e.0.at))
            .min()
    }

    fn retry_later(&self, level: usize, sub: &Arc<Subscription>, cseq: u32, now: Instant) {
        let wait = (T1 * (1 << level)).min(T2);
        let retry = Retry { at: now + wait, sub: Arc::clone(sub), cseq };
        match sub.peer {
            Peer::Udp { .. } => self.inner().retries[level].push_back(retry),
            Peer::Tcp { .. } => {
                let retry = Retry { at: now + GIVE_UP, ..retry };
                self.inner().deadlines.push_back(retry);
            }
        }
    }

    /// Drops expiry entries that a later arming superseded, once they outnumber the
    /// subscriptions by far; without this, refreshes that keep shortening a subscription would
    /// grow the heap.
    fn compact(&self, subscriptions: usize) {
        if self.inner().expiries.len() <= 2 * subscriptions + 1024 {
            return;
        }
        let all = std::mem::take(&mut self.inner().expiries);
        // Checked without the notifier's lock, which is never held while taking a
        // subscription's.
        let live: Vec<_> = all
            .into_iter()
            .filter(|e| e.0.sub.upgrade().is_some_and(|s| lock(&s).progress.armed == Some(e.0.at)))
            .collect();
        self.inner().expiries.extend(live);
    }
}

/// Starts the sender; it ends when the server stops.
pub(super) fn spawn(sip: &Arc<Sip>) {
    let buffer = socket2::SockRef::from(&*sip.udp).recv_buffer_size().unwrap_or(0);
    let window = (buffer / ANSWER_COST).clamp(MIN_WINDOW, MAX_WINDOW);
    sip.subscriptions.notifier.inner().window = window;
    tracing::debug!(window, "notify window");
    super::spawn_until_stopped(sip, run(Arc::clone(sip)));
}

async fn run(sip: Arc<Sip>) {
    let notifier = Arc::clone(&sip.subscriptions.notifier);
    let mut bodies = Bodies::default();
    let mut outbox = Outbox::default();
    let mut work = Vec::new();
    loop {
        let now = Instant::now();
        let next = notifier.take(now, &mut work);
        if work.is_empty() {
            let woken = notifier.wake.notified();
            match next {
                Some(at) => {
                    tokio::select! {
                        () = woken => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
            continue;
        }
        for item in work.drain(..) {
            match item {
                Work::Send(sub, counted) => {
                    send(&sip, &sub, counted, &mut bodies, &mut outbox, now).await;
                }
                Work::Retry(retry, level) => resend(&sip, retry, level, &mut outbox, now).await,
                Work::Deadline(retry) => overdue(&sip, &retry),
                Work::Expire(sub, at) => expire(&sip, &sub, at),
            }
        }
        outbox.flush().await;
        notifier.compact(sip.subscriptions.len());
    }
}

/// What a ready subscription has to send.
enum Prepared {
    Nothing,
    Send { bytes: Bytes, cseq: u32, last: bool },
    Finish,
}

async fn send(
    sip: &Sip,
    sub: &Arc<Subscription>,
    counted: bool,
    bodies: &mut Bodies,
    outbox: &mut Outbox,
    now: Instant,
) {
    let notifier = &sip.subscriptions.notifier;
    match prepare(sip, sub, counted, bodies, now) {
        Prepared::Nothing => {
            if counted {
                notifier.release(sub.peer.addr());
            }
        }
        Prepared::Finish => {
            if counted {
                notifier.release(sub.peer.addr());
            }
            finish(sip, sub);
        }
        Prepared::Send { bytes, cseq, last } => {
            transmit(&sub.peer, &bytes, outbox).await;
            notifier.retry_later(0, sub, cseq, now);
            if last {
                // Nothing follows a terminating NOTIFY.
                sip.app.hub.close(&sub.conn);
            }
        }
    }
}

/// Decides what to send and builds the NOTIFY; the subscription's lock is not held while the
/// document is made, which may read the hub.
fn prepare(
    sip: &Sip,
    sub: &Arc<Subscription>,
    counted: bool,
    bodies: &mut Bodies,
    now: Instant,
) -> Prepared {
    let plan = match plan(sip, sub, now) {
        Ok(plan) => plan,
        Err(outcome) => return outcome,
    };
    let (said, calls) = document(sip, sub, &plan, bodies);
    build(sub, &plan, said, &calls, counted, now)
}

/// What a NOTIFY is to say (the dialog package's document without its version), and for the
/// dialog package the calls it shows.
fn document(
    sip: &Sip,
    sub: &Subscription,
    plan: &Plan,
    bodies: &mut Bodies,
) -> (Bytes, Vec<(String, ampel_core::fact::CallState)>) {
    match sub.package {
        Package::Presence => {
            (bodies.presence(sub.slot.idx, &sub.slot.id, plan.latest.as_ref()), Vec::new())
        }
        Package::Dialog => {
            let calls = super::subscribe::dialog_calls(sip, sub);
            (Bytes::from(dialog_info::render(&entity(&sub.slot), 0, &calls)), calls)
        }
    }
}

/// Tells every subscriber that Ampel stops (`terminated;reason=deactivated`, RFC 6665 §4.2.2):
/// a subscriber may subscribe again at once, and a restarted Ampel, which keeps no
/// subscriptions, then serves it without the phone waiting for its next refresh to learn that
/// its subscription is gone. Best effort: each goes out once, within `within`, unanswered.
pub async fn farewell(sip: &Sip, within: Duration) {
    let deadline = Instant::now() + within;
    let mut bodies = Bodies::default();
    let mut outbox = Outbox::default();
    let mut sent = 0usize;
    for sub in sip.subscriptions.all() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let latest = {
            let state = lock(&sub);
            if !state.started || state.progress.ended() {
                continue;
            }
            state.latest.clone()
        };
        let plan = Plan { force: true, terminated: Some("deactivated"), remaining: 0, latest };
        let (said, calls) = document(sip, &sub, &plan, &mut bodies);
        if let Prepared::Send { bytes, .. } = build(&sub, &plan, said, &calls, false, now) {
            transmit(&sub.peer, &bytes, &mut outbox).await;
            sent += 1;
        }
    }
    outbox.flush().await;
    tracing::info!(subscriptions = sent, "sip subscribers told that Ampel stops");
}

/// What the next NOTIFY is to carry, decided under the subscription's lock.
struct Plan {
    /// Sent even when the document did not change (a refresh, the end).
    force: bool,
    terminated: Option<&'static str>,
    remaining: u64,
    latest: Option<Bytes>,
}

/// Takes up the hub's update and the pending action; `Err` when nothing is to be sent now.
fn plan(sip: &Sip, sub: &Subscription, now: Instant) -> Result<Plan, Prepared> {
    let mut updates = Vec::new();
    // One subscription watches one user: the queue holds that user's newest state at most.
    let _ = sub.conn.take_batch(&mut updates);
    let mut state = lock(sub);
    state.progress.queued = false;
    if let Some(latest) = updates.pop() {
        state.latest = Some(latest);
        state.progress.pending = true;
    }
    if state.progress.finished {
        return Err(Prepared::Nothing);
    }
    if state.action == Action::Drop || !sub.peer.is_open() {
        state.progress.finished = true;
        let held = state.progress.outstanding.take().is_some_and(|o| o.counted);
        drop(state);
        if held {
            sip.subscriptions.notifier.release(sub.peer.addr());
        }
        return Err(Prepared::Finish);
    }
    if state.progress.ended || state.progress.outstanding.is_some() {
        return Err(Prepared::Nothing);
    }
    if sub.slot.is_deleted() && !matches!(state.action, Action::End(_)) {
        // The watched user is gone for good (RFC 6665 §4.2.2: not worth subscribing again).
        state.action = Action::End("noresource");
    }
    state.progress.pending = false;
    let (force, terminated) = match std::mem::replace(&mut state.action, Action::None) {
        Action::End(reason) => (true, Some(reason)),
        Action::Refresh => (true, None),
        Action::None | Action::Drop => (false, None),
    };
    let remaining = state.expires.saturating_duration_since(now).as_secs();
    Ok(Plan { force, terminated, remaining, latest: state.latest.clone() })
}

/// The NOTIFY for a document (`said`: what it says, without the dialog package's version),
/// unless it says what the last one said and nothing forces it.
fn build(
    sub: &Subscription,
    plan: &Plan,
    said: Bytes,
    calls: &[(String, ampel_core::fact::CallState)],
    counted: bool,
    now: Instant,
) -> Prepared {
    let mut state = lock(sub);
    if !plan.force && state.sent.as_ref() == Some(&said) {
        return Prepared::Nothing;
    }
    let body = match sub.package {
        Package::Presence => said.clone(),
        Package::Dialog => {
            let version = state.progress.version;
            state.progress.version += 1;
            Bytes::from(dialog_info::render(&entity(&sub.slot), version, calls))
        }
    };
    state.sent = Some(said);
    let cseq = state.progress.cseq;
    state.progress.cseq += 1;
    let subscription_state = match plan.terminated {
        Some(reason) => format!("terminated;reason={reason}"),
        None => format!("active;expires={}", plan.remaining),
    };
    let bytes = wire(sub, cseq, &subscription_state, &body);
    state.progress.outstanding = Some(Outstanding { cseq, bytes: bytes.clone(), counted });
    state.progress.silent.get_or_insert(now);
    state.progress.ended = plan.terminated.is_some();
    Prepared::Send { bytes, cseq, last: plan.terminated.is_some() }
}

fn entity(slot: &Slot) -> String {
    format!("sip:{}", slot.id)
}

/// The NOTIFY on the wire: the dialog's headers around a document made once.
fn wire(sub: &Subscription, cseq: u32, subscription_state: &str, body: &[u8]) -> Bytes {
    let content_type = match sub.package {
        Package::Presence => "application/pidf+xml",
        Package::Dialog => "application/dialog-info+xml",
    };
    let mut out = Vec::with_capacity(
        320 + sub.target.len() + sub.from.len() + sub.to.len() + sub.call_id.len() + body.len(),
    );
    // The branch is unique without a random draw: Ampel's tag is random per dialog, and the
    // CSeq never repeats within it (RFC 3261 §8.1.1.7).
    let _ = write!(
        out,
        "NOTIFY {target} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local};branch=z9hG4bK{tag}.{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: {from}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} NOTIFY\r\n\
         Contact: <sip:ampel@{local}>\r\n\
         Event: {event}\r\n\
         Subscription-State: {subscription_state}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {length}\r\n\r\n",
        target = sub.target,
        transport = sub.peer.transport(),
        local = sub.local,
        tag = sub.our_tag,
        from = sub.from,
        to = sub.to,
        call_id = sub.call_id,
        event = sub.event,
        length = body.len(),
    );
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Writes a NOTIFY; a failure means the peer is gone, which the missing answer shows. Over UDP
/// it waits in `outbox` for the others of its batch.
async fn transmit(peer: &Peer, bytes: &Bytes, outbox: &mut Outbox) {
    match peer {
        Peer::Udp { socket, addr } => outbox.push(socket, *addr, bytes.clone()).await,
        Peer::Tcp { tx, addr } => match tx.try_send(bytes.to_vec()) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(bytes)) => {
                // A slow connection must not hold up the sender; the dialog's next NOTIFY waits
                // for this one's answer, so the order on the connection is kept.
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(bytes).await;
                });
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(%addr, "tcp peer is gone");
            }
        },
    }
}

/// A retransmission timer over UDP fired.
async fn resend(sip: &Sip, retry: Retry, level: usize, outbox: &mut Outbox, now: Instant) {
    let notifier = &sip.subscriptions.notifier;
    let sub = &retry.sub;
    let Some((bytes, release)) = recheck(sub, retry.cseq, now) else { return };
    if release {
        notifier.release(sub.peer.addr());
    }
    match bytes {
        Some(bytes) => {
            transmit(&sub.peer, &bytes, outbox).await;
            notifier.retry_later((level + 1).min(3), sub, retry.cseq, now);
        }
        None => notifier.mark(sub, false),
    }
}

/// What a retransmission timer does: nothing (`None`) when the NOTIFY was answered or
/// replaced; otherwise whether it gives back its room in the windows, and the bytes to send
/// again, or none when the transaction is abandoned (given up on, or newer state waits).
fn recheck(sub: &Subscription, cseq: u32, now: Instant) -> Option<(Option<Bytes>, bool)> {
    let mut state = lock(sub);
    let newer = state.progress.pending || state.action != Action::None;
    let ended = state.progress.ended;
    let silent = state.progress.silent.unwrap_or(now);
    let outstanding = state.progress.outstanding.as_mut().filter(|o| o.cseq == cseq)?;
    // Unanswered after T1, a NOTIFY is taken to be lost and no longer holds up others.
    let release = std::mem::replace(&mut outstanding.counted, false);
    let expired = now.duration_since(silent) >= GIVE_UP;
    let stale = newer && !ended && !expired;
    if !expired && !stale {
        return Some((Some(outstanding.bytes.clone()), release));
    }
    state.progress.outstanding = None;
    if stale {
        // Whether the subscriber has the last state is unknown: the newest goes out whether
        // or not it differs from it.
        state.sent = None;
    } else {
        tracing::debug!(peer = %sub.peer.addr(), "notify unanswered, subscription ends");
        state.action = Action::Drop;
    }
    Some((None, release))
}

/// A NOTIFY over TCP went unanswered for 64·T1.
fn overdue(sip: &Sip, retry: &Retry) {
    let mut state = lock(&retry.sub);
    if state.progress.outstanding.as_ref().is_none_or(|o| o.cseq != retry.cseq) {
        return;
    }
    state.progress.outstanding = None;
    state.action = Action::Drop;
    drop(state);
    sip.subscriptions.notifier.mark(&retry.sub, false);
}

/// An expiry timer fired: the subscription ends with reason `timeout` unless it was refreshed,
/// in which case the timer is armed for the new expiry.
fn expire(sip: &Sip, sub: &Arc<Subscription>, at: Instant) {
    let notifier = &sip.subscriptions.notifier;
    let mut state = lock(sub);
    if state.progress.armed != Some(at) {
        return;
    }
    state.progress.armed = None;
    if state.progress.ended() {
        return;
    }
    if state.expires > at {
        drop(state);
        notifier.arm(sub);
        return;
    }
    if state.action != Action::Drop {
        state.action = Action::End("timeout");
    }
    drop(state);
    notifier.mark(sub, false);
}

/// Forgets a subscription that is over.
fn finish(sip: &Sip, sub: &Arc<Subscription>) {
    sip.app.hub.close(&sub.conn);
    sip.subscriptions.remove(sub);
}

/// Presence documents rendered from a user's projections, so that every subscription that
/// sees the same projection sends the same bytes. The hub shares one encoded projection per
/// relation, so most lookups match by pointer; equal contents match too.
#[derive(Default)]
struct Bodies {
    by_user: HashMap<u32, Vec<(Bytes, Bytes)>>,
    count: usize,
}

impl Bodies {
    /// The document of user `id` (at `idx` in the directory) for an encoded projection.
    fn presence(&mut self, idx: u32, id: &str, projection: Option<&Bytes>) -> Bytes {
        let entity = || format!("sip:{id}");
        let Some(projection) = projection else {
            return presence_document(&entity(), None);
        };
        if let Some(rendered) = self.by_user.get(&idx).and_then(|known| {
            known.iter().find_map(|(p, body)| {
                let same = p.as_ptr() == projection.as_ptr() && p.len() == projection.len();
                (same || p == projection).then(|| body.clone())
            })
        }) {
            return rendered;
        }
        let rendered = presence_document(&entity(), Some(projection));
        if self.count >= MAX_BODIES {
            self.by_user.clear();
            self.count = 0;
        }
        let known = self.by_user.entry(idx).or_default();
        // A few relations see a user at a time; older projections are not seen again.
        if known.len() >= 8 {
            known.remove(0);
            self.count -= 1;
        }
        known.push((projection.clone(), rendered.clone()));
        self.count += 1;
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn projection(json: &str) -> Bytes {
        Bytes::copy_from_slice(json.as_bytes())
    }

    #[test]
    fn one_document_is_rendered_per_projection_and_shared() {
        let mut bodies = Bodies::default();
        let busy = projection(r#"{"availability":"busy","activity":"busy","note":null}"#);
        let first = bodies.presence(7, "a@example.com", Some(&busy));
        let text = String::from_utf8(first.to_vec()).unwrap();
        assert!(text.contains("entity=\"sip:a@example.com\"") && text.contains("<rpid:busy/>"));

        // The same projection, shared or only equal, gives the very same bytes.
        let shared = bodies.presence(7, "a@example.com", Some(&busy.clone()));
        let equal = bodies.presence(7, "a@example.com", Some(&Bytes::copy_from_slice(&busy)));
        assert_eq!((shared.as_ptr(), equal.as_ptr()), (first.as_ptr(), first.as_ptr()));

        // Another projection or another user is another document.
        let away = projection(r#"{"availability":"away","activity":"away"}"#);
        assert!(bodies.presence(7, "a@example.com", Some(&away)).windows(4).any(|w| w == b"away"));
        let other = bodies.presence(8, "b@example.com", Some(&busy));
        assert_ne!(other.as_ptr(), first.as_ptr());
        assert_eq!(bodies.count, 3);
    }

    #[test]
    fn the_document_cache_stays_bounded() {
        let mut bodies = Bodies::default();
        for i in 0..(MAX_BODIES as u32 + 10) {
            let p = projection(&format!(r#"{{"availability":"busy","note":{{"text":"{i}"}}}}"#));
            bodies.presence(i % 3, "a@example.com", Some(&p));
        }
        assert!(bodies.count <= MAX_BODIES);
        assert!(bodies.by_user.values().all(|known| known.len() <= 8));
    }
}
