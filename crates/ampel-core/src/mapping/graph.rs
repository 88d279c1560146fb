//! Microsoft Graph presence in both directions: a Teams presence body becomes a [`TeamsState`],
//! and an Ampel [`Presence`] becomes Graph's availability and activity words for the
//! Graph-shaped facade.
//!
//! Graph has spelled its values in PascalCase (`InACall`) and, in newer documents, camelCase
//! (`inACall`), so every value is read without regard to case. Graph also adds activities over
//! time; one Ampel does not know falls back to the plain activity of the availability and is kept
//! as spelled in [`TeamsState::raw_activity`], so that nothing is lost and nothing is guessed.
//! Fetching presence and subscribing to change notifications is the connector's business, not
//! this module's.

use serde::{Deserialize, Serialize};

use crate::fact::TeamsState;
use crate::model::{Activity, Availability, Presence};

/// A presence body as Microsoft Graph returns it (`GET /users/{id}/presence`). Fields Ampel does
/// not use (`id`, `statusMessage`, ...) are ignored, and missing or null values read as unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphPresence {
    /// Graph's availability, such as `Available` or `BusyIdle`.
    #[serde(default)]
    pub availability: Option<String>,
    /// Graph's activity, such as `InACall` or `OffWork`.
    #[serde(default)]
    pub activity: Option<String>,
    /// The user's automatic replies.
    #[serde(default)]
    pub out_of_office_settings: Option<OutOfOfficeSettings>,
}

/// Graph's `outOfOfficeSettings`: whether automatic replies are on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutOfOfficeSettings {
    /// The automatic reply. Ampel does not show it: it is written for email senders.
    #[serde(default)]
    pub message: Option<String>,
    /// True while automatic replies are on.
    #[serde(default)]
    pub is_out_of_office: Option<bool>,
}

/// Graph's availability values with the Ampel availability and idle flag each one means. The
/// table serves both directions, so that what goes out is what comes back in.
const AVAILABILITIES: &[(&str, Availability, bool)] = &[
    ("Available", Availability::Available, false),
    ("AvailableIdle", Availability::Available, true),
    ("Away", Availability::Away, false),
    ("BeRightBack", Availability::BeRightBack, false),
    ("Busy", Availability::Busy, false),
    ("BusyIdle", Availability::Busy, true),
    ("DoNotDisturb", Availability::DoNotDisturb, false),
    ("Offline", Availability::Offline, false),
    ("PresenceUnknown", Availability::Unknown, false),
];

/// What a Graph activity value means in Ampel.
#[derive(Clone, Copy, Debug)]
enum Meaning {
    /// This activity.
    Is(Activity),
    /// The user is idle; the activity is the plain one of the availability.
    Idle,
    /// Nothing beyond the availability.
    Plain,
}

/// Graph's activity values. Where two values mean the same activity, the first is the one Ampel
/// sends out.
const ACTIVITIES: &[(&str, Meaning)] = &[
    ("Available", Meaning::Is(Activity::Available)),
    ("Away", Meaning::Is(Activity::Away)),
    ("BeRightBack", Meaning::Is(Activity::BeRightBack)),
    ("Busy", Meaning::Is(Activity::Busy)),
    ("DoNotDisturb", Meaning::Is(Activity::DoNotDisturb)),
    ("InACall", Meaning::Is(Activity::InACall)),
    ("InAConferenceCall", Meaning::Is(Activity::InAConferenceCall)),
    ("InAMeeting", Meaning::Is(Activity::InAMeeting)),
    ("Presenting", Meaning::Is(Activity::Presenting)),
    ("Focusing", Meaning::Is(Activity::Focusing)),
    ("OutOfOffice", Meaning::Is(Activity::OutOfOffice)),
    ("OffWork", Meaning::Is(Activity::OffWork)),
    ("Offline", Meaning::Is(Activity::Offline)),
    // Teams lets urgent messages through but nothing else: to everyone else, do not disturb.
    ("UrgentInterruptionsOnly", Meaning::Is(Activity::DoNotDisturb)),
    ("Inactive", Meaning::Idle),
    ("AvailableInactive", Meaning::Idle),
    ("PresenceUnknown", Meaning::Plain),
];

/// Reads a Graph presence body into Ampel's vocabulary. An unknown or missing availability reads
/// as [`Availability::Unknown`], which makes the fact contribute nothing.
pub fn teams_state(graph: &GraphPresence) -> TeamsState {
    let raw_availability = graph.availability.as_deref().unwrap_or_default().trim();
    let (availability, idle_by_availability) = AVAILABILITIES
        .iter()
        .find(|(word, ..)| word.eq_ignore_ascii_case(raw_availability))
        .map_or((Availability::Unknown, false), |(_, a, idle)| (*a, *idle));

    let raw_activity = graph.activity.as_deref().unwrap_or_default().trim();
    let meaning = ACTIVITIES
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(raw_activity))
        .map(|(_, m)| *m);
    let plain = availability.plain_activity();
    let (activity, idle_by_activity, unknown_activity) = match meaning {
        Some(Meaning::Is(a)) => (a, false, None),
        Some(Meaning::Idle) => (plain, true, None),
        Some(Meaning::Plain) => (plain, false, None),
        None if raw_activity.is_empty() => (plain, false, None),
        None => (plain, false, Some(raw_activity.to_owned())),
    };

    let automatic_replies =
        graph.out_of_office_settings.as_ref().and_then(|s| s.is_out_of_office) == Some(true);
    TeamsState {
        availability,
        activity,
        idle: idle_by_availability || idle_by_activity,
        out_of_office: automatic_replies || activity == Activity::OutOfOffice,
        raw_activity: unknown_activity,
    }
}

/// Graph's availability for a presence: `AvailableIdle` and `BusyIdle` where Graph has an idle
/// form, the plain value otherwise.
pub fn graph_availability(presence: &Presence) -> &'static str {
    let idle = presence.idle || presence.activity == Activity::Inactive;
    let find = |idle: bool| {
        AVAILABILITIES.iter().find(|(_, a, i)| *a == presence.availability && *i == idle)
    };
    // Graph has no idle form of away, do not disturb or offline; those go out plain.
    find(idle).or_else(|| find(false)).map_or("PresenceUnknown", |(word, ..)| word)
}

/// Graph's activity for a presence.
pub fn graph_activity(presence: &Presence) -> &'static str {
    let wanted = presence.activity;
    match wanted {
        Activity::Inactive => "Inactive",
        Activity::Unknown => "PresenceUnknown",
        _ => ACTIVITIES
            .iter()
            .find(|(_, m)| matches!(m, Meaning::Is(a) if *a == wanted))
            .map_or("PresenceUnknown", |(word, _)| word),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(availability: &str, activity: &str) -> GraphPresence {
        GraphPresence {
            availability: Some(availability.to_owned()),
            activity: Some(activity.to_owned()),
            out_of_office_settings: None,
        }
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let body = r#"{"id": "x", "availability": "Busy", "activity": null,
            "statusMessage": {"message": {"content": "hi"}}}"#;
        let g: GraphPresence = serde_json::from_str(body).unwrap();
        let t = teams_state(&g);
        assert_eq!(
            (t.availability, t.activity, t.raw_activity),
            (Availability::Busy, Activity::Busy, None)
        );
    }

    #[test]
    fn an_unknown_availability_does_not_contribute() {
        let t = teams_state(&graph("SomethingNew", "InACall"));
        assert_eq!(t.availability, Availability::Unknown);
        assert_eq!(teams_state(&GraphPresence::default()).availability, Availability::Unknown);
    }

    #[test]
    fn idle_with_a_specific_activity_keeps_the_activity() {
        let t = teams_state(&graph("busyidle", "InAMeeting"));
        assert_eq!(
            (t.availability, t.activity, t.idle),
            (Availability::Busy, Activity::InAMeeting, true)
        );
        let t = teams_state(&graph("Away", "Inactive"));
        assert_eq!(
            (t.availability, t.activity, t.idle),
            (Availability::Away, Activity::Away, true)
        );
    }

    #[test]
    fn urgent_interruptions_only_is_do_not_disturb() {
        let t = teams_state(&graph("DoNotDisturb", "UrgentInterruptionsOnly"));
        assert_eq!(
            (t.availability, t.activity),
            (Availability::DoNotDisturb, Activity::DoNotDisturb)
        );
    }

    #[test]
    fn away_has_no_idle_form_in_graph() {
        let p = crate::model::Presence {
            availability: Availability::Away,
            activity: Activity::Away,
            idle: true,
            out_of_office: false,
            note: None,
            until: None,
            since: jiff::Timestamp::UNIX_EPOCH,
            location: None,
            last_active: None,
        };
        assert_eq!((graph_availability(&p), graph_activity(&p)), ("Away", "Away"));
    }
}
