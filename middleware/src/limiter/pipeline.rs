//! The way to a decision once keys are known: deny cache → circuit breaker → store call
//! bounded by the timeout → the failure mode when the store does not answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pending::recycle_checks;
use super::{
    Decision, DecisionKind, FailureMode, LimitStatus, Limits, Pending, RateLimiter, Unavailable,
};
use crate::algorithm::Verdict;
use crate::store::Check;

impl RateLimiter {
    /// Answers without waiting when possible (local store, or a cached refusal);
    /// otherwise hands the request back for [`decide`](Self::decide).
    ///
    /// # Errors
    ///
    /// Returns the pending request when only the store can answer.
    // The `Err` is the request handed back (its one-limit checks are inline, so it is
    // large): boxing it would add an allocation to every remote decision.
    #[allow(clippy::result_large_err)]
    pub fn try_decide_now(&self, pending: Pending) -> Result<Decision, Pending> {
        let slot = pending.policy_index;
        // Leased limits (issue 13, limiter/lease): spend the node's lease first.
        if let Some(decision) = self.lease_now(&pending) {
            return Ok(self.record_at(decision, slot));
        }
        if let Some(decision) = self.cached_refusal(&pending) {
            return Ok(self.record_at(decision, slot));
        }
        let store = &self.inner.store;
        let answer = match pending.checks.as_slice() {
            // The usual one-limit policy: the verdict by value, no `Vec`.
            [one] => match store.check_one_now(one, pending.cost) {
                Some(Ok(verdict)) => {
                    // Counted by reference: a `Decision` is large enough that every move
                    // is a `memcpy`.
                    let decision = self.finish_owned(pending, verdict);
                    self.count(&decision, slot);
                    return Ok(decision);
                }
                Some(Err(e)) => Err(e),
                None => return Err(pending),
            },
            many => match store.check_now(many, pending.cost) {
                Some(answer) => answer,
                None => return Err(pending),
            },
        };
        let decision = match answer {
            Ok(verdicts) => self.finish(&pending, verdicts, false),
            Err(e) => self.on_failure(&pending, &Unavailable::Store(e)),
        };
        Ok(self.record_at(decision, slot))
    }

    /// Asks the store (bounded by the timeout, skipped while the breaker is open) and
    /// applies the failure mode if it does not answer.
    pub async fn decide(&self, pending: Pending) -> Decision {
        match self.try_decide_now(pending) {
            Ok(decision) => decision,
            Err(pending) => self.ask_store_owned(pending).await,
        }
    }

    /// [`ask_store`](Self::ask_store) for a request the caller owns: its storage key's
    /// buffer then serves this thread's next request.
    pub(crate) async fn ask_store_owned(&self, pending: Pending) -> Decision {
        let decision = self.ask_store(&pending).await;
        pending.recycle();
        decision
    }

    /// The store round trip of [`decide`](Self::decide), for callers that already
    /// tried [`try_decide_now`](Self::try_decide_now).
    ///
    /// Takes the request by reference, as every step below does: the caller's future
    /// holds it once, where passing it by value would store a copy in each nested
    /// future (the layer boxes this one per request).
    pub(crate) async fn ask_store(&self, pending: &Pending) -> Decision {
        // Leased limits (issue 13, limiter/lease) refill or fall back to exact there.
        // Boxed: that path embeds the exact one and more, and an unboxed branch would
        // size every exact decision's future (boxed per request by the layer) for it.
        if self.leases_apply(pending) {
            return Box::pin(self.ask_store_leased(pending)).await;
        }
        self.ask_store_exact(pending).await
    }

    /// The exact store round trip: every limit decided by the store.
    pub(super) async fn ask_store_exact(&self, pending: &Pending) -> Decision {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            let decision = self.on_failure(pending, &Unavailable::CircuitOpen);
            return self.record_at(decision, pending.policy_index);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(
            inner.timeout,
            inner.store.check(&pending.checks, pending.cost),
        )
        .await
        .map_err(|_| Unavailable::Timeout(inner.timeout))
        .and_then(|answer| answer.map_err(Unavailable::Store));
        inner
            .metrics
            .store_latency(inner.store_kind, started.elapsed());
        let decision = match result {
            Ok(verdicts) => {
                inner.breaker.success();
                inner.last_error.clear();
                let decision = self.finish(pending, verdicts, false);
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
                self.on_failure(pending, &e)
            }
        };
        inner
            .metrics
            .circuit(inner.store_kind, inner.breaker.state());
        self.record_at(decision, pending.policy_index)
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

    pub(super) fn finish(
        &self,
        pending: &Pending,
        verdicts: Vec<Verdict>,
        from_fallback: bool,
    ) -> Decision {
        let names = pending.names.iter().cloned();
        let policy = pending.policy.clone();
        assemble(
            policy,
            pending.shadow,
            names,
            &pending.checks,
            verdicts,
            from_fallback,
        )
    }

    /// [`finish`](Self::finish) for a request that is done with: its names move into
    /// the decision instead of being counted up and down again.
    fn finish_owned(&self, pending: Pending, verdict: Verdict) -> Decision {
        let Pending {
            policy,
            shadow,
            names,
            checks,
            ..
        } = pending;
        let decision = match (names.into_inner(), checks.as_slice()) {
            // One limit, the usual policy: its status goes straight into the inline
            // `Limits`, with no iterator to collect.
            (Ok([name]), [check]) => {
                let status = LimitStatus {
                    name,
                    spec: check.spec,
                    verdict,
                };
                let kind = verdict_kind(verdict.allowed, shadow);
                Decision {
                    kind,
                    policy: Some(policy),
                    limits: Limits::one(status),
                    from_fallback: false,
                    shadow,
                }
            }
            (Ok(names), _) => assemble(policy, shadow, names, &checks, [verdict], false),
            (Err(names), _) => assemble(policy, shadow, names, &checks, [verdict], false),
        };
        // The storage key is done with: its buffer serves the next request's key.
        recycle_checks(checks);
        decision
    }

    pub(super) fn on_failure(&self, pending: &Pending, error: &Unavailable) -> Decision {
        let inner = &self.inner;
        inner.metrics.store_error(inner.store_kind, error.kind());
        if !matches!(error, Unavailable::CircuitOpen) {
            if let Some(suppressed) = inner.log.permit() {
                if let Some(store_error) = error.store_error() {
                    inner.last_error.set(store_error);
                }
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

    pub(super) fn record(&self, decision: Decision) -> Decision {
        self.record_at(decision, None)
    }

    /// Records a decision of the policy at `index` (its metric keys are built once), or
    /// of an ad-hoc policy (`None`: the key is built from the decision's policy name).
    pub(super) fn record_at(&self, decision: Decision, index: Option<usize>) -> Decision {
        self.count(&decision, index);
        decision
    }

    /// What [`record_at`](Self::record_at) does, without moving the decision.
    fn count(&self, decision: &Decision, index: Option<usize>) {
        if !matches!(decision.kind, DecisionKind::Unmatched) {
            self.inner.metrics.decided(decision, index);
        }
        if decision.shadow && !decision.kind_passes() {
            tracing::debug!(
                policy = decision.policy.as_deref().unwrap_or(""),
                outcome = decision.metric_label(),
                "shadow policy would have answered differently; the request passes"
            );
        }
    }
}

/// The decision of `policy` from one verdict per limit, in the order of `names` and
/// `checks`.
fn assemble(
    policy: Arc<str>,
    shadow: bool,
    names: impl IntoIterator<Item = Arc<str>>,
    checks: &[Check],
    verdicts: impl IntoIterator<Item = Verdict>,
    from_fallback: bool,
) -> Decision {
    let limits: Limits = names
        .into_iter()
        .zip(checks)
        .zip(verdicts)
        .map(|((name, check), verdict)| LimitStatus {
            name,
            spec: check.spec,
            verdict,
        })
        .collect();
    let allowed = limits.iter().all(|l| l.verdict.allowed);
    Decision {
        kind: verdict_kind(allowed, shadow),
        policy: Some(policy),
        limits,
        from_fallback,
        shadow,
    }
}

/// The kind of a decision the store answered: whether every limit admitted, and the
/// policy's shadow mode.
pub(super) fn verdict_kind(allowed: bool, shadow: bool) -> DecisionKind {
    match (allowed, shadow) {
        (true, _) => DecisionKind::Allowed,
        (false, true) => DecisionKind::ShadowLimited,
        (false, false) => DecisionKind::Limited,
    }
}
