//! Property values: dates, date-times, durations and text, read leniently.
//!
//! Values come as RFC 5545 writes them (`20260330T090000`, `20260330T090000Z`, `20260330`,
//! `PT1H30M`), and also in the ISO 8601 extended form some producers use
//! (`2026-03-30T09:00:00`). Nothing here knows about events.

use jiff::civil::{Date, DateTime};
use jiff::{SignedDuration, Span, Timestamp};

/// A date or date-time value before its zone is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raw {
    /// A `DATE`.
    Date(Date),
    /// A `DATE-TIME` without `Z`: local to its `TZID`, or floating.
    Local(DateTime),
    /// A `DATE-TIME` in UTC.
    Utc(Timestamp),
}

/// Reads a date or date-time.
pub(crate) fn date_or_time(text: &str) -> Option<Raw> {
    let compact: String = text.trim().chars().filter(|c| !matches!(c, '-' | ':')).collect();
    let (body, utc) = match compact.strip_suffix(['Z', 'z']) {
        Some(body) => (body, true),
        None => (compact.as_str(), false),
    };
    // Fractions of a second are dropped.
    let body = body.split('.').next().unwrap_or(body);
    let num = |r: std::ops::Range<usize>| body.get(r).and_then(|s| s.parse::<i32>().ok());
    let date = Date::new(
        i16::try_from(num(0..4)?).ok()?,
        i8::try_from(num(4..6)?).ok()?,
        i8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    if body.len() == 8 {
        return Some(Raw::Date(date));
    }
    if body.as_bytes().get(8).is_none_or(|b| !b.eq_ignore_ascii_case(&b'T')) {
        return None;
    }
    let field = |r: std::ops::Range<usize>| num(r).and_then(|n| i8::try_from(n).ok());
    let second = if body.len() >= 15 { field(13..15)? } else { 0 };
    let time = jiff::civil::Time::new(field(9..11)?, field(11..13)?, second.min(59), 0).ok()?;
    let local = date.to_datetime(time);
    if utc {
        Some(Raw::Utc(local.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()))
    } else {
        Some(Raw::Local(local))
    }
}

/// A `DURATION`: the nominal days (which follow the wall clock across DST) and the exact rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Length {
    /// Whole days, counted on the calendar.
    pub days: i32,
    /// Hours, minutes and seconds, counted exactly.
    pub exact: SignedDuration,
}

/// Reads a `DURATION` (RFC 5545, 3.3.6).
pub(crate) fn duration(text: &str) -> Option<Length> {
    let span: Span = text.trim().parse().ok()?;
    let days = span.get_weeks().checked_mul(7)?.checked_add(span.get_days())?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return None;
    }
    let exact = SignedDuration::from_hours(span.get_hours().into())
        + SignedDuration::from_mins(span.get_minutes())
        + SignedDuration::from_secs(span.get_seconds());
    Some(Length { days, exact })
}

/// Undoes the text escapes of RFC 5545, 3.3.11.
pub(crate) fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_form() {
        assert_eq!(date_or_time("20260302"), Some(Raw::Date(jiff::civil::date(2026, 3, 2))));
        assert_eq!(
            date_or_time("2026-03-30T09:00:00"),
            Some(Raw::Local(jiff::civil::date(2026, 3, 30).at(9, 0, 0, 0)))
        );
        assert_eq!(
            date_or_time("20260330T073000Z"),
            Some(Raw::Utc("2026-03-30T07:30:00Z".parse().unwrap()))
        );
        assert_eq!(date_or_time("garbage"), None);
    }

    #[test]
    fn durations_keep_days_apart_from_hours() {
        let d = duration("P1DT2H").unwrap();
        assert_eq!((d.days, d.exact), (1, SignedDuration::from_hours(2)));
        assert_eq!(duration("P2W").unwrap().days, 14);
        assert_eq!(text(r"Clinic\, 1 Example Street\nNext"), "Clinic, 1 Example Street\nNext");
    }
}
