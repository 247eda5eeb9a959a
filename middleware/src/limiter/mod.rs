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
//!
//! Files: `builder.rs` (settings, validated at once), `pending.rs` (a request waiting
//! for the store), `pipeline.rs` (deny cache → breaker → timeout → failure mode),
//! `deny_cache.rs`, `breaker.rs`, `failure.rs`, `decision.rs`, `metrics.rs`, and
//! `throttle.rs` (one store warning a second).

mod breaker;
mod builder;
mod decision;
mod deny_cache;
mod failure;
mod last_error;
mod lease;
mod metrics;
mod pending;
mod pipeline;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use self::breaker::Breaker;
pub use self::breaker::{BreakerConfig, CircuitState};
pub use self::builder::{BuildError, RateLimiterBuilder};
pub use self::decision::{Decision, DecisionKind, LimitStatus, Limits, LimitsIntoIter};
use self::deny_cache::DenyCache;
pub use self::failure::{FailureMode, Unavailable, UnknownFailureMode};
pub use self::lease::LeaseConfig;
use self::lease::Leases;
pub use self::metrics::describe_metrics;
use self::metrics::LimiterMetrics;
use self::pending::{close_storage_key, recycle_storage_key, storage_key_start};
pub use self::pending::{Pending, Prepared};
use self::pipeline::verdict_kind;
pub use self::throttle::LogThrottle;
use crate::clock::Clock;
use crate::key::KeyExtractor;
use crate::policy::{
    check_name, Consistency, CostError, Limit, MissingKey, Policy, PolicyError, PolicyProblem,
};
use crate::store::{Check, MemoryStore, Store, StoreErrorKind};

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
    last_error: last_error::LastError,
    metrics: LimiterMetrics,
    /// Leased limits' slices on this node; `None` with a local store (always exact).
    leases: Option<Leases>,
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

impl RateLimiter {
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

    /// The store error of the most recent failed decision (its kind and its `Display`
    /// text), until a decision succeeds again or no decision failed for 10 s; sampled at
    /// most once a second, with the logged warning. (It fades because an instance that
    /// reports it as not ready gets no traffic that could clear it.)
    ///
    /// A readiness probe reads it beside [`ping`](Self::ping): a store can answer a
    /// ping yet refuse every decision (a Redis ACL user without `EVALSHA`).
    pub fn last_store_error(&self) -> Option<(StoreErrorKind, String)> {
        self.inner.last_error.get()
    }

    /// Whether the store answers within the decision timeout now.
    ///
    /// # Errors
    ///
    /// [`Unavailable::Store`] with the store's error, or [`Unavailable::Timeout`].
    pub async fn ping(&self) -> Result<(), Unavailable> {
        // A probe, not a decision: it may take a little longer than one.
        let wait = self.inner.timeout.max(Duration::from_millis(250));
        tokio::time::timeout(wait, self.inner.store.ping())
            .await
            .map_err(|_| Unavailable::Timeout(wait))?
            .map_err(Unavailable::Store)
    }

    /// Decides one limit outside any policy, for decision APIs such as the sidecar's
    /// `POST /check`: `cost` units of `limit` under `key`, counted in the same store,
    /// with the same deny cache, breaker, timeout and failure mode as policies. The
    /// limit's name stands for the policy in metrics and storage keys.
    ///
    /// ```
    /// use tollgate::key::Key;
    /// use tollgate::policy::Limit;
    /// use tollgate::{DecisionKind, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::builder().build()?;
    /// let limit = Limit::new("check", "1/m".parse()?, Key::global());
    /// assert_eq!(limiter.decide_one(&limit, "user-7", 1).await?.kind, DecisionKind::Allowed);
    /// assert_eq!(limiter.decide_one(&limit, "user-7", 1).await?.kind, DecisionKind::Limited);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when the limit's name is not a valid name (it becomes part of
    /// the storage key and the `RateLimit` header).
    pub async fn decide_one(
        &self,
        limit: &Limit,
        key: &str,
        cost: u64,
    ) -> Result<Decision, PolicyError> {
        check_name(&limit.name).map_err(|e| PolicyError {
            policy: limit.name.to_string(),
            reason: PolicyProblem::LimitName(e),
        })?;
        let pending = Pending::new(limit.name.clone(), cost)
            .limit(limit.name.clone(), limit.spec, key)
            .leased(limit.consistency());
        Ok(self.decide(pending).await)
    }

    /// Decides several ad-hoc limits together, for decision APIs whose callers name
    /// many counters at once (the sidecar's Envoy rate limit service): each `(limit,
    /// key)` pair is counted under `key`, and all of them are decided in **one** store
    /// call — all-or-nothing: either every limit admits `cost` units and all are
    /// charged, or none is. The deny cache, breaker, timeout and failure mode apply as
    /// for policies; `policy` names the decision in metrics and is the first part of
    /// every storage key (`{policy:key}:limit`, a Redis Cluster hash tag per key).
    ///
    /// ```
    /// use tollgate::key::Key;
    /// use tollgate::policy::Limit;
    /// use tollgate::{DecisionKind, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::builder().build()?;
    /// let per_user = Limit::new("user", "2/m".parse()?, Key::global());
    /// let per_org = Limit::new("org", "3/m".parse()?, Key::global());
    /// let limits = [(per_user.clone(), "u1".to_owned()), (per_org, "acme".to_owned())];
    /// assert_eq!(limiter.decide_many("api", &limits, 1).await?.kind, DecisionKind::Allowed);
    /// assert_eq!(limiter.decide_many("api", &limits, 1).await?.kind, DecisionKind::Allowed);
    /// // The user's limit refuses the third, so the org's is not charged either.
    /// let third = limiter.decide_many("api", &limits, 1).await?;
    /// assert_eq!(third.kind, DecisionKind::Limited);
    /// assert_eq!(third.limits[1].verdict.remaining, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`PolicyError`] when `policy` or a limit's name is not a valid name, or
    /// `limits` is empty.
    pub async fn decide_many(
        &self,
        policy: &str,
        limits: &[(Limit, String)],
        cost: u64,
    ) -> Result<Decision, PolicyError> {
        let error = |reason| PolicyError {
            policy: policy.to_owned(),
            reason,
        };
        check_name(policy).map_err(|e| error(PolicyProblem::PolicyName(e)))?;
        if limits.is_empty() {
            return Err(error(PolicyProblem::NoLimits));
        }
        let mut pending = Pending::new(policy, cost);
        for (limit, key) in limits {
            check_name(&limit.name).map_err(|e| error(PolicyProblem::LimitName(e)))?;
            pending = pending
                .limit(limit.name.clone(), limit.spec, key)
                .leased(limit.consistency());
        }
        Ok(self.decide(pending).await)
    }

    /// Decides one request end to end: [`prepare`](Self::prepare), then
    /// [`decide`](Self::decide).
    pub async fn check(&self, request: &Parts) -> Decision {
        match self.check_now(request) {
            Ok(decision) => decision,
            Err(pending) => self.ask_store_owned(pending).await,
        }
    }

    /// [`prepare`](Self::prepare) and then [`try_decide_now`](Self::try_decide_now) in
    /// one call, with the same answers: the decision when it is known without waiting,
    /// otherwise the request for [`decide`](Self::decide).
    ///
    /// The usual request, one limit with nothing between it and a store that answers at
    /// once (the memory store), is decided here without building a [`Pending`]: its
    /// storage key is built in this thread's spare buffer, the store is asked, and the
    /// decision is built in place. The two-step path moves a `Pending` (about 170
    /// bytes) and then a `Decision` (about 150) through each call, which cost about as
    /// much as the store's own decision.
    ///
    /// ```
    /// use tollgate::key::Key;
    /// use tollgate::policy::Policy;
    /// use tollgate::{DecisionKind, RateLimiter};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RateLimiter::builder()
    ///     .policy(Policy::single("per-key", "1/m".parse()?, Key::header("x-api-key")))
    ///     .build()?;
    /// let (parts, _) = http::Request::get("/").header("x-api-key", "k1").body(())?.into_parts();
    /// // The memory store answers at once.
    /// assert_eq!(limiter.check_now(&parts).ok().map(|d| d.kind), Some(DecisionKind::Allowed));
    /// assert_eq!(limiter.check_now(&parts).ok().map(|d| d.kind), Some(DecisionKind::Limited));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Returns the pending request when only the store can answer.
    // The `Err` is the request handed back, as `try_decide_now`'s.
    #[allow(clippy::result_large_err)]
    pub fn check_now(&self, request: &Parts) -> Result<Decision, Pending> {
        let Some((index, policy)) = self.matching(request) else {
            return Ok(self.unmatched());
        };
        if let [limit] = policy.limits.as_slice() {
            if self.direct(limit) {
                return self.check_direct(request, index, policy, limit);
            }
        }
        match self.prepare_for(request, index, policy) {
            Prepared::Done(decision) => Ok(decision),
            Prepared::Pending(pending) => self.try_decide_now(pending),
        }
    }

    /// Finds the policy, the keys and the cost of a request.
    pub fn prepare(&self, request: &Parts) -> Prepared {
        match self.matching(request) {
            Some((index, policy)) => self.prepare_for(request, index, policy),
            None => Prepared::Done(self.unmatched()),
        }
    }

    /// The first policy that matches `request`, and its position.
    fn matching(&self, request: &Parts) -> Option<(usize, &Policy)> {
        self.inner
            .policies
            .iter()
            .enumerate()
            .find(|(_, p)| p.matches(request))
    }

    fn unmatched(&self) -> Decision {
        self.record(Decision::new(DecisionKind::Unmatched, None))
    }

    /// [`prepare`](Self::prepare) for the policy at `index`, which matched.
    fn prepare_for(&self, request: &Parts, index: usize, policy: &Policy) -> Prepared {
        let slot = Some(index);
        let (shadow, cost) = match self.shadow_and_cost(request, policy, slot) {
            Ok(found) => found,
            Err(decision) => return Prepared::Done(decision),
        };
        let mut pending = Pending::for_policy(policy.name.clone(), cost, shadow, slot);
        for limit in &policy.limits {
            // The key is written straight into its storage key: one `String` per limit.
            let mut storage = storage_key_start(&policy.name, &limit.name, EXPECTED_KEY_LEN);
            if let Some(decision) =
                self.key_into(request, policy, limit, slot, shadow, &mut storage)
            {
                return Prepared::Done(decision);
            }
            pending.push_limit(limit.name.clone(), limit.spec, storage);
            pending.set_leased(limit.consistency());
        }
        Prepared::Pending(pending)
    }

    /// Whether a request of one `limit` can skip the steps that need a [`Pending`]: no
    /// deny cache (there is none for a local store) and no lease (there are none for a
    /// local store; an exact limit never takes one).
    fn direct(&self, limit: &Limit) -> bool {
        self.inner.deny_cache.is_none()
            && (self.inner.leases.is_none() || limit.consistency() == Consistency::Exact)
    }

    /// [`check_now`](Self::check_now) for a policy of one `limit` that is
    /// [`direct`](Self::direct): what `prepare_for` and `try_decide_now` do for it,
    /// with no `Pending` unless the store cannot answer now.
    // The `Err` is the request handed back, as `try_decide_now`'s.
    #[allow(clippy::result_large_err)]
    fn check_direct(
        &self,
        request: &Parts,
        index: usize,
        policy: &Policy,
        limit: &Limit,
    ) -> Result<Decision, Pending> {
        let slot = Some(index);
        let (shadow, cost) = match self.shadow_and_cost(request, policy, slot) {
            Ok(found) => found,
            Err(decision) => return Ok(decision),
        };
        let mut storage = storage_key_start(&policy.name, &limit.name, EXPECTED_KEY_LEN);
        if let Some(decision) = self.key_into(request, policy, limit, slot, shadow, &mut storage) {
            return Ok(decision);
        }
        close_storage_key(&mut storage, &limit.name);
        let check = Check::new(storage, limit.spec);
        match self.inner.store.check_one_now(&check, cost) {
            Some(Ok(verdict)) => {
                // The storage key is done with: its buffer serves the next request's key.
                recycle_storage_key(check.key);
                // Built as the result: a `Decision` built first and wrapped after would be
                // copied (a `memcpy` call) into place.
                let decided = Ok(Decision {
                    kind: verdict_kind(verdict.allowed, shadow),
                    policy: Some(policy.name.clone()),
                    limits: Limits::one(LimitStatus {
                        name: limit.name.clone(),
                        spec: limit.spec,
                        verdict,
                    }),
                    from_fallback: false,
                    shadow,
                });
                // What `count` does for this decision: its kind passes, so there is no
                // shadow-mode note to log.
                self.inner
                    .metrics
                    .decided_verdict(index, verdict.allowed, shadow);
                decided
            }
            // Not the usual answer (a store that fails or must be waited for): the
            // general path, from the same `Pending` `prepare` would have built.
            answer => {
                let mut pending = Pending::for_policy(policy.name.clone(), cost, shadow, slot);
                pending.push_check(limit.name.clone(), check);
                pending.set_leased(limit.consistency());
                match answer {
                    Some(Err(e)) => {
                        let decision = self.on_failure(&pending, &Unavailable::Store(e));
                        Ok(self.record_at(decision, slot))
                    }
                    _ => Err(pending),
                }
            }
        }
    }

    /// Whether `policy` (at `slot`) runs in shadow mode, and the request's cost; or the
    /// answer to a request whose cost is invalid.
    // Always inlined: on the direct path a returned `Result` this large would go
    // through memory. (Its `Err` is the finished answer, as `check_now`'s `Ok`.)
    #[inline(always)]
    #[allow(clippy::result_large_err)]
    fn shadow_and_cost(
        &self,
        request: &Parts,
        policy: &Policy,
        slot: Option<usize>,
    ) -> Result<(bool, u64), Decision> {
        // In shadow mode every outcome, a missing key and a bad cost included, is
        // recorded and the request passes.
        let shadow = policy.shadow || self.inner.shadow;
        match policy.cost.of(request) {
            Ok(cost) => Ok((shadow, cost)),
            Err(e) => Err(self.invalid_cost(policy, slot, shadow, e)),
        }
    }

    /// The answer to a request whose cost is invalid.
    fn invalid_cost(
        &self,
        policy: &Policy,
        slot: Option<usize>,
        shadow: bool,
        error: CostError,
    ) -> Decision {
        let decision = Decision::new(DecisionKind::InvalidCost(error), Some(policy.name.clone()));
        self.record_at(decision.in_shadow(shadow), slot)
    }

    /// Writes `limit`'s key of `request` after the start of its storage key in
    /// `storage`, or the policy's fallback key; or answers the request when it has no
    /// key and the policy allows or rejects such requests.
    fn key_into(
        &self,
        request: &Parts,
        policy: &Policy,
        limit: &Limit,
        slot: Option<usize>,
        shadow: bool,
        storage: &mut String,
    ) -> Option<Decision> {
        let start = storage.len();
        if limit.key.extract_into(request, storage) {
            return None;
        }
        storage.truncate(start);
        // Only the answers given here need the name; the store's answer takes the
        // `Pending`'s.
        let name = || Some(policy.name.clone());
        match &policy.missing_key {
            MissingKey::Fallback(key) => {
                storage.push_str(key);
                None
            }
            MissingKey::Allow => {
                let decision = Decision::new(DecisionKind::Bypassed, name());
                Some(self.record_at(decision, slot))
            }
            MissingKey::Reject => {
                let kind = DecisionKind::MissingKey {
                    limit: limit.name.clone(),
                    reason: limit.key.why_missing(request),
                };
                let decision = Decision::new(kind, name()).in_shadow(shadow);
                Some(self.record_at(decision, slot))
            }
        }
    }
}

/// Room reserved for an extracted key in a storage key, so the usual API key or address
/// fits without growing the buffer.
const EXPECTED_KEY_LEN: usize = 40;
