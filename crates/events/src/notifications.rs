//! Topic `notifications` (`io.choreo.notifications`), written by the
//! communication service.

use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

use crate::event::topic_events;
use crate::EventMetadata;

/// A message was sent to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.choreo.notifications")]
pub struct CustomerNotified {
    /// Event metadata.
    pub metadata: EventMetadata,
    /// One of [`crate::templates`] (open set).
    pub template: String,
    /// Address the message went to.
    pub recipient: String,
    /// Id of the sent message (e.g. the mail Message-ID).
    pub message_id: String,
}

topic_events! {
    /// Everything published on `notifications`.
    pub enum NotificationsEvent {
        topic: Notifications,
        dir: "notifications",
        namespace: "io.choreo.notifications",
        any: Notifications,
        events: [CustomerNotified],
    }
}
