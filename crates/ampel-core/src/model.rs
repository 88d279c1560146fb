//! The presence model that every interface speaks: availability, activity, colour and the
//! aggregated presence of one user.
//!
//! These types carry no behaviour beyond their vocabulary; how a presence comes about is the
//! business of [`aggregate`](mod@crate::aggregate), and who may see which field of it is decided in
//! [`crate::visibility`].

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Declares a closed vocabulary whose wire form is kebab-case, with parsing that names the
/// accepted values in its error.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_owned(),
                        expected: &[$($text,)+],
                    }),
                }
            }
        }
    };
}

/// A word that is not part of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{value}`, expected one of {}", expected.join(", "))]
pub struct UnknownValue {
    /// What was given.
    pub value: String,
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

vocabulary! {
    /// How reachable a user is; the first thing every interface shows.
    Availability {
        Available = "available",
        Away = "away",
        BeRightBack = "be-right-back",
        Busy = "busy",
        DoNotDisturb = "do-not-disturb",
        Offline = "offline",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// What a user is doing; more specific than [`Availability`].
    Activity {
        Available = "available",
        Away = "away",
        BeRightBack = "be-right-back",
        Busy = "busy",
        DoNotDisturb = "do-not-disturb",
        InACall = "in-a-call",
        InAConferenceCall = "in-a-conference-call",
        InAMeeting = "in-a-meeting",
        Presenting = "presenting",
        Focusing = "focusing",
        OutOfOffice = "out-of-office",
        OffWork = "off-work",
        Inactive = "inactive",
        Offline = "offline",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// The traffic-light colour people read presence by.
    Color {
        Green = "green",
        Yellow = "yellow",
        Red = "red",
        Grey = "grey",
    }
}

vocabulary! {
    /// Where a user works from, reported only by opted-in sources.
    Location {
        Office = "office",
        Home = "home",
        Mobile = "mobile",
        Other = "other",
    }
}

impl Availability {
    /// The colour of this availability.
    pub fn color(self) -> Color {
        match self {
            Availability::Available => Color::Green,
            Availability::Away | Availability::BeRightBack => Color::Yellow,
            Availability::Busy | Availability::DoNotDisturb => Color::Red,
            Availability::Offline | Availability::Unknown => Color::Grey,
        }
    }

    /// The activity that says no more than the availability itself.
    pub fn plain_activity(self) -> Activity {
        match self {
            Availability::Available => Activity::Available,
            Availability::Away => Activity::Away,
            Availability::BeRightBack => Activity::BeRightBack,
            Availability::Busy => Activity::Busy,
            Availability::DoNotDisturb => Activity::DoNotDisturb,
            Availability::Offline => Activity::Offline,
            Availability::Unknown => Activity::Unknown,
        }
    }

    /// How reachable, for choosing between devices: higher is more reachable.
    pub fn reachability(self) -> u8 {
        match self {
            Availability::Available => 6,
            Availability::BeRightBack => 5,
            Availability::Away => 4,
            Availability::Busy => 3,
            Availability::DoNotDisturb => 2,
            Availability::Offline => 1,
            Availability::Unknown => 0,
        }
    }
}

/// A free-text note with the language it is written in (a BCP 47 tag such as `de` or `en-GB`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Note {
    /// The words.
    pub text: String,
    /// The language of the words, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// When the note ends by itself, apart from the state it goes with: set for a status
    /// message of its own (Graph's `setStatusMessage`), which ends at its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub until: Option<Timestamp>,
}

impl Note {
    /// A note in the given language.
    pub fn new(text: impl Into<String>, lang: Option<&str>) -> Note {
        Note { text: text.into(), lang: lang.map(str::to_owned), until: None }
    }
}

/// A user's aggregated presence, complete; what a viewer receives is its projection
/// ([`crate::visibility::Projected`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// How reachable the user is.
    pub availability: Availability,
    /// What the user does.
    pub activity: Activity,
    /// True when every live device of the user is idle.
    pub idle: bool,
    /// True while any source says the user is out of office.
    pub out_of_office: bool,
    /// A note from the user or from the source that decided.
    pub note: Option<Note>,
    /// When the current state is expected to end.
    pub until: Option<Timestamp>,
    /// When the aggregated state began.
    pub since: Timestamp,
    /// Where the user works from, only from opted-in sources.
    pub location: Option<Location>,
    /// When the user was last seen active on any device.
    pub last_active: Option<Timestamp>,
}

impl Presence {
    /// The colour, derived from the availability.
    pub fn color(&self) -> Color {
        self.availability.color()
    }

    /// True when `other` differs in anything a watcher is told about. `last_active` alone moves
    /// with every heartbeat, so it rides along with the next real change instead of causing one.
    pub fn differs_for_watchers(&self, other: &Presence) -> bool {
        let Presence {
            availability,
            activity,
            idle,
            out_of_office,
            note,
            until,
            since,
            location,
            last_active: _,
        } = self;
        *availability != other.availability
            || *activity != other.activity
            || *idle != other.idle
            || *out_of_office != other.out_of_office
            || *note != other.note
            || *until != other.until
            || *since != other.since
            || *location != other.location
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_availability_round_trips_through_its_spelling() {
        for a in Availability::ALL {
            assert_eq!(a.as_str().parse::<Availability>().unwrap(), *a);
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        for a in Activity::ALL {
            assert_eq!(a.as_str().parse::<Activity>().unwrap(), *a);
        }
    }

    #[test]
    fn unknown_spelling_names_the_accepted_values() {
        let err = "sleeping".parse::<Availability>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown value `sleeping`, expected one of available, away, be-right-back, busy, \
             do-not-disturb, offline, unknown"
        );
    }

    #[test]
    fn colours_follow_the_traffic_light() {
        let colors: Vec<_> = Availability::ALL.iter().map(|a| a.color().as_str()).collect();
        assert_eq!(colors, ["green", "yellow", "yellow", "red", "red", "grey", "grey"]);
    }
}
