//! How an entry shows its owner: free, tentative, busy, out of office or working elsewhere.
//!
//! "Show as" is carried by several properties that can disagree. Microsoft's
//! `X-MICROSOFT-CDO-BUSYSTATUS` (this person's view) comes first, then
//! `X-MICROSOFT-CDO-INTENDEDSTATUS` (the organizer's intent), then `TRANSP` (RFC 5545, 3.8.2.7):
//! transparent is free, opaque or missing is busy. An entry the owner has only tentatively
//! accepted, or not yet answered, shows as tentative; one the owner declined does not count.

use ampel_core::fact::ShowAs;

/// The Microsoft busy-status vocabulary (also Graph's `showAs`), read without regard to case.
pub fn parse_busy_status(value: &str) -> Option<ShowAs> {
    match value.trim().to_ascii_uppercase().as_str() {
        "FREE" => Some(ShowAs::Free),
        "TENTATIVE" => Some(ShowAs::Tentative),
        "BUSY" => Some(ShowAs::Busy),
        "OOF" | "OUTOFOFFICE" | "OUT-OF-OFFICE" => Some(ShowAs::OutOfOffice),
        "WORKINGELSEWHERE" | "WORKING-ELSEWHERE" => Some(ShowAs::WorkingElsewhere),
        _ => None,
    }
}

/// The entry's own statement, before the owner's answer is taken into account.
pub(crate) fn stated(
    busy_status: Option<&str>,
    intended_status: Option<&str>,
    transp: Option<&str>,
    status: Option<&str>,
) -> ShowAs {
    if let Some(s) = busy_status.and_then(parse_busy_status) {
        return s;
    }
    if let Some(s) = intended_status.and_then(parse_busy_status) {
        return s;
    }
    if transp.is_some_and(|t| t.trim().eq_ignore_ascii_case("TRANSPARENT")) {
        return ShowAs::Free;
    }
    if status.is_some_and(|s| s.trim().eq_ignore_ascii_case("TENTATIVE")) {
        return ShowAs::Tentative;
    }
    ShowAs::Busy
}

/// What the owner answered to an invitation (`PARTSTAT`, RFC 5545, 3.2.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Accepted, or no answer recorded for the owner.
    Accepted,
    /// Tentatively accepted or not yet answered.
    Tentative,
    /// Declined: the entry does not count.
    Declined,
}

/// Reads a `PARTSTAT` value.
pub(crate) fn answer(partstat: &str) -> Answer {
    match partstat.trim().to_ascii_uppercase().as_str() {
        "DECLINED" => Answer::Declined,
        "TENTATIVE" | "NEEDS-ACTION" => Answer::Tentative,
        _ => Answer::Accepted,
    }
}

/// The entry's show-as after the owner's answer; `None` when it does not count.
pub(crate) fn with_answer(stated: ShowAs, answer: Answer) -> Option<ShowAs> {
    match answer {
        Answer::Declined => None,
        Answer::Tentative if stated == ShowAs::Busy => Some(ShowAs::Tentative),
        _ => Some(stated),
    }
}

/// Where two entries overlap, the stronger one shows: out of office, busy, tentative, working
/// elsewhere, free.
pub fn strength(show_as: ShowAs) -> u8 {
    match show_as {
        ShowAs::Free => 0,
        ShowAs::WorkingElsewhere => 1,
        ShowAs::Tentative => 2,
        ShowAs::Busy => 3,
        ShowAs::OutOfOffice => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_persons_busy_status_beats_the_intended_status_and_transp() {
        assert_eq!(stated(Some("FREE"), Some("BUSY"), Some("OPAQUE"), None), ShowAs::Free);
        assert_eq!(stated(None, Some("free"), Some("OPAQUE"), None), ShowAs::Free);
        assert_eq!(stated(None, None, Some("TRANSPARENT"), None), ShowAs::Free);
        assert_eq!(stated(None, None, None, None), ShowAs::Busy);
        assert_eq!(stated(Some("oof"), None, None, None), ShowAs::OutOfOffice);
    }

    #[test]
    fn a_declined_invitation_does_not_count() {
        assert_eq!(with_answer(ShowAs::Busy, answer("DECLINED")), None);
        assert_eq!(with_answer(ShowAs::Busy, answer("tentative")), Some(ShowAs::Tentative));
        assert_eq!(
            with_answer(ShowAs::OutOfOffice, answer("TENTATIVE")),
            Some(ShowAs::OutOfOffice)
        );
    }
}
