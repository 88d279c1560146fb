//! Reading a feed: from bytes to events with resolved zones, and warnings for what was bent.
//!
//! Each top-level component is parsed on its own by the `icalendar` parser, so one broken
//! event is reported and left out while the others count. Zones are resolved here, once; what
//! the entries say about their owner (show-as, privacy, the owner's answer) is settled here
//! too. Private entries keep no subject at all: what is never held cannot leak.

use std::fmt;

use ampel_core::fact::ShowAs;
use icalendar::parser::{Component, Property};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::show_as::{self, Answer};
use crate::text;
use crate::value::{self, Length, Raw};
use crate::zone::{Resolved, Zones};

/// How a feed is read.
#[derive(Clone, Debug)]
pub struct ReadOptions {
    /// The owner's zone: for all-day entries, floating times and unknown `TZID`s.
    pub zone: TimeZone,
    /// The owner's calendar addresses (`alice@example.com`), to find their own answer.
    pub owner: Vec<String>,
    /// Feeds larger than this many bytes are refused.
    pub max_bytes: usize,
    /// Events beyond this many are left out with a warning.
    pub max_events: usize,
}

impl ReadOptions {
    /// Default limits for an owner in `zone`.
    pub fn new(zone: TimeZone) -> ReadOptions {
        ReadOptions { zone, owner: Vec::new(), max_bytes: 8 << 20, max_events: 20_000 }
    }
}

/// A feed that cannot be used at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The feed is larger than allowed.
    #[error("the feed has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The feed has no `BEGIN:VCALENDAR`.
    #[error("the feed is not iCalendar: no BEGIN:VCALENDAR line")]
    NotICalendar,
}

/// Something read leniently or left out. Its message never holds a subject or other detail of
/// an entry, only the entry's `UID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The entry it is about, if any.
    pub uid: Option<String>,
    /// What happened, lowercase.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.uid {
            Some(uid) => write!(f, "{uid}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A start (or a date in a rule) with its zone.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Start {
    /// The wall time in `zone`; midnight for all-day entries.
    pub local: DateTime,
    /// The zone of the wall time; UTC for UTC times.
    pub zone: TimeZone,
    /// A `DATE` value.
    pub all_day: bool,
}

impl Start {
    /// The instant; a wall time that does not exist moves forward by the gap (RFC 5545, 3.3.5).
    pub fn instant(&self) -> Timestamp {
        to_instant(self.local, &self.zone)
    }
}

/// The instant of a wall time in a zone, as RFC 5545 reads gaps and folds.
pub(crate) fn to_instant(local: DateTime, zone: &TimeZone) -> Timestamp {
    zone.to_ambiguous_timestamp(local)
        .compatible()
        .unwrap_or_else(|_| if local.year() < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

/// One `VEVENT`.
#[derive(Clone, Debug)]
pub struct Event {
    /// Its `UID`.
    pub uid: String,
    /// Its subject; always `None` for private entries.
    pub summary: Option<String>,
    /// `CLASS:PRIVATE` or `CLASS:CONFIDENTIAL`.
    pub private: bool,
    /// How it shows its owner; `None` when it does not count (cancelled, declined).
    pub show_as: Option<ShowAs>,
    pub(crate) start: Start,
    pub(crate) length: Length,
    pub(crate) rrule: Option<String>,
    pub(crate) rdates: Vec<Start>,
    pub(crate) exdates: Vec<Start>,
    pub(crate) recurrence_id: Option<Start>,
}

/// A feed read into events.
#[derive(Clone, Debug)]
pub struct Calendar {
    /// The events, in feed order.
    pub events: Vec<Event>,
    /// What was read leniently or left out.
    pub warnings: Vec<Warning>,
    /// The owner's zone.
    pub zone: TimeZone,
}

/// Reads a feed.
pub fn read(bytes: &[u8], options: &ReadOptions) -> Result<Calendar, ReadError> {
    if bytes.len() > options.max_bytes {
        return Err(ReadError::TooLarge { size: bytes.len(), limit: options.max_bytes });
    }
    let decoded = text::decode(bytes);
    let mut warnings = Vec::new();
    if decoded.guessed_bytes > 0 {
        let n = decoded.guessed_bytes;
        warnings.push(warn(None, format!("bytes not in UTF-8 were read as Windows-1252: {n}")));
    }
    let blocks = split(&decoded.text, &mut warnings)?;

    let mut zones = Zones::default();
    for block in blocks.iter().filter(|b| b.name == "VTIMEZONE") {
        if let Some(c) = parse_block(block, &mut warnings) {
            zones.learn(&c);
        }
    }
    let reader = Reader { zones, options, warnings };
    reader.events(&blocks)
}

/// One top-level component's lines.
struct Block<'a> {
    name: String,
    text: String,
    uid: Option<&'a str>,
}

/// The deepest nesting of components read below `VCALENDAR` (an alarm in an event is 2). The
/// parser descends into nested components recursively, so a feed nested thousands deep would
/// overflow the stack and end the process.
const MAX_DEPTH: usize = 8;

/// Cuts the feed into its top-level components, below `VCALENDAR`; a component nested deeper
/// than [`MAX_DEPTH`] is left out with a warning.
fn split<'a>(text: &'a str, warnings: &mut Vec<Warning>) -> Result<Vec<Block<'a>>, ReadError> {
    let mut blocks = Vec::new();
    let mut seen_calendar = false;
    let mut current: Option<(Block<'a>, usize)> = None;
    let mut too_deep = false;
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("BEGIN") && value.trim().eq_ignore_ascii_case("VCALENDAR") {
            seen_calendar = true;
            continue;
        }
        let Some((block, depth)) = &mut current else {
            if name.eq_ignore_ascii_case("BEGIN") && seen_calendar {
                let name = value.trim().to_ascii_uppercase();
                current = Some((Block { name, text: format!("{line}\n"), uid: None }, 1));
            }
            continue;
        };
        block.text.push_str(line);
        block.text.push('\n');
        if name.eq_ignore_ascii_case("UID") && *depth == 1 {
            block.uid = Some(value.trim());
        } else if name.eq_ignore_ascii_case("BEGIN") {
            *depth += 1;
            too_deep |= *depth > MAX_DEPTH;
        } else if name.eq_ignore_ascii_case("END") {
            *depth -= 1;
            if *depth == 0 {
                let block = current.take().map(|(b, _)| b);
                if std::mem::take(&mut too_deep) {
                    let (uid, name) = block.as_ref().map_or((None, ""), |b| (b.uid, &b.name));
                    let message =
                        format!("a {name} nested more than {MAX_DEPTH} deep was left out");
                    warnings.push(warn(uid, message));
                } else {
                    blocks.extend(block);
                }
            }
        }
    }
    if !seen_calendar {
        return Err(ReadError::NotICalendar);
    }
    if let Some((block, _)) = current {
        let message = format!("the feed ends inside a {}; it was left out", block.name);
        warnings.push(warn(block.uid, message));
    }
    Ok(blocks)
}

/// Parses one component; a line the parser cannot take is dropped and the rest tried again.
fn parse_block<'b>(block: &'b Block<'_>, warnings: &mut Vec<Warning>) -> Option<Component<'b>> {
    // The simple form of the parser: its errors carry no context, which is what makes the
    // verbose form slow, and the reason of a failure is not shown anyway.
    if let Some(c) = icalendar::parser::read_calendar_simple(&block.text).ok().and_then(first) {
        return Some(c);
    }
    let lines: Vec<&str> = block.text.lines().collect();
    let (Some(begin), Some(end)) = (lines.first(), lines.last()) else { return None };
    let inner = &lines[1..lines.len().saturating_sub(1).max(1)];
    let readable = |l: &&&str| {
        icalendar::parser::read_calendar_simple(&format!("BEGIN:X\n{l}\nEND:X\n")).is_ok()
    };
    let kept: String = std::iter::once(begin)
        .chain(inner.iter().filter(readable))
        .chain(std::iter::once(end))
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed = icalendar::parser::read_calendar_simple(&kept).ok().and_then(first);
    let message = match parsed {
        Some(_) => format!("unreadable lines in a {} were skipped", block.name),
        None => format!("a {} could not be read and was left out", block.name),
    };
    warnings.push(warn(block.uid, message));
    parsed.map(|c| Component {
        name: c.name.into_owned(),
        properties: c.properties.into_iter().map(owned_property).collect(),
        components: Vec::new(),
    })
}

fn first(components: Vec<Component<'_>>) -> Option<Component<'_>> {
    components.into_iter().next()
}

fn owned_property(p: Property<'_>) -> Property<'static> {
    Property {
        name: p.name.into_owned(),
        val: p.val.into_owned(),
        params: p
            .params
            .into_iter()
            .map(|q| icalendar::parser::Parameter {
                key: q.key.into_owned(),
                val: q.val.map(|v| v.into_owned()),
            })
            .collect(),
    }
}

fn warn(uid: Option<&str>, message: String) -> Warning {
    Warning { uid: uid.map(str::to_owned), message }
}

/// Turns components into events with the zones of the feed.
struct Reader<'o> {
    zones: Zones,
    options: &'o ReadOptions,
    warnings: Vec<Warning>,
}

impl Reader<'_> {
    fn events(mut self, blocks: &[Block<'_>]) -> Result<Calendar, ReadError> {
        let mut events = Vec::new();
        for block in blocks.iter().filter(|b| b.name == "VEVENT") {
            if events.len() >= self.options.max_events {
                let max = self.options.max_events;
                self.warnings
                    .push(warn(None, format!("events after the first {max} were left out")));
                break;
            }
            let Some(c) = parse_block(block, &mut self.warnings) else { continue };
            if let Some(event) = self.event(&c, events.len()) {
                events.push(event);
            }
        }
        Ok(Calendar { events, warnings: self.warnings, zone: self.options.zone.clone() })
    }

    fn event(&mut self, c: &Component<'_>, index: usize) -> Option<Event> {
        let uid = match get(c, "UID") {
            Some(p) => p.val.as_str().trim().to_owned(),
            None => {
                let uid = format!("no-uid-{index}");
                self.warnings.push(warn(Some(&uid), "the event has no UID".into()));
                uid
            }
        };
        let Some(start) = get(c, "DTSTART").and_then(|p| self.start(p, &uid)) else {
            self.warnings.push(warn(Some(&uid), "the event has no readable DTSTART".into()));
            return None;
        };
        let length = self.length(c, &start, &uid);
        let private = get(c, "CLASS").is_some_and(|p| {
            matches!(
                p.val.as_str().trim().to_ascii_uppercase().as_str(),
                "PRIVATE" | "CONFIDENTIAL"
            )
        });
        let summary =
            if private { None } else { get(c, "SUMMARY").map(|p| value::text(p.val.as_str())) };
        let show_as = self.show_as(c);
        let rules: Vec<&Property<'_>> = all(c, "RRULE").collect();
        if rules.len() > 1 {
            self.warnings.push(warn(Some(&uid), "only the first of several RRULEs is used".into()));
        }
        let rrule = rules.first().map(|p| p.val.as_str().trim().to_owned());
        let rdates = self.dates(c, "RDATE", &uid);
        let exdates = self.dates(c, "EXDATE", &uid);
        let recurrence_id = get(c, "RECURRENCE-ID").and_then(|p| self.start(p, &uid));
        Some(Event {
            uid,
            summary,
            private,
            show_as,
            start,
            length,
            rrule,
            rdates,
            exdates,
            recurrence_id,
        })
    }

    /// How the event shows its owner, or `None` when it does not count.
    fn show_as(&self, c: &Component<'_>) -> Option<ShowAs> {
        let val = |name| get(c, name).map(|p| p.val.as_str());
        if val("STATUS").is_some_and(|s| s.trim().eq_ignore_ascii_case("CANCELLED")) {
            return None;
        }
        let stated = show_as::stated(
            val("X-MICROSOFT-CDO-BUSYSTATUS"),
            val("X-MICROSOFT-CDO-INTENDEDSTATUS"),
            val("TRANSP"),
            val("STATUS"),
        );
        let answer = all(c, "ATTENDEE")
            .find(|p| self.is_owner(p.val.as_str()))
            .and_then(|p| param(p, "PARTSTAT"))
            .map_or(Answer::Accepted, show_as::answer);
        show_as::with_answer(stated, answer)
    }

    fn is_owner(&self, address: &str) -> bool {
        let address = address.trim();
        let address = address
            .get(..7)
            .filter(|s| s.eq_ignore_ascii_case("mailto:"))
            .map_or(address, |_| &address[7..]);
        self.options.owner.iter().any(|o| o.eq_ignore_ascii_case(address))
    }

    /// A `DTSTART`-like property with its zone.
    fn start(&mut self, p: &Property<'_>, uid: &str) -> Option<Start> {
        let raw = value::date_or_time(p.val.as_str().split(',').next()?)?;
        Some(self.place(raw, param(p, "TZID"), uid))
    }

    fn place(&mut self, raw: Raw, tzid: Option<&str>, uid: &str) -> Start {
        let owner = || self.options.zone.clone();
        match raw {
            Raw::Date(d) => Start {
                local: d.to_datetime(jiff::civil::Time::midnight()),
                zone: owner(),
                all_day: true,
            },
            Raw::Utc(t) => Start {
                local: t.to_zoned(TimeZone::UTC).datetime(),
                zone: TimeZone::UTC,
                all_day: false,
            },
            Raw::Local(local) => {
                let zone = match tzid.map(|z| (z, self.zones.resolve(z))) {
                    None => owner(),
                    Some((_, Resolved::Zone(zone))) => zone,
                    Some((name, Resolved::Unknown)) => {
                        let message =
                            format!("unknown time zone {name:?}; the owner's zone is used");
                        if !self.warnings.iter().any(|w| w.message == message) {
                            self.warnings.push(warn(Some(uid), message));
                        }
                        owner()
                    }
                };
                Start { local, zone, all_day: false }
            }
        }
    }

    /// `RDATE` or `EXDATE` values, each possibly a list, a period's start taken for a period.
    fn dates(&mut self, c: &Component<'_>, name: &str, uid: &str) -> Vec<Start> {
        let mut out = Vec::new();
        for p in all(c, name) {
            let tzid = param(p, "TZID");
            for item in p.val.as_str().split(',') {
                let item = item.split('/').next().unwrap_or(item);
                match value::date_or_time(item) {
                    Some(raw) => out.push(self.place(raw, tzid, uid)),
                    None => self
                        .warnings
                        .push(warn(Some(uid), format!("an unreadable {name} value was skipped"))),
                }
            }
        }
        out
    }

    /// `DTEND` or `DURATION`; without either a timed event has no length and an all-day event
    /// lasts one day (RFC 5545, 3.6.1).
    fn length(&mut self, c: &Component<'_>, start: &Start, uid: &str) -> Length {
        if let Some(end) = get(c, "DTEND").and_then(|p| self.start(p, uid)) {
            if start.all_day {
                let days = (end.local.date() - start.local.date()).get_days();
                return Length { days: days.max(0), exact: SignedDuration::ZERO };
            }
            let exact = end.instant().duration_since(start.instant());
            if exact.is_negative() {
                self.warnings.push(warn(
                    Some(uid),
                    "DTEND is before DTSTART; the event has no length".into(),
                ));
                return Length::default();
            }
            return Length { days: 0, exact };
        }
        if let Some(p) = get(c, "DURATION") {
            match value::duration(p.val.as_str()) {
                Some(length) if length.days >= 0 && !length.exact.is_negative() => return length,
                _ => {
                    self.warnings.push(warn(Some(uid), "an unreadable DURATION was ignored".into()))
                }
            }
        }
        Length { days: i32::from(start.all_day), exact: SignedDuration::ZERO }
    }
}

fn get<'a, 'b>(c: &'a Component<'b>, name: &str) -> Option<&'a Property<'b>> {
    all(c, name).next()
}

fn all<'a, 'b>(c: &'a Component<'b>, name: &str) -> impl Iterator<Item = &'a Property<'b>> {
    c.properties.iter().filter(move |p| p.name.as_str().eq_ignore_ascii_case(name))
}

fn param<'a>(p: &'a Property<'_>, key: &str) -> Option<&'a str> {
    p.params
        .iter()
        .find(|q| q.key.as_str().eq_ignore_ascii_case(key))
        .and_then(|q| q.val.as_ref())
        .map(|v| v.as_str().trim_matches('"'))
}
