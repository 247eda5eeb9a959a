//! How decisions look on the wire: the one place that knows HTTP status codes,
//! header syntax and gRPC statuses.
//!
//! - Every counted response (allowed or not) carries the IETF
//!   `RateLimit-Policy` and `RateLimit` structured-field lists of
//!   draft-ietf-httpapi-ratelimit-headers-11, one item per limit:
//!   `RateLimit-Policy: "per-key";q=100;w=60` and `RateLimit: "per-key";r=42;t=17`.
//!   Optionally the legacy `X-RateLimit-Limit/Remaining/Reset` too.
//! - A refused HTTP request gets `429 Too Many Requests`, `Retry-After` in whole
//!   seconds rounded up (never 0), and an RFC 9457 `application/problem+json` body of
//!   the draft's `quota-exceeded` type listing `violated-policies`.
//! - A store outage in fail-closed mode gets `503` with `Retry-After`; a missing key or
//!   bad cost gets `400`, each with a problem body.
//! - gRPC requests (`content-type: application/grpc…`) get a trailers-only response:
//!   HTTP 200 with `grpc-status` 8 `RESOURCE_EXHAUSTED` (14 `UNAVAILABLE`,
//!   3 `INVALID_ARGUMENT`) and a `grpc-message`.

mod grpc;
mod headers;
mod problem;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Response, StatusCode};

pub use self::headers::{insert_rate_limit_headers, retry_after_secs};
use crate::limiter::{Decision, DecisionKind};

/// Which rate-limit headers to send.
///
/// ```
/// use tollgate::response::HeaderStyle;
///
/// let both = HeaderStyle::default().legacy(true);
/// assert!(both.ietf && both.legacy);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderStyle {
    /// IETF `RateLimit` and `RateLimit-Policy` (default on).
    pub ietf: bool,
    /// Legacy `X-RateLimit-Limit`, `-Remaining`, `-Reset` for the most constrained
    /// limit (default off).
    pub legacy: bool,
}

impl HeaderStyle {
    /// Whether to send the IETF `RateLimit` and `RateLimit-Policy` fields.
    pub fn ietf(mut self, on: bool) -> Self {
        self.ietf = on;
        self
    }

    /// Whether to send the legacy `X-RateLimit-*` headers.
    pub fn legacy(mut self, on: bool) -> Self {
        self.legacy = on;
        self
    }
}

impl Default for HeaderStyle {
    fn default() -> Self {
        HeaderStyle {
            ietf: true,
            legacy: false,
        }
    }
}

/// Builds the response for a refused request; see [`Responder::custom`].
pub type RejectionFn = Arc<dyn Fn(&Decision, &Parts) -> Response<Bytes> + Send + Sync>;

/// How decisions are answered over HTTP: the rate-limit headers added to every counted
/// response that passes, and the response for one that does not (the defaults
/// described above, or a function of yours). Rate-limit headers and `Retry-After` are
/// added to custom refusals too.
#[derive(Clone, Default)]
pub struct Responder {
    custom: Option<RejectionFn>,
    headers: HeaderStyle,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("custom", &self.custom.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

impl Responder {
    /// Answer refusals with `f` instead of the default bodies.
    pub fn custom(
        mut self,
        f: impl Fn(&Decision, &Parts) -> Response<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.custom = Some(Arc::new(f));
        self
    }

    /// Which rate-limit headers to send.
    pub fn headers(mut self, style: HeaderStyle) -> Self {
        self.headers = style;
        self
    }

    /// The header style in use.
    pub fn header_style(&self) -> HeaderStyle {
        self.headers
    }

    /// Adds the rate-limit headers of `decision` to a response that passed.
    pub fn decorate(&self, decision: &Decision, headers: &mut HeaderMap) {
        insert_rate_limit_headers(headers, decision, self.headers);
    }

    /// The response for a refused request.
    pub fn reject(&self, decision: &Decision, request: &Parts) -> Response<Bytes> {
        let mut response = match &self.custom {
            Some(f) => f(decision, request),
            None if grpc::is_grpc(request) => grpc::response(decision),
            None => problem::response(decision),
        };
        insert_rate_limit_headers(response.headers_mut(), decision, self.headers);
        if matches!(
            decision.kind,
            DecisionKind::Limited | DecisionKind::FailedClosed { .. }
        ) {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_secs(decision.retry_after())),
            );
        }
        response
    }
}

/// The earlier name of [`Responder`], which also decorates passing responses.
#[deprecated(since = "0.2.0", note = "renamed to `Responder`")]
pub type Rejections = Responder;

/// The HTTP status for a refused decision.
pub fn status_of(decision: &Decision) -> StatusCode {
    match decision.kind {
        DecisionKind::FailedClosed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        DecisionKind::MissingKey { .. } | DecisionKind::InvalidCost(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::TOO_MANY_REQUESTS,
    }
}
