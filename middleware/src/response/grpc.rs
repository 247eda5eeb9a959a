//! Trailers-only gRPC responses for refused gRPC requests.
//!
//! gRPC carries its status in `grpc-status`; in a trailers-only response the
//! "trailers" are the HTTP headers of a 200 response with an empty body, which every
//! gRPC client understands as an immediate error.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::request::Parts;
use http::Response;

use crate::limiter::{Decision, DecisionKind};

pub(crate) fn is_grpc(request: &Parts) -> bool {
    request
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

pub(crate) fn response(decision: &Decision) -> Response<Bytes> {
    let (code, message) = match &decision.kind {
        DecisionKind::FailedClosed { .. } => (14, "rate limiter unavailable".to_owned()),
        DecisionKind::MissingKey { limit, reason } => {
            (3, format!("missing rate-limit key for {limit}: {reason}"))
        }
        DecisionKind::InvalidCost(error) => (3, format!("invalid request cost: {error}")),
        _ => (
            8,
            format!(
                "rate limit exceeded; retry after {} s",
                super::retry_after_secs(decision.retry_after())
            ),
        ),
    };
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    // grpc-message is percent-encoded; ours is ASCII without '%' except by design.
    let encoded: String = message
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    if let Ok(v) = HeaderValue::try_from(encoded) {
        headers.insert("grpc-message", v);
    }
    response
}
