//! PIDF basic status (RFC 3863 §4.1.4) with RPID activities (RFC 4480 §3.2) in both directions,
//! as plain words.
//!
//! No XML is parsed here: the SIP front end reads a PUBLISH body by namespace and local name and
//! hands in what it found, the `<basic>` value, the names of the elements inside
//! `<rpid:activities>` and whether `<rpid:user-input>` said `idle`; for a NOTIFY it asks
//! [`to_pidf`] for the words to write. Phones are lenient about spelling, so inbound activity
//! names are matched without regard to case, separators or a namespace prefix, and a few
//! non-standard names phones send (`dnd`, `be-right-back`, `out-of-office`) are understood.

use std::fmt;
use std::str::FromStr;

use crate::model::{Activity, Availability, Presence, UnknownValue};

/// The PIDF `<basic>` status of a tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basic {
    /// The presentity can accept communication.
    Open,
    /// The presentity cannot accept communication.
    Closed,
}

impl Basic {
    /// The spelling in a PIDF document.
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

impl fmt::Display for Basic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Basic {
    type Err = UnknownValue;

    /// Reads `open` or `closed`, in any case and with surrounding white space, as phones send it.
    fn from_str(s: &str) -> Result<Basic, UnknownValue> {
        let word = s.trim();
        if word.eq_ignore_ascii_case("open") {
            Ok(Basic::Open)
        } else if word.eq_ignore_ascii_case("closed") {
            Ok(Basic::Closed)
        } else {
            Err(UnknownValue { value: s.to_owned(), expected: &["open", "closed"] })
        }
    }
}

/// What a published PIDF document says about its presentity, in Ampel's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PidfState {
    /// How reachable the presentity is.
    pub availability: Availability,
    /// What the presentity does.
    pub activity: Activity,
    /// `<rpid:user-input>` said `idle` (RFC 4480 §3.9).
    pub idle: bool,
}

/// Reads a published status. The most telling recognised activity decides; activities that say
/// nothing about reachability (`working`, `other`, `unknown`, words Ampel does not know) leave
/// the decision to `<basic>`: open is available, closed is offline, and no `<basic>` at all is
/// unknown. `user_input_idle` marks the presentity idle without changing its availability.
pub fn from_pidf(basic: Option<Basic>, activities: &[&str], user_input_idle: bool) -> PidfState {
    // `max_by_key` keeps the last of equals; reversing makes the first-named activity win a tie.
    let decided = activities
        .iter()
        .rev()
        .filter_map(|word| rpid_meaning(word))
        .max_by_key(|(_, activity)| weight(*activity));
    let (availability, activity) = decided.unwrap_or(match basic {
        Some(Basic::Open) => (Availability::Available, Activity::Available),
        Some(Basic::Closed) => (Availability::Offline, Activity::Offline),
        None => (Availability::Unknown, Activity::Unknown),
    });
    PidfState { availability, activity, idle: user_input_idle }
}

/// What an RPID activity name means, or `None` when it says nothing about reachability.
fn rpid_meaning(word: &str) -> Option<(Availability, Activity)> {
    use Activity as Act;
    use Availability as Av;

    let meaning = match compact(word).as_str() {
        "onthephone" | "inacall" | "incall" => (Av::Busy, Act::InACall),
        "meeting" | "appointment" | "inameeting" | "inmeeting" => (Av::Busy, Act::InAMeeting),
        // A performance includes lectures (RFC 4480 §3.2): the presentity has an audience.
        "presentation" | "performance" | "presenting" => (Av::DoNotDisturb, Act::Presenting),
        // Someone steering a vehicle should not be called, but can be later.
        "busy" | "steering" => (Av::Busy, Act::Busy),
        "donotdisturb" | "dnd" => (Av::DoNotDisturb, Act::DoNotDisturb),
        "vacation" | "holiday" | "permanentabsence" | "travel" | "outofoffice" | "oof" => {
            (Av::Away, Act::OutOfOffice)
        }
        "sleeping" => (Av::Away, Act::OffWork),
        "berightback" | "brb" => (Av::BeRightBack, Act::BeRightBack),
        "away" | "breakfast" | "dinner" | "lunch" | "meal" | "intransit" | "playing"
        | "shopping" | "spectator" | "tv" | "worship" => (Av::Away, Act::Away),
        // `working`, `looking-for-work`, `other`, `unknown` and anything else.
        _ => return None,
    };
    Some(meaning)
}

/// An activity name without namespace prefix, case and separators: `rpid:On-The-Phone`,
/// `on_the_phone` and `Do Not Disturb` all become one word.
fn compact(word: &str) -> String {
    let local = word.rsplit_once(':').map_or(word, |(_, local)| local);
    local.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// How telling an activity is when a document names several; it follows the default precedence,
/// where a do-not-disturb the user chose beats a call, and a call beats a meeting.
fn weight(activity: Activity) -> u8 {
    match activity {
        Activity::DoNotDisturb => 7,
        Activity::InACall => 6,
        Activity::Presenting => 5,
        Activity::InAMeeting => 4,
        Activity::Busy => 3,
        Activity::OutOfOffice => 2,
        Activity::BeRightBack => 1,
        _ => 0,
    }
}

/// The `<basic>` status and the RPID activity element (without prefix) to publish for a
/// presence. The idle flag maps directly to `<rpid:user-input>idle</rpid:user-input>`.
pub fn to_pidf(presence: &Presence) -> (Basic, Option<&'static str>) {
    match presence.availability {
        // Nothing more is said about someone offline, so that appearing offline hides all.
        Availability::Offline => return (Basic::Closed, None),
        Availability::Unknown => return (Basic::Closed, Some("unknown")),
        _ => {}
    }
    let element = match presence.activity {
        Activity::InACall | Activity::InAConferenceCall => Some("on-the-phone"),
        Activity::InAMeeting => Some("meeting"),
        Activity::Presenting => Some("presentation"),
        Activity::OutOfOffice => Some("vacation"),
        // RPID has no be-right-back; away is the nearest it has.
        Activity::Away | Activity::BeRightBack => Some("away"),
        // RPID has no do-not-disturb and no focusing (RFC 4480 §3.2): busy is the nearest word
        // every phone shows, and it keeps the lamp red.
        Activity::Busy | Activity::DoNotDisturb | Activity::Focusing => Some("busy"),
        Activity::Available
        | Activity::Inactive
        | Activity::OffWork
        | Activity::Offline
        | Activity::Unknown => plain_element(presence.availability),
    };
    (Basic::Open, element)
}

/// The activity element that says no more than an availability.
fn plain_element(availability: Availability) -> Option<&'static str> {
    match availability {
        Availability::Away | Availability::BeRightBack => Some("away"),
        Availability::Busy | Availability::DoNotDisturb => Some("busy"),
        Availability::Available | Availability::Offline | Availability::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Activity as Act;
    use Availability as Av;

    /// Every activity of RFC 4480 §3.2 and what an open tuple with it means.
    const RFC_4480: &[(&str, Av, Act)] = &[
        ("appointment", Av::Busy, Act::InAMeeting),
        ("away", Av::Away, Act::Away),
        ("breakfast", Av::Away, Act::Away),
        ("busy", Av::Busy, Act::Busy),
        ("dinner", Av::Away, Act::Away),
        ("holiday", Av::Away, Act::OutOfOffice),
        ("in-transit", Av::Away, Act::Away),
        ("looking-for-work", Av::Available, Act::Available),
        ("lunch", Av::Away, Act::Away),
        ("meal", Av::Away, Act::Away),
        ("meeting", Av::Busy, Act::InAMeeting),
        ("on-the-phone", Av::Busy, Act::InACall),
        ("other", Av::Available, Act::Available),
        ("performance", Av::DoNotDisturb, Act::Presenting),
        ("permanent-absence", Av::Away, Act::OutOfOffice),
        ("playing", Av::Away, Act::Away),
        ("presentation", Av::DoNotDisturb, Act::Presenting),
        ("shopping", Av::Away, Act::Away),
        ("sleeping", Av::Away, Act::OffWork),
        ("spectator", Av::Away, Act::Away),
        ("steering", Av::Busy, Act::Busy),
        ("travel", Av::Away, Act::OutOfOffice),
        ("tv", Av::Away, Act::Away),
        ("unknown", Av::Available, Act::Available),
        ("vacation", Av::Away, Act::OutOfOffice),
        ("working", Av::Available, Act::Available),
        ("worship", Av::Away, Act::Away),
    ];

    fn read(basic: Option<Basic>, activities: &[&str]) -> (Av, Act) {
        let s = from_pidf(basic, activities, false);
        (s.availability, s.activity)
    }

    #[test]
    fn every_rfc_4480_activity_is_read() {
        for (word, availability, activity) in RFC_4480 {
            assert_eq!(read(Some(Basic::Open), &[word]), (*availability, *activity), "{word}");
        }
    }

    #[test]
    fn basic_decides_when_no_activity_tells() {
        assert_eq!(read(Some(Basic::Open), &[]), (Av::Available, Act::Available));
        assert_eq!(read(Some(Basic::Closed), &[]), (Av::Offline, Act::Offline));
        assert_eq!(read(Some(Basic::Closed), &["working"]), (Av::Offline, Act::Offline));
        assert_eq!(read(None, &["something-new"]), (Av::Unknown, Act::Unknown));
        // C14c: a `<status/>` without `<basic>`, and an away activity.
        assert_eq!(read(None, &["away"]), (Av::Away, Act::Away));
    }

    #[test]
    fn user_input_idle_marks_an_available_presentity_idle() {
        let s = from_pidf(Some(Basic::Open), &[], true);
        assert_eq!(
            s,
            PidfState { availability: Av::Available, activity: Act::Available, idle: true }
        );
    }

    #[test]
    fn names_are_read_leniently() {
        for word in ["rpid:on-the-phone", "On-The-Phone", "on_the_phone", " onThePhone "] {
            assert_eq!(read(Some(Basic::Open), &[word]), (Av::Busy, Act::InACall), "{word}");
        }
        for word in ["dnd", "DND", "do-not-disturb", "Do Not Disturb", "doNotDisturb"] {
            assert_eq!(read(Some(Basic::Open), &[word]), (Av::DoNotDisturb, Act::DoNotDisturb));
        }
        assert_eq!(
            read(Some(Basic::Open), &["be-right-back"]),
            (Av::BeRightBack, Act::BeRightBack)
        );
        assert_eq!(read(Some(Basic::Open), &["out-of-office"]), (Av::Away, Act::OutOfOffice));
        assert_eq!(" Closed ".parse::<Basic>(), Ok(Basic::Closed));
        assert!("half-open".parse::<Basic>().is_err());
    }

    #[test]
    fn the_most_telling_of_several_activities_decides() {
        assert_eq!(read(Some(Basic::Open), &["lunch", "on-the-phone"]), (Av::Busy, Act::InACall));
        assert_eq!(
            read(Some(Basic::Open), &["on-the-phone", "dnd"]),
            (Av::DoNotDisturb, Act::DoNotDisturb)
        );
        assert_eq!(read(Some(Basic::Open), &["meeting", "unknown"]), (Av::Busy, Act::InAMeeting));
        assert_eq!(read(Some(Basic::Open), &["sleeping", "away"]), (Av::Away, Act::OffWork));
    }

    fn presence(availability: Av, activity: Act) -> Presence {
        Presence {
            availability,
            activity,
            idle: false,
            out_of_office: false,
            note: None,
            until: None,
            since: jiff::Timestamp::UNIX_EPOCH,
            location: None,
            last_active: None,
        }
    }

    /// Every activity with its usual availability, what goes out (basic and activity element),
    /// and what comes back in. Where RPID has no word for an Ampel value the nearest one goes out
    /// and comes back instead.
    const BOTH_WAYS: &[(Av, Act, &str, Av, Act)] = &[
        (Av::Available, Act::Available, "open", Av::Available, Act::Available),
        (Av::Away, Act::Away, "open away", Av::Away, Act::Away),
        (Av::BeRightBack, Act::BeRightBack, "open away", Av::Away, Act::Away),
        (Av::Busy, Act::Busy, "open busy", Av::Busy, Act::Busy),
        (Av::DoNotDisturb, Act::DoNotDisturb, "open busy", Av::Busy, Act::Busy),
        (Av::Busy, Act::InACall, "open on-the-phone", Av::Busy, Act::InACall),
        (Av::Busy, Act::InAConferenceCall, "open on-the-phone", Av::Busy, Act::InACall),
        (Av::Busy, Act::InAMeeting, "open meeting", Av::Busy, Act::InAMeeting),
        (Av::DoNotDisturb, Act::Presenting, "open presentation", Av::DoNotDisturb, Act::Presenting),
        (Av::DoNotDisturb, Act::Focusing, "open busy", Av::Busy, Act::Busy),
        (Av::Away, Act::OutOfOffice, "open vacation", Av::Away, Act::OutOfOffice),
        (Av::Offline, Act::OffWork, "closed", Av::Offline, Act::Offline),
        (Av::Available, Act::Inactive, "open", Av::Available, Act::Available),
        (Av::Offline, Act::Offline, "closed", Av::Offline, Act::Offline),
        (Av::Unknown, Act::Unknown, "closed unknown", Av::Offline, Act::Offline),
    ];

    #[test]
    fn every_activity_goes_out_and_comes_back() {
        assert_eq!(BOTH_WAYS.len(), Act::ALL.len());
        for &(av, act, sent, back_av, back_act) in BOTH_WAYS {
            let (basic, element) = to_pidf(&presence(av, act));
            let words: Vec<&str> = [basic.as_str()].into_iter().chain(element).collect();
            assert_eq!(words.join(" "), sent, "{av}/{act}");
            let activities: Vec<&str> = element.into_iter().collect();
            assert_eq!(read(Some(basic), &activities), (back_av, back_act), "{av}/{act}");
        }
    }

    #[test]
    fn the_availability_speaks_when_the_activity_is_plain() {
        assert_eq!(to_pidf(&presence(Av::BeRightBack, Act::OffWork)), (Basic::Open, Some("away")));
        assert_eq!(
            to_pidf(&presence(Av::DoNotDisturb, Act::Available)),
            (Basic::Open, Some("busy"))
        );
        // Appearing offline says nothing else, whatever activity is underneath.
        assert_eq!(to_pidf(&presence(Av::Offline, Act::InAMeeting)), (Basic::Closed, None));
    }
}
