//! Each service's HTTP contract as an OpenAPI 3.1 document, generated from
//! its handlers (`#[utoipa::path]`) and types (`ToSchema`) and served at
//! `GET /openapi.json`.
//!
//! A service documents what is particular to each operation: its
//! parameters, body and answers. [`finish`] adds, the same way for every
//! service, what every operation shares: the [`ErrorBody`] answers of the
//! runtime (500/503 from storage, 400/413/415/422 for a JSON body, 401 and
//! the bearer scheme for an admin write), so the document says exactly
//! what the host answers.

use std::collections::BTreeMap;

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::ToSchema;

pub use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
pub use utoipa_axum::routes;

/// The name of the admin token's security scheme.
pub const ADMIN_SCHEME: &str = "admin_token";
/// The tag of the host's probes, which answer no storage errors.
pub const PROBES_TAG: &str = "probes";

/// Every error answer's body (see [`crate::ApiError`]).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the body `ApiError` writes
pub struct ErrorBody {
    /// What went wrong, for a person.
    error: String,
    /// For an invalid request: one problem per offending field.
    fields: Option<BTreeMap<String, String>>,
}

fn error_answer(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn add_answer(op: &mut Operation, status: u16, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_answer(description));
}

/// Marks the operations of `routes` as admin writes: bearer token, 401.
pub fn admin_operations<S>(mut routes: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    for item in routes.1.paths.values_mut() {
        for op in operations(item) {
            op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                ADMIN_SCHEME,
                Vec::<String>::new(),
            )]);
            add_answer(op, 401, "Without the admin token, when one is set");
        }
    }
    routes
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document `GET /openapi.json` serves for `service`: its title and
/// version, and every operation's shared answers.
pub fn finish(service: &str, mut doc: OpenApi) -> OpenApi {
    doc.info.title = format!("choreo {service}");
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.info.description = Some(format!(
        "The {service} service's HTTP API. Every error answers a JSON body \
         `{{\"error\": …}}`, with `fields` naming each offending field of an \
         invalid request."
    ));
    doc.info.license = None;
    doc.info.contact = None;
    let mut admin = false;
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            admin |= op.security.is_some();
            if op.tags.iter().flatten().any(|t| t == PROBES_TAG) {
                continue;
            }
            if op.request_body.is_some() {
                add_answer(op, 400, "The body is not JSON");
                add_answer(op, 413, "The body is over the 2 MB limit");
                add_answer(op, 415, "The body is not sent as application/json");
                add_answer(op, 422, "The body breaks the field contract");
            }
            add_answer(op, 500, "A failure on the server");
            add_answer(op, 503, "Temporarily unavailable; try again (Retry-After)");
        }
    }
    let components = doc
        .components
        .get_or_insert_with(utoipa::openapi::Components::new);
    components
        .schemas
        .entry("ErrorBody".to_owned())
        .or_insert_with(<ErrorBody as utoipa::PartialSchema>::schema);
    if admin {
        components.add_security_scheme(
            ADMIN_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin token (CHOREO_ADMIN_TOKEN)"))
                    .build(),
            ),
        );
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[utoipa::path(put, path = "/things/{id}", request_body = String,
        params(("id" = String, Path)), responses((status = 200, body = String)))]
    #[allow(dead_code)]
    async fn put_thing() {}

    #[utoipa::path(get, path = "/healthz", tag = "probes", responses((status = 200)))]
    #[allow(dead_code)]
    async fn healthz() {}

    #[test]
    fn shared_answers_are_added_to_each_operation_by_its_kind() {
        let (_, doc) = OpenApiRouter::<()>::new()
            .routes(admin_operations(routes!(put_thing)))
            .routes(routes!(healthz))
            .split_for_parts();
        let doc = serde_json::to_value(finish("stock", doc)).unwrap();
        assert_eq!(doc["info"]["title"], "choreo stock");
        let put = &doc["paths"]["/things/{id}"]["put"];
        let statuses: Vec<&str> = put["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "413", "415", "422", "500", "503"]
        );
        assert_eq!(put["security"][0], serde_json::json!({ ADMIN_SCHEME: [] }));
        assert_eq!(
            put["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert_eq!(
            doc["components"]["securitySchemes"][ADMIN_SCHEME]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        let probe = doc["paths"]["/healthz"]["get"]["responses"]
            .as_object()
            .unwrap();
        assert_eq!(probe.keys().collect::<Vec<_>>(), ["200"]);
    }
}
