//! Exchange Online calendars through `calendarView`, read by polling: each event in the window
//! becomes a `calendar` fact keyed `graph:{event id}` with its start and end.
//!
//! Events are asked for in UTC (`Prefer: outlook.timezone="UTC"`), and every `dateTime` is read
//! in the `timeZone` that comes with it (a Windows or IANA name). All-day events are the
//! exception: they span whole days of the mailbox's own time zone whatever zone Graph writes
//! them in, so their date is taken and placed at midnight in the mailbox's zone (from
//! `mailboxSettings`). Cancelled and declined events make nobody busy and are left out; an event
//! accepted tentatively counts as tentative. Private and confidential events keep no subject.

use std::collections::HashMap;
use std::sync::Arc;

use ampel_core::fact::{Details, ShowAs};
use ampel_core::{Fact, FactState, Source};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde::Deserialize;

use super::Connector;
use super::client::{GraphError, Kind};
use crate::App;
use crate::hub::Change;

/// The prefix of the keys of calendar facts from Graph; other calendar sources use others.
pub const KEY_PREFIX: &str = "graph:";
/// The most pages of one calendar view read in one round.
const MAX_PAGES: usize = 20;
/// The fields read of each event.
const SELECT: &str = "id,subject,sensitivity,showAs,isAllDay,isCancelled,responseStatus,start,end";

/// An event as `calendarView` returns it; the fields Ampel does not use are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event's id.
    pub id: String,
    /// The subject; never kept for private events.
    #[serde(default)]
    pub subject: Option<String>,
    /// `normal`, `personal`, `private` or `confidential`.
    #[serde(default)]
    pub sensitivity: Option<String>,
    /// `free`, `tentative`, `busy`, `oof`, `workingElsewhere` or `unknown`.
    #[serde(default)]
    pub show_as: Option<String>,
    /// The event covers whole days.
    #[serde(default)]
    pub is_all_day: bool,
    /// The organiser cancelled it.
    #[serde(default)]
    pub is_cancelled: bool,
    /// The mailbox owner's answer.
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    /// When it starts.
    pub start: DateTimeTimeZone,
    /// When it ends.
    pub end: DateTimeTimeZone,
}

/// Graph's `responseStatus`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseStatus {
    /// `none`, `organizer`, `tentativelyAccepted`, `accepted`, `declined`, `notResponded`.
    #[serde(default)]
    pub response: Option<String>,
}

/// Graph's `dateTimeTimeZone`: a local date and time and the zone it is in.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    /// `2026-04-21T10:00:00.0000000`.
    pub date_time: String,
    /// A Windows or IANA name, or `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// The calendar task: reads every mapped mailbox each calendar interval.
pub async fn run(app: Arc<App>, graph: Arc<Connector>) {
    let mut zones: HashMap<String, TimeZone> = HashMap::new();
    let interval = graph.config.calendar_interval.0.unsigned_abs();
    // Mapped users Ampel does not know, each reported once until it is created.
    let mut unknown: std::collections::HashSet<&str> = std::collections::HashSet::new();
    loop {
        for (user, object_id) in &graph.config.users {
            let Some(slot) = app.hub.user(user) else {
                if unknown.insert(user) {
                    tracing::warn!(user, "graph maps a user ampel does not know; skipping it");
                }
                continue;
            };
            unknown.remove(user.as_str());
            if let Err(e) = sync(&app, &graph, &slot, object_id, &mut zones).await {
                tracing::debug!(user = %slot.id, error = %e, "graph calendar not read");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn sync(
    app: &App,
    graph: &Connector,
    slot: &crate::hub::Slot,
    object_id: &str,
    zones: &mut HashMap<String, TimeZone>,
) -> Result<(), GraphError> {
    let zone = match zones.get(object_id) {
        Some(zone) => zone.clone(),
        None => {
            let zone = mailbox_zone(graph, object_id).await?;
            zones.insert(object_id.to_owned(), zone.clone());
            zone
        }
    };
    let now = app.hub.clock.now();
    let events = read_view(graph, object_id, now).await?;
    let wanted: Vec<Fact> = events.iter().filter_map(|e| event_fact(e, &zone, now)).collect();
    let changes = diff(&app.hub.facts(slot), wanted);
    if changes.is_empty() {
        return Ok(());
    }
    let pending = app.hub.update(slot, changes);
    if let Err(e) = app.hub.committed(slot, pending).await {
        tracing::error!(user = %slot.id, error = %e, "calendar facts not stored");
    }
    Ok(())
}

/// The mailbox's time zone; UTC when Graph names one Ampel does not know.
async fn mailbox_zone(graph: &Connector, object_id: &str) -> Result<TimeZone, GraphError> {
    let path = format!("/users/{object_id}/mailboxSettings?$select=timeZone");
    let answer = graph.client.send(Kind::Other, Method::GET, &path, None, &[]).await?;
    let name = answer["timeZone"].as_str().unwrap_or("UTC");
    Ok(super::timezone::zone(name).unwrap_or_else(|| {
        tracing::warn!(zone = name, "unknown mailbox time zone, reading it as UTC");
        TimeZone::UTC
    }))
}

async fn read_view(
    graph: &Connector,
    object_id: &str,
    now: Timestamp,
) -> Result<Vec<Event>, GraphError> {
    // `calendarView` returns every event that overlaps the window, so one in progress too.
    let from = now;
    let days = i64::from(graph.config.calendar_days.max(1));
    let to = now.saturating_add(SignedDuration::from_hours(24 * days)).unwrap_or(now);
    let mut next = Some(format!(
        "/users/{object_id}/calendarView?startDateTime={from}&endDateTime={to}&$select={SELECT}&$top=100"
    ));
    let mut events = Vec::new();
    let prefer = [("Prefer", "outlook.timezone=\"UTC\"")];
    for _ in 0..MAX_PAGES {
        let Some(path) = next.take() else { break };
        let page = graph.client.send(Kind::Other, Method::GET, &path, None, &prefer).await?;
        for value in page["value"].as_array().into_iter().flatten() {
            match serde_json::from_value::<Event>(value.clone()) {
                Ok(event) => events.push(event),
                // serde's message may quote a value of a private event: debug level only.
                Err(e) => {
                    tracing::warn!("a graph event does not read and is skipped");
                    tracing::debug!(error = %e, "graph event skipped");
                }
            }
        }
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    Ok(events)
}

/// The fact an event makes, or `None` when it makes nobody busy (cancelled, declined, unknown)
/// has ended, or its times do not read.
pub fn event_fact(event: &Event, mailbox: &TimeZone, now: Timestamp) -> Option<Fact> {
    let response = event.response_status.as_ref().and_then(|r| r.response.as_deref());
    if event.is_cancelled || response.is_some_and(|r| r.eq_ignore_ascii_case("declined")) {
        return None;
    }
    let mut show_as = show_as(event.show_as.as_deref()?)?;
    if show_as == ShowAs::Busy
        && response.is_some_and(|r| r.eq_ignore_ascii_case("tentativelyAccepted"))
    {
        show_as = ShowAs::Tentative;
    }
    let (starts, ends) = if event.is_all_day {
        (all_day(&event.start, mailbox)?, all_day(&event.end, mailbox)?)
    } else {
        (instant(&event.start)?, instant(&event.end)?)
    };
    // An event that is over is left out: the hub drops ended facts, and putting it back in each
    // round would only churn.
    if ends <= starts || ends <= now {
        return None;
    }
    let private = event.sensitivity.as_deref().is_some_and(|s| {
        s.eq_ignore_ascii_case("private") || s.eq_ignore_ascii_case("confidential")
    });
    let key = format!("{KEY_PREFIX}{}", event.id);
    let mut fact = Fact::new(Source::Calendar, key, FactState::Calendar { show_as }, now)
        .starting(Some(starts))
        .ending(Some(ends));
    fact.private = private;
    if !private && let Some(subject) = event.subject.as_deref().filter(|s| !s.trim().is_empty()) {
        fact.details = Some(Details { subject: Some(subject.to_owned()), device: None });
    }
    Some(fact)
}

/// Graph's `showAs`, read without regard to case; `unknown` and new values make no fact.
pub fn show_as(value: &str) -> Option<ShowAs> {
    const VALUES: &[(&str, ShowAs)] = &[
        ("free", ShowAs::Free),
        ("tentative", ShowAs::Tentative),
        ("busy", ShowAs::Busy),
        ("oof", ShowAs::OutOfOffice),
        ("workingElsewhere", ShowAs::WorkingElsewhere),
    ];
    VALUES.iter().find(|(word, _)| word.eq_ignore_ascii_case(value.trim())).map(|(_, s)| *s)
}

fn civil(value: &DateTimeTimeZone) -> Option<DateTime> {
    value.date_time.trim().parse().ok()
}

fn instant(value: &DateTimeTimeZone) -> Option<Timestamp> {
    let zone = super::timezone::zone(value.time_zone.as_deref().unwrap_or("UTC"))?;
    civil(value)?.to_zoned(zone).ok().map(|z| z.timestamp())
}

/// An all-day boundary: its date at midnight in the mailbox's zone.
fn all_day(value: &DateTimeTimeZone, mailbox: &TimeZone) -> Option<Timestamp> {
    let date = civil(value)?.date();
    date.to_zoned(mailbox.clone()).ok().map(|z| z.timestamp())
}

/// The changes that make the Graph calendar facts held equal to `wanted`, leaving alone every
/// other fact and the ones that did not change (their `observed` aside).
fn diff(held: &[Fact], wanted: Vec<Fact>) -> Vec<Change> {
    let ours = |f: &&Fact| f.source == Source::Calendar && f.key.starts_with(KEY_PREFIX);
    let mut changes: Vec<Change> = held
        .iter()
        .filter(ours)
        .filter(|f| !wanted.iter().any(|w| w.key == f.key))
        .map(|f| Change::Remove(Source::Calendar, f.key.clone()))
        .collect();
    for fact in wanted {
        let same = held
            .iter()
            .filter(ours)
            .find(|f| f.key == fact.key)
            .is_some_and(|f| Fact { observed: fact.observed, ..f.clone() } == fact);
        if !same {
            changes.push(Change::Put(fact));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        serde_json::from_str(json).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn c10_a_private_event_makes_busy_and_keeps_no_subject() {
        let case: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/C10-private-event.graph.json"))
                .unwrap();
        let e: Event = serde_json::from_value(case["value"][0].clone()).unwrap();
        let fact = event_fact(&e, &TimeZone::UTC, at("2026-04-21T08:00:00Z")).unwrap();
        assert_eq!(fact.state, FactState::Calendar { show_as: ShowAs::Busy });
        assert_eq!(
            (fact.starts, fact.ends),
            (Some(at("2026-04-21T10:00:00Z")), Some(at("2026-04-21T10:30:00Z")))
        );
        assert!(fact.private);
        assert!(!serde_json::to_string(&fact).unwrap().contains("Salary review"));
    }

    #[test]
    fn an_all_day_absence_is_the_mailbox_local_day() {
        let e = event(
            r#"{"id": "x", "showAs": "oof", "isAllDay": true,
                "start": {"dateTime": "2026-04-22T00:00:00.0000000", "timeZone": "UTC"},
                "end": {"dateTime": "2026-04-23T00:00:00.0000000", "timeZone": "UTC"}}"#,
        );
        let berlin = super::super::timezone::zone("W. Europe Standard Time").unwrap();
        let fact = event_fact(&e, &berlin, at("2026-04-21T08:00:00Z")).unwrap();
        assert_eq!(fact.state, FactState::Calendar { show_as: ShowAs::OutOfOffice });
        assert_eq!(
            (fact.starts, fact.ends),
            (Some(at("2026-04-21T22:00:00Z")), Some(at("2026-04-22T22:00:00Z")))
        );
    }

    #[test]
    fn windows_zones_cancelled_declined_and_tentative_answers() {
        let base = r#""start": {"dateTime": "2026-01-15T09:00:00", "timeZone": "Eastern Standard Time"},
                      "end": {"dateTime": "2026-01-15T10:00:00", "timeZone": "Eastern Standard Time"}"#;
        let e = event(&format!(r#"{{"id": "a", "subject": "Standup", "showAs": "busy", {base}}}"#));
        let fact = event_fact(&e, &TimeZone::UTC, at("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(fact.starts, Some(at("2026-01-15T14:00:00Z")));
        assert_eq!(fact.details.unwrap().subject.as_deref(), Some("Standup"));
        assert!(event_fact(&e, &TimeZone::UTC, at("2026-01-15T15:00:00Z")).is_none());

        let cancelled =
            event(&format!(r#"{{"id": "b", "showAs": "busy", "isCancelled": true, {base}}}"#));
        assert!(event_fact(&cancelled, &TimeZone::UTC, at("2026-01-15T00:00:00Z")).is_none());
        let declined = event(&format!(
            r#"{{"id": "c", "showAs": "busy", "responseStatus": {{"response": "declined"}}, {base}}}"#
        ));
        assert!(event_fact(&declined, &TimeZone::UTC, at("2026-01-15T00:00:00Z")).is_none());
        let tentative = event(&format!(
            r#"{{"id": "d", "showAs": "Busy", "responseStatus": {{"response": "tentativelyAccepted"}}, {base}}}"#
        ));
        let fact = event_fact(&tentative, &TimeZone::UTC, at("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(fact.state, FactState::Calendar { show_as: ShowAs::Tentative });
    }

    #[test]
    fn only_changed_graph_facts_are_written_and_others_are_left_alone() {
        let t0 = at("2026-01-15T00:00:00Z");
        let t1 = at("2026-01-15T00:05:00Z");
        let busy = FactState::Calendar { show_as: ShowAs::Busy };
        let mine = Fact::new(Source::Calendar, "graph:a", busy.clone(), t0);
        let gone = Fact::new(Source::Calendar, "graph:b", busy.clone(), t0);
        let caldav = Fact::new(Source::Calendar, "caldav:z", busy.clone(), t0);
        let held = vec![mine.clone(), gone, caldav];
        let changes = diff(&held, vec![Fact { observed: t1, ..mine }]);
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0], Change::Remove(Source::Calendar, k) if k == "graph:b"));
    }
}
