//! Kinds of calendar input beyond the recorded cases: overrides, cancelled and declined
//! entries, rule parts, the feed's own zones, and broken or hostile feeds.

use ampel_calendar::{ReadError, ReadOptions, Timeline, expand, read};
use ampel_core::fact::ShowAs;
use jiff::Timestamp;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn feed(events: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{events}END:VCALENDAR\r\n")
}

fn options() -> ReadOptions {
    let mut o = ReadOptions::new(jiff::tz::db().get("Europe/Berlin").unwrap());
    o.owner = vec!["alice@example.com".into()];
    o
}

/// The busy intervals of a feed in 2026 as `(start, end, show-as)`.
fn intervals(text: &str) -> Vec<(Timestamp, Timestamp, ShowAs)> {
    let calendar = read(text.as_bytes(), &options()).unwrap();
    let exp = expand(&calendar, ts("2026-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"), 10_000);
    exp.occurrences.iter().map(|o| (o.start, o.end, o.show_as)).collect()
}

#[test]
fn a_moved_occurrence_replaces_the_original_and_a_cancelled_one_is_gone() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:s\r\nDTSTART;TZID=Europe/Berlin:20260105T100000\r\n\
         DTEND;TZID=Europe/Berlin:20260105T110000\r\nRRULE:FREQ=DAILY;COUNT=3\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID;TZID=Europe/Berlin:20260106T100000\r\n\
         DTSTART;TZID=Europe/Berlin:20260106T150000\r\nDTEND;TZID=Europe/Berlin:20260106T160000\r\n\
         END:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:s\r\nRECURRENCE-ID:20260107T090000Z\r\nSTATUS:CANCELLED\r\n\
         DTSTART;TZID=Europe/Berlin:20260107T100000\r\nDTEND;TZID=Europe/Berlin:20260107T110000\r\n\
         END:VEVENT\r\n",
    );
    let busy = ShowAs::Busy;
    assert_eq!(
        intervals(&text),
        vec![
            (ts("2026-01-05T09:00:00Z"), ts("2026-01-05T10:00:00Z"), busy),
            (ts("2026-01-06T14:00:00Z"), ts("2026-01-06T15:00:00Z"), busy),
        ]
    );
}

#[test]
fn the_owners_declined_and_tentative_answers_count_as_such() {
    let event = |uid: &str, day: u8, partstat: &str| {
        format!(
            "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:202601{day:02}T100000Z\r\n\
             DTEND:202601{day:02}T110000Z\r\nATTENDEE;PARTSTAT={partstat}:mailto:Alice@Example.com\r\n\
             ATTENDEE;PARTSTAT=ACCEPTED:mailto:bob@example.com\r\nEND:VEVENT\r\n"
        )
    };
    let text = feed(&(event("d", 5, "DECLINED") + &event("t", 6, "TENTATIVE")));
    assert_eq!(
        intervals(&text),
        vec![(ts("2026-01-06T10:00:00Z"), ts("2026-01-06T11:00:00Z"), ShowAs::Tentative)]
    );
}

#[test]
fn bysetpos_picks_the_last_workday_of_each_month() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:m\r\nDTSTART:20260130T120000Z\r\nDURATION:PT1H\r\n\
         RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;COUNT=3\r\nEND:VEVENT\r\n",
    );
    let starts: Vec<Timestamp> = intervals(&text).iter().map(|i| i.0).collect();
    assert_eq!(
        starts,
        vec![ts("2026-01-30T12:00:00Z"), ts("2026-02-27T12:00:00Z"), ts("2026-03-31T12:00:00Z")]
    );
}

#[test]
fn rdates_add_occurrences_and_bymonthday_counts_from_the_end() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:r\r\nDTSTART;VALUE=DATE:20260131\r\n\
         RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=2\r\nRDATE;VALUE=DATE:20260415\r\nEND:VEVENT\r\n",
    );
    let starts: Vec<Timestamp> = intervals(&text).iter().map(|i| i.0).collect();
    assert_eq!(
        starts,
        vec![ts("2026-01-30T23:00:00Z"), ts("2026-02-27T23:00:00Z"), ts("2026-04-14T22:00:00Z")]
    );
}

#[test]
fn a_feeds_own_vtimezone_under_a_made_up_name_is_followed_across_dst() {
    let text = feed(
        "BEGIN:VTIMEZONE\r\nTZID:Company Time\r\nBEGIN:STANDARD\r\nDTSTART:16010101T030000\r\n\
         TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n\
         END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\n\
         TZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n\
         END:VTIMEZONE\r\n\
         BEGIN:VEVENT\r\nUID:v\r\nDTSTART;TZID=\"Company Time\":20260327T090000\r\n\
         DTEND;TZID=\"Company Time\":20260327T100000\r\nRRULE:FREQ=DAILY;COUNT=4\r\nEND:VEVENT\r\n",
    );
    let starts: Vec<Timestamp> = intervals(&text).iter().map(|i| i.0).collect();
    assert_eq!(
        starts,
        vec![
            ts("2026-03-27T08:00:00Z"),
            ts("2026-03-28T08:00:00Z"),
            ts("2026-03-29T07:00:00Z"),
            ts("2026-03-30T07:00:00Z"),
        ]
    );
}

#[test]
fn an_unknown_zone_keeps_the_event_in_the_owners_zone_with_a_warning() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:u\r\nDTSTART;TZID=Nowhere Standard Time:20260105T100000\r\n\
         DTEND;TZID=Nowhere Standard Time:20260105T110000\r\nEND:VEVENT\r\n",
    );
    let calendar = read(text.as_bytes(), &options()).unwrap();
    assert!(calendar.warnings.iter().any(|w| w.message.contains("unknown time zone")));
    assert_eq!(intervals(&text)[0].0, ts("2026-01-05T09:00:00Z"));
}

#[test]
fn one_broken_event_is_reported_and_the_others_count() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:good\r\nDTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:bad\r\nDTSTART:not a date\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:also-good\r\nDTSTART:20260106T100000Z\r\nthis line is no property\r\n\
         DTEND:20260106T110000Z\r\nEND:VEVENT\r\n",
    );
    let calendar = read(text.as_bytes(), &options()).unwrap();
    let uids: Vec<&str> = calendar.events.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(uids, ["good", "also-good"]);
    assert!(calendar.warnings.iter().any(|w| w.uid.as_deref() == Some("bad")));
}

#[test]
fn a_truncated_feed_keeps_its_complete_events() {
    let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260105T100000Z\r\n\
                DURATION:PT1H\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART:2026";
    let calendar = read(text.as_bytes(), &options()).unwrap();
    assert_eq!(calendar.events.len(), 1);
    assert!(calendar.warnings.iter().any(|w| w.message.contains("ends inside")));
}

#[test]
fn what_is_not_icalendar_or_too_large_is_refused_with_a_reason() {
    let html = b"<html><body>Login required</body></html>";
    assert_eq!(read(html, &options()).unwrap_err(), ReadError::NotICalendar);
    let mut small = options();
    small.max_bytes = 10;
    assert!(matches!(
        read(feed("").as_bytes(), &small),
        Err(ReadError::TooLarge { limit: 10, .. })
    ));
}

#[test]
fn an_endless_rule_is_capped_not_expanded_forever() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20200101T000000Z\r\nDURATION:PT1M\r\n\
         RRULE:FREQ=MINUTELY\r\nEND:VEVENT\r\n",
    );
    let calendar = read(text.as_bytes(), &options()).unwrap();
    let exp = expand(&calendar, ts("2026-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"), 1_000);
    assert!(exp.occurrences.len() <= 1_000);
    assert!(!exp.warnings.is_empty());
}

#[test]
fn back_to_back_meetings_are_busy_until_the_last_one_ends() {
    let text = feed(
        "BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260105T100000Z\r\nDTEND:20260105T110000Z\r\nEND:VEVENT\r\n\
         BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20260105T110000Z\r\nDTEND:20260105T113000Z\r\nEND:VEVENT\r\n",
    );
    let calendar = read(text.as_bytes(), &options()).unwrap();
    let exp = expand(&calendar, ts("2026-01-01T00:00:00Z"), ts("2026-02-01T00:00:00Z"), 100);
    let state = Timeline::new(&exp.occurrences).at(ts("2026-01-05T10:15:00Z"));
    assert_eq!((state.show_as, state.until), (ShowAs::Busy, Some(ts("2026-01-05T11:30:00Z"))));
}

#[test]
fn a_series_begun_years_ago_expands_as_if_walked_from_its_start() {
    // With COUNT the rule is walked from its real start; without, from a closer one. Both
    // must give the same occurrences in the window.
    for rule in [
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,TH",
        "FREQ=DAILY;INTERVAL=5",
        "FREQ=MONTHLY;INTERVAL=2;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        "FREQ=MONTHLY;BYMONTHDAY=31",
    ] {
        let series = |rule: &str| {
            feed(&format!(
                "BEGIN:VEVENT\r\nUID:old\r\nDTSTART;TZID=Europe/Berlin:20150106T093000\r\n\
                 DURATION:PT30M\r\nRRULE:{rule}\r\nEND:VEVENT\r\n"
            ))
        };
        let walked = intervals(&series(&format!("{rule};COUNT=3000")));
        assert!(walked.len() > 5, "{rule}: {walked:?}");
        assert_eq!(intervals(&series(rule)), walked, "{rule}");
    }
}

#[test]
fn lowercase_names_and_bare_line_feeds_are_read() {
    let text = "begin:vcalendar\nbegin:vevent\nuid:l\ndtstart:20260105T100000Z\n\
                dtend:20260105T110000Z\nend:vevent\nend:vcalendar\n";
    assert_eq!(
        intervals(text),
        vec![(ts("2026-01-05T10:00:00Z"), ts("2026-01-05T11:00:00Z"), ShowAs::Busy)]
    );
}

/// A series that counts every second since 1900 (`COUNT` keeps it from being moved closer).
fn second_by_second(uid: &str) -> String {
    let hours = (0..24).map(|h| h.to_string()).collect::<Vec<_>>().join(",");
    let sixty = (0..60).map(|m| m.to_string()).collect::<Vec<_>>().join(",");
    format!(
        "BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:19000101T000000Z\r\nDURATION:PT1S\r\n\
         RRULE:FREQ=DAILY;COUNT=4000000000;BYHOUR={hours};BYMINUTE={sixty};BYSECOND={sixty}\r\n\
         END:VEVENT\r\n"
    )
}

#[test]
fn a_rule_walked_second_by_second_from_long_ago_stops_with_a_warning() {
    let text = feed(&second_by_second("bomb"));
    let calendar = read(text.as_bytes(), &options()).unwrap();
    let exp = expand(&calendar, ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z"), 10_000);
    assert!(exp.occurrences.is_empty(), "{:?}", exp.occurrences.len());
    let named: Vec<String> = exp.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        named.iter().any(|w| w.contains("bomb") && w.contains("more occurrences")),
        "{named:?}"
    );
}

#[test]
fn many_costly_rules_share_one_budget_and_a_plain_event_still_counts() {
    let mut events: String = (0..40).map(|i| second_by_second(&format!("bomb{i}"))).collect();
    events.push_str(
        "BEGIN:VEVENT\r\nUID:plain\r\nDTSTART:20260101T100000Z\r\nDTEND:20260101T110000Z\r\n\
         END:VEVENT\r\n",
    );
    let calendar = read(feed(&events).as_bytes(), &options()).unwrap();
    let exp = expand(&calendar, ts("2026-01-01T00:00:00Z"), ts("2026-01-02T00:00:00Z"), 10_000);
    let found: Vec<(Timestamp, Timestamp)> =
        exp.occurrences.iter().map(|o| (o.start, o.end)).collect();
    assert_eq!(found, vec![(ts("2026-01-01T10:00:00Z"), ts("2026-01-01T11:00:00Z"))]);
    assert_eq!(exp.warnings.len(), 40, "{:?}", exp.warnings);
}

#[test]
fn components_nested_thousands_deep_are_left_out_not_parsed_into_a_stack_overflow() {
    let depth = 50_000;
    let mut nested = String::from(
        "BEGIN:VEVENT\r\nUID:deep\r\nDTSTART:20260101T100000Z\r\nDTEND:20260101T110000Z\r\n",
    );
    nested.push_str(&"BEGIN:X-NEST\r\n".repeat(depth));
    nested.push_str(&"END:X-NEST\r\n".repeat(depth));
    nested.push_str("END:VEVENT\r\n");
    nested.push_str(
        "BEGIN:VEVENT\r\nUID:plain\r\nDTSTART:20260102T100000Z\r\nDTEND:20260102T110000Z\r\n\
         END:VEVENT\r\n",
    );
    let calendar = read(feed(&nested).as_bytes(), &options()).unwrap();
    let uids: Vec<&str> = calendar.events.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(uids, vec!["plain"]);
    let named: Vec<String> = calendar.warnings.iter().map(|w| w.to_string()).collect();
    assert!(named.iter().any(|w| w.starts_with("deep:") && w.contains("nested")), "{named:?}");
}
