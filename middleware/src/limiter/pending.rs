//! [`Pending`]: a request whose policy, keys and cost are known, waiting for a store.

use std::sync::Arc;

use super::Decision;
use crate::algorithm::LimitSpec;
use crate::store::Check;

/// A request whose keys and cost are known, waiting for the store's answer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub(super) policy: Arc<str>,
    pub(super) shadow: bool,
    pub(super) cost: u64,
    pub(super) names: Vec<Arc<str>>,
    pub(super) checks: Vec<Check>,
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

    pub(super) fn cache_key(&self) -> String {
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

/// The result of [`RateLimiter::prepare`](super::RateLimiter::prepare).
#[derive(Debug)]
pub enum Prepared {
    /// Answered without the store (no policy, no key, bad cost).
    Done(Decision),
    /// The store must be asked.
    Pending(Pending),
}
