//! Visibility: what one viewer may see of one user's presence.
//!
//! Every read on every interface passes through [`project`]; there is no other way from an
//! [`Aggregate`] to bytes on a wire. The relation between viewer and subject is worked out from
//! the directory data the caller hands in ([`relation`]); what each relation may see is policy.

use jiff::Timestamp;
use serde::Serialize;

use crate::aggregate::Aggregate;
use crate::fact::Source;
use crate::model::{Activity, Availability, Color, Location, Note};
use crate::policy::{Grant, Policy};

/// How a viewer stands to the user it looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// The user looks at themself.
    Itself,
    /// An administrator.
    Admin,
    /// A delegate the user named.
    Delegate,
    /// Someone who shares a group with the user.
    Team,
    /// Someone else in the user's domain.
    Colleague,
    /// A user of another domain.
    External,
    /// Someone the user blocked: sees offline and nothing else.
    Blocked,
}

impl Relation {
    /// Every relation, in order of decreasing trust.
    pub const ALL: &'static [Relation] = &[
        Relation::Itself,
        Relation::Admin,
        Relation::Delegate,
        Relation::Team,
        Relation::Colleague,
        Relation::External,
        Relation::Blocked,
    ];

    /// A small index, for tables keyed by relation.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The directory data about a user that relations are worked out from.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// `user@domain`.
    pub id: &'a str,
    /// The groups (teams) the user belongs to.
    pub groups: &'a [String],
    /// Who the user named as delegates.
    pub delegates: &'a [String],
    /// Who the user blocked.
    pub blocked: &'a [String],
}

/// Who is looking.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    /// An administrator.
    Admin,
    /// A user.
    User(Member<'a>),
}

/// How `viewer` stands to `subject`. A block outranks every other tie; the user themself is
/// never blocked from their own presence.
pub fn relation(viewer: Viewer<'_>, subject: Member<'_>) -> Relation {
    let Viewer::User(viewer) = viewer else { return Relation::Admin };
    if viewer.id == subject.id {
        return Relation::Itself;
    }
    let named = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(viewer.id));
    if named(subject.blocked) {
        Relation::Blocked
    } else if named(subject.delegates) {
        Relation::Delegate
    } else if viewer.groups.iter().any(|g| subject.groups.contains(g)) {
        Relation::Team
    } else if domain(viewer.id).eq_ignore_ascii_case(domain(subject.id)) {
        Relation::Colleague
    } else {
        Relation::External
    }
}

fn domain(id: &str) -> &str {
    id.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The grants of a relation under a policy.
pub fn grants(policy: &Policy, relation: Relation) -> &[Grant] {
    match relation {
        Relation::Itself | Relation::Admin => Grant::ALL,
        Relation::Delegate => &policy.visibility.delegate,
        Relation::Team => &policy.visibility.team,
        Relation::Colleague => &policy.visibility.colleague,
        Relation::External => &policy.visibility.external,
        Relation::Blocked => &[],
    }
}

/// A presence as one viewer may see it. Fields the viewer may not see are absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Projected {
    /// The user, `user@domain`.
    pub user: String,
    /// The colour; everyone who may see anything sees this.
    pub color: Color,
    /// The availability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
    /// The activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// Whether every device is idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<bool>,
    /// The out-of-office marker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_office: Option<bool>,
    /// The note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
    /// When the current state is expected to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub until: Option<Timestamp>,
    /// When the current state began.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub since: Option<Timestamp>,
    /// Where the user works from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// When the user was last active.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_active: Option<Timestamp>,
    /// The subject of the meeting that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The sources that decided or contributed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
}

/// The presence of `user` as a viewer in `relation` may see it.
pub fn project(
    user: &str,
    aggregate: &Aggregate,
    relation: Relation,
    policy: &Policy,
) -> Projected {
    let p = &aggregate.presence;
    if relation == Relation::Blocked {
        // Polite blocking: indistinguishable from a user who is simply offline.
        return Projected {
            availability: Some(Availability::Offline),
            activity: Some(Activity::Offline),
            ..Projected::color_only(user, Color::Grey)
        };
    }
    let granted = grants(policy, relation);
    let may = |g: Grant| granted.contains(&g);
    let show = |g: Grant| may(g) && may(Grant::Availability);
    Projected {
        user: user.to_owned(),
        color: p.color(),
        availability: may(Grant::Availability).then_some(p.availability),
        activity: gate(show(Grant::Activity), Some(p.activity)),
        idle: gate(show(Grant::Idle), Some(p.idle)),
        out_of_office: gate(show(Grant::OutOfOffice), Some(p.out_of_office)),
        note: gate(show(Grant::Note), p.note.clone()),
        until: gate(show(Grant::Until), p.until),
        since: may(Grant::Availability).then_some(p.since),
        location: gate(show(Grant::Location), p.location),
        last_active: gate(show(Grant::LastActive), p.last_active),
        subject: gate(show(Grant::Subject), aggregate.subject.clone()),
        sources: show(Grant::Sources).then(|| aggregate.explanation.sources()),
    }
}

fn gate<T>(shown: bool, value: Option<T>) -> Option<T> {
    if shown { value } else { None }
}

impl Projected {
    fn color_only(user: &str, color: Color) -> Projected {
        Projected {
            user: user.to_owned(),
            color,
            availability: None,
            activity: None,
            idle: None,
            out_of_office: None,
            note: None,
            until: None,
            since: None,
            location: None,
            last_active: None,
            subject: None,
            sources: None,
        }
    }
}
