//! The decision engine: policies + store + what to do when the store fails.
//!
//! [`RateLimiter`] is what the HTTP [`RateLimitLayer`](crate::RateLimitLayer), the
//! sidecar and its `/check` API all call. A decision has two steps:
//!
//! 1. [`RateLimiter::prepare`] (synchronous) finds the first matching policy, extracts
//!    every limit's key and the request's cost. Requests that match nothing, lack a
//!    key or state a bad cost are answered here.
//! 2. [`RateLimiter::decide`] asks the store about all the policy's limits at once.
//!    [`RateLimiter::try_decide_now`] answers without a future when it can: the memory
//!    store is synchronous, and a refusal may already be in the deny cache.
//!
//! Around the store call sit, in order: the local deny cache (skips the store for keys
//! already refused), the circuit breaker (skips it during an outage), a timeout
//! (bounds every call), and the [`FailureMode`] that answers when the store does not.

mod breaker;
mod decision;
mod deny_cache;
mod failure;
mod metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;

use self::breaker::Breaker;
pub use self::breaker::{BreakerConfig, CircuitState};
pub use self::decision::{Decision, DecisionKind, LimitStatus};
use self::deny_cache::DenyCache;
pub use self::failure::FailureMode;
pub use self::metrics::describe_metrics;
use self::metrics::LimiterMetrics;
use crate::algorithm::{LimitSpec, Verdict};
use crate::clock::{Clock, SystemClock};
use crate::key::KeyExtractor;
use crate::policy::{MissingKey, Policy, PolicyError};
use crate::store::{Check, MemoryStore, Store, StoreError};

/// Decides whether requests may pass. Cheap to clone; clones share everything.
///
/// ```
/// use tollgate::key::Key;
/// use tollgate::policy::Policy;
/// use tollgate::{DecisionKind, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RateLimiter::builder()
///     .policy(Policy::single("per-key", "2/m".parse()?, Key::header("x-api-key")))
///     .build()?;
///
/// let request = http::Request::get("/").header("x-api-key", "k1").body(())?;
/// let (parts, _) = request.into_parts();
/// let mut kinds = Vec::new();
/// for _ in 0..3 {
///     kinds.push(limiter.check(&parts).await.kind);
/// }
/// assert_eq!(kinds, [DecisionKind::Allowed, DecisionKind::Allowed, DecisionKind::Limited]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    policies: Vec<Policy>,
    store: Arc<dyn Store>,
    store_kind: &'static str,
    fallback: Option<MemoryStore>,
    failure_mode: FailureMode,
    timeout: Duration,
    breaker: Breaker,
    deny_cache: Option<DenyCache>,
    shadow: bool,
    clock: Arc<dyn Clock>,
    log: LogThrottle,
    metrics: LimiterMetrics,
}

/// At most one store-failure warning per second: an outage under load would otherwise
/// write one line per request.
#[derive(Debug)]
struct LogThrottle {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written, plus one (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    fn new() -> Self {
        LogThrottle {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    fn permit(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        // Another thread may have stored a later `last` after this one read the clock.
        if last != 0 && now.saturating_sub(last) < 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.suppressed.swap(0, Ordering::Relaxed))
            .or_else(|| {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            })
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policies", &self.inner.policies.len())
            .field("store", &self.inner.store_kind)
            .field("failure_mode", &self.inner.failure_mode)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// A limiter that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Two policies share a name.
    #[error("policy {0:?} is declared twice")]
    DuplicatePolicy(String),
    /// The decision timeout is zero.
    #[error("decision timeout must be greater than zero")]
    ZeroTimeout,
    /// A static metric label is not a valid Prometheus label name, is reserved, or is
    /// given twice.
    #[error("metric label {name:?}: {reason}")]
    MetricLabel {
        /// The label's name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Configures a [`RateLimiter`].
pub struct RateLimiterBuilder {
    store: Option<Arc<dyn Store>>,
    policies: Vec<Policy>,
    failure_mode: FailureMode,
    timeout: Duration,
    breaker: BreakerConfig,
    deny_cache: bool,
    shadow: bool,
    fallback_max_keys: usize,
    clock: Arc<dyn Clock>,
    metric_labels: Vec<(Arc<str>, Arc<str>)>,
}

impl RateLimiterBuilder {
    /// Where state lives (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared behind an `Arc`.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a policy; the first policy that matches a request decides it.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Adds several policies.
    pub fn policies(mut self, policies: impl IntoIterator<Item = Policy>) -> Self {
        self.policies.extend(policies);
        self
    }

    /// What to answer while the store fails (default [`FailureMode::Open`]).
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// The longest a decision may wait for the store (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Circuit breaker settings (default: open after 3 failures for 500 ms).
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Answer keys the store refused from a local cache until their `Retry-After`
    /// passes (default on; only used with stores that are not already local).
    pub fn deny_cache(mut self, enabled: bool) -> Self {
        self.deny_cache = enabled;
        self
    }

    /// Shadow mode for every policy: decide and record, never reject (default off).
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Key bound of the local fallback store used by [`FailureMode::Local`].
    pub fn fallback_max_keys(mut self, max_keys: usize) -> Self {
        self.fallback_max_keys = max_keys;
        self
    }

    /// The clock of the deny cache and the local fallback store (default: system).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a label that every metric series of this limiter carries, such as
    /// `node="sidecar-1"` (default: none).
    ///
    /// The `metrics` facade has one recorder per process, so two limiters in one
    /// process write into the same families; static labels keep their series apart.
    /// `name` must be a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
    /// with `__`) other than the limiter's own `policy`, `decision`, `store` and
    /// `kind`; [`build`](Self::build) says which rule a bad name breaks.
    pub fn metric_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metric_labels
            .push((name.into().into(), value.into().into()));
        self
    }

    /// Validates everything and builds the limiter.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the invalid policy or setting.
    pub fn build(self) -> Result<RateLimiter, BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        for (i, (name, _)) in self.metric_labels.iter().enumerate() {
            let reason = if !is_label_name(name) {
                Some("not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            } else if name.starts_with("__") {
                Some("names starting with `__` are reserved by Prometheus")
            } else if metrics::OWN_LABELS.contains(&&**name) {
                Some("the limiter sets this label itself")
            } else if self.metric_labels[..i].iter().any(|(n, _)| n == name) {
                Some("given twice")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(BuildError::MetricLabel {
                    name: name.to_string(),
                    reason,
                });
            }
        }
        for (i, policy) in self.policies.iter().enumerate() {
            policy.validate()?;
            if self.policies[..i].iter().any(|p| p.name == policy.name) {
                return Err(BuildError::DuplicatePolicy(policy.name.to_string()));
            }
        }
        let clock = self.clock;
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::builder().clock(clock.clone()).build()));
        let local = store.is_local();
        let fallback = (self.failure_mode == FailureMode::Local && !local).then(|| {
            MemoryStore::builder()
                .max_keys(self.fallback_max_keys)
                .clock(clock.clone())
                .build()
        });
        let limiter = RateLimiter {
            inner: Arc::new(Inner {
                policies: self.policies,
                store_kind: store.kind(),
                store,
                fallback,
                failure_mode: self.failure_mode,
                timeout: self.timeout,
                breaker: Breaker::new(self.breaker),
                deny_cache: (self.deny_cache && !local).then(DenyCache::default),
                shadow: self.shadow,
                clock,
                log: LogThrottle::new(),
                metrics: LimiterMetrics::new(&self.metric_labels),
            }),
        };
        // Every build, not once per process: a recorder installed after an earlier
        // build would otherwise never get the descriptions. It is a few map inserts.
        describe_metrics();
        Ok(limiter)
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A request whose keys and cost are known, waiting for the store's answer.
#[derive(Debug, Clone)]
pub struct Pending {
    policy: Arc<str>,
    shadow: bool,
    cost: u64,
    names: Vec<Arc<str>>,
    checks: Vec<Check>,
}

impl Pending {
    /// An ad-hoc decision outside any policy (used by decision APIs such as the
    /// sidecar's `/check`): add limits with [`Pending::limit`].
    pub fn new(policy: impl Into<Arc<str>>, cost: u64) -> Self {
        Pending {
            policy: policy.into(),
            shadow: false,
            cost,
            names: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Adds limit `name` of `spec`, counted under `key`.
    pub fn limit(mut self, name: impl Into<Arc<str>>, spec: LimitSpec, key: &str) -> Self {
        let name = name.into();
        self.checks
            .push(Check::new(storage_key(&self.policy, key, &name), spec));
        self.names.push(name);
        self
    }

    /// The checks that will be sent to the store.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    fn cache_key(&self) -> String {
        match self.checks.as_slice() {
            [one] => one.key.clone(),
            many => many
                .iter()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// `{policy:key}:limit` — the braces are a Redis Cluster hash tag, so every limit of
/// one policy and key lands in one slot.
fn storage_key(policy: &str, key: &str, limit: &str) -> String {
    let mut out = String::with_capacity(policy.len() + key.len() + limit.len() + 4);
    out.push('{');
    out.push_str(policy);
    out.push(':');
    out.push_str(key);
    out.push_str("}:");
    out.push_str(limit);
    out
}

/// The result of [`RateLimiter::prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// Answered without the store (no policy, no key, bad cost).
    Done(Decision),
    /// The store must be asked.
    Pending(Pending),
}

impl RateLimiter {
    /// Configures a limiter.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            store: None,
            policies: Vec::new(),
            failure_mode: FailureMode::default(),
            timeout: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
            deny_cache: true,
            shadow: false,
            fallback_max_keys: 100_000,
            clock: Arc::new(SystemClock),
            metric_labels: Vec::new(),
        }
    }

    /// The policies, in matching order.
    pub fn policies(&self) -> &[Policy] {
        &self.inner.policies
    }

    /// The store's kind (`"memory"`, `"redis"`).
    pub fn store_kind(&self) -> &'static str {
        self.inner.store_kind
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.inner.failure_mode
    }

    /// The circuit breaker's state.
    pub fn circuit_state(&self) -> CircuitState {
        self.inner.breaker.state()
    }

    /// Whether the store answers within the decision timeout now.
    ///
    /// # Errors
    ///
    /// The store's error, or [`StoreError::Timeout`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        // A probe, not a decision: it may take a little longer than one.
        let wait = self.inner.timeout.max(Duration::from_millis(250));
        tokio::time::timeout(wait, self.inner.store.ping())
            .await
            .map_err(|_| StoreError::Timeout(wait))?
    }

    /// Decides one request end to end: [`prepare`](Self::prepare), then
    /// [`decide`](Self::decide).
    pub async fn check(&self, request: &Parts) -> Decision {
        match self.prepare(request) {
            Prepared::Done(decision) => decision,
            Prepared::Pending(pending) => self.decide(pending).await,
        }
    }

    /// Finds the policy, the keys and the cost of a request.
    pub fn prepare(&self, request: &Parts) -> Prepared {
        let Some(policy) = self.inner.policies.iter().find(|p| p.matches(request)) else {
            return Prepared::Done(self.record(Decision::new(DecisionKind::Unmatched, None)));
        };
        let name = Some(policy.name.clone());
        // In shadow mode every outcome, a missing key and a bad cost included, is
        // recorded and the request passes.
        let shadow = policy.shadow || self.inner.shadow;
        let cost = match policy.cost.of(request) {
            Ok(cost) => cost,
            Err(e) => {
                let decision = Decision::new(DecisionKind::InvalidCost(e.0), name);
                return Prepared::Done(self.record(decision.in_shadow(shadow)));
            }
        };
        let mut pending = Pending::new(policy.name.clone(), cost);
        pending.shadow = shadow;
        for limit in &policy.limits {
            let key = match (limit.key.extract(request), &policy.missing_key) {
                (Some(key), _) => key,
                (None, MissingKey::Fallback(key)) => key.clone(),
                (None, MissingKey::Allow) => {
                    return Prepared::Done(
                        self.record(Decision::new(DecisionKind::Bypassed, name)),
                    );
                }
                (None, MissingKey::Reject) => {
                    let kind = DecisionKind::MissingKey {
                        limit: limit.name.clone(),
                        reason: limit.key.why_missing(request),
                    };
                    let decision = Decision::new(kind, name).in_shadow(shadow);
                    return Prepared::Done(self.record(decision));
                }
            };
            pending = pending.limit(limit.name.clone(), limit.spec, &key);
        }
        Prepared::Pending(pending)
    }

    /// Answers without waiting when possible (local store, or a cached refusal);
    /// otherwise hands the request back for [`decide`](Self::decide).
    ///
    /// # Errors
    ///
    /// Returns the pending request when only the store can answer.
    pub fn try_decide_now(&self, pending: Pending) -> Result<Decision, Pending> {
        if let Some(decision) = self.cached_refusal(&pending) {
            return Ok(self.record(decision));
        }
        match self.inner.store.check_now(&pending.checks, pending.cost) {
            Some(Ok(verdicts)) => Ok(self.record(self.finish(&pending, verdicts, false))),
            Some(Err(e)) => Ok(self.record(self.on_failure(&pending, &e))),
            None => Err(pending),
        }
    }

    /// Asks the store (bounded by the timeout, skipped while the breaker is open) and
    /// applies the failure mode if it does not answer.
    pub async fn decide(&self, pending: Pending) -> Decision {
        match self.try_decide_now(pending) {
            Ok(decision) => decision,
            Err(pending) => self.ask_store(pending).await,
        }
    }

    /// The store round trip of [`decide`](Self::decide), for callers that already
    /// tried [`try_decide_now`](Self::try_decide_now).
    pub(crate) async fn ask_store(&self, pending: Pending) -> Decision {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            return self.record(self.on_failure(&pending, &StoreError::CircuitOpen));
        }
        let started = Instant::now();
        let result = tokio::time::timeout(
            inner.timeout,
            inner.store.check(&pending.checks, pending.cost),
        )
        .await
        .unwrap_or(Err(StoreError::Timeout(inner.timeout)));
        inner
            .metrics
            .store_latency(inner.store_kind, started.elapsed());
        let decision = match result {
            Ok(verdicts) => {
                inner.breaker.success();
                let decision = self.finish(&pending, verdicts, false);
                if let (Some(cache), DecisionKind::Limited) = (&inner.deny_cache, &decision.kind) {
                    cache.insert(
                        pending.cache_key(),
                        pending.cost,
                        inner.clock.now_us(),
                        &decision.limits,
                    );
                }
                decision
            }
            Err(e) => {
                inner.breaker.failure();
                self.on_failure(&pending, &e)
            }
        };
        inner
            .metrics
            .circuit(inner.store_kind, inner.breaker.state());
        self.record(decision)
    }

    fn cached_refusal(&self, pending: &Pending) -> Option<Decision> {
        let cache = self.inner.deny_cache.as_ref()?;
        let limits = cache.get(
            &pending.cache_key(),
            pending.cost,
            self.inner.clock.now_us(),
        )?;
        self.inner.metrics.deny_cache_hit(&pending.policy);
        let kind = if pending.shadow {
            DecisionKind::ShadowLimited
        } else {
            DecisionKind::Limited
        };
        Some(Decision {
            kind,
            policy: Some(pending.policy.clone()),
            limits,
            from_fallback: false,
            shadow: pending.shadow,
        })
    }

    fn finish(&self, pending: &Pending, verdicts: Vec<Verdict>, from_fallback: bool) -> Decision {
        let allowed = verdicts.iter().all(|v| v.allowed);
        let kind = match (allowed, pending.shadow) {
            (true, _) => DecisionKind::Allowed,
            (false, true) => DecisionKind::ShadowLimited,
            (false, false) => DecisionKind::Limited,
        };
        let limits = pending
            .names
            .iter()
            .zip(&pending.checks)
            .zip(verdicts)
            .map(|((name, check), verdict)| LimitStatus {
                name: name.clone(),
                spec: check.spec,
                verdict,
            })
            .collect();
        Decision {
            kind,
            policy: Some(pending.policy.clone()),
            limits,
            from_fallback,
            shadow: pending.shadow,
        }
    }

    fn on_failure(&self, pending: &Pending, error: &StoreError) -> Decision {
        let inner = &self.inner;
        inner.metrics.store_error(inner.store_kind, error.kind());
        if !matches!(error, StoreError::CircuitOpen) {
            if let Some(suppressed) = inner.log.permit() {
                tracing::warn!(store = inner.store_kind, %error, mode = ?inner.failure_mode, suppressed, "rate-limit store failed");
            }
        }
        let policy = Some(pending.policy.clone());
        match (inner.failure_mode, &inner.fallback) {
            (FailureMode::Local, Some(fallback)) => {
                inner.metrics.fallback(&pending.policy);
                let verdicts = fallback.decide(&pending.checks, pending.cost);
                self.finish(pending, verdicts, true)
            }
            (FailureMode::Closed, _) => {
                let retry_after = inner.breaker.remaining_open().max(Duration::from_secs(1));
                Decision::new(DecisionKind::FailedClosed { retry_after }, policy)
                    .in_shadow(pending.shadow)
            }
            _ => Decision::new(DecisionKind::FailedOpen, policy).in_shadow(pending.shadow),
        }
    }

    fn record(&self, decision: Decision) -> Decision {
        if decision.kind != DecisionKind::Unmatched {
            self.inner.metrics.decided(&decision);
        }
        if decision.shadow && !decision.kind_passes() {
            tracing::debug!(
                policy = decision.policy.as_deref().unwrap_or(""),
                outcome = decision.metric_label(),
                "shadow policy would have answered differently; the request passes"
            );
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_throttle_survives_a_later_timestamp_from_another_thread() {
        let throttle = LogThrottle::new();
        // Another thread read the clock after this one and stored its time first.
        throttle.last_ms.store(u64::MAX / 2, Ordering::Relaxed);
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_log_throttle_counts_what_it_suppresses() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.permit(), Some(0));
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }
}
