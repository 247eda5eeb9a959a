//! RFC 9457 problem details for refused HTTP requests.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use serde_json::json;

use super::status_of;
use crate::limiter::{Decision, DecisionKind};

/// The problem type draft-ietf-httpapi-ratelimit-headers registers for 429s.
pub(crate) const QUOTA_EXCEEDED: &str =
    "https://iana.org/assignments/http-problem-types#quota-exceeded";

pub(crate) fn response(decision: &Decision) -> Response<Bytes> {
    let status = status_of(decision);
    let body = match &decision.kind {
        DecisionKind::FailedClosed { .. } => json!({
            "type": "about:blank",
            "title": "Rate limiter unavailable",
            "status": status.as_u16(),
            "detail": "The rate-limit store cannot be reached and this service refuses requests it cannot count.",
        }),
        DecisionKind::MissingKey { limit, reason } => json!({
            "type": "about:blank",
            "title": "Missing rate-limit key",
            "status": status.as_u16(),
            "detail": format!("The request does not carry the key that limit \"{limit}\" is counted by: {reason}."),
        }),
        DecisionKind::InvalidCost(error) => json!({
            "type": "about:blank",
            "title": "Invalid request cost",
            "status": status.as_u16(),
            "detail": error.to_string(),
        }),
        _ => {
            let violated: Vec<&str> = decision.violated().collect();
            json!({
                "type": QUOTA_EXCEEDED,
                "title": "Request cannot be satisfied as assigned quota has been exceeded",
                "status": status.as_u16(),
                "detail": format!(
                    "Too many requests; retry after {} s.",
                    super::retry_after_secs(decision.retry_after())
                ),
                "violated-policies": violated,
            })
        }
    };
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
