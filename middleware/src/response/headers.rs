//! The IETF `RateLimit` / `RateLimit-Policy` fields and the legacy `X-RateLimit-*`.
//!
//! Names are validated to `[A-Za-z0-9._-]` when policies are built, so they are
//! always valid structured-field strings without escaping.

use std::fmt::Write;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use super::HeaderStyle;
use crate::limiter::{Decision, LimitStatus};

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds for `Retry-After`: rounded up, and at least 1 — a `Retry-After: 0`
/// invites an immediate retry that would be refused again.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_micros().div_ceil(1_000_000).max(1) as u64
}

fn ceil_secs(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).div_ceil(1_000_000)
}

/// Adds the headers for every limit of `decision` (nothing when no limit was decided).
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision, style: HeaderStyle) {
    if decision.limits.is_empty() {
        return;
    }
    if style.ietf {
        let mut policy = String::new();
        let mut state = String::new();
        for (i, l) in decision.limits.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(
                policy,
                "{sep}\"{}\";q={};w={}",
                l.name,
                l.spec.quota(),
                l.spec.window_secs()
            );
            let _ = write!(
                state,
                "{sep}\"{}\";r={};t={}",
                l.name,
                l.verdict.remaining,
                ceil_secs(l.verdict.reset_after_us)
            );
        }
        append_list(headers, RATELIMIT_POLICY, policy);
        append_list(headers, RATELIMIT, state);
    }
    if style.legacy {
        if let Some(tightest) = tightest(&decision.limits) {
            headers.insert(X_LIMIT, HeaderValue::from(tightest.spec.quota()));
            headers.insert(X_REMAINING, HeaderValue::from(tightest.verdict.remaining));
            headers.insert(
                X_RESET,
                HeaderValue::from(ceil_secs(tightest.verdict.reset_after_us)),
            );
        }
    }
}

/// Sets a structured-field list header, or extends it when the inner service (an
/// upstream behind the sidecar, a nested limiter) already sent one: both sets of
/// quotas apply, so the client must see both.
fn append_list(headers: &mut HeaderMap, name: HeaderName, items: String) {
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {items}"),
        _ => items,
    };
    // Built from digits, validated names and a header that was already valid text.
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

/// The limit that constrains the client most: a refusing one, else the fewest left.
fn tightest(limits: &[LimitStatus]) -> Option<&LimitStatus> {
    limits
        .iter()
        .min_by_key(|l| (l.verdict.allowed, l.verdict.remaining))
}
