//! The payment service's settings: the only module that reads the
//! environment. Every variable has a default that works for `make run`.

use std::path::PathBuf;

use choreo_bus::{var, CommonSettings, ConfigError, ServiceSettings};

/// The service name: consumer group, inbox consumer, `producer` of events,
/// `dlq.payment`.
pub const SERVICE: &str = "payment";
/// Default HTTP port (`CHOREO_HTTP_ADDR` overrides the whole address).
pub const DEFAULT_PORT: u16 = 8083;
/// Seed file read when the accounts table is empty.
pub const SEED_FILE_VAR: &str = "CHOREO_ACCOUNTS_SEED_FILE";
/// Relative to the working directory, which is the repository root for
/// `make run` and the tests.
pub const DEFAULT_SEED_FILE: &str = "deploy/seed/accounts.json";

/// Everything the service needs to start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub common: CommonSettings,
    /// JSON array of accounts loaded when the accounts table is empty.
    pub seed_file: PathBuf,
}

impl ServiceSettings for Settings {
    const OWN_ENV_VARS: &'static [&'static str] = &[SEED_FILE_VAR];

    fn common(&self) -> &CommonSettings {
        &self.common
    }

    /// Builds settings from environment-like pairs (tests pass their own).
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        let seed_file = PathBuf::from(var(vars, SEED_FILE_VAR).unwrap_or(DEFAULT_SEED_FILE));
        Ok(Self { common, seed_file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!(s.common.http_addr.port(), 8083);
        assert_eq!(s.seed_file, PathBuf::from(DEFAULT_SEED_FILE));

        let s = Settings::from_vars(&[(SEED_FILE_VAR.into(), "/tmp/a.json".into())]).unwrap();
        assert_eq!(s.seed_file, PathBuf::from("/tmp/a.json"));
    }
}
