//! Time zones named by `TZID`: IANA names, Windows names, and the feed's own `VTIMEZONE`s.
//!
//! A `TZID` is resolved in this order: an IANA name known to the time zone database (also when
//! written with a vendor prefix such as `/mozilla.org/20050126_1/Europe/Berlin`), a Windows
//! name through the CLDR table, a `VTIMEZONE` of the same feed, and last the calendar owner's
//! zone with a warning. A `VTIMEZONE` with yearly rules becomes a POSIX TZ rule, which covers
//! the forms Outlook and most servers write.

use std::collections::HashMap;

use icalendar::parser::Component;
use jiff::tz::{Offset, TimeZone};

use crate::windows_zones;

/// The zones a feed can name.
#[derive(Debug, Default)]
pub(crate) struct Zones {
    /// Zones defined by the feed's `VTIMEZONE` components, by `TZID`.
    custom: HashMap<String, TimeZone>,
    /// Every `TZID` resolved so far: a feed names few zones many times, and a name missing
    /// from the time zone database costs a look at the disk each time it is tried.
    resolved: HashMap<String, Option<TimeZone>>,
}

/// How a `TZID` was resolved.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    /// Found.
    Zone(TimeZone),
    /// Not found: the owner's zone stands in.
    Unknown,
}

impl Zones {
    /// Learns a `VTIMEZONE` component; one that cannot be read is left out.
    pub(crate) fn learn(&mut self, vtimezone: &Component<'_>) {
        let Some(tzid) = prop(vtimezone, "TZID") else { return };
        if let Some(zone) = from_vtimezone(vtimezone) {
            self.custom.insert(clean(tzid).to_owned(), zone);
        }
    }

    /// The zone named `tzid`.
    pub(crate) fn resolve(&mut self, tzid: &str) -> Resolved {
        if let Some(known) = self.resolved.get(tzid) {
            return known.clone().map_or(Resolved::Unknown, Resolved::Zone);
        }
        let found = self.look_up(clean(tzid));
        let zone = match &found {
            Resolved::Zone(zone) => Some(zone.clone()),
            Resolved::Unknown => None,
        };
        self.resolved.insert(tzid.to_owned(), zone);
        found
    }

    fn look_up(&self, name: &str) -> Resolved {
        if let Some(zone) = iana(name) {
            return Resolved::Zone(zone);
        }
        if let Some(zone) = windows_zones::iana_for(name).and_then(iana) {
            return Resolved::Zone(zone);
        }
        match self.custom.get(name) {
            Some(zone) => Resolved::Zone(zone.clone()),
            None => Resolved::Unknown,
        }
    }
}

fn clean(tzid: &str) -> &str {
    tzid.trim().trim_matches('"').trim()
}

/// An IANA zone, also behind a vendor prefix made of path segments.
fn iana(name: &str) -> Option<TimeZone> {
    if name.is_empty() {
        return None;
    }
    let mut rest = name;
    loop {
        if let Ok(zone) = jiff::tz::db().get(rest) {
            return Some(zone);
        }
        rest = rest.split_once('/')?.1;
    }
}

fn prop<'a>(c: &'a Component<'_>, name: &str) -> Option<&'a str> {
    c.properties.iter().find(|p| p.name.as_str().eq_ignore_ascii_case(name)).map(|p| p.val.as_str())
}

/// A zone from the latest `STANDARD` and `DAYLIGHT` observances of a `VTIMEZONE`.
fn from_vtimezone(c: &Component<'_>) -> Option<TimeZone> {
    let latest = |kind: &str| {
        c.components
            .iter()
            .filter(|o| o.name.as_str().eq_ignore_ascii_case(kind))
            .max_by_key(|o| prop(o, "DTSTART").unwrap_or_default().to_owned())
    };
    let standard = latest("STANDARD");
    let daylight = latest("DAYLIGHT");
    let std_offset = offset(prop(standard.or(daylight)?, "TZOFFSETTO")?)?;
    let Some(daylight) = daylight.filter(|_| standard.is_some()) else {
        return Some(TimeZone::fixed(std_offset));
    };
    let dst_offset = offset(prop(daylight, "TZOFFSETTO")?)?;
    let (Some(to_dst), Some(to_std)) = (posix_rule(daylight), standard.and_then(posix_rule)) else {
        return Some(TimeZone::fixed(std_offset));
    };
    let rule =
        format!("STD{}DST{},{to_dst},{to_std}", posix_offset(std_offset), posix_offset(dst_offset));
    TimeZone::posix(&rule).ok()
}

/// `+0100`, `-0530`, `+013045` as an offset.
fn offset(text: &str) -> Option<Offset> {
    let text = text.trim();
    let (sign, digits) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i32>().ok());
    let hours = num(0..2)?;
    let minutes = num(2..4)?;
    let seconds = if digits.len() >= 6 { num(4..6)? } else { 0 };
    Offset::from_seconds(sign * (hours * 3600 + minutes * 60 + seconds)).ok()
}

/// POSIX writes offsets west of Greenwich as positive.
fn posix_offset(offset: Offset) -> String {
    let secs = -offset.seconds();
    let sign = if secs < 0 { "-" } else { "" };
    let secs = secs.abs();
    format!("{sign}{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// An observance's yearly `RRULE` with `BYMONTH` and `BYDAY=nDD` as a POSIX `Mm.w.d/time`; the
/// transition time is the wall time before the change, as in the observance's `DTSTART`.
fn posix_rule(observance: &Component<'_>) -> Option<String> {
    let rrule = prop(observance, "RRULE")?;
    let part = |key: &str| {
        rrule.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim().to_ascii_uppercase())
        })
    };
    let month: u8 = part("BYMONTH")?.parse().ok()?;
    let byday = part("BYDAY")?;
    let (nth, day) = byday.split_at(byday.len().checked_sub(2)?);
    let nth: i8 = if nth.is_empty() { 1 } else { nth.trim_start_matches('+').parse().ok()? };
    let week = if nth < 0 { 5 } else { nth.clamp(1, 5) };
    let weekday = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"].iter().position(|d| *d == day)?;
    let start = prop(observance, "DTSTART")?;
    let time = start.split_once('T').map_or("020000", |(_, t)| t);
    let hms = |r: std::ops::Range<usize>| time.get(r).and_then(|s| s.parse::<u8>().ok());
    let (h, m, s) = (hms(0..2)?, hms(2..4)?, hms(4..6).unwrap_or(0));
    Some(format!("M{month}.{week}.{weekday}/{h}:{m:02}:{s:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_prefix_before_an_iana_name_is_read_past() {
        let mut zones = Zones::default();
        let Resolved::Zone(zone) = zones.resolve("/mozilla.org/20050126_1/Europe/Berlin") else {
            panic!("not resolved");
        };
        assert_eq!(zone.iana_name(), Some("Europe/Berlin"));
    }

    #[test]
    fn windows_names_resolve_without_regard_to_case() {
        let Resolved::Zone(zone) = Zones::default().resolve("romance standard time") else {
            panic!("not resolved");
        };
        assert_eq!(zone.iana_name(), Some("Europe/Paris"));
    }
}
