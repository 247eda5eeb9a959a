//! The local deny cache: a key refused until T is refused locally until T.
//!
//! When the shared store refuses a request and says the earliest retry is in `d`, no
//! request of the same or higher cost for the same keys can pass before `d` has
//! elapsed: state only moves forward, and other nodes only spend more. So the answer
//! can be given from memory, sparing Redis the hot keys of an abusive client — the
//! ones that hit it hardest.
//!
//! The trade-off: if Redis loses the key (restart, `FLUSHDB`) or an operator raises
//! the limit, cached refusals still stand until they expire — at most the longest
//! `Retry-After` the store gave. Bounded in size: when a shard is full, its expired
//! entries are dropped, and if none expired, the shard is cleared (it is only an
//! optimisation).
//!
//! Every Redis-path decision looks here first, so the cache is sharded like the memory
//! store (threads deciding for different keys rarely meet on a lock) and looked up by
//! `&str`: nothing is allocated per lookup; a key is copied only when a refusal is
//! stored. The shard hasher is seeded per process: keys are client-controlled.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::decision::{LimitStatus, Limits};

const MAX_ENTRIES: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug)]
struct Denial {
    until_us: i64,
    cost: u64,
    at_us: i64,
    limits: Arc<[LimitStatus]>,
}

/// One shard: refusals by cache key.
type Shard = HashMap<Box<str>, Denial>;

#[derive(Debug)]
pub(crate) struct DenyCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for DenyCache {
    fn default() -> Self {
        DenyCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl DenyCache {
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // SHARDS is a power of two: a mask picks the shard.
        let index = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        // A panic under the lock cannot leave a half-written entry (entries are
        // replaced whole), so a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached refusal for `key` at `now_us`, with waits shortened by the time since.
    pub(crate) fn get(&self, key: &str, cost: u64, now_us: i64) -> Option<Limits> {
        let entries = self.shard(key);
        let denial = entries.get(key)?;
        if denial.until_us <= now_us || cost < denial.cost {
            return None;
        }
        let elapsed = now_us - denial.at_us;
        Some(
            denial
                .limits
                .iter()
                .map(|l| {
                    let mut l = l.clone();
                    l.verdict.retry_after_us = (l.verdict.retry_after_us - elapsed).max(0);
                    l.verdict.reset_after_us = (l.verdict.reset_after_us - elapsed).max(0);
                    l
                })
                .collect(),
        )
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<str>,
        cost: u64,
        now_us: i64,
        limits: &[LimitStatus],
    ) {
        let key = key.as_ref();
        let wait = limits
            .iter()
            .filter(|l| !l.verdict.allowed)
            .map(|l| l.verdict.retry_after_us)
            .max()
            .unwrap_or(0);
        if wait <= 0 {
            return;
        }
        let mut entries = self.shard(key);
        if entries.len() >= MAX_ENTRIES / SHARDS {
            entries.retain(|_, d| d.until_us > now_us);
            if entries.len() >= MAX_ENTRIES / SHARDS {
                entries.clear();
            }
        }
        entries.insert(
            key.into(),
            Denial {
                until_us: now_us + wait,
                cost,
                at_us: now_us,
                limits: limits.into(),
            },
        );
    }
}
