//! Calls: who is calling ([`lookup`]), what happens to the call (the core's
//! [`ampel_core::routing::decide`] over the hub's users), what the caller hears ([`speech`]),
//! and the SIP answer a redirect server gives for a decision ([`redirect`]).
//!
//! The decision itself is made in the core; this module gathers what it needs from the hub and
//! the settings, keeps the caller directory and the address book fresh, and renders audio.
//! The HTTP routes are in `api/routing.rs`.

pub mod carddav;
pub mod lookup;
pub mod number;
pub mod redirect;
pub mod sip;
pub mod speech;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use ampel_core::routing::{Callee, Caller, CallerClass, Decision, Directory, Lang, UserRouting};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::App;
use crate::auth::Principal;
use lookup::{Found, Lookup};
use speech::Speech;

/// The settings area of the users' routing settings, and its one key.
pub const AREA: &str = "routing";
/// The key of a user's [`UserRouting`] in [`AREA`].
pub const KEY: &str = "settings";

/// How long an announcement's audio is kept after it was rendered.
const KEEP_AUDIO: Duration = Duration::from_secs(7 * 24 * 3600);

/// The `[routing]` section of the server configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingFile {
    /// A CSV file with the columns `name`, `number` and optionally `lang`: callers who are not
    /// Ampel users.
    pub directory: Option<PathBuf>,
    /// A CardDAV address book with more callers.
    pub carddav: Option<carddav::Source>,
    /// How often the directory and the address book are read again, in minutes.
    pub refresh_minutes: u64,
    /// The speech synthesiser.
    pub espeak: String,
    /// Where the SIP redirect server sends a call that rings the callee: the PBX's address of
    /// the user's own phones, with `{user}`, `{domain}` and `{id}` (`user@domain`) filled in.
    /// It keeps the `ampel=ring` parameter so that the PBX rings instead of asking again.
    pub ring_contact: String,
    /// A media server's address (RFC 4240) that plays an announcement before the call goes
    /// on, with `{audio_url}` and `{target}` (the redirect's target, escaped) filled in. Without
    /// it a call with an announcement goes straight to its target.
    pub announcement_contact: Option<String>,
    /// The HTTP address the media server fetches announcements from (`http://host:port`);
    /// the address Ampel listens on when unset.
    pub audio_base: Option<String>,
}

impl Default for RoutingFile {
    fn default() -> RoutingFile {
        RoutingFile {
            directory: None,
            carddav: None,
            refresh_minutes: 15,
            espeak: "espeak-ng".into(),
            ring_contact: "sip:{id};ampel=ring".into(),
            announcement_contact: None,
            audio_base: None,
        }
    }
}

/// What the server holds for routing calls.
#[derive(Debug)]
pub struct Routing {
    /// Who is calling.
    pub lookup: Lookup,
    /// Announcements as audio.
    pub speech: Arc<Speech>,
    /// Whether the synthesiser ran at start.
    pub speaks: AtomicBool,
    /// The time zone of users who have none.
    pub default_tz: TimeZone,
    file: RoutingFile,
    http: reqwest::Client,
}

/// Why a call cannot be decided.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The callee is not a user.
    #[error("no user {0}")]
    UnknownCallee(String),
    /// The caller is not a number or an address.
    #[error(transparent)]
    Caller(#[from] number::NumberError),
}

impl Routing {
    /// Reads the directory once; the address book is read by [`Routing::spawn_refresh`].
    pub fn new(
        data_dir: &std::path::Path,
        policy: &ampel_core::Policy,
        file: RoutingFile,
    ) -> Routing {
        let lookup = Lookup::new(number::country(&policy.routing.country));
        let speech = Speech::new(data_dir.join("announcements"), file.espeak.clone());
        let default_tz = TimeZone::get(&policy.routing.timezone).unwrap_or_else(|e| {
            tracing::error!(tz = %policy.routing.timezone, error = %e, "routing time zone unknown, using UTC");
            TimeZone::UTC
        });
        let routing = Routing {
            lookup,
            speech: Arc::new(speech),
            speaks: AtomicBool::new(false),
            default_tz,
            file,
            http: reqwest::Client::new(),
        };
        routing.reload_directory();
        routing
    }

    fn reload_directory(&self) {
        let Some(path) = &self.file.directory else { return };
        match self.lookup.load_directory(path) {
            Ok(count) => {
                tracing::info!(directory = %path.display(), count, "caller directory read")
            }
            Err(e) => tracing::error!(error = %e, "caller directory not read"),
        }
    }

    /// Reads the address book now; returns how many numbers it holds.
    pub async fn refresh_contacts(&self) -> Result<usize, carddav::CardDavError> {
        let Some(source) = &self.file.carddav else { return Ok(0) };
        let cards = carddav::fetch(&self.http, source).await?;
        let count = self.lookup.set_contacts(&cards);
        tracing::info!(count, "address book read");
        Ok(count)
    }

    /// Checks the synthesiser, then reads the address book and the directory again and
    /// again, and removes old audio, until the server is gone. The task holds the routing
    /// state only while it works, so that a stopped server is dropped and its data directory
    /// unlocked.
    pub fn spawn_refresh(routing: &Arc<Routing>) {
        let weak = Arc::downgrade(routing);
        tokio::spawn(async move {
            let Some(routing) = weak.upgrade() else { return };
            let speaks = routing.speech.available().await;
            routing.speaks.store(speaks, Relaxed);
            if !speaks {
                tracing::warn!(program = %routing.file.espeak, "no speech synthesiser; announcements have no audio (install espeak-ng)");
            }
            let minutes = routing.file.refresh_minutes.max(1);
            drop(routing);
            let mut tick = tokio::time::interval(Duration::from_secs(minutes * 60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut first = true;
            loop {
                tick.tick().await;
                let Some(routing) = weak.upgrade() else { return };
                if !std::mem::take(&mut first) {
                    routing.reload_directory();
                }
                if let Err(e) = routing.refresh_contacts().await {
                    tracing::warn!(error = %e, "address book not read");
                }
                // The file system's clock, not the server's: this is about files' ages.
                if let Err(e) = routing.speech.prune(KEEP_AUDIO).await {
                    tracing::warn!(error = %e, "old announcements not removed");
                }
            }
        });
    }
}

/// The hub's users as the decision sees them.
pub struct HubDirectory<'a> {
    app: &'a App,
}

impl<'a> HubDirectory<'a> {
    /// The users of `app`.
    pub fn new(app: &'a App) -> HubDirectory<'a> {
        HubDirectory { app }
    }
}

impl Directory for HubDirectory<'_> {
    fn callee(&self, id: &str) -> Option<Callee> {
        let slot = self.app.hub.user(id)?;
        let record = slot.record();
        let (aggregate, _) = self.app.hub.aggregate_for(&Principal::Admin, &slot);
        let settings: UserRouting = self.app.settings.get(&slot.id, AREA, KEY).unwrap_or_default();
        let tz = record
            .tz
            .as_deref()
            .and_then(|tz| TimeZone::get(tz).ok())
            .unwrap_or_else(|| self.app.routing.default_tz.clone());
        Some(Callee { id: record.id.clone(), name: record.name.clone(), aggregate, settings, tz })
    }
}

/// A call as the PBX describes it.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    /// The caller: a number, a `tel:` or `sip:` URI, a user address, or `anonymous`.
    pub from: &'a str,
    /// The callee: a user address or `sip:` URI.
    pub to: &'a str,
    /// The caller's class, when the PBX knows it.
    pub class: Option<CallerClass>,
    /// The caller's language, when the PBX knows it.
    pub lang: Option<Lang>,
}

/// Decides a call: looks up the caller, reads the callee and decides by the policy.
pub fn decide(app: &App, call: &CallRequest<'_>) -> Result<(Decision, Found), RouteError> {
    let to = call.to.trim();
    let to = to.strip_prefix("sip:").unwrap_or(to);
    let to = to.split(';').next().unwrap_or(to).to_ascii_lowercase();
    let directory = HubDirectory::new(app);
    // A PBX may name the callee by the dialled number instead of the address.
    let callee = directory.callee(&to).or_else(|| {
        let found = app.routing.lookup.find(&app.hub, &to).ok()?;
        directory.callee(found.user.as_deref()?)
    });
    let callee = callee.ok_or_else(|| RouteError::UnknownCallee(to.clone()))?;
    let found = find_caller(app, Some(&callee.id), call.from)?;
    let internal = match call.class {
        Some(CallerClass::Internal) => true,
        Some(CallerClass::External) => false,
        _ => found.internal(),
    };
    let lang = call.lang.or_else(|| found.lang.as_deref().and_then(language));
    let ids = found.number.iter().chain(found.user.iter()).cloned().collect();
    let caller = Caller { ids, internal, declared: call.class, lang };
    let now = app.hub.clock.now();
    let decision = ampel_core::routing::decide(&app.hub.policy, &directory, &callee, &caller, now);
    Ok((decision, found))
}

/// Resolves a caller for calls to `owner`: by the lookup's users, directory and address book,
/// then by `owner`'s own Microsoft 365 contacts (every mailbox's for an administrator).
pub fn find_caller(
    app: &App,
    owner: Option<&str>,
    text: &str,
) -> Result<Found, number::NumberError> {
    let found = app.routing.lookup.find(&app.hub, text)?;
    if found.name.is_some() || found.internal() {
        return Ok(found);
    }
    let Some(number) = found.number.as_deref() else { return Ok(found) };
    match crate::graph::lookup_caller(app, owner, number) {
        Some(contact) => {
            Ok(Found { name: Some(contact.name), origin: Some(lookup::Origin::Graph), ..found })
        }
        None => Ok(found),
    }
}

/// German or English from a language tag (`de-AT`, `en_GB`); other languages are not spoken.
pub fn language(tag: &str) -> Option<Lang> {
    let primary = tag.split(['-', '_']).next()?;
    primary.parse().ok()
}
