//! Routing decisions: what happens to a call to a user, decided from the user's aggregated
//! presence, who calls, and the time, by the routing rules of the policy.
//!
//! [`decide`] is a plain function. The server hands in what it holds about the callee (the
//! aggregate, the user's routing settings, the time zone) through a [`Directory`], and a
//! forward to another user is followed through the same directory, with a visited set and
//! the policy's bound, so that a ring of forwards ends in the first callee's voicemail instead
//! of going round. What the caller hears ([`announce`]) is worded here too, from the name and
//! the times alone: a meeting's subject or place never reaches a caller.

pub mod announce;
pub mod rules;

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, Verdict};
use crate::fact::FactState;
use crate::model::{Activity, Availability};
use crate::policy::{Policy, Rule};
pub use announce::{Announcement, Lang};
pub use rules::{Action, RouteRule, RoutingPolicy, Situation, Target};

/// What one user set for their own calls; kept in the settings, area `routing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct UserRouting {
    /// Where calls go while the user is in a meeting or absent.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "user:bob@example.com"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absence_target: Option<Target>,
    /// Where calls go while the user is in a call.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "tel:+4930123456"))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_target: Option<Target>,
    /// The user's mobile number in E.164.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    /// The user's own additions to the company's caller lists (`vip`, `emergency`, ...): E.164
    /// numbers and user addresses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, Vec<String>>,
}

/// Why a user's routing settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingsFault {
    /// The field at fault, as a path (`lists.vip[2]`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl UserRouting {
    /// Checks the settings against the policy: targets must be destinations (not another
    /// setting), teams and lists must exist, numbers must be E.164.
    pub fn check(&self, policy: &RoutingPolicy) -> Result<(), SettingsFault> {
        let fault = |field: &str, message: String| SettingsFault { field: field.into(), message };
        for (field, target) in
            [("absence_target", &self.absence_target), ("busy_target", &self.busy_target)]
        {
            match target {
                Some(t) if matches!(t, Target::BusyTarget | Target::AbsenceTarget) => {
                    return Err(fault(field, format!("`{t}` cannot point at another setting")));
                }
                Some(Target::Team(team)) if !policy.teams.contains_key(team) => {
                    return Err(fault(field, format!("there is no team `{team}` in the policy")));
                }
                _ => {}
            }
        }
        if let Some(mobile) = &self.mobile
            && !rules::is_e164(mobile)
        {
            return Err(fault("mobile", format!("`{mobile}` is not a number in E.164")));
        }
        for (list, entries) in &self.lists {
            if !policy.lists.contains_key(list)
                && !rules::BUILT_IN_CLASSES[2..].contains(&list.as_str())
            {
                return Err(fault(&format!("lists.{list}"), format!("there is no list `{list}`")));
            }
            for (i, entry) in entries.iter().enumerate() {
                if !rules::is_e164(entry) && !rules::is_user_id(entry) {
                    return Err(fault(
                        &format!("lists.{list}[{i}]"),
                        format!("`{entry}` is neither a number in E.164 nor a user address"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Everything the decision needs to know about one user.
#[derive(Clone, Debug)]
pub struct Callee {
    /// `user@domain`.
    pub id: String,
    /// The display name, as an announcement says it.
    pub name: String,
    /// The user's aggregated presence with its explanation.
    pub aggregate: Aggregate,
    /// The user's routing settings.
    pub settings: UserRouting,
    /// The user's time zone, for `hours` and for the times an announcement says.
    pub tz: TimeZone,
}

/// Where the decision finds users: the callee, and whoever a forward names.
pub trait Directory {
    /// The user with this id (lowercase), if there is one.
    fn callee(&self, id: &str) -> Option<Callee>;
}

/// The caller's class as the PBX states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CallerClass {
    /// A colleague on the company's PBX.
    Internal,
    /// Anyone else.
    External,
    /// Someone the PBX knows to be a VIP.
    Vip,
    /// An emergency call.
    Emergency,
}

/// Who is calling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// What identifies the caller in the caller lists: the number in E.164, the user address.
    pub ids: Vec<String>,
    /// True for a caller inside the company.
    pub internal: bool,
    /// A class the PBX stated beside internal or external (`vip`, `emergency`).
    pub declared: Option<CallerClass>,
    /// The caller's language, when known.
    pub lang: Option<Lang>,
}

impl Caller {
    /// The classes and lists this caller belongs to for calls to `callee`.
    pub fn classes(&self, policy: &RoutingPolicy, callee: &UserRouting) -> Vec<String> {
        let mut classes = vec![if self.internal { "internal" } else { "external" }.to_owned()];
        if let Some(declared @ (CallerClass::Vip | CallerClass::Emergency)) = self.declared {
            classes.push(if declared == CallerClass::Vip { "vip" } else { "emergency" }.into());
        }
        let mut names: std::collections::BTreeSet<&str> = ["vip", "emergency"].into();
        names.extend(policy.lists.keys().map(String::as_str));
        names.extend(callee.lists.keys().map(String::as_str));
        for name in names {
            if classes.iter().any(|c| c == name) {
                continue;
            }
            let company = policy.lists.get(name).into_iter().flatten().map(|e| e.get_ref());
            let own = callee.lists.get(name).into_iter().flatten();
            if company.chain(own).any(|entry| self.ids.iter().any(|id| id == entry)) {
                classes.push(name.to_owned());
            }
        }
        classes
    }
}

/// One user a forward passed through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hop {
    /// The user.
    pub user: String,
    /// The rule that decided for them, or `default`.
    pub rule: String,
}

/// What happens to a call, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What happens.
    pub action: Action,
    /// Where a forward goes (a `sip:` or `tel:` URI), or whose voicemail takes the call.
    pub target: Option<String>,
    /// With `ring`: the devices that ring; empty means all.
    pub devices: Vec<String>,
    /// The name of the rule that decided, `default` when none matched, `forwarding-loop` when
    /// forwards went round.
    pub reason: String,
    /// The reason in a sentence, for people reading the answer.
    pub explanation: String,
    /// What the caller hears first, if anything.
    pub announcement: Option<Announcement>,
    /// When the callee's situation is expected to end (for `Retry-After`).
    pub until: Option<Timestamp>,
    /// The users the call passed through, the callee first.
    pub hops: Vec<Hop>,
}

/// The situations that hold for a user now, from the aggregate.
pub fn situations(aggregate: &Aggregate) -> Vec<Situation> {
    let presence = &aggregate.presence;
    let live = |c: &&crate::aggregate::Considered| {
        matches!(c.verdict, Verdict::Decided | Verdict::Contributed | Verdict::Outranked { .. })
    };
    let facts: Vec<_> = aggregate.explanation.facts.iter().filter(live).collect();
    let mut out = Vec::new();
    let in_call =
        facts.iter().any(|c| match &c.state {
            FactState::Call { .. } => true,
            FactState::Teams(t) => {
                matches!(t.activity, Activity::InACall | Activity::InAConferenceCall)
            }
            FactState::Device { activity, .. } => {
                matches!(activity, Some(Activity::InACall | Activity::InAConferenceCall))
            }
            _ => false,
        }) || matches!(presence.activity, Activity::InACall | Activity::InAConferenceCall);
    let presenting = presence.activity == Activity::Presenting
        || facts.iter().any(|c| matches!(c.state, FactState::Meeting { presenting: true }));
    let meeting = presence.activity == Activity::InAMeeting
        || facts.iter().any(|c| matches!(c.rule, Some(Rule::CalendarBusy | Rule::Meeting)));
    let flags = [
        (in_call, Situation::InACall),
        (presenting, Situation::Presenting),
        (presence.availability == Availability::DoNotDisturb, Situation::DoNotDisturb),
        (presence.out_of_office, Situation::OutOfOffice),
        (meeting, Situation::InAMeeting),
        (presence.availability == Availability::Busy, Situation::Busy),
        (
            matches!(presence.availability, Availability::Away | Availability::BeRightBack),
            Situation::Away,
        ),
        (
            matches!(presence.availability, Availability::Offline | Availability::Unknown),
            Situation::Offline,
        ),
        (presence.availability == Availability::Available, Situation::Available),
    ];
    out.extend(flags.iter().filter(|(on, _)| *on).map(|(_, s)| *s));
    out
}

/// When `situation` is expected to end for this user, from the facts behind it.
pub fn situation_until(aggregate: &Aggregate, situation: Situation) -> Option<Timestamp> {
    let live = |c: &&crate::aggregate::Considered| {
        matches!(c.verdict, Verdict::Decided | Verdict::Contributed | Verdict::Outranked { .. })
    };
    let rules: &[Rule] = match situation {
        Situation::OutOfOffice => &[Rule::CalendarOutOfOffice],
        Situation::InAMeeting => &[Rule::CalendarBusy, Rule::Meeting],
        Situation::DoNotDisturb => &[Rule::DoNotDisturb, Rule::DeviceStatus],
        _ => &[],
    };
    let from_facts = aggregate
        .explanation
        .facts
        .iter()
        .filter(live)
        .filter(|c| {
            c.rule.is_some_and(|r| rules.contains(&r))
                // An absence set by hand or in Teams ends when that fact does, like a calendar's.
                || (situation == Situation::OutOfOffice
                    && crate::aggregate::state_says_out_of_office(&c.state))
        })
        .filter_map(|c| c.until)
        .max();
    from_facts.or_else(|| {
        rules.contains(&aggregate.explanation.rule).then_some(aggregate.presence.until).flatten()
    })
}

/// Where a rule sends the call, once the callee's settings are read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ring(Vec<String>),
    Busy,
    Voicemail,
    /// To another Ampel user, whose own routing is followed.
    User(String),
    /// To a `sip:` or `tel:` address outside Ampel's users.
    Uri(String),
}

/// One callee's step: the rule that matched, what it does, and why in words.
struct Step<'p> {
    rule: Option<&'p RouteRule>,
    situations: Vec<Situation>,
    outcome: Outcome,
    /// Set when the rule's target is a setting the callee left empty.
    unset: Option<Target>,
}

/// Decides what happens to a call from `caller` to `callee` at `now`.
pub fn decide(
    policy: &Policy,
    directory: &dyn Directory,
    callee: &Callee,
    caller: &Caller,
    now: Timestamp,
) -> Decision {
    let routing = &policy.routing;
    let first = step(routing, callee, caller, now);
    let mut hops = vec![Hop { user: callee.id.clone(), rule: rule_name(&first) }];
    let mut outcome = first.outcome.clone();
    let mut owner = callee.id.clone();
    let mut looped = false;
    while let Outcome::User(next) = &outcome {
        let next = next.clone();
        if hops.iter().any(|h| h.user == next) || hops.len() > usize::from(routing.max_hops) {
            hops.push(Hop { user: next, rule: "forwarding-loop".into() });
            looped = true;
            break;
        }
        let Some(next_callee) = directory.callee(&next) else {
            outcome = Outcome::Uri(format!("sip:{next}"));
            break;
        };
        let next_step = step(routing, &next_callee, caller, now);
        hops.push(Hop { user: next.clone(), rule: rule_name(&next_step) });
        outcome = match next_step.outcome {
            Outcome::Ring(_) => Outcome::Uri(format!("sip:{next}")),
            other => other,
        };
        owner = next;
    }
    if looped {
        outcome = Outcome::Voicemail;
        owner = callee.id.clone();
    }
    finish(routing, callee, caller, now, &first, outcome, &owner, hops, looped)
}

fn rule_name(step: &Step<'_>) -> String {
    step.rule.map_or_else(|| "default".to_owned(), |r| r.name.clone())
}

#[allow(clippy::too_many_arguments)] // the pieces of one decision, gathered in one place
fn finish(
    routing: &RoutingPolicy,
    callee: &Callee,
    caller: &Caller,
    now: Timestamp,
    first: &Step<'_>,
    outcome: Outcome,
    owner: &str,
    hops: Vec<Hop>,
    looped: bool,
) -> Decision {
    let (action, target, devices) = match outcome {
        Outcome::Ring(devices) => (Action::Ring, None, devices),
        Outcome::Busy => (Action::Busy, None, Vec::new()),
        Outcome::Voicemail => (Action::Voicemail, voicemail_uri(routing, owner), Vec::new()),
        Outcome::Uri(uri) => (Action::Forward, Some(uri), Vec::new()),
        Outcome::User(id) => (Action::Forward, Some(format!("sip:{id}")), Vec::new()),
    };
    let spoken = first.rule.map(|r| spoken_situation(r, &first.situations)).unwrap_or(None);
    let until = spoken.and_then(|s| situation_until(&callee.aggregate, s));
    let announces = first.rule.is_some_and(|r| r.announce) && action != Action::Ring;
    let announcement = announces.then(|| {
        let lang = caller.lang.unwrap_or(if routing.lang == "en" { Lang::En } else { Lang::De });
        let subject =
            announce::Subject { name: &callee.name, situation: spoken, until, tz: &callee.tz };
        announce::announcement(&subject, action, now, lang)
    });
    let reason = if looped { "forwarding-loop".to_owned() } else { rule_name(first) };
    let explanation = explain(callee, first, action, target.as_deref(), &hops, looped);
    let until = until.or(callee.aggregate.presence.until).filter(|u| *u > now);
    Decision { action, target, devices, reason, explanation, announcement, until, hops }
}

/// The situation an announcement tells: the first, in the spoken order, that the rule asked
/// for and that holds.
fn spoken_situation(rule: &RouteRule, holding: &[Situation]) -> Option<Situation> {
    Situation::SPOKEN_ORDER
        .iter()
        .copied()
        .filter(|s| holding.contains(s))
        .find(|s| rule.when.is_empty() || rule.when.contains(s))
}

/// The voicemail address of a user, from the policy's template; `None` without voicemail.
pub fn voicemail_uri(routing: &RoutingPolicy, user: &str) -> Option<String> {
    if routing.voicemail.is_empty() {
        return None;
    }
    let (local, domain) = user.split_once('@').unwrap_or((user, ""));
    let uri = routing.voicemail.replace("{user}", user).replace("{local}", local);
    Some(uri.replace("{domain}", domain))
}

/// Finds the rule for one callee and reads the callee's settings for it.
fn step<'p>(
    routing: &'p RoutingPolicy,
    callee: &Callee,
    caller: &Caller,
    now: Timestamp,
) -> Step<'p> {
    let situations = situations(&callee.aggregate);
    let classes = caller.classes(routing, &callee.settings);
    let local = now.to_zoned(callee.tz.clone());
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    let day = rules::Day::of(local.weekday());
    let rule = routing.rules.iter().find(|r| {
        (r.when.is_empty() || r.when.iter().any(|s| situations.contains(s)))
            && (r.caller.is_empty() || r.caller.iter().any(|c| classes.contains(c.get_ref())))
            && r.hours.is_none_or(|h| h.contains(minute))
            && (r.days.is_empty() || r.days.contains(&day))
    });
    let Some(rule) = rule else {
        return Step { rule: None, situations, outcome: Outcome::Ring(Vec::new()), unset: None };
    };
    let (outcome, unset) = match (rule.action, &rule.target) {
        (Action::Ring, _) => (Outcome::Ring(rule.devices.clone()), None),
        (Action::Busy, _) => (Outcome::Busy, None),
        (Action::Voicemail, _) | (Action::Forward, None) => (Outcome::Voicemail, None),
        (Action::Forward, Some(target)) => match resolve(routing, callee, target.get_ref()) {
            Some(outcome) => (outcome, None),
            None => {
                let fallback = match rule.fallback.unwrap_or(Action::Ring) {
                    Action::Busy => Outcome::Busy,
                    Action::Voicemail => Outcome::Voicemail,
                    Action::Ring | Action::Forward => Outcome::Ring(rule.devices.clone()),
                };
                (fallback, Some(target.get_ref().clone()))
            }
        },
    };
    Step { rule: Some(rule), situations, outcome, unset }
}

/// Where a target points for this callee; `None` when it names a setting left empty.
fn resolve(routing: &RoutingPolicy, callee: &Callee, target: &Target) -> Option<Outcome> {
    let settings = &callee.settings;
    match target {
        Target::BusyTarget => resolve(routing, callee, settings.busy_target.as_ref()?),
        Target::AbsenceTarget => resolve(routing, callee, settings.absence_target.as_ref()?),
        Target::Mobile => settings.mobile.as_ref().map(|m| Outcome::Uri(format!("tel:{m}"))),
        Target::Voicemail => Some(Outcome::Voicemail),
        Target::User(id) if *id == callee.id => Some(Outcome::Ring(Vec::new())),
        Target::User(id) => Some(Outcome::User(id.clone())),
        Target::Team(name) => routing.teams.get(name).map(|uri| Outcome::Uri(uri.clone())),
        Target::Tel(number) => Some(Outcome::Uri(format!("tel:{number}"))),
    }
}

/// The decision in one sentence.
fn explain(
    callee: &Callee,
    first: &Step<'_>,
    action: Action,
    target: Option<&str>,
    hops: &[Hop],
    looped: bool,
) -> String {
    let who = &callee.id;
    let state = if first.situations.is_empty() {
        "has no presence".to_owned()
    } else {
        let words: Vec<_> = first.situations.iter().map(|s| s.as_str()).collect();
        format!("is {}", words.join(", "))
    };
    let mut text = match first.rule {
        Some(rule) => format!("rule `{}` matched: {who} {state}", rule.name),
        None => format!("no routing rule matched: {who} {state}"),
    };
    if let Some(unset) = &first.unset {
        text.push_str(&format!("; the rule forwards to the {unset}, which {who} has not set"));
    }
    if hops.len() > 1 {
        let path: Vec<_> = hops.iter().map(|h| format!("{} ({})", h.user, h.rule)).collect();
        text.push_str(&format!("; forwarded through {}", path.join(" -> ")));
    }
    if looped {
        text.push_str("; the forwards go round, so they are not followed");
    }
    let outcome = match (action, target) {
        (Action::Ring, _) => "the call rings".to_owned(),
        (Action::Busy, _) => "the call is rejected as busy".to_owned(),
        (Action::Voicemail, Some(t)) => format!("the call goes to the voicemail {t}"),
        (Action::Forward, Some(t)) => format!("the call is forwarded to {t}"),
        (Action::Voicemail | Action::Forward, None) => "the call goes to voicemail".to_owned(),
    };
    format!("{text}; {outcome}.")
}
