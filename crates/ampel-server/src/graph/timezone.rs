//! Time zone names as Exchange Online gives them: Windows names (`W. Europe Standard Time`) in
//! mailbox settings and events, IANA names where a client set one, and `UTC`.
//!
//! Windows names are translated with the calendar reader's copy of CLDR's `windowsZones.xml`
//! (the "001", main territory, mapping), and the IANA zone is then read from jiff's time zone
//! database.

use jiff::tz::TimeZone;

/// The zone of a name as Exchange gives it; `None` when it is neither a known Windows name nor
/// an IANA name.
pub fn zone(name: &str) -> Option<TimeZone> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc") {
        return Some(TimeZone::UTC);
    }
    let iana = ampel_calendar::iana_for_windows_zone(name).unwrap_or(name);
    TimeZone::get(iana).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_iana_names_are_both_understood() {
        let berlin = zone("W. Europe Standard Time").unwrap();
        assert_eq!(berlin.iana_name(), Some("Europe/Berlin"));
        assert_eq!(zone("Europe/Paris").unwrap().iana_name(), Some("Europe/Paris"));
        assert_eq!(zone("UTC"), Some(TimeZone::UTC));
        assert!(zone("Mars Standard Time").is_none());
        // A zone few companies use is known too: the whole CLDR table is read.
        assert_eq!(zone("Yukon Standard Time").unwrap().iana_name(), Some("America/Whitehorse"));
    }
}
