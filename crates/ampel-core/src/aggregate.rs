//! Aggregation: from a user's facts, the policy and the current time to one presence and the
//! explanation of how it came about.
//!
//! This is a pure function of its inputs. It does not read a clock, it does not remember
//! anything between calls (the caller hands in the previous presence so that `since` can be
//! kept), and it tells the caller when its answer would change by itself
//! ([`Explanation::next_change`]) so that a server can set one timer instead of polling.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::fact::{CallState, DeviceState, Fact, FactState, ShowAs, Source};
use crate::model::{Activity, Availability, Location, Note, Presence};
use crate::policy::{Policy, Rule};

/// The outcome of aggregation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Aggregate {
    /// The presence, complete; viewers see projections of it.
    pub presence: Presence,
    /// How it came about.
    pub explanation: Explanation,
    /// The subject of the meeting that decided, when it was not private.
    pub subject: Option<String>,
}

/// Why a presence is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The rule that decided.
    pub rule: Rule,
    /// Every fact that was held, and what became of it.
    pub facts: Vec<Considered>,
    /// When the presence would change by itself if no new fact arrived.
    pub next_change: Option<Timestamp>,
}

impl Explanation {
    /// The sources whose facts decided or contributed.
    pub fn sources(&self) -> Vec<Source> {
        let mut sources: Vec<Source> = self
            .facts
            .iter()
            .filter(|c| matches!(c.verdict, Verdict::Decided | Verdict::Contributed))
            .map(|c| c.source)
            .collect();
        sources.sort();
        sources.dedup();
        sources
    }
}

/// One fact as aggregation saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Considered {
    /// The fact's source.
    pub source: Source,
    /// The fact's key inside its source.
    pub key: String,
    /// What the fact states.
    pub state: FactState,
    /// When the source last said so.
    pub observed: Timestamp,
    /// When the fact stops holding, by plan or by lifetime, whichever is first.
    pub until: Option<Timestamp>,
    /// The rule the fact falls under, if any.
    pub rule: Option<Rule>,
    /// What became of it.
    pub verdict: Verdict,
    /// The source has not confirmed the fact for more than half its lifetime: it may no longer
    /// be true (Microsoft Graph unreachable, say), though it still counts until it expires.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

/// What became of a fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The fact decided the presence.
    Decided,
    /// The fact contributed beside the deciding one: another device of the winning rule, or the
    /// out-of-office marker, the idle flag, the location, the note.
    Contributed,
    /// A fact under a higher-ranked rule won.
    Outranked {
        /// The rule that won.
        by: Rule,
    },
    /// The fact's rule is not in the policy's precedence list.
    NotRanked,
    /// The fact is live but says nothing that changes presence.
    NoEffect {
        /// Why.
        why: &'static str,
    },
    /// The fact is planned and has not started.
    NotStarted,
    /// The fact has ended or outlived its lifetime.
    Expired,
}

/// How a device stands at the moment of aggregation, after idle ageing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    // Ordered from least to most reachable, so that the maximum is the best device.
    Away,
    AwayByIdle,
    Idle,
    Active,
}

/// What one live fact claims.
#[derive(Clone, Debug)]
struct Claim {
    rule: Rule,
    availability: Availability,
    activity: Activity,
    until: Option<Timestamp>,
    /// Higher wins among claims of the same rule.
    strength: u8,
}

/// Aggregates `facts` under `policy` at `now`. `previous` is the last presence aggregated for the
/// same user; its `since` is kept when the state did not change.
pub fn aggregate(
    facts: &[Fact],
    policy: &Policy,
    now: Timestamp,
    previous: Option<&Presence>,
) -> Aggregate {
    let mut next_change = None;
    let mut soonest = |t: Timestamp| {
        if t > now && next_change.is_none_or(|n| t < n) {
            next_change = Some(t);
        }
    };

    let mut considered = Vec::with_capacity(facts.len());
    let mut claims: Vec<Option<Claim>> = Vec::with_capacity(facts.len());
    let mut devices: Vec<(usize, Phase)> = Vec::new();
    for (i, fact) in facts.iter().enumerate() {
        let until = end_of(fact, policy);
        let (rule, verdict, claim) = if fact.starts.is_some_and(|s| s > now) {
            (None, Some(Verdict::NotStarted), None)
        } else if until.is_some_and(|u| u <= now) {
            (None, Some(Verdict::Expired), None)
        } else {
            match claim_of(fact, policy) {
                Ok(claim) => (Some(claim.rule), None, Some(claim)),
                Err(why) => (None, Some(Verdict::NoEffect { why }), None),
            }
        };
        fact.starts.map(&mut soonest);
        until.map(&mut soonest);
        stale_from(fact, policy).map(&mut soonest);

        if claim.is_some() && matches!(fact.state, FactState::Device { .. }) {
            let (phase, changes) = phase_of(fact, policy, now);
            changes.map(&mut soonest);
            devices.push((i, phase));
        }
        considered.push(Considered {
            source: fact.source,
            key: fact.key.clone(),
            state: fact.state.clone(),
            observed: fact.observed,
            until,
            rule,
            verdict: verdict.unwrap_or(Verdict::NotRanked),
            stale: is_stale(fact, policy, now),
        });
        claims.push(claim);
    }

    let idle = !devices.is_empty()
        && devices.iter().all(|(_, p)| matches!(p, Phase::Idle | Phase::AwayByIdle));
    // All devices together make one claim under the devices rule: the most reachable one.
    let best_device = devices
        .iter()
        .max_by_key(|(i, phase)| (*phase, facts[*i].observed))
        .map(|(i, phase)| (*i, devices_claim(*phase, &facts[*i].state)));

    let mut winner = pick_winner(facts, &claims, best_device.as_ref(), policy);
    if let Some((i, claim)) = &mut winner
        && matches!(claim.rule, Rule::CalendarBusy | Rule::CalendarOutOfOffice)
    {
        claim.until = run_end(facts, *i, claim.rule, policy);
    }
    let winner = winner.as_ref().map(|(i, c)| (*i, c));
    let rule = winner.map_or(Rule::NoFacts, |(_, c)| c.rule);
    for (i, c) in claims.iter().enumerate() {
        let Some(claim) = c else { continue };
        considered[i].verdict = match winner {
            _ if policy.precedence.rank(claim.rule).is_none() => Verdict::NotRanked,
            Some((w, wc)) if w == i && wc.rule == claim.rule => Verdict::Decided,
            Some((_, wc)) if wc.rule == claim.rule => Verdict::Contributed,
            Some((_, wc)) => Verdict::Outranked { by: wc.rule },
            None => Verdict::NotRanked,
        };
    }

    let live = |i: &usize| {
        claims[*i].is_some() || matches!(considered[*i].verdict, Verdict::NoEffect { .. })
    };
    let out_of_office = (0..facts.len()).filter(live).any(|i| says_out_of_office(&facts[i]));
    let location = (0..facts.len())
        .filter(live)
        .filter_map(|i| match facts[i].state {
            FactState::Location { location } => Some((facts[i].observed, location)),
            _ => None,
        })
        .max()
        .map(|(_, l): (Timestamp, Location)| l);

    let (availability, activity, until) = match winner {
        Some((_, c)) => (c.availability, c.activity, c.until),
        None => (Availability::Offline, Activity::Offline, None),
    };
    let teams_idle =
        winner.is_some_and(|(i, _)| matches!(&facts[i].state, FactState::Teams(t) if t.idle));
    let appear_offline = rule == Rule::AppearOffline;
    // A status message of its own shows when neither the deciding fact nor the manual status
    // has a note, with its end.
    let message = (0..facts.len())
        .filter(live)
        .filter(|i| facts[*i].state == FactState::Message)
        .max_by_key(|i| facts[*i].observed)
        .and_then(|i| Some((i, facts[i].note.clone()?)));
    let own_note = note_of(facts, &claims, winner.map(|(i, _)| i));
    let shown_message = match (&own_note, message) {
        (None, Some((i, note))) => Some((i, Note { until: end_of(&facts[i], policy), ..note })),
        _ => None,
    };
    if let Some((i, _)) = &shown_message
        && !appear_offline
    {
        considered[*i].verdict = Verdict::Contributed;
    }
    let note = if appear_offline { None } else { own_note.or(shown_message.map(|(_, n)| n)) };
    let since = match previous {
        Some(p) if p.availability == availability && p.activity == activity => p.since,
        _ => now,
    };
    // A session that ended takes its facts with it, but not the memory of when the user was
    // last seen: that carries over from the previous presence.
    let last_active = facts
        .iter()
        .filter(|f| matches!(f.state, FactState::Device { state: DeviceState::Active, .. }))
        .map(|f| f.observed)
        .chain(previous.and_then(|p| p.last_active))
        .filter(|t| *t <= now)
        .max();

    let subject = winner
        .map(|(i, _)| &facts[i])
        .filter(|f| !f.private)
        .and_then(|f| f.details.as_ref()?.subject.clone());

    mark_flag_contributors(facts, &mut considered, out_of_office);
    let presence = Presence {
        availability,
        activity,
        idle: !appear_offline && (idle || teams_idle),
        out_of_office: !appear_offline && out_of_office,
        note,
        until,
        since,
        location: if appear_offline { None } else { location },
        // Appearing offline freezes the last sighting: a colleague must not see it move.
        last_active: if appear_offline {
            previous.and_then(|p| p.last_active)
        } else {
            last_active
        },
    };
    Aggregate {
        presence,
        explanation: Explanation { rule, facts: considered, next_change },
        subject,
    }
}

/// The presence as it stood at `now` when `last` was last seen at `seen` and nothing was
/// aggregated in between (a server that was down). Every change the facts made on their own
/// between `seen` and `now` is replayed, so that `since` is when the current state really
/// began, not when someone looked again.
pub fn catch_up(
    facts: &[Fact],
    policy: &Policy,
    last: &Presence,
    seen: Timestamp,
    now: Timestamp,
) -> Presence {
    // Each step moves to a later instant, and facts only ever have a handful of them; the
    // bound only guards against a policy whose durations are all tiny.
    const MAX_STEPS: usize = 10_000;
    let mut presence = last.clone();
    let mut at = seen;
    for _ in 0..MAX_STEPS {
        let step = aggregate(facts, policy, at, Some(&presence));
        presence = step.presence;
        match step.explanation.next_change {
            Some(next) if next <= now => at = next,
            _ => break,
        }
    }
    aggregate(facts, policy, now, Some(&presence)).presence
}

/// When a fact stops holding: its planned end or the end of its lifetime, whichever is first.
/// A fact whose end has passed is dead and may be dropped by whoever holds it.
///
/// A Teams fact with a planned end is a presence session, which its application set for a
/// stated time (at most four hours, by Graph's rules): it lasts that time. The Teams lifetime
/// is the net for the presence Ampel reads from Graph, which Graph keeps confirming.
pub fn end_of(fact: &Fact, policy: &Policy) -> Option<Timestamp> {
    if fact.source == Source::Teams && fact.ends.is_some() {
        return fact.ends;
    }
    let expires = policy
        .lifetime
        .of(fact.source)
        .map(|d| fact.observed.saturating_add(d.0).unwrap_or(Timestamp::MAX));
    match (fact.ends, expires) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// True when a fact its source keeps refreshing (a Teams presence without a planned end) has
/// not been refreshed for half its lifetime.
pub fn is_stale(fact: &Fact, policy: &Policy, now: Timestamp) -> bool {
    stale_from(fact, policy).is_some_and(|t| t <= now)
}

/// When a fact its source keeps refreshing turns stale, if it can: it is an instant at which
/// the explanation changes by itself.
fn stale_from(fact: &Fact, policy: &Policy) -> Option<Timestamp> {
    if fact.source != Source::Teams || fact.ends.is_some() {
        return None;
    }
    let lifetime = policy.lifetime.of(fact.source)?;
    fact.observed.saturating_add(lifetime.0 / 2).ok()
}

/// Among Teams facts of one rule, the most restrictive availability wins, as Microsoft Graph
/// ranks its own presence sessions: do not disturb, busy, available, away. Busy ranks with a
/// held PBX call.
fn teams_strength(availability: Availability) -> u8 {
    match availability {
        Availability::DoNotDisturb => 3,
        Availability::Busy => 2,
        Availability::Available => 1,
        _ => 0,
    }
}

/// What a live fact claims, or why it claims nothing.
fn claim_of(fact: &Fact, policy: &Policy) -> Result<Claim, &'static str> {
    use Activity as Act;
    use Availability as Av;

    // `until` is when the state is planned to end; a lifetime is a safety net, not a plan.
    let until = fact.ends;
    let claim = |rule, availability, activity, strength| Claim {
        rule,
        availability,
        activity,
        until,
        strength,
    };
    match &fact.state {
        FactState::Status { availability, activity } => {
            let rule = match availability {
                Av::Offline => Rule::AppearOffline,
                Av::DoNotDisturb => Rule::DoNotDisturb,
                _ => Rule::Manual,
            };
            // Appearing offline must look exactly like being offline: no chosen activity shows.
            let activity = match rule {
                Rule::AppearOffline => Act::Offline,
                _ => activity.unwrap_or(availability.plain_activity()),
            };
            Ok(claim(rule, *availability, activity, 0))
        }
        FactState::Device { state, activity: Some(activity) }
            if let Some(claim) = device_activity_claim(*state, *activity, until) =>
        {
            Ok(claim)
        }
        FactState::Device { state: DeviceState::Busy, .. } => {
            Ok(claim(Rule::DeviceStatus, Av::Busy, Act::Busy, 1))
        }
        FactState::Device { state: DeviceState::DoNotDisturb, .. } => {
            Ok(claim(Rule::DeviceStatus, Av::DoNotDisturb, Act::DoNotDisturb, 2))
        }
        // The device rule is settled over all devices together, once their phases are known.
        FactState::Device { .. } => {
            Ok(Claim { until: None, ..claim(Rule::Devices, Av::Offline, Act::Offline, 0) })
        }
        FactState::Call { state } => match state {
            CallState::Connected => Ok(claim(Rule::Call, Av::Busy, Act::InACall, 3)),
            CallState::Held => Ok(claim(Rule::Call, Av::Busy, Act::InACall, 2)),
            CallState::Ringing => Ok(claim(Rule::Call, Av::Busy, Act::Busy, 1)),
            CallState::Ended => Err("the call has ended"),
        },
        FactState::Calendar { show_as } => match show_as {
            ShowAs::Busy => Ok(claim(Rule::CalendarBusy, Av::Busy, Act::InAMeeting, 0)),
            ShowAs::Tentative if policy.calendar.tentative_is_busy => {
                Ok(claim(Rule::CalendarBusy, Av::Busy, Act::InAMeeting, 0))
            }
            ShowAs::Tentative => Err("tentative entries do not make anyone busy"),
            ShowAs::OutOfOffice => {
                Ok(claim(Rule::CalendarOutOfOffice, Av::Away, Act::OutOfOffice, 0))
            }
            ShowAs::Free => Err("the entry shows its owner as free"),
            ShowAs::WorkingElsewhere => Err("working elsewhere does not change availability"),
        },
        FactState::Teams(t) => {
            if t.availability == Av::Unknown {
                return Err("Teams does not know the presence");
            }
            let rule = match t.activity {
                Act::InACall | Act::InAConferenceCall => Rule::Call,
                Act::Presenting => Rule::Presenting,
                Act::InAMeeting => Rule::Meeting,
                _ => Rule::Teams,
            };
            Ok(claim(rule, t.availability, t.activity, teams_strength(t.availability)))
        }
        FactState::Meeting { presenting: true } => {
            Ok(claim(Rule::Presenting, Av::DoNotDisturb, Act::Presenting, 0))
        }
        FactState::Meeting { presenting: false } => {
            Ok(claim(Rule::Meeting, Av::Busy, Act::InAMeeting, 0))
        }
        FactState::Location { .. } => Err("a location does not change availability"),
        FactState::Message => Err("a status message does not change availability"),
    }
}

/// The claim of a device that says what its user does, under the rule of that activity: a
/// phone on the phone is a call, a client in a meeting is a meeting, each ranked by the policy
/// like the same news from the PBX or Teams. `None` for activities the device's state already
/// says all of (away activities shape the device rule instead, see [`devices_claim`]).
fn device_activity_claim(
    state: DeviceState,
    activity: Activity,
    until: Option<Timestamp>,
) -> Option<Claim> {
    use Activity as Act;
    use Availability as Av;

    // A device's own do-not-disturb outranks what it says its user does, as on a phone;
    // presenting is a do-not-disturb of its own.
    if state == DeviceState::DoNotDisturb && activity != Act::Presenting {
        return None;
    }
    // Below the PBX's connected call (3), level with its held one: the PBX knows the call best.
    let (rule, availability, strength) = match activity {
        Act::InACall | Act::InAConferenceCall => (Rule::Call, Av::Busy, 2),
        Act::Presenting => (Rule::Presenting, Av::DoNotDisturb, 0),
        Act::InAMeeting => (Rule::Meeting, Av::Busy, 0),
        _ => return None,
    };
    Some(Claim { rule, availability, activity, until, strength })
}

/// Where a device stands at `now`, and when that changes by ageing.
fn phase_of(fact: &Fact, policy: &Policy, now: Timestamp) -> (Phase, Option<Timestamp>) {
    let idle_after = policy.dynamics.idle_after.0;
    let away_after = policy.dynamics.away_after.0;
    let at = |t: Timestamp, d: SignedDuration| t.saturating_add(d).unwrap_or(Timestamp::MAX);
    let idle_since = match fact.state {
        FactState::Device { state: DeviceState::Away, .. } => return (Phase::Away, None),
        FactState::Device { state: DeviceState::Idle, .. } => fact.observed,
        _ => {
            let idle_since = at(fact.observed, idle_after);
            if now < idle_since {
                return (Phase::Active, Some(idle_since));
            }
            idle_since
        }
    };
    let away_since = at(idle_since, away_after);
    if now < away_since { (Phase::Idle, Some(away_since)) } else { (Phase::AwayByIdle, None) }
}

/// The devices rule's claim from the best device. A device that says its user is away may say
/// how (on holiday, back soon, off work), and that is kept.
fn devices_claim(phase: Phase, state: &FactState) -> Claim {
    let said = match state {
        FactState::Device { activity, .. } => *activity,
        _ => None,
    };
    let (availability, activity) = match (phase, said) {
        (Phase::Active, _) => (Availability::Available, Activity::Available),
        (Phase::Idle, _) => (Availability::Available, Activity::Inactive),
        (Phase::Away, Some(Activity::BeRightBack)) => {
            (Availability::BeRightBack, Activity::BeRightBack)
        }
        (Phase::Away, Some(how @ (Activity::OutOfOffice | Activity::OffWork))) => {
            (Availability::Away, how)
        }
        (Phase::AwayByIdle | Phase::Away, _) => (Availability::Away, Activity::Away),
    };
    Claim { rule: Rule::Devices, availability, activity, until: None, strength: 0 }
}

/// The deciding fact: the claim of the highest-ranked rule; among claims of one rule the
/// strongest, then the most recently observed.
fn pick_winner(
    facts: &[Fact],
    claims: &[Option<Claim>],
    devices: Option<&(usize, Claim)>,
    policy: &Policy,
) -> Option<(usize, Claim)> {
    let own = claims
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c.as_ref()?)))
        .filter(|(_, c)| c.rule != Rule::Devices);
    own.chain(devices.map(|(i, c)| (*i, c)))
        .filter_map(|(i, c)| Some((policy.precedence.rank(c.rule)?, i, c)))
        .min_by_key(|(rank, i, c)| {
            (*rank, std::cmp::Reverse(c.strength), std::cmp::Reverse(facts[*i].observed))
        })
        .map(|(_, i, c)| (i, c.clone()))
}

/// The end of a run of back-to-back calendar entries of one rule, starting with the winner:
/// "busy until 16:00" after three meetings in a row, not until the end of the first one.
fn run_end(facts: &[Fact], winner: usize, rule: Rule, policy: &Policy) -> Option<Timestamp> {
    let mut end = end_of(&facts[winner], policy)?;
    let same_rule = |f: &Fact| match claim_of(f, policy) {
        Ok(c) => c.rule == rule,
        Err(_) => false,
    };
    loop {
        let next = facts
            .iter()
            .filter(|f| f.source == Source::Calendar && same_rule(f))
            .filter(|f| f.starts.unwrap_or(f.observed) <= end)
            .filter_map(|f| end_of(f, policy))
            .filter(|e| *e > end)
            .max();
        match next {
            Some(e) => end = e,
            None => return Some(end),
        }
    }
}

/// The note shown: the deciding fact's own note, else the user's manual note.
fn note_of(facts: &[Fact], claims: &[Option<Claim>], winner: Option<usize>) -> Option<Note> {
    if let Some(note) = winner.and_then(|i| facts[i].note.clone()) {
        return Some(note);
    }
    facts
        .iter()
        .zip(claims)
        .filter(|(f, c)| c.is_some() && f.source == Source::Manual)
        .find_map(|(f, _)| f.note.clone())
}

fn says_out_of_office(fact: &Fact) -> bool {
    state_says_out_of_office(&fact.state)
}

/// Whether a fact's state marks its user out of office, whichever source it came from.
pub(crate) fn state_says_out_of_office(state: &FactState) -> bool {
    match state {
        FactState::Calendar { show_as } => *show_as == ShowAs::OutOfOffice,
        FactState::Teams(t) => t.out_of_office,
        FactState::Status { activity, .. } | FactState::Device { activity, .. } => {
            *activity == Some(Activity::OutOfOffice)
        }
        _ => false,
    }
}

/// Facts that were outranked or had no effect still contribute the flags they set.
fn mark_flag_contributors(facts: &[Fact], considered: &mut [Considered], out_of_office: bool) {
    for (fact, c) in facts.iter().zip(considered.iter_mut()) {
        let live = matches!(
            c.verdict,
            Verdict::Outranked { .. } | Verdict::NoEffect { .. } | Verdict::NotRanked
        );
        let flags = (out_of_office && says_out_of_office(fact))
            || matches!(fact.state, FactState::Location { .. });
        if live && flags {
            c.verdict = Verdict::Contributed;
        }
    }
}
