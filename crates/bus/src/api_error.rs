//! One error answer for every service's HTTP API: a status and a JSON body
//! `{"error": "<what went wrong>"}`, plus `"fields": {"<field>": "<problem>"}`
//! when a request broke the field contract. Server-side failures are
//! logged with their cause and answered without it (it may name tables or
//! hosts): 503 when trying again may work, 500 otherwise — the same rule
//! in every service.

use std::collections::BTreeMap;
use std::fmt::Display;

use std::future::Future;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use choreo_events::OrderId;
use serde_json::{json, Map, Value};

use crate::openapi::UtoipaMethodRouter;

/// An HTTP error: status and JSON body.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request cannot be read (malformed JSON, a bad query).
    BadRequest(String),
    /// 401: an admin write without the admin token ([`admin_only`]).
    Unauthorized(String),
    /// 404.
    NotFound(String),
    /// 405: the path exists, the method does not.
    MethodNotAllowed(String),
    /// 409: the resource changed under the request.
    Conflict(String),
    /// 413: the body is over the server's limit.
    PayloadTooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 422: readable but not acceptable as a whole.
    Unprocessable(String),
    /// 422 naming each offending field; `extra` adds keys to the body.
    Invalid {
        error: String,
        fields: BTreeMap<String, String>,
        extra: Map<String, Value>,
    },
    /// 503: may work on retry.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl ApiError {
    /// 422 with one entry per field, summarised as `field: problem; …`.
    pub fn invalid_fields<K: Display, V: Display>(
        fields: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let fields: BTreeMap<String, String> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let error = fields
            .iter()
            .map(|(field, problem)| format!("{field}: {problem}"))
            .collect::<Vec<_>>()
            .join("; ");
        Self::Invalid {
            error,
            fields,
            extra: Map::new(),
        }
    }

    /// A failure on this side: logged with `cause`; 503 when `retryable`,
    /// else 500.
    pub fn server(retryable: bool, cause: &dyn Display) -> Self {
        tracing::error!(error = %cause, retryable, "request failed");
        if retryable {
            Self::Unavailable("temporarily unavailable, try again".into())
        } else {
            Self::Internal("internal error".into())
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) | Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn body(self) -> Value {
        match self {
            Self::Invalid {
                error,
                fields,
                mut extra,
            } => {
                extra.insert("error".into(), Value::String(error));
                extra.insert("fields".into(), json!(fields));
                Value::Object(extra)
            }
            Self::BadRequest(m)
            | Self::Unauthorized(m)
            | Self::NotFound(m)
            | Self::MethodNotAllowed(m)
            | Self::Conflict(m)
            | Self::PayloadTooLarge(m)
            | Self::UnsupportedMediaType(m)
            | Self::Unprocessable(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => json!({ "error": m }),
        }
    }
}

/// The answer of `GET /<things>/{order_id}`: `find` reads the order's
/// thing from the service's state; the answer is it as JSON, or a 404 `no
/// <what> for order `<id>`` both when nothing is stored and when the id is
/// outside the field contract (no such order can exist, and a checker
/// walking every order is not stopped by one).
pub async fn find_by_order<T, F, Fut>(
    what: &str,
    order_id: &str,
    find: F,
) -> Result<Json<T>, ApiError>
where
    F: FnOnce(OrderId) -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    let not_found = || ApiError::NotFound(format!("no {what} for order `{order_id}`"));
    let id = OrderId::parse(order_id).map_err(|_| not_found())?;
    find(id).await?.map(Json).ok_or_else(not_found)
}

/// A JSON request body, read the same way by every service: without a
/// JSON `Content-Type` 415, over the body limit 413, not JSON 400, JSON of
/// the wrong shape for `T` 422 — each with the usual `{"error": …}` body
/// (axum's own rejections are plain text, with 400 for an oversized body).
#[derive(Debug, Clone)]
pub struct JsonBody<T = Value>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        <Json<T> as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map(|Json(value)| Self(value))
            .map_err(json_rejection)
    }
}

/// The [`ApiError`] for a body axum's JSON extractor refused.
pub fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection;
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::Unprocessable(e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body too large (over the 2 MB limit)".into())
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `routes` (writes outside the saga: stock, balances) answering 401
/// `{"error": …}` without the admin token, when one is set, and documented
/// so ([`crate::openapi::admin_operations`]).
pub fn admin_only<S>(
    token: &choreo_admin::AdminToken,
    routes: UtoipaMethodRouter<S>,
) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let (schemas, paths, route) = crate::openapi::admin_operations(routes);
    let route = token.require(route, |why| {
        ApiError::Unauthorized(why.message().to_owned()).into_response()
    });
    (schemas, paths, route)
}

/// `router` answering every error with the same JSON body: an unknown
/// path (404) and a known path with another method (405) instead of
/// axum's empty answers, and any other error answered in plain text (an
/// extractor's rejection: a path or query that cannot be read) as
/// `{"error": "<that text>"}`. The host applies it to each service's routes.
pub fn with_json_fallbacks(router: Router) -> Router {
    router
        .fallback(|method: Method, uri: Uri| async move {
            ApiError::NotFound(format!("no route for {method} {}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
        })
        .layer(axum::middleware::map_response(json_error_body))
}

/// An error answer that is not JSON, with its text as the JSON `error`.
async fn json_error_body(response: Response) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejection texts are short; a longer one is cut, not lost silently.
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    parts.headers.remove(CONTENT_LENGTH);
    parts.headers.insert(
        CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(
        parts,
        axum::body::Body::from(json!({ "error": error }).to_string()),
    )
}

impl From<choreo_outbox::Error> for ApiError {
    fn from(e: choreo_outbox::Error) -> Self {
        Self::server(e.is_retryable(), &e)
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::server(e.is_retryable(), &e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response = choreo_admin::unauthorized(response);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_paths_methods_and_plain_text_rejections_get_the_json_body() {
        use tower::ServiceExt;
        #[derive(serde::Deserialize)]
        struct Page {
            limit: u32,
        }
        let app = with_json_fallbacks(
            Router::new()
                .route("/stock", axum::routing::get(|| async { "ok" }))
                .route(
                    "/page",
                    axum::routing::get(
                        |axum::extract::Query(p): axum::extract::Query<Page>| async move {
                            p.limit.to_string()
                        },
                    ),
                ),
        );
        for (method, path, status, error) in [
            (
                Method::GET,
                "/page?limit=x",
                StatusCode::BAD_REQUEST,
                "Failed to deserialize query string: limit: invalid digit found in string",
            ),
            (
                Method::GET,
                "/nope",
                StatusCode::NOT_FOUND,
                "no route for GET /nope",
            ),
            (
                Method::DELETE,
                "/stock",
                StatusCode::METHOD_NOT_ALLOWED,
                "DELETE is not allowed on /stock",
            ),
        ] {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body, json!({ "error": error }));
        }
    }

    #[tokio::test]
    async fn find_by_order_answers_404_for_nothing_stored_and_for_a_bad_id() {
        use axum::extract::{Path, State};
        use tower::ServiceExt;
        // The state maps an order id to its answer: found, nothing, failing.
        async fn shipment(
            State(prefix): State<&'static str>,
            Path(order_id): Path<String>,
        ) -> Result<Json<String>, ApiError> {
            find_by_order("shipment", &order_id, |id| async move {
                match id.as_str() {
                    "o-1" => Ok(Some(format!("{prefix}{id}"))),
                    "o-3" => Err(ApiError::server(true, &"db busy")),
                    _ => Ok(None),
                }
            })
            .await
        }
        let app = Router::new()
            .route("/shipments/{order_id}", axum::routing::get(shipment))
            .with_state("shipment of ");
        for (path, status, body) in [
            ("/shipments/o-1", StatusCode::OK, json!("shipment of o-1")),
            (
                "/shipments/o-2",
                StatusCode::NOT_FOUND,
                json!({ "error": "no shipment for order `o-2`" }),
            ),
            (
                "/shipments/%20",
                StatusCode::NOT_FOUND,
                json!({ "error": "no shipment for order ` `" }),
            ),
            (
                "/shipments/o-3",
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "temporarily unavailable, try again" }),
            ),
        ] {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let got: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(got, body, "{path}");
        }
    }

    #[tokio::test]
    async fn json_bodies_are_refused_alike_with_the_json_error_body() {
        use tower::ServiceExt;
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Stock {
            available: u32,
        }
        let app = Router::new().route(
            "/stock",
            axum::routing::put(
                |JsonBody(s): JsonBody<Stock>| async move { format!("{}", s.available) },
            ),
        );
        let big = format!("{{\"available\": 1, \"x\": \"{}\"}}", "a".repeat(3 << 20));
        for (content_type, body, status, error) in [
            (
                Some("application/json"),
                "{\"available\": 3}".to_owned(),
                StatusCode::OK,
                None,
            ),
            (
                Some("text/plain"),
                "{\"available\": 3}".to_owned(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("expected Content-Type: application/json"),
            ),
            (
                None,
                "{}".to_owned(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
            ),
            (
                Some("application/json"),
                "{bad".to_owned(),
                StatusCode::BAD_REQUEST,
                None,
            ),
            (
                Some("application/json"),
                "{\"available\": -1}".to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
            ),
            (
                Some("application/json"),
                big,
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("request body too large (over the 2 MB limit)"),
            ),
        ] {
            let mut request = axum::http::Request::put("/stock");
            if let Some(t) = content_type {
                request = request.header("content-type", t);
            }
            let response = app
                .clone()
                .oneshot(request.body(axum::body::Body::from(body)).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{content_type:?}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            if status == StatusCode::OK {
                assert_eq!(&bytes[..], b"3");
                continue;
            }
            let got: Value = serde_json::from_slice(&bytes).expect("a JSON error body");
            let message = got["error"].as_str().expect("an error message");
            if let Some(error) = error {
                assert_eq!(message, error);
            }
        }
    }

    #[test]
    fn every_kind_has_its_status_and_one_body_shape() {
        let invalid =
            ApiError::invalid_fields([("sku", "must not be empty"), ("available", "must be ≥ 0")]);
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            invalid.body(),
            json!({"error": "available: must be ≥ 0; sku: must not be empty",
                   "fields": {"available": "must be ≥ 0", "sku": "must not be empty"}})
        );
        assert_eq!(
            ApiError::server(true, &"db busy").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::server(false, &"corrupt row").body(),
            json!({"error": "internal error"}),
            "the cause is not sent"
        );
        let r = ApiError::server(true, &"db busy").into_response();
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(ApiError::NotFound("x".into()).body(), json!({"error": "x"}));
    }
}
