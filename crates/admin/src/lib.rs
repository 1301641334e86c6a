//! The admin credential. The operations that change state outside the
//! saga — setting stock (`PUT /stock/{sku}`), setting an account (`PUT
//! /accounts/{id}`), the registry's deletes and its compatibility
//! settings — answer 401 without `Authorization: Bearer <token>` when
//! `CHOREO_ADMIN_TOKEN` is set. Reads, and the saga's own operations
//! (placing and cancelling an order), stay open.
//!
//! Unset, every write is open, as before: a test or a private laptop
//! may choose that; `make run` and docker compose always set a token.
//!
//! The token is compared in constant time and never printed: its `Debug`
//! says only whether one is set, and a refusal never echoes what was sent.

use std::fmt;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use subtle::ConstantTimeEq;

/// The environment variable holding the token.
pub const ENV: &str = "CHOREO_ADMIN_TOKEN";

/// A token that cannot be sent in an `Authorization` header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{ENV}: {0}")]
pub struct InvalidToken(&'static str);

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that is not the admin token.
    Wrong,
}

impl Refusal {
    /// What the 401's body says (never the token, sent or expected).
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "this write needs the admin token: send `Authorization: Bearer <CHOREO_ADMIN_TOKEN>`"
            }
            Self::Wrong => "the bearer token is not the admin token",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The admin token, or none (every write open).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminToken(Option<Arc<str>>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "AdminToken(set)"
        } else {
            "AdminToken(unset)"
        })
    }
}

impl AdminToken {
    /// No token: every write open.
    pub fn none() -> Self {
        Self(None)
    }

    /// `token`, which must be non-empty printable ASCII without spaces
    /// (what a bearer header can carry unchanged).
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        if token.is_empty() {
            return Err(InvalidToken(
                "is empty; unset it to leave the writes open, or set a token",
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken(
                "must be printable ASCII without spaces (it is sent in an HTTP header)",
            ));
        }
        Ok(Self(Some(token.into())))
    }

    /// The setting's value as read from the environment: absent → none.
    pub fn from_setting(value: Option<&str>) -> Result<Self, InvalidToken> {
        value.map_or(Ok(Self::none()), Self::new)
    }

    /// 32 random bytes as 64 hex digits, from the operating system's
    /// generator (`make run` makes one on the first start).
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(Some(hex.into()))
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The token itself, for the client that must send it and for the
    /// one place that shows it to its owner (`choreo up`'s table).
    pub fn expose(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// The `Authorization` value a client sends, if a token is set.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let token = self.0.as_deref()?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a validated token is a valid header value");
        value.set_sensitive(true);
        Some(value)
    }

    /// Whether `headers` carry this token (always, when none is set).
    pub fn admits(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(expected) = self.0.as_deref() else {
            return Ok(());
        };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(Refusal::Missing)?;
        if bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }

    /// `route` answering `refuse(why)` to a request without this token
    /// (unchanged when none is set). Each server renders the 401 in its
    /// own error shape; [`unauthorized`] stamps the status and challenge.
    pub fn require<S>(
        &self,
        route: MethodRouter<S>,
        refuse: fn(Refusal) -> Response,
    ) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        if !self.is_set() {
            return route;
        }
        let token = self.clone();
        route.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let verdict = token.admits(request.headers());
                async move {
                    match verdict {
                        Ok(()) => next.run(request).await,
                        Err(why) => unauthorized(refuse(why)),
                    }
                }
            },
        ))
    }
}

/// `response` as a 401 with the `WWW-Authenticate: Bearer` challenge.
pub fn unauthorized(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"choreo\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, put};
    use axum::Router;
    use tower::ServiceExt;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = authorization {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_bearer_token_itself_is_admitted() {
        let token = AdminToken::new("s3cret-token").unwrap();
        assert_eq!(token.admits(&headers(Some("Bearer s3cret-token"))), Ok(()));
        assert_eq!(token.admits(&headers(Some("bearer s3cret-token"))), Ok(()));
        assert_eq!(token.admits(&headers(None)), Err(Refusal::Missing));
        assert_eq!(
            token.admits(&headers(Some("Basic s3cret-token"))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            token.admits(&headers(Some("Bearer"))),
            Err(Refusal::Missing)
        );
        for wrong in [
            "Bearer s3cret-tokeN",
            "Bearer s3cret-token2",
            "Bearer s3cret",
            "Bearer ",
        ] {
            assert_eq!(
                token.admits(&headers(Some(wrong))),
                Err(Refusal::Wrong),
                "{wrong}"
            );
        }
        assert_eq!(AdminToken::none().admits(&headers(None)), Ok(()));
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_refused_at_start() {
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("two words").is_err());
        assert!(AdminToken::new("naïve").is_err());
        assert!(AdminToken::new("line\nbreak").is_err());
        assert_eq!(AdminToken::from_setting(None), Ok(AdminToken::none()));
        assert!(AdminToken::from_setting(Some("ok")).unwrap().is_set());
    }

    #[test]
    fn the_token_never_reaches_debug_output_or_refusals() {
        let token = AdminToken::new("hunter2").unwrap();
        assert_eq!(format!("{token:?}"), "AdminToken(set)");
        for why in [Refusal::Missing, Refusal::Wrong] {
            assert!(!why.message().contains("hunter2"));
        }
        assert!(token.header_value().unwrap().is_sensitive());
        let generated = AdminToken::generate();
        let text = generated.expose().unwrap();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(generated, AdminToken::generate());
    }

    #[tokio::test]
    async fn a_guarded_route_refuses_without_the_token_and_leaves_reads_open() {
        let token = AdminToken::new("t0ken").unwrap();
        let app = Router::new().route(
            "/stock/{sku}",
            get(|| async { "read" }).merge(token.require(put(|| async { "written" }), |why| {
                why.message().into_response()
            })),
        );
        for (method, auth, status, body) in [
            ("GET", None, StatusCode::OK, "read"),
            (
                "PUT",
                None,
                StatusCode::UNAUTHORIZED,
                Refusal::Missing.message(),
            ),
            (
                "PUT",
                Some("Bearer nope"),
                StatusCode::UNAUTHORIZED,
                Refusal::Wrong.message(),
            ),
            ("PUT", Some("Bearer t0ken"), StatusCode::OK, "written"),
        ] {
            let mut request = Request::builder().method(method).uri("/stock/A");
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response = app
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{method} {auth:?}");
            if status == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    response.headers()[header::WWW_AUTHENTICATE],
                    "Bearer realm=\"choreo\""
                );
            }
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert_eq!(bytes, body.as_bytes(), "{method} {auth:?}");
        }
        // No token: the same route is open.
        let open = Router::new().route(
            "/stock/{sku}",
            AdminToken::none().require(put(|| async { "written" }), |why| {
                why.message().into_response()
            }),
        );
        let response = open
            .oneshot(Request::put("/stock/A").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
