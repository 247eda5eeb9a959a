//! Where rate-limit state lives.
//!
//! A [`Store`] takes a batch of [`Check`]s — one per limit that applies to a request,
//! each a storage key and a [`LimitSpec`] — and a cost, and answers with one
//! [`Verdict`] per check. The batch is atomic: either every limit admits the request
//! and all of them consume `cost`, or nothing is consumed anywhere.
//!
//! Stores know keys and limits, never requests: key extraction and policy matching
//! happen in [`crate::policy`] and [`crate::key`] before a store is asked.
//!
//! - [`MemoryStore`]: sharded in-process maps; the embedded default, exact for one node.
#![cfg_attr(
    feature = "redis",
    doc = "- [`RedisStore`]: one Lua script per decision against a shared Redis, clocked by the"
)]
#![cfg_attr(
    not(feature = "redis"),
    doc = "- `RedisStore` (feature `redis`): one Lua script per decision against a shared Redis, clocked by the"
)]
//!   Redis server, exact across every node that shares it.
//!
//! # Writing a store
//!
//! A store is one trait, [`Store`], and anyone can implement it: the limiter only ever
//! talks to `Arc<dyn Store>`. What it must guarantee:
//!
//! - **All or nothing, atomically.** One call decides every check of the batch against
//!   the same instant and the same state, and either commits all of them (every check
//!   admits) or none. No other call may observe or write a key of the batch in between:
//!   two nodes must never both spend the last unit. (The memory store locks the shards
//!   involved; the Redis store runs one Lua script.)
//! - **The same arithmetic.** Decide with [`crate::algorithm::decide`] (or a faithful
//!   transcription of it, as `decide.lua` is), storing the [`State`](crate::algorithm::State)
//!   it returns for at least its time to live.
//! - **A refusal reports the other limits as they are.** When one check refuses, a check
//!   that would have admitted reports its state unconsumed (decide it again with cost 0),
//!   so `remaining` and the reset time do not pretend the request was counted.
//! - **Failures are [`StoreError`]s**, never panics: give each a [`StoreErrorKind`] (it is
//!   the `kind` label of `ratelimiter_store_errors_total`) and say whether retrying later
//!   may succeed. Timeouts around the call and the circuit breaker are the limiter's
//!   business, not the store's.
//!
//! A store proves itself with one call to `tollgate::testing::conformance` (feature
//! `testing`), which replays scripted and random scenarios against it and against
//! [`MemoryStore`] and fails on the first verdict that differs.
//!
//! A complete store, a mutex around a map (exact but slower than [`MemoryStore`], which
//! shards):
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::Mutex;
//!
//! use tollgate::algorithm::{self, State, Verdict};
//! use tollgate::clock::Clock;
//! use tollgate::store::{Check, Store, StoreError, StoreErrorKind, StoreFuture};
//!
//! /// State and the instant (µs) it expires, per key.
//! struct MapStore<C> {
//!     clock: C,
//!     map: Mutex<HashMap<String, (State, i64)>>,
//! }
//!
//! impl<C: Clock> MapStore<C> {
//!     fn decide(&self, checks: &[Check], cost: u64) -> Result<Vec<Verdict>, StoreError> {
//!         // One lock for the whole batch: the atomicity the trait asks for.
//!         let mut map = self
//!             .map
//!             .lock()
//!             .map_err(|_| StoreError::new(StoreErrorKind::Other, "a writer panicked"))?;
//!         let now = self.clock.now_us();
//!         let state = |map: &HashMap<String, (State, i64)>, key: &str| {
//!             map.get(key).filter(|(_, expires)| *expires > now).map(|(s, _)| *s)
//!         };
//!         let outcomes: Vec<_> = checks
//!             .iter()
//!             .map(|c| algorithm::decide(&c.spec, now, state(&map, &c.key), cost))
//!             .collect();
//!         if outcomes.iter().all(|o| o.verdict.allowed) {
//!             for (check, outcome) in checks.iter().zip(&outcomes) {
//!                 if let Some((next, ttl_us)) = outcome.next {
//!                     map.insert(check.key.clone(), (next, now.saturating_add(ttl_us)));
//!                 }
//!             }
//!             return Ok(outcomes.into_iter().map(|o| o.verdict).collect());
//!         }
//!         // Refused: nothing is written, and the limits that would have admitted say
//!         // so without counting this request (cost 0).
//!         Ok(checks
//!             .iter()
//!             .zip(outcomes)
//!             .map(|(c, o)| match o.verdict.allowed {
//!                 true => algorithm::decide(&c.spec, now, state(&map, &c.key), 0).verdict,
//!                 false => o.verdict,
//!             })
//!             .collect())
//!     }
//! }
//!
//! impl<C: Clock> Store for MapStore<C> {
//!     fn kind(&self) -> &'static str {
//!         "map"
//!     }
//!
//!     fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
//!         Box::pin(std::future::ready(self.decide(checks, cost)))
//!     }
//!
//!     fn ping(&self) -> StoreFuture<'_, ()> {
//!         Box::pin(std::future::ready(Ok(())))
//!     }
//! }
//!
//! let store = MapStore { clock: tollgate::ManualClock::new(0), map: Mutex::default() };
//! let checks = [Check::new("user-1", "1/s".parse()?)];
//! assert!(store.decide(&checks, 1)?[0].allowed);
//! assert!(!store.decide(&checks, 1)?[0].allowed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! (A store that can answer without waiting, as this one can, may also override
//! [`Store::check_now`] so the limiter skips allocating a future, and
//! [`Store::check_one_now`] so a one-limit decision skips the `Vec` of verdicts.)

mod error;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;

pub use self::error::{StoreError, StoreErrorKind};
pub use self::memory::{MemoryStore, MemoryStoreBuilder};
#[cfg(feature = "redis-tls")]
pub use self::redis::RedisTls;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisStore, RedisStoreBuilder};
use crate::algorithm::{LimitSpec, Verdict};

/// One limit to check for one request: where its state lives and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The storage key; unique per (policy, limit, extracted key).
    pub key: String,
    /// The limit.
    pub spec: LimitSpec,
}

impl Check {
    /// A check of `spec` against the state under `key`.
    pub fn new(key: impl Into<String>, spec: LimitSpec) -> Self {
        Check {
            key: key.into(),
            spec,
        }
    }
}

/// The future a [`Store`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A place where rate-limit state lives.
///
/// Implementations must make each call to [`Store::check`] atomic: all checks admit
/// and consume, or none consumes. The [module docs](self) spell out the whole contract
/// and show a complete store.
pub trait Store: Send + Sync + 'static {
    /// A short name for metrics and logs (`"memory"`, `"redis"`).
    fn kind(&self) -> &'static str;

    /// Decides a batch of checks for one request of weight `cost`.
    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>>;

    /// Decides without waiting, when the store can (the memory store always can).
    /// The limiter uses this to answer without allocating a future.
    fn check_now(&self, checks: &[Check], cost: u64) -> Option<Result<Vec<Verdict>, StoreError>> {
        let _ = (checks, cost);
        None
    }

    /// [`check_now`](Self::check_now) for a batch of exactly one check, its verdict by
    /// value: the usual one-limit policy then costs no `Vec`. The default calls
    /// `check_now`; a store that answers without waiting may override both.
    fn check_one_now(&self, check: &Check, cost: u64) -> Option<Result<Verdict, StoreError>> {
        let verdicts = self.check_now(std::slice::from_ref(check), cost)?;
        Some(verdicts.and_then(|v| {
            v.into_iter().next().ok_or_else(|| {
                StoreError::new(StoreErrorKind::Protocol, "no verdict for a batch of one")
            })
        }))
    }

    /// Whether state lives in this process. A local store needs no deny cache (it
    /// answers as fast as the cache would) and no local fallback (it cannot fail).
    fn is_local(&self) -> bool {
        false
    }

    /// Whether the store's keys live on independent servers, so that one failing says
    /// nothing about the others (a Redis Cluster: one primary's loss leaves the other
    /// slots answering). The limiter then keeps no store-wide circuit breaker: one would
    /// turn every key to the failure mode when one server fails. Its timeout still
    /// bounds every decision.
    fn is_partitioned(&self) -> bool {
        false
    }

    /// Whether the store is reachable now (used by readiness probes). The limiter
    /// bounds the wait itself.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// Charges `units` against one check, as [`check`](Self::check) with that cost
    /// would, and also returns the *mark* [`give_back`](Self::give_back) needs to
    /// return unused units later (see [`crate::algorithm::refund_mark`]).
    ///
    /// The limiter takes leased budgets this way (`Consistency::Leased`). The default
    /// calls [`check`](Self::check) and returns no mark: leases taken from such a store
    /// cannot be returned early, so their unused units stay counted until the limit
    /// recovers them by itself (an under-admission, never an over-admission).
    fn charge<'a>(&'a self, check: &'a Check, units: u64) -> StoreFuture<'a, Charged> {
        Box::pin(async move {
            let verdicts = self.check(std::slice::from_ref(check), units).await?;
            let verdict = verdicts
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::protocol("no verdict for a one-limit charge"))?;
            Ok(Charged {
                verdict,
                mark: None,
            })
        })
    }

    /// Gives back `units` of a [`charge`](Self::charge) that left `mark`, never more
    /// than that charge consumed ([`crate::algorithm::refund`] states why that holds).
    ///
    /// The default answers a [`StoreErrorKind::Config`] error ("not supported"), so
    /// stores written before leases existed still compile; the limiter then never
    /// returns units to them.
    fn give_back<'a>(&'a self, check: &'a Check, mark: i64, units: u64) -> StoreFuture<'a, ()> {
        let _ = (check, mark, units);
        Box::pin(std::future::ready(Err(StoreError::config(format!(
            "the {} store cannot give units back",
            self.kind()
        )))))
    }
}

/// The answer to [`Store::charge`]: the verdict, and the mark to give units back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Charged {
    /// The verdict for the charged units (`remaining` is what is left after them).
    pub verdict: Verdict,
    /// The refund mark of the admission; `None` when refused or when the store cannot
    /// give units back.
    pub mark: Option<i64>,
}

impl Charged {
    /// A charge's answer.
    pub fn new(verdict: Verdict, mark: Option<i64>) -> Self {
        Charged { verdict, mark }
    }
}
