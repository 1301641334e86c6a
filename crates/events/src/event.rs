//! The [`Event`] trait and the macro that ties each Rust type to its
//! `.avsc` file, its topic and its place in [`AnyEvent`].
//!
//! The trait is static (associated consts, `Self`-returning functions) so
//! typed code gets its schema without a lookup; `ErasedEvent` is the
//! object-safe twin that lets the topic enums and [`AnyEvent`] dispatch
//! without a 16-arm `match` per method.

use std::collections::BTreeSet;
use std::fmt::Debug;

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as JsonValue;

use crate::{AnyEvent, Error, EventMetadata, Result, Topic};

/// `producer` of events typed in by hand (`choreo` CLI) without metadata.
pub const HAND_WRITTEN_PRODUCER: &str = "cli";

/// An integration event or command: one Rust type, one `.avsc` file, one
/// registry subject.
pub trait Event: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The topic this event is published on.
    const TOPIC: Topic;
    /// Short type name, equal to the Avro record name, e.g. `OrderPlaced`.
    const EVENT_TYPE: &'static str;

    /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`.
    fn full_name() -> &'static str;
    /// The `.avsc` text, compiled in from `schemas/<topic>/<Record>.avsc`;
    /// this is what gets registered.
    fn avsc() -> &'static str;
    /// [`Event::avsc`], parsed once.
    fn schema() -> &'static Schema;
    /// The event's metadata.
    fn metadata(&self) -> &EventMetadata;
    /// Wraps the event into its topic enum and [`AnyEvent`].
    fn into_any(self) -> AnyEvent;

    /// Registry subject (TopicRecordNameStrategy): `<topic>-<full name>`.
    fn subject() -> String {
        Self::TOPIC.subject(Self::full_name())
    }

    /// The event as an Avro value that validates against [`Event::schema`]
    /// (logical types applied), ready for `apache_avro::to_avro_datum`.
    fn to_avro_value(&self) -> Result<AvroValue> {
        apache_avro::to_value(self)
            .and_then(|value| value.resolve(Self::schema()))
            .map_err(|source| Error::avro(Self::full_name(), source))
    }

    /// Reads the event from an Avro value decoded with any writer schema
    /// that is BACKWARD compatible with ours: the value is first resolved
    /// against our schema, which drops fields a newer writer added and
    /// fills defaults for fields an older writer lacked.
    fn from_avro_value(value: AvroValue) -> Result<Self> {
        value
            .resolve(Self::schema())
            .and_then(|resolved| apache_avro::from_value(&resolved))
            .map_err(|source| Error::avro(Self::full_name(), source))
    }

    /// Reads the event from JSON shaped like its schema (as produced by
    /// [`AnyEvent::to_json`]). When `metadata` is absent, a top-level
    /// `"order_id"` is required and fresh metadata is generated with
    /// producer [`HAND_WRITTEN_PRODUCER`]. Unknown fields are rejected so
    /// a typo in a hand-written event is not silently dropped.
    fn from_json(json: JsonValue) -> Result<Self> {
        let what = Self::EVENT_TYPE;
        let JsonValue::Object(mut fields) = json else {
            return Err(Error::invalid_json(what, "expected a JSON object"));
        };
        match (fields.contains_key("metadata"), fields.remove("order_id")) {
            (true, None) => {}
            (true, Some(_)) => {
                return Err(Error::invalid_json(
                    what,
                    "give either `metadata` or a top-level `order_id`, not both",
                ))
            }
            (false, Some(JsonValue::String(order_id))) => {
                let metadata = EventMetadata::new(order_id, HAND_WRITTEN_PRODUCER, None);
                let metadata =
                    serde_json::to_value(metadata).map_err(|e| Error::invalid_json(what, e))?;
                fields.insert("metadata".to_owned(), metadata);
            }
            (false, Some(other)) => {
                return Err(Error::invalid_json(
                    what,
                    format!("`order_id` must be a string, got {other}"),
                ))
            }
            (false, None) => {
                return Err(Error::invalid_json(
                    what,
                    "missing field `metadata` (or a top-level `order_id` to generate it from)",
                ))
            }
        }
        let known = record_field_names(Self::schema());
        if let Some(unknown) = fields.keys().find(|key| !known.contains(key.as_str())) {
            let expected = known.iter().copied().collect::<Vec<_>>().join(", ");
            return Err(Error::invalid_json(
                what,
                format!("unknown field `{unknown}` (expected: order_id or {expected})"),
            ));
        }
        serde_json::from_value(JsonValue::Object(fields)).map_err(|e| Error::invalid_json(what, e))
    }
}

fn record_field_names(schema: &Schema) -> BTreeSet<&str> {
    match schema {
        Schema::Record(record) => record.fields.iter().map(|f| f.name.as_str()).collect(),
        _ => BTreeSet::new(),
    }
}

/// Parses a compiled-in `.avsc`. The files are part of the build and every
/// one is parsed by the contract tests, so failure here is a build defect,
/// not a runtime condition.
pub(crate) fn parse_avsc(avsc: &str, full_name: &str) -> Schema {
    Schema::parse_str(avsc).unwrap_or_else(|e| panic!("schema of {full_name} does not parse: {e}"))
}

/// Object-safe view of an [`Event`], for dispatch from the enums.
pub(crate) trait ErasedEvent {
    fn metadata(&self) -> &EventMetadata;
    fn event_type(&self) -> &'static str;
    fn full_name(&self) -> &'static str;
    fn topic(&self) -> Topic;
    fn schema(&self) -> &'static Schema;
    fn avsc(&self) -> &'static str;
    fn to_json(&self) -> JsonValue;
    fn to_avro_value(&self) -> Result<AvroValue>;
}

impl<T: Event> ErasedEvent for T {
    fn metadata(&self) -> &EventMetadata {
        Event::metadata(self)
    }
    fn event_type(&self) -> &'static str {
        T::EVENT_TYPE
    }
    fn full_name(&self) -> &'static str {
        T::full_name()
    }
    fn topic(&self) -> Topic {
        T::TOPIC
    }
    fn schema(&self) -> &'static Schema {
        T::schema()
    }
    fn avsc(&self) -> &'static str {
        T::avsc()
    }
    fn to_json(&self) -> JsonValue {
        // Plain structs of strings, integers and vectors: serde_json cannot
        // fail on them (it only fails on non-string map keys).
        serde_json::to_value(self).expect("event types serialize to JSON")
    }
    fn to_avro_value(&self) -> Result<AvroValue> {
        Event::to_avro_value(self)
    }
}

/// Implements [`Event`] for each record of one topic and defines the topic
/// enum over them. `dir` is the topic's folder under `schemas/`.
macro_rules! topic_events {
    (
        $(#[$enum_meta:meta])*
        pub enum $enum:ident {
            topic: $topic:ident,
            dir: $dir:literal,
            namespace: $ns:literal,
            any: $any:ident,
            events: [$($ty:ident),+ $(,)?] $(,)?
        }
    ) => {
        $(
            impl $crate::Event for $ty {
                const TOPIC: $crate::Topic = $crate::Topic::$topic;
                const EVENT_TYPE: &'static str = stringify!($ty);

                fn full_name() -> &'static str {
                    concat!($ns, ".", stringify!($ty))
                }

                fn avsc() -> &'static str {
                    include_str!(concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../schemas/",
                        $dir,
                        "/",
                        stringify!($ty),
                        ".avsc"
                    ))
                }

                fn schema() -> &'static ::apache_avro::Schema {
                    static SCHEMA: ::std::sync::OnceLock<::apache_avro::Schema> =
                        ::std::sync::OnceLock::new();
                    SCHEMA.get_or_init(|| {
                        $crate::event::parse_avsc(
                            <Self as $crate::Event>::avsc(),
                            <Self as $crate::Event>::full_name(),
                        )
                    })
                }

                fn metadata(&self) -> &$crate::EventMetadata {
                    &self.metadata
                }

                fn into_any(self) -> $crate::AnyEvent {
                    $crate::AnyEvent::$any($enum::$ty(self))
                }
            }

            impl From<$ty> for $enum {
                fn from(event: $ty) -> Self {
                    $enum::$ty(event)
                }
            }

            impl From<$ty> for $crate::AnyEvent {
                fn from(event: $ty) -> Self {
                    $crate::Event::into_any(event)
                }
            }
        )+

        $(#[$enum_meta])*
        #[derive(Debug, Clone, PartialEq)]
        #[allow(
            clippy::large_enum_variant,
            reason = "an event is moved a few times per message; plain variants keep matching simple"
        )]
        pub enum $enum {
            $(
                #[doc = concat!("[`", stringify!($ty), "`]")]
                $ty($ty),
            )+
        }

        impl $enum {
            pub(crate) fn erased(&self) -> &dyn $crate::event::ErasedEvent {
                match self {
                    $($enum::$ty(event) => event,)+
                }
            }

            /// The event's metadata.
            pub fn metadata(&self) -> &$crate::EventMetadata {
                self.erased().metadata()
            }

            /// Short type name, e.g. `OrderPlaced`.
            pub fn event_type(&self) -> &'static str {
                self.erased().event_type()
            }

            /// Avro full name, e.g. `io.choreo.orders.OrderPlaced`.
            pub fn full_name(&self) -> &'static str {
                self.erased().full_name()
            }
        }

        impl From<$enum> for $crate::AnyEvent {
            fn from(event: $enum) -> Self {
                $crate::AnyEvent::$any(event)
            }
        }

        impl TryFrom<$crate::AnyEvent> for $enum {
            /// The event, given back, when it is from another topic.
            type Error = $crate::AnyEvent;

            fn try_from(event: $crate::AnyEvent) -> Result<Self, Self::Error> {
                match event {
                    $crate::AnyEvent::$any(event) => Ok(event),
                    other => Err(other),
                }
            }
        }
    };
}

pub(crate) use topic_events;
