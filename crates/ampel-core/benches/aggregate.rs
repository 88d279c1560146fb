//! The price of one fact change in the core: replacing a fact of a user and aggregating again,
//! and turning the new presence into the bytes one watcher receives.
//!
//! These are the two pieces of work the hub does under a user's lock for every change, before
//! any I/O: `aggregate` once per change, `project` and serialisation once per relation of the
//! watchers. Everything else a notification costs (queues, WebSocket framing, the socket) is
//! measured end to end by the load tool in `bench/`. Run with
//! `cargo bench -p ampel-core --bench aggregate`.

use ampel_core::fact::{CallState, Details, DeviceState, ShowAs};
use ampel_core::visibility::{self, Relation};
use ampel_core::{Aggregate, Availability, Fact, FactState, Note, Policy, Source};
use divan::Bencher;
use jiff::{SignedDuration, Timestamp};

fn main() {
    divan::main();
}

/// A fixed instant, so that every run aggregates the same timeline.
fn now() -> Timestamp {
    Timestamp::from_second(1_767_000_000).expect("a valid instant")
}

fn minutes(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

/// The `i`-th fact of a user with a realistic mix: out of every ten facts, three device
/// sessions, two calls, four calendar entries (two running back to back, two later today) and
/// one manual status with a note.
fn fact(i: usize) -> Fact {
    let now = now();
    let ago = |m: i64| now - minutes(m);
    let key = format!("k{i}");
    match i % 10 {
        0..=2 => {
            let state = [DeviceState::Active, DeviceState::Idle, DeviceState::Away][i % 10];
            let mut fact = Fact::new(Source::Session, key, FactState::device(state), ago(1));
            fact.details = Some(Details { device: Some("Laptop".into()), ..Details::default() });
            fact
        }
        3 | 4 => {
            let state = if i % 10 == 3 { CallState::Connected } else { CallState::Held };
            Fact::new(Source::Telephony, key, FactState::Call { state }, ago(2))
        }
        5..=8 => {
            let slot = (i % 10 - 5) as i64;
            let starts = ago(30) + minutes(30 * slot);
            let show_as = if slot == 3 { ShowAs::Tentative } else { ShowAs::Busy };
            let mut fact =
                Fact::new(Source::Calendar, key, FactState::Calendar { show_as }, ago(600))
                    .starting(Some(starts))
                    .ending(Some(starts + minutes(30)));
            fact.private = slot == 1;
            if !fact.private {
                fact.details =
                    Some(Details { subject: Some(format!("Review {i}")), ..Details::default() });
            }
            fact
        }
        _ => {
            let state = FactState::Status { availability: Availability::Available, activity: None };
            Fact::new(Source::Manual, key, state, ago(45))
                .with_note(Some(Note::new("back at 16:00", Some("en"))))
        }
    }
}

fn facts(n: usize) -> Vec<Fact> {
    (0..n).map(fact).collect()
}

/// The change under test: a heartbeat of the first device session, which flips it to busy.
fn heartbeat() -> Fact {
    let mut fact = fact(0);
    fact.state = FactState::device(DeviceState::Busy);
    fact.observed = now();
    fact
}

/// Replaces one fact as the hub does (drop the one with the same source and key, push the new
/// one) and aggregates with the previous presence, so that `since` is carried over.
#[divan::bench(args = [1, 10, 100], sample_count = 1000)]
fn one_fact_change(bencher: Bencher, n: usize) {
    let policy = Policy::default();
    let held = facts(n);
    let previous = ampel_core::aggregate(&held, &policy, now() - minutes(1), None).presence;
    let later = now() + SignedDuration::from_secs(1);

    bencher.with_inputs(|| (held.clone(), heartbeat())).bench_local_values(
        |(mut facts, change): (Vec<Fact>, Fact)| {
            facts.retain(|f| !f.same_key(change.source, &change.key));
            facts.push(change);
            let next = ampel_core::aggregate(&facts, &policy, later, Some(&previous));
            (facts, next)
        },
    );
}

/// The aggregate of the ten-fact user, as watchers are told about it.
fn ten_fact_aggregate(policy: &Policy) -> Aggregate {
    let mut held = facts(10);
    held[0] = heartbeat();
    ampel_core::aggregate(&held, policy, now(), None)
}

/// The per-notification serialisation: the projection for a colleague (the most common
/// watcher) and its JSON bytes. The hub does this once per relation and change.
#[divan::bench]
fn project_and_encode_colleague(bencher: Bencher) {
    project_and_encode(bencher, Relation::Colleague);
}

/// The same for the user themself, who sees every field including the sources.
#[divan::bench]
fn project_and_encode_itself(bencher: Bencher) {
    project_and_encode(bencher, Relation::Itself);
}

fn project_and_encode(bencher: Bencher, relation: Relation) {
    let policy = Policy::default();
    let aggregate = ten_fact_aggregate(&policy);
    let bytes = encode(&aggregate, relation, &policy).len();

    bencher
        .counter(divan::counter::BytesCount::new(bytes))
        .bench_local(|| encode(divan::black_box(&aggregate), relation, &policy));
}

fn encode(aggregate: &Aggregate, relation: Relation, policy: &Policy) -> Vec<u8> {
    let projected = visibility::project("alice@example.com", aggregate, relation, policy);
    serde_json::to_vec(&projected).expect("a projection serialises")
}
