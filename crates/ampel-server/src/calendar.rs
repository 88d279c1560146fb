//! Calendar presence: fetching each user's calendars and placing their meetings as facts.
//!
//! A poller fetches every configured source in turn ([`fetch`]), reads and expands it with
//! `ampel-calendar`, and turns the stretches of the coming hours in which the calendar shows
//! the user busy, tentative or out of office into `calendar` facts with a start and an end. The
//! hub's timers then change the presence at the exact start and end instants; polling only
//! refreshes the plan. A source that fails keeps its last good calendar in force and is marked
//! stale in the explanation until it answers again.
//!
//! Privacy: a private entry's subject is never read into memory (see `ampel-calendar`), facts of
//! private entries are marked private, notes hold only times, and logs hold only the user, the
//! source's name and counts.

pub mod api;
pub mod fetch;
pub mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ampel_calendar::{Calendar, ReadOptions, Timeline};
use ampel_core::fact::{Details, ShowAs};
use ampel_core::model::Note;
use ampel_core::{Fact, FactState, Source};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use crate::App;
use crate::hub::Change;
use fetch::{Fetched, Validators};
use source::{AREA, CalendarSection, SourceConfig};

/// The most warnings shown per source.
const MAX_WARNINGS_SHOWN: usize = 10;

/// The most facts one source places at once.
const MAX_FACTS: usize = 64;

/// The most sources fetched and read at once. Each may hold a body of up to `max_bytes` and its
/// parsed calendar, so polling thousands of sources all at once could take gigabytes; a source
/// that does not answer holds one turn for at most the fetch timeout.
pub const POLLS_AT_ONCE: usize = 32;

/// How a source stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Standing {
    /// Not fetched yet.
    Pending,
    /// The last fetch succeeded.
    Ok,
    /// The last fetch failed; the last good calendar stays in force.
    Stale,
    /// No fetch ever succeeded.
    Failing,
}

/// A source's health, as the API and the explanation show it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// The source's name.
    pub name: String,
    /// How it stands.
    pub standing: Standing,
    /// When it was last read successfully.
    #[schema(value_type = Option<String>)]
    pub last_success: Option<Timestamp>,
    /// When it was last tried.
    #[schema(value_type = Option<String>)]
    pub last_attempt: Option<Timestamp>,
    /// Why the last try failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Events in the last good calendar.
    pub events: usize,
    /// Entries or lines that were read leniently or left out.
    pub warnings: usize,
    /// The first of those warnings, each naming an entry only by its `UID`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_warnings: Vec<String>,
}

// FIXME: the last good calendar is held whole (about 290 bytes per event, measured by the
// fleet benchmark), so that a failing source stays in force and a `304` needs no re-read; for
// 10,000 users with 200 events each that is about 580 MB. Holding only the occurrences of the
// next weeks (and forgetting the validators before they run out) would bound it; left for when
// memory is measured with real feeds.
#[derive(Default)]
struct Held {
    config: Option<SourceConfig>,
    validators: Validators,
    calendar: Option<Arc<Calendar>>,
    last_success: Option<Timestamp>,
    last_attempt: Option<Timestamp>,
    error: Option<String>,
}

/// Every calendar source and what is known about it.
pub struct Calendars {
    section: CalendarSection,
    client: reqwest::Client,
    held: Mutex<HashMap<(String, String), Held>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Calendars {
    /// The sources of the configuration file; more come from the settings.
    pub fn new(section: CalendarSection) -> Calendars {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("ampel/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with static options");
        Calendars { section, client, held: Mutex::default(), wake: Arc::default() }
    }

    /// The section in force.
    pub fn section(&self) -> &CalendarSection {
        &self.section
    }

    /// Every source as `(user, name, config)`: the configuration file's, then the settings',
    /// which replace a file source of the same user and name.
    pub fn sources(&self, app: &App) -> Vec<(String, String, SourceConfig)> {
        let mut all: Vec<(String, String, SourceConfig)> = self
            .section
            .sources
            .iter()
            .map(|s| (s.user.to_ascii_lowercase(), s.name.clone(), s.source.clone()))
            .collect();
        for (user, name, config) in app.settings.area::<SourceConfig>(AREA) {
            all.retain(|(u, n, _)| !(*u == user && *n == name));
            all.push((user, name, config));
        }
        all
    }

    /// The health of a user's sources.
    pub fn health(&self, app: &App, user: &str) -> Vec<Health> {
        let held = self.held.lock().expect("calendar lock");
        self.sources(app)
            .into_iter()
            .filter(|(u, _, _)| u == user)
            .map(|(u, name, _)| health_of(&name, held.get(&(u, name.clone()))))
            .collect()
    }

    /// Asks the poller to fetch now (after a source was added or changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Forgets what is held about a source.
    pub fn forget(&self, user: &str, name: &str) {
        self.held.lock().expect("calendar lock").remove(&(user.to_owned(), name.to_owned()));
    }

    /// Fetches every source once, [`POLLS_AT_ONCE`] at a time, so that a slow one stalls no
    /// other and the bodies held at once stay bounded. The fetches run inside the caller's
    /// task: stopping the poller stops them.
    pub async fn poll_once(app: &Arc<App>) {
        use futures_util::StreamExt;
        let polls = app.calendars.sources(app).into_iter().map(|(user, name, config)| async move {
            poll_source(app, &user, &name, config).await
        });
        futures_util::stream::iter(polls).buffer_unordered(POLLS_AT_ONCE).count().await;
    }
}

fn health_of(name: &str, held: Option<&Held>) -> Health {
    let standing = match held {
        None => Standing::Pending,
        Some(h) if h.error.is_none() && h.calendar.is_some() => Standing::Ok,
        Some(h) if h.calendar.is_some() => Standing::Stale,
        Some(h) if h.last_attempt.is_none() => Standing::Pending,
        Some(_) => Standing::Failing,
    };
    let calendar = held.and_then(|h| h.calendar.as_ref());
    Health {
        name: name.to_owned(),
        standing,
        last_success: held.and_then(|h| h.last_success),
        last_attempt: held.and_then(|h| h.last_attempt),
        error: held.and_then(|h| h.error.clone()),
        events: calendar.map_or(0, |c| c.events.len()),
        warnings: calendar.map_or(0, |c| c.warnings.len()),
        first_warnings: calendar
            .map(|c| c.warnings.iter().take(MAX_WARNINGS_SHOWN).map(|w| w.to_string()).collect())
            .unwrap_or_default(),
    }
}

/// Runs the poller for the life of the server. It holds the server's state only while it polls,
/// so that a stopped server is dropped (and its data directory unlocked) without waiting for it.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(app.calendars.section.poll_s.max(1));
    let wake = Arc::clone(&app.calendars.wake);
    let weak = Arc::downgrade(&app);
    drop(app);
    tokio::spawn(async move {
        if let Some(app) = weak.upgrade() {
            prune(&app).await;
        }
        loop {
            let Some(app) = weak.upgrade() else { return };
            Calendars::poll_once(&app).await;
            drop(app);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = wake.notified() => {}
            }
        }
    })
}

/// Removes the facts of sources that are no longer configured (a source taken out of the
/// configuration file while the server was down); once, at start.
async fn prune(app: &Arc<App>) {
    let configured: std::collections::HashSet<(String, String)> =
        app.calendars.sources(app).into_iter().map(|(u, n, _)| (u, n)).collect();
    for record in app.hub.records() {
        let Some(slot) = app.hub.user(&record.id) else { continue };
        let mut orphaned: Vec<String> = app
            .hub
            .facts(&slot)
            .into_iter()
            .filter(|f| f.source == Source::Calendar)
            .filter_map(|f| f.key.split_once('/').map(|(name, _)| name.to_owned()))
            .filter(|name| !configured.contains(&(record.id.clone(), name.clone())))
            .collect();
        orphaned.sort();
        orphaned.dedup();
        for name in orphaned {
            let user = &record.id;
            tracing::info!(user = %user, source = %name, "facts of a removed source dropped");
            remove_facts(app, &slot, &name).await;
        }
    }
}

/// Fetches one source and brings the user's facts of it up to date.
async fn poll_source(app: &Arc<App>, user: &str, name: &str, config: SourceConfig) {
    let now = app.hub.clock.now();
    let key = (user.to_owned(), name.to_owned());
    let Some(slot) = app.hub.user(user) else {
        app.calendars.record(&key, now, Err("the source names a user who does not exist".into()));
        return;
    };
    let section = &app.calendars.section;
    let window = SignedDuration::from_hours(section.window_h.into());
    let window_end = now.saturating_add(window).unwrap_or(Timestamp::MAX);

    let known = app.calendars.validators(&key, &config);
    let client = &app.calendars.client;
    let fetched = fetch::fetch(client, &config, &known, (now, window_end), section.max_bytes).await;
    let record = slot.record();
    let zone =
        record.tz.as_deref().and_then(|z| jiff::tz::db().get(z).ok()).unwrap_or(TimeZone::UTC);
    let mut options = ReadOptions::new(zone.clone());
    options.owner = vec![user.to_owned()];
    options.max_bytes = section.max_bytes;
    let outcome = read_fetched(fetched, options).await;

    let Some(calendar) = app.calendars.record(&key, now, outcome) else { return };
    tracing::info!(
        user,
        source = name,
        events = calendar.events.len(),
        warnings = calendar.warnings.len(),
        "calendar read"
    );
    for w in &calendar.warnings {
        tracing::debug!(user, source = name, warning = %w, "calendar read leniently");
    }

    let max = section.max_occurrences;
    let (lang, name_owned) = (record.lang.clone(), name.to_owned());
    let planned = tokio::task::spawn_blocking(move || {
        let from = now.saturating_sub(SignedDuration::from_hours(24)).unwrap_or(now);
        let expansion = ampel_calendar::expand(&calendar, from, window_end, max);
        let timeline = Timeline::new(&expansion.occurrences);
        plan(&calendar, &timeline, &name_owned, (now, window_end), &zone, lang.as_deref())
    })
    .await;
    match planned {
        Ok(facts) => apply(app, &slot, name, facts).await,
        Err(e) => tracing::error!(user, source = name, error = %e, "calendar expansion failed"),
    }
}

/// What a fetch gave, read: a new calendar, `None` when unchanged, or why it failed.
type Outcome = Result<Option<(Arc<Calendar>, Validators)>, String>;

/// Reads fetched bytes off the async threads.
async fn read_fetched(
    fetched: Result<Fetched, fetch::FetchError>,
    options: ReadOptions,
) -> Outcome {
    match fetched {
        Ok(Fetched::Body(bytes, validators)) => {
            let read =
                tokio::task::spawn_blocking(move || ampel_calendar::read(&bytes, &options)).await;
            match read {
                Ok(Ok(calendar)) => Ok(Some((Arc::new(calendar), validators))),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("reading failed: {e}")),
            }
        }
        Ok(Fetched::NotModified) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl Calendars {
    /// The validators to send for a source. A changed source starts over for its validators,
    /// but its last good calendar stays in force until the changed source answers.
    fn validators(&self, key: &(String, String), config: &SourceConfig) -> Validators {
        let mut held = self.held.lock().expect("calendar lock");
        let h = held.entry(key.clone()).or_default();
        if h.config.as_ref() != Some(config) {
            h.config = Some(config.clone());
            h.validators = Validators::default();
        }
        h.validators.clone()
    }

    /// Notes how a poll went and returns the calendar in force: the new one, or the last good.
    fn record(
        &self,
        key: &(String, String),
        now: Timestamp,
        outcome: Outcome,
    ) -> Option<Arc<Calendar>> {
        let mut held = self.held.lock().expect("calendar lock");
        let h = held.entry(key.clone()).or_default();
        h.last_attempt = Some(now);
        match outcome {
            Ok(fresh) => {
                if let Some((calendar, validators)) = fresh {
                    h.calendar = Some(calendar);
                    h.validators = validators;
                }
                h.error = None;
                h.last_success = Some(now);
            }
            Err(e) => {
                let (user, source) = key;
                tracing::warn!(user = %user, source = %source, error = %e, "calendar source failed");
                h.error = Some(e);
            }
        }
        h.calendar.clone()
    }
}

/// The facts a timeline stands for between `now` and `end`: one per segment that shows more
/// than free, keyed by the source's name and the segment's start.
pub fn plan(
    calendar: &Calendar,
    timeline: &Timeline,
    name: &str,
    (now, end): (Timestamp, Timestamp),
    zone: &TimeZone,
    lang: Option<&str>,
) -> Vec<Fact> {
    let segments = timeline.segments();
    segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.end > now && s.start < end)
        .filter(|(_, s)| {
            matches!(s.show_as, ShowAs::Busy | ShowAs::Tentative | ShowAs::OutOfOffice)
        })
        .take(MAX_FACTS)
        .map(|(i, s)| {
            let event = &calendar.events[s.event];
            let until = timeline.run_end(i);
            let key = format!("{name}/{}", s.start);
            let mut fact =
                Fact::new(Source::Calendar, key, FactState::Calendar { show_as: s.show_as }, now)
                    .starting(Some(s.start))
                    .ending(Some(s.end))
                    .with_note(note(s.show_as, s.start, until, zone, lang));
            fact.private = event.private;
            fact.details = match (&event.summary, event.private) {
                (Some(subject), false) => {
                    Some(Details { subject: Some(subject.clone()), device: None })
                }
                _ => None,
            };
            fact
        })
        .collect()
}

/// "In a meeting until 14:30" in the user's language and zone; the day is named when the end is
/// not on the day the stretch starts.
pub fn note(
    show_as: ShowAs,
    start: Timestamp,
    until: Timestamp,
    zone: &TimeZone,
    lang: Option<&str>,
) -> Option<Note> {
    let german = lang.is_some_and(|l| l.to_ascii_lowercase().starts_with("de"));
    let end = until.to_zoned(zone.clone());
    let same_day = start.to_zoned(zone.clone()).date() == end.date();
    let when = match (same_day, german) {
        (true, _) => end.strftime("%H:%M").to_string(),
        (false, true) => end.strftime("%d.%m. %H:%M").to_string(),
        (false, false) => end.strftime("%a %-d %b %H:%M").to_string(),
    };
    let text = match (show_as, german) {
        (ShowAs::OutOfOffice, true) => format!("Abwesend bis {when}"),
        (ShowAs::OutOfOffice, false) => format!("Out of office until {when}"),
        (ShowAs::Busy | ShowAs::Tentative, true) => format!("In einer Besprechung bis {when}"),
        (ShowAs::Busy | ShowAs::Tentative, false) => format!("In a meeting until {when}"),
        _ => return None,
    };
    Some(Note::new(text, Some(if german { "de" } else { "en" })))
}

/// Puts the planned facts of one source and removes the ones no longer planned.
async fn apply(app: &App, slot: &crate::hub::Slot, name: &str, planned: Vec<Fact>) {
    let prefix = format!("{name}/");
    let current: Vec<Fact> = app
        .hub
        .facts(slot)
        .into_iter()
        .filter(|f| f.source == Source::Calendar && f.key.starts_with(&prefix))
        .collect();
    let same = |a: &Fact, b: &Fact| Fact { observed: b.observed, ..a.clone() } == *b;
    let mut changes: Vec<Change> = current
        .iter()
        .filter(|c| !planned.iter().any(|p| p.key == c.key))
        .map(|c| Change::Remove(Source::Calendar, c.key.clone()))
        .collect();
    changes.extend(
        planned.into_iter().filter(|p| !current.iter().any(|c| same(p, c))).map(Change::Put),
    );
    if changes.is_empty() {
        return;
    }
    if let Err(e) = app.hub.committed(slot, app.hub.update(slot, changes)).await {
        tracing::error!(user = %slot.id, source = name, error = %e, "calendar facts not stored");
    }
}

/// Removes every fact a source placed.
pub async fn remove_facts(app: &App, slot: &crate::hub::Slot, name: &str) {
    apply(app, slot, name, Vec::new()).await;
}
