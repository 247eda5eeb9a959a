//! The IETF `RateLimit` / `RateLimit-Policy` fields and the legacy `X-RateLimit-*`.
//!
//! Names are validated to `[A-Za-z0-9._-]` when policies are built, so they are
//! always valid structured-field strings without escaping.

use std::cell::RefCell;
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

thread_local! {
    /// The text of a header value is formatted here, then copied once into its
    /// `HeaderValue`: the buffer is reused across responses on a thread, so the usual
    /// response costs one allocation per field instead of a growing `String`, a
    /// `format!` and a conversion each.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The capacity the scratch buffer may keep between responses: a huge upstream field
/// merged once must not pin its size on the thread for good. Ordinary values (a few
/// limits) stay far below it, so the buffer is not reallocated in steady state.
const SCRATCH_KEEP: usize = 1024;

/// Runs `f` with the thread's scratch buffer (its contents are left over: clear it).
fn with_scratch(f: impl FnOnce(&mut String)) {
    let mut f = Some(f);
    let _ = SCRATCH.try_with(|cell| {
        // Never re-entered (the callers only format text), but a fresh buffer below
        // beats a panic if that ever changes.
        if let Ok(mut buf) = cell.try_borrow_mut() {
            if let Some(f) = f.take() {
                f(&mut buf);
            }
            if buf.capacity() > SCRATCH_KEEP {
                *buf = String::new();
            }
        }
    });
    // The thread is being torn down, or the buffer was in use: a fresh one.
    if let Some(f) = f {
        f(&mut String::new());
    }
}

fn push_int(buf: &mut String, n: u64) {
    buf.push_str(itoa::Buffer::new().format(n));
}

/// Adds the headers for every limit of `decision` (nothing when no limit was decided).
pub fn insert_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision, style: HeaderStyle) {
    if decision.limits.is_empty() {
        return;
    }
    if style.ietf {
        let limits = &decision.limits[..];
        with_scratch(|buf| {
            set_list(headers, RATELIMIT_POLICY, buf, |buf| {
                for (i, l) in limits.iter().enumerate() {
                    push_item_name(buf, i, &l.name);
                    buf.push_str(";q=");
                    push_int(buf, l.spec.quota());
                    buf.push_str(";w=");
                    push_int(buf, l.spec.window_secs());
                }
            });
            set_list(headers, RATELIMIT, buf, |buf| {
                for (i, l) in limits.iter().enumerate() {
                    push_item_name(buf, i, &l.name);
                    buf.push_str(";r=");
                    push_int(buf, l.verdict.remaining);
                    buf.push_str(";t=");
                    push_int(buf, ceil_secs(l.verdict.reset_after_us));
                }
            });
        });
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

/// `"name"`, after `, ` unless it is the list's first item.
fn push_item_name(buf: &mut String, i: usize, name: &str) {
    if i > 0 {
        buf.push_str(", ");
    }
    buf.push('"');
    buf.push_str(name);
    buf.push('"');
}

/// Sets a structured-field list header, or extends it when the inner service (an
/// upstream behind the sidecar, a nested limiter) already sent one: both sets of
/// quotas apply, so the client must see both. `items` writes this limiter's items into
/// `buf`, after the earlier ones.
fn set_list(
    headers: &mut HeaderMap,
    name: HeaderName,
    buf: &mut String,
    items: impl FnOnce(&mut String),
) {
    buf.clear();
    if let Some(existing) = headers.get(&name).and_then(|v| v.to_str().ok()) {
        if !existing.trim().is_empty() {
            buf.push_str(existing);
            buf.push_str(", ");
        }
    }
    items(buf);
    // Built from digits, validated names and a header that was already valid text;
    // `from_bytes` copies it once, leaving the buffer for the next field.
    if let Ok(v) = HeaderValue::from_bytes(buf.as_bytes()) {
        headers.insert(name, v);
    }
}

/// The limit that constrains the client most: a refusing one, else the fewest left.
fn tightest(limits: &[LimitStatus]) -> Option<&LimitStatus> {
    limits
        .iter()
        .min_by_key(|l| (l.verdict.allowed, l.verdict.remaining))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{LimitSpec, Verdict};
    use crate::limiter::{DecisionKind, Limits};

    fn status(name: &str, quota: u64, secs: u64, remaining: u64, reset_us: i64) -> LimitStatus {
        LimitStatus {
            name: name.into(),
            spec: LimitSpec::per(quota, Duration::from_secs(secs)).expect("spec"),
            verdict: Verdict {
                allowed: remaining > 0,
                remaining,
                reset_after_us: reset_us,
                retry_after_us: 0,
            },
        }
    }

    fn decision(limits: Vec<LimitStatus>) -> Decision {
        let mut d = Decision::new(DecisionKind::Allowed, None);
        d.limits = Limits::new();
        for l in limits {
            d.limits.push(l);
        }
        d
    }

    #[test]
    fn formats_each_limit_as_a_list_item() {
        let d = decision(vec![
            status("per-key", 100, 60, 42, 16_000_001),
            status("daily", 1000, 86_400, 0, -5),
        ]);
        let mut h = HeaderMap::new();
        insert_rate_limit_headers(&mut h, &d, HeaderStyle::default().legacy(true));
        assert_eq!(
            h[RATELIMIT_POLICY],
            "\"per-key\";q=100;w=60, \"daily\";q=1000;w=86400"
        );
        assert_eq!(h[RATELIMIT], "\"per-key\";r=42;t=17, \"daily\";r=0;t=0");
        assert_eq!(h[X_LIMIT], "1000");
        assert_eq!(h[X_REMAINING], "0");
        assert_eq!(h[X_RESET], "0");
    }

    #[test]
    fn extends_the_lists_an_upstream_sent() {
        let d = decision(vec![status("outer", 10, 1, 9, 100_000)]);
        let mut h = HeaderMap::new();
        h.insert(
            RATELIMIT_POLICY,
            HeaderValue::from_static("\"inner\";q=5;w=1"),
        );
        h.append(
            RATELIMIT_POLICY,
            HeaderValue::from_static("\"ignored\";q=1;w=1"),
        );
        // Blank, or not text: replaced, as there is nothing to extend.
        h.insert(RATELIMIT, HeaderValue::from_static("  "));
        insert_rate_limit_headers(&mut h, &d, HeaderStyle::default());
        assert_eq!(
            h.get_all(RATELIMIT_POLICY).iter().collect::<Vec<_>>(),
            ["\"inner\";q=5;w=1, \"outer\";q=10;w=1"]
        );
        assert_eq!(h[RATELIMIT], "\"outer\";r=9;t=1");
        assert!(!h.contains_key(X_LIMIT));

        h.insert(
            RATELIMIT,
            HeaderValue::from_bytes(b"\"caf\xc3\xa9\";r=1;t=1").expect("opaque bytes"),
        );
        insert_rate_limit_headers(&mut h, &d, HeaderStyle::default());
        assert_eq!(h[RATELIMIT], "\"outer\";r=9;t=1");
    }

    #[test]
    fn a_long_merged_value_does_not_stay_in_the_scratch_buffer() {
        let d = decision(vec![status("k", 1, 1, 1, 0)]);
        let long = "x".repeat(4 * SCRATCH_KEEP);
        let mut h = HeaderMap::new();
        h.insert(RATELIMIT, HeaderValue::from_str(&long).expect("text"));
        insert_rate_limit_headers(&mut h, &d, HeaderStyle::default());
        assert_eq!(h[RATELIMIT], format!("{long}, \"k\";r=1;t=0").as_str());
        SCRATCH.with_borrow(|buf| assert!(buf.capacity() <= SCRATCH_KEEP));
        // And the next response on the thread formats from a clean buffer.
        let mut h = HeaderMap::new();
        insert_rate_limit_headers(&mut h, &d, HeaderStyle::default());
        assert_eq!(h[RATELIMIT], "\"k\";r=1;t=0");
        assert_eq!(h[RATELIMIT_POLICY], "\"k\";q=1;w=1");
    }
}
