//! The price of one routing decision in the core: finding the rule for the callee's presence
//! and the caller, reading the callee's settings, following a forward to a colleague, and
//! wording the announcement for an external caller.
//!
//! The aggregates are made once, before measuring, as the server holds them; the HTTP cost
//! of a decision is measured by `ampel-bench route`. Run with
//! `cargo bench -p ampel-core --bench routing`.

use std::collections::HashMap;

use ampel_core::fact::{CallState, ShowAs};
use ampel_core::routing::{Callee, Caller, Directory, Lang, UserRouting, decide};
use ampel_core::{Fact, FactState, Policy, Source, aggregate};
use divan::Bencher;
use jiff::Timestamp;
use jiff::tz::TimeZone;

fn main() {
    divan::main();
}

fn now() -> Timestamp {
    "2026-12-03T10:00:00Z".parse().expect("a valid instant")
}

struct Users {
    policy: Policy,
    callees: HashMap<String, Callee>,
}

impl Directory for Users {
    fn callee(&self, id: &str) -> Option<Callee> {
        self.callees.get(id).cloned()
    }
}

fn users() -> Users {
    let policy = Policy::default();
    let tz = TimeZone::get("Europe/Berlin").expect("tz data");
    let meeting =
        Fact::new(Source::Calendar, "m", FactState::Calendar { show_as: ShowAs::Busy }, now())
            .starting(Some(now() - jiff::SignedDuration::from_mins(30)))
            .ending(Some(now() + jiff::SignedDuration::from_mins(90)));
    let absence = Fact::new(
        Source::Calendar,
        "o",
        FactState::Calendar { show_as: ShowAs::OutOfOffice },
        now(),
    )
    .starting(Some(now() - jiff::SignedDuration::from_hours(48)))
    .ending(Some(now() + jiff::SignedDuration::from_hours(85)));
    let call =
        Fact::new(Source::Telephony, "c", FactState::Call { state: CallState::Connected }, now());
    let absent_to = |to: &str| UserRouting {
        absence_target: Some(to.parse().expect("a target")),
        ..UserRouting::default()
    };
    let people = [
        ("meeting@example.com", vec![meeting], absent_to("user:free@example.com")),
        ("call@example.com", vec![call], UserRouting::default()),
        ("away@example.com", vec![absence], UserRouting::default()),
        ("free@example.com", vec![], UserRouting::default()),
    ];
    let callees = people
        .into_iter()
        .map(|(id, facts, settings)| {
            let callee = Callee {
                id: id.into(),
                name: "Alice Example".into(),
                aggregate: aggregate(&facts, &policy, now(), None),
                settings,
                tz: tz.clone(),
            };
            (id.to_owned(), callee)
        })
        .collect();
    Users { policy, callees }
}

#[divan::bench(args = ["meeting@example.com", "call@example.com", "away@example.com", "free@example.com"])]
fn decide_for(bencher: Bencher, callee: &str) {
    let users = users();
    let callee = users.callees[callee].clone();
    let caller = Caller {
        ids: vec!["+4989123456".into()],
        internal: false,
        declared: None,
        lang: Some(Lang::En),
    };
    bencher
        .bench_local(|| decide(&users.policy, &users, divan::black_box(&callee), &caller, now()));
}
