//! Kafka client settings.
//!
//! Defaults suit a local Apache Kafka and production alike: producers are
//! idempotent with `acks=all`; consumers store offsets only after their
//! transaction commits. A fetch with `fetch.min.bytes=1` is answered as soon
//! as data is appended, so `fetch.wait.max.ms` only bounds an idle poll.
//! The session timeout is short (6 s) so a killed member's partitions move
//! to the others quickly; the broker must allow it
//! (`group.min.session.timeout.ms`, crates/stack). Every librdkafka property can
//! be overridden, so SASL/TLS against a real cluster needs no code change.
//! An override named `producer.<property>` applies to producers only and
//! `consumer.<property>` to consumers only (no librdkafka property starts
//! with either word), so a producer-only setting such as
//! `enable.idempotence` does not make every consumer warn about it.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Prefix of environment variables that become librdkafka properties:
/// `CHOREO_KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol=SASL_SSL`,
/// `CHOREO_KAFKA_PRODUCER_LINGER_MS=5` → `linger.ms=5` for producers only.
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

    fn apply(&self, mut config: ClientConfig, role: Role) -> ClientConfig {
        config.set("bootstrap.servers", &self.brokers);
        // librdkafka backs off reconnects up to 10 s by default, so clients
        // of a broker that was down for a while found it again up to 10 s
        // after it was back; 1 s bounds that wait at little cost.
        config.set("reconnect.backoff.max.ms", "1000");
        for (k, v) in &self.overrides {
            match (k.split_once('.'), role) {
                (Some(("producer", prop)), Role::Producer) => config.set(prop, v),
                (Some(("consumer", prop)), Role::Consumer) => config.set(prop, v),
                (Some(("producer" | "consumer", _)), _) => continue,
                _ => config.set(k, v),
            };
        }
        config
    }

    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .set("socket.nagle.disable", "true");
        self.apply(c, Role::Producer)
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
            .set("fetch.wait.max.ms", "500")
            .set("socket.nagle.disable", "true");
        // Under the KIP-848 protocol the broker owns the session and the
        // heartbeat, and librdkafka refuses a client that sets them.
        if !self.consumer_protocol() {
            c.set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500");
        }
        self.apply(c, Role::Consumer)
    }

    /// Whether consumers use the KIP-848 group protocol
    /// (`group.protocol=consumer`) instead of the classic one.
    pub fn consumer_protocol(&self) -> bool {
        ["group.protocol", "consumer.group.protocol"]
            .iter()
            .any(|k| self.overrides.get(*k).is_some_and(|v| v == "consumer"))
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
        .set("fetch.wait.max.ms", "100")
        .set("socket.nagle.disable", "true");
        self.apply(c, Role::Consumer)
    }

    pub fn admin_config(&self) -> ClientConfig {
        self.apply(ClientConfig::new(), Role::Admin)
    }
}

/// Which kind of client a configuration is for: scoped overrides
/// (`producer.…`, `consumer.…`) apply to their kind only.
#[derive(Clone, Copy, Debug)]
enum Role {
    Producer,
    Consumer,
    Admin,
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

    #[test]
    fn scoped_overrides_reach_their_kind_of_client_only() {
        let s = KafkaSettings::new("b:9092").with_env_overrides([
            (
                "CHOREO_KAFKA_PRODUCER_ENABLE_IDEMPOTENCE".into(),
                "false".into(),
            ),
            ("CHOREO_KAFKA_CONSUMER_FETCH_WAIT_MAX_MS".into(), "1".into()),
        ]);
        let p = s.producer_config();
        assert_eq!(p.get("enable.idempotence"), Some("false"));
        assert_eq!(p.get("fetch.wait.max.ms"), None);
        assert_eq!(p.get("producer.enable.idempotence"), None);
        let c = s.consumer_config("g");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("1"));
        assert_eq!(c.get("enable.idempotence"), None);
        assert_eq!(c.get("consumer.fetch.wait.max.ms"), None);
        let r = s.reader_config();
        assert_eq!(r.get("fetch.wait.max.ms"), Some("1"));
        let a = s.admin_config();
        assert_eq!(a.get("enable.idempotence"), None);
        assert_eq!(a.get("fetch.wait.max.ms"), None);
    }
}
