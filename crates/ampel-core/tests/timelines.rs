//! Recorded timelines in, the presence after every change out: the default precedence rules
//! read as specifications.

use ampel_core::Policy;
use ampel_core::timeline::{parse, render_steps, simulate};
use expect_test::{Expect, expect};

/// Lines of `HH:MM user-less fact` shorthand: each line is a JSON fact put for alice at that
/// time on 2026-12-03, or `- source key` to remove one.
fn check(policy: &Policy, script: &str, until: &str, expected: Expect) {
    let mut jsonl = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (time, rest) = line.split_once(' ').unwrap();
        let at = format!("2026-12-03T{time}:00Z");
        let event = if let Some(removal) = rest.strip_prefix("- ") {
            let (source, key) = removal.split_once(' ').unwrap();
            format!(
                r#"{{"at":"{at}","user":"alice@example.com","remove":{{"source":"{source}","key":"{key}"}}}}"#
            )
        } else {
            let rest = rest.replace("{T}", "2026-12-03T");
            format!(r#"{{"at":"{at}","user":"alice@example.com","put":{rest}}}"#)
        };
        jsonl.push_str(&event);
        jsonl.push('\n');
    }
    let mut events = Vec::new();
    for line in jsonl.lines() {
        events.extend(parse(line).unwrap());
    }
    // Stable: lines at the same minute keep their order.
    events.sort_by_key(|e| e.at);
    let until = format!("2026-12-03T{until}:00Z").parse().unwrap();
    let steps = simulate(&events, policy, Some(until));
    expected.assert_eq(
        &render_steps(&steps).replace("2026-12-03T", "").replace("alice@example.com  ", ""),
    );
}

const LAPTOP: &str =
    r#"{"source":"session","key":"laptop","state":{"kind":"device","state":"active"}}"#;

/// A laptop whose user works on it all day: an active heartbeat every minute from 09:00 to 15:00.
fn with_laptop(script: &str) -> String {
    let mut out = String::new();
    for minute in 0..=(6 * 60) {
        out.push_str(&format!("{:02}:{:02} {LAPTOP}\n", 9 + minute / 60, minute % 60));
    }
    out + script
}

#[test]
fn a_manual_status_with_an_end_time_gives_way_to_what_is_true_then() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:01 {"source":"manual","key":"status","state":{"kind":"status","availability":"away"},"ends":"{T}09:30:00Z","note":{"text":"Lunch","lang":"en"}}
            09:02 {"source":"session","key":"laptop","state":{"kind":"device","state":"active"}}
            09:20 {"source":"telephony","key":"c1","state":{"kind":"call","state":"connected"}}
            09:40 - telephony c1
            09:41 {"source":"session","key":"laptop","state":{"kind":"device","state":"active"}}
            "#,
        ),
        "09:50",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:01:00Z  away/away until 09:30:00Z "Lunch"  [manual]
            09:20:00Z  busy/in-a-call "Lunch"  [call]
            09:30:00Z  busy/in-a-call  [call]
            09:40:00Z  available/available  [devices]
        "#]],
    );
}

#[test]
fn do_not_disturb_and_appear_offline_beat_a_live_call() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:01 {"source":"telephony","key":"c1","state":{"kind":"call","state":"connected"}}
            09:02 {"source":"manual","key":"status","state":{"kind":"status","availability":"do-not-disturb"},"note":{"text":"Focus"}}
            09:03 {"source":"manual","key":"status","state":{"kind":"status","availability":"offline"},"note":{"text":"hidden"}}
            09:04 - manual status
            "#,
        ),
        "09:04",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:01:00Z  busy/in-a-call  [call]
            09:02:00Z  do-not-disturb/do-not-disturb "Focus"  [do-not-disturb]
            09:03:00Z  offline/offline  [appear-offline]
            09:04:00Z  busy/in-a-call  [call]
            13:01:00Z  available/available  [devices]
        "#]],
    );
}

#[test]
fn a_call_beats_the_planned_meeting_and_keeps_the_user_busy_past_its_end() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:00 {"source":"calendar","key":"standup","state":{"kind":"calendar","show_as":"busy"},"starts":"{T}10:00:00Z","ends":"{T}10:15:00Z"}
            09:59 {"source":"telephony","key":"c1","state":{"kind":"call","state":"connected"}}
            10:20 - telephony c1
            10:20 {"source":"session","key":"laptop","state":{"kind":"device","state":"active"}}
            "#,
        ),
        "10:21",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:59:00Z  busy/in-a-call  [call]
            10:20:00Z  available/available  [devices]
        "#]],
    );
}

#[test]
fn back_to_back_meetings_show_the_end_of_the_last_one() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:00 {"source":"calendar","key":"a","state":{"kind":"calendar","show_as":"busy"},"starts":"{T}10:00:00Z","ends":"{T}11:00:00Z"}
            09:00 {"source":"calendar","key":"b","state":{"kind":"calendar","show_as":"busy"},"starts":"{T}11:00:00Z","ends":"{T}11:30:00Z"}
            09:00 {"source":"calendar","key":"c","state":{"kind":"calendar","show_as":"busy"},"starts":"{T}13:00:00Z","ends":"{T}14:00:00Z"}
            "#,
        ),
        "14:01",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            10:00:00Z  busy/in-a-meeting until 11:30:00Z  [calendar-busy]
            11:30:00Z  available/available  [devices]
            13:00:00Z  busy/in-a-meeting until 14:00:00Z  [calendar-busy]
            14:00:00Z  available/available  [devices]
        "#]],
    );
}

#[test]
fn tentative_meetings_count_only_when_the_policy_says_so() {
    let script = with_laptop(
        r#"
        09:01 {"source":"calendar","key":"t","state":{"kind":"calendar","show_as":"tentative"},"starts":"{T}09:02:00Z","ends":"{T}09:03:00Z"}
        "#,
    );
    check(
        &Policy::default(),
        &script,
        "09:04",
        expect![[r#"
        09:00:00Z  available/available  [devices]
    "#]],
    );
    let busy_when_tentative = Policy::from_toml("[calendar]\ntentative_is_busy = true\n").unwrap();
    check(
        &busy_when_tentative,
        &script,
        "09:04",
        expect![[r#"
        09:00:00Z  available/available  [devices]
        09:02:00Z  busy/in-a-meeting until 09:03:00Z  [calendar-busy]
        09:03:00Z  available/available  [devices]
    "#]],
    );
}

#[test]
fn an_absence_marks_out_of_office_beside_a_live_call() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:01 {"source":"calendar","key":"trip","state":{"kind":"calendar","show_as":"out-of-office"},"starts":"{T}09:01:00Z","ends":"{T}18:00:00Z"}
            09:02 {"source":"telephony","key":"c1","state":{"kind":"call","state":"connected"}}
            09:03 - telephony c1
            "#,
        ),
        "09:03",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:01:00Z  away/out-of-office out-of-office until 18:00:00Z  [calendar-out-of-office]
            09:02:00Z  busy/in-a-call out-of-office  [call]
            09:03:00Z  away/out-of-office out-of-office until 18:00:00Z  [calendar-out-of-office]
        "#]],
    );
}

#[test]
fn presenting_beats_listening_and_a_device_status_beats_activity() {
    check(
        &Policy::default(),
        &with_laptop(
            r#"
            09:01 {"source":"meeting","key":"m","state":{"kind":"meeting","presenting":false}}
            09:02 {"source":"meeting","key":"m","state":{"kind":"meeting","presenting":true}}
            09:03 - meeting m
            09:04 {"source":"session","key":"phone","state":{"kind":"device","state":"busy"}}
            "#,
        ),
        "09:04",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:01:00Z  busy/in-a-meeting  [meeting]
            09:02:00Z  do-not-disturb/presenting  [presenting]
            09:03:00Z  available/available  [devices]
            09:04:00Z  busy/busy  [device-status]
            10:04:00Z  available/available  [devices]
        "#]],
    );
}

#[test]
fn without_any_fact_a_user_is_offline() {
    check(
        &Policy::default(),
        r#"
        09:00 {"source":"location","key":"badge","state":{"kind":"location","location":"office"}}
        "#,
        "09:01",
        expect![[r#"
            09:00:00Z  offline/offline  [no-facts]
        "#]],
    );
}

#[test]
fn catching_up_after_a_gap_dates_the_state_from_when_it_began() {
    use ampel_core::aggregate::{aggregate, catch_up};
    use ampel_core::fact::DeviceState;
    use ampel_core::{Availability, Fact, FactState, Source};

    let t = |hhmm: &str| format!("2026-12-03T{hhmm}:00Z").parse::<jiff::Timestamp>().unwrap();
    let policy = Policy::default();
    let dnd = FactState::Status { availability: Availability::DoNotDisturb, activity: None };
    let call = FactState::Call { state: ampel_core::fact::CallState::Connected };
    let facts = vec![
        Fact::new(Source::Session, "laptop", FactState::device(DeviceState::Active), t("09:58")),
        Fact::new(Source::Telephony, "c1", call, t("09:59")),
        Fact::new(Source::Manual, "status", dnd, t("10:00")).ending(Some(t("10:30"))),
    ];
    let last = aggregate(&facts, &policy, t("10:00"), None).presence;
    assert_eq!(last.availability, Availability::DoNotDisturb);

    let now = catch_up(&facts, &policy, &last, t("10:00"), t("11:00"));
    assert_eq!((now.availability.as_str(), now.activity.as_str()), ("busy", "in-a-call"));
    assert_eq!(now.since, t("10:30"), "the call showed from the moment the status ended");
}

#[test]
fn last_active_outlives_the_session_that_set_it() {
    let events = parse(concat!(
        r#"{"at":"2026-12-03T09:00:00Z","user":"alice@example.com","put":{"source":"session","key":"laptop","state":{"kind":"device","state":"active"}}}"#,
        "\n",
        r#"{"at":"2026-12-03T09:30:00Z","user":"alice@example.com","remove":{"source":"session","key":"laptop"}}"#,
    ))
    .unwrap();
    let steps = simulate(&events, &Policy::default(), None);
    let last = steps.last().unwrap();
    assert_eq!(last.presence.availability.as_str(), "offline");
    assert_eq!(last.presence.last_active, Some("2026-12-03T09:00:00Z".parse().unwrap()));
}

#[test]
fn appearing_offline_freezes_the_last_sighting() {
    use ampel_core::aggregate::aggregate;
    use ampel_core::fact::DeviceState;
    use ampel_core::{Availability, Fact, FactState, Source};

    let t = |hhmm: &str| format!("2026-12-03T{hhmm}:00Z").parse::<jiff::Timestamp>().unwrap();
    let policy = Policy::default();
    let laptop =
        |at| Fact::new(Source::Session, "laptop", FactState::device(DeviceState::Active), at);
    let offline = FactState::Status { availability: Availability::Offline, activity: None };
    let hidden = Fact::new(Source::Manual, "status", offline, t("09:01"));

    let seen = aggregate(&[laptop(t("09:00"))], &policy, t("09:00"), None).presence;
    let gone =
        aggregate(&[laptop(t("09:00")), hidden.clone()], &policy, t("09:01"), Some(&seen)).presence;
    let later = aggregate(&[laptop(t("09:03")), hidden], &policy, t("09:03"), Some(&gone)).presence;
    assert_eq!(later.availability, Availability::Offline);
    assert_eq!(later.last_active, Some(t("09:00")), "the heartbeat at 09:03 does not show");
}

#[test]
fn a_phone_that_says_on_the_phone_is_in_a_call_until_it_says_otherwise() {
    check(
        &Policy::default(),
        r#"
            09:00 {"source":"session","key":"phone","state":{"kind":"device","state":"active"}}
            09:05 {"source":"session","key":"phone","state":{"kind":"device","state":"busy","activity":"in-a-call"}}
            09:06 {"source":"manual","key":"status","state":{"kind":"status","availability":"busy"},"note":{"text":"Workshop"}}
            09:10 {"source":"session","key":"phone","state":{"kind":"device","state":"active"}}
            09:11 - manual status
            09:12 {"source":"session","key":"phone","state":{"kind":"device","state":"busy","activity":"in-a-meeting"}}
            09:20 {"source":"session","key":"phone","state":{"kind":"device","state":"away","activity":"out-of-office"}}
            09:25 {"source":"session","key":"phone","state":{"kind":"device","state":"away","activity":"be-right-back"}}
            09:30 {"source":"session","key":"phone","state":{"kind":"device","state":"do-not-disturb","activity":"in-a-call"}}
            "#,
        "09:31",
        expect![[r#"
            09:00:00Z  available/available  [devices]
            09:05:00Z  available/inactive idle  [devices]
            09:05:00Z  busy/in-a-call  [call]
            09:06:00Z  busy/in-a-call "Workshop"  [call]
            09:10:00Z  busy/in-a-call idle "Workshop"  [call]
            09:10:00Z  busy/busy "Workshop"  [manual]
            09:11:00Z  available/available  [devices]
            09:12:00Z  busy/in-a-meeting  [meeting]
            09:17:00Z  busy/in-a-meeting idle  [meeting]
            09:20:00Z  away/out-of-office out-of-office  [devices]
            09:25:00Z  be-right-back/be-right-back  [devices]
            09:30:00Z  do-not-disturb/do-not-disturb  [device-status]
        "#]],
    );
}
