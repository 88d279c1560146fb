//! `ampel calendar`: reads an iCalendar file or URL the way the server does and says what it
//! shows at an instant, or lists its busy intervals. Warnings about what was read leniently go
//! to standard error.

use std::path::Path;

use ampel_calendar::{Calendar, ReadOptions, Timeline};
use ampel_core::fact::ShowAs;
use ampel_server::calendar::fetch::{self, Fetched, Validators};
use ampel_server::calendar::source::{Kind, SourceConfig};
use anyhow::Context;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::Serialize;

/// Largest feed read.
const MAX_BYTES: usize = 8 << 20;
/// Most occurrences expanded.
const MAX_OCCURRENCES: usize = 100_000;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// What the calendar shows at an instant, and until when.
    Check {
        /// An iCalendar file or an http(s) URL.
        feed: String,
        /// The instant (RFC 3339), or `now`.
        #[arg(long, value_parser = instant)]
        at: Timestamp,
        /// The owner's zone (IANA name) for all-day entries, floating times and output;
        /// the system's zone when left out.
        #[arg(long)]
        tz: Option<String>,
        /// Print JSON: `{"calendar", "until"}`.
        #[arg(long)]
        json: bool,
    },
    /// The busy, tentative and out-of-office intervals between two instants.
    Busy {
        /// An iCalendar file or an http(s) URL.
        feed: String,
        /// Start (RFC 3339), or `now`.
        #[arg(long, value_parser = instant)]
        from: Timestamp,
        /// End (RFC 3339), or `now`.
        #[arg(long, value_parser = instant)]
        to: Timestamp,
        /// The owner's zone (IANA name); the system's zone when left out.
        #[arg(long)]
        tz: Option<String>,
        /// Print JSON: `{"intervals": [{"start", "end", "status", "uid"}]}`.
        #[arg(long)]
        json: bool,
    },
}

/// An instant with an offset (`2026-03-30T09:15:00+02:00`, `...Z`), with a zone annotation, or
/// `now`.
fn instant(text: &str) -> Result<Timestamp, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now());
    }
    text.parse::<Timestamp>().or_else(|_| text.parse::<Zoned>().map(|z| z.timestamp())).map_err(
        |_| {
            format!(
                "`{text}` is not an instant; give `now` or an RFC 3339 instant like {}",
                crate::client::example_instant()
            )
        },
    )
}

#[derive(Serialize)]
struct CheckAnswer {
    calendar: ShowAs,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

#[derive(Serialize)]
struct Interval {
    start: String,
    end: String,
    status: ShowAs,
    uid: String,
}

#[derive(Serialize)]
struct BusyAnswer {
    intervals: Vec<Interval>,
}

/// Runs a calendar command.
pub fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Check { feed, at, tz, json } => {
            let zone = zone(tz.as_deref())?;
            let calendar = load(&feed, &zone, (at, at))?;
            let from = at.saturating_sub(SignedDuration::from_hours(24 * 7))?;
            let to = at.saturating_add(SignedDuration::from_hours(24 * 90))?;
            let expansion = ampel_calendar::expand(&calendar, from, to, MAX_OCCURRENCES);
            warn(&expansion.warnings);
            let state = Timeline::new(&expansion.occurrences).at(at);
            let until = state.until.map(|t| rfc3339(t, &zone));
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&CheckAnswer { calendar: state.show_as, until })?
                );
            } else {
                match until {
                    Some(until) => println!("{} until {until}", word(state.show_as)),
                    None => println!("{}", word(state.show_as)),
                }
            }
        }
        Command::Busy { feed, from, to, tz, json } => {
            anyhow::ensure!(from < to, "--from must be before --to");
            let zone = zone(tz.as_deref())?;
            let calendar = load(&feed, &zone, (from, to))?;
            let expansion = ampel_calendar::expand(&calendar, from, to, MAX_OCCURRENCES);
            warn(&expansion.warnings);
            let intervals: Vec<Interval> = expansion
                .occurrences
                .iter()
                .filter(|o| o.end > o.start && o.show_as != ShowAs::Free)
                .map(|o| Interval {
                    start: rfc3339(o.start, &zone),
                    end: rfc3339(o.end, &zone),
                    status: o.show_as,
                    uid: calendar.events[o.event].uid.clone(),
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string(&BusyAnswer { intervals })?);
            } else {
                for i in intervals {
                    println!("{}  {}  {:<17} {}", i.start, i.end, word(i.status), i.uid);
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn zone(name: Option<&str>) -> anyhow::Result<TimeZone> {
    match name {
        Some(name) => {
            jiff::tz::db().get(name).with_context(|| format!("unknown time zone {name:?}"))
        }
        None => Ok(TimeZone::system()),
    }
}

fn word(show_as: ShowAs) -> &'static str {
    match show_as {
        ShowAs::Free => "free",
        ShowAs::Tentative => "tentative",
        ShowAs::Busy => "busy",
        ShowAs::OutOfOffice => "out-of-office",
        ShowAs::WorkingElsewhere => "working-elsewhere",
    }
}

fn rfc3339(t: Timestamp, zone: &TimeZone) -> String {
    let z = t.to_zoned(zone.clone());
    if z.offset().seconds() == 0 {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn warn(warnings: &[ampel_calendar::Warning]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Reads a feed from a file or a URL.
fn load(feed: &str, zone: &TimeZone, window: (Timestamp, Timestamp)) -> anyhow::Result<Calendar> {
    let bytes = if feed.starts_with("http://") || feed.starts_with("https://") {
        let source = SourceConfig {
            kind: Kind::Url,
            location: feed.to_owned(),
            username: None,
            password: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let fetched = runtime.block_on(async {
            let client = reqwest::Client::new();
            fetch::fetch(&client, &source, &Validators::default(), window, MAX_BYTES).await
        });
        match fetched.with_context(|| format!("cannot fetch {feed}"))? {
            Fetched::Body(bytes, _) => bytes,
            Fetched::NotModified => {
                anyhow::bail!("{feed} answered 304 to an unconditional request")
            }
        }
    } else {
        let path = Path::new(feed);
        let size = std::fs::metadata(path).with_context(|| format!("cannot read {feed}"))?.len();
        anyhow::ensure!(size <= MAX_BYTES as u64, "{feed} has more than {MAX_BYTES} bytes");
        std::fs::read(path).with_context(|| format!("cannot read {feed}"))?
    };
    let calendar = ampel_calendar::read(&bytes, &ReadOptions::new(zone.clone()))
        .with_context(|| format!("cannot read {feed}"))?;
    warn(&calendar.warnings);
    Ok(calendar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_an_instant_and_a_bad_one_is_named_in_plain_words() {
        let before = Timestamp::now();
        let now = instant("now").unwrap();
        assert!(now >= before && now <= Timestamp::now());
        assert_eq!(
            instant("2026-12-03T16:00:00Z").unwrap(),
            "2026-12-03T16:00:00Z".parse().unwrap()
        );
        let error = instant("tomorrow").unwrap_err();
        assert!(
            error.starts_with(
                "`tomorrow` is not an instant; give `now` or an RFC 3339 instant like 2"
            ),
            "{error}"
        );
        assert!(!error.contains("parse"), "{error}");
    }
}
