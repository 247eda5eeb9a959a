//! Leased budgets ([`Consistency::Leased`](crate::policy::Consistency)): a node takes a
//! slice of a hot key's budget from the shared store in one call and spends it locally.
//!
//! # Design
//!
//! Exact decisions ask the store about every request, so one hot key is capped at what
//! one Redis core decides for one key. A lease is **consumption in advance**: the node
//! charges `N` units against the limit with the store's own atomic decision (same
//! algorithm, same Redis clock, [`Store::charge`](crate::store::Store::charge)), then
//! admits up to `N` requests from memory. Leasing by itself therefore never admits more
//! than the limit: every unit a node admits was admitted by the store first. Its error
//! is the other way — units stranded in one node's lease while another node refuses —
//! and it is bounded:
//!
//! - **Slice size** follows the node's observed rate for the key (`rate × target`,
//!   default 20 ms of traffic), is capped at `max_fraction` of the limit's burst (GCRA)
//!   or quota (windows), shrinks so that [`LOW_WATER_SLICES`](slice::LOW_WATER_SLICES)
//!   slices fit in the store's last reported remaining budget, and below two units the
//!   key is decided exactly. A cold key, a small limit (10/m) and the last few slices of
//!   a budget are exact; a hot key with a large limit gets memory-speed decisions.
//! - **Lifetime**: a lease is never spent after `max_age` (default 250 ms), nor after
//!   the end of the fixed or sliding window its units were counted in, nor — GCRA —
//!   beyond the part of the store's backlog that still covers it (`slice::Lease`). All
//!   deadlines are measured from the local instant *before* the charge was sent, so they
//!   fall early, never late.
//! - **Returns**: unused units go back through
//!   [`Store::give_back`](crate::store::Store::give_back) (never more than the charge
//!   consumed: [`crate::algorithm::refund`]) when a lease reaches `max_age`, when a
//!   newer lease replaces it, and on [`RateLimiter::return_leases`] (shutdown, drain).
//!   A lease that ends with its window has nothing to return: the window took its
//!   units with it.
//! - **Several limits in one request** stay all-or-nothing: the leased limits reserve
//!   locally, the exact ones are asked of the store, and a refusal puts the local
//!   units back.
//! - **Outages**: a node spends its current lease without the store; a refill goes
//!   through the breaker and the timeout like any decision, and when it fails the
//!   failure mode answers. A charge cut off by the timeout may still run in Redis: its
//!   units are stranded (an under-admission of at most one slice).
//!
//! Leases apply only to shared stores (`!Store::is_local()`): the memory store is exact
//! and as fast either way. docs/design.md ("Leased budgets") carries the bounds and their
//! proofs, and the figures measured.

mod slice;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use self::slice::{lifetime, max_age, slice_size, KeyLease, Lease};
use super::{BuildError, Decision, Pending, RateLimiter, Unavailable};
use crate::algorithm::{Algorithm, Verdict};
use crate::store::{Check, StoreFuture};

/// How leased limits ([`Consistency::Leased`](crate::policy::Consistency)) size and age
/// their slices; set with
/// [`RateLimiterBuilder::lease`](super::RateLimiterBuilder::lease).
///
/// ```
/// use std::time::Duration;
/// use tollgate::{LeaseConfig, RateLimiter};
///
/// let limiter = RateLimiter::builder()
///     .lease(LeaseConfig::new().target(Duration::from_millis(10)).max_fraction(0.05))
///     .build()?;
/// # Ok::<(), tollgate::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LeaseConfig {
    target: Duration,
    max_fraction: f64,
    max_age: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            target: Duration::from_millis(20),
            max_fraction: 0.1,
            max_age: Duration::from_millis(250),
        }
    }
}

impl LeaseConfig {
    /// The defaults: 20 ms of traffic a slice, at most 10 % of the burst or quota, at
    /// most 250 ms old.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slice is about this much of the node's observed traffic for the key (default
    /// 20 ms). Longer slices mean fewer store calls and more units a node can strand;
    /// zero never leases.
    pub fn target(mut self, target: Duration) -> Self {
        self.target = target;
        self
    }

    /// A slice never exceeds this fraction of the limit's burst (GCRA) or quota
    /// (windows); default 0.1. Must be in (0, 1].
    pub fn max_fraction(mut self, fraction: f64) -> Self {
        self.max_fraction = fraction;
        self
    }

    /// A lease is never spent after this age (default 250 ms); its unused units are
    /// given back then. Must be greater than zero; more than an hour counts as an hour.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The [`target`](Self::target) set.
    pub fn get_target(&self) -> Duration {
        self.target
    }

    /// The [`max_fraction`](Self::max_fraction) set.
    pub fn get_max_fraction(&self) -> f64 {
        self.max_fraction
    }

    /// The [`max_age`](Self::max_age) set.
    pub fn get_max_age(&self) -> Duration {
        self.max_age
    }

    pub(super) fn validate(&self) -> Result<(), BuildError> {
        // `!(x > 0)` also refuses NaN.
        if !(self.max_fraction > 0.0 && self.max_fraction <= 1.0) {
            return Err(BuildError::Lease {
                field: "max_fraction",
                reason: "must be greater than 0 and at most 1",
            });
        }
        if self.max_age.is_zero() {
            return Err(BuildError::Lease {
                field: "max_age",
                reason: "must be greater than zero",
            });
        }
        Ok(())
    }
}

/// A shard of the node's leased keys is trimmed past this many keys.
const MAX_KEYS_PER_SHARD: usize = 4096;

/// Keys unseen this long, holding no lease, are forgotten when a shard is trimmed.
const KEY_IDLE: Duration = Duration::from_secs(2);

/// Every leased key's state on this node, sharded by key like the memory store.
pub(super) struct Leases {
    config: LeaseConfig,
    shards: Box<[Mutex<HashMap<String, KeyLease>>]>,
    hasher: foldhash::fast::FixedState,
}

impl Leases {
    pub(super) fn new(config: LeaseConfig) -> Self {
        Leases {
            config,
            shards: (0..16).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::FixedState::with_seed(0x1ea5e),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<String, KeyLease>> {
        let index = (self.hasher.hash_one(key) as usize) & (self.shards.len() - 1);
        // Entries are changed in place by plain assignments: a panic under the lock
        // cannot leave one half-written, so a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state of `key`, creating it when new.
    fn with_key<R>(&self, key: &str, now: Instant, f: impl FnOnce(&mut KeyLease) -> R) -> R {
        let mut shard = self.shard(key);
        if let Some(state) = shard.get_mut(key) {
            state.last_seen = now;
            return f(state);
        }
        if shard.len() >= MAX_KEYS_PER_SHARD {
            shard.retain(|_, k| k.lease.is_some() || now.duration_since(k.last_seen) < KEY_IDLE);
        }
        f(shard
            .entry(key.to_owned())
            .or_insert_with(|| KeyLease::new(now)))
    }
}

/// Clears the refilling mark of its keys when dropped, however the request ends.
struct RefillGuard<'a> {
    leases: &'a Leases,
    keys: Vec<String>,
}

impl Drop for RefillGuard<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        for key in &self.keys {
            self.leases.with_key(key, now, |k| k.refilling = false);
        }
    }
}

/// What one leased limit of a request will be answered from.
enum Plan {
    /// Units reserved from the current lease of this generation.
    Reserved(Verdict, u64),
    /// A new slice of this many units is to be charged (the key is marked refilling).
    Refill(u64),
}

impl RateLimiter {
    /// Shows the lease families at zero for every policy with a leased limit, when this
    /// limiter leases at all (a shared store).
    pub(super) fn register_lease_metrics(&self) {
        if self.inner.leases.is_none() {
            return;
        }
        for policy in &self.inner.policies {
            if policy
                .limits
                .iter()
                .any(|l| l.consistency == crate::policy::Consistency::Leased)
            {
                self.inner.metrics.lease_zero(&policy.name);
            }
        }
    }

    /// Whether `pending` takes the leased path.
    pub(super) fn leases_apply(&self, pending: &Pending) -> bool {
        pending.leased != 0 && self.inner.leases.is_some()
    }

    /// Answers from the node's leases without a store call, when every limit of the
    /// request is leased and every lease covers its cost. Also counts the request in
    /// each leased key's rate (this runs first for every leased decision).
    pub(super) fn lease_now(&self, pending: &Pending) -> Option<Decision> {
        let leases = self.inner.leases.as_ref()?;
        if pending.leased == 0 {
            return None;
        }
        let now = Instant::now();
        let cost = pending.cost;
        let all_leased = (0..pending.checks.len()).all(|i| pending.is_leased(i));
        let mut verdicts = Vec::with_capacity(pending.checks.len());
        let mut covered = all_leased;
        for (i, check) in pending.checks.iter().enumerate() {
            if !pending.is_leased(i) {
                continue;
            }
            let reserved = leases.with_key(&check.key, now, |k| {
                k.rate.record(now, cost);
                if covered {
                    k.reserve(now, cost).map(|v| (v, k.current_generation()))
                } else {
                    None
                }
            });
            match reserved {
                Some(reserved) => verdicts.push(reserved),
                None => covered = false,
            }
        }
        if !covered {
            // Several leased limits, and a later one could not cover the request.
            for (check, (_, generation)) in pending.checks.iter().zip(&verdicts) {
                leases.with_key(&check.key, now, |k| k.release(*generation, cost));
            }
            return None;
        }
        self.inner.metrics.lease_decision(&pending.policy, "local");
        let verdicts = verdicts.into_iter().map(|(v, _)| v).collect();
        Some(self.finish(pending, verdicts, false))
    }

    /// The store round trip of a request with leased limits (after
    /// [`lease_now`](Self::lease_now) could not answer it): refill the leases that ran
    /// out, or decide exactly when a key is cold, its budget is low or its refill is in
    /// flight; ask the store about the exact limits; all or nothing.
    pub(super) async fn ask_store_leased(&self, pending: &Pending) -> Decision {
        let Some(leases) = self.inner.leases.as_ref() else {
            return self.ask_store_exact(pending).await;
        };
        self.inner.metrics.lease_decision(&pending.policy, "store");
        let now = Instant::now();
        let cost = pending.cost;
        let mut plans: Vec<(usize, Plan)> = Vec::new();
        let mut exact = false;
        for (i, check) in pending.checks.iter().enumerate() {
            if !pending.is_leased(i) || exact {
                continue;
            }
            let plan = leases.with_key(&check.key, now, |k| {
                if let Some(v) = k.reserve(now, cost) {
                    return Some(Plan::Reserved(v, k.current_generation()));
                }
                if k.refilling {
                    return None;
                }
                let size = slice_size(
                    &leases.config,
                    &check.spec,
                    k.rate.per_sec(),
                    k.last_remaining,
                    cost,
                )?;
                k.refilling = true;
                Some(Plan::Refill(size))
            });
            match plan {
                Some(plan) => plans.push((i, plan)),
                None => exact = true,
            }
        }
        if exact {
            self.undo(leases, pending, &plans, now);
            return self.exact_for_leased(leases, pending).await;
        }
        // A request dropped while its refill is in flight (a client that went away)
        // must not leave the key marked as refilling: it would stay exact for good.
        let _refilling = RefillGuard {
            leases,
            keys: plans
                .iter()
                .filter(|(_, plan)| matches!(plan, Plan::Refill(_)))
                .map(|(i, _)| pending.checks[*i].key.clone())
                .collect(),
        };
        // Charge the slices that ran out, one store call each.
        for p in 0..plans.len() {
            let (i, Plan::Refill(units)) = plans[p] else {
                continue;
            };
            let check = &pending.checks[i];
            let started = Instant::now();
            let answer = self.guarded(self.inner.store.charge(check, units)).await;
            let installed = leases.with_key(&check.key, started, |k| {
                k.refilling = false;
                let charged = match &answer {
                    Ok(charged) => charged,
                    Err(_) => return None,
                };
                k.last_remaining = Some(charged.verdict.remaining);
                if !charged.verdict.allowed {
                    return None;
                }
                k.generation += 1;
                let lease = Lease {
                    policy: pending.policy.clone(),
                    check: check.clone(),
                    taken: started,
                    units,
                    spent: cost,
                    expires: started + lifetime(&leases.config, &check.spec, &charged.verdict),
                    backing: (check.spec.algorithm() == Algorithm::Gcra)
                        .then(|| (charged.verdict.reset_after_us, check.spec.interval_us())),
                    remaining_after: charged.verdict.remaining,
                    reset_after_us: charged.verdict.reset_after_us,
                    mark: charged.mark,
                    generation: k.generation,
                };
                let verdict = Verdict {
                    // As known: the store's remaining plus what this lease still holds.
                    remaining: charged
                        .verdict
                        .remaining
                        .saturating_add(lease.spendable(started)),
                    ..charged.verdict
                };
                // A fixed-window lease that ends with its window has nothing to give
                // back then: the window took its units with it.
                let window_bound = check.spec.algorithm() == Algorithm::FixedWindow
                    && lease.expires < started + max_age(&leases.config);
                let expiry = (lease.mark.is_some() && !window_bound)
                    .then_some((lease.expires, lease.generation));
                let old = k.lease.replace(lease);
                Some((verdict, k.generation, old, expiry))
            });
            match installed {
                Some((verdict, generation, old, expiry)) => {
                    self.inner.metrics.lease_taken(&pending.policy);
                    if let Some(old) = old {
                        self.spawn_give_back(old);
                    }
                    if let Some((at, generation)) = expiry {
                        self.schedule_expiry(check.key.clone(), generation, at);
                    }
                    plans[p].1 = Plan::Reserved(verdict, generation);
                }
                None => {
                    self.undo(leases, pending, &plans, now);
                    return match answer {
                        Err(error) => {
                            self.record_at(self.on_failure(pending, &error), pending.policy_index)
                        }
                        // Refused: not enough budget for a slice. The exact decision
                        // answers this request, and the key stays exact until the
                        // store reports room again.
                        Ok(_) => self.exact_for_leased(leases, pending).await,
                    };
                }
            }
        }
        // Every leased limit is covered; the exact ones ask the store.
        let exact_idx: Vec<usize> = (0..pending.checks.len())
            .filter(|&i| !pending.is_leased(i))
            .collect();
        let mut verdicts: Vec<Option<Verdict>> = vec![None; pending.checks.len()];
        for (i, plan) in &plans {
            if let Plan::Reserved(v, _) = plan {
                verdicts[*i] = Some(*v);
            }
        }
        if !exact_idx.is_empty() {
            let checks: Vec<Check> = exact_idx
                .iter()
                .map(|&i| pending.checks[i].clone())
                .collect();
            match self.guarded(self.inner.store.check(&checks, cost)).await {
                Ok(answer) => {
                    if !answer.iter().all(|v| v.allowed) {
                        self.undo(leases, pending, &plans, now);
                    }
                    for (&i, v) in exact_idx.iter().zip(answer) {
                        verdicts[i] = Some(v);
                    }
                }
                Err(error) => {
                    self.undo(leases, pending, &plans, now);
                    return self.record_at(self.on_failure(pending, &error), pending.policy_index);
                }
            }
        }
        let verdicts: Option<Vec<Verdict>> = verdicts.into_iter().collect();
        match verdicts {
            Some(verdicts) => {
                self.record_at(self.finish(pending, verdicts, false), pending.policy_index)
            }
            None => {
                let error = crate::store::StoreError::protocol("a limit went unanswered");
                self.undo(leases, pending, &plans, now);
                self.record_at(
                    self.on_failure(pending, &Unavailable::Store(error)),
                    pending.policy_index,
                )
            }
        }
    }

    /// Decides a leased request exactly and remembers what the store reported for each
    /// leased key (its remaining budget decides when leasing resumes).
    async fn exact_for_leased(&self, leases: &Leases, pending: &Pending) -> Decision {
        let leased: Vec<(String, bool)> = pending
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), pending.is_leased(i)))
            .collect();
        let decision = self.ask_store_exact(pending).await;
        let now = Instant::now();
        for ((key, is_leased), status) in leased.iter().zip(&decision.limits) {
            if *is_leased {
                leases.with_key(key, now, |k| {
                    k.last_remaining = Some(status.verdict.remaining);
                });
            }
        }
        decision
    }

    /// Puts back what `plans` reserved and clears the refill marks they set.
    fn undo(&self, leases: &Leases, pending: &Pending, plans: &[(usize, Plan)], now: Instant) {
        for (i, plan) in plans {
            let key = &pending.checks[*i].key;
            match plan {
                Plan::Reserved(_, generation) => {
                    leases.with_key(key, now, |k| k.release(*generation, pending.cost));
                }
                Plan::Refill(_) => leases.with_key(key, now, |k| k.refilling = false),
            }
        }
    }

    /// A store call through the breaker and the timeout, as exact decisions make it.
    async fn guarded<T>(&self, call: StoreFuture<'_, T>) -> Result<T, Unavailable> {
        let inner = &self.inner;
        if !inner.breaker.allow() {
            return Err(Unavailable::CircuitOpen);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(inner.timeout, call)
            .await
            .map_err(|_| Unavailable::Timeout(inner.timeout))
            .and_then(|answer| answer.map_err(Unavailable::Store));
        inner
            .metrics
            .store_latency(inner.store_kind, started.elapsed());
        match &result {
            Ok(_) => {
                inner.breaker.success();
                inner.last_error.clear();
            }
            Err(_) => inner.breaker.failure(),
        }
        inner
            .metrics
            .circuit(inner.store_kind, inner.breaker.state());
        result
    }

    /// Gives a lease's unused units back to the store; `false` when it failed.
    async fn give_back(&self, lease: Lease) -> bool {
        let (Some(mark), units) = (lease.mark, lease.unspent()) else {
            return true;
        };
        if units == 0 {
            return true;
        }
        match self
            .guarded(self.inner.store.give_back(&lease.check, mark, units))
            .await
        {
            Ok(()) => {
                self.inner.metrics.lease_returned(&lease.policy, units);
                true
            }
            Err(error) => {
                tracing::debug!(%error, units, "lease give-back failed; its units stay counted");
                false
            }
        }
    }

    /// Gives a replaced lease back without making the request that replaced it wait.
    fn spawn_give_back(&self, lease: Lease) {
        if lease.mark.is_none() || lease.unspent() == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let limiter = self.clone();
        runtime.spawn(async move {
            limiter.give_back(lease).await;
        });
    }

    /// At `at`, gives back what the lease of `generation` on `key` left unused, if it
    /// is still the key's lease. The task holds the limiter weakly: a limiter dropped
    /// meanwhile is not kept alive by its timers.
    fn schedule_expiry(&self, key: String, generation: u64, at: Instant) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let limiter = RateLimiter { inner };
            let Some(leases) = limiter.inner.leases.as_ref() else {
                return;
            };
            let expired = leases.with_key(&key, Instant::now(), |k| {
                if k.lease.as_ref().is_some_and(|l| l.generation == generation) {
                    k.lease.take()
                } else {
                    None
                }
            });
            if let Some(lease) = expired {
                limiter.give_back(lease).await;
            }
        });
    }

    /// Gives every unused leased unit of this node back to the store, so other nodes
    /// can spend it: call it when the node drains or shuts down. Bounded by the
    /// limiter's timeout as a whole (leases it could not return in time stay counted
    /// until the limit recovers them: an under-admission of at most their units).
    /// Returns at once with a local store, which never leases.
    pub async fn return_leases(&self) {
        let Some(leases) = self.inner.leases.as_ref() else {
            return;
        };
        let mut taken = Vec::new();
        for shard in leases.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            taken.extend(shard.values_mut().filter_map(|k| k.lease.take()));
        }
        let all = async {
            for lease in taken {
                self.give_back(lease).await;
            }
        };
        if tokio::time::timeout(self.inner.timeout, all).await.is_err() {
            tracing::warn!(
                timeout = ?self.inner.timeout,
                "not every leased unit was given back in time; the rest stay counted"
            );
        }
    }
}
