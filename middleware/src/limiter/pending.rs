//! [`Pending`]: a request whose policy, keys and cost are known, waiting for a store.

use std::borrow::Cow;
use std::cell::Cell;
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

    /// A decision for the configured policy `policy` at `index` in the limiter, in
    /// `shadow` mode or not.
    pub(super) fn for_policy(
        policy: Arc<str>,
        cost: u64,
        shadow: bool,
        index: Option<usize>,
    ) -> Self {
        let mut pending = Pending::new(policy, cost);
        pending.shadow = shadow;
        pending.policy_index = index;
        pending
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
        close_storage_key(&mut storage, &name);
        self.push_check(name, Check::new(storage, spec));
    }

    /// Adds limit `name` whose check (its storage key closed) is built.
    pub(super) fn push_check(&mut self, name: Arc<str>, check: Check) {
        self.checks.push(check);
        self.names.push(name);
    }

    /// Done with: the first storage key's buffer serves this thread's next request.
    pub(super) fn recycle(self) {
        recycle_checks(self.checks);
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
///
/// The buffer is the one the last finished decision of this thread handed back
/// ([`recycle_storage_key`]) when there is one: the usual request then allocates nothing
/// for its key.
// Always inlined: returned through memory, the `String` was written as two words and
// read back as one 16-byte load, which stalls (`perf` put 5 % of a decision there).
// Two callers.
#[inline(always)]
pub(super) fn storage_key_start(policy: &str, limit: &str, key_len: usize) -> String {
    let mut out = SPARE_KEY.with(Cell::take);
    out.clear();
    out.reserve(policy.len() + key_len + limit.len() + 4);
    out.push('{');
    out.push_str(policy);
    out.push(':');
    out
}

/// Ends a storage key begun with [`storage_key_start`] and followed by the extracted
/// key: `}:limit`.
#[inline]
pub(super) fn close_storage_key(storage: &mut String, limit: &str) {
    storage.push_str("}:");
    storage.push_str(limit);
}

/// Done with a request's checks: the first storage key's buffer serves this thread's
/// next request ([`recycle_storage_key`]).
pub(super) fn recycle_checks(checks: impl IntoIterator<Item = Check>) {
    if let Some(check) = checks.into_iter().next() {
        recycle_storage_key(check.key);
    }
}

/// Keeps a finished decision's storage key buffer for the next [`storage_key_start`] on
/// this thread. One per thread, and only a small one (a key longer than
/// [`MAX_SPARE_KEY`] is freed): the spare never holds more than a few hundred bytes.
#[inline]
pub(super) fn recycle_storage_key(key: String) {
    if key.capacity() <= MAX_SPARE_KEY {
        SPARE_KEY.with(|spare| spare.set(key));
    }
}

/// The largest buffer kept as a thread's spare storage key.
const MAX_SPARE_KEY: usize = 256;

thread_local! {
    /// A storage key buffer handed back by the last decision that finished on this
    /// thread (its text is cleared before reuse; it never leaves the limiter).
    static SPARE_KEY: Cell<String> = const { Cell::new(String::new()) };
}

/// The result of [`RateLimiter::prepare`](super::RateLimiter::prepare).
#[derive(Debug)]
pub enum Prepared {
    /// Answered without the store (no policy, no key, bad cost).
    Done(Decision),
    /// The store must be asked.
    Pending(Pending),
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Prepared, RateLimiter};
    use crate::key::Key;
    use crate::policy::Policy;

    fn request(key: &str) -> http::request::Parts {
        http::Request::get("/")
            .header("x-api-key", key)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    /// A decision hands its key buffer to the next request on the thread: the next
    /// key must hold only its own text, shorter or longer than the last one.
    #[test]
    fn a_recycled_key_buffer_holds_only_the_next_key() {
        let limiter = RateLimiter::builder()
            .policy(Policy::single(
                "p",
                "100/s".parse().expect("spec"),
                Key::header("x-api-key"),
            ))
            .build()
            .expect("limiter");
        let long = "k".repeat(100);
        let huge = "h".repeat(1000);
        for key in [long.as_str(), "b", "", huge.as_str(), "c", long.as_str()] {
            let Prepared::Pending(pending) = limiter.prepare(&request(key)) else {
                // An empty header is a missing key: answered without a storage key.
                assert!(key.is_empty());
                continue;
            };
            assert_eq!(pending.checks()[0].key, format!("{{p:{key}}}:p"));
            let decision = limiter.try_decide_now(pending).expect("memory answers now");
            assert!(decision.passes());
            assert_eq!(decision.limits.len(), 1);
            assert_eq!(&*decision.limits[0].name, "p");
        }
    }

    #[test]
    fn limits_read_as_a_slice_and_collect_back() {
        let limiter = RateLimiter::builder()
            .policy(Policy::single(
                "p",
                "2/m".parse().expect("spec"),
                Key::header("x-api-key"),
            ))
            .build()
            .expect("limiter");
        let Prepared::Pending(pending) = limiter.prepare(&request("a")) else {
            panic!("a keyed request waits for the store");
        };
        let decision = limiter.try_decide_now(pending).expect("memory answers now");
        let remaining: Vec<u64> = decision
            .limits
            .iter()
            .map(|l| l.verdict.remaining)
            .collect();
        assert_eq!(remaining, [1]);
        let copy: Limits = decision.limits.clone().into_iter().collect();
        assert_eq!(copy, decision.limits);
        assert_eq!(Vec::from(copy.clone()), copy.to_vec());
        assert_eq!(format!("{copy:?}"), format!("{:?}", copy.to_vec()));
        assert!(Limits::new().is_empty());
    }
}
