//! The Confluent Schema Registry REST API on top of a [`Registry`].
//!
//! Owns the wire details clients depend on: URL layout, JSON field names,
//! the `application/vnd.schemaregistry.v1+json` content type on every
//! response, and Confluent's query flags (`deleted`, `permanent`,
//! `defaultToGlobal`, `verbose`). Request bodies are parsed from raw bytes
//! because clients disagree on the request content type (librdkafka,
//! curl and the Java client each send a different one) and Confluent
//! accepts them all.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use choreo_admin::AdminToken;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog::SubjectVersion;
use crate::error::{Error, Result};
use crate::schema::{AvroSchema, CompatibilityLevel, SchemaId, VersionSpec};
use crate::store::Registry;

/// The content type Confluent puts on every response.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

type Params = Query<HashMap<String, String>>;

/// All routes, with request logging and the response content type applied.
/// The deletes and the compatibility writes need `admin` when one is set;
/// registering, looking up and testing compatibility stay open (a
/// producer registers its schemas on its own).
pub fn router(registry: Registry, admin: &AdminToken) -> Router {
    let guarded = |route: axum::routing::MethodRouter<Registry>| {
        admin.require(route, |why| Error::Unauthorized(why).into_response())
    };
    Router::new()
        .route("/", get(|| async { Json(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route(
            "/subjects/{subject}",
            post(lookup).merge(guarded(delete(delete_subject))),
        )
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).merge(guarded(delete(delete_version))),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route("/schemas/types", get(|| async { Json(["AVRO"]) }))
        .route("/schemas/ids/{id}", get(get_schema_by_id))
        .route("/schemas/ids/{id}/schema", get(get_raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(get_usages_by_id))
        .route("/schemas/ids/{id}/subjects", get(get_subjects_by_id))
        .route(
            "/config",
            get(get_global_config).merge(guarded(put(put_global_config))),
        )
        .route(
            "/config/{subject}",
            get(get_subject_config).merge(guarded(
                put(put_subject_config).delete(delete_subject_config),
            )),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(test_compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(test_compatibility),
        )
        .fallback(|| async { Error::RouteNotFound })
        .layer(middleware::from_fn(log_and_label))
        .with_state(registry)
}

/// Logs every request at debug and stamps Confluent's content type on the
/// response, whichever handler (or error) produced it.
async fn log_and_label(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let started = Instant::now();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1));
    tracing::debug!(
        %method,
        %uri,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Confluent (JAX-RS) reads a boolean query flag as "true" in any case,
/// everything else as false.
fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::MalformedRequest(e.to_string()))
}

fn parse_id(id: &str) -> Result<SchemaId> {
    // Jersey answers a non-numeric path parameter with a plain 404.
    id.parse().map(SchemaId).map_err(|_| Error::RouteNotFound)
}

/// A schema in a request body: `{"schema": "...", "schemaType"?, "references"?}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Vec<Value>>,
}

impl SchemaRequest {
    fn parse(body: &[u8]) -> Result<AvroSchema> {
        let request: SchemaRequest = parse_body(body)?;
        if let Some(kind) = request.schema_type.as_deref() {
            if !kind.eq_ignore_ascii_case("AVRO") {
                return Err(Error::InvalidSchema(format!(
                    "schemaType {kind} is not supported: this registry only supports AVRO"
                )));
            }
        }
        if request.references.is_some_and(|r| !r.is_empty()) {
            return Err(Error::InvalidSchema(
                "schema references are not supported by this registry".to_owned(),
            ));
        }
        AvroSchema::parse(request.schema.as_deref().unwrap_or_default())
    }
}

/// `{"subject","version","id","schema"}`. `schemaType` is left out: Confluent
/// omits it for AVRO, and clients treat a missing type as AVRO.
#[derive(Serialize)]
struct SubjectVersionBody<'a> {
    subject: &'a str,
    version: u32,
    id: SchemaId,
    schema: &'a str,
}

impl IntoResponse for SubjectVersion {
    fn into_response(self) -> Response {
        Json(SubjectVersionBody {
            subject: &self.subject,
            version: self.version,
            id: self.id,
            schema: self.schema.text(),
        })
        .into_response()
    }
}

/// The schema document itself as the body.
fn raw_schema(schema: &AvroSchema) -> Response {
    schema.text().to_owned().into_response()
}

async fn list_subjects(
    State(registry): State<Registry>,
    Query(params): Params,
) -> Json<Vec<String>> {
    Json(registry.subjects(flag(&params, "deleted")))
}

async fn list_versions(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Json<Vec<u32>>> {
    Ok(Json(registry.versions(&subject, flag(&params, "deleted"))?))
}

async fn get_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<SubjectVersion> {
    registry.version(&subject, version.parse()?, flag(&params, "deleted"))
}

async fn get_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Response> {
    let found = registry.version(&subject, version.parse()?, flag(&params, "deleted"))?;
    Ok(raw_schema(&found.schema))
}

/// Always empty: without references nothing can refer to a version.
async fn referenced_by(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Json<[u32; 0]>> {
    registry.version(&subject, version.parse()?, true)?;
    Ok(Json([]))
}

async fn register(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let schema = SchemaRequest::parse(&body)?;
    let id = registry.register(&subject, &schema).await?;
    tracing::debug!(%subject, %id, "registered schema");
    Ok(Json(json!({ "id": id })))
}

async fn lookup(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<SubjectVersion> {
    let schema = SchemaRequest::parse(&body)?;
    registry.lookup(&subject, &schema, flag(&params, "deleted"))
}

async fn delete_subject(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Json<Vec<u32>>> {
    let deleted = registry
        .delete_subject(&subject, flag(&params, "permanent"))
        .await?;
    Ok(Json(deleted))
}

async fn delete_version(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Json<u32>> {
    let deleted = registry
        .delete_version(&subject, version.parse()?, flag(&params, "permanent"))
        .await?;
    Ok(Json(deleted))
}

async fn get_schema_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let schema = registry.schema(parse_id(&id)?)?;
    Ok(Json(json!({ "schema": schema.text() })))
}

async fn get_raw_schema_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(raw_schema(&registry.schema(parse_id(&id)?)?))
}

async fn get_usages_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Json<Vec<Value>>> {
    let usages = registry.usages(parse_id(&id)?, flag(&params, "deleted"))?;
    Ok(Json(
        usages
            .into_iter()
            .map(|(subject, version)| json!({ "subject": subject, "version": version }))
            .collect(),
    ))
}

async fn get_subjects_by_id(
    State(registry): State<Registry>,
    Path(id): Path<String>,
    Query(params): Params,
) -> Result<Json<Vec<String>>> {
    let mut subjects: Vec<String> = registry
        .usages(parse_id(&id)?, flag(&params, "deleted"))?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.dedup();
    Ok(Json(subjects))
}

/// `PUT /config[/{s}]` body. Confluent's field is `compatibility`; some
/// clients send the GET spelling, so accept that too.
#[derive(Deserialize)]
struct ConfigRequest {
    #[serde(alias = "compatibilityLevel")]
    compatibility: Option<String>,
}

impl ConfigRequest {
    fn parse(body: &[u8]) -> Result<CompatibilityLevel> {
        let request: ConfigRequest = parse_body(body)?;
        request.compatibility.as_deref().unwrap_or("null").parse()
    }
}

fn level_body(level: CompatibilityLevel) -> Json<Value> {
    Json(json!({ "compatibilityLevel": level }))
}

async fn get_global_config(State(registry): State<Registry>) -> Json<Value> {
    level_body(registry.global_level())
}

async fn put_global_config(State(registry): State<Registry>, body: Bytes) -> Result<Json<Value>> {
    let level = ConfigRequest::parse(&body)?;
    registry.set_global_level(level).await?;
    Ok(Json(json!({ "compatibility": level })))
}

async fn get_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>> {
    match registry.subject_level(&subject) {
        Some(level) => Ok(level_body(level)),
        None if flag(&params, "defaultToGlobal") => Ok(level_body(registry.global_level())),
        None => Err(Error::SubjectCompatibilityNotConfigured(subject)),
    }
}

async fn put_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let level = ConfigRequest::parse(&body)?;
    registry.set_subject_level(&subject, level).await?;
    Ok(Json(json!({ "compatibility": level })))
}

async fn delete_subject_config(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
) -> Result<Json<Value>> {
    Ok(level_body(registry.delete_subject_level(&subject).await?))
}

fn compatibility_body(messages: Vec<String>, verbose: bool) -> Json<Value> {
    let is_compatible = messages.is_empty();
    if verbose {
        Json(json!({ "is_compatible": is_compatible, "messages": messages }))
    } else {
        Json(json!({ "is_compatible": is_compatible }))
    }
}

async fn test_compatibility(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Result<Json<Value>> {
    let version: VersionSpec = version.parse()?;
    let schema = SchemaRequest::parse(&body)?;
    let messages = registry.test_compatibility(&subject, Some(version), &schema)?;
    Ok(compatibility_body(messages, flag(&params, "verbose")))
}

async fn test_compatibility_all(
    State(registry): State<Registry>,
    Path(subject): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Json<Value>> {
    let schema = SchemaRequest::parse(&body)?;
    let messages = registry.test_compatibility(&subject, None, &schema)?;
    Ok(compatibility_body(messages, flag(&params, "verbose")))
}
