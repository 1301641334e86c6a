//! The inventory service's settings: the only place that reads the
//! environment. Everything has a default that works for `make run`.

use std::path::PathBuf;

use choreo_bus::{var, CommonSettings, ConfigError, ServiceSettings};

use crate::SERVICE;

/// Default HTTP port of the inventory API.
pub const DEFAULT_PORT: u16 = 8082;
/// Where the stock seed is read from unless `CHOREO_STOCK_SEED_FILE` says
/// otherwise (relative to the working directory, i.e. the repository root
/// under `make run`).
pub const DEFAULT_STOCK_SEED_FILE: &str = "deploy/seed/stock.json";

/// Everything the inventory service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// JSON array of `{"sku", "available"}`, loaded when `stock` is empty.
    pub stock_seed_file: PathBuf,
}

impl ServiceSettings for Settings {
    const OWN_ENV_VARS: &'static [&'static str] = &["CHOREO_STOCK_SEED_FILE"];

    fn common(&self) -> &CommonSettings {
        &self.common
    }

    /// Builds settings from explicit variables (tests pass their own).
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        let stock_seed_file =
            PathBuf::from(var(vars, "CHOREO_STOCK_SEED_FILE").unwrap_or(DEFAULT_STOCK_SEED_FILE));
        Ok(Self {
            common,
            stock_seed_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_bus::vars;

    #[test]
    fn defaults_work_for_make_run() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!(s.common.service, "inventory");
        assert_eq!(s.common.http_addr.port(), 8082);
        assert_eq!(s.stock_seed_file, PathBuf::from("deploy/seed/stock.json"));
    }

    #[test]
    fn variables_override_defaults() {
        let s = Settings::from_vars(&vars(&[
            ("CHOREO_STOCK_SEED_FILE", "/tmp/stock.json"),
            ("CHOREO_HTTP_ADDR", "127.0.0.1:0"),
        ]))
        .unwrap();
        assert_eq!(s.stock_seed_file, PathBuf::from("/tmp/stock.json"));
        assert_eq!(s.common.http_addr.port(), 0);
        assert!(Settings::from_vars(&vars(&[("CHOREO_HTTP_ADDR", "nope")])).is_err());
    }
}
