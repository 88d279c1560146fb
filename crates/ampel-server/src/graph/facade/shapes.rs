//! The JSON shapes of the facade, as Graph documents them: the bodies the presence actions
//! take, and the presence, collection and error bodies it answers with. The OpenAPI description
//! ([`super::openapi`]) is generated from these same types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `getPresencesByUserId`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Ids {
    /// Ampel user ids or mapped Azure AD object ids, 1 to 650.
    pub ids: Vec<String>,
}

/// The body of `setPresence`: a presence session of the calling application.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetPresence {
    /// The session's id (Graph: the application id); up to 128 printable characters.
    pub session_id: String,
    /// `Available`, `Busy`, `Away` or `DoNotDisturb`, with the activity Graph pairs it with.
    pub availability: String,
    /// `Available`, `InACall`, `InAConferenceCall`, `Away` or `Presenting`.
    pub activity: String,
    /// An ISO 8601 duration from `PT5M` to `PT4H`; `PT5M` when left out.
    #[serde(default)]
    pub expiration_duration: Option<String>,
}

/// The body of `clearPresence`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearPresence {
    /// The session to end.
    pub session_id: String,
}

/// The body of `setUserPreferredPresence`: the user's own status, which beats every session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetPreferred {
    /// `Available`, `Busy`, `DoNotDisturb`, `BeRightBack`, `Away` or `Offline`.
    pub availability: String,
    /// The same word, or `OffWork` with `Offline`.
    pub activity: String,
    /// An ISO 8601 duration up to `P7D`; Graph's default (1 or 7 days) when left out.
    #[serde(default)]
    pub expiration_duration: Option<String>,
}

/// The body of `setStatusMessage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetStatusMessage {
    /// The message; an empty one clears it.
    pub status_message: StatusMessage,
}

/// A status message, as set and as shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage {
    /// The words, at most 500 characters.
    pub message: ItemBody,
    /// When the message ends by itself; never when left out or null.
    #[serde(default)]
    pub expiry_date_time: Option<DateTimeTimeZone>,
}

/// Graph's `dateTimeTimeZone`: a local date and time and the zone it is in.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    /// `2026-12-03T11:30:00.0000000`.
    pub date_time: String,
    /// A Windows or IANA zone name; UTC when left out. Answers are always in UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Graph's `itemBody`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    /// The text.
    pub content: String,
    /// `text`.
    #[serde(default = "text")]
    pub content_type: String,
}

fn text() -> String {
    "text".to_owned()
}

/// A presence, projected for the caller.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceBody {
    /// The OData context of a single presence; left out inside a collection.
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    pub odata_context: Option<String>,
    /// The id the caller named.
    pub id: String,
    /// Graph's availability: `Available`, `AvailableIdle`, `Away`, `BeRightBack`, `Busy`,
    /// `BusyIdle`, `DoNotDisturb`, `Offline` or `PresenceUnknown`.
    pub availability: String,
    /// Graph's activity (`Available`, `InACall`, `InAMeeting`, `Presenting`, ...).
    pub activity: String,
    /// The note the caller may see, if any.
    pub status_message: Option<StatusMessage>,
    /// Whether the user is out of office.
    pub out_of_office_settings: OutOfOfficeSettings,
}

/// Graph's `outOfOfficeSettings`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutOfOfficeSettings {
    /// Always null: Ampel keeps no automatic reply.
    pub message: Option<String>,
    /// Whether the user is out of office.
    pub is_out_of_office: bool,
}

/// The answer of `getPresencesByUserId`; ids Ampel does not know are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceCollection {
    /// The OData context of the collection.
    #[serde(rename = "@odata.context")]
    pub odata_context: String,
    /// The presences.
    pub value: Vec<PresenceBody>,
}

/// Graph's error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of Graph's error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `BadRequest`, `InvalidAuthenticationToken`, `Forbidden`, `NotFound`, `TooManyRequests`
    /// or `ServiceNotAvailable`.
    pub code: String,
    /// The reason in words.
    pub message: String,
}
