//! [`Pending`]: a request whose policy, keys and cost are known, waiting for a store.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

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
    /// Inline for one limit, the usual policy: no `Vec` per request.
    pub(super) names: SmallVec<[Arc<str>; 1]>,
    pub(super) checks: SmallVec<[Check; 1]>,
    /// The policy's position in the limiter, whose metric keys are built once; `None`
    /// for ad-hoc decisions (`decide_one`, `decide_many`).
    pub(super) policy_index: Option<usize>,
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
            names: SmallVec::new(),
            checks: SmallVec::new(),
            policy_index: None,
            leased: 0,
        }
    }

    /// Marks the limit added last as leased.
    pub(super) fn leased(mut self, consistency: Consistency) -> Self {
        self.set_leased(consistency);
        self
    }

    /// [`leased`](Self::leased) in place.
    pub(super) fn set_leased(&mut self, consistency: Consistency) {
        let i = self.checks.len().wrapping_sub(1);
        if consistency == Consistency::Leased && i < 64 {
            self.leased |= 1 << i;
        }
    }

    /// Whether limit `i` is leased.
    pub(super) fn is_leased(&self, i: usize) -> bool {
        i < 64 && self.leased & (1 << i) != 0
    }

    /// Adds limit `name` (validated) of `spec`, counted under `key`.
    pub(crate) fn limit(mut self, name: impl Into<Arc<str>>, spec: LimitSpec, key: &str) -> Self {
        let name = name.into();
        let mut storage = storage_key_start(&self.policy, &name, key.len());
        storage.push_str(key);
        self.push_limit(name, spec, storage);
        self
    }

    /// Adds limit `name` of `spec` under a storage key begun with
    /// [`storage_key_start`] and followed by the extracted key; this closes it.
    /// (In place: a `Pending` is too large to move once per limit.)
    pub(super) fn push_limit(&mut self, name: Arc<str>, spec: LimitSpec, mut storage: String) {
        storage.push_str("}:");
        storage.push_str(&name);
        self.checks.push(Check::new(storage, spec));
        self.names.push(name);
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

/// The start of a storage key, `{policy:`, with room for a key of about `key_len` bytes
/// and the limit's name. A whole key is `{policy:key}:limit`: the braces are a Redis Cluster hash
/// tag, so every limit of one policy and key lands in one slot. It is built in one
/// buffer: the key extractor writes straight into it.
pub(super) fn storage_key_start(policy: &str, limit: &str, key_len: usize) -> String {
    let mut out = String::with_capacity(policy.len() + key_len + limit.len() + 4);
    out.push('{');
    out.push_str(policy);
    out.push(':');
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
