//! Case C17: several devices of one user. An idle or vanished device must not override an
//! active one, the most available active device wins, and a busy state left behind by a
//! device that vanished expires with its lifetime instead of sticking.

use ampel_core::fact::DeviceState;
use ampel_core::timeline::{Event, FactInput, simulate};
use ampel_core::{FactState, Policy, Presence, Source};
use jiff::Timestamp;
use serde_json::Value;

fn at(hhmm: &str) -> Timestamp {
    format!("2026-12-03T{hhmm}:00Z").parse().unwrap()
}

fn device_event(time: Timestamp, user: &str, device: &str, state: &str) -> Event {
    let state: DeviceState = serde_json::from_value(Value::String(state.into())).unwrap();
    Event {
        at: time,
        user: user.into(),
        put: Some(FactInput {
            source: Source::Session,
            key: device.into(),
            state: FactState::device(state),
            observed: None,
            starts: None,
            ends: None,
            note: None,
            private: false,
        }),
        remove: None,
    }
}

/// Turns the case's device events into a timeline. "heartbeats-stop" is the device's last
/// heartbeat, in the state it was last in; the case assumes D1 keeps sending active heartbeats
/// every minute after 09:25 (the default heartbeat interval).
fn timeline(case: &Value) -> Vec<Event> {
    let user = case["user"].as_str().unwrap();
    let mut last_state: std::collections::HashMap<String, String> = Default::default();
    let mut events = Vec::new();
    for e in case["events"].as_array().unwrap() {
        let device = e["device"].as_str().unwrap();
        let state = match e["state"].as_str() {
            Some(s) => s.to_owned(),
            None => last_state[device].clone(),
        };
        last_state.insert(device.to_owned(), state.clone());
        events.push(device_event(at(e["at"].as_str().unwrap()), user, device, &state));
    }
    let first_assumed = at("09:26");
    for minute in 0..(3 * 60) {
        let t = first_assumed + jiff::SignedDuration::from_mins(minute);
        events.push(device_event(t, user, "D1", "active"));
    }
    events.sort_by_key(|e| e.at);
    events
}

fn presence_at(steps: &[ampel_core::timeline::Step], t: Timestamp) -> &Presence {
    &steps.iter().rfind(|s| s.at <= t).expect("a step before the check").presence
}

#[test]
fn c17_multi_device_follows_the_most_available_live_device() {
    let case: Value =
        serde_json::from_str(include_str!("data/C17-multi-device.json")).expect("case parses");
    let events = timeline(&case);
    let steps = simulate(&events, &Policy::default(), Some(at("12:00")));

    for check in case["expect"].as_array().unwrap() {
        let t = at(check["at"].as_str().unwrap());
        let got = presence_at(&steps, t).availability.as_str();
        assert_eq!(got, check["availability"].as_str().unwrap(), "at {t}");
    }
}

#[test]
fn c17_busy_left_behind_ends_exactly_one_lifetime_after_the_last_heartbeat() {
    let case: Value = serde_json::from_str(include_str!("data/C17-multi-device.json")).unwrap();
    let steps = simulate(&timeline(&case), &Policy::default(), Some(at("12:00")));
    let back = steps
        .iter()
        .find(|s| s.at > at("10:05") && s.presence.availability.as_str() == "available")
        .expect("the user becomes available again");
    assert_eq!(back.at, at("11:05"));
}
