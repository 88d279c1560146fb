//! Expansion: from events to the occurrences that touch a window of time.
//!
//! Recurrence rules are expanded by the `rrule` crate on wall times: the rule runs in a
//! zone-free clock and each occurrence's wall time is placed in the event's zone afterwards,
//! so a 09:30 meeting stays at 09:30 across a DST change (RFC 5545, 3.3.10). A UTC `UNTIL` is
//! turned into the event's wall time first, so the last occurrence is kept when it equals
//! `UNTIL`. `EXDATE`s and `RECURRENCE-ID`s match an occurrence by instant, or by day on an
//! all-day series (Exchange writes local midnights there).

use std::collections::HashMap;

use ampel_core::fact::ShowAs;
use chrono::TimeZone as _;
use jiff::civil::{Date, DateTime};
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::feed::{Calendar, Event, Start, Warning, to_instant};
use crate::value::{self, Raw};

/// One occurrence of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// When it starts.
    pub start: Timestamp,
    /// When it ends; never before `start`.
    pub end: Timestamp,
    /// How it shows its owner.
    pub show_as: ShowAs,
    /// The index of its event in [`Calendar::events`].
    pub event: usize,
}

/// The occurrences in a window, and what went wrong on the way.
#[derive(Clone, Debug, Default)]
pub struct Expansion {
    /// Occurrences that overlap the window and count, sorted by start.
    pub occurrences: Vec<Occurrence>,
    /// Rules that could not be expanded, or limits that were reached.
    pub warnings: Vec<Warning>,
}

/// Expands `calendar` over `[from, to)`, keeping at most `max` occurrences.
pub fn expand(calendar: &Calendar, from: Timestamp, to: Timestamp, max: usize) -> Expansion {
    // FIXME: a RECURRENCE-ID with RANGE=THISANDFUTURE moves only the one occurrence it names,
    // not the ones after it; producers that write it are rare and the rest of the series then
    // keeps its old times until the producer writes the split series as two events.
    let mut overrides: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in calendar.events.iter().filter(|e| e.recurrence_id.is_some()) {
        overrides.entry(e.uid.as_str()).or_default().push(e);
    }
    let mut out = Expansion::default();
    let mut budget = WALK_BUDGET;
    for (index, event) in calendar.events.iter().enumerate() {
        if out.occurrences.len() >= max {
            let message = format!("occurrences after the first {max} were left out");
            out.warnings.push(Warning { uid: None, message });
            break;
        }
        let Some(show_as) = event.show_as else { continue };
        let is_override = event.recurrence_id.is_some();
        let starts = if is_override {
            vec![event.start.local]
        } else {
            starts(event, (from, to), &mut budget, &mut out.warnings)
        };
        let moved = if is_override {
            &[][..]
        } else {
            overrides.get(event.uid.as_str()).map_or(&[][..], Vec::as_slice)
        };
        for local in starts {
            let at = Start { local, ..event.start.clone() };
            let excluded = event.exdates.iter().any(|x| same(&at, x, calendar))
                || moved
                    .iter()
                    .any(|o| o.recurrence_id.as_ref().is_some_and(|r| same(&at, r, calendar)));
            let start = at.instant();
            let end = end_of(event, &at, start);
            if !excluded && start < to && (end > from || (end == start && start >= from)) {
                out.occurrences.push(Occurrence { start, end, show_as, event: index });
            }
        }
    }
    out.occurrences.truncate(max);
    out.occurrences.sort_by_key(|o| (o.start, o.end, o.event));
    out
}

/// The end of one occurrence: nominal days on the wall clock, then the exact rest.
fn end_of(event: &Event, at: &Start, start: Timestamp) -> Timestamp {
    let days = event.length.days;
    let wall = if days == 0 {
        start
    } else {
        at.local.checked_add(days.days()).map_or(Timestamp::MAX, |l| to_instant(l, &at.zone))
    };
    wall.saturating_add(event.length.exact).unwrap_or(Timestamp::MAX).max(start)
}

/// True when occurrence `at` is the one named by `date` (an `EXDATE` or `RECURRENCE-ID`).
fn same(at: &Start, date: &Start, calendar: &Calendar) -> bool {
    if at.all_day || date.all_day {
        return at.local.date() == day_of(date, calendar) && (at.all_day || date.all_day);
    }
    at.instant() == date.instant()
}

/// The day a date names: its own wall day, or for a UTC time the owner's day.
fn day_of(date: &Start, calendar: &Calendar) -> Date {
    if date.zone == jiff::tz::TimeZone::UTC && !date.all_day {
        return date.instant().to_zoned(calendar.zone.clone()).date();
    }
    date.local.date()
}

/// The wall-time starts of a master event near the window: `DTSTART`, the rule's, `RDATE`s.
fn starts(
    event: &Event,
    (from, to): (Timestamp, Timestamp),
    budget: &mut usize,
    warnings: &mut Vec<Warning>,
) -> Vec<DateTime> {
    let mut starts = vec![event.start.local];
    if let Some(rule) = &event.rrule {
        // The window in wall time, widened by the event's length and a day of zone slack.
        let slack = SignedDuration::from_hours(24 * (i64::from(event.length.days) + 1))
            + event.length.exact;
        let zone = &event.start.zone;
        let wall = |t: Timestamp| t.to_zoned(zone.clone()).datetime();
        let after = wall(from.saturating_sub(slack).unwrap_or(Timestamp::MIN));
        let before =
            wall(to.saturating_add(SignedDuration::from_hours(24)).unwrap_or(Timestamp::MAX));
        match by_rule(event, rule, (after, before), budget) {
            Ok((dates, limited)) => {
                starts.extend(dates);
                if limited {
                    let message = "the rule has more occurrences than are expanded".to_owned();
                    warnings.push(Warning { uid: Some(event.uid.clone()), message });
                }
            }
            Err(e) => {
                let message = format!("the RRULE could not be expanded ({e}); only DTSTART counts");
                warnings.push(Warning { uid: Some(event.uid.clone()), message });
            }
        }
    }
    starts.extend(event.rdates.iter().map(|r| {
        if r.all_day || r.zone == event.start.zone {
            r.local
        } else {
            r.instant().to_zoned(event.start.zone.clone()).datetime()
        }
    }));
    starts.sort();
    starts.dedup();
    starts
}

/// Most occurrences one rule yields inside a window.
const RULE_LIMIT: usize = 4_000;

/// Most occurrences one rule is walked through, inside the window or before it. A rule that
/// [`closer_start`] cannot move (one with `COUNT`, or `BYSECOND` on a daily rule) is walked from
/// its first occurrence, which for a hostile feed may be billions of steps away.
const RULE_WALK: usize = 200_000;

/// Most occurrences all rules of one calendar are walked through together, so that many
/// hostile rules cannot add up to a stalled poll either.
const WALK_BUDGET: usize = 2_000_000;

/// A start for the rule that lies shortly before `after` and yields the same occurrences from
/// there on, so that a series begun years ago is not walked from its first occurrence. Only
/// rules whose occurrences repeat with a whole number of days or months are moved, and never
/// one with `COUNT` (which counts from the real start) or one that ends before the new start.
fn closer_start(rule: &str, start: DateTime, after: DateTime) -> DateTime {
    let part = |key: &str| {
        rule.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim().to_ascii_uppercase())
        })
    };
    if after <= start || part("COUNT").is_some() {
        return start;
    }
    let interval: i64 =
        part("INTERVAL").and_then(|i| i.parse().ok()).filter(|i| *i > 0).unwrap_or(1);
    let days = i64::from((after.date() - start.date()).get_days());
    let moved = match part("FREQ").as_deref() {
        Some("DAILY") => start.checked_add(((days / interval - 1).max(0) * interval).days()),
        Some("WEEKLY") => {
            start.checked_add(((days / (7 * interval) - 1).max(0) * 7 * interval).days())
        }
        Some("MONTHLY") if part("BYDAY").is_some() || part("BYMONTHDAY").is_some() => {
            let months = i64::from(after.year() - start.year()) * 12
                + i64::from(after.month() - start.month());
            start.checked_add(((months / interval - 1).max(0) * interval).months())
        }
        _ => return start,
    };
    let moved = moved.unwrap_or(start);
    let until = part("UNTIL").and_then(|u| match value::date_or_time(&u) {
        Some(Raw::Utc(t)) => Some(t.to_zoned(jiff::tz::TimeZone::UTC).datetime()),
        _ => None,
    });
    if until.is_some_and(|u| u < moved) { start } else { moved }
}

/// The rule's wall-time occurrences between `after` and `before`, and whether some were left
/// out. The walk takes at most [`RULE_WALK`] steps and what is left of `budget`.
fn by_rule(
    event: &Event,
    rule: &str,
    (after, before): (DateTime, DateTime),
    budget: &mut usize,
) -> Result<(Vec<DateTime>, bool), String> {
    let rule = with_wall_until(rule, event);
    let freq = rule.split(';').find_map(|p| p.trim().strip_prefix("FREQ=")).unwrap_or_default();
    // A meeting repeats by the hour at most; finer rules would be walked minute by minute from
    // a start that may lie years back.
    if freq.eq_ignore_ascii_case("SECONDLY") || freq.eq_ignore_ascii_case("MINUTELY") {
        return Err(format!("FREQ={freq} is not expanded"));
    }
    let parsed: rrule::RRule<rrule::Unvalidated> =
        rule.parse().map_err(|e: rrule::RRuleError| e.to_string())?;
    let start = closer_start(&rule, event.start.local, after);
    let set = parsed.build(chrono_of(start)?).map_err(|e| e.to_string())?;
    let (after, before) = (chrono_of(after)?, chrono_of(before)?);
    let steps = RULE_WALK.min(*budget);
    let mut dates = Vec::new();
    let mut walked = 0;
    // Left out: occurrences past the limit, or a walk that stopped before reaching `before`.
    let mut limited = false;
    for date in set.into_iter() {
        if walked == steps {
            limited = true;
            break;
        }
        walked += 1;
        if date > before {
            break;
        }
        if date >= after {
            dates.extend(jiff_of(date.naive_utc()));
            if dates.len() >= RULE_LIMIT {
                limited = true;
                break;
            }
        }
    }
    *budget -= walked;
    Ok((dates, limited))
}

/// The rule with `UNTIL` as a wall time of the event's zone, written as the zone-free clock
/// the expansion runs on. A `DATE` `UNTIL` on a timed series means the end of that day.
fn with_wall_until(rule: &str, event: &Event) -> String {
    let rule = rule.trim().trim_start_matches("RRULE:");
    let parts = rule.split(';').filter(|p| !p.trim().is_empty()).map(|part| {
        let Some((key, val)) = part.split_once('=') else { return part.to_owned() };
        if !key.trim().eq_ignore_ascii_case("UNTIL") {
            return part.to_owned();
        }
        let wall = match value::date_or_time(val) {
            Some(Raw::Utc(t)) => t.to_zoned(event.start.zone.clone()).datetime(),
            Some(Raw::Local(l)) => l,
            Some(Raw::Date(d)) if event.start.all_day => {
                d.to_datetime(jiff::civil::Time::midnight())
            }
            Some(Raw::Date(d)) => d.at(23, 59, 59, 0),
            None => return part.to_owned(),
        };
        format!("UNTIL={}Z", wall.strftime("%Y%m%dT%H%M%S"))
    });
    parts.collect::<Vec<_>>().join(";")
}

fn chrono_of(local: DateTime) -> Result<chrono::DateTime<rrule::Tz>, String> {
    let date = chrono::NaiveDate::from_ymd_opt(
        local.year().into(),
        local.month().unsigned_abs().into(),
        local.day().unsigned_abs().into(),
    );
    let naive = date
        .and_then(|d| {
            d.and_hms_opt(
                local.hour().unsigned_abs().into(),
                local.minute().unsigned_abs().into(),
                local.second().unsigned_abs().into(),
            )
        })
        .ok_or_else(|| "a date out of range".to_owned())?;
    Ok(rrule::Tz::UTC.from_utc_datetime(&naive))
}

fn jiff_of(naive: chrono::NaiveDateTime) -> Option<DateTime> {
    use chrono::{Datelike, Timelike};
    DateTime::new(
        i16::try_from(naive.year()).ok()?,
        i8::try_from(naive.month()).ok()?,
        i8::try_from(naive.day()).ok()?,
        i8::try_from(naive.hour()).ok()?,
        i8::try_from(naive.minute()).ok()?,
        i8::try_from(naive.second()).ok()?,
        0,
    )
    .ok()
}
