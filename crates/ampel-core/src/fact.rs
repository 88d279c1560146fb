//! Facts: what one source says about one user, and for how long it holds.
//!
//! A fact is the only input of aggregation. It never decides anything by itself: the policy
//! ranks the facts of a user and [`aggregate`](mod@crate::aggregate) picks the winner. A fact does not carry
//! its lifetime either; how long a fact of each source lives without a refresh is policy, so
//! that a changed policy applies to facts already held.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{Activity, Availability, Location, Note};

/// Where a fact comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The user set a status by hand.
    Manual,
    /// A device session of a client: logged in, active or idle, or a status set on the device.
    Session,
    /// The PBX: calls ringing, connected, held.
    Telephony,
    /// A calendar: planned meetings and absences.
    Calendar,
    /// Microsoft Teams presence.
    Teams,
    /// A live online meeting the user takes part in.
    Meeting,
    /// A location source the user opted into.
    Location,
}

impl Source {
    /// Every source, in declaration order.
    pub const ALL: &'static [Source] = &[
        Source::Manual,
        Source::Session,
        Source::Telephony,
        Source::Calendar,
        Source::Teams,
        Source::Meeting,
        Source::Location,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Manual => "manual",
            Source::Session => "session",
            Source::Telephony => "telephony",
            Source::Calendar => "calendar",
            Source::Teams => "teams",
            Source::Meeting => "meeting",
            Source::Location => "location",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a device session reports about its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceState {
    /// The user touched the device lately.
    Active,
    /// The device noticed its user went idle.
    Idle,
    /// The device (or its user) says away.
    Away,
    /// A busy status set on the device; it lives and dies with the session.
    Busy,
    /// A do-not-disturb status set on the device; it lives and dies with the session.
    DoNotDisturb,
}

/// The state of one call as the PBX sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// The phone rings.
    Ringing,
    /// The call is answered.
    Connected,
    /// The call is on hold; the user is still in it.
    Held,
    /// The call is over. Ended calls are removed from a user's facts, never kept as facts.
    Ended,
}

/// How a calendar entry shows its owner (iCalendar busy status, Graph `showAs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShowAs {
    /// Free time; does not make anyone busy.
    Free,
    /// Tentatively accepted; by default does not make anyone busy.
    Tentative,
    /// Busy.
    Busy,
    /// Out of office.
    OutOfOffice,
    /// Working elsewhere; the user is reachable.
    WorkingElsewhere,
}

/// A Teams presence as read from Microsoft Graph, already mapped into Ampel's vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TeamsState {
    /// The mapped availability; `Unknown` means the fact does not contribute.
    pub availability: Availability,
    /// The mapped activity.
    pub activity: Activity,
    /// Graph said `AvailableIdle`, `BusyIdle` or `AvailableInactive`.
    #[serde(default)]
    pub idle: bool,
    /// Graph's out-of-office settings or activity said out of office.
    #[serde(default)]
    pub out_of_office: bool,
    /// The activity as Graph spelled it, kept when Ampel did not know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_activity: Option<String>,
}

/// What a fact states. Each variant belongs to one or a few sources.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FactState {
    /// A status chosen by the user; `offline` means appear offline.
    Status {
        /// The chosen availability.
        availability: Availability,
        /// The chosen activity, if more specific than the availability.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activity: Option<Activity>,
    },
    /// A device session's report.
    Device {
        /// What the device says.
        state: DeviceState,
        /// What the device says its user does, when it says more than `state` (a phone that
        /// publishes that its user is on the phone or in a meeting). Aggregation ranks such a
        /// device under the rule of that activity (a call under `call`), so the policy weighs a
        /// phone's call like the PBX's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activity: Option<Activity>,
    },
    /// A call.
    Call {
        /// Where the call stands.
        state: CallState,
    },
    /// A calendar entry.
    Calendar {
        /// How the entry shows its owner.
        show_as: ShowAs,
    },
    /// A Teams presence.
    Teams(TeamsState),
    /// A live online meeting.
    Meeting {
        /// The user shares their screen or presents.
        presenting: bool,
    },
    /// Where the user is.
    Location {
        /// The place.
        location: Location,
    },
    /// A status message that stands on its own (the fact's note): it changes no availability,
    /// and shows when no other note does, until its planned end.
    Message,
}

/// Details of a fact that only some viewers may see (a meeting's subject).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Details {
    /// A meeting's subject or a call's party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The name of the device a session runs on ("Desk phone", "Laptop").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// One source's statement about one user.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fact {
    /// Where it comes from.
    pub source: Source,
    /// Which thing inside the source it is about: a device, a call, a calendar entry. A new
    /// fact with the same source and key replaces the old one.
    pub key: String,
    /// What it states.
    pub state: FactState,
    /// When the source last said so; the fact's lifetime counts from here.
    pub observed: Timestamp,
    /// When it starts to hold, if later than `observed` (a planned meeting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<Timestamp>,
    /// When it stops holding by plan (a manual status's end time, a meeting's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<Timestamp>,
    /// A note that goes with the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
    /// The source marked the underlying entry private: no detail of it may ever leave Ampel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// Details that only some viewers may see; always empty when `private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

impl FactState {
    /// A device's report that says no more than its state.
    pub fn device(state: DeviceState) -> FactState {
        FactState::Device { state, activity: None }
    }

    /// The activities a device may report beside its state, each of which the aggregate weighs:
    /// a call, a meeting or a presentation under the rule of that activity, and an away device's
    /// way of being away (on holiday, off work, back soon).
    pub const DEVICE_ACTIVITIES: [Activity; 7] = [
        Activity::InACall,
        Activity::InAConferenceCall,
        Activity::InAMeeting,
        Activity::Presenting,
        Activity::OutOfOffice,
        Activity::OffWork,
        Activity::BeRightBack,
    ];
}

impl Fact {
    /// A fact observed now that holds until replaced, expired or ended.
    pub fn new(
        source: Source,
        key: impl Into<String>,
        state: FactState,
        observed: Timestamp,
    ) -> Fact {
        Fact {
            source,
            key: key.into(),
            state,
            observed,
            starts: None,
            ends: None,
            note: None,
            private: false,
            details: None,
        }
    }

    /// Sets the planned end.
    pub fn ending(mut self, ends: Option<Timestamp>) -> Fact {
        self.ends = ends;
        self
    }

    /// Sets the planned start.
    pub fn starting(mut self, starts: Option<Timestamp>) -> Fact {
        self.starts = starts;
        self
    }

    /// Sets the note.
    pub fn with_note(mut self, note: Option<Note>) -> Fact {
        self.note = note;
        self
    }

    /// True when `other` is the same statement as `self` (same source and key).
    pub fn same_key(&self, source: Source, key: &str) -> bool {
        self.source == source && self.key == key
    }
}
