//! The company-wide policy: which facts win, how presence ages, how long facts live, and what
//! each kind of viewer may see.
//!
//! The policy is a TOML file; [`Policy::default`] is the documented built-in default in
//! `policy/default.toml`, and a file only names what it changes. Reading a file never
//! half-succeeds: [`Policy::from_toml`] either returns a complete, checked policy or an error
//! with the line and column of the first fault. Turning the policy into words for employees
//! lives in [`render`].

pub mod render;

use std::fmt;
use std::str::FromStr;

use jiff::SignedDuration;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fact::Source;

/// The built-in policy as shipped, with its comments.
pub const DEFAULT_TOML: &str = include_str!("policy/default.toml");

/// A named precedence rule; see `policy/default.toml` for what each one matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A manual status "offline".
    AppearOffline,
    /// A manual status "do-not-disturb".
    DoNotDisturb,
    /// A live call.
    Call,
    /// Presenting in a live meeting.
    Presenting,
    /// Any other manual status.
    Manual,
    /// Taking part in a live online meeting.
    Meeting,
    /// A status set on a device.
    DeviceStatus,
    /// A calendar absence in progress.
    CalendarOutOfOffice,
    /// A calendar meeting in progress.
    CalendarBusy,
    /// The Teams status.
    Teams,
    /// The device sessions' activity.
    Devices,
    /// No rule had a live fact. Not part of the precedence list: it always comes last.
    NoFacts,
}

impl Rule {
    /// The rules a precedence list may name.
    pub const RANKED: &'static [Rule] = &[
        Rule::AppearOffline,
        Rule::DoNotDisturb,
        Rule::Call,
        Rule::Presenting,
        Rule::Manual,
        Rule::Meeting,
        Rule::DeviceStatus,
        Rule::CalendarOutOfOffice,
        Rule::CalendarBusy,
        Rule::Teams,
        Rule::Devices,
    ];

    /// The spelling in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AppearOffline => "appear-offline",
            Rule::DoNotDisturb => "do-not-disturb",
            Rule::Call => "call",
            Rule::Presenting => "presenting",
            Rule::Manual => "manual",
            Rule::Meeting => "meeting",
            Rule::DeviceStatus => "device-status",
            Rule::CalendarOutOfOffice => "calendar-out-of-office",
            Rule::CalendarBusy => "calendar-busy",
            Rule::Teams => "teams",
            Rule::Devices => "devices",
            Rule::NoFacts => "no-facts",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a viewer may be granted to see of another user's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// The availability; without it only the colour is shown.
    Availability,
    /// The activity.
    Activity,
    /// The note.
    Note,
    /// When the current state is expected to end.
    Until,
    /// The out-of-office marker.
    OutOfOffice,
    /// Whether the user is idle.
    Idle,
    /// When the user was last active.
    LastActive,
    /// Office, home, mobile.
    Location,
    /// The subject of meetings that are not private.
    Subject,
    /// Which sources contributed.
    Sources,
}

impl Grant {
    /// Every grant.
    pub const ALL: &'static [Grant] = &[
        Grant::Availability,
        Grant::Activity,
        Grant::Note,
        Grant::Until,
        Grant::OutOfOffice,
        Grant::Idle,
        Grant::LastActive,
        Grant::Location,
        Grant::Subject,
        Grant::Sources,
    ];
}

/// A positive length of time, written in a policy as `"90s"`, `"5m"`, `"1h 30m"` or ISO 8601.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub SignedDuration);

impl Duration {
    /// A whole number of seconds.
    pub const fn from_secs(secs: i64) -> Duration {
        Duration(SignedDuration::from_secs(secs))
    }

    /// True for the zero duration, which some fields read as "never".
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Duration, String> {
        let d: SignedDuration = s
            .parse()
            .map_err(|e| format!("`{s}` is not a duration like \"90s\" or \"5m\": {e}"))?;
        if d.is_negative() {
            return Err(format!("`{s}` is negative"));
        }
        if d > SignedDuration::from_hours(24 * 366) {
            return Err(format!("`{s}` is longer than a year"));
        }
        Ok(Duration(d))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// The ranked rules, each at most once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Precedence(Vec<Rule>);

impl Precedence {
    /// The rules, highest first.
    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    /// The rank of a rule (0 is highest), or `None` when the rule never decides.
    pub fn rank(&self, rule: Rule) -> Option<usize> {
        if rule == Rule::NoFacts {
            return Some(self.0.len());
        }
        self.0.iter().position(|r| *r == rule)
    }
}

impl<'de> Deserialize<'de> for Precedence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Precedence, D::Error> {
        let rules = Vec::<Rule>::deserialize(d)?;
        for (i, rule) in rules.iter().enumerate() {
            if *rule == Rule::NoFacts {
                return Err(D::Error::custom("`no-facts` always comes last and cannot be ranked"));
            }
            if rules[..i].contains(rule) {
                return Err(D::Error::custom(format!("rule `{rule}` is listed twice")));
            }
        }
        Ok(Precedence(rules))
    }
}

/// How presence ages while nothing new is heard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dynamics {
    /// An active device without news counts as idle after this long.
    pub idle_after: Duration,
    /// An idle device counts as away after it has been idle this long.
    pub away_after: Duration,
    /// How often clients are asked to send a heartbeat.
    pub heartbeat: Duration,
}

/// How long a fact of each source lives without a refresh; zero means it lives until removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lifetime {
    /// Device sessions and the statuses set on them.
    pub session: Duration,
    /// Calls never reported as ended.
    pub telephony: Duration,
    /// Teams presence.
    pub teams: Duration,
    /// Live meetings.
    pub meeting: Duration,
    /// Locations.
    pub location: Duration,
    /// Manual statuses without an end time.
    pub manual: Duration,
}

impl Lifetime {
    /// The lifetime of facts of `source`, `None` when they live until removed or ended.
    pub fn of(&self, source: Source) -> Option<Duration> {
        let d = match source {
            Source::Manual => self.manual,
            Source::Session => self.session,
            Source::Telephony => self.telephony,
            Source::Teams => self.teams,
            Source::Meeting => self.meeting,
            Source::Location => self.location,
            Source::Calendar => return None,
        };
        (!d.is_zero()).then_some(d)
    }
}

/// How calendar entries count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarPolicy {
    /// A tentatively accepted meeting makes its owner busy.
    pub tentative_is_busy: bool,
}

/// The grants of each kind of viewer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisibilityPolicy {
    /// Delegates named by the user.
    pub delegate: Vec<Grant>,
    /// Members of a group the user belongs to.
    pub team: Vec<Grant>,
    /// Everyone else in the user's domain.
    pub colleague: Vec<Grant>,
    /// Users of other domains.
    pub external: Vec<Grant>,
}

/// How long history is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryPolicy {
    /// Days of aggregated changes kept; older ones are purged.
    pub retention_days: u32,
}

/// The whole policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Which rules decide, highest first.
    pub precedence: Precedence,
    /// Idle and away timing.
    pub dynamics: Dynamics,
    /// Fact lifetimes.
    pub lifetime: Lifetime,
    /// Calendar rules.
    pub calendar: CalendarPolicy,
    /// Who sees what.
    pub visibility: VisibilityPolicy,
    /// History retention.
    pub history: HistoryPolicy,
    /// What happens to calls.
    pub routing: crate::routing::RoutingPolicy,
}

/// A policy file that cannot be used, with where the fault is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct PolicyError {
    /// What is wrong.
    pub message: String,
    /// 1-based line of the fault, when known.
    pub line: Option<usize>,
    /// 1-based column of the fault, when known.
    pub column: Option<usize>,
}

impl PolicyError {
    fn describe(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: {}", self.message),
            _ => self.message.clone(),
        }
    }

    fn at(text: &str, offset: Option<usize>, message: String) -> PolicyError {
        let Some(offset) = offset else {
            return PolicyError { message, line: None, column: None };
        };
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        PolicyError { message, line: Some(line), column: Some(column) }
    }
}

impl Policy {
    /// Reads a policy file; fields and tables it leaves out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| {
            PolicyError::at(text, e.span().map(|s| s.start), e.message().to_owned())
        })?;
        policy.check().map_err(|message| PolicyError { message, line: None, column: None })?;
        policy.routing.check().map_err(|f| PolicyError::at(text, f.offset, f.message))?;
        Ok(policy)
    }

    /// The policy as TOML, every field spelled out.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serialises")
    }

    /// Rules between fields that serde cannot express.
    fn check(&self) -> Result<(), String> {
        if self.dynamics.heartbeat.is_zero() {
            return Err("dynamics.heartbeat must be longer than zero".into());
        }
        if self.dynamics.idle_after.is_zero() {
            return Err("dynamics.idle_after must be longer than zero".into());
        }
        let session = self.lifetime.session;
        if !session.is_zero() && session.0 < self.dynamics.heartbeat.0 * 2 {
            return Err(format!(
                "lifetime.session ({session}) must be at least twice dynamics.heartbeat ({}), or \
                 sessions would expire between heartbeats",
                self.dynamics.heartbeat
            ));
        }
        if self.history.retention_days == 0 {
            return Err("history.retention_days must be at least 1".into());
        }
        Ok(())
    }
}

// The defaults below are the truth; `policy/default.toml` documents them, and a test keeps the
// two equal.

impl Default for Precedence {
    fn default() -> Precedence {
        Precedence(Rule::RANKED.to_vec())
    }
}

impl Default for Dynamics {
    fn default() -> Dynamics {
        Dynamics {
            idle_after: Duration::from_secs(5 * 60),
            away_after: Duration::from_secs(10 * 60),
            heartbeat: Duration::from_secs(60),
        }
    }
}

impl Default for Lifetime {
    fn default() -> Lifetime {
        Lifetime {
            session: Duration::from_secs(3600),
            telephony: Duration::from_secs(4 * 3600),
            teams: Duration::from_secs(3600),
            meeting: Duration::from_secs(4 * 3600),
            location: Duration::from_secs(12 * 3600),
            manual: Duration::from_secs(0),
        }
    }
}

impl Default for VisibilityPolicy {
    fn default() -> VisibilityPolicy {
        use Grant::*;
        VisibilityPolicy {
            delegate: Grant::ALL.to_vec(),
            team: vec![
                Availability,
                Activity,
                Note,
                Until,
                OutOfOffice,
                Idle,
                LastActive,
                Location,
            ],
            colleague: vec![Availability, Activity, Note, Until, OutOfOffice, Idle, LastActive],
            external: vec![Availability],
        }
    }
}

impl Default for HistoryPolicy {
    fn default() -> HistoryPolicy {
        HistoryPolicy { retention_days: 30 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_default_is_the_built_in_default() {
        assert_eq!(Policy::from_toml(DEFAULT_TOML).unwrap(), Policy::default());
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(Policy::from_toml("").unwrap(), Policy::default());
    }

    #[test]
    fn a_file_changes_only_what_it_names() {
        let p = Policy::from_toml("[dynamics]\naway_after = \"20m\"\n").unwrap();
        assert_eq!(p.dynamics.away_after, Duration::from_secs(20 * 60));
        assert_eq!(p.dynamics.idle_after, Dynamics::default().idle_after);
        assert_eq!(p.lifetime, Lifetime::default());
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = "[dynamics]\nidle_after = \"5x\"\n";
        let err = Policy::from_toml(text).unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(14)));
        assert!(err.to_string().starts_with("line 2, column 14: `5x` is not a duration"), "{err}");

        let err = Policy::from_toml("precedence = [\"call\", \"calls\"]\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("unknown variant `calls`"), "{err}");

        let err = Policy::from_toml("precedence = [\"call\", \"call\"]\n").unwrap_err();
        assert!(err.to_string().contains("rule `call` is listed twice"), "{err}");

        let err = Policy::from_toml("[dynamic]\n").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.message.contains("unknown field `dynamic`"), "{err}");
    }

    #[test]
    fn cross_field_faults_are_reported() {
        let err = Policy::from_toml("[lifetime]\nsession = \"90s\"\n").unwrap_err();
        assert!(err.message.contains("at least twice dynamics.heartbeat"), "{err}");
    }

    #[test]
    fn the_policy_round_trips_through_toml() {
        let p = Policy::default();
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
    }
}
