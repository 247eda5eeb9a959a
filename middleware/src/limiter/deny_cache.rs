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
//! `Retry-After` the store gave. Bounded in size: when full, expired entries are
//! dropped, and if none expired, the whole cache is cleared (it is only an optimisation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::decision::LimitStatus;

const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
struct Denial {
    until_us: i64,
    cost: u64,
    at_us: i64,
    limits: Arc<[LimitStatus]>,
}

#[derive(Debug, Default)]
pub(crate) struct DenyCache {
    entries: Mutex<HashMap<String, Denial>>,
}

impl DenyCache {
    /// The cached refusal for `key` at `now_us`, with waits shortened by the time since.
    pub(crate) fn get(&self, key: &str, cost: u64, now_us: i64) -> Option<Vec<LimitStatus>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
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

    pub(crate) fn insert(&self, key: String, cost: u64, now_us: i64, limits: &[LimitStatus]) {
        let wait = limits
            .iter()
            .filter(|l| !l.verdict.allowed)
            .map(|l| l.verdict.retry_after_us)
            .max()
            .unwrap_or(0);
        if wait <= 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, d| d.until_us > now_us);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Denial {
                until_us: now_us + wait,
                cost,
                at_us: now_us,
                limits: limits.into(),
            },
        );
    }
}
