//! The courier service's settings: the only place that reads the
//! environment. Everything has a default that works for `make run`.

use std::collections::BTreeSet;

use choreo_bus::{var, CommonSettings, ConfigError, ServiceSettings};

use crate::domain::{Country, Routing};
use crate::SERVICE;

/// Default HTTP port of the courier API.
pub const DEFAULT_PORT: u16 = 8084;
/// Countries served unless `CHOREO_COURIER_COUNTRIES` says otherwise.
pub const DEFAULT_COUNTRIES: &str = "DE,FR,NL,GB,US";
/// Carrier named on manifests unless `CHOREO_COURIER_CARRIER` says otherwise.
pub const DEFAULT_CARRIER: &str = "choreo-express";

/// Everything the courier service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// Served countries and the carrier.
    pub routing: Routing,
}

impl ServiceSettings for Settings {
    const OWN_ENV_VARS: &'static [&'static str] =
        &["CHOREO_COURIER_COUNTRIES", "CHOREO_COURIER_CARRIER"];

    fn common(&self) -> &CommonSettings {
        &self.common
    }

    /// Builds settings from explicit variables (tests pass their own).
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        let countries =
            parse_countries(var(vars, "CHOREO_COURIER_COUNTRIES").unwrap_or(DEFAULT_COUNTRIES))?;
        let carrier = var(vars, "CHOREO_COURIER_CARRIER")
            .unwrap_or(DEFAULT_CARRIER)
            .trim()
            .to_owned();
        Ok(Self {
            common,
            routing: Routing { countries, carrier },
        })
    }
}

/// A comma-separated list of ISO alpha-2 codes; any bad entry is an error
/// rather than silently serving fewer countries than intended.
fn parse_countries(list: &str) -> Result<BTreeSet<Country>, ConfigError> {
    let countries = list
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            Country::parse(entry).map_err(|e| ConfigError(format!("CHOREO_COURIER_COUNTRIES: {e}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if countries.is_empty() {
        return Err(ConfigError(format!(
            "CHOREO_COURIER_COUNTRIES: `{list}` lists no country"
        )));
    }
    Ok(countries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_bus::vars;

    fn codes(s: &Settings) -> Vec<&str> {
        s.routing.countries.iter().map(Country::as_str).collect()
    }

    #[test]
    fn defaults_work_for_make_run() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!(s.common.service, "courier");
        assert_eq!(s.common.http_addr.port(), 8084);
        assert_eq!(codes(&s), ["DE", "FR", "GB", "NL", "US"]);
        assert_eq!(s.routing.carrier, "choreo-express");
    }

    #[test]
    fn variables_override_defaults() {
        let s = Settings::from_vars(&vars(&[
            ("CHOREO_COURIER_COUNTRIES", " at, ch ,"),
            ("CHOREO_COURIER_CARRIER", "postie"),
        ]))
        .unwrap();
        assert_eq!(codes(&s), ["AT", "CH"]);
        assert_eq!(s.routing.carrier, "postie");
    }

    #[test]
    fn invalid_countries_are_a_startup_error() {
        for bad in ["DE,Germany", "DE;FR", "D1", "DEU", ", ,"] {
            let err = Settings::from_vars(&vars(&[("CHOREO_COURIER_COUNTRIES", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("CHOREO_COURIER_COUNTRIES"),
                "{err}"
            );
        }
    }
}
