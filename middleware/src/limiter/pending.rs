//! [`Pending`]: a request whose policy, keys and cost are known, waiting for a store.

use std::borrow::Cow;
use std::sync::Arc;

use super::Decision;
use crate::algorithm::LimitSpec;
use crate::policy::Consistency;
use crate::store::Check;

/// A request whose keys and cost are known, waiting for the store's answer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub(super) policy: Arc<str>,
    pub(super) shadow: bool,
    pub(super) cost: u64,
    pub(super) names: Vec<Arc<str>>,
    pub(super) checks: Vec<Check>,
    /// Bit `i` set: limit `i` is leased (`Consistency::Leased`); limits past the 64th
    /// are always exact.
    pub(super) leased: u64,
}

impl Pending {
    /// A decision for `policy` (whose name has been validated: it is part of every
    /// storage key) of weight `cost`.
    pub(crate) fn new(policy: impl Into<Arc<str>>, cost: u64) -> Self {
        Pending {
            policy: policy.into(),
            shadow: false,
            cost,
            names: Vec::new(),
            checks: Vec::new(),
            leased: 0,
        }
    }

    /// Marks the limit added last as leased.
    pub(super) fn leased(mut self, consistency: Consistency) -> Self {
        let i = self.checks.len().wrapping_sub(1);
        if consistency == Consistency::Leased && i < 64 {
            self.leased |= 1 << i;
        }
        self
    }

    /// Whether limit `i` is leased.
    pub(super) fn is_leased(&self, i: usize) -> bool {
        i < 64 && self.leased & (1 << i) != 0
    }

    /// Adds limit `name` (validated) of `spec`, counted under `key`.
    pub(crate) fn limit(mut self, name: impl Into<Arc<str>>, spec: LimitSpec, key: &str) -> Self {
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

    /// The deny cache's key: the storage key itself for the usual one-limit policy (no
    /// allocation per lookup), all of them joined for a policy of several limits.
    pub(super) fn cache_key(&self) -> Cow<'_, str> {
        match self.checks.as_slice() {
            [one] => Cow::Borrowed(one.key.as_str()),
            many => Cow::Owned(
                many.iter()
                    .map(|c| c.key.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
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

/// The result of [`RateLimiter::prepare`](super::RateLimiter::prepare).
#[derive(Debug)]
pub enum Prepared {
    /// Answered without the store (no policy, no key, bad cost).
    Done(Decision),
    /// The store must be asked.
    Pending(Pending),
}
