//! Exchange Online calendars through `calendarView/delta`: each event in the window becomes a
//! `calendar` fact keyed `graph:{event id}` with its start and end.
//!
//! Each mapped mailbox is read in rounds of delta requests over a window of whole days in the
//! mailbox's time zone, from its midnight today over `calendar_days` more days. The first round
//! of a window reads every event (a full sync, paged by `@odata.nextLink`) and ends with an
//! `@odata.deltaLink`; each later round asks that link for what changed since and applies it
//! to the events kept from the rounds before: new and changed events replace what was kept,
//! `@removed` entries (deleted, or moved out of the window) drop it. When the day changes, the
//! window moves and a new full sync starts; when Graph no longer knows the delta token (410
//! Gone), the round starts over with a full sync. Rounds run every calendar interval, and at
//! once for a mailbox whose events Graph says changed (see [`watch`]).
//!
//! Events are asked for in UTC (`Prefer: outlook.timezone="UTC"`), and every `dateTime` is read
//! in the `timeZone` that comes with it (a Windows or IANA name). All-day events are the
//! exception: they span whole days of the mailbox's own time zone whatever zone Graph writes
//! them in, so their date is taken and placed at midnight in the mailbox's zone (from
//! `mailboxSettings`). Cancelled and declined events make nobody busy and are left out; an event
//! accepted tentatively counts as tentative. Private and confidential events keep no subject.
//!
//! A delta request takes no `$select`, and an entry may come without `showAs` or
//! `sensitivity`; such an event is read on its own (`/users/{id}/events/{event id}`). When that
//! fails too, it counts as busy and private, so that nothing private leaks and nobody looks
//! free who may not be.

pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ampel_core::fact::{Details, ShowAs};
use ampel_core::{Fact, FactState, Source};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Connector;
use super::client::{GraphError, Kind};
use crate::App;
use crate::hub::Change;

/// The prefix of the keys of calendar facts from Graph; other calendar sources use others.
pub const KEY_PREFIX: &str = "graph:";
/// The most pages read in one call of a round; a round with more goes on at the next call.
const MAX_PAGES: usize = 20;
/// The page size asked for with `Prefer: odata.maxpagesize`.
const PAGE_SIZE: usize = 50;
/// The fields read of an event that a delta entry left incomplete.
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

/// Work for the calendar task, sent by the notification endpoints.
#[derive(Debug)]
pub enum Command {
    /// Graph says the events of this Azure AD object id changed: read its delta now.
    Changed(String),
    /// Notifications were missed: read every mailbox's delta now.
    Resync,
    /// Graph asks to reauthorize this subscription: renew it now.
    Renew(String),
    /// Graph removed this subscription: create it anew.
    Recreate(String),
}

/// What Ampel keeps of one mailbox between rounds.
struct Mailbox {
    zone: TimeZone,
    /// The window of the current rounds.
    window: (Timestamp, Timestamp),
    /// Where the next request goes: a `nextLink` while a round is under way, the `deltaLink`
    /// between rounds, `None` for a full sync.
    link: Option<String>,
    /// The events of the window, by id, as the rounds so far left them.
    events: HashMap<String, Event>,
}

/// The calendar task: a round for every mapped mailbox each calendar interval, and one for a
/// mailbox whenever Graph notifies a change of its events.
pub async fn run(app: Arc<App>, graph: Arc<Connector>, mut commands: mpsc::Receiver<Command>) {
    let interval = graph.config.calendar_interval.0.unsigned_abs();
    // How often mapped users Ampel does not know yet are looked for.
    let discover = graph.config.poll_interval.0.unsigned_abs();
    let mut mailboxes: HashMap<String, Mailbox> = HashMap::new();
    let mut subs = watch::Subscriptions::default();
    // Mapped users Ampel does not know, each reported once until it is created.
    let mut unknown: HashSet<String> = HashSet::new();
    loop {
        let users = graph.users();
        subs.cover(&app, &graph, &users).await;
        for (user, object_id) in users.iter() {
            let Some(slot) = app.hub.user(user) else {
                if unknown.insert(user.clone()) {
                    tracing::warn!(user, "graph maps a user ampel does not know; skipping it");
                }
                continue;
            };
            unknown.remove(user);
            round(&app, &graph, &slot, object_id, &mut mailboxes).await;
        }
        mailboxes.retain(|oid, _| users.values().any(|o| o == oid));
        let due = tokio::time::Instant::now() + interval;
        loop {
            let renew = subs.renew_due(&app, &graph);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Resync) => break,
                    Some(command) => {
                        handle(&app, &graph, command, &mut subs, &mut mailboxes).await;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(due) => break,
                () = tokio::time::sleep(renew) => subs.renew_all(&app, &graph).await,
                () = tokio::time::sleep(discover), if !unknown.is_empty() => {
                    created(&app, &graph, &mut unknown, &mut mailboxes).await;
                }
            }
        }
    }
}

/// Runs a round for each mapped user who did not exist at the last round and does now, so that
/// a user created after the start has their calendar without waiting for the next interval.
async fn created(
    app: &App,
    graph: &Connector,
    unknown: &mut HashSet<String>,
    mailboxes: &mut HashMap<String, Mailbox>,
) {
    let now_known: Vec<String> =
        unknown.iter().filter(|u| app.hub.user(u).is_some()).cloned().collect();
    for user in now_known {
        unknown.remove(&user);
        let (Some(slot), Some(object_id)) = (app.hub.user(&user), graph.object_id(&user)) else {
            continue;
        };
        round(app, graph, &slot, &object_id, mailboxes).await;
    }
}

async fn handle(
    app: &App,
    graph: &Connector,
    command: Command,
    subs: &mut watch::Subscriptions,
    mailboxes: &mut HashMap<String, Mailbox>,
) {
    match command {
        Command::Changed(object_id) => {
            let users = graph.users();
            let Some(user) = users.iter().find(|(_, o)| o.eq_ignore_ascii_case(&object_id)) else {
                return;
            };
            if let Some(slot) = app.hub.user(user.0) {
                round(app, graph, &slot, user.1, mailboxes).await;
            }
        }
        Command::Renew(id) => subs.renew_one(app, graph, &id).await,
        Command::Recreate(id) => subs.recreate(app, graph, &id).await,
        Command::Resync => {}
    }
}

/// One delta round for one mailbox, and the facts it leaves.
async fn round(
    app: &App,
    graph: &Connector,
    slot: &crate::hub::Slot,
    object_id: &str,
    mailboxes: &mut HashMap<String, Mailbox>,
) {
    if let Err(e) = try_round(app, graph, slot, object_id, mailboxes).await {
        tracing::debug!(user = %slot.id, error = %e, "graph calendar not read");
    }
}

async fn try_round(
    app: &App,
    graph: &Connector,
    slot: &crate::hub::Slot,
    object_id: &str,
    mailboxes: &mut HashMap<String, Mailbox>,
) -> Result<(), GraphError> {
    if !mailboxes.contains_key(object_id) {
        let zone = mailbox_zone(graph, object_id).await?;
        let mailbox = Mailbox {
            zone,
            window: (Timestamp::MIN, Timestamp::MIN),
            link: None,
            events: HashMap::new(),
        };
        mailboxes.insert(object_id.to_owned(), mailbox);
    }
    let mailbox = mailboxes.get_mut(object_id).expect("inserted above");
    let now = app.hub.clock.now();
    let window = window(&mailbox.zone, now, graph.config.calendar_days);
    if window != mailbox.window {
        mailbox.window = window;
        mailbox.link = None;
    }
    let complete = match read_delta(graph, object_id, mailbox).await {
        Err(GraphError::Status { status: 410, code, .. }) => {
            tracing::info!(user = %slot.id, code, "graph calendar delta expired; reading it in full");
            mailbox.link = None;
            read_delta(graph, object_id, mailbox).await?
        }
        other => other?,
    };
    // A round under way when the user's account was unmapped must not put its facts back.
    if !complete || graph.object_id(&slot.id).as_deref() != Some(object_id) {
        return Ok(());
    }
    let zone = &mailbox.zone;
    let wanted: Vec<Fact> =
        mailbox.events.values().filter_map(|e| event_fact(e, zone, now)).collect();
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

/// The window of whole days read for a mailbox at `now`: from its midnight today over `days`
/// more days, so that it always covers the coming `days` days.
fn window(zone: &TimeZone, now: Timestamp, days: u32) -> (Timestamp, Timestamp) {
    let today = now.to_zoned(zone.clone()).date();
    let midnight = |offset: i64| {
        let date = today.checked_add(offset.days()).unwrap_or(today);
        date.to_zoned(zone.clone()).map_or(now, |z| z.timestamp())
    };
    (midnight(0), midnight(i64::from(days.max(1)) + 1))
}

/// Reads pages of the mailbox's round from where it stands, applying each to the events kept.
/// Returns whether the round reached its `deltaLink` (a round of more pages goes on at the next
/// call).
async fn read_delta(
    graph: &Connector,
    object_id: &str,
    mailbox: &mut Mailbox,
) -> Result<bool, GraphError> {
    if mailbox.link.is_none() {
        let (from, to) = mailbox.window;
        mailbox.events.clear();
        mailbox.link = Some(format!(
            "/users/{object_id}/calendarView/delta?startDateTime={from}&endDateTime={to}"
        ));
    }
    let prefer = format!("outlook.timezone=\"UTC\", odata.maxpagesize={PAGE_SIZE}");
    let headers = [("Prefer", prefer.as_str())];
    for _ in 0..MAX_PAGES {
        let link = mailbox.link.clone().expect("set above");
        let page = graph.client.send(Kind::Other, Method::GET, &link, None, &headers).await?;
        for value in page["value"].as_array().into_iter().flatten() {
            apply_entry(graph, object_id, &mut mailbox.events, value).await;
        }
        if let Some(next) = page["@odata.nextLink"].as_str() {
            mailbox.link = Some(next.to_owned());
        } else if let Some(delta) = page["@odata.deltaLink"].as_str() {
            mailbox.link = Some(delta.to_owned());
            return Ok(true);
        } else {
            mailbox.link = None;
            return Err(GraphError::Decode("a delta page without a next or delta link".into()));
        }
    }
    Ok(false)
}

/// Applies one delta entry: an `@removed` entry drops the event, any other replaces it.
async fn apply_entry(
    graph: &Connector,
    object_id: &str,
    events: &mut HashMap<String, Event>,
    value: &Value,
) {
    let Some(id) = value["id"].as_str() else { return };
    if value.get("@removed").is_some() {
        events.remove(id);
        return;
    }
    let complete = !value["showAs"].is_null() && !value["sensitivity"].is_null();
    let value = if complete {
        value.clone()
    } else {
        let path = format!("/users/{object_id}/events/{id}?$select={SELECT}");
        let prefer = [("Prefer", "outlook.timezone=\"UTC\"")];
        match graph.client.send(Kind::Other, Method::GET, &path, None, &prefer).await {
            Ok(full) => full,
            Err(e) => {
                tracing::debug!(error = %e, "an incomplete graph event not read; taken as busy and private");
                let mut guarded = value.clone();
                guarded["showAs"] = Value::from("busy");
                guarded["sensitivity"] = Value::from("private");
                guarded
            }
        }
    };
    match serde_json::from_value::<Event>(value) {
        Ok(event) => {
            events.insert(id.to_owned(), event);
        }
        // serde's message may quote a value of a private event: debug level only.
        Err(e) => {
            tracing::warn!("a graph event does not read and is skipped");
            tracing::debug!(error = %e, "graph event skipped");
            events.remove(id);
        }
    }
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
    fn the_window_is_whole_days_of_the_mailbox_and_moves_with_the_day() {
        let berlin = super::super::timezone::zone("W. Europe Standard Time").unwrap();
        let (from, to) = window(&berlin, at("2026-12-03T10:00:00Z"), 2);
        assert_eq!((from, to), (at("2026-12-02T23:00:00Z"), at("2026-12-05T23:00:00Z")));
        assert_eq!(window(&berlin, at("2026-12-03T22:59:00Z"), 2).0, from);
        assert_eq!(window(&berlin, at("2026-12-03T23:00:00Z"), 2).0, at("2026-12-03T23:00:00Z"));
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
