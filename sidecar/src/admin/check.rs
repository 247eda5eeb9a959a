//! `POST /check`: a decision for clients that only need an answer.
//!
//! Request: `{"key": "user-7", "limit": 100, "window_ms": 60000, "cost": 1}` (`cost`
//! optional, default 1). The limit is counted with the configured check algorithm
//! (GCRA by default) under policy `check`, per `(key, limit, window)`, in the same
//! store as the proxy — so every sidecar on one Redis shares it.
//!
//! Answer: `200` if allowed, `429` if limited, with
//! `{"allowed", "limit", "remaining", "reset_ms", "retry_after_ms"}` and the same
//! `RateLimit`/`RateLimit-Policy` (and, on 429, `Retry-After`) headers as proxied
//! requests. While the store fails, the failure mode answers: `open` → allowed,
//! `closed` → `503`. Malformed JSON or out-of-range values → `400` problem+json naming
//! the field.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tollgate::key::Key;
use tollgate::policy::Limit;
use tollgate::response::retry_after_secs;
use tollgate::{DecisionKind, LimitSpec};

use super::AdminState;

/// The largest key accepted.
const MAX_KEY_BYTES: usize = 1024;
/// The largest limit accepted.
const MAX_LIMIT: u64 = 1_000_000_000;
/// The longest window accepted (365 days).
const MAX_WINDOW_MS: u64 = 365 * 86_400_000;

#[derive(Debug, PartialEq, Eq)]
struct CheckRequest {
    key: String,
    limit: u64,
    window_ms: u64,
    cost: u64,
}

/// Why a check request was refused: the field and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
struct Invalid {
    field: &'static str,
    detail: String,
}

impl Invalid {
    fn new(field: &'static str, detail: impl Into<String>) -> Self {
        Invalid {
            field,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": "Invalid check request",
            "status": 400,
            "detail": self.detail,
            "field": self.field,
        });
        (
            StatusCode::BAD_REQUEST,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

fn uint(
    body: &Value,
    field: &'static str,
    min: u64,
    max: u64,
    default: Option<u64>,
) -> Result<u64, Invalid> {
    match (body.get(field), default) {
        (None | Some(Value::Null), Some(d)) => Ok(d),
        (None | Some(Value::Null), None) => {
            Err(Invalid::new(field, format!("{field} is required")))
        }
        (Some(v), _) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Invalid::new(
                field,
                format!("{field} must be a whole number from {min} to {max}"),
            )),
        },
    }
}

fn parse(bytes: &[u8]) -> Result<CheckRequest, Invalid> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| Invalid::new("(body)", format!("body is not valid JSON: {e}")))?;
    if !body.is_object() {
        return Err(Invalid::new("(body)", "body must be a JSON object"));
    }
    let key = match body.get("key") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => k.clone(),
        Some(Value::String(_)) => {
            return Err(Invalid::new(
                "key",
                format!("key must be 1 to {MAX_KEY_BYTES} bytes"),
            ));
        }
        Some(_) => return Err(Invalid::new("key", "key must be a string")),
        None => return Err(Invalid::new("key", "key is required")),
    };
    let limit = uint(&body, "limit", 1, MAX_LIMIT, None)?;
    let window_ms = uint(&body, "window_ms", 1, MAX_WINDOW_MS, None)?;
    let cost = uint(&body, "cost", 0, MAX_LIMIT, Some(1))?;
    Ok(CheckRequest {
        key,
        limit,
        window_ms,
        cost,
    })
}

pub(super) async fn check(State(state): State<AdminState>, body: Bytes) -> Response {
    let request = match parse(&body) {
        Ok(r) => r,
        Err(invalid) => return invalid.into_response(),
    };
    let runtime = state.runtime.load_full();
    let spec = match LimitSpec::new(
        runtime.config.limiter.check_algorithm,
        request.limit,
        Duration::from_millis(request.window_ms),
        None,
    ) {
        Ok(spec) => spec,
        Err(e) => return Invalid::new("limit", e.to_string()).into_response(),
    };
    // The stored key holds the limit too, so two callers using one key with different
    // limits do not share (and corrupt) each other's state; the metrics label stays
    // the fixed policy name `check`.
    let key = format!("{}/{}:{}", request.limit, request.window_ms, request.key);
    // The key is given, not extracted: the limit's own key is never read.
    let limit = Limit::new("check", spec, Key::global());
    let decision = match runtime.limiter.decide_one(&limit, &key, request.cost).await {
        Ok(decision) => decision,
        // "check" is a valid name; this answers rather than panics all the same.
        Err(e) => return Invalid::new("(limit)", e.to_string()).into_response(),
    };

    let mut headers = HeaderMap::new();
    runtime.layer_headers(&decision, &mut headers);
    let (status, allowed) = match decision.kind {
        DecisionKind::FailedClosed { .. } => (StatusCode::SERVICE_UNAVAILABLE, false),
        DecisionKind::Limited => (StatusCode::TOO_MANY_REQUESTS, false),
        _ => (StatusCode::OK, true),
    };
    let retry_after = decision.retry_after();
    if !allowed {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(retry_after)),
        );
    }
    let verdict = decision.limits.first().map(|l| l.verdict);
    let body = json!({
        "allowed": allowed,
        "limit": request.limit,
        "remaining": verdict.map_or(request.limit, |v| v.remaining),
        "reset_ms": verdict.map_or(0, |v| u64::try_from(v.reset_after_us).unwrap_or(0).div_ceil(1000)),
        "retry_after_ms": if allowed { 0 } else { u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX) },
    });
    (status, headers, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bodies_parse_with_a_default_cost() {
        let r = parse(br#"{"key":"k","limit":10,"window_ms":1000}"#).expect("valid");
        assert_eq!(
            r,
            CheckRequest {
                key: "k".into(),
                limit: 10,
                window_ms: 1000,
                cost: 1
            }
        );
    }

    #[test]
    fn bad_bodies_name_the_field() {
        for (bad, field) in [
            (&br#"not json"#[..], "(body)"),
            (br#"[1]"#, "(body)"),
            (br#"{"limit":10,"window_ms":1000}"#, "key"),
            (br#"{"key":"","limit":10,"window_ms":1000}"#, "key"),
            (br#"{"key":5,"limit":10,"window_ms":1000}"#, "key"),
            (br#"{"key":"k","limit":0,"window_ms":1000}"#, "limit"),
            (br#"{"key":"k","limit":-1,"window_ms":1000}"#, "limit"),
            (br#"{"key":"k","limit":1.5,"window_ms":1000}"#, "limit"),
            (br#"{"key":"k","limit":10}"#, "window_ms"),
            (br#"{"key":"k","limit":10,"window_ms":"1000"}"#, "window_ms"),
            (
                br#"{"key":"k","limit":10,"window_ms":1000,"cost":"x"}"#,
                "cost",
            ),
        ] {
            assert_eq!(parse(bad).expect_err("invalid").field, field);
        }
    }
}
