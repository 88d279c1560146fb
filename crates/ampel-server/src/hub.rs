//! The presence hub: the users, their facts, their aggregated presence and who watches them.
//!
//! Every change of a fact goes through [`Hub::update`]: under the user's lock it changes the
//! facts, aggregates, enqueues the durable writes (in order), and hands the projections of a
//! changed presence to the watchers' queues. The hub never writes to a socket itself and never
//! waits for a watcher; see [`watch`]. Changes that happen by themselves are driven by
//! [`timers`].

pub mod timers;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, RwLock};

use ampel_core::aggregate::end_of;
use ampel_core::visibility::{self, Member, Projected, Relation, Viewer};
use ampel_core::{Aggregate, Fact, Policy, Presence, Source, aggregate};
use ampel_store::{HistoryEntry, Op, UserRecord};
use bytes::Bytes;
use jiff::Timestamp;

use crate::auth::Principal;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::persist::{Pending, Persist};
use timers::Timers;
use watch::Conn;

/// The hub.
pub struct Hub {
    /// The policy in force.
    pub policy: Policy,
    /// The one clock of the server.
    pub clock: Arc<dyn Clock>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    persist: Persist,
    timers: Timers,
    directory: RwLock<Directory>,
    /// Ids whose creation is being stored.
    creating: Mutex<std::collections::HashSet<String>>,
}

#[derive(Default)]
struct Directory {
    index: HashMap<String, u32>,
    slots: Vec<Arc<Slot>>,
}

/// One user.
pub struct Slot {
    /// The user's position in the directory, stable for the life of the process.
    pub idx: u32,
    /// `user@domain`.
    pub id: String,
    /// The directory data. Lock order: a user's `state` may be held while taking any user's
    /// `record`, never the other way round, so that watching each other cannot deadlock.
    record: RwLock<Arc<UserRecord>>,
    state: Mutex<SlotState>,
    /// The instant of this user's live timer entry in nanoseconds (`UNARMED` for none).
    /// Written under the `state` lock; an atomic so that the timer task can drop superseded
    /// heap entries without taking every user's lock.
    armed_at: AtomicI64,
    /// Counts changes of the user's telephony facts, for watchers of calls (busy lamps) that
    /// must hear of a call going on hold even when the presence stays the same.
    calls: tokio::sync::watch::Sender<u64>,
    /// The user was erased; whoever still holds the slot (a SIP subscription) lets go of it.
    deleted: AtomicBool,
}

const UNARMED: i64 = i64::MIN;

fn nanos(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

struct SlotState {
    facts: Vec<Fact>,
    aggregate: Aggregate,
    /// The encoded projection of `aggregate` for each relation, made when first needed; every
    /// watcher in one relation shares the same bytes, snapshots included.
    encoded: [Option<Bytes>; Relation::ALL.len()],
    watchers: Vec<Watch>,
    /// Changes this user may still make at once, and when that was last counted.
    allowance: (f64, Timestamp),
}

/// How many changes of one user's facts the interfaces take in a burst, and per second after
/// it. Far above what a person, their devices and their calls produce; it bounds what one
/// misbehaving client can write to the database and the history.
const BURST: f64 = 200.0;
const PER_SECOND: f64 = 50.0;

struct Watch {
    conn: Arc<Conn>,
    relation: Relation,
}

/// A change to a user's facts, as the hub applies it.
#[derive(Debug, Clone)]
// Most changes are puts, and a change lives only until the hub applies it: boxing the fact
// would cost an allocation on every put to save space on the few removals.
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// Put a fact, replacing the one with the same source and key.
    Put(Fact),
    /// Remove the fact with this source and key.
    Remove(Source, String),
}

impl Hub {
    /// A hub over the users and facts loaded from the store.
    pub fn new(
        policy: Policy,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        persist: Persist,
        users: Vec<UserRecord>,
        facts: Vec<(String, Fact)>,
        latest: Vec<HistoryEntry>,
    ) -> Hub {
        let hub = Hub {
            policy,
            clock,
            metrics,
            persist,
            timers: Timers::default(),
            directory: RwLock::default(),
            creating: Mutex::default(),
        };
        let mut by_user: HashMap<String, Vec<Fact>> = HashMap::new();
        for (user, fact) in facts {
            by_user.entry(user).or_default().push(fact);
        }
        let mut last_told: HashMap<String, HistoryEntry> =
            latest.into_iter().map(|e| (e.user.clone(), e)).collect();
        let now = hub.clock.now();
        for record in users {
            let facts = by_user.remove(&record.id).unwrap_or_default();
            // What changed while the server was down is replayed, so that `since` is when the
            // current state began and not when the server came back.
            let previous = last_told.remove(&record.id).map(|told| {
                ampel_core::aggregate::catch_up(&facts, &hub.policy, &told.presence, told.at, now)
            });
            hub.insert(record, facts, previous.as_ref());
        }
        hub
    }

    /// Starts the timer task; call once, inside the runtime.
    pub fn spawn_timers(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Timers::run(Arc::clone(self)))
    }

    /// Adds a user. `previous` is the presence last recorded for it, so that `since` carries
    /// over a restart when the state did not change.
    fn insert(
        &self,
        record: UserRecord,
        facts: Vec<Fact>,
        previous: Option<&Presence>,
    ) -> Arc<Slot> {
        let now = self.clock.now();
        let aggregate = aggregate(&facts, &self.policy, now, previous);
        let mut dir = self.directory.write().expect("directory lock");
        let idx = u32::try_from(dir.slots.len()).expect("fewer than 4 billion users");
        let armed = aggregate.explanation.next_change;
        let slot = Arc::new(Slot {
            idx,
            id: record.id.clone(),
            record: RwLock::new(Arc::new(record)),
            state: Mutex::new(SlotState {
                facts,
                aggregate,
                encoded: Default::default(),
                watchers: Vec::new(),
                allowance: (BURST, now),
            }),
            armed_at: AtomicI64::new(armed.map_or(UNARMED, nanos)),
            calls: tokio::sync::watch::Sender::new(0),
            deleted: AtomicBool::new(false),
        });
        dir.index.insert(slot.id.clone(), idx);
        dir.slots.push(Arc::clone(&slot));
        drop(dir);
        if let Some(at) = armed {
            self.timers.schedule(at, idx);
        }
        slot
    }

    /// Adds a user and waits until it is stored; `None` when the id is taken. An id being
    /// created is reserved until its write is done, so that of two requests for one id exactly
    /// one succeeds, while different ids are created in parallel.
    pub async fn create_user(
        &self,
        record: UserRecord,
    ) -> Option<Result<(), crate::persist::PersistError>> {
        {
            let mut creating = self.creating.lock().expect("creation lock");
            if self.user(&record.id).is_some() || !creating.insert(record.id.clone()) {
                return None;
            }
        }
        // The first history entry records when the user's (offline) state began, so that
        // `since` means the same after a restart.
        let now = self.clock.now();
        let presence = aggregate(&[], &self.policy, now, None).presence;
        let entry = HistoryEntry { user: record.id.clone(), at: now, presence: presence.clone() };
        let pending =
            self.persist.submit(vec![Op::PutUser(record.clone()), Op::AppendHistory(entry)]);
        let result = pending.committed().await;
        let id = record.id.clone();
        if result.is_ok() {
            self.insert(record, Vec::new(), Some(&presence));
        }
        self.creating.lock().expect("creation lock").remove(&id);
        Some(result)
    }

    /// Erases a user with everything Ampel holds about them (a data-protection request): the
    /// record, tokens, facts and history. Watchers are told the user is offline and dropped;
    /// the user's position in the directory stays taken, so indices held elsewhere stay valid.
    pub async fn delete_user(&self, slot: &Slot) -> Result<(), crate::persist::PersistError> {
        self.persist.submit(vec![Op::DeleteUser { id: slot.id.clone() }]).committed().await?;
        self.directory.write().expect("directory lock").index.remove(&slot.id);
        slot.deleted.store(true, Relaxed);
        let now = self.clock.now();
        let mut state = slot.state.lock().expect("slot lock");
        state.facts.clear();
        let mut ops = Vec::new();
        self.settle(slot, &mut state, now, &mut ops);
        for w in std::mem::take(&mut state.watchers) {
            w.conn.forget_watched(slot.idx);
            self.metrics.subscriptions.fetch_sub(1, Relaxed);
        }
        // The settle above recorded the user going offline; that history row must not outlive
        // the erasure, so it is not written.
        drop(ops);
        Ok(())
    }

    /// Waits for a write of `slot`'s facts. When it fails, the user's facts are read back from
    /// the database, so that nobody goes on seeing a change that was never stored.
    pub async fn committed(
        &self,
        slot: &Slot,
        pending: Pending,
    ) -> Result<(), crate::persist::PersistError> {
        let result = pending.committed().await;
        if result.is_err() {
            self.reload(slot).await;
        }
        result
    }

    async fn reload(&self, slot: &Slot) {
        let id = slot.id.clone();
        let stored = match self.persist.read(|store| store.facts()).await {
            Ok(all) => all.into_iter().filter(|(user, _)| *user == id).map(|(_, f)| f).collect(),
            Err(e) => {
                tracing::error!(user = %slot.id, error = %e, "facts could not be read back");
                return;
            }
        };
        let now = self.clock.now();
        let mut state = slot.state.lock().expect("slot lock");
        state.facts = stored;
        let mut ops = Vec::new();
        self.settle(slot, &mut state, now, &mut ops);
        self.persist.submit_detached(ops);
    }

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<Arc<Slot>> {
        let dir = self.directory.read().expect("directory lock");
        let idx = *dir.index.get(id)?;
        Some(Arc::clone(&dir.slots[idx as usize]))
    }

    /// Every user's record.
    pub fn records(&self) -> Vec<UserRecord> {
        let slots: Vec<Arc<Slot>> = {
            let dir = self.directory.read().expect("directory lock");
            dir.index.values().map(|i| Arc::clone(&dir.slots[*i as usize])).collect()
        };
        slots.iter().map(|s| UserRecord::clone(&s.record())).collect()
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.directory.read().expect("directory lock").index.len()
    }

    /// Replaces a user's record (name, groups, delegates, block list) and re-derives how each of
    /// its watchers stands to it.
    pub fn update_record(&self, slot: &Slot, record: UserRecord) -> Pending {
        let mut state = slot.state.lock().expect("slot lock");
        let pending = self.persist.submit(vec![Op::PutUser(record.clone())]);
        *slot.record.write().expect("record lock") = Arc::new(record);
        let subject = slot.record();
        let mut watchers = std::mem::take(&mut state.watchers);
        for w in &mut watchers {
            let relation = self.relation_to(&w.conn.viewer, &subject);
            if relation != w.relation {
                // A watcher just blocked (or unblocked) sees the difference at once.
                w.relation = relation;
                w.conn.push(slot.idx, self.encoded(slot, &mut state, relation));
            }
        }
        state.watchers = watchers;
        pending
    }

    /// Applies changes to a user's facts and returns the durable write to wait for.
    pub fn update(&self, slot: &Slot, changes: Vec<Change>) -> Pending {
        let now = self.clock.now();
        let mut state = slot.state.lock().expect("slot lock");
        let mut ops = Vec::with_capacity(changes.len() + 1);
        let calls = changes.iter().any(|c| match c {
            Change::Put(fact) => fact.source == Source::Telephony,
            Change::Remove(source, _) => *source == Source::Telephony,
        });
        for change in changes {
            self.metrics.fact_updates.fetch_add(1, Relaxed);
            match change {
                Change::Put(fact) => {
                    state.facts.retain(|f| !f.same_key(fact.source, &fact.key));
                    ops.push(Op::PutFact { user: slot.id.clone(), fact: fact.clone() });
                    state.facts.push(fact);
                }
                Change::Remove(source, key) => {
                    state.facts.retain(|f| !f.same_key(source, &key));
                    ops.push(Op::RemoveFact { user: slot.id.clone(), source, key });
                }
            }
        }
        self.settle(slot, &mut state, now, &mut ops);
        if calls {
            slot.calls.send_modify(|n| *n += 1);
        }
        self.persist.submit(ops)
    }

    /// Counts one change of `slot`'s facts against its allowance; `Err` with the seconds to
    /// wait when the allowance is used up.
    pub fn admit(&self, slot: &Slot) -> Result<(), u64> {
        let now = self.clock.now();
        let mut state = slot.state.lock().expect("slot lock");
        let (left, counted) = state.allowance;
        let elapsed = now.duration_since(counted).as_secs_f64().max(0.0);
        let left = (left + elapsed * PER_SECOND).min(BURST);
        if left < 1.0 {
            state.allowance = (left, now);
            return Err(((1.0 - left) / PER_SECOND).ceil() as u64);
        }
        state.allowance = (left - 1.0, now);
        Ok(())
    }

    /// Refreshes the fact with this source and key with a new state, observed now; `None` when
    /// the user holds no such fact (it ended or expired), in which case nothing changes.
    pub fn touch(
        &self,
        slot: &Slot,
        source: Source,
        key: &str,
        state: ampel_core::FactState,
    ) -> Option<Pending> {
        let now = self.clock.now();
        let mut guard = slot.state.lock().expect("slot lock");
        let s = &mut *guard;
        let fact = s.facts.iter_mut().find(|f| f.same_key(source, key))?;
        if end_of(fact, &self.policy).is_some_and(|end| end <= now) {
            return None;
        }
        fact.state = state;
        fact.observed = now;
        self.metrics.fact_updates.fetch_add(1, Relaxed);
        let mut ops = vec![Op::PutFact { user: slot.id.clone(), fact: fact.clone() }];
        self.settle(slot, s, now, &mut ops);
        Some(self.persist.submit(ops))
    }

    /// How many timer entries are armed, superseded ones included.
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// Drops timer entries that a later arming superseded, once they outnumber the users by far;
    /// without this, requests that keep moving a user's next change earlier would grow the heap.
    fn compact_timers(&self) {
        let users = self.directory.read().expect("directory lock").slots.len();
        if self.timers.len() <= 2 * users + 1024 {
            return;
        }
        let slots = self.directory.read().expect("directory lock").slots.clone();
        self.timers.retain(|at, user| {
            slots.get(user as usize).is_some_and(|s| s.armed_at.load(Relaxed) == nanos(at))
        });
    }

    /// Called by the timer task when the entry for `user` at `at` fires.
    fn timer_fired(&self, user: u32, at: Timestamp) {
        let Some(slot) =
            self.directory.read().expect("directory lock").slots.get(user as usize).cloned()
        else {
            return;
        };
        let now = self.clock.now();
        let mut state = slot.state.lock().expect("slot lock");
        if slot.armed_at.load(Relaxed) == nanos(at) {
            slot.armed_at.store(UNARMED, Relaxed);
        }
        match state.aggregate.explanation.next_change {
            Some(change) if change <= now => {
                // Evaluated at the instant of the change, not when the timer got round to it,
                // so that `since` says when the state began; a change still due after it is
                // armed again and fires at once.
                self.metrics.timer_evaluations.fetch_add(1, Relaxed);
                let mut ops = Vec::new();
                self.settle(&slot, &mut state, change, &mut ops);
                self.persist.submit_detached(ops);
            }
            Some(next) => self.arm(&slot, next),
            None => {}
        }
    }

    /// Drops dead facts, aggregates, tells the watchers, records history and arms the timer.
    fn settle(&self, slot: &Slot, state: &mut SlotState, now: Timestamp, ops: &mut Vec<Op>) {
        let policy = &self.policy;
        state.facts.retain(|f| {
            let dead = end_of(f, policy).is_some_and(|end| end <= now);
            if dead {
                if f.source == Source::Telephony {
                    slot.calls.send_modify(|n| *n += 1);
                }
                ops.push(Op::RemoveFact {
                    user: slot.id.clone(),
                    source: f.source,
                    key: f.key.clone(),
                });
            }
            !dead
        });

        let previous = &state.aggregate;
        let next = aggregate(&state.facts, policy, now, Some(&previous.presence));
        let mut encoded = Default::default();
        if next.presence.differs_for_watchers(&previous.presence) {
            self.metrics.presence_changes.fetch_add(1, Relaxed);
            encoded = self.notify(slot, &state.watchers, previous, &next);
            ops.push(Op::AppendHistory(HistoryEntry {
                user: slot.id.clone(),
                at: now,
                presence: next.presence.clone(),
            }));
        }
        let next_change = next.explanation.next_change;
        state.aggregate = next;
        state.encoded = encoded;
        if let Some(at) = next_change {
            self.arm(slot, at);
        }
    }

    /// Arms the timer for `slot` at `at` unless an earlier one is armed; call with the slot locked.
    fn arm(&self, slot: &Slot, at: Timestamp) {
        let armed = slot.armed_at.load(Relaxed);
        if armed == UNARMED || nanos(at) < armed {
            slot.armed_at.store(nanos(at), Relaxed);
            self.timers.schedule(at, slot.idx);
        }
    }

    /// Queues the new projection for each watcher whose view of the presence changed, and
    /// returns the encodings made. Projections are made and serialised once per relation, not
    /// once per watcher.
    fn notify(
        &self,
        slot: &Slot,
        watchers: &[Watch],
        before: &Aggregate,
        after: &Aggregate,
    ) -> [Option<Bytes>; Relation::ALL.len()] {
        let mut changed: [Option<bool>; Relation::ALL.len()] = Default::default();
        let mut encoded: [Option<Bytes>; Relation::ALL.len()] = Default::default();
        for w in watchers {
            let r = w.relation.index();
            let differs = *changed[r].get_or_insert_with(|| {
                let new = visibility::project(&slot.id, after, w.relation, &self.policy);
                let old = visibility::project(&slot.id, before, w.relation, &self.policy);
                let differs = new != old;
                encoded[r] = Some(encode(&new));
                differs
            });
            if differs {
                let bytes = encoded[r].clone().expect("encoded with the comparison");
                self.metrics.notifications.fetch_add(1, Relaxed);
                if w.conn.push(slot.idx, bytes) {
                    self.metrics.notifications_coalesced.fetch_add(1, Relaxed);
                }
            }
        }
        encoded
    }

    /// The encoded projection of the current presence for `relation`.
    fn encoded(&self, slot: &Slot, state: &mut SlotState, relation: Relation) -> Bytes {
        let cached = &mut state.encoded[relation.index()];
        let bytes = cached.get_or_insert_with(|| {
            encode(&visibility::project(&slot.id, &state.aggregate, relation, &self.policy))
        });
        bytes.clone()
    }

    /// The presence of `slot` as `viewer` may see it.
    pub fn presence_for(&self, viewer: &Principal, slot: &Slot) -> Projected {
        let state = slot.state.lock().expect("slot lock");
        let relation = self.relation_to(viewer, &slot.record());
        visibility::project(&slot.id, &state.aggregate, relation, &self.policy)
    }

    /// The full aggregate of `slot` with the relation of `viewer` to it; the caller decides
    /// what of it to show.
    pub fn aggregate_for(&self, viewer: &Principal, slot: &Slot) -> (Aggregate, Relation) {
        let state = slot.state.lock().expect("slot lock");
        (state.aggregate.clone(), self.relation_to(viewer, &slot.record()))
    }

    /// The facts a user holds now.
    pub fn facts(&self, slot: &Slot) -> Vec<Fact> {
        slot.state.lock().expect("slot lock").facts.clone()
    }

    /// Subscribes `conn` to `slot` and queues the current state as its snapshot.
    pub fn watch(&self, conn: &Arc<Conn>, slot: &Slot) {
        let mut state = slot.state.lock().expect("slot lock");
        if !conn.add_watched(slot.idx) {
            return;
        }
        let relation = self.relation_to(&conn.viewer, &slot.record());
        let snapshot = self.encoded(slot, &mut state, relation);
        conn.push(slot.idx, snapshot);
        state.watchers.push(Watch { conn: Arc::clone(conn), relation });
        self.metrics.subscriptions.fetch_add(1, Relaxed);
    }

    /// Ends the subscription of `conn` to `slot`.
    pub fn unwatch(&self, conn: &Conn, slot: &Slot) {
        if conn.remove_watched(slot.idx) {
            self.drop_watch(conn.id, slot);
        }
    }

    /// Ends every subscription of a closing connection.
    pub fn close(&self, conn: &Conn) {
        let slots: Vec<Arc<Slot>> = {
            let dir = self.directory.read().expect("directory lock");
            conn.close().into_iter().filter_map(|i| dir.slots.get(i as usize).cloned()).collect()
        };
        for slot in slots {
            self.drop_watch(conn.id, &slot);
        }
    }

    fn drop_watch(&self, conn: u64, slot: &Slot) {
        let mut state = slot.state.lock().expect("slot lock");
        let before = state.watchers.len();
        state.watchers.retain(|w| w.conn.id != conn);
        let gone = before - state.watchers.len();
        self.metrics.subscriptions.fetch_sub(gone as i64, Relaxed);
    }

    /// How `viewer` stands to the user with `subject` as record.
    fn relation_to(&self, viewer: &Principal, subject: &UserRecord) -> Relation {
        let subject = member(subject);
        match viewer {
            Principal::Admin => visibility::relation(Viewer::Admin, subject),
            Principal::User(id) if *id == subject.id => Relation::Itself,
            Principal::User(id) => {
                // A viewer that is not (or no longer) a user sees what a stranger sees.
                let Some(slot) = self.user(id) else { return Relation::Blocked };
                visibility::relation(Viewer::User(member(&slot.record())), subject)
            }
        }
    }

    /// Deletes history older than the policy's retention; returns the write to wait for.
    pub fn purge_history(&self) -> Pending {
        let keep =
            jiff::SignedDuration::from_hours(24 * i64::from(self.policy.history.retention_days));
        let before = self.clock.now().saturating_sub(keep).unwrap_or(Timestamp::MIN);
        self.persist.submit(vec![Op::PurgeHistory { before }])
    }

    /// Runs a read against the database, after the writes enqueued before it.
    pub fn persist(&self) -> &Persist {
        &self.persist
    }
}

impl Slot {
    /// A receiver that sees every change of the user's telephony facts (a call that starts,
    /// ends, is answered or held), whether or not the presence changed with it.
    pub fn calls_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.calls.subscribe()
    }

    /// True once the user was erased.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Relaxed)
    }

    /// The user's directory record.
    pub fn record(&self) -> Arc<UserRecord> {
        Arc::clone(&self.record.read().expect("record lock"))
    }
}

fn member(record: &UserRecord) -> Member<'_> {
    Member {
        id: &record.id,
        groups: &record.groups,
        delegates: &record.delegates,
        blocked: &record.blocked,
    }
}

/// The wire form of a projected presence, shared by every push interface.
pub fn encode(p: &Projected) -> Bytes {
    Bytes::from(serde_json::to_vec(p).expect("a projection always serialises"))
}
