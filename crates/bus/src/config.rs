//! Kafka client settings.
//!
//! Defaults are tuned for the local tansu broker (see the design's measured
//! facts): a consumer group's first join takes about half of
//! `session.timeout.ms`, and a fetch is held up to `fetch.wait.max.ms` even
//! when data arrives, so both are kept short. Every librdkafka property can
//! be overridden, so SASL/TLS against a real cluster needs no code change.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Prefix of environment variables that become librdkafka properties:
/// `CHOREO_KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol=SASL_SSL`.
pub const ENV_PREFIX: &str = "CHOREO_KAFKA_";

/// `CHOREO_KAFKA_CONFIG="k=v,k2=v2"` for properties whose names contain
/// underscores (rare in librdkafka, but possible).
pub const ENV_RAW: &str = "CHOREO_KAFKA_CONFIG";

#[derive(Clone, Debug)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Applied last, over every default of this module.
    pub overrides: BTreeMap<String, String>,
}

impl KafkaSettings {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            overrides: BTreeMap::new(),
        }
    }

    /// Collects overrides from environment-like pairs. The caller passes the
    /// variables (`std::env::vars()`), so only a service's config module reads
    /// the environment.
    pub fn with_env_overrides(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, value) in vars {
            if name == ENV_RAW {
                for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
                    if let Some((k, v)) = pair.split_once('=') {
                        self.overrides
                            .insert(k.trim().to_owned(), v.trim().to_owned());
                    }
                }
            } else if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                if key.is_empty() || key == "BROKERS" {
                    continue;
                }
                self.overrides
                    .insert(key.to_ascii_lowercase().replace('_', "."), value);
            }
        }
        self
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.insert(key.to_owned(), value.into());
        self
    }

    fn apply(&self, mut config: ClientConfig) -> ClientConfig {
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.overrides {
            config.set(k, v);
        }
        config
    }

    /// Producer: idempotent (no duplicates or reordering on retry), all
    /// in-sync replicas acknowledge, a small linger so the relay's batches
    /// leave as few requests.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .set("socket.nagle.disable", "true");
        self.apply(c)
    }

    /// Consumer of a group: offsets are stored by the loop only after the
    /// handler's transaction commits (`enable.auto.offset.store=false`), and
    /// librdkafka's auto-commit commits only stored offsets.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "10")
            .set("socket.nagle.disable", "true");
        self.apply(c)
    }

    /// A consumer outside any group (CLI reads, tests): no commits.
    pub fn reader_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set(
            "group.id",
            format!("choreo-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("socket.nagle.disable", "true");
        self.apply(c)
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.apply(ClientConfig::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_become_librdkafka_properties() {
        let s = KafkaSettings::new("b:9092").with_env_overrides([
            ("CHOREO_KAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
            ("CHOREO_KAFKA_SESSION_TIMEOUT_MS".into(), "45000".into()),
            ("CHOREO_KAFKA_CONFIG".into(), "a_b=1, c.d=2".into()),
            ("CHOREO_KAFKA_BROKERS".into(), "ignored".into()),
            ("PATH".into(), "/bin".into()),
        ]);
        let c = s.consumer_config("g");
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("session.timeout.ms"), Some("45000"));
        assert_eq!(c.get("a_b"), Some("1"));
        assert_eq!(c.get("c.d"), Some("2"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(s.overrides.len(), 4);
    }
}
