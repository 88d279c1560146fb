//! Routing decisions read as specifications: a user's facts, their settings and a caller go
//! in; the action, the target, the deciding rule and what the caller hears come out.

use std::collections::HashMap;

use ampel_core::fact::{CallState, Details, ShowAs, TeamsState};
use ampel_core::model::{Activity, Availability};
use ampel_core::routing::{
    Action, Callee, Caller, CallerClass, Directory, Lang, Target, UserRouting, decide,
};
use ampel_core::{Fact, FactState, Policy, Source, aggregate};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Thursday, 3 December 2026, 11:00 in Berlin.
const NOW: &str = "2026-12-03T10:00:00Z";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn laptop() -> Fact {
    let state = FactState::device(ampel_core::fact::DeviceState::Active);
    Fact::new(Source::Session, "laptop", state, at(NOW))
}

fn meeting(until: &str) -> Fact {
    let mut fact =
        Fact::new(Source::Calendar, "m1", FactState::Calendar { show_as: ShowAs::Busy }, at(NOW))
            .starting(Some(at("2026-12-03T09:00:00Z")))
            .ending(Some(at(until)));
    fact.details = Some(Details { subject: Some("Secret merger".into()), device: None });
    fact
}

fn absence(until: &str) -> Fact {
    let state = FactState::Calendar { show_as: ShowAs::OutOfOffice };
    Fact::new(Source::Calendar, "ooo", state, at("2026-12-01T00:00:00Z"))
        .starting(Some(at("2026-12-01T00:00:00Z")))
        .ending(Some(at(until)))
}

fn call() -> Fact {
    Fact::new(Source::Telephony, "c1", FactState::Call { state: CallState::Connected }, at(NOW))
}

fn manual(availability: Availability) -> Fact {
    let state = FactState::Status { availability, activity: None };
    Fact::new(Source::Manual, "status", state, at(NOW))
}

/// Users with their facts and settings, as the server would hand them to the decision.
struct Users {
    policy: Policy,
    users: HashMap<String, (Vec<Fact>, UserRouting)>,
}

impl Users {
    fn new() -> Users {
        Users { policy: Policy::default(), users: HashMap::new() }
    }

    fn with(mut self, id: &str, facts: Vec<Fact>, settings: UserRouting) -> Users {
        self.users.insert(id.into(), (facts, settings));
        self
    }

    fn call(&self, to: &str, caller: &Caller) -> ampel_core::routing::Decision {
        let callee = self.callee(to).unwrap();
        decide(&self.policy, self, &callee, caller, at(NOW))
    }
}

impl Directory for Users {
    fn callee(&self, id: &str) -> Option<Callee> {
        let (facts, settings) = self.users.get(id)?;
        let name = match id.split('@').next()? {
            "alice" => "Alice Example",
            other => other,
        };
        Some(Callee {
            id: id.into(),
            name: name.into(),
            aggregate: aggregate(facts, &self.policy, at(NOW), None),
            settings: settings.clone(),
            tz: TimeZone::get("Europe/Berlin").unwrap(),
        })
    }
}

fn colleague() -> Caller {
    Caller { ids: vec!["carol@example.com".into()], internal: true, ..Caller::default() }
}

fn stranger(lang: Option<Lang>) -> Caller {
    Caller { ids: vec!["+4989123456".into()], internal: false, declared: None, lang }
}

fn absent_to(target: &str) -> UserRouting {
    UserRouting { absence_target: Some(target.parse().unwrap()), ..UserRouting::default() }
}

#[test]
fn a_calendar_meeting_forwards_to_the_absence_target() {
    let users = Users::new()
        .with(
            "alice@example.com",
            vec![laptop(), meeting("2026-12-03T13:30:00Z")],
            absent_to("user:bob@example.com"),
        )
        .with("bob@example.com", vec![laptop()], UserRouting::default());

    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.target.as_deref()), (Action::Forward, Some("sip:bob@example.com")));
    assert_eq!(d.reason, "in-a-meeting");
    assert_eq!(d.announcement, None);
    assert_eq!(
        d.explanation,
        "rule `in-a-meeting` matched: alice@example.com is in-a-meeting, busy; forwarded through \
         alice@example.com (in-a-meeting) -> bob@example.com (default); the call is forwarded to \
         sip:bob@example.com."
    );
    assert_eq!(d.until, Some(at("2026-12-03T13:30:00Z")));
}

#[test]
fn an_external_caller_hears_the_meeting_end_and_never_its_subject() {
    let users = Users::new().with(
        "alice@example.com",
        vec![meeting("2026-12-03T13:30:00Z")],
        absent_to("tel:+4930999"),
    );
    let d = users.call("alice@example.com", &stranger(Some(Lang::En)));
    assert_eq!((d.action, d.target.as_deref()), (Action::Forward, Some("tel:+4930999")));
    assert_eq!(d.reason, "in-a-meeting-external");
    let text = d.announcement.unwrap().text;
    assert_eq!(text, "Alice Example is in a meeting until 2:30 pm. Your call is being forwarded.");
    assert!(!text.contains("Secret"));
}

#[test]
fn a_meeting_without_an_absence_target_rings() {
    let users = Users::new().with(
        "alice@example.com",
        vec![meeting("2026-12-03T13:30:00Z")],
        UserRouting::default(),
    );
    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.target), (Action::Ring, None));
    assert_eq!(d.reason, "in-a-meeting-external");
    assert_eq!(d.announcement, None, "nothing is announced before a call rings");
    assert!(
        d.explanation
            .contains("forwards to the absence-target, which alice@example.com has not set")
    );
}

#[test]
fn a_user_in_a_call_is_busy_or_forwards_to_the_busy_target() {
    let users =
        Users::new().with("alice@example.com", vec![laptop(), call()], UserRouting::default());
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.target, d.reason.as_str()), (Action::Busy, None, "in-a-call"));
    assert_eq!(
        d.explanation,
        "rule `in-a-call` matched: alice@example.com is in-a-call, busy; the rule forwards to the \
         busy-target, which alice@example.com has not set; the call is rejected as busy."
    );

    let settings =
        UserRouting { busy_target: Some("team:sales".parse().unwrap()), ..UserRouting::default() };
    let mut users = Users::new().with("alice@example.com", vec![call()], settings);
    users.policy.routing.teams.insert("sales".into(), "sip:sales@example.com".into());
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.target.as_deref()), (Action::Forward, Some("sip:sales@example.com")));
}

#[test]
fn a_teams_call_counts_as_a_call_even_under_do_not_disturb() {
    let teams = FactState::Teams(TeamsState {
        availability: Availability::Busy,
        activity: Activity::InACall,
        idle: false,
        out_of_office: false,
        raw_activity: None,
    });
    let facts =
        vec![manual(Availability::DoNotDisturb), Fact::new(Source::Teams, "teams", teams, at(NOW))];
    let users = Users::new().with("alice@example.com", facts, UserRouting::default());
    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.reason.as_str()), (Action::Busy, "in-a-call"));
}

#[test]
fn do_not_disturb_lets_vips_and_emergencies_ring_and_sends_others_to_voicemail() {
    let settings = UserRouting {
        lists: [("vip".to_owned(), vec!["+4989123456".to_owned()])].into(),
        ..UserRouting::default()
    };
    let users =
        Users::new().with("alice@example.com", vec![manual(Availability::DoNotDisturb)], settings);

    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.reason.as_str()), (Action::Voicemail, "do-not-disturb"));
    assert_eq!(d.target.as_deref(), Some("sip:voicemail@example.com;mailbox=alice"));

    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.reason.as_str()), (Action::Ring, "do-not-disturb-vip"));

    let emergency = Caller { declared: Some(CallerClass::Emergency), ..colleague() };
    let d = users.call("alice@example.com", &emergency);
    assert_eq!((d.action, d.reason.as_str()), (Action::Ring, "do-not-disturb-vip"));
}

#[test]
fn out_of_office_until_monday_is_announced_to_external_callers_in_their_language() {
    // The absence ends at midnight in Berlin, Monday 7 December.
    let users = Users::new().with(
        "alice@example.com",
        vec![absence("2026-12-06T23:00:00Z")],
        UserRouting::default(),
    );

    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.reason.as_str()), (Action::Voicemail, "out-of-office-external"));
    let announcement = d.announcement.unwrap();
    assert_eq!(announcement.lang, "de", "the company's language when the caller's is unknown");
    assert_eq!(
        announcement.text,
        "Alice Example ist nicht im Büro und ab Montag, 7. Dezember wieder da. Bitte hinterlassen \
         Sie nach dem Signalton eine Nachricht."
    );
    assert_eq!(d.until, Some(at("2026-12-06T23:00:00Z")));

    let d = users.call("alice@example.com", &stranger(Some(Lang::En)));
    assert_eq!(
        d.announcement.unwrap().text,
        "Alice Example is out of the office and back on Monday, 7 December. Please leave a \
         message after the tone."
    );

    let d = users.call("alice@example.com", &colleague());
    assert_eq!(
        (d.action, d.reason.as_str(), d.announcement),
        (Action::Ring, "out-of-office", None)
    );
}

#[test]
fn an_out_of_office_status_set_by_hand_says_when_its_user_is_back() {
    let state = FactState::Status {
        availability: Availability::Away,
        activity: Some(Activity::OutOfOffice),
    };
    let by_hand = Fact::new(Source::Manual, "status", state, at(NOW))
        .ending(Some(at("2026-12-07T08:00:00Z")));
    let users = Users::new().with("alice@example.com", vec![by_hand], UserRouting::default());

    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.reason.as_str()), (Action::Voicemail, "out-of-office-external"));
    assert_eq!(
        d.announcement.unwrap().text,
        "Alice Example ist nicht im Büro und ab Montag, 7. Dezember wieder da. Bitte hinterlassen \
         Sie nach dem Signalton eine Nachricht."
    );
    assert_eq!(d.until, Some(at("2026-12-07T08:00:00Z")));
}

#[test]
fn presenting_does_not_ring() {
    let presenting = Fact::new(
        Source::Meeting,
        "teams-meeting",
        FactState::Meeting { presenting: true },
        at(NOW),
    );
    let users = Users::new().with("alice@example.com", vec![presenting], UserRouting::default());
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.reason.as_str()), (Action::Voicemail, "presenting"));
}

#[test]
fn a_ring_of_forwards_is_detected_and_ends_in_the_first_voicemail() {
    let users = Users::new()
        .with(
            "alice@example.com",
            vec![meeting("2026-12-03T13:30:00Z")],
            absent_to("user:bob@example.com"),
        )
        .with(
            "bob@example.com",
            vec![meeting("2026-12-03T13:30:00Z")],
            absent_to("user:carol@example.com"),
        )
        .with(
            "carol@example.com",
            vec![meeting("2026-12-03T13:30:00Z")],
            absent_to("user:alice@example.com"),
        );
    let d = users.call("alice@example.com", &stranger(None));
    assert_eq!((d.action, d.reason.as_str()), (Action::Voicemail, "forwarding-loop"));
    assert_eq!(d.target.as_deref(), Some("sip:voicemail@example.com;mailbox=alice"));
    let path: Vec<_> = d.hops.iter().map(|h| h.user.as_str()).collect();
    assert_eq!(
        path,
        ["alice@example.com", "bob@example.com", "carol@example.com", "alice@example.com"]
    );
}

#[test]
fn a_chain_longer_than_the_bound_is_not_followed() {
    let mut users = Users::new();
    for i in 0..10 {
        let next = format!("user:u{}@example.com", i + 1);
        users = users.with(
            &format!("u{i}@example.com"),
            vec![meeting("2026-12-03T13:30:00Z")],
            absent_to(&next),
        );
    }
    let d = users.call("u0@example.com", &colleague());
    assert_eq!(d.reason, "forwarding-loop");
    assert_eq!(d.hops.len(), usize::from(users.policy.routing.max_hops) + 2);
}

#[test]
fn a_forward_ends_where_the_next_user_is_busy() {
    let users = Users::new()
        .with(
            "alice@example.com",
            vec![meeting("2026-12-03T13:30:00Z")],
            absent_to("user:bob@example.com"),
        )
        .with("bob@example.com", vec![call()], UserRouting::default());
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.reason.as_str()), (Action::Busy, "in-a-meeting"));
    assert_eq!(d.hops[1].rule, "in-a-call");
}

#[test]
fn rules_by_time_of_day_use_the_callee_local_time() {
    let text = r#"
        [[routing.rule]]
        name = "after-hours"
        hours = "18:00-08:00"
        action = "voicemail"

        [[routing.rule]]
        name = "lunch"
        hours = "11:00-12:00"
        days = ["thu"]
        action = "forward"
        target = "mobile"
    "#;
    let mut users = Users::new().with(
        "alice@example.com",
        vec![laptop()],
        UserRouting { mobile: Some("+4917012345".into()), ..UserRouting::default() },
    );
    users.policy = Policy::from_toml(text).unwrap();
    // 10:00 UTC is 11:00 in Berlin, on a Thursday.
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.reason.as_str(), d.target.as_deref()), ("lunch", Some("tel:+4917012345")));
}

#[test]
fn policy_faults_in_routing_rules_name_line_and_column() {
    let err = Policy::from_toml(
        "[[routing.rule]]\nname = \"x\"\ncaller = [\"internal\", \"board\"]\naction = \"ring\"\n",
    )
    .unwrap_err();
    assert_eq!((err.line, err.column), (Some(3), Some(23)), "{err}");
    assert!(err.message.contains("caller class or list `board`"), "{err}");

    let err = Policy::from_toml(
        "[[routing.rule]]\nname = \"x\"\naction = \"forward\"\ntarget = \"team:sales\"\n",
    )
    .unwrap_err();
    assert_eq!((err.line, err.column), (Some(4), Some(10)), "{err}");
    assert!(err.message.contains("team `sales`, which is not defined"), "{err}");

    let err = Policy::from_toml(
        "[[routing.rule]]\nname = \"x\"\naction = \"forward\"\ntarget = \"absent-target\"\n",
    )
    .unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.message.contains("unknown target `absent-target`"), "{err}");

    let err = Policy::from_toml("[routing.lists]\nboard = [\"0301234\"]\n").unwrap_err();
    assert_eq!((err.line, err.column), (Some(2), Some(10)), "{err}");

    let err =
        Policy::from_toml("[[routing.rule]]\nname = \"x\"\naction = \"forward\"\n").unwrap_err();
    assert!(err.message.contains("forwards without a target"), "{err}");

    let ok = "[routing.lists]\nboard = [\"+4930123456\", \"ceo@example.com\"]\n[[routing.rule]]\nname = \"x\"\ncaller = [\"board\"]\naction = \"ring\"\n";
    assert!(Policy::from_toml(ok).is_ok());
}

#[test]
fn user_settings_are_checked_against_the_policy() {
    let policy = Policy::default();
    let bad = UserRouting { busy_target: Some(Target::AbsenceTarget), ..UserRouting::default() };
    assert_eq!(bad.check(&policy.routing).unwrap_err().field, "busy_target");
    let bad =
        UserRouting { lists: [("vip".into(), vec!["12".into()])].into(), ..UserRouting::default() };
    assert_eq!(bad.check(&policy.routing).unwrap_err().field, "lists.vip[0]");
    let bad = UserRouting { lists: [("board".into(), vec![])].into(), ..UserRouting::default() };
    assert_eq!(bad.check(&policy.routing).unwrap_err().field, "lists.board");
}

#[test]
fn a_phone_that_says_on_the_phone_makes_its_user_busy_in_a_call() {
    let state = FactState::Device {
        state: ampel_core::fact::DeviceState::Busy,
        activity: Some(Activity::InACall),
    };
    let phone = Fact::new(Source::Session, "phone", state, at(NOW));
    let users =
        Users::new().with("alice@example.com", vec![laptop(), phone], UserRouting::default());
    let d = users.call("alice@example.com", &colleague());
    assert_eq!((d.action, d.target, d.reason.as_str()), (Action::Busy, None, "in-a-call"));

    // The same phone without the activity is only a busy device.
    let state = FactState::device(ampel_core::fact::DeviceState::Busy);
    let phone = Fact::new(Source::Session, "phone", state, at(NOW));
    let users =
        Users::new().with("alice@example.com", vec![laptop(), phone], UserRouting::default());
    let d = users.call("alice@example.com", &colleague());
    assert_ne!(d.reason, "in-a-call");
}
