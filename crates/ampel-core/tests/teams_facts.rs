//! Teams facts in aggregation: the explanation marks a Teams presence that Graph has not
//! confirmed for half its lifetime as stale, and among Teams facts of one rule the most
//! restrictive availability wins, as Microsoft Graph ranks presence sessions.

use ampel_core::aggregate::{Verdict, aggregate};
use ampel_core::fact::TeamsState;
use ampel_core::{Activity, Availability, Fact, FactState, Policy, Source};
use jiff::{SignedDuration, Timestamp};

fn teams(key: &str, availability: Availability, activity: Activity, observed: Timestamp) -> Fact {
    let state = TeamsState {
        availability,
        activity,
        idle: false,
        out_of_office: false,
        raw_activity: None,
    };
    Fact::new(Source::Teams, key, FactState::Teams(state), observed)
}

fn at(minutes: i64) -> Timestamp {
    let t0: Timestamp = "2026-04-21T10:00:00Z".parse().unwrap();
    t0.saturating_add(SignedDuration::from_mins(minutes)).unwrap()
}

#[test]
fn a_teams_fact_unconfirmed_for_half_its_lifetime_is_stale_but_still_counts() {
    let policy = Policy::default();
    let facts = [teams("presence", Availability::Busy, Activity::InAMeeting, at(0))];

    let fresh = aggregate(&facts, &policy, at(29), None);
    assert!(!fresh.explanation.facts[0].stale);

    let old = aggregate(&facts, &policy, at(31), None);
    assert!(old.explanation.facts[0].stale);
    assert_eq!(old.explanation.facts[0].verdict, Verdict::Decided);
    assert_eq!(old.presence.activity, Activity::InAMeeting);
    let json = serde_json::to_value(&old.explanation.facts[0]).unwrap();
    assert_eq!(json["stale"], true);

    // Turning stale changes the explanation, so the aggregate names that instant as its next
    // change and a server looks again then.
    assert_eq!(fresh.explanation.next_change, Some(at(30)));
    assert!(aggregate(&facts, &policy, at(30), None).explanation.facts[0].stale);
    assert_eq!(old.explanation.next_change, Some(at(60)));

    let gone = aggregate(&facts, &policy, at(61), None);
    assert_eq!(gone.explanation.facts[0].verdict, Verdict::Expired);
}

#[test]
fn a_presence_session_with_a_planned_end_is_never_stale() {
    let policy = Policy::default();
    let session =
        teams("session:app", Availability::Busy, Activity::InACall, at(0)).ending(Some(at(50)));
    let a = aggregate(&[session], &policy, at(40), None);
    assert!(!a.explanation.facts[0].stale);
}

#[test]
fn a_presence_session_lasts_its_own_duration_beyond_the_teams_lifetime() {
    let policy = Policy::default();
    let session =
        teams("session:app", Availability::Busy, Activity::InACall, at(0)).ending(Some(at(180)));
    let later = aggregate(std::slice::from_ref(&session), &policy, at(150), None);
    assert_eq!(later.explanation.facts[0].verdict, Verdict::Decided);
    assert_eq!(later.explanation.facts[0].until, Some(at(180)));
    let over = aggregate(&[session], &policy, at(180), None);
    assert_eq!(over.explanation.facts[0].verdict, Verdict::Expired);

    // The presence read from Graph has no planned end and still expires by the lifetime.
    let read = teams("presence", Availability::Busy, Activity::Busy, at(0));
    let gone = aggregate(&[read], &policy, at(61), None);
    assert_eq!(gone.explanation.facts[0].verdict, Verdict::Expired);
}

#[test]
fn among_teams_facts_of_one_rule_the_most_restrictive_wins_not_the_latest() {
    let policy = Policy::default();
    let facts = [
        teams("session:a", Availability::Available, Activity::Available, at(0)),
        teams("session:b", Availability::Away, Activity::Away, at(1)),
        teams("session:c", Availability::Available, Activity::Available, at(2)),
    ];
    let a = aggregate(&facts, &policy, at(3), None);
    assert_eq!(a.presence.availability, Availability::Available);

    let busy = teams("session:d", Availability::Busy, Activity::Busy, at(0));
    let a = aggregate(&[facts[2].clone(), busy], &policy, at(3), None);
    assert_eq!(a.presence.availability, Availability::Busy);
}
