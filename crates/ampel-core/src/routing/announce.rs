//! Spoken presence: the sentence an external caller hears before a call is forwarded or sent
//! to voicemail, in German or English.
//!
//! The sentence is made from the callee's name, the situation and when it ends, told in the
//! callee's local time, with the date when it is not today. Nothing else goes in: no meeting
//! subject, no place, no note, so that nothing private can reach a caller. Turning the text
//! into audio is the server's business.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde::Serialize;

use super::rules::{Action, Situation};
pub use crate::policy::render::Lang;

/// What the caller hears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Announcement {
    /// The words.
    pub text: String,
    /// Their language, `de` or `en`.
    pub lang: String,
    /// The same words as a speech synthesiser should read them: dates and times spelled the
    /// way they are spoken ("bis 14 Uhr 30", "ab Montag, dem siebten Dezember").
    #[serde(skip)]
    pub speech: String,
}

/// Whether words are for reading or for a speech synthesiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Written,
    Spoken,
}

/// What an announcement is about.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    /// The callee's display name.
    pub name: &'a str,
    /// The situation to tell, `None` for a plain "not available".
    pub situation: Option<Situation>,
    /// When it ends.
    pub until: Option<Timestamp>,
    /// The callee's time zone.
    pub tz: &'a TimeZone,
}

/// The announcement for a call that is handled by `action`.
pub fn announcement(
    subject: &Subject<'_>,
    action: Action,
    now: Timestamp,
    lang: Lang,
) -> Announcement {
    let today = now.to_zoned(subject.tz.clone()).date();
    let until = subject.until.filter(|u| *u > now).map(|u| {
        let local = u.to_zoned(subject.tz.clone());
        (local.date(), local.time())
    });
    let words = |form| {
        let first = match lang {
            Lang::En => sentence_en(subject.name, subject.situation, until, today, form),
            Lang::De => sentence_de(subject.name, subject.situation, until, today, form),
        };
        match tail(action, lang) {
            Some(tail) => format!("{first} {tail}"),
            None => first,
        }
    };
    Announcement {
        text: words(Form::Written),
        lang: lang.as_str().to_owned(),
        speech: words(Form::Spoken),
    }
}

/// The local end as a date and a time.
type LocalEnd = Option<(Date, Time)>;

fn sentence_en(
    name: &str,
    situation: Option<Situation>,
    until: LocalEnd,
    today: Date,
    form: Form,
) -> String {
    use Situation::*;
    match (situation, until) {
        (Some(OutOfOffice), Some((date, time))) => match back(date, time, today) {
            Back::Today(time) => {
                format!("{name} is out of the office and back at {}.", time_en(time))
            }
            Back::On(date) => {
                format!("{name} is out of the office and back on {}.", date_en(date, form))
            }
        },
        (Some(OutOfOffice), None) => format!("{name} is out of the office."),
        (Some(InAMeeting), Some(end)) => {
            format!("{name} is in a meeting until {}.", when_en(end, today, form))
        }
        (Some(InAMeeting), None) => format!("{name} is in a meeting."),
        (Some(DoNotDisturb), Some(end)) => {
            format!("{name} does not wish to be disturbed until {}.", when_en(end, today, form))
        }
        (Some(DoNotDisturb), None) => format!("{name} does not wish to be disturbed."),
        (Some(InACall), _) => format!("{name} is on another call."),
        (Some(Presenting), _) => format!("{name} is giving a presentation."),
        _ => format!("{name} is not available at the moment."),
    }
}

fn sentence_de(
    name: &str,
    situation: Option<Situation>,
    until: LocalEnd,
    today: Date,
    form: Form,
) -> String {
    use Situation::*;
    match (situation, until) {
        (Some(OutOfOffice), Some((date, time))) => match back(date, time, today) {
            Back::Today(time) => {
                format!("{name} ist nicht im Büro und ab {} wieder da.", time_de(time, form))
            }
            Back::On(date) => {
                format!("{name} ist nicht im Büro und ab {} wieder da.", date_de(date, form, "dem"))
            }
        },
        (Some(OutOfOffice), None) => format!("{name} ist nicht im Büro."),
        (Some(InAMeeting), Some(end)) => {
            format!("{name} ist bis {} in einer Besprechung.", when_de(end, today, form))
        }
        (Some(InAMeeting), None) => format!("{name} ist in einer Besprechung."),
        (Some(DoNotDisturb), Some(end)) => {
            format!("{name} möchte bis {} nicht gestört werden.", when_de(end, today, form))
        }
        (Some(DoNotDisturb), None) => format!("{name} möchte nicht gestört werden."),
        (Some(InACall), _) => format!("{name} ist gerade in einem anderen Gespräch."),
        (Some(Presenting), _) => format!("{name} hält gerade eine Präsentation."),
        _ => format!("{name} ist im Moment nicht erreichbar."),
    }
}

fn tail(action: Action, lang: Lang) -> Option<&'static str> {
    match (action, lang) {
        (Action::Voicemail, Lang::En) => Some("Please leave a message after the tone."),
        (Action::Voicemail, Lang::De) => {
            Some("Bitte hinterlassen Sie nach dem Signalton eine Nachricht.")
        }
        (Action::Forward, Lang::En) => Some("Your call is being forwarded."),
        (Action::Forward, Lang::De) => Some("Ihr Anruf wird weitergeleitet."),
        (Action::Busy, Lang::En) => Some("Please call again later."),
        (Action::Busy, Lang::De) => Some("Bitte rufen Sie später noch einmal an."),
        (Action::Ring, _) => None,
    }
}

/// When someone who is away comes back: later today at a time, or from a day on.
enum Back {
    Today(Time),
    On(Date),
}

/// An absence that ends at midnight or later than today means back on that day; one that
/// ends later today means back at that time.
fn back(date: Date, time: Time, today: Date) -> Back {
    if date == today && time != Time::midnight() { Back::Today(time) } else { Back::On(date) }
}

/// "2:30 pm" today, "Monday, 7 December, 2:30 pm" on another day.
fn when_en((date, time): (Date, Time), today: Date, form: Form) -> String {
    if date == today {
        time_en(time)
    } else {
        format!("{}, {}", date_en(date, form), time_en(time))
    }
}

/// "14:30 Uhr" today, "Montag, 7. Dezember, 14:30 Uhr" on another day.
fn when_de((date, time): (Date, Time), today: Date, form: Form) -> String {
    if date == today {
        time_de(time, form)
    } else {
        format!("{}, {}", date_de(date, form, "den"), time_de(time, form))
    }
}

/// "2 pm", "2:30 pm", "12 noon" is said as "12 pm".
fn time_en(time: Time) -> String {
    let (hour, minute) = (time.hour(), time.minute());
    let suffix = if hour < 12 { "am" } else { "pm" };
    let hour12 = match hour % 12 {
        0 => 12,
        h => h,
    };
    if minute == 0 {
        format!("{hour12} {suffix}")
    } else {
        format!("{hour12}:{minute:02} {suffix}")
    }
}

/// "14 Uhr", "14:30 Uhr"; spoken "14 Uhr 30", which synthesisers read as people say it.
fn time_de(time: Time, form: Form) -> String {
    let (hour, minute) = (time.hour(), time.minute());
    match (minute, form) {
        (0, _) => format!("{hour} Uhr"),
        (_, Form::Written) => format!("{hour}:{minute:02} Uhr"),
        (_, Form::Spoken) => format!("{hour} Uhr {minute}"),
    }
}

const WEEKDAYS_EN: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const WEEKDAYS_DE: [&str; 7] =
    ["Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTHS_DE: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];

/// "Monday, 7 December"; spoken "Monday, the 7th of December".
fn date_en(date: Date, form: Form) -> String {
    let weekday = WEEKDAYS_EN[date.weekday().to_monday_zero_offset() as usize];
    let (day, month) = (date.day(), MONTHS_EN[date.month() as usize - 1]);
    match form {
        Form::Written => format!("{weekday}, {day} {month}"),
        Form::Spoken => {
            let suffix = match (day % 10, day / 10) {
                (_, 1) => "th",
                (1, _) => "st",
                (2, _) => "nd",
                (3, _) => "rd",
                _ => "th",
            };
            format!("{weekday}, the {day}{suffix} of {month}")
        }
    }
}

/// "Montag, 7. Dezember"; spoken with the ordinal in words after `article` ("Montag, dem
/// siebten Dezember"), because synthesisers read "7." as a cardinal that ends a sentence.
fn date_de(date: Date, form: Form, article: &str) -> String {
    let weekday = WEEKDAYS_DE[date.weekday().to_monday_zero_offset() as usize];
    let (day, month) = (date.day(), MONTHS_DE[date.month() as usize - 1]);
    match form {
        Form::Written => format!("{weekday}, {day}. {month}"),
        Form::Spoken => format!("{weekday}, {article} {} {month}", ordinal_de(day)),
    }
}

/// The German ordinal of a day of the month with its weak ending: "ersten", "siebten",
/// "einundzwanzigsten".
fn ordinal_de(day: i8) -> String {
    const UNITS: [&str; 10] =
        ["", "ein", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"];
    const SMALL: [&str; 20] = [
        "",
        "ersten",
        "zweiten",
        "dritten",
        "vierten",
        "fünften",
        "sechsten",
        "siebten",
        "achten",
        "neunten",
        "zehnten",
        "elften",
        "zwölften",
        "dreizehnten",
        "vierzehnten",
        "fünfzehnten",
        "sechzehnten",
        "siebzehnten",
        "achtzehnten",
        "neunzehnten",
    ];
    let day = day.clamp(1, 31) as usize;
    if day < 20 {
        return SMALL[day].to_owned();
    }
    let tens = if day < 30 { "zwanzigsten" } else { "dreißigsten" };
    match day % 10 {
        0 => tens.to_owned(),
        unit => format!("{}und{tens}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn say(situation: Situation, until: Option<&str>, action: Action, lang: Lang) -> String {
        let tz = berlin();
        let subject = Subject {
            name: "Alice Example",
            situation: Some(situation),
            until: until.map(at),
            tz: &tz,
        };
        // Thursday, 3 December 2026, 11:00 in Berlin.
        announcement(&subject, action, at("2026-12-03T10:00:00Z"), lang).text
    }

    #[test]
    fn a_meeting_today_is_told_with_the_local_time() {
        let until = Some("2026-12-03T13:30:00Z");
        assert_eq!(
            say(Situation::InAMeeting, until, Action::Forward, Lang::En),
            "Alice Example is in a meeting until 2:30 pm. Your call is being forwarded."
        );
        assert_eq!(
            say(Situation::InAMeeting, until, Action::Forward, Lang::De),
            "Alice Example ist bis 14:30 Uhr in einer Besprechung. Ihr Anruf wird weitergeleitet."
        );
    }

    #[test]
    fn an_absence_until_monday_names_the_day_and_date() {
        // The absence ends at midnight in Berlin, which is 23:00 UTC the day before.
        let until = Some("2026-12-06T23:00:00Z");
        assert_eq!(
            say(Situation::OutOfOffice, until, Action::Voicemail, Lang::En),
            "Alice Example is out of the office and back on Monday, 7 December. Please leave a \
             message after the tone."
        );
        assert_eq!(
            say(Situation::OutOfOffice, until, Action::Voicemail, Lang::De),
            "Alice Example ist nicht im Büro und ab Montag, 7. Dezember wieder da. Bitte \
             hinterlassen Sie nach dem Signalton eine Nachricht."
        );
    }

    #[test]
    fn an_absence_ending_later_today_names_the_time() {
        let until = Some("2026-12-03T15:00:00Z");
        assert_eq!(
            say(Situation::OutOfOffice, until, Action::Busy, Lang::En),
            "Alice Example is out of the office and back at 4 pm. Please call again later."
        );
        assert_eq!(
            say(Situation::OutOfOffice, until, Action::Busy, Lang::De),
            "Alice Example ist nicht im Büro und ab 16 Uhr wieder da. Bitte rufen Sie später noch \
             einmal an."
        );
    }

    #[test]
    fn a_meeting_into_another_day_names_the_date_and_summer_time_is_kept() {
        // 1 July is in summer time: 08:00 UTC is 10:00 in Berlin.
        let until = Some("2027-07-01T08:00:00Z");
        assert_eq!(
            say(Situation::InAMeeting, until, Action::Ring, Lang::En),
            "Alice Example is in a meeting until Thursday, 1 July, 10 am."
        );
        assert_eq!(
            say(Situation::InAMeeting, until, Action::Ring, Lang::De),
            "Alice Example ist bis Donnerstag, 1. Juli, 10 Uhr in einer Besprechung."
        );
    }

    #[test]
    fn an_end_in_the_past_is_not_told() {
        let until = Some("2026-12-03T09:00:00Z");
        assert_eq!(
            say(Situation::InAMeeting, until, Action::Ring, Lang::En),
            "Alice Example is in a meeting."
        );
    }

    #[test]
    fn the_spoken_form_spells_dates_and_times_as_people_say_them() {
        let tz = berlin();
        let subject = |situation, until| Subject {
            name: "Alice Example",
            situation: Some(situation),
            until: Some(at(until)),
            tz: &tz,
        };
        let now = at("2026-12-03T10:00:00Z");
        let speech = |s: &Subject<'_>, lang| announcement(s, Action::Voicemail, now, lang).speech;
        let ooo = subject(Situation::OutOfOffice, "2026-12-06T23:00:00Z");
        assert_eq!(
            speech(&ooo, Lang::De),
            "Alice Example ist nicht im Büro und ab Montag, dem siebten Dezember wieder da. Bitte \
             hinterlassen Sie nach dem Signalton eine Nachricht."
        );
        assert_eq!(
            speech(&ooo, Lang::En),
            "Alice Example is out of the office and back on Monday, the 7th of December. Please \
             leave a message after the tone."
        );
        let meeting = subject(Situation::InAMeeting, "2026-12-21T13:30:00Z");
        assert_eq!(
            speech(&meeting, Lang::De),
            "Alice Example ist bis Montag, den einundzwanzigsten Dezember, 14 Uhr 30 in einer \
             Besprechung. Bitte hinterlassen Sie nach dem Signalton eine Nachricht."
        );
        assert_eq!(ordinal_de(30), "dreißigsten");
        assert_eq!(ordinal_de(12), "zwölften");
        assert_eq!(
            date_en(jiff::civil::date(2026, 12, 22), Form::Spoken),
            "Tuesday, the 22nd of December"
        );
        assert_eq!(
            date_en(jiff::civil::date(2026, 12, 12), Form::Spoken),
            "Saturday, the 12th of December"
        );
    }

    #[test]
    fn noon_and_midnight_in_english() {
        assert_eq!(time_en(Time::constant(12, 0, 0, 0)), "12 pm");
        assert_eq!(time_en(Time::constant(0, 5, 0, 0)), "12:05 am");
    }
}
