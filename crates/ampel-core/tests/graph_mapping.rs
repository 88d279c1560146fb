//! Case C12 and the Graph mapping in both directions: Microsoft Graph presence bodies as Teams
//! sends them, read without regard to case, and every Ampel value sent out in Graph's words and
//! read back.

use ampel_core::aggregate::{Verdict, aggregate};
use ampel_core::fact::{DeviceState, TeamsState};
use ampel_core::mapping::graph::{GraphPresence, graph_activity, graph_availability, teams_state};
use ampel_core::{Activity, Availability, Fact, FactState, Policy, Presence, Source};
use jiff::Timestamp;
use serde_json::Value;

const CASES: &str = include_str!("data/C12-graph-presence-values.json");

/// The verdict aggregation gives a Teams fact next to one active device.
fn verdict_beside_an_active_device(teams: TeamsState) -> Verdict {
    let now: Timestamp = "2026-04-20T09:00:00Z".parse().unwrap();
    let facts = [
        Fact::new(Source::Teams, "teams", FactState::Teams(teams), now),
        Fact::new(Source::Session, "pc", FactState::device(DeviceState::Active), now),
    ];
    let result = aggregate(&facts, &Policy::default(), now, None);
    result.explanation.facts[0].verdict.clone()
}

/// Checks one case. The flags `idle` and `out_of_office` must be false unless the case says
/// otherwise, and the fact must contribute unless the case says `contributes: false`.
fn check(id: &str, expect: &serde_json::Map<String, Value>, state: &TeamsState) {
    let flag = |name: &str| expect.get(name).is_some_and(|v| v.as_bool().unwrap());
    for (key, value) in expect {
        match key.as_str() {
            "availability" => assert_eq!(state.availability.as_str(), value, "{id}: {key}"),
            "activity" => assert_eq!(state.activity.as_str(), value, "{id}: {key}"),
            "raw_activity_kept" => {
                assert_eq!(state.raw_activity.as_deref(), value.as_str(), "{id}: {key}")
            }
            "out_of_office" | "idle" | "contributes" => {}
            other => panic!("{id}: the test does not know the expectation `{other}`"),
        }
    }
    assert_eq!(state.out_of_office, flag("out_of_office"), "{id}: out_of_office");
    assert_eq!(state.idle, flag("idle"), "{id}: idle");
    if !expect.contains_key("raw_activity_kept") {
        assert_eq!(state.raw_activity, None, "{id}: raw_activity");
    }

    let contributes = expect.get("contributes").is_none_or(|v| v.as_bool().unwrap());
    let verdict = verdict_beside_an_active_device(state.clone());
    let no_effect = matches!(verdict, Verdict::NoEffect { .. });
    assert_eq!(!no_effect, contributes, "{id}: verdict {verdict:?}");
}

#[test]
fn c12_graph_presence_values() {
    let cases: Vec<Value> = serde_json::from_str(CASES).unwrap();
    assert_eq!(cases.len(), 10);
    for case in &cases {
        let id = case["id"].as_str().unwrap();
        let graph: GraphPresence = serde_json::from_value(case["graph"].clone()).unwrap();
        check(id, case["expect"].as_object().unwrap(), &teams_state(&graph));
    }
}

fn presence(availability: Availability, activity: Activity, idle: bool) -> Presence {
    Presence {
        availability,
        activity,
        idle,
        out_of_office: false,
        note: None,
        until: None,
        since: Timestamp::UNIX_EPOCH,
        location: None,
        last_active: None,
    }
}

/// Sends a presence out in Graph's words and reads it back.
fn out_and_back(p: &Presence) -> (&'static str, &'static str, TeamsState) {
    let (availability, activity) = (graph_availability(p), graph_activity(p));
    let body = GraphPresence {
        availability: Some(availability.to_owned()),
        activity: Some(activity.to_owned()),
        out_of_office_settings: None,
    };
    (availability, activity, teams_state(&body))
}

#[test]
fn every_availability_goes_out_and_comes_back() {
    for &a in Availability::ALL {
        let (word, _, back) = out_and_back(&presence(a, a.plain_activity(), false));
        assert_eq!((back.availability, back.activity, back.idle), (a, a.plain_activity(), false));
        assert_eq!(back.raw_activity, None, "{word}");
    }
    for (a, word) in [(Availability::Available, "AvailableIdle"), (Availability::Busy, "BusyIdle")]
    {
        let (sent, _, back) = out_and_back(&presence(a, a.plain_activity(), true));
        assert_eq!(sent, word);
        assert_eq!((back.availability, back.activity, back.idle), (a, a.plain_activity(), true));
    }
}

/// The availability each activity usually goes with.
fn usual_availability(activity: Activity) -> Availability {
    match activity {
        Activity::InACall | Activity::InAConferenceCall | Activity::InAMeeting => {
            Availability::Busy
        }
        Activity::Presenting | Activity::Focusing => Availability::DoNotDisturb,
        Activity::OutOfOffice => Availability::Away,
        Activity::OffWork => Availability::Offline,
        Activity::Inactive => Availability::Available,
        other => Availability::ALL.iter().copied().find(|a| a.plain_activity() == other).unwrap(),
    }
}

#[test]
fn every_activity_goes_out_and_comes_back() {
    for &activity in Activity::ALL {
        let availability = usual_availability(activity);
        let (_, word, back) = out_and_back(&presence(availability, activity, false));
        assert_eq!(back.availability, availability, "{activity}");
        assert_eq!(back.raw_activity, None, "{activity}");
        if activity == Activity::Inactive {
            // Graph's `Inactive` is an idle flag, not an activity of its own: it comes back as
            // the plain activity of an idle user.
            assert_eq!(word, "Inactive");
            assert_eq!((back.activity, back.idle), (Activity::Available, true));
            continue;
        }
        assert_eq!(back.activity, activity, "{activity} went out as {word}");
        assert_eq!(back.out_of_office, activity == Activity::OutOfOffice, "{activity}");
    }
}

#[test]
fn outbound_words_are_graphs_pascal_case() {
    let p = presence(Availability::Busy, Activity::InAConferenceCall, false);
    assert_eq!((graph_availability(&p), graph_activity(&p)), ("Busy", "InAConferenceCall"));
    let p = presence(Availability::Unknown, Activity::Unknown, false);
    assert_eq!(
        (graph_availability(&p), graph_activity(&p)),
        ("PresenceUnknown", "PresenceUnknown")
    );
    let p = presence(Availability::Available, Activity::Inactive, true);
    assert_eq!((graph_availability(&p), graph_activity(&p)), ("AvailableIdle", "Inactive"));
}
