//! The registry's state as a plain value: schemas by id, versions by
//! subject, compatibility levels. Pure: no I/O, no locks.
//!
//! Every mutation is split in two, so that SQLite and memory can never
//! disagree: a *decision* method reads the catalog and returns the
//! [`Change`]s it implies (or the error a client should see), the store
//! persists those changes, and only then [`Catalog::apply`] folds them into
//! memory.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::schema::{AvroSchema, CompatibilityLevel, SchemaId, VersionSpec};

/// One fact to persist and then apply.
#[derive(Debug, Clone)]
pub enum Change {
    InsertSchema {
        id: SchemaId,
        schema: AvroSchema,
    },
    InsertVersion {
        subject: String,
        version: u32,
        id: SchemaId,
    },
    SoftDeleteVersions {
        subject: String,
        versions: Vec<u32>,
    },
    HardDeleteVersions {
        subject: String,
        versions: Vec<u32>,
    },
    SetGlobalLevel(CompatibilityLevel),
    SetSubjectLevel {
        subject: String,
        level: CompatibilityLevel,
    },
    DeleteSubjectLevel {
        subject: String,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct VersionEntry {
    pub id: SchemaId,
    pub deleted: bool,
}

/// What `GET /subjects/{s}/versions/{v}` and the lookup answer.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: SchemaId,
    pub schema: AvroSchema,
}

/// Result of a registration decision.
#[derive(Debug)]
pub(crate) struct Registration {
    pub id: SchemaId,
    pub changes: Vec<Change>,
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    // Schemas are never removed, even when every version using them is
    // hard-deleted: ids must never be reused, and consumers may still hold
    // messages written with them.
    schemas: BTreeMap<SchemaId, AvroSchema>,
    ids_by_identity: HashMap<String, SchemaId>,
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    global_level: CompatibilityLevel,
    subject_levels: HashMap<String, CompatibilityLevel>,
}

impl Catalog {
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::InsertSchema { id, schema } => {
                self.ids_by_identity
                    .insert(schema.identity().to_owned(), id);
                self.schemas.insert(id, schema);
            }
            Change::InsertVersion {
                subject,
                version,
                id,
            } => {
                self.subjects
                    .entry(subject)
                    .or_default()
                    .insert(version, VersionEntry { id, deleted: false });
            }
            Change::SoftDeleteVersions { subject, versions } => {
                if let Some(entries) = self.subjects.get_mut(&subject) {
                    for v in versions {
                        if let Some(entry) = entries.get_mut(&v) {
                            entry.deleted = true;
                        }
                    }
                }
            }
            Change::HardDeleteVersions { subject, versions } => {
                if let Some(entries) = self.subjects.get_mut(&subject) {
                    for v in versions {
                        entries.remove(&v);
                    }
                    if entries.is_empty() {
                        self.subjects.remove(&subject);
                    }
                }
            }
            Change::SetGlobalLevel(level) => self.global_level = level,
            Change::SetSubjectLevel { subject, level } => {
                self.subject_levels.insert(subject, level);
            }
            Change::DeleteSubjectLevel { subject } => {
                self.subject_levels.remove(&subject);
            }
        }
    }

    fn next_id(&self) -> SchemaId {
        SchemaId(self.schemas.keys().next_back().map_or(1, |id| id.0 + 1))
    }

    /// Subjects with at least one version (live ones only unless
    /// `include_deleted`).
    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| include_deleted || versions.values().any(|e| !e.deleted))
            .map(|(subject, _)| subject.clone())
            .collect()
    }

    /// A subject's versions, failing with 40401 when it has none visible.
    fn entries(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<impl Iterator<Item = (u32, VersionEntry)> + '_> {
        let entries = self
            .subjects
            .get(subject)
            .filter(|versions| include_deleted || versions.values().any(|e| !e.deleted))
            .ok_or_else(|| Error::SubjectNotFound(subject.to_owned()))?;
        Ok(entries
            .iter()
            .filter(move |(_, e)| include_deleted || !e.deleted)
            .map(|(v, e)| (*v, *e)))
    }

    pub fn versions(&self, subject: &str, include_deleted: bool) -> Result<Vec<u32>> {
        Ok(self
            .entries(subject, include_deleted)?
            .map(|(v, _)| v)
            .collect())
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let mut entries = self.entries(subject, include_deleted)?;
        let found = match spec {
            VersionSpec::Latest => entries.last(),
            VersionSpec::Number(n) => entries.find(|(v, _)| *v == n),
        };
        let (version, entry) = found.ok_or_else(|| Error::VersionNotFound {
            subject: subject.to_owned(),
            version: spec.to_string(),
        })?;
        Ok(self.subject_version(subject, version, entry.id))
    }

    fn subject_version(&self, subject: &str, version: u32, id: SchemaId) -> SubjectVersion {
        SubjectVersion {
            subject: subject.to_owned(),
            version,
            id,
            schema: self.schemas[&id].clone(),
        }
    }

    pub fn schema(&self, id: SchemaId) -> Result<&AvroSchema> {
        self.schemas.get(&id).ok_or(Error::SchemaIdNotFound(id))
    }

    /// Every `(subject, version)` that uses schema `id`.
    pub fn usages(&self, id: SchemaId, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        self.schema(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |(_, e)| e.id == id && (include_deleted || !e.deleted))
                    .map(move |(v, _)| (subject.clone(), *v))
            })
            .collect())
    }

    /// The version of `subject` holding a schema equal to `schema`.
    pub fn lookup(
        &self,
        subject: &str,
        schema: &AvroSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let id = self.ids_by_identity.get(schema.identity());
        let found = self
            .entries(subject, include_deleted)?
            .filter(|(_, e)| Some(&e.id) == id)
            .last();
        let (version, entry) = found.ok_or_else(|| Error::SchemaNotFound {
            subject: subject.to_owned(),
        })?;
        Ok(self.subject_version(subject, version, entry.id))
    }

    pub fn global_level(&self) -> CompatibilityLevel {
        self.global_level
    }

    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject).unwrap_or(self.global_level)
    }

    fn live(&self, subject: &str) -> Vec<(u32, &AvroSchema)> {
        self.subjects
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|(_, e)| !e.deleted)
            .map(|(v, e)| (*v, &self.schemas[&e.id]))
            .collect()
    }

    /// Decides `POST /subjects/{s}/versions`.
    pub fn register(&self, subject: &str, schema: &AvroSchema) -> Result<Registration> {
        if let Ok(existing) = self.lookup(subject, schema, false) {
            return Ok(Registration {
                id: existing.id,
                changes: Vec::new(),
            });
        }
        let messages = self
            .effective_level(subject)
            .check(schema, &self.live(subject));
        if !messages.is_empty() {
            return Err(Error::Incompatible {
                subject: subject.to_owned(),
                messages,
            });
        }
        let mut changes = Vec::new();
        // Like Confluent, one schema has one id across all subjects.
        let id = match self.ids_by_identity.get(schema.identity()) {
            Some(id) => *id,
            None => {
                let id = self.next_id();
                changes.push(Change::InsertSchema {
                    id,
                    schema: schema.clone(),
                });
                id
            }
        };
        // Soft-deleted versions keep their numbers, so a new version never
        // re-uses one a consumer may have seen.
        let version = self
            .subjects
            .get(subject)
            .and_then(|versions| versions.keys().next_back())
            .map_or(1, |v| v + 1);
        changes.push(Change::InsertVersion {
            subject: subject.to_owned(),
            version,
            id,
        });
        Ok(Registration { id, changes })
    }

    /// Decides `POST /compatibility/subjects/{s}/versions[/{v}]`: against
    /// one version when given, otherwise as a registration would be checked.
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        schema: &AvroSchema,
    ) -> Result<Vec<String>> {
        let level = self.effective_level(subject);
        match version {
            Some(spec) => {
                let old = self.version(subject, spec, false)?;
                Ok(level.check(schema, &[(old.version, &old.schema)]))
            }
            None => Ok(level.check(schema, &self.live(subject))),
        }
    }

    /// Decides `DELETE /subjects/{s}`; returns the versions removed.
    pub fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<u32>, Vec<Change>)> {
        let all: Vec<(u32, VersionEntry)> = self.entries(subject, true)?.collect();
        let live: Vec<u32> = all
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(v, _)| *v)
            .collect();
        let subject = subject.to_owned();
        if permanent {
            if !live.is_empty() {
                return Err(Error::SubjectNotSoftDeleted(subject));
            }
            let versions: Vec<u32> = all.iter().map(|(v, _)| *v).collect();
            let mut changes = vec![Change::HardDeleteVersions {
                subject: subject.clone(),
                versions: versions.clone(),
            }];
            if self.subject_levels.contains_key(&subject) {
                changes.push(Change::DeleteSubjectLevel { subject });
            }
            Ok((versions, changes))
        } else {
            if live.is_empty() {
                return Err(Error::SubjectSoftDeleted(subject));
            }
            let changes = vec![Change::SoftDeleteVersions {
                subject,
                versions: live.clone(),
            }];
            Ok((live, changes))
        }
    }

    /// Decides `DELETE /subjects/{s}/versions/{v}`; returns the version
    /// removed.
    pub fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<(u32, Vec<Change>)> {
        // A numbered version is found even when soft deleted, so a repeated
        // soft delete says so (40406) and a permanent one can proceed;
        // `latest` always means the newest live version, as in Confluent.
        let found = self.version(subject, spec, spec != VersionSpec::Latest)?;
        let version = found.version;
        let deleted = self.subjects[subject][&version].deleted;
        let subject = subject.to_owned();
        match (permanent, deleted) {
            (false, true) => Err(Error::VersionSoftDeleted { subject, version }),
            (true, false) => Err(Error::VersionNotSoftDeleted { subject, version }),
            (false, false) => Ok((
                version,
                vec![Change::SoftDeleteVersions {
                    subject,
                    versions: vec![version],
                }],
            )),
            (true, true) => Ok((
                version,
                vec![Change::HardDeleteVersions {
                    subject,
                    versions: vec![version],
                }],
            )),
        }
    }

    /// Decides `DELETE /config/{s}`; returns the level that applied before.
    pub fn delete_subject_level(&self, subject: &str) -> Result<(CompatibilityLevel, Vec<Change>)> {
        match self.subject_level(subject) {
            Some(level) => Ok((
                level,
                vec![Change::DeleteSubjectLevel {
                    subject: subject.to_owned(),
                }],
            )),
            None if self.subjects.contains_key(subject) => Ok((self.global_level, Vec::new())),
            None => Err(Error::SubjectNotFound(subject.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> AvroSchema {
        AvroSchema::parse(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    fn register(catalog: &mut Catalog, subject: &str, s: &AvroSchema) -> Result<SchemaId> {
        let Registration { id, changes } = catalog.register(subject, s)?;
        changes.into_iter().for_each(|c| catalog.apply(c));
        Ok(id)
    }

    #[test]
    fn ids_are_global_and_versions_per_subject() {
        let mut c = Catalog::default();
        let a = schema(r#"{"name":"a","type":"string"}"#);
        let b = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":1}"#);
        assert_eq!(register(&mut c, "x", &a).unwrap(), SchemaId(1));
        assert_eq!(register(&mut c, "x", &a).unwrap(), SchemaId(1));
        assert_eq!(register(&mut c, "x", &b).unwrap(), SchemaId(2));
        assert_eq!(register(&mut c, "y", &b).unwrap(), SchemaId(2));
        assert_eq!(c.versions("x", false).unwrap(), vec![1, 2]);
        assert_eq!(c.versions("y", false).unwrap(), vec![1]);
        assert_eq!(
            c.usages(SchemaId(2), false).unwrap(),
            vec![("x".to_owned(), 2), ("y".to_owned(), 1)]
        );
    }

    #[test]
    fn deletes_keep_version_numbers_and_ids() {
        let mut c = Catalog::default();
        let a = schema(r#"{"name":"a","type":"string"}"#);
        register(&mut c, "x", &a).unwrap();
        let (versions, changes) = c.delete_subject("x", false).unwrap();
        assert_eq!(versions, vec![1]);
        changes.into_iter().for_each(|ch| c.apply(ch));
        assert!(matches!(
            c.delete_subject("x", false),
            Err(Error::SubjectSoftDeleted(_))
        ));
        assert!(c.subjects(false).is_empty());
        assert_eq!(c.subjects(true), vec!["x".to_owned()]);

        // Re-registering after a soft delete makes version 2, same id.
        assert_eq!(register(&mut c, "x", &a).unwrap(), SchemaId(1));
        assert_eq!(c.versions("x", true).unwrap(), vec![1, 2]);
        assert!(matches!(
            c.delete_subject("x", true),
            Err(Error::SubjectNotSoftDeleted(_))
        ));
    }
}
