//! The limiter's metrics, through the `metrics` facade (see `docs/metrics.md`).
//!
//! The application installs the exporter it likes; with none installed these calls
//! cost a few nanoseconds.
//!
//! The families are named `ratelimiter_*`: they are the library's, the same in every
//! application that embeds the layer, and named for what they measure. An application
//! that runs several limiters in one process (one recorder per process is all the
//! facade allows) tells them apart with static labels set on the builder, which every
//! series of that limiter carries.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata, SharedString, Unit};

use super::breaker::CircuitState;
use super::decision::Decision;

pub(crate) const REQUESTS_CHECKED: &str = "ratelimiter_requests_checked_total";
pub(crate) const DECISION_DURATION: &str = "ratelimiter_decision_duration_seconds";
pub(crate) const STORE_ERRORS: &str = "ratelimiter_store_errors_total";
pub(crate) const CIRCUIT_STATE: &str = "ratelimiter_circuit_state";
pub(crate) const DENY_CACHE_HITS: &str = "ratelimiter_deny_cache_hits_total";
pub(crate) const FALLBACK_DECISIONS: &str = "ratelimiter_fallback_decisions_total";
pub(crate) const LEASES: &str = "ratelimiter_leases_total";
pub(crate) const LEASE_UNITS_RETURNED: &str = "ratelimiter_lease_units_returned_total";
pub(crate) const LEASE_DECISIONS: &str = "ratelimiter_lease_decisions_total";

/// The label names the limiter sets itself: a static label may not reuse one, or a
/// series would carry the name twice (an invalid exposition).
pub(crate) const OWN_LABELS: [&str; 5] = ["policy", "decision", "store", "kind", "source"];

/// Describes every `ratelimiter_*` family (help text and unit) to the installed
/// `metrics` recorder, so exporters such as Prometheus print a `# HELP` line for each.
///
/// [`RateLimiterBuilder::build`](super::RateLimiterBuilder::build) calls it, so an
/// application rarely needs to; call it yourself if you install a recorder after
/// building your limiters (descriptions go to the recorder installed at the time of
/// the call). Calling it again only repeats the same descriptions.
pub fn describe_metrics() {
    metrics::describe_counter!(
        REQUESTS_CHECKED,
        Unit::Count,
        "Requests that matched a rate-limit policy, by policy and decision (allowed, limited, shadow_limited, error, invalid)."
    );
    metrics::describe_histogram!(
        DECISION_DURATION,
        Unit::Seconds,
        "Time spent waiting for a remote rate-limit store per decision."
    );
    metrics::describe_counter!(
        STORE_ERRORS,
        Unit::Count,
        "Rate-limit store failures, by store and kind (timeout, connection, protocol, auth, tls, server, config, other, circuit_open)."
    );
    metrics::describe_gauge!(
        CIRCUIT_STATE,
        Unit::Count,
        "State of the store's circuit breaker: 0 closed, 1 open, 2 half-open."
    );
    metrics::describe_counter!(
        DENY_CACHE_HITS,
        Unit::Count,
        "Refusals answered from the local deny cache without asking the store."
    );
    metrics::describe_counter!(
        FALLBACK_DECISIONS,
        Unit::Count,
        "Decisions made by the local fallback store while the shared store failed."
    );
    metrics::describe_counter!(
        LEASES,
        Unit::Count,
        "Leases (slices of a leased limit's budget) taken from the shared store, by policy."
    );
    metrics::describe_counter!(
        LEASE_UNITS_RETURNED,
        Unit::Count,
        "Unused leased units given back to the shared store, by policy."
    );
    metrics::describe_counter!(
        LEASE_DECISIONS,
        Unit::Count,
        "Decisions of requests with leased limits, by policy and source: local (from the node's lease) or store (the store was asked)."
    );
}

/// Every value of the `decision` label ([`Decision::metric_label`]).
const DECISION_LABELS: [&str; 7] = [
    "allowed",
    "limited",
    "shadow_limited",
    "error",
    "invalid",
    "shadow_error",
    "shadow_invalid",
];

/// The position of `label` in [`DECISION_LABELS`]: a `match` on constants compiles to
/// length and integer compares, not a `memcmp` call per entry.
fn decision_label_index(label: &str) -> Option<usize> {
    let index = match label {
        "allowed" => 0,
        "limited" => 1,
        "shadow_limited" => 2,
        "error" => 3,
        "invalid" => 4,
        "shadow_error" => 5,
        "shadow_invalid" => 6,
        _ => return None,
    };
    debug_assert_eq!(DECISION_LABELS[index], label);
    Some(index)
}

/// The [`DECISION_LABELS`] index of the decision a store's answer makes
/// (`pipeline::verdict_kind`): `allowed`, or `limited` / `shadow_limited`.
fn verdict_label_index(allowed: bool, shadow: bool) -> usize {
    match (allowed, shadow) {
        (true, _) => 0,
        (false, false) => 1,
        (false, true) => 2,
    }
}

/// What `metrics::counter!` would attach to a series registered from this module.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One limiter's recording handle: its static labels, shared by every series it emits.
#[derive(Clone)]
pub(crate) struct LimiterMetrics {
    /// Built once from `Arc<str>`s, so copying them into a key clones pointers only.
    labels: Arc<[Label]>,
    /// The `ratelimiter_requests_checked_total` key of each (policy, decision), by
    /// policy index and [`DECISION_LABELS`] index: built once, so a decision of a
    /// configured policy allocates nothing to be counted. Keys, not counter handles: a
    /// handle would stay bound to the recorder of its first use (a recorder installed
    /// later, or a thread-local one in a test, would never see the counts).
    decided: Arc<[[Key; DECISION_LABELS.len()]]>,
    /// The store whose per-decision series (`DECISION_DURATION`, `CIRCUIT_STATE`) are
    /// prebuilt below, and those two keys: a remote decision records both, and building
    /// a key per decision costs a `Vec` of labels and hashing them.
    store: Arc<StoreKeys>,
}

/// The prebuilt keys of one store's per-decision series.
struct StoreKeys {
    kind: &'static str,
    latency: Key,
    circuit: Key,
}

impl LimiterMetrics {
    pub(crate) fn new(
        labels: &[(Arc<str>, Arc<str>)],
        policies: &[Arc<str>],
        store: &'static str,
    ) -> Self {
        let labels: Arc<[Label]> = labels
            .iter()
            .map(|(k, v)| Label::new(SharedString::from(k.clone()), SharedString::from(v.clone())))
            .collect();
        let store_key = |name| {
            let own = [("store", SharedString::const_str(store))];
            retained(Key::from_parts(name, labelled(&labels, own)))
        };
        let store = Arc::new(StoreKeys {
            kind: store,
            latency: store_key(DECISION_DURATION),
            circuit: store_key(CIRCUIT_STATE),
        });
        let mut metrics = LimiterMetrics {
            labels,
            decided: Arc::new([]),
            store,
        };
        metrics.decided = policies
            .iter()
            .map(|policy| {
                DECISION_LABELS.map(|decision| {
                    let policy = SharedString::from(policy.clone());
                    retained(Key::from_parts(
                        REQUESTS_CHECKED,
                        metrics.decided_labels(policy, decision),
                    ))
                })
            })
            .collect();
        metrics
    }

    fn decided_labels(&self, policy: SharedString, decision: &'static str) -> Vec<Label> {
        self.with([
            ("policy", policy),
            ("decision", SharedString::const_str(decision)),
        ])
    }

    /// The static labels followed by a series' own.
    fn with<const N: usize>(&self, own: [(&'static str, SharedString); N]) -> Vec<Label> {
        labelled(&self.labels, own)
    }

    /// Counts a decision the store answered for the configured policy at `policy_index`
    /// (`allowed`: every limit admitted; `shadow`: the policy's mode): what
    /// [`decided`](Self::decided) counts for it, with the label known without matching
    /// the decision's kind and label text.
    pub(crate) fn decided_verdict(&self, policy_index: usize, allowed: bool, shadow: bool) {
        if let Some(keys) = self.decided.get(policy_index) {
            let at = verdict_label_index(allowed, shadow);
            metrics::with_recorder(|r| r.register_counter(&keys[at], &METADATA)).increment(1);
        }
    }

    /// Counts a decision; `policy_index` is the policy's position in the limiter, `None`
    /// for an ad-hoc decision, whose key is built here.
    pub(crate) fn decided(&self, decision: &Decision, policy_index: Option<usize>) {
        let label = decision.metric_label();
        let cached = policy_index
            .and_then(|i| self.decided.get(i))
            .zip(decision_label_index(label));
        if let Some((keys, at)) = cached {
            metrics::with_recorder(|r| r.register_counter(&keys[at], &METADATA)).increment(1);
            return;
        }
        // An `Arc<str>` label is shared, not copied, into the metric key.
        let policy = decision
            .policy
            .clone()
            .map_or_else(|| SharedString::const_str(""), SharedString::from);
        let labels = self.decided_labels(policy, label);
        metrics::counter!(REQUESTS_CHECKED, labels).increment(1);
    }

    pub(crate) fn store_latency(&self, store: &'static str, elapsed: Duration) {
        if let Some(keys) = self.store_keys(store) {
            metrics::with_recorder(|r| r.register_histogram(&keys.latency, &METADATA))
                .record(elapsed.as_secs_f64());
            return;
        }
        let labels = self.with([("store", SharedString::const_str(store))]);
        metrics::histogram!(DECISION_DURATION, labels).record(elapsed.as_secs_f64());
    }

    /// The prebuilt keys when `store` is the limiter's own store.
    fn store_keys(&self, store: &'static str) -> Option<&StoreKeys> {
        Some(&*self.store).filter(|keys| keys.kind == store)
    }

    pub(crate) fn store_error(&self, store: &'static str, kind: &'static str) {
        let labels = self.with([
            ("store", SharedString::const_str(store)),
            ("kind", SharedString::const_str(kind)),
        ]);
        metrics::counter!(STORE_ERRORS, labels).increment(1);
    }

    pub(crate) fn circuit(&self, store: &'static str, state: CircuitState) {
        if let Some(keys) = self.store_keys(store) {
            metrics::with_recorder(|r| r.register_gauge(&keys.circuit, &METADATA))
                .set(state as u8 as f64);
            return;
        }
        let labels = self.with([("store", SharedString::const_str(store))]);
        metrics::gauge!(CIRCUIT_STATE, labels).set(state as u8 as f64);
    }

    pub(crate) fn deny_cache_hit(&self, policy: &Arc<str>) {
        let labels = self.with([("policy", SharedString::from(policy.clone()))]);
        metrics::counter!(DENY_CACHE_HITS, labels).increment(1);
    }

    /// Registers the lease families of `policy` at zero, so a scrape shows them (and
    /// `rate()` has a start) before the first lease is taken.
    pub(crate) fn lease_zero(&self, policy: &Arc<str>) {
        let policy = || SharedString::from(policy.clone());
        metrics::counter!(LEASES, self.with([("policy", policy())])).increment(0);
        metrics::counter!(LEASE_UNITS_RETURNED, self.with([("policy", policy())])).increment(0);
        for source in ["local", "store"] {
            let labels = self.with([
                ("policy", policy()),
                ("source", SharedString::const_str(source)),
            ]);
            metrics::counter!(LEASE_DECISIONS, labels).increment(0);
        }
    }

    pub(crate) fn lease_taken(&self, policy: &Arc<str>) {
        let labels = self.with([("policy", SharedString::from(policy.clone()))]);
        metrics::counter!(LEASES, labels).increment(1);
    }

    pub(crate) fn lease_returned(&self, policy: &Arc<str>, units: u64) {
        let labels = self.with([("policy", SharedString::from(policy.clone()))]);
        metrics::counter!(LEASE_UNITS_RETURNED, labels).increment(units);
    }

    pub(crate) fn lease_decision(&self, policy: &Arc<str>, source: &'static str) {
        let labels = self.with([
            ("policy", SharedString::from(policy.clone())),
            ("source", SharedString::const_str(source)),
        ]);
        metrics::counter!(LEASE_DECISIONS, labels).increment(1);
    }

    pub(crate) fn fallback(&self, policy: &Arc<str>) {
        let labels = self.with([("policy", SharedString::from(policy.clone()))]);
        metrics::counter!(FALLBACK_DECISIONS, labels).increment(1);
    }
}

/// `key` in its shared form. A recorder's `register_*` takes its own copy of the key on
/// every call (metrics-exporter-prometheus calls `to_retained`): for a key built from a
/// `Vec` of labels that copies the `Vec` and every label, per decision; for a retained
/// key it is a reference count.
fn retained(key: Key) -> Key {
    key.to_retained()
}

/// `base` followed by a series' own labels.
fn labelled<const N: usize>(base: &[Label], own: [(&'static str, SharedString); N]) -> Vec<Label> {
    let mut labels = Vec::with_capacity(base.len() + N);
    labels.extend(base.iter().cloned());
    labels.extend(own.into_iter().map(|(k, v)| Label::new(k, v)));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_label_finds_its_own_index() {
        for (i, label) in DECISION_LABELS.iter().enumerate() {
            assert_eq!(decision_label_index(label), Some(i), "{label}");
        }
        assert_eq!(decision_label_index("allowe"), None);
        assert_eq!(decision_label_index(""), None);
    }

    #[test]
    fn a_verdicts_label_index_is_its_decisions_label() {
        for allowed in [true, false] {
            for shadow in [true, false] {
                let kind = super::super::pipeline::verdict_kind(allowed, shadow);
                let decision = Decision::new(kind, None).in_shadow(shadow);
                let at = verdict_label_index(allowed, shadow);
                assert_eq!(DECISION_LABELS[at], decision.metric_label());
            }
        }
    }
}
