//! Avro schemas as the registry sees them, and the compatibility rules
//! between them. Pure: no I/O, no locks.
//!
//! Owns the validated newtypes ([`AvroSchema`], [`SchemaId`],
//! [`VersionSpec`], [`CompatibilityLevel`]) so that the rest of the crate
//! never handles a schema string that has not parsed, and
//! [`CompatibilityLevel::check`], which delegates the actual reader/writer
//! resolution to apache-avro rather than re-implementing Avro's rules.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{error_chain, Error, Result};

/// A global schema id, as written after the magic byte of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SchemaId(pub u32);

impl fmt::Display for SchemaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A schema text that parsed as Avro, with the key used to decide whether
/// two registrations are "the same schema".
#[derive(Debug, Clone)]
pub struct AvroSchema {
    text: Arc<str>,
    parsed: Arc<Schema>,
    identity: Arc<str>,
}

impl AvroSchema {
    /// Parses `text`; anything apache-avro rejects is a 42201.
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Err(Error::InvalidSchema("Empty schema".to_owned()));
        }
        let parsed = Schema::parse_str(text).map_err(|e| Error::InvalidSchema(error_chain(&e)))?;
        let identity = identity(&parsed);
        Ok(Self {
            text: text.into(),
            parsed: Arc::new(parsed),
            identity: identity.into(),
        })
    }

    /// The schema exactly as it was first registered.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn parsed(&self) -> &Schema {
        &self.parsed
    }

    /// Equal for schemas that differ only in whitespace, key order, JSON
    /// spelling (`"string"` vs `{"type":"string"}`) or `doc`.
    ///
    /// This is deliberately *not* the bare Parsing Canonical Form: PCF also
    /// drops `default`, `aliases` and `logicalType`, and those change what a
    /// reader accepts, so "add a default to field x" must be a new version
    /// rather than a silent no-op returning the old id.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Avro's Parsing Canonical Form, for callers that want the fingerprint
    /// view of the schema.
    pub fn canonical_form(&self) -> String {
        self.parsed.canonical_form()
    }
}

/// apache-avro's own serialisation of the parsed schema (normalised
/// spelling, fixed key order), minus documentation.
fn identity(schema: &Schema) -> String {
    fn strip_doc(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("doc");
                for (key, child) in map.iter_mut() {
                    // A default is data, not schema: a record default may
                    // legitimately contain a field called "doc".
                    if key != "default" {
                        strip_doc(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(strip_doc),
            _ => {}
        }
    }
    match serde_json::to_value(schema) {
        Ok(mut value) => {
            strip_doc(&mut value);
            value.to_string()
        }
        // Serialising a schema apache-avro has just parsed does not fail;
        // falling back to PCF keeps identity total without a panic path.
        Err(_) => schema.canonical_form(),
    }
}

/// A version as addressed in a URL: a number or `latest` (`-1` is
/// Confluent's alias for `latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(u32),
}

impl FromStr for VersionSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" | "-1" => Ok(Self::Latest),
            _ => match s.parse::<i32>() {
                Ok(n) if n >= 1 => Ok(Self::Number(n as u32)),
                _ => Err(Error::InvalidVersion(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Number(n) => n.fmt(f),
        }
    }
}

/// Which earlier versions a new schema must stay compatible with, and in
/// which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// The new schema must read data written with the old one.
    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// The old schema must read data written with the new one.
    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Checks `new` against the live versions of a subject, oldest first.
    /// Non-transitive levels look only at the newest of them. Returns one
    /// message per violation; empty means compatible.
    pub fn check(self, new: &AvroSchema, previous: &[(u32, &AvroSchema)]) -> Vec<String> {
        let against = if self.transitive() {
            previous
        } else {
            &previous[previous.len().saturating_sub(1)..]
        };
        let mut messages = Vec::new();
        for (version, old) in against {
            if self.backward() {
                if let Err(why) = can_read(old.parsed(), new.parsed()) {
                    messages.push(format!(
                        "{}: the new schema cannot read data written with version {version}: {why}",
                        self.as_str()
                    ));
                }
            }
            if self.forward() {
                if let Err(why) = can_read(new.parsed(), old.parsed()) {
                    messages.push(format!(
                        "{}: version {version} cannot read data written with the new schema: {why}",
                        self.as_str()
                    ));
                }
            }
        }
        messages
    }
}

/// Whether `reader` can decode everything `writer` can produce.
fn can_read(writer: &Schema, reader: &Schema) -> std::result::Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        // Avro (and hence Confluent) counts "some values will fail to
        // resolve" as incompatible: a consumer must not crash on a record
        // that the producer was allowed to write.
        Ok(Compatibility::Partial) => Err(
            "only some values resolve (the reader lacks enum symbols or union branches the writer has)"
                .to_owned(),
        ),
        Err(e) => Err(error_chain(&e)),
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "NONE" => Self::None,
            "BACKWARD" => Self::Backward,
            "BACKWARD_TRANSITIVE" => Self::BackwardTransitive,
            "FORWARD" => Self::Forward,
            "FORWARD_TRANSITIVE" => Self::ForwardTransitive,
            "FULL" => Self::Full,
            "FULL_TRANSITIVE" => Self::FullTransitive,
            _ => return Err(Error::InvalidCompatibilityLevel(s.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> AvroSchema {
        AvroSchema::parse(&format!(
            r#"{{"type":"record","name":"Order","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn identity_ignores_layout_and_doc_but_not_defaults() {
        let a = record(r#"{"name":"id","type":"string"}"#);
        let b = AvroSchema::parse(
            r#"{ "name": "Order", "type": "record", "doc": "an order",
                 "fields": [ {"name": "id", "type": {"type": "string"}, "doc": "key"} ] }"#,
        )
        .unwrap();
        let c = record(r#"{"name":"id","type":"string","default":"x"}"#);
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.identity(), c.identity());
        assert_eq!(a.canonical_form(), c.canonical_form());
    }

    #[test]
    fn version_spec_parsing() {
        assert_eq!(
            "latest".parse::<VersionSpec>().unwrap(),
            VersionSpec::Latest
        );
        assert_eq!("-1".parse::<VersionSpec>().unwrap(), VersionSpec::Latest);
        assert_eq!("3".parse::<VersionSpec>().unwrap(), VersionSpec::Number(3));
        for bad in ["0", "-2", "x", "2147483648", ""] {
            assert!(matches!(
                bad.parse::<VersionSpec>(),
                Err(Error::InvalidVersion(_))
            ));
        }
    }

    #[test]
    fn levels_round_trip_and_reject_unknown() {
        for level in [
            CompatibilityLevel::None,
            CompatibilityLevel::Backward,
            CompatibilityLevel::BackwardTransitive,
            CompatibilityLevel::Forward,
            CompatibilityLevel::ForwardTransitive,
            CompatibilityLevel::Full,
            CompatibilityLevel::FullTransitive,
        ] {
            assert_eq!(level.as_str().parse::<CompatibilityLevel>().unwrap(), level);
        }
        assert_eq!(
            "full".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::Full
        );
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
    }

    #[test]
    fn directions() {
        let v1 = record(r#"{"name":"id","type":"string"}"#);
        let required = record(r#"{"name":"id","type":"string"},{"name":"qty","type":"int"}"#);
        let optional =
            record(r#"{"name":"id","type":"string"},{"name":"qty","type":"int","default":0}"#);
        let prev = [(1, &v1)];

        let backward = CompatibilityLevel::Backward.check(&required, &prev);
        assert_eq!(backward.len(), 1, "{backward:?}");
        assert!(backward[0].contains("qty"), "{backward:?}");
        assert!(CompatibilityLevel::Backward
            .check(&optional, &prev)
            .is_empty());

        assert!(CompatibilityLevel::Forward
            .check(&required, &prev)
            .is_empty());
        assert_eq!(CompatibilityLevel::Full.check(&required, &prev).len(), 1);
        assert!(CompatibilityLevel::Full.check(&optional, &prev).is_empty());

        let other_type = record(r#"{"name":"id","type":"int"}"#);
        assert_eq!(CompatibilityLevel::Full.check(&other_type, &prev).len(), 2);
        assert!(CompatibilityLevel::None
            .check(&other_type, &prev)
            .is_empty());
    }

    #[test]
    fn transitive_levels_look_past_the_latest_version() {
        let v1 = record(r#"{"name":"id","type":"string"}"#);
        let v2 = record(r#"{"name":"id","type":"string"},{"name":"qty","type":"int","default":0}"#);
        let v3 = record(r#"{"name":"id","type":"string"},{"name":"qty","type":"int"}"#);
        let prev = [(1, &v1), (2, &v2)];
        assert!(CompatibilityLevel::Backward.check(&v3, &prev).is_empty());
        let messages = CompatibilityLevel::BackwardTransitive.check(&v3, &prev);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("version 1"), "{messages:?}");
    }

    #[test]
    fn partial_resolution_is_incompatible() {
        let abc =
            AvroSchema::parse(r#"{"type":"enum","name":"S","symbols":["A","B","C"]}"#).unwrap();
        let ab = AvroSchema::parse(r#"{"type":"enum","name":"S","symbols":["A","B"]}"#).unwrap();
        // Removing a symbol: the new reader cannot decode old "C" values.
        assert_eq!(
            CompatibilityLevel::Backward.check(&ab, &[(1, &abc)]).len(),
            1
        );
        assert!(CompatibilityLevel::Backward
            .check(&abc, &[(1, &ab)])
            .is_empty());
    }

    #[test]
    fn rejects_garbage_and_empty() {
        assert!(matches!(
            AvroSchema::parse(""),
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            AvroSchema::parse(r#"{"type":"record","name":"X"}"#),
            Err(Error::InvalidSchema(_))
        ));
        assert!(matches!(
            AvroSchema::parse("{nope"),
            Err(Error::InvalidSchema(_))
        ));
    }
}
