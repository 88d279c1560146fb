//! The real-world PIDF and dialog-info cases (copied from the shared case collection), each
//! checked against its expectations.

use std::collections::BTreeMap;

use ampel_core::fact::{DeviceState, FactState};
use ampel_core::{Fact, Policy, Source, aggregate};
use ampel_sip::dialog_info::{self, Tracker};
use ampel_sip::pidf;
use jiff::Timestamp;
use serde_json::Value;

fn case(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/cases/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn c14_pidf_documents_read_by_namespace() {
    let expect: Value = serde_json::from_slice(&case("C14-pidf.expect.json")).unwrap();
    let files: Vec<&String> =
        expect.as_object().unwrap().keys().filter(|k| k.ends_with(".xml")).collect();
    assert_eq!(files.len(), 5);
    for file in files {
        let want = &expect[file];
        let doc = pidf::parse(&case(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(doc.entity, want["entity"], "{file}");
        assert_eq!(doc.state().availability.as_str(), want["availability"], "{file}");
        if let Some(notes) = want.get("notes") {
            let got: BTreeMap<String, String> = doc
                .notes
                .iter()
                .map(|n| (n.lang.clone().unwrap_or_default(), n.text.clone()))
                .collect();
            let want: BTreeMap<String, String> = serde_json::from_value(notes.clone()).unwrap();
            assert_eq!(got, want, "{file}");
        }
    }
}

/// C16: the documents in arrival order, with one active client session; after each, the
/// aggregated availability, the activity and the telephony state.
#[test]
fn c16_dialog_state_from_the_pbx() {
    let expect: Value = serde_json::from_slice(&case("C16-dialog-info.expect.json")).unwrap();
    let text = String::from_utf8(case("C16-dialog-info.txt")).unwrap();
    let policy = Policy::default();
    let now: Timestamp = "2026-04-20T09:00:00Z".parse().unwrap();
    let session = Fact::new(Source::Session, "s1", FactState::device(DeviceState::Active), now);
    let mut trackers: BTreeMap<String, Tracker> = BTreeMap::new();
    let mut calls: BTreeMap<String, BTreeMap<String, Fact>> = BTreeMap::new();
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (label, doc) = line.split_once(' ').unwrap();
        let info = dialog_info::parse(doc.as_bytes()).unwrap();
        let tracker = trackers.entry(info.entity.clone()).or_default();
        let user = calls.entry(info.entity.clone()).or_default();
        for change in tracker.apply("pbx", &info, now).unwrap_or_default() {
            match change.state {
                ampel_core::fact::CallState::Ended => {
                    user.remove(&change.key);
                }
                state => {
                    let fact =
                        Fact::new(Source::Telephony, &change.key, FactState::Call { state }, now)
                            .ending(change.ends);
                    user.insert(change.key, fact);
                }
            }
        }
        let mut facts = vec![session.clone()];
        facts.extend(user.values().cloned());
        let presence = aggregate(&facts, &policy, now, None).presence;
        let want = &expect["after"][label];
        assert_eq!(presence.availability.as_str(), want["availability"], "{label}");
        if let Some(activity) = want.get("activity") {
            assert_eq!(presence.activity.as_str(), activity, "{label}");
        }
        if let Some(telephony) = want.get("telephony") {
            let states: Vec<String> = user
                .values()
                .map(|f| match &f.state {
                    FactState::Call { state } => format!("{state:?}").to_lowercase(),
                    _ => unreachable!(),
                })
                .collect();
            let got = states.first().cloned().unwrap_or_else(|| "idle".into());
            assert_eq!(got, telephony.as_str().unwrap(), "{label}");
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// A ringing dialog that is never updated ends by itself.
#[test]
fn an_early_dialog_that_is_never_updated_expires() {
    let doc = br#"<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" entity="sip:a@b"><dialog id="d" call-id="c"><state>early</state></dialog></dialog-info>"#;
    let now: Timestamp = "2026-04-20T09:00:00Z".parse().unwrap();
    let mut t = Tracker::default();
    let changes = t.apply("pbx", &dialog_info::parse(doc).unwrap(), now).unwrap();
    let fact = Fact::new(
        Source::Telephony,
        &changes[0].key,
        FactState::Call { state: changes[0].state },
        now,
    )
    .ending(changes[0].ends);
    let policy = Policy::default();
    let later = now + dialog_info::EARLY_LIFETIME;
    let ringing = aggregate(std::slice::from_ref(&fact), &policy, now, None).presence;
    assert_eq!(ringing.availability.as_str(), "busy");
    let after = aggregate(&[fact], &policy, later, None).presence;
    assert_eq!(after.availability.as_str(), "offline");
}
