//! Timelines: a recorded sequence of fact changes, replayed through aggregation.
//!
//! A timeline is JSON Lines, one change per line: `{"at": ..., "user": ..., "put": FACT}` puts a
//! fact (its `observed` defaults to `at`), `{"at": ..., "user": ..., "remove": {"source", "key"}}`
//! removes one. [`simulate`] replays it under a policy and reports the presence after every
//! change, including the changes that happen by themselves between two lines (a status that
//! ends, a device that goes idle). It is how a policy is tried on real data before it is rolled
//! out, and how the core is tested.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::aggregate::aggregate;
use crate::fact::{Fact, FactState, Source};
use crate::model::{Note, Presence};
use crate::policy::{Policy, Rule};

/// One line of a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When the change happens.
    pub at: Timestamp,
    /// Whose fact changes, `user@domain`.
    pub user: String,
    /// A fact to put; replaces the fact with the same source and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put: Option<FactInput>,
    /// A fact to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<FactRef>,
}

/// A fact as written in a timeline: `observed` may be left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactInput {
    /// Where it comes from.
    pub source: Source,
    /// Which thing inside the source.
    pub key: String,
    /// What it states.
    pub state: FactState,
    /// When the source said so; defaults to the event's time.
    #[serde(default)]
    pub observed: Option<Timestamp>,
    /// When it starts to hold.
    #[serde(default)]
    pub starts: Option<Timestamp>,
    /// When it ends by plan.
    #[serde(default)]
    pub ends: Option<Timestamp>,
    /// Its note.
    #[serde(default)]
    pub note: Option<Note>,
    /// Marked private by its source.
    #[serde(default)]
    pub private: bool,
}

/// Names a fact to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactRef {
    /// Its source.
    pub source: Source,
    /// Its key.
    pub key: String,
}

/// A line of a timeline that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TimelineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads a timeline. Blank lines and lines starting with `#` are skipped; events must not go
/// back in time.
pub fn parse(text: &str) -> Result<Vec<Event>, TimelineError> {
    let mut events: Vec<Event> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fail = |message: String| TimelineError { line: line_no, message };
        let event: Event = serde_json::from_str(trimmed).map_err(|e| fail(e.to_string()))?;
        if event.put.is_some() == event.remove.is_some() {
            return Err(fail("each line needs exactly one of `put` and `remove`".into()));
        }
        if events.last().is_some_and(|last| last.at > event.at) {
            return Err(fail(format!("{} is earlier than the line before", event.at)));
        }
        events.push(event);
    }
    Ok(events)
}

/// The presence of one user after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// When the presence changed.
    pub at: Timestamp,
    /// Whose presence.
    pub user: String,
    /// The presence.
    pub presence: Presence,
    /// The rule that decided.
    pub rule: Rule,
}

/// Replays `events` under `policy` and returns every change of a user's presence, in time
/// order. Changes that happen by themselves are followed up to `until` (or up to the last event
/// when `until` is `None`).
pub fn simulate(events: &[Event], policy: &Policy, until: Option<Timestamp>) -> Vec<Step> {
    let mut sim = Simulation { policy, users: BTreeMap::new(), steps: Vec::new() };
    for event in events {
        sim.advance_to(event.at);
        let user = sim.users.entry(event.user.clone()).or_default();
        apply(&mut user.facts, event);
        sim.evaluate(&event.user, event.at);
    }
    let end = until.or(events.last().map(|e| e.at));
    if let Some(end) = end {
        sim.advance_to(end);
    }
    sim.steps
}

#[derive(Default)]
struct UserTrack {
    facts: Vec<Fact>,
    presence: Option<Presence>,
    next_change: Option<Timestamp>,
}

struct Simulation<'p> {
    policy: &'p Policy,
    users: BTreeMap<String, UserTrack>,
    steps: Vec<Step>,
}

impl Simulation<'_> {
    /// Fires every change that happens by itself up to and including `t`, earliest first.
    fn advance_to(&mut self, t: Timestamp) {
        loop {
            let due = self
                .users
                .iter()
                .filter_map(|(id, u)| Some((u.next_change?, id.clone())))
                .filter(|(at, _)| *at <= t)
                .min();
            let Some((at, id)) = due else { return };
            self.evaluate(&id, at);
        }
    }

    fn evaluate(&mut self, id: &str, now: Timestamp) {
        let track = self.users.get_mut(id).expect("the user was tracked before");
        let agg = aggregate(&track.facts, self.policy, now, track.presence.as_ref());
        track.next_change = agg.explanation.next_change;
        track.facts.retain(|f| f.ends.is_none_or(|e| e > now) || f.starts.is_some_and(|s| s > now));
        let changed = track.presence.as_ref().is_none_or(|p| p.differs_for_watchers(&agg.presence));
        if changed {
            self.steps.push(Step {
                at: now,
                user: id.to_owned(),
                presence: agg.presence.clone(),
                rule: agg.explanation.rule,
            });
        }
        track.presence = Some(agg.presence);
    }
}

fn apply(facts: &mut Vec<Fact>, event: &Event) {
    if let Some(r) = &event.remove {
        facts.retain(|f| !f.same_key(r.source, &r.key));
    }
    if let Some(input) = &event.put {
        facts.retain(|f| !f.same_key(input.source, &input.key));
        facts.push(Fact {
            source: input.source,
            key: input.key.clone(),
            state: input.state.clone(),
            observed: input.observed.unwrap_or(event.at),
            starts: input.starts,
            ends: input.ends,
            note: input.note.clone(),
            private: input.private,
            details: None,
        });
    }
}

/// Renders steps as one line each: time, user, availability/activity, the rule, and the note.
pub fn render_steps(steps: &[Step]) -> String {
    let mut out = String::new();
    for s in steps {
        let p = &s.presence;
        let mut line = format!("{}  {}  {}/{}", s.at, s.user, p.availability, p.activity);
        if p.idle {
            line.push_str(" idle");
        }
        if p.out_of_office {
            line.push_str(" out-of-office");
        }
        if let Some(until) = p.until {
            line.push_str(&format!(" until {until}"));
        }
        if let Some(note) = &p.note {
            line.push_str(&format!(" \"{}\"", note.text));
        }
        line.push_str(&format!("  [{}]\n", s.rule));
        out.push_str(&line);
    }
    out
}
