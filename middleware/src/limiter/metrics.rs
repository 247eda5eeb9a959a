//! The limiter's metrics, through the `metrics` facade (see `docs/metrics.md`).
//!
//! The application installs the exporter it likes; with none installed these calls
//! cost a few nanoseconds.

use std::sync::Arc;
use std::time::Duration;

use metrics::SharedString;

use super::breaker::CircuitState;
use super::decision::Decision;

pub(crate) const REQUESTS_CHECKED: &str = "ratelimiter_requests_checked_total";
pub(crate) const DECISION_DURATION: &str = "ratelimiter_decision_duration_seconds";
pub(crate) const STORE_ERRORS: &str = "ratelimiter_store_errors_total";
pub(crate) const CIRCUIT_STATE: &str = "ratelimiter_circuit_state";
pub(crate) const DENY_CACHE_HITS: &str = "ratelimiter_deny_cache_hits_total";
pub(crate) const FALLBACK_DECISIONS: &str = "ratelimiter_fallback_decisions_total";

pub(crate) fn decided(decision: &Decision) {
    // An `Arc<str>` label is shared, not copied, into the metric key.
    let policy = decision
        .policy
        .clone()
        .map_or_else(|| SharedString::const_str(""), SharedString::from);
    metrics::counter!(REQUESTS_CHECKED, "policy" => policy, "decision" => decision.metric_label())
        .increment(1);
}

pub(crate) fn store_latency(store: &'static str, elapsed: Duration) {
    metrics::histogram!(DECISION_DURATION, "store" => store).record(elapsed.as_secs_f64());
}

pub(crate) fn store_error(store: &'static str, kind: &'static str) {
    metrics::counter!(STORE_ERRORS, "store" => store, "kind" => kind).increment(1);
}

pub(crate) fn circuit(store: &'static str, state: CircuitState) {
    metrics::gauge!(CIRCUIT_STATE, "store" => store).set(state as u8 as f64);
}

pub(crate) fn deny_cache_hit(policy: &Arc<str>) {
    metrics::counter!(DENY_CACHE_HITS, "policy" => SharedString::from(policy.clone())).increment(1);
}

pub(crate) fn fallback(policy: &Arc<str>) {
    metrics::counter!(FALLBACK_DECISIONS, "policy" => SharedString::from(policy.clone()))
        .increment(1);
}
