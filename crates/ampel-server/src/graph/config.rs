//! The `[graph]` section of the server configuration file: how Ampel reaches a Microsoft 365
//! tenant and which Azure AD account belongs to which Ampel user.
//!
//! Every URL is configurable so that a test can point Ampel at an emulator, and every interval,
//! so that a test does not wait for minutes. The client secret is wrapped in [`Secret`], whose
//! `Debug` and `Display` never show it.

use std::collections::BTreeMap;
use std::fmt;

use ampel_core::policy::Duration;
use serde::Deserialize;

/// A credential that never appears in a log line, a `Debug` print or an API answer.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The `[graph]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The tenant: its id or a verified domain (`contoso.onmicrosoft.com`).
    pub tenant: String,
    /// The application (client) id of Ampel's app registration. It is also the session id of
    /// the presence session Ampel sets while a PBX call runs.
    pub client_id: String,
    /// The client secret of the app registration.
    pub client_secret: Secret,
    /// The identity platform; the token endpoint is `{authority}/{tenant}/oauth2/v2.0/token`.
    #[serde(default = "default_authority")]
    pub authority: String,
    /// The Graph endpoint including its version.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The scope asked for with the client credentials grant.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Where Graph posts change notifications; `/graph/notifications` on Ampel's public HTTP
    /// address. Without it Ampel polls presence instead of subscribing.
    #[serde(default)]
    pub notification_url: Option<String>,
    /// Where Graph posts lifecycle notifications; `/graph/lifecycle` beside the notification
    /// URL when not given.
    #[serde(default)]
    pub lifecycle_url: Option<String>,
    /// Ampel user id to Azure AD object id. Administrators map more users, or map over these,
    /// through `/api/v1/users/{id}/graph` at run time (see [`super::mapping`]).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// How often presence is polled while no subscription delivers it.
    #[serde(default = "defaults::poll")]
    pub poll_interval: Duration,
    /// How often presence is read in full although subscriptions deliver changes: it catches
    /// lost notifications and keeps Teams facts from expiring.
    #[serde(default = "defaults::refresh")]
    pub refresh_interval: Duration,
    /// How long a subscription is asked for; Graph allows presence subscriptions an hour.
    #[serde(default = "defaults::subscription")]
    pub subscription_lifetime: Duration,
    /// How long before its expiry a subscription is renewed.
    #[serde(default = "defaults::renew_before")]
    pub renew_before: Duration,
    /// How often calendars are read (a delta round per mailbox); a change notification on a
    /// mailbox's events starts its round at once.
    #[serde(default = "defaults::calendar")]
    pub calendar_interval: Duration,
    /// How many days ahead calendars are read.
    #[serde(default = "defaults::calendar_days")]
    pub calendar_days: u32,
    /// How often contacts are read.
    #[serde(default = "defaults::contacts")]
    pub contacts_interval: Duration,
    /// Whether PBX calls are shown in Teams through a presence session.
    #[serde(default = "defaults::yes")]
    pub presence_out: bool,
    /// How long each presence session write lasts in Graph (between 5 minutes and 4 hours);
    /// it is renewed at half this while the call lasts.
    #[serde(default = "defaults::session")]
    pub session_lifetime: Duration,
    /// After Ampel clears its session, a Teams "in a call" is still taken for Ampel's own
    /// write for this long, since Graph may report the old state once more.
    #[serde(default = "defaults::echo_grace")]
    pub echo_grace: Duration,
    /// The first wait of the exponential backoff when Graph gives no `Retry-After`.
    #[serde(default = "defaults::backoff")]
    pub backoff: Duration,
    /// The longest wait between two attempts.
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: Duration,
    /// Attempts per request before it is given up (the next round tries again).
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
}

fn default_authority() -> String {
    "https://login.microsoftonline.com".to_owned()
}

fn default_base_url() -> String {
    "https://graph.microsoft.com/v1.0".to_owned()
}

fn default_scope() -> String {
    "https://graph.microsoft.com/.default".to_owned()
}

mod defaults {
    use ampel_core::policy::Duration;

    pub fn poll() -> Duration {
        Duration::from_secs(60)
    }
    pub fn refresh() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn subscription() -> Duration {
        Duration::from_secs(59 * 60)
    }
    pub fn renew_before() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn calendar() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn calendar_days() -> u32 {
        2
    }
    pub fn contacts() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn session() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn echo_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn backoff() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(120)
    }
    pub fn attempts() -> u32 {
        8
    }
}

/// Why a `[graph]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A presence session must last between 5 minutes and 4 hours.
    #[error("graph.session_lifetime must be between 5m and 4h")]
    SessionLifetime,
    /// Graph keeps presence subscriptions at most an hour.
    #[error("graph.subscription_lifetime must be at most 1h and longer than graph.renew_before")]
    SubscriptionLifetime,
    /// A URL does not parse.
    #[error("graph.{field} is not a URL")]
    Url {
        /// The field.
        field: &'static str,
    },
}

impl GraphConfig {
    /// Checks the values Graph constrains.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let session = self.session_lifetime.0.as_secs();
        if !(5 * 60..=4 * 3600).contains(&session) {
            return Err(ConfigError::SessionLifetime);
        }
        let sub = self.subscription_lifetime.0;
        if sub.as_secs() > 3600 || sub <= self.renew_before.0 {
            return Err(ConfigError::SubscriptionLifetime);
        }
        let urls = [
            ("authority", Some(&self.authority)),
            ("base_url", Some(&self.base_url)),
            ("notification_url", self.notification_url.as_ref()),
            ("lifecycle_url", self.lifecycle_url.as_ref()),
        ];
        for (field, url) in urls {
            if let Some(url) = url
                && reqwest::Url::parse(url).is_err()
            {
                return Err(ConfigError::Url { field });
            }
        }
        Ok(())
    }

    /// The Ampel user of an Azure AD object id.
    pub fn ampel_user(&self, object_id: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, id)| id.eq_ignore_ascii_case(object_id))
            .map(|(user, _)| user.as_str())
    }

    /// The lifecycle notification URL.
    pub fn lifecycle_url(&self) -> Option<String> {
        self.lifecycle_url.clone().or_else(|| {
            let url = self.notification_url.as_ref()?;
            Some(match url.strip_suffix("/notifications") {
                Some(base) => format!("{base}/lifecycle"),
                None => format!("{}/lifecycle", url.trim_end_matches('/')),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> GraphConfig {
        toml::from_str(text).unwrap()
    }

    const MINIMAL: &str = "tenant = \"t\"\nclient_id = \"c\"\nclient_secret = \"s3cr3t\"\n";

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let config = parse(MINIMAL);
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("[redacted]"));
        assert_eq!(config.client_secret.expose(), "s3cr3t");
    }

    #[test]
    fn defaults_point_at_microsoft_and_validate() {
        let config = parse(MINIMAL);
        assert_eq!(config.base_url, "https://graph.microsoft.com/v1.0");
        assert_eq!(config.authority, "https://login.microsoftonline.com");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let short = parse(&format!("{MINIMAL}session_lifetime = \"1m\"\n"));
        assert_eq!(short.validate(), Err(ConfigError::SessionLifetime));
        let long = parse(&format!("{MINIMAL}subscription_lifetime = \"2h\"\n"));
        assert_eq!(long.validate(), Err(ConfigError::SubscriptionLifetime));
        let url = parse(&format!("{MINIMAL}base_url = \"not a url\"\n"));
        assert_eq!(url.validate(), Err(ConfigError::Url { field: "base_url" }));
    }

    #[test]
    fn the_lifecycle_url_defaults_beside_the_notification_url() {
        let config = parse(&format!(
            "{MINIMAL}notification_url = \"https://a.example/graph/notifications\"\n"
        ));
        assert_eq!(config.lifecycle_url().as_deref(), Some("https://a.example/graph/lifecycle"));
    }
}
