//! Topic names, their owners and the dead-letter topic naming.
//!
//! Every other crate spells topic names through [`Topic`] so a typo is a
//! compile error instead of a consumer silently waiting on an empty topic.

use std::fmt;
use std::str::FromStr;

/// The services of the saga, by the name they use as `producer`, in
/// metrics and in `dlq.<service>`.
pub const SERVICES: [&str; 5] = ["order", "inventory", "courier", "payment", "communication"];

/// Which topics each service's consumer group reads (the group is named
/// after the service): the saga's one topology. Each service subscribes to
/// [`consumed_by`] its name; tools that measure lag or wait for a quiet
/// system, the hostile-topics test and the docs read it from here.
pub const CONSUMERS: [(&str, &[&str]); 5] = [
    (
        "order",
        &[
            Topic::OrderRequests.name(),
            Topic::Inventory.name(),
            Topic::Shipments.name(),
            Topic::Payments.name(),
        ],
    ),
    (
        "inventory",
        &[Topic::Orders.name(), Topic::Shipments.name()],
    ),
    (
        "courier",
        &[
            Topic::Inventory.name(),
            Topic::Payments.name(),
            Topic::Orders.name(),
        ],
    ),
    ("payment", &[Topic::Shipments.name(), Topic::Orders.name()]),
    ("communication", &[Topic::Orders.name()]),
];

/// The topics `service` consumes ([`CONSUMERS`]); none for a name that is
/// not a service.
pub fn consumed_by(service: &str) -> &'static [&'static str] {
    CONSUMERS
        .iter()
        .find(|(name, _)| *name == service)
        .map_or(&[], |(_, topics)| *topics)
}

/// One Kafka topic per owning service, plus the command ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `orders`, owned by the order service.
    Orders,
    /// `inventory`, owned by the inventory service.
    Inventory,
    /// `shipments`, owned by the courier service.
    Shipments,
    /// `payments`, owned by the payment service.
    Payments,
    /// `notifications`, owned by the communication service.
    Notifications,
    /// `order-requests`: commands written by people and clients, consumed
    /// by the order service.
    OrderRequests,
}

impl Topic {
    /// Every topic, in saga order, for topic creation and `watch`.
    pub const ALL: [Topic; 6] = [
        Topic::Orders,
        Topic::Inventory,
        Topic::Shipments,
        Topic::Payments,
        Topic::Notifications,
        Topic::OrderRequests,
    ];

    /// Partitions per topic. Keys are order ids, so this bounds how many
    /// consumers of one group can share the load.
    pub const PARTITIONS: i32 = 6;

    /// The Kafka topic name.
    pub const fn name(self) -> &'static str {
        match self {
            Topic::Orders => "orders",
            Topic::Inventory => "inventory",
            Topic::Shipments => "shipments",
            Topic::Payments => "payments",
            Topic::Notifications => "notifications",
            Topic::OrderRequests => "order-requests",
        }
    }

    /// The service that writes the topic. Nobody writes `order-requests`
    /// from inside the system; its owner is the order service, which is
    /// the only consumer.
    pub const fn owner(self) -> &'static str {
        match self {
            Topic::Orders | Topic::OrderRequests => "order",
            Topic::Inventory => "inventory",
            Topic::Shipments => "courier",
            Topic::Payments => "payment",
            Topic::Notifications => "communication",
        }
    }

    /// The topic with this Kafka name, if any.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|topic| topic.name() == name)
    }

    /// Schema registry subject of a record on this topic
    /// (TopicRecordNameStrategy: `<topic>-<namespace.Record>`).
    pub fn subject(self, full_name: &str) -> String {
        format!("{}-{full_name}", self.name())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Topic {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::from_name(s).ok_or_else(|| format!("unknown topic `{s}`"))
    }
}

/// The dead-letter topic of a consuming service: `dlq.<service>`.
pub fn dlq_topic(service: &str) -> String {
    format!("dlq.{service}")
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_service_consumes_known_topics_and_others_none() {
        for service in SERVICES {
            let topics = consumed_by(service);
            assert!(!topics.is_empty(), "{service}");
            for t in topics {
                assert!(t.parse::<Topic>().is_ok(), "{service}: {t}");
            }
        }
        assert!(consumed_by("nobody").is_empty());
        assert_eq!(consumed_by("communication"), ["orders"]);
    }

    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for topic in Topic::ALL {
            assert_eq!(Topic::from_name(topic.name()), Some(topic));
            assert_eq!(topic.name().parse::<Topic>(), Ok(topic));
        }
        assert_eq!(Topic::from_name("dlq.order"), None);
        assert_eq!(Topic::OrderRequests.name(), "order-requests");
    }

    #[test]
    fn every_owner_is_a_service_and_every_service_owns_a_topic() {
        for topic in Topic::ALL {
            assert!(SERVICES.contains(&topic.owner()), "{topic}");
        }
        for service in SERVICES {
            assert!(Topic::ALL.iter().any(|t| t.owner() == service), "{service}");
        }
        assert_eq!(Topic::Shipments.owner(), "courier");
    }

    #[test]
    fn dlq_and_subject_names() {
        assert_eq!(dlq_topic("payment"), "dlq.payment");
        assert_eq!(
            Topic::Orders.subject("io.choreo.orders.OrderPlaced"),
            "orders-io.choreo.orders.OrderPlaced"
        );
    }
}
