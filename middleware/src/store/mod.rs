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
//! - [`RedisStore`]: one Lua script per decision against a shared Redis, clocked by the
//!   Redis server, exact across every node that shares it.

mod error;
mod memory;
mod redis;

use std::future::Future;
use std::pin::Pin;

pub use self::error::{StoreError, StoreErrorKind};
pub use self::memory::{MemoryStore, MemoryStoreBuilder};
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
/// and consume, or none consumes.
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

    /// Whether state lives in this process. A local store needs no deny cache (it
    /// answers as fast as the cache would) and no local fallback (it cannot fail).
    fn is_local(&self) -> bool {
        false
    }

    /// Whether the store is reachable now (used by readiness probes).
    fn ping(&self) -> StoreFuture<'_, ()>;
}
