//! The active policy as a page an employee can read, in German or English (Markdown).
//!
//! The page is derived from the policy, never written beside it: the order of the precedence
//! list decides which rules each sentence says it beats ("even if ...") and which beat it
//! ("unless ..."), durations are spelled out in words, and the visibility section lists exactly
//! the grants each kind of viewer has. A changed policy file therefore renders a changed page.
//! Which policy is active, and where the page is served, is the business of the front ends.

use std::fmt;
use std::str::FromStr;

use crate::fact::Source;
use crate::model::UnknownValue;
use crate::policy::{
    CalendarPolicy, Duration, Dynamics, Grant, HistoryPolicy, Lifetime, Policy, Rule,
    VisibilityPolicy,
};

mod routing;

/// The language of the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// German, addressing the reader as "Sie".
    De,
    /// English (British spelling).
    En,
}

impl Lang {
    /// The language tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::De => "de",
            Lang::En => "en",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lang {
    type Err = UnknownValue;

    /// Reads `de` or `en` in any case.
    fn from_str(s: &str) -> Result<Lang, UnknownValue> {
        if s.eq_ignore_ascii_case("de") {
            Ok(Lang::De)
        } else if s.eq_ignore_ascii_case("en") {
            Ok(Lang::En)
        } else {
            Err(UnknownValue { value: s.to_owned(), expected: &["de", "en"] })
        }
    }
}

/// Renders `policy` as a plain-language page in `lang`.
pub fn render(policy: &Policy, lang: Lang) -> String {
    let sections = [
        intro(lang),
        precedence(policy, lang),
        timing(&policy.dynamics, lang),
        lifetimes(&policy.lifetime, lang),
        calendar(&policy.calendar, lang),
        visibility(&policy.visibility, lang),
        routing::section(&policy.routing, lang),
        history(&policy.history, lang),
    ];
    let mut page = sections.join("\n\n");
    page.push('\n');
    page
}

fn intro(lang: Lang) -> String {
    match lang {
        Lang::En => "# How Ampel shows your presence\n\n\
            Your presence (whether colleagues can reach you right now) is personal data. Ampel \
            gathers what your devices, the phone system, your calendar and Microsoft Teams report \
            about you, combines these signals under one company-wide policy, and shows each person \
            only what this policy allows them to see. This page describes the policy in force. You \
            can ask Ampel at any time why you are shown the way you are: it lists the signals it \
            considered and the rule that decided."
            .to_owned(),
        Lang::De => "# Wie Ampel Ihre Präsenz anzeigt\n\n\
            Ihre Präsenz (also ob Kolleginnen und Kollegen Sie gerade erreichen können) gehört zu \
            Ihren personenbezogenen Daten. Ampel sammelt, was Ihre Geräte, die Telefonanlage, Ihr \
            Kalender und Microsoft Teams über Sie melden, führt diese Angaben nach einer \
            unternehmensweiten Richtlinie zusammen und zeigt jeder Person nur, was diese Richtlinie \
            ihr erlaubt. Diese Seite beschreibt die geltende Richtlinie. Sie können Ampel jederzeit \
            fragen, warum Sie so angezeigt werden, wie Sie angezeigt werden: Ampel nennt dann die \
            berücksichtigten Angaben und die Regel, die entschieden hat."
            .to_owned(),
    }
}

/// The words for one rule.
struct RuleWords {
    /// A subordinate clause that fits after "when", "even if" and "unless".
    when: &'static str,
    /// The main clause: how the user is shown when the rule decides.
    shown: &'static str,
    /// A noun phrase, for the list of rules that never decide.
    name: &'static str,
}

const fn words(when: &'static str, shown: &'static str, name: &'static str) -> RuleWords {
    RuleWords { when, shown, name }
}

fn rule_words(rule: Rule, lang: Lang) -> RuleWords {
    match lang {
        Lang::En => rule_words_en(rule),
        Lang::De => rule_words_de(rule),
    }
}

fn rule_words_en(rule: Rule) -> RuleWords {
    match rule {
        Rule::AppearOffline => words(
            "you have chosen to appear offline",
            "you are shown as offline",
            "appearing offline",
        ),
        Rule::DoNotDisturb => words(
            "you have set your status to do not disturb",
            "you are shown as do not disturb",
            "do not disturb set by hand",
        ),
        Rule::Call => words(
            "you are in a call",
            "you are shown as busy (in a call), whether on the phone system or in Teams",
            "calls on the phone or in Teams",
        ),
        Rule::Presenting => words(
            "you present in an online meeting",
            "you are shown as do not disturb (presenting)",
            "presenting in an online meeting",
        ),
        Rule::Manual => words(
            "you have set a status by hand",
            "you are shown with that status",
            "a status set by hand (available, away, be right back, busy)",
        ),
        Rule::Meeting => words(
            "you take part in an online meeting",
            "you are shown as busy (in a meeting)",
            "taking part in an online meeting",
        ),
        Rule::DeviceStatus => words(
            "you have set busy or do not disturb on one of your devices",
            "you are shown with that status while the device is signed in",
            "a status set on a device",
        ),
        Rule::CalendarOutOfOffice => words(
            "your calendar shows you out of office",
            "you are shown as away (out of office)",
            "absences in your calendar",
        ),
        Rule::CalendarBusy => words(
            "your calendar shows a meeting",
            "you are shown as busy (in a meeting) until its planned end",
            "meetings in your calendar",
        ),
        Rule::Teams => words(
            "Teams reports a status for you",
            "you are shown with your Teams status",
            "your Teams status",
        ),
        Rule::Devices => words(
            "you use one of your devices",
            "you are shown as available (marked as inactive once all your devices are idle, and \
             shown as away after a longer break)",
            "the use of your devices",
        ),
        Rule::NoFacts => words(
            "nothing is known about you",
            "you are shown as offline",
            "the absence of any signal",
        ),
    }
}

fn rule_words_de(rule: Rule) -> RuleWords {
    match rule {
        Rule::AppearOffline => words(
            "Sie „Als offline anzeigen“ gewählt haben",
            "werden Sie als „Offline“ angezeigt",
            "„Als offline anzeigen“",
        ),
        Rule::DoNotDisturb => words(
            "Sie „Nicht stören“ eingestellt haben",
            "werden Sie als „Nicht stören“ angezeigt",
            "von Hand eingestelltes „Nicht stören“",
        ),
        Rule::Call => words(
            "Sie telefonieren",
            "werden Sie als „Beschäftigt (im Gespräch)“ angezeigt, ob über die Telefonanlage oder \
             in Teams",
            "Telefonate über die Telefonanlage oder in Teams",
        ),
        Rule::Presenting => words(
            "Sie in einer Online-Besprechung präsentieren",
            "werden Sie als „Nicht stören (Präsentation)“ angezeigt",
            "Präsentieren in einer Online-Besprechung",
        ),
        Rule::Manual => words(
            "Sie Ihren Status von Hand gesetzt haben",
            "werden Sie mit diesem Status angezeigt",
            "ein von Hand gesetzter Status (Verfügbar, Abwesend, Bin gleich zurück, Beschäftigt)",
        ),
        Rule::Meeting => words(
            "Sie an einer Online-Besprechung teilnehmen",
            "werden Sie als „Beschäftigt (in einer Besprechung)“ angezeigt",
            "die Teilnahme an einer Online-Besprechung",
        ),
        Rule::DeviceStatus => words(
            "Sie auf einem Ihrer Geräte „Beschäftigt“ oder „Nicht stören“ eingestellt haben",
            "werden Sie mit diesem Status angezeigt, solange das Gerät angemeldet ist",
            "ein auf einem Gerät eingestellter Status",
        ),
        Rule::CalendarOutOfOffice => words(
            "in Ihrem Kalender eine Abwesenheit eingetragen ist",
            "werden Sie als „Abwesend (außer Haus)“ angezeigt",
            "Abwesenheiten in Ihrem Kalender",
        ),
        Rule::CalendarBusy => words(
            "in Ihrem Kalender gerade eine Besprechung eingetragen ist",
            "werden Sie bis zu deren geplantem Ende als „Beschäftigt (in einer Besprechung)“ \
             angezeigt",
            "Besprechungen in Ihrem Kalender",
        ),
        Rule::Teams => words(
            "Teams einen Status für Sie meldet",
            "werden Sie mit Ihrem Teams-Status angezeigt",
            "Ihr Teams-Status",
        ),
        Rule::Devices => words(
            "Sie eines Ihrer Geräte benutzen",
            "werden Sie als „Verfügbar“ angezeigt (mit dem Hinweis „inaktiv“, sobald alle Ihre \
             Geräte inaktiv sind, und nach einer längeren Pause als „Abwesend“)",
            "die Benutzung Ihrer Geräte",
        ),
        Rule::NoFacts => words(
            "nichts über Sie bekannt ist",
            "werden Sie als „Offline“ angezeigt",
            "das Fehlen jeder Angabe",
        ),
    }
}

/// Small words that join the pieces of the page.
struct Joiners {
    when: &'static str,
    beats_all: &'static str,
    even_if: &'static str,
    unless_after_even_if: &'static str,
    unless: &'static str,
    or: &'static str,
    and: &'static str,
}

const EN: Joiners = Joiners {
    when: "When",
    beats_all: " — this beats every other rule",
    even_if: " — even if ",
    unless_after_even_if: ", unless ",
    unless: " — unless ",
    or: "or",
    and: "and",
};

const DE: Joiners = Joiners {
    when: "Wenn",
    beats_all: " – diese Regel geht allen anderen vor",
    even_if: " – auch wenn ",
    unless_after_even_if: ", außer wenn ",
    unless: " – außer wenn ",
    or: "oder",
    and: "und",
};

fn joiners(lang: Lang) -> &'static Joiners {
    match lang {
        Lang::En => &EN,
        Lang::De => &DE,
    }
}

/// "a", "a or b", "a, b or c".
fn join(items: &[&str], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., tail] => format!("{} {last} {tail}", init.join(", ")),
    }
}

fn precedence(policy: &Policy, lang: Lang) -> String {
    let rules = policy.precedence.rules();
    let mut lines = vec![match lang {
        Lang::En => "## How your status is decided\n\n\
            Ampel goes through the following rules from top to bottom. The first rule that \
            applies decides how you are shown.\n"
            .to_owned(),
        Lang::De => "## Wie Ihr Status zustande kommt\n\n\
            Ampel prüft die folgenden Regeln von oben nach unten. Die erste Regel, die zutrifft, \
            entscheidet, wie Sie angezeigt werden.\n"
            .to_owned(),
    }];
    lines.extend((0..rules.len()).map(|i| rule_sentence(rules, i, lang)));
    lines.push(String::new());
    lines.push(match lang {
        Lang::En => "When none of these rules applies, you are shown as offline, for example \
            when no device is signed in and no other source reports anything about you."
            .to_owned(),
        Lang::De => "Trifft keine dieser Regeln zu, werden Sie als „Offline“ angezeigt, etwa \
            wenn kein Gerät angemeldet ist und keine andere Quelle etwas über Sie meldet."
            .to_owned(),
    });
    lines.extend(switched_off(policy, lang));
    lines.join("\n")
}

/// The rules an "even if" clause may name: the ones people wonder about. Naming every lower
/// rule would make each sentence as long as the list.
const NOTABLE: &[Rule] =
    &[Rule::Call, Rule::Manual, Rule::CalendarBusy, Rule::Teams, Rule::Devices];

/// How many higher rules an "unless" clause names; further down, the order says it all.
const UNLESS_AT_MOST: usize = 3;

/// One numbered sentence for the rule at `rank`, worded from its neighbours in the list.
fn rule_sentence(rules: &[Rule], rank: usize, lang: Lang) -> String {
    let rule = rules[rank];
    let j = joiners(lang);
    let when = |r: &Rule| rule_words(*r, lang).when;
    let words = rule_words(rule, lang);
    let mut sentence = format!("{}. {} {}, {}", rank + 1, j.when, words.when, words.shown);
    if rank == 0 {
        sentence.push_str(j.beats_all);
        sentence.push('.');
        return sentence;
    }

    // A user has one manual status at a time, so one manual rule never beats another.
    let manual = |r: Rule| matches!(r, Rule::AppearOffline | Rule::DoNotDisturb | Rule::Manual);
    let even_if: Vec<&str> = rules[rank + 1..]
        .iter()
        .filter(|r| NOTABLE.contains(r) && !(manual(rule) && manual(**r)))
        .take(2)
        .map(when)
        .collect();
    let unless: Vec<&str> = rules[..rank].iter().map(when).collect();

    if !even_if.is_empty() {
        sentence.push_str(j.even_if);
        sentence.push_str(&join(&even_if, j.or));
    }
    if unless.len() <= UNLESS_AT_MOST {
        sentence.push_str(if even_if.is_empty() { j.unless } else { j.unless_after_even_if });
        sentence.push_str(&join(&unless, j.or));
    }
    sentence.push('.');
    sentence
}

/// The paragraph about rules left out of the precedence list, if there are any.
fn switched_off(policy: &Policy, lang: Lang) -> Vec<String> {
    let off: Vec<Rule> =
        Rule::RANKED.iter().copied().filter(|r| policy.precedence.rank(*r).is_none()).collect();
    if off.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![String::new()];
    lines.push(match lang {
        Lang::En => "These rules are switched off and never decide your status:".to_owned(),
        Lang::De => {
            "Diese Regeln sind abgeschaltet und entscheiden nie über Ihren Status:".to_owned()
        }
    });
    lines.extend(off.iter().map(|r| format!("- {}", rule_words(*r, lang).name)));
    lines
}

fn timing(dynamics: &Dynamics, lang: Lang) -> String {
    let idle = duration_words(dynamics.idle_after, lang);
    let away = duration_words(dynamics.away_after, lang);
    let heartbeat = duration_words(dynamics.heartbeat, lang);
    let at_once = dynamics.away_after.is_zero();
    match lang {
        Lang::En => [
            "## Timing\n".to_owned(),
            format!(
                "- A device you have not used for {idle} counts as idle: you stay available, \
                 marked as inactive."
            ),
            if at_once {
                "- An idle device counts as away at once.".to_owned()
            } else {
                format!("- A device that then stays idle for {away} longer counts as away.")
            },
            format!(
                "- Your apps report to Ampel regularly so that it knows they are still signed \
                 in; the time between two reports is {heartbeat}."
            ),
        ],
        Lang::De => [
            "## Zeiten\n".to_owned(),
            format!(
                "- Ein Gerät, das Sie {idle} lang nicht benutzt haben, gilt als inaktiv: Sie \
                 bleiben „Verfügbar“ und werden als inaktiv markiert."
            ),
            if at_once {
                "- Ein inaktives Gerät gilt sofort als abwesend.".to_owned()
            } else {
                format!("- Bleibt es danach noch {away} lang inaktiv, gilt es als abwesend.")
            },
            format!(
                "- Ihre Apps melden sich regelmäßig bei Ampel, damit Ampel weiß, dass sie noch \
                 angemeldet sind; der Abstand zwischen zwei Meldungen beträgt {heartbeat}."
            ),
        ],
    }
    .join("\n")
}

/// The sources whose facts expire by lifetime, in the order the page names them.
const EXPIRING: &[Source] = &[
    Source::Session,
    Source::Telephony,
    Source::Teams,
    Source::Meeting,
    Source::Location,
    Source::Manual,
];

fn lifetimes(lifetime: &Lifetime, lang: Lang) -> String {
    let mut lines = vec![match lang {
        Lang::En => "## How long information counts\n\n\
            Every source has to confirm what it reports from time to time; what it no longer \
            confirms expires:\n"
            .to_owned(),
        Lang::De => "## Wie lange Angaben gelten\n\n\
            Jede Quelle muss ihre Angaben von Zeit zu Zeit bestätigen; was sie nicht mehr \
            bestätigt, verfällt:\n"
            .to_owned(),
    }];
    for source in EXPIRING {
        let d = lifetime.of(*source).map(|d| duration_words(d, lang));
        let sentence = match lang {
            Lang::En => lifetime_en(*source, d.as_deref()),
            Lang::De => lifetime_de(*source, d.as_deref()),
        };
        lines.push(format!("- {sentence}"));
    }
    lines.push(match lang {
        Lang::En => {
            "- Calendar entries count from their planned start to their planned end.".to_owned()
        }
        Lang::De => "- Kalendereinträge gelten von ihrem geplanten Beginn bis zu ihrem geplanten \
            Ende."
            .to_owned(),
    });
    lines.join("\n")
}

/// How long facts of `source` count, `None` meaning until they are removed.
fn lifetime_en(source: Source, d: Option<&str>) -> String {
    match (source, d) {
        (Source::Session, Some(d)) => format!(
            "A device whose app stops reporting is signed out after {d}, together with any \
             status set on it."
        ),
        (Source::Session, None) => "A device stays signed in until its app signs out.".into(),
        (Source::Telephony, Some(d)) => {
            format!("A call the phone system never reports as ended is forgotten after {d}.")
        }
        (Source::Telephony, None) => "A call counts until the phone system reports its end.".into(),
        (Source::Teams, Some(d)) => {
            format!("Your Teams status counts for {d} after Teams last reported it.")
        }
        (Source::Teams, None) => "Your Teams status counts until Teams reports a new one.".into(),
        (Source::Meeting, Some(d)) => {
            format!("Taking part in an online meeting counts for at most {d} without news.")
        }
        (Source::Meeting, None) => {
            "Taking part in an online meeting counts until you leave.".into()
        }
        (Source::Location, Some(d)) => format!(
            "Where you work from (office, home or on the road) counts for {d} after it was last \
             reported."
        ),
        (Source::Location, None) => {
            "Where you work from counts until a new place is reported.".into()
        }
        (_, Some(d)) => format!(
            "A status you set by hand ends at the end time you chose; without an end time it \
             ends after {d}."
        ),
        (_, None) => "A status you set by hand ends at the end time you chose; without an end \
            time it stays until you clear it."
            .into(),
    }
}

/// How long facts of `source` count, `None` meaning until they are removed. German sentences
/// take durations in the accusative ("4 Stunden lang"), the case [`duration_words`] gives.
fn lifetime_de(source: Source, d: Option<&str>) -> String {
    match (source, d) {
        (Source::Session, Some(d)) => format!(
            "Ein Gerät, dessen App sich {d} lang nicht meldet, wird abgemeldet, samt einem \
             darauf eingestellten Status."
        ),
        (Source::Session, None) => "Ein Gerät bleibt angemeldet, bis seine App es abmeldet.".into(),
        (Source::Telephony, Some(d)) => format!(
            "Ein Telefonat, dessen Ende die Telefonanlage nicht meldet, gilt höchstens {d} lang."
        ),
        (Source::Telephony, None) => {
            "Ein Telefonat gilt, bis die Telefonanlage sein Ende meldet.".into()
        }
        (Source::Teams, Some(d)) => {
            format!("Ihr Teams-Status gilt nach der letzten Meldung von Teams noch {d} lang.")
        }
        (Source::Teams, None) => "Ihr Teams-Status gilt, bis Teams einen neuen meldet.".into(),
        (Source::Meeting, Some(d)) => format!(
            "Die Teilnahme an einer Online-Besprechung gilt ohne neue Meldung höchstens {d} lang."
        ),
        (Source::Meeting, None) => {
            "Die Teilnahme an einer Online-Besprechung gilt, bis Sie sie verlassen.".into()
        }
        (Source::Location, Some(d)) => format!(
            "Ihr Arbeitsort (Büro, Homeoffice oder unterwegs) gilt nach der letzten Meldung \
             noch {d} lang."
        ),
        (Source::Location, None) => "Ihr Arbeitsort gilt, bis ein neuer gemeldet wird.".into(),
        (_, Some(d)) => format!(
            "Ein von Hand gesetzter Status endet zu der Zeit, die Sie gewählt haben; ohne \
             Endzeit gilt er {d} lang."
        ),
        (_, None) => "Ein von Hand gesetzter Status endet zu der Zeit, die Sie gewählt haben; \
            ohne Endzeit bleibt er, bis Sie ihn zurücksetzen."
            .into(),
    }
}

fn calendar(calendar: &CalendarPolicy, lang: Lang) -> String {
    let tentative = calendar.tentative_is_busy;
    match lang {
        Lang::En => [
            "## Your calendar\n",
            if tentative {
                "- Meetings you accepted only tentatively make you busy, like any other meeting."
            } else {
                "- Meetings you accepted only tentatively do not make you busy."
            },
            "- Entries shown as free or working elsewhere, cancelled meetings and entries that \
             do not block time never make you busy.",
            "- The subject of a meeting is shown only to those allowed to see it (see below), \
             and never for a private appointment.",
        ],
        Lang::De => [
            "## Ihr Kalender\n",
            if tentative {
                "- Auch wegen Besprechungen, die Sie nur mit Vorbehalt zugesagt haben, werden Sie \
                 als „Beschäftigt“ angezeigt."
            } else {
                "- Wegen Besprechungen, die Sie nur mit Vorbehalt zugesagt haben, werden Sie nicht \
                 als „Beschäftigt“ angezeigt."
            },
            "- Einträge, die als „Frei“ oder „Woanders tätig“ markiert sind, abgesagte \
             Besprechungen und Einträge, die keine Zeit blockieren, lassen Sie nie als \
             „Beschäftigt“ erscheinen.",
            "- Der Betreff einer Besprechung wird nur denen gezeigt, die ihn sehen dürfen (siehe \
             unten), und bei privaten Terminen nie.",
        ],
    }
    .join("\n")
}

fn visibility(visibility: &VisibilityPolicy, lang: Lang) -> String {
    let see = |grants: &[Grant]| grants_words(grants, lang);
    let (delegate, team, colleague, external) = (
        see(&visibility.delegate),
        see(&visibility.team),
        see(&visibility.colleague),
        see(&visibility.external),
    );
    match lang {
        Lang::En => [
            "## Who sees what\n\n\
             You yourself and the administrators see everything. What others see depends on \
             how they relate to you:\n"
                .to_owned(),
            format!(
                "- **Your delegates** (people you named, such as an assistant) see {delegate}."
            ),
            format!("- **Members of your groups** see {team}."),
            format!("- **Other colleagues in your organisation** see {colleague}."),
            format!("- **People from other organisations** on this server see {external}."),
            "- **People you have blocked** see you as offline and nothing else.".to_owned(),
        ],
        Lang::De => [
            "## Wer was sieht\n\n\
             Sie selbst und die Administratorinnen und Administratoren sehen alles. Was andere sehen, hängt davon ab, \
             in welcher Beziehung sie zu Ihnen stehen:\n"
                .to_owned(),
            format!(
                "- **Ihre Stellvertretungen** (Personen, die Sie benannt haben, etwa eine \
                 Assistenz) sehen {delegate}."
            ),
            format!("- **Mitglieder Ihrer Gruppen** sehen {team}."),
            format!("- **Alle anderen in Ihrer Organisation** sehen {colleague}."),
            format!(
                "- **Personen aus anderen Organisationen** auf diesem Server sehen {external}."
            ),
            "- **Personen, die Sie blockiert haben,** sehen Sie als „Offline“ und sonst nichts."
                .to_owned(),
        ],
    }
    .join("\n")
}

/// What a list of grants lets a viewer see, as the object of "see". Without the availability a
/// viewer sees the colour and nothing else, whatever else is granted ([`crate::visibility`]).
fn grants_words(grants: &[Grant], lang: Lang) -> String {
    if !grants.contains(&Grant::Availability) {
        return match lang {
            Lang::En => "only the colour of your status (green, yellow, red or grey)",
            Lang::De => "nur die Farbe Ihres Status (grün, gelb, rot oder grau)",
        }
        .to_owned();
    }
    let shown: Vec<&str> =
        Grant::ALL.iter().filter(|g| grants.contains(g)).map(|g| grant_words(*g, lang)).collect();
    join(&shown, joiners(lang).and)
}

fn grant_words(grant: Grant, lang: Lang) -> &'static str {
    let [en, de] = match grant {
        Grant::Availability => ["your status with its colour", "Ihren Status mit seiner Farbe"],
        Grant::Activity => [
            "what you are doing (for example in a call)",
            "was Sie gerade tun (etwa „im Gespräch“)",
        ],
        Grant::Note => ["your note", "Ihre Notiz"],
        Grant::Until => [
            "until when your status is expected to last",
            "bis wann Ihr Status voraussichtlich gilt",
        ],
        Grant::OutOfOffice => ["whether you are out of office", "ob Sie außer Haus sind"],
        Grant::Idle => ["whether you are idle", "ob Sie inaktiv sind"],
        Grant::LastActive => ["when you were last active", "wann Sie zuletzt aktiv waren"],
        Grant::Location => [
            "where you work from (office, home or on the road)",
            "wo Sie arbeiten (Büro, Homeoffice oder unterwegs)",
        ],
        Grant::Subject => [
            "the subjects of your meetings that are not private",
            "die Betreffe Ihrer nicht privaten Besprechungen",
        ],
        Grant::Sources => {
            ["which systems your status comes from", "aus welchen Systemen Ihr Status stammt"]
        }
    };
    match lang {
        Lang::En => en,
        Lang::De => de,
    }
}

fn history(history: &HistoryPolicy, lang: Lang) -> String {
    let days = count_words(i64::from(history.retention_days), &DAY, lang);
    match lang {
        Lang::En => format!(
            "## History\n\nAmpel keeps the history of your status changes for {days} and deletes \
             it after that."
        ),
        Lang::De => format!(
            "## Verlauf\n\nAmpel bewahrt den Verlauf Ihrer Statusänderungen {days} lang auf und \
             löscht ihn danach."
        ),
    }
}

/// A unit of time with its English and German names, singular and plural.
struct Unit {
    secs: i64,
    en: [&'static str; 2],
    de: [&'static str; 2],
}

const DAY: Unit = Unit { secs: 86_400, en: ["day", "days"], de: ["Tag", "Tage"] };

/// Largest first: a duration is told in the largest unit that measures it exactly, so that 90
/// seconds stay "90 seconds" instead of becoming "1 minute and 30 seconds".
const UNITS: [Unit; 4] = [
    DAY,
    Unit { secs: 3600, en: ["hour", "hours"], de: ["Stunde", "Stunden"] },
    Unit { secs: 60, en: ["minute", "minutes"], de: ["Minute", "Minuten"] },
    Unit { secs: 1, en: ["second", "seconds"], de: ["Sekunde", "Sekunden"] },
];

/// A duration in words: "5 minutes", "1 Stunde". The German form is the nominative and
/// accusative plural, which is why German sentences use it with "lang" and never after "nach".
fn duration_words(d: Duration, lang: Lang) -> String {
    // Policy durations are whole seconds in practice; a fraction is dropped rather than spoken.
    let secs = d.0.as_secs();
    let unit = UNITS.iter().find(|u| secs >= u.secs && secs % u.secs == 0).unwrap_or(&UNITS[3]);
    count_words(secs / unit.secs, unit, lang)
}

fn count_words(n: i64, unit: &Unit, lang: Lang) -> String {
    let [one, many] = match lang {
        Lang::En => unit.en,
        Lang::De => unit.de,
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn the_default_page_in_english() {
        let page = render(&Policy::default(), Lang::En);
        expect![[r#"
            # How Ampel shows your presence

            Your presence (whether colleagues can reach you right now) is personal data. Ampel gathers what your devices, the phone system, your calendar and Microsoft Teams report about you, combines these signals under one company-wide policy, and shows each person only what this policy allows them to see. This page describes the policy in force. You can ask Ampel at any time why you are shown the way you are: it lists the signals it considered and the rule that decided.

            ## How your status is decided

            Ampel goes through the following rules from top to bottom. The first rule that applies decides how you are shown.

            1. When you have chosen to appear offline, you are shown as offline — this beats every other rule.
            2. When you have set your status to do not disturb, you are shown as do not disturb — even if you are in a call or your calendar shows a meeting, unless you have chosen to appear offline.
            3. When you are in a call, you are shown as busy (in a call), whether on the phone system or in Teams — even if you have set a status by hand or your calendar shows a meeting, unless you have chosen to appear offline or you have set your status to do not disturb.
            4. When you present in an online meeting, you are shown as do not disturb (presenting) — even if you have set a status by hand or your calendar shows a meeting, unless you have chosen to appear offline, you have set your status to do not disturb or you are in a call.
            5. When you have set a status by hand, you are shown with that status — even if your calendar shows a meeting or Teams reports a status for you.
            6. When you take part in an online meeting, you are shown as busy (in a meeting) — even if your calendar shows a meeting or Teams reports a status for you.
            7. When you have set busy or do not disturb on one of your devices, you are shown with that status while the device is signed in — even if your calendar shows a meeting or Teams reports a status for you.
            8. When your calendar shows you out of office, you are shown as away (out of office) — even if your calendar shows a meeting or Teams reports a status for you.
            9. When your calendar shows a meeting, you are shown as busy (in a meeting) until its planned end — even if Teams reports a status for you or you use one of your devices.
            10. When Teams reports a status for you, you are shown with your Teams status — even if you use one of your devices.
            11. When you use one of your devices, you are shown as available (marked as inactive once all your devices are idle, and shown as away after a longer break).

            When none of these rules applies, you are shown as offline, for example when no device is signed in and no other source reports anything about you.

            ## Timing

            - A device you have not used for 5 minutes counts as idle: you stay available, marked as inactive.
            - A device that then stays idle for 10 minutes longer counts as away.
            - Your apps report to Ampel regularly so that it knows they are still signed in; the time between two reports is 1 minute.

            ## How long information counts

            Every source has to confirm what it reports from time to time; what it no longer confirms expires:

            - A device whose app stops reporting is signed out after 1 hour, together with any status set on it.
            - A call the phone system never reports as ended is forgotten after 4 hours.
            - Your Teams status counts for 1 hour after Teams last reported it.
            - Taking part in an online meeting counts for at most 4 hours without news.
            - Where you work from (office, home or on the road) counts for 12 hours after it was last reported.
            - A status you set by hand ends at the end time you chose; without an end time it stays until you clear it.
            - Calendar entries count from their planned start to their planned end.

            ## Your calendar

            - Meetings you accepted only tentatively do not make you busy.
            - Entries shown as free or working elsewhere, cancelled meetings and entries that do not block time never make you busy.
            - The subject of a meeting is shown only to those allowed to see it (see below), and never for a private appointment.

            ## Who sees what

            You yourself and the administrators see everything. What others see depends on how they relate to you:

            - **Your delegates** (people you named, such as an assistant) see your status with its colour, what you are doing (for example in a call), your note, until when your status is expected to last, whether you are out of office, whether you are idle, when you were last active, where you work from (office, home or on the road), the subjects of your meetings that are not private and which systems your status comes from.
            - **Members of your groups** see your status with its colour, what you are doing (for example in a call), your note, until when your status is expected to last, whether you are out of office, whether you are idle, when you were last active and where you work from (office, home or on the road).
            - **Other colleagues in your organisation** see your status with its colour, what you are doing (for example in a call), your note, until when your status is expected to last, whether you are out of office, whether you are idle and when you were last active.
            - **People from other organisations** on this server see your status with its colour.
            - **People you have blocked** see you as offline and nothing else.

            ## Your calls

            Ampel also decides what happens to calls to you. It goes through the following rules from top to bottom; the first rule that applies decides.

            1. When you are in a call (phone system or Teams): The call is forwarded to your busy target — or, if not set, the caller hears busy.
            2. When you present in an online meeting: The call goes to your voicemail.
            3. When you have set do not disturb, for callers on the VIP list or emergency callers: Your phones ring.
            4. When you have set do not disturb: The call goes to your voicemail.
            5. When you are out of office, for external callers: The caller first hears until when this lasts; then the call is forwarded to your absence target — or, if not set, the call goes to your voicemail.
            6. When you are out of office: The call is forwarded to your absence target — or, if not set, your phones ring.
            7. When your calendar shows a meeting or you are in an online meeting, for external callers: The caller first hears until when this lasts; then the call is forwarded to your absence target — or, if not set, your phones ring.
            8. When your calendar shows a meeting or you are in an online meeting: The call is forwarded to your absence target — or, if not set, your phones ring.

            A call that no rule covers rings your phones. Nothing is announced before your phones ring. A caller who hears an announcement learns only your name and until when your current situation lasts, never the subject or place of a meeting. You set your absence target, busy target, mobile number and your own caller lists yourself (routing settings).

            ## History

            Ampel keeps the history of your status changes for 30 days and deletes it after that.
        "#]].assert_eq(&page);
    }

    #[test]
    fn the_default_page_in_german() {
        let page = render(&Policy::default(), Lang::De);
        expect![[r#"
            # Wie Ampel Ihre Präsenz anzeigt

            Ihre Präsenz (also ob Kolleginnen und Kollegen Sie gerade erreichen können) gehört zu Ihren personenbezogenen Daten. Ampel sammelt, was Ihre Geräte, die Telefonanlage, Ihr Kalender und Microsoft Teams über Sie melden, führt diese Angaben nach einer unternehmensweiten Richtlinie zusammen und zeigt jeder Person nur, was diese Richtlinie ihr erlaubt. Diese Seite beschreibt die geltende Richtlinie. Sie können Ampel jederzeit fragen, warum Sie so angezeigt werden, wie Sie angezeigt werden: Ampel nennt dann die berücksichtigten Angaben und die Regel, die entschieden hat.

            ## Wie Ihr Status zustande kommt

            Ampel prüft die folgenden Regeln von oben nach unten. Die erste Regel, die zutrifft, entscheidet, wie Sie angezeigt werden.

            1. Wenn Sie „Als offline anzeigen“ gewählt haben, werden Sie als „Offline“ angezeigt – diese Regel geht allen anderen vor.
            2. Wenn Sie „Nicht stören“ eingestellt haben, werden Sie als „Nicht stören“ angezeigt – auch wenn Sie telefonieren oder in Ihrem Kalender gerade eine Besprechung eingetragen ist, außer wenn Sie „Als offline anzeigen“ gewählt haben.
            3. Wenn Sie telefonieren, werden Sie als „Beschäftigt (im Gespräch)“ angezeigt, ob über die Telefonanlage oder in Teams – auch wenn Sie Ihren Status von Hand gesetzt haben oder in Ihrem Kalender gerade eine Besprechung eingetragen ist, außer wenn Sie „Als offline anzeigen“ gewählt haben oder Sie „Nicht stören“ eingestellt haben.
            4. Wenn Sie in einer Online-Besprechung präsentieren, werden Sie als „Nicht stören (Präsentation)“ angezeigt – auch wenn Sie Ihren Status von Hand gesetzt haben oder in Ihrem Kalender gerade eine Besprechung eingetragen ist, außer wenn Sie „Als offline anzeigen“ gewählt haben, Sie „Nicht stören“ eingestellt haben oder Sie telefonieren.
            5. Wenn Sie Ihren Status von Hand gesetzt haben, werden Sie mit diesem Status angezeigt – auch wenn in Ihrem Kalender gerade eine Besprechung eingetragen ist oder Teams einen Status für Sie meldet.
            6. Wenn Sie an einer Online-Besprechung teilnehmen, werden Sie als „Beschäftigt (in einer Besprechung)“ angezeigt – auch wenn in Ihrem Kalender gerade eine Besprechung eingetragen ist oder Teams einen Status für Sie meldet.
            7. Wenn Sie auf einem Ihrer Geräte „Beschäftigt“ oder „Nicht stören“ eingestellt haben, werden Sie mit diesem Status angezeigt, solange das Gerät angemeldet ist – auch wenn in Ihrem Kalender gerade eine Besprechung eingetragen ist oder Teams einen Status für Sie meldet.
            8. Wenn in Ihrem Kalender eine Abwesenheit eingetragen ist, werden Sie als „Abwesend (außer Haus)“ angezeigt – auch wenn in Ihrem Kalender gerade eine Besprechung eingetragen ist oder Teams einen Status für Sie meldet.
            9. Wenn in Ihrem Kalender gerade eine Besprechung eingetragen ist, werden Sie bis zu deren geplantem Ende als „Beschäftigt (in einer Besprechung)“ angezeigt – auch wenn Teams einen Status für Sie meldet oder Sie eines Ihrer Geräte benutzen.
            10. Wenn Teams einen Status für Sie meldet, werden Sie mit Ihrem Teams-Status angezeigt – auch wenn Sie eines Ihrer Geräte benutzen.
            11. Wenn Sie eines Ihrer Geräte benutzen, werden Sie als „Verfügbar“ angezeigt (mit dem Hinweis „inaktiv“, sobald alle Ihre Geräte inaktiv sind, und nach einer längeren Pause als „Abwesend“).

            Trifft keine dieser Regeln zu, werden Sie als „Offline“ angezeigt, etwa wenn kein Gerät angemeldet ist und keine andere Quelle etwas über Sie meldet.

            ## Zeiten

            - Ein Gerät, das Sie 5 Minuten lang nicht benutzt haben, gilt als inaktiv: Sie bleiben „Verfügbar“ und werden als inaktiv markiert.
            - Bleibt es danach noch 10 Minuten lang inaktiv, gilt es als abwesend.
            - Ihre Apps melden sich regelmäßig bei Ampel, damit Ampel weiß, dass sie noch angemeldet sind; der Abstand zwischen zwei Meldungen beträgt 1 Minute.

            ## Wie lange Angaben gelten

            Jede Quelle muss ihre Angaben von Zeit zu Zeit bestätigen; was sie nicht mehr bestätigt, verfällt:

            - Ein Gerät, dessen App sich 1 Stunde lang nicht meldet, wird abgemeldet, samt einem darauf eingestellten Status.
            - Ein Telefonat, dessen Ende die Telefonanlage nicht meldet, gilt höchstens 4 Stunden lang.
            - Ihr Teams-Status gilt nach der letzten Meldung von Teams noch 1 Stunde lang.
            - Die Teilnahme an einer Online-Besprechung gilt ohne neue Meldung höchstens 4 Stunden lang.
            - Ihr Arbeitsort (Büro, Homeoffice oder unterwegs) gilt nach der letzten Meldung noch 12 Stunden lang.
            - Ein von Hand gesetzter Status endet zu der Zeit, die Sie gewählt haben; ohne Endzeit bleibt er, bis Sie ihn zurücksetzen.
            - Kalendereinträge gelten von ihrem geplanten Beginn bis zu ihrem geplanten Ende.

            ## Ihr Kalender

            - Wegen Besprechungen, die Sie nur mit Vorbehalt zugesagt haben, werden Sie nicht als „Beschäftigt“ angezeigt.
            - Einträge, die als „Frei“ oder „Woanders tätig“ markiert sind, abgesagte Besprechungen und Einträge, die keine Zeit blockieren, lassen Sie nie als „Beschäftigt“ erscheinen.
            - Der Betreff einer Besprechung wird nur denen gezeigt, die ihn sehen dürfen (siehe unten), und bei privaten Terminen nie.

            ## Wer was sieht

            Sie selbst und die Administratorinnen und Administratoren sehen alles. Was andere sehen, hängt davon ab, in welcher Beziehung sie zu Ihnen stehen:

            - **Ihre Stellvertretungen** (Personen, die Sie benannt haben, etwa eine Assistenz) sehen Ihren Status mit seiner Farbe, was Sie gerade tun (etwa „im Gespräch“), Ihre Notiz, bis wann Ihr Status voraussichtlich gilt, ob Sie außer Haus sind, ob Sie inaktiv sind, wann Sie zuletzt aktiv waren, wo Sie arbeiten (Büro, Homeoffice oder unterwegs), die Betreffe Ihrer nicht privaten Besprechungen und aus welchen Systemen Ihr Status stammt.
            - **Mitglieder Ihrer Gruppen** sehen Ihren Status mit seiner Farbe, was Sie gerade tun (etwa „im Gespräch“), Ihre Notiz, bis wann Ihr Status voraussichtlich gilt, ob Sie außer Haus sind, ob Sie inaktiv sind, wann Sie zuletzt aktiv waren und wo Sie arbeiten (Büro, Homeoffice oder unterwegs).
            - **Alle anderen in Ihrer Organisation** sehen Ihren Status mit seiner Farbe, was Sie gerade tun (etwa „im Gespräch“), Ihre Notiz, bis wann Ihr Status voraussichtlich gilt, ob Sie außer Haus sind, ob Sie inaktiv sind und wann Sie zuletzt aktiv waren.
            - **Personen aus anderen Organisationen** auf diesem Server sehen Ihren Status mit seiner Farbe.
            - **Personen, die Sie blockiert haben,** sehen Sie als „Offline“ und sonst nichts.

            ## Ihre Anrufe

            Ampel entscheidet auch, was mit Anrufen an Sie geschieht. Es geht die folgenden Regeln von oben nach unten durch; die erste Regel, die zutrifft, entscheidet.

            1. Wenn Sie telefonieren (Telefonanlage oder Teams): Der Anruf wird an Ihr Besetztziel weitergeleitet – oder, falls nicht festgelegt, hören Anrufende das Besetztzeichen.
            2. Wenn Sie in einer Online-Besprechung präsentieren: Der Anruf geht auf Ihre Mailbox.
            3. Wenn Sie „Nicht stören“ eingestellt haben, für Anrufende auf der VIP-Liste oder Notrufe: Ihre Telefone klingeln.
            4. Wenn Sie „Nicht stören“ eingestellt haben: Der Anruf geht auf Ihre Mailbox.
            5. Wenn Sie außer Haus sind, für externe Anrufende: Anrufende hören zuerst, bis wann das dauert; dann wird der Anruf an Ihr Abwesenheitsziel weitergeleitet – oder, falls nicht festgelegt, geht der Anruf auf Ihre Mailbox.
            6. Wenn Sie außer Haus sind: Der Anruf wird an Ihr Abwesenheitsziel weitergeleitet – oder, falls nicht festgelegt, klingeln Ihre Telefone.
            7. Wenn Ihr Kalender eine Besprechung zeigt oder Sie in einer Online-Besprechung sind, für externe Anrufende: Anrufende hören zuerst, bis wann das dauert; dann wird der Anruf an Ihr Abwesenheitsziel weitergeleitet – oder, falls nicht festgelegt, klingeln Ihre Telefone.
            8. Wenn Ihr Kalender eine Besprechung zeigt oder Sie in einer Online-Besprechung sind: Der Anruf wird an Ihr Abwesenheitsziel weitergeleitet – oder, falls nicht festgelegt, klingeln Ihre Telefone.

            Ein Anruf, für den keine Regel zutrifft, lässt Ihre Telefone klingeln. Bevor Ihre Telefone klingeln, wird nichts angesagt. Wer eine Ansage hört, erfährt nur Ihren Namen und bis wann Ihre derzeitige Lage dauert, niemals Betreff oder Ort einer Besprechung. Ihr Abwesenheitsziel, Ihr Besetztziel, Ihre Mobilnummer und Ihre eigenen Anruferlisten legen Sie selbst fest (Anrufeinstellungen).

            ## Verlauf

            Ampel bewahrt den Verlauf Ihrer Statusänderungen 30 Tage lang auf und löscht ihn danach.
        "#]].assert_eq(&page);
    }

    fn line_about<'a>(page: &'a str, start: &str) -> &'a str {
        page.lines().find(|l| l.contains(start)).unwrap()
    }

    #[test]
    fn the_order_of_the_precedence_list_changes_the_words() {
        let moved = Policy::from_toml(
            "precedence = [\"appear-offline\", \"do-not-disturb\", \"manual\", \"call\", \
             \"presenting\", \"meeting\", \"calendar-busy\", \"devices\"]\n",
        )
        .unwrap();
        let page = render(&moved, Lang::En);
        let call = line_about(&page, "When you are in a call");
        let default = render(&Policy::default(), Lang::En);
        assert_ne!(call, line_about(&default, "When you are in a call"));
        expect!["4. When you are in a call, you are shown as busy (in a call), whether on the phone system or in Teams — even if your calendar shows a meeting or you use one of your devices, unless you have chosen to appear offline, you have set your status to do not disturb or you have set a status by hand."].assert_eq(call);
        expect!["3. When you have set a status by hand, you are shown with that status — even if you are in a call or your calendar shows a meeting, unless you have chosen to appear offline or you have set your status to do not disturb."].assert_eq(line_about(&page, "When you have set a status by hand"));
        assert!(page.contains("never decide your status:\n- a status set on a device\n"), "{page}");
    }

    #[test]
    fn languages_are_read_in_any_case() {
        assert_eq!("DE".parse::<Lang>(), Ok(Lang::De));
        assert_eq!("en".parse::<Lang>(), Ok(Lang::En));
        let err = "fr".parse::<Lang>().unwrap_err();
        assert_eq!(err.to_string(), "unknown value `fr`, expected one of de, en");
    }

    #[test]
    fn durations_are_told_in_the_largest_exact_unit() {
        let words = |secs, lang| duration_words(Duration::from_secs(secs), lang);
        assert_eq!(words(90, Lang::En), "90 seconds");
        assert_eq!(words(60, Lang::En), "1 minute");
        assert_eq!(words(5400, Lang::De), "90 Minuten");
        assert_eq!(words(3600, Lang::De), "1 Stunde");
        assert_eq!(words(2 * 86_400, Lang::De), "2 Tage");
        assert_eq!(words(0, Lang::En), "0 seconds");
    }

    #[test]
    fn a_viewer_without_the_availability_sees_the_colour_only() {
        let words = grants_words(&[Grant::Note, Grant::Activity], Lang::En);
        assert_eq!(words, "only the colour of your status (green, yellow, red or grey)");
    }
}
