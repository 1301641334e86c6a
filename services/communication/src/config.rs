//! The communication service's settings: the only module that reads the
//! environment. Every variable has a default that works for `make run`.

use std::fmt;
use std::path::PathBuf;

use choreo_bus::CommonSettings;
use lettre::message::Mailbox;

/// The service name: consumer group, inbox consumer, `producer` of events,
/// `dlq.communication`.
pub const SERVICE: &str = "communication";
/// Default HTTP port (`CHOREO_HTTP_ADDR` overrides the whole address).
pub const DEFAULT_PORT: u16 = 8085;
/// `smtp://host:port` — unset means mails are written as files.
pub const SMTP_URL_VAR: &str = "CHOREO_SMTP_URL";
/// Sender address of every mail.
pub const MAIL_FROM_VAR: &str = "CHOREO_MAIL_FROM";
pub const DEFAULT_MAIL_FROM: &str = "shop@choreo.local";

/// The environment variables only this service reads; [`env_vars`] adds
/// the ones every service reads ([`CommonSettings::ENV_VARS`]).
pub const OWN_ENV_VARS: &[&str] = &[SMTP_URL_VAR, MAIL_FROM_VAR];

/// Every environment variable this service reads.
pub fn env_vars() -> Vec<&'static str> {
    CommonSettings::with_own(OWN_ENV_VARS)
}

/// Everything the service needs to start.
#[derive(Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// SMTP server URL; `None` → file transport under [`Settings::mail_dir`].
    /// May carry credentials, so it is never printed.
    pub smtp_url: Option<String>,
    pub mail_from: Mailbox,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("common", &self.common)
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("mail_from", &self.mail_from.to_string())
            .finish()
    }
}

impl Settings {
    /// Reads the process environment once.
    pub fn from_env() -> Result<Self, String> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Builds settings from environment-like pairs (tests pass their own).
    pub fn from_vars(vars: &[(String, String)]) -> Result<Self, String> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        let get = |name: &str| {
            vars.iter()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let from = get(MAIL_FROM_VAR).unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
        let mail_from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("{MAIL_FROM_VAR}: {from:?} is not a mail address: {e}"))?;
        Ok(Self {
            common,
            smtp_url: get(SMTP_URL_VAR),
            mail_from,
        })
    }

    /// Where the file transport writes
    /// `<file_safe_id>.<TEMPLATE>.<hash of the Message-ID>.eml`.
    pub fn mail_dir(&self) -> PathBuf {
        self.common.data_dir.join("mail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!(s.common.http_addr.port(), 8085);
        assert_eq!(s.smtp_url, None);
        assert_eq!(s.mail_from.email.to_string(), DEFAULT_MAIL_FROM);
        assert_eq!(s.mail_dir(), PathBuf::from("./data/communication/mail"));

        let s = Settings::from_vars(&[
            (
                SMTP_URL_VAR.into(),
                "smtp://user:secret@mailpit:1025".into(),
            ),
            (MAIL_FROM_VAR.into(), "Shop <shop@example.org>".into()),
        ])
        .unwrap();
        assert_eq!(s.mail_from.email.to_string(), "shop@example.org");
        assert!(!format!("{s:?}").contains("secret"));

        assert!(Settings::from_vars(&[(MAIL_FROM_VAR.into(), "not an address".into())]).is_err());
    }
}
