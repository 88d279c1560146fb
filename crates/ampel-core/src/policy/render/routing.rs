//! The routing rules in plain language: one numbered sentence per rule, in the order they are
//! tried, saying when the rule applies and what happens to the call.

use super::{Lang, join};
use crate::routing::rules::{Action, Day, Hours, RouteRule, RoutingPolicy, Situation, Target};

/// The section about calls.
pub(super) fn section(routing: &RoutingPolicy, lang: Lang) -> String {
    let (title, intro, none, privacy) = match lang {
        Lang::En => (
            "## Your calls",
            "Ampel also decides what happens to calls to you. It goes through the following \
             rules from top to bottom; the first rule that applies decides.",
            "A call that no rule covers rings your phones. Nothing is announced before your \
             phones ring.",
            "A caller who hears an announcement learns only your name and until when your \
             current situation lasts, never the subject or place of a meeting. You set your \
             absence target, busy target, mobile number and your own caller lists yourself \
             (routing settings).",
        ),
        Lang::De => (
            "## Ihre Anrufe",
            "Ampel entscheidet auch, was mit Anrufen an Sie geschieht. Es geht die folgenden \
             Regeln von oben nach unten durch; die erste Regel, die zutrifft, entscheidet.",
            "Ein Anruf, für den keine Regel zutrifft, lässt Ihre Telefone klingeln. Bevor Ihre \
             Telefone klingeln, wird nichts angesagt.",
            "Wer eine Ansage hört, erfährt nur Ihren Namen und bis wann Ihre derzeitige Lage \
             dauert, niemals Betreff oder Ort einer Besprechung. Ihr Abwesenheitsziel, Ihr \
             Besetztziel, Ihre Mobilnummer und Ihre eigenen Anruferlisten legen Sie selbst fest \
             (Anrufeinstellungen).",
        ),
    };
    let mut lines = vec![title.to_owned(), String::new(), intro.to_owned(), String::new()];
    for (i, rule) in routing.rules.iter().enumerate() {
        lines.push(format!("{}. {}", i + 1, sentence(rule, lang)));
    }
    if !routing.rules.is_empty() {
        lines.push(String::new());
    }
    lines.push(format!("{none} {privacy}"));
    lines.join("\n")
}

/// "When you are in a call, for external callers: the call goes to ..."
fn sentence(rule: &RouteRule, lang: Lang) -> String {
    let mut conditions = Vec::new();
    let situations: Vec<&str> = rule.when.iter().map(|s| situation(*s, lang)).collect();
    let or = if lang == Lang::En { "or" } else { "oder" };
    let and = if lang == Lang::En { "and" } else { "und" };
    let (when, always) = if lang == Lang::En { ("When", "Always") } else { ("Wenn", "Immer") };
    conditions.push(if situations.is_empty() {
        always.to_owned()
    } else {
        format!("{when} {}", join(&situations, or))
    });
    if !rule.caller.is_empty() {
        let callers: Vec<String> = rule.caller.iter().map(|c| caller(c.get_ref(), lang)).collect();
        let callers: Vec<&str> = callers.iter().map(String::as_str).collect();
        let prefix = if lang == Lang::En { "for" } else { "für" };
        conditions.push(format!("{prefix} {}", join(&callers, or)));
    }
    if let Some(hours) = rule.hours {
        conditions.push(hours_words(hours, lang));
    }
    if !rule.days.is_empty() {
        let days: Vec<&str> = rule.days.iter().map(|d| day(*d, lang)).collect();
        let prefix = if lang == Lang::En { "on " } else { "" };
        conditions.push(format!("{prefix}{}", join(&days, and)));
    }
    format!("{}: {}", conditions.join(", "), outcome(rule, lang))
}

/// What happens, with the fallback and the announcement.
fn outcome(rule: &RouteRule, lang: Lang) -> String {
    // German puts the verb second after "dann": "dann wird der Anruf weitergeleitet".
    let main = |inverted| match (&rule.action, &rule.target) {
        (Action::Forward, Some(target)) => forward(target.get_ref(), lang, inverted),
        (action, _) => action_words(*action, &rule.devices, lang, inverted),
    };
    let with_fallback = |inverted| match rule.fallback {
        Some(fallback) => {
            let main = main(inverted);
            let otherwise = action_words(fallback, &rule.devices, lang, true);
            match lang {
                Lang::En => format!("{main} — or, if not set, {otherwise}"),
                Lang::De => format!("{main} – oder, falls nicht festgelegt, {otherwise}"),
            }
        }
        None => main(inverted),
    };
    let text = match (rule.announce, lang) {
        (true, Lang::En) => {
            format!("the caller first hears until when this lasts; then {}", with_fallback(true))
        }
        (true, Lang::De) => {
            format!("Anrufende hören zuerst, bis wann das dauert; dann {}", with_fallback(true))
        }
        (false, _) => with_fallback(false),
    };
    capitalise(&text) + "."
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What happens, as a clause; `inverted` puts the German verb first, as it stands after a
/// fronted clause ("falls nicht festgelegt, klingeln Ihre Telefone").
fn action_words(action: Action, devices: &[String], lang: Lang, inverted: bool) -> String {
    if inverted && lang == Lang::De {
        return match action {
            Action::Ring if !devices.is_empty() => {
                format!("klingeln nur diese Geräte: {}", join(&as_strs(devices), "und"))
            }
            Action::Ring => "klingeln Ihre Telefone".into(),
            Action::Busy => "hören Anrufende das Besetztzeichen".into(),
            Action::Voicemail | Action::Forward => "geht der Anruf auf Ihre Mailbox".into(),
        };
    }
    match (action, lang) {
        (Action::Ring, Lang::En) if !devices.is_empty() => {
            format!("only these devices ring: {}", join(&as_strs(devices), "and"))
        }
        (Action::Ring, Lang::De) if !devices.is_empty() => {
            format!("nur diese Geräte klingeln: {}", join(&as_strs(devices), "und"))
        }
        (Action::Ring, Lang::En) => "your phones ring".into(),
        (Action::Ring, Lang::De) => "Ihre Telefone klingeln".into(),
        (Action::Busy, Lang::En) => "the caller hears busy".into(),
        (Action::Busy, Lang::De) => "Anrufende hören das Besetztzeichen".into(),
        (Action::Voicemail | Action::Forward, Lang::En) => "the call goes to your voicemail".into(),
        (Action::Voicemail | Action::Forward, Lang::De) => "der Anruf geht auf Ihre Mailbox".into(),
    }
}

fn as_strs(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

fn forward(target: &Target, lang: Lang, inverted: bool) -> String {
    let to = match (target, lang) {
        (Target::BusyTarget, Lang::En) => "your busy target".to_owned(),
        (Target::BusyTarget, Lang::De) => "Ihr Besetztziel".to_owned(),
        (Target::AbsenceTarget, Lang::En) => "your absence target".to_owned(),
        (Target::AbsenceTarget, Lang::De) => "Ihr Abwesenheitsziel".to_owned(),
        (Target::Mobile, Lang::En) => "your mobile number".to_owned(),
        (Target::Mobile, Lang::De) => "Ihre Mobilnummer".to_owned(),
        (Target::Voicemail, _) => return action_words(Action::Voicemail, &[], lang, inverted),
        (Target::User(id), _) => id.clone(),
        (Target::Team(team), Lang::En) => format!("the team {team}"),
        (Target::Team(team), Lang::De) => format!("das Team {team}"),
        (Target::Tel(number), _) => number.clone(),
    };
    match (lang, inverted) {
        (Lang::En, _) => format!("the call is forwarded to {to}"),
        (Lang::De, false) => format!("der Anruf wird an {to} weitergeleitet"),
        (Lang::De, true) => format!("wird der Anruf an {to} weitergeleitet"),
    }
}

fn situation(situation: Situation, lang: Lang) -> &'static str {
    use Situation::*;
    match (situation, lang) {
        (InACall, Lang::En) => "you are in a call (phone system or Teams)",
        (InACall, Lang::De) => "Sie telefonieren (Telefonanlage oder Teams)",
        (Presenting, Lang::En) => "you present in an online meeting",
        (Presenting, Lang::De) => "Sie in einer Online-Besprechung präsentieren",
        (DoNotDisturb, Lang::En) => "you have set do not disturb",
        (DoNotDisturb, Lang::De) => "Sie „Nicht stören“ eingestellt haben",
        (OutOfOffice, Lang::En) => "you are out of office",
        (OutOfOffice, Lang::De) => "Sie außer Haus sind",
        (InAMeeting, Lang::En) => "your calendar shows a meeting or you are in an online meeting",
        (InAMeeting, Lang::De) => {
            "Ihr Kalender eine Besprechung zeigt oder Sie in einer Online-Besprechung sind"
        }
        (Busy, Lang::En) => "you are shown as busy",
        (Busy, Lang::De) => "Sie als beschäftigt angezeigt werden",
        (Away, Lang::En) => "you are shown as away",
        (Away, Lang::De) => "Sie als abwesend angezeigt werden",
        (Offline, Lang::En) => "you are shown as offline",
        (Offline, Lang::De) => "Sie als offline angezeigt werden",
        (Available, Lang::En) => "you are shown as available",
        (Available, Lang::De) => "Sie als verfügbar angezeigt werden",
    }
}

fn caller(word: &str, lang: Lang) -> String {
    match (word, lang) {
        ("internal", Lang::En) => "colleagues".into(),
        ("internal", Lang::De) => "Kolleginnen und Kollegen".into(),
        ("external", Lang::En) => "external callers".into(),
        ("external", Lang::De) => "externe Anrufende".into(),
        ("vip", Lang::En) => "callers on the VIP list".into(),
        ("vip", Lang::De) => "Anrufende auf der VIP-Liste".into(),
        ("emergency", Lang::En) => "emergency callers".into(),
        ("emergency", Lang::De) => "Notrufe".into(),
        (list, Lang::En) => format!("callers on the list “{list}”"),
        (list, Lang::De) => format!("Anrufende auf der Liste „{list}“"),
    }
}

fn hours_words(hours: Hours, lang: Lang) -> String {
    let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    match lang {
        Lang::En => format!("between {} and {}", hm(hours.start), hm(hours.end)),
        Lang::De => format!("zwischen {} und {} Uhr", hm(hours.start), hm(hours.end)),
    }
}

fn day(day: Day, lang: Lang) -> &'static str {
    const EN: [&str; 7] =
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    const DE: [&str; 7] =
        ["montags", "dienstags", "mittwochs", "donnerstags", "freitags", "samstags", "sonntags"];
    let i = day as usize;
    match lang {
        Lang::En => EN[i],
        Lang::De => DE[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    #[test]
    fn rules_with_hours_days_lists_and_devices_read_as_sentences() {
        let policy = Policy::from_toml(
            r#"
            [routing.lists]
            board = ["+4930123456"]
            [routing.teams]
            sales = "sip:sales@example.com"
            [[routing.rule]]
            name = "weekend"
            caller = ["board", "internal"]
            hours = "18:00-08:00"
            days = ["sat", "sun"]
            action = "forward"
            target = "team:sales"
            [[routing.rule]]
            name = "desk"
            when = ["available"]
            action = "ring"
            devices = ["Desk phone"]
            "#,
        )
        .unwrap();
        let en = section(&policy.routing, Lang::En);
        assert!(en.contains("1. Always, for callers on the list “board” or colleagues, between 18:00 and 08:00, on Saturday and Sunday: The call is forwarded to the team sales."), "{en}");
        assert!(
            en.contains("2. When you are shown as available: Only these devices ring: Desk phone."),
            "{en}"
        );
        let de = section(&policy.routing, Lang::De);
        assert!(de.contains("1. Immer, für Anrufende auf der Liste „board“ oder Kolleginnen und Kollegen, zwischen 18:00 und 08:00 Uhr, samstags und sonntags: Der Anruf wird an das Team sales weitergeleitet."), "{de}");
    }
}
