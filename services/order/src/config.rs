//! The service's settings: the only module that reads the environment,
//! once, into one typed [`Settings`].

use std::time::Duration;

use choreo_bus::{var, CommonSettings, ConfigError, ServiceSettings};

/// The service's name: consumer group, inbox consumer, `producer` of its
/// events and `dlq.order`.
pub const SERVICE: &str = "order";
/// `CHOREO_HTTP_ADDR` defaults to `127.0.0.1:<this>`.
pub const DEFAULT_PORT: u16 = 8080;
/// How long an order may stay open before it is cancelled with `TIMEOUT`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(30_000);
/// How often the deadline timer looks for due orders.
pub const DEFAULT_TIMER_TICK: Duration = Duration::from_millis(200);

/// Everything the order service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    /// `CHOREO_ORDER_DEADLINE_MS`.
    pub deadline: Duration,
    /// `CHOREO_ORDER_TIMER_TICK_MS`.
    pub timer_tick: Duration,
}

impl ServiceSettings for Settings {
    const OWN_ENV_VARS: &'static [&'static str] =
        &["CHOREO_ORDER_DEADLINE_MS", "CHOREO_ORDER_TIMER_TICK_MS"];

    fn common(&self) -> &CommonSettings {
        &self.common
    }

    /// Builds settings from `vars` (name, value) pairs; tests pass their
    /// own instead of mutating the process environment.
    fn from_vars(vars: &[(String, String)]) -> Result<Self, ConfigError> {
        let common = CommonSettings::from_vars(SERVICE, DEFAULT_PORT, vars)?;
        Ok(Settings {
            common,
            deadline: millis(vars, "CHOREO_ORDER_DEADLINE_MS", DEFAULT_DEADLINE)?,
            timer_tick: millis(vars, "CHOREO_ORDER_TIMER_TICK_MS", DEFAULT_TIMER_TICK)?,
        })
    }
}

fn millis(
    vars: &[(String, String)],
    name: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(raw) = var(vars, name) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(ConfigError(format!(
            "{name}: expected a positive number of milliseconds, got {raw:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use choreo_bus::vars;

    #[test]
    fn defaults_work_for_make_run() {
        let s = Settings::from_vars(&[]).unwrap();
        assert_eq!(s.common.http_addr.port(), DEFAULT_PORT);
        assert_eq!(s.common.service, SERVICE);
        assert_eq!(s.deadline, Duration::from_secs(30));
        assert_eq!(s.timer_tick, Duration::from_millis(200));
        assert!(s.common.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn order_variables_override_and_are_checked() {
        let s = Settings::from_vars(&vars(&[
            ("CHOREO_ORDER_DEADLINE_MS", "1500"),
            ("CHOREO_ORDER_TIMER_TICK_MS", "50"),
            ("CHOREO_HTTP_ADDR", "127.0.0.1:0"),
        ]))
        .unwrap();
        assert_eq!(s.deadline, Duration::from_millis(1500));
        assert_eq!(s.timer_tick, Duration::from_millis(50));
        assert_eq!(s.common.http_addr.port(), 0);

        for bad in ["0", "-5", "soon"] {
            let err = Settings::from_vars(&vars(&[("CHOREO_ORDER_DEADLINE_MS", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("CHOREO_ORDER_DEADLINE_MS"),
                "{err}"
            );
        }
    }
}
