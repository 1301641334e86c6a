//! The communication service's settings: the only module that reads the
//! environment. Every variable has a default that works for `make run`.

use std::fmt;
use std::path::PathBuf;

use choreo_bus::{var, CommonSettings, ConfigError, ServiceSettings};
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

impl ServiceSettings for Settings {
    const OWN_ENV_VARS: &'static [&'static str] = &[SMTP_URL_VAR, MAIL_FROM_VAR];

    fn common(&self) -> &CommonSettings {
        &self.common
    }

    /// Builds settings from environment-like pairs (tests pass their own).
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        let from = var(vars, MAIL_FROM_VAR).unwrap_or(DEFAULT_MAIL_FROM);
        let mail_from = from.parse::<Mailbox>().map_err(|e| {
            ConfigError(format!(
                "{MAIL_FROM_VAR}: {from:?} is not a mail address: {e}"
            ))
        })?;
        Ok(Self {
            common,
            smtp_url: var(vars, SMTP_URL_VAR).map(str::to_owned),
            mail_from,
        })
    }
}

impl Settings {
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
