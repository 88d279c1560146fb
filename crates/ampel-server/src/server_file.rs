//! The server's own configuration file (`ampel serve --server-config FILE`): how Ampel reaches
//! other systems and listens for them. What it decides about presence lives in the policy file,
//! which every employee may read; this file may hold credentials and is for administrators.
//!
//! Every section is optional; an empty file (or none) runs Ampel on its embedded defaults.
//! Unknown keys are errors, so that a typo is not silently ignored.

use serde::Deserialize;

/// The parsed file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Microsoft 365 through Microsoft Graph.
    #[serde(default)]
    pub graph: Option<crate::graph::GraphConfig>,
    /// The SIP front end (`[sip]`).
    #[serde(default)]
    pub sip: crate::sip::SipSettings,
    /// How the web page is served.
    #[serde(default)]
    pub web: crate::web::WebSection,
    /// Where caller names come from and how announcements are spoken.
    #[serde(default)]
    pub routing: crate::routing::RoutingFile,
    /// Calendar sources and how they are polled.
    #[serde(default)]
    pub calendar: crate::calendar::source::CalendarSection,
}

impl ServerFile {
    /// Parses the file's text; the error names the line and column.
    pub fn from_toml(text: &str) -> Result<ServerFile, String> {
        let file: ServerFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.sip.check()?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_and_an_unknown_key_is_an_error() {
        assert!(ServerFile::from_toml("").is_ok());
        let err = ServerFile::from_toml("\n[nonsense]\nx = 1\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("nonsense"), "{err}");
    }

    #[test]
    fn the_sip_caps_and_trusted_networks_are_read_and_checked() {
        let text = "[sip]\nauthenticate = false\ntrusted_networks = [\"192.0.2.0/24\", \"2001:db8::7\"]\n\
                    max_subscriptions_per_subscriber = 50\nmax_subscriptions_per_address = 500\n\
                    max_tcp_per_address = 8\n";
        let file = ServerFile::from_toml(text).unwrap();
        assert!(file.sip.trusts("192.0.2.9".parse().unwrap()));
        assert!(!file.sip.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (
                file.sip.max_subscriptions_per_subscriber,
                file.sip.max_subscriptions_per_address,
                file.sip.max_tcp_per_address
            ),
            (50, 500, 8)
        );
        let defaults = ServerFile::from_toml("[sip]\n").unwrap().sip;
        assert!(defaults.trusts("127.0.0.1".parse().unwrap()));
        assert_eq!(defaults.max_subscriptions_per_subscriber, 1000);
        let bad = ServerFile::from_toml("[sip]\ntrusted_networks = [\"10.0.0.0/40\"]\n");
        assert!(bad.unwrap_err().contains("CIDR"));
    }

    #[test]
    fn sip_settings_that_contradict_each_other_are_refused_by_name() {
        let err = ServerFile::from_toml("[sip]\nmin_expires = 4000\nmax_expires = 3600\n");
        assert_eq!(
            err.unwrap_err(),
            "[sip] min_expires (4000) is above max_expires (3600): every request would get 423"
        );
        for key in [
            "max_subscriptions_per_subscriber",
            "max_subscriptions_per_address",
            "max_tcp_per_address",
            "min_expires",
        ] {
            let err = ServerFile::from_toml(&format!("[sip]\n{key} = 0\n")).unwrap_err();
            assert!(err.starts_with(&format!("[sip] {key} must be at least 1")), "{err}");
        }
    }

    #[test]
    fn a_calendar_section_names_its_sources() {
        let text = "[calendar]\npoll_s = 60\n[[calendar.sources]]\nuser = \"alice@example.com\"\n\
                    name = \"work\"\nkind = \"caldav\"\nlocation = \"https://dav.example.com/a/\"\n\
                    username = \"alice\"\npassword = \"secret\"\n";
        let file = ServerFile::from_toml(text).unwrap();
        assert_eq!(file.calendar.poll_s, 60);
        assert_eq!(file.calendar.sources[0].source.password.as_deref(), Some("secret"));
        let typo = text.replace("username", "usernme");
        assert!(ServerFile::from_toml(&typo).unwrap_err().contains("usernme"));
    }
}
