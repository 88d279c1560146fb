//! The routing section of the policy: the ordered rules that say what happens to a call, the
//! company's caller lists, its teams, and the words a rule may use.
//!
//! Parsing checks each word where it stands, so that a typo is reported with its line and
//! column; what needs more than one field (a caller list that must exist, a team that must be
//! defined) is checked by [`RoutingPolicy::check`], which still knows where each word was.
//! Nothing here decides a call; that is [`super::decide`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

/// The caller classes that exist without a list.
pub const BUILT_IN_CLASSES: &[&str] = &["internal", "external", "vip", "emergency"];

/// What a rule asks of the callee's presence; a rule with several matches any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Situation {
    /// A live call, from the PBX, Teams or a phone that publishes it.
    InACall,
    /// Presenting in a live meeting.
    Presenting,
    /// The availability is do-not-disturb.
    DoNotDisturb,
    /// Out of office by any source.
    OutOfOffice,
    /// A calendar meeting in progress, or a live online meeting.
    InAMeeting,
    /// The availability is busy.
    Busy,
    /// The availability is away or be-right-back.
    Away,
    /// The availability is offline or unknown.
    Offline,
    /// The availability is available.
    Available,
}

impl Situation {
    /// The order in which an announcement picks what to say when several hold.
    pub const SPOKEN_ORDER: &'static [Situation] = &[
        Situation::InACall,
        Situation::Presenting,
        Situation::OutOfOffice,
        Situation::InAMeeting,
        Situation::DoNotDisturb,
        Situation::Busy,
        Situation::Away,
        Situation::Offline,
        Situation::Available,
    ];

    /// The spelling in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Situation::InACall => "in-a-call",
            Situation::Presenting => "presenting",
            Situation::DoNotDisturb => "do-not-disturb",
            Situation::OutOfOffice => "out-of-office",
            Situation::InAMeeting => "in-a-meeting",
            Situation::Busy => "busy",
            Situation::Away => "away",
            Situation::Offline => "offline",
            Situation::Available => "available",
        }
    }
}

/// What happens to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Ring the callee's devices.
    Ring,
    /// Send the call elsewhere.
    Forward,
    /// Reject the call as busy.
    Busy,
    /// Send the call to the callee's voicemail.
    Voicemail,
}

impl Action {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ring => "ring",
            Action::Forward => "forward",
            Action::Busy => "busy",
            Action::Voicemail => "voicemail",
        }
    }
}

/// Where a forward goes, as a rule or a user's setting names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The callee's own busy target (a user setting).
    BusyTarget,
    /// The callee's own absence target (a user setting).
    AbsenceTarget,
    /// The callee's mobile number (a user setting).
    Mobile,
    /// The callee's voicemail.
    Voicemail,
    /// Another Ampel user, `user:bob@example.com`.
    User(String),
    /// A team defined in `[routing.teams]`, `team:sales`.
    Team(String),
    /// A phone number in E.164, `tel:+4930123456`.
    Tel(String),
}

impl Target {
    /// True for the targets that name a user setting instead of a destination.
    pub fn is_indirect(&self) -> bool {
        matches!(self, Target::BusyTarget | Target::AbsenceTarget | Target::Mobile)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::BusyTarget => f.write_str("busy-target"),
            Target::AbsenceTarget => f.write_str("absence-target"),
            Target::Mobile => f.write_str("mobile"),
            Target::Voicemail => f.write_str("voicemail"),
            Target::User(id) => write!(f, "user:{id}"),
            Target::Team(name) => write!(f, "team:{name}"),
            Target::Tel(number) => write!(f, "tel:{number}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let s = s.trim();
        match s {
            "busy-target" => return Ok(Target::BusyTarget),
            "absence-target" => return Ok(Target::AbsenceTarget),
            "mobile" => return Ok(Target::Mobile),
            "voicemail" => return Ok(Target::Voicemail),
            _ => {}
        }
        if let Some(id) = s.strip_prefix("user:") {
            return is_user_id(id)
                .then(|| Target::User(id.to_ascii_lowercase()))
                .ok_or_else(|| format!("`{id}` is not a user address like bob@example.com"));
        }
        if let Some(name) = s.strip_prefix("team:") {
            return (!name.is_empty() && name.len() <= 100)
                .then(|| Target::Team(name.to_owned()))
                .ok_or_else(|| "a team target needs a name, like team:sales".to_owned());
        }
        if let Some(number) = s.strip_prefix("tel:") {
            return is_e164(number)
                .then(|| Target::Tel(number.to_owned()))
                .ok_or_else(|| format!("`{number}` is not a number in E.164, like +4930123456"));
        }
        Err(format!(
            "unknown target `{s}`, expected busy-target, absence-target, mobile, voicemail, \
             user:ADDRESS, team:NAME or tel:+NUMBER"
        ))
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// `+` and 3 to 15 digits, the first not zero (ITU-T E.164).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else { return false };
    (3..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `local@domain` with no spaces; the same test the user directory applies.
pub fn is_user_id(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && s.len() <= 254
        && !s.contains(char::is_whitespace)
        && !domain.contains('@')
}

/// A span of the day, `"08:00-18:00"`; one that ends before it starts runs over midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hours {
    /// Minutes after midnight, inclusive.
    pub start: u16,
    /// Minutes after midnight, exclusive.
    pub end: u16,
}

impl Hours {
    /// True when `minute` (after midnight) lies inside.
    pub fn contains(self, minute: u16) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

impl FromStr for Hours {
    type Err = String;

    fn from_str(s: &str) -> Result<Hours, String> {
        let bad = || format!("`{s}` is not a span of the day like \"08:00-18:00\"");
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let hours = Hours { start: minute(a).ok_or_else(bad)?, end: minute(b).ok_or_else(bad)? };
        if hours.start == hours.end {
            return Err(format!("`{s}` is empty; leave `hours` out to match the whole day"));
        }
        Ok(hours)
    }
}

impl Serialize for Hours {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hours, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the names say it
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// The day of a civil date.
    pub fn of(weekday: jiff::civil::Weekday) -> Day {
        use jiff::civil::Weekday::*;
        match weekday {
            Monday => Day::Mon,
            Tuesday => Day::Tue,
            Wednesday => Day::Wed,
            Thursday => Day::Thu,
            Friday => Day::Fri,
            Saturday => Day::Sat,
            Sunday => Day::Sun,
        }
    }
}

/// One routing rule: when it applies, and what it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// The name given as the reason of every decision the rule makes.
    pub name: String,
    /// The callee's situations it applies in; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Situation>,
    /// The caller classes or list names it applies to; empty means every caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caller: Vec<Spanned<String>>,
    /// The time of day it applies at, in the callee's time zone; absent means all day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Hours>,
    /// The days it applies on; empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// What happens to the call.
    pub action: Action,
    /// Where a forward goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Spanned<Target>>,
    /// What happens instead when the target names a user setting the callee has not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Action>,
    /// With `ring`: only the devices with these names ring; empty means every device.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Play the spoken presence to the caller before the call is forwarded, rejected or sent
    /// to voicemail (never before it rings).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announce: bool,
}

/// The routing section of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingPolicy {
    /// The company's country (ISO 3166 alpha-2) for numbers dialled without a country code.
    pub country: String,
    /// The language of announcements when the caller's is not known: `de` or `en`.
    pub lang: String,
    /// The time zone of users who have none (an IANA name).
    pub timezone: String,
    /// How many forwards from user to user are followed before the chain counts as a loop.
    pub max_hops: u8,
    /// The voicemail's SIP address; `{user}`, `{local}` and `{domain}` name the mailbox owner.
    /// Empty when there is no voicemail: such calls are turned away as unavailable.
    pub voicemail: String,
    /// Named caller lists of E.164 numbers and user addresses; `vip` and `emergency` always
    /// exist, and each user may add to any list for their own calls.
    pub lists: BTreeMap<String, Vec<Spanned<String>>>,
    /// Teams a call can be forwarded to, by name, with their SIP or tel address.
    pub teams: BTreeMap<String, String>,
    /// The rules, first match wins; a call no rule matches rings.
    #[serde(rename = "rule")]
    pub rules: Vec<RouteRule>,
}

/// A fault in the routing section, with the byte offset in the file where it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingFault {
    /// What is wrong.
    pub message: String,
    /// Where, as a byte offset into the policy file.
    pub offset: Option<usize>,
}

impl RoutingPolicy {
    /// True when `word` names a caller class or a list.
    pub fn knows_class(&self, word: &str) -> bool {
        BUILT_IN_CLASSES.contains(&word) || self.lists.contains_key(word)
    }

    /// Rules between fields: lists and teams that rules name must exist, and each action must
    /// have what it needs.
    pub fn check(&self) -> Result<(), RoutingFault> {
        let plain = |message: String| RoutingFault { message, offset: None };
        if !(self.country.len() == 2 && self.country.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(plain(format!(
                "routing.country `{}` is not a two-letter country code like \"DE\"",
                self.country
            )));
        }
        if !matches!(self.lang.as_str(), "de" | "en") {
            return Err(plain(format!("routing.lang `{}` must be \"de\" or \"en\"", self.lang)));
        }
        if self.max_hops == 0 || self.max_hops > 20 {
            return Err(plain("routing.max_hops must be between 1 and 20".into()));
        }
        if !self.voicemail.is_empty() && !self.voicemail.contains(':') {
            return Err(plain(format!("routing.voicemail `{}` is not a URI", self.voicemail)));
        }
        self.check_lists()?;
        self.check_teams()?;
        let mut names = std::collections::BTreeSet::new();
        for rule in &self.rules {
            if !names.insert(rule.name.as_str()) {
                return Err(plain(format!("routing rule `{}` is defined twice", rule.name)));
            }
            self.check_rule(rule)?;
        }
        Ok(())
    }

    fn check_lists(&self) -> Result<(), RoutingFault> {
        for (name, entries) in &self.lists {
            if BUILT_IN_CLASSES[..2].contains(&name.as_str()) {
                return Err(RoutingFault {
                    message: format!("routing list `{name}` would hide the caller class"),
                    offset: None,
                });
            }
            for entry in entries {
                if !is_e164(entry.get_ref()) && !is_user_id(entry.get_ref()) {
                    return Err(RoutingFault {
                        message: format!(
                            "`{}` in routing list `{name}` is neither a number in E.164 \
                             (+4930123456) nor a user address",
                            entry.get_ref()
                        ),
                        offset: Some(entry.span().start),
                    });
                }
            }
        }
        Ok(())
    }

    fn check_teams(&self) -> Result<(), RoutingFault> {
        for (name, uri) in &self.teams {
            let ok = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:")).is_some()
                || uri.strip_prefix("tel:").is_some_and(is_e164);
            if !ok {
                return Err(RoutingFault {
                    message: format!("routing team `{name}`: `{uri}` is not a sip: or tel: URI"),
                    offset: None,
                });
            }
        }
        Ok(())
    }

    fn check_rule(&self, rule: &RouteRule) -> Result<(), RoutingFault> {
        let fault = |message: String, offset: Option<usize>| RoutingFault { message, offset };
        let name = &rule.name;
        for word in &rule.caller {
            if !self.knows_class(word.get_ref()) {
                return Err(fault(
                    format!(
                        "routing rule `{name}` names the caller class or list `{}`, which is \
                         not defined in [routing.lists]",
                        word.get_ref()
                    ),
                    Some(word.span().start),
                ));
            }
        }
        match (&rule.action, &rule.target) {
            (Action::Forward, None) => {
                return Err(fault(
                    format!("routing rule `{name}` forwards without a target"),
                    None,
                ));
            }
            (Action::Forward, Some(target)) => {
                if let Target::Team(team) = target.get_ref()
                    && !self.teams.contains_key(team)
                {
                    return Err(fault(
                        format!(
                            "routing rule `{name}` forwards to team `{team}`, which is not \
                             defined in [routing.teams]"
                        ),
                        Some(target.span().start),
                    ));
                }
            }
            (action, Some(target)) => {
                return Err(fault(
                    format!(
                        "routing rule `{name}`: only `forward` takes a target, not `{}`",
                        action.as_str()
                    ),
                    Some(target.span().start),
                ));
            }
            (_, None) => {}
        }
        match rule.fallback {
            Some(Action::Forward) => Err(fault(
                format!("routing rule `{name}`: the fallback cannot forward (it has no target)"),
                None,
            )),
            Some(_) if rule.target.as_ref().is_none_or(|t| !t.get_ref().is_indirect()) => {
                Err(fault(
                    format!(
                        "routing rule `{name}` has a fallback, which only applies when the \
                         target is busy-target, absence-target or mobile"
                    ),
                    None,
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Default for RoutingPolicy {
    fn default() -> RoutingPolicy {
        let lists = ["vip", "emergency"].map(|l| (l.to_owned(), Vec::new()));
        RoutingPolicy {
            country: "DE".into(),
            lang: "de".into(),
            timezone: "Europe/Berlin".into(),
            max_hops: 5,
            voicemail: "sip:voicemail@{domain};mailbox={local}".into(),
            lists: lists.into_iter().collect(),
            teams: BTreeMap::new(),
            rules: default_rules(),
        }
    }
}

fn default_rules() -> Vec<RouteRule> {
    use Situation::*;
    let rule = |name: &str, when: Vec<Situation>, action: Action| RouteRule {
        name: name.into(),
        when,
        caller: Vec::new(),
        hours: None,
        days: Vec::new(),
        action,
        target: None,
        fallback: None,
        devices: Vec::new(),
        announce: false,
    };
    let callers =
        |words: &[&str]| words.iter().map(|w| Spanned::new(0..0, w.to_string())).collect();
    let forward = |name: &str, when, target, fallback| RouteRule {
        target: Some(Spanned::new(0..0, target)),
        fallback: Some(fallback),
        ..rule(name, when, Action::Forward)
    };
    vec![
        forward("in-a-call", vec![InACall], Target::BusyTarget, Action::Busy),
        rule("presenting", vec![Presenting], Action::Voicemail),
        RouteRule {
            caller: callers(&["vip", "emergency"]),
            ..rule("do-not-disturb-vip", vec![DoNotDisturb], Action::Ring)
        },
        rule("do-not-disturb", vec![DoNotDisturb], Action::Voicemail),
        RouteRule {
            caller: callers(&["external"]),
            announce: true,
            ..forward(
                "out-of-office-external",
                vec![OutOfOffice],
                Target::AbsenceTarget,
                Action::Voicemail,
            )
        },
        forward("out-of-office", vec![OutOfOffice], Target::AbsenceTarget, Action::Ring),
        RouteRule {
            caller: callers(&["external"]),
            announce: true,
            ..forward(
                "in-a-meeting-external",
                vec![InAMeeting],
                Target::AbsenceTarget,
                Action::Ring,
            )
        },
        forward("in-a-meeting", vec![InAMeeting], Target::AbsenceTarget, Action::Ring),
    ]
}
