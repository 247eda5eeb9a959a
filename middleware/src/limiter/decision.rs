//! What the limiter decided about one request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::algorithm::{LimitSpec, Verdict};

/// The state of one limit after a decision: what the `RateLimit` headers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// The limit's name.
    pub name: Arc<str>,
    /// The limit.
    pub spec: LimitSpec,
    /// The store's answer for it.
    pub verdict: Verdict,
}

/// The kind of answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionKind {
    /// No policy matched: the request passes, nothing is counted, no headers.
    Unmatched,
    /// The request had no key and its policy lets such requests through uncounted.
    Bypassed,
    /// Every limit admitted the request and it was counted.
    Allowed,
    /// At least one limit refused; nothing was counted.
    Limited,
    /// A limit refused, but the policy is in shadow mode: the request passes.
    ShadowLimited,
    /// The store failed and the failure mode is `Open`: the request passes uncounted.
    FailedOpen,
    /// The store failed and the failure mode is `Closed`: the request is refused (503).
    FailedClosed {
        /// When the store will next be tried.
        retry_after: Duration,
    },
    /// The request has no key for limit `limit` and its policy rejects such requests.
    MissingKey {
        /// The limit whose key was missing.
        limit: Arc<str>,
        /// Why, in words the client or operator can act on (e.g. `no "x-api-key"
        /// header`, or `no peer address: serve with connect info`).
        reason: String,
    },
    /// The request stated an invalid cost.
    InvalidCost(crate::policy::CostError),
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// The kind of answer.
    pub kind: DecisionKind,
    /// The matching policy, if any.
    pub policy: Option<Arc<str>>,
    /// One status per limit that was decided (empty when no store answered).
    pub limits: Limits,
    /// Whether the answer came from the local fallback store during a store outage.
    pub from_fallback: bool,
    /// The policy is in shadow mode: whatever [`kind`](Self::kind) says is recorded,
    /// and the request passes (a missing key, a bad cost and a fail-closed outage
    /// included).
    pub shadow: bool,
}

impl Decision {
    pub(crate) fn new(kind: DecisionKind, policy: Option<Arc<str>>) -> Self {
        Decision {
            kind,
            policy,
            limits: Limits::new(),
            from_fallback: false,
            shadow: false,
        }
    }

    pub(crate) fn in_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Whether the request may go on to the service: always in shadow mode.
    pub fn passes(&self) -> bool {
        self.shadow || self.kind_passes()
    }

    /// Whether the kind alone lets the request through (what shadow mode overrides).
    pub(crate) fn kind_passes(&self) -> bool {
        matches!(
            self.kind,
            DecisionKind::Unmatched
                | DecisionKind::Bypassed
                | DecisionKind::Allowed
                | DecisionKind::ShadowLimited
                | DecisionKind::FailedOpen
        )
    }

    /// How long a refused client should wait: the longest wait among the limits that
    /// refused (zero when nothing refused).
    pub fn retry_after(&self) -> Duration {
        if let DecisionKind::FailedClosed { retry_after } = self.kind {
            return retry_after;
        }
        let us = self
            .limits
            .iter()
            .filter(|l| !l.verdict.allowed)
            .map(|l| l.verdict.retry_after_us)
            .max()
            .unwrap_or(0);
        Duration::from_micros(u64::try_from(us).unwrap_or(0))
    }

    /// The names of the limits that refused.
    pub fn violated(&self) -> impl Iterator<Item = &str> {
        self.limits
            .iter()
            .filter(|l| !l.verdict.allowed)
            .map(|l| l.name.as_ref())
    }

    /// The `decision` label of `ratelimiter_requests_checked_total`. In shadow mode,
    /// what would have refused is labelled `shadow_limited`, `shadow_invalid` or
    /// `shadow_error`, since the request passed.
    pub fn metric_label(&self) -> &'static str {
        match self.kind {
            DecisionKind::Limited if self.shadow => "shadow_limited",
            DecisionKind::FailedClosed { .. } if self.shadow => "shadow_error",
            DecisionKind::MissingKey { .. } | DecisionKind::InvalidCost(_) if self.shadow => {
                "shadow_invalid"
            }
            DecisionKind::Allowed | DecisionKind::Bypassed | DecisionKind::Unmatched => "allowed",
            DecisionKind::Limited => "limited",
            DecisionKind::ShadowLimited => "shadow_limited",
            DecisionKind::FailedOpen | DecisionKind::FailedClosed { .. } => "error",
            DecisionKind::MissingKey { .. } | DecisionKind::InvalidCost(_) => "invalid",
        }
    }
}

/// The status of each limit a [`Decision`] covers, in the policy's order.
///
/// A slice of [`LimitStatus`] (it derefs to `[LimitStatus]`: index it, iterate it,
/// `first()`, `len()`), held inline for one limit — the usual policy — so that a
/// decision costs no allocation; more limits move to the heap.
///
/// ```
/// use tollgate::limiter::Limits;
///
/// let limits = Limits::new();
/// assert!(limits.is_empty());
/// assert!(limits.iter().all(|l| l.verdict.allowed));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Limits(SmallVec<[LimitStatus; 1]>);

impl Limits {
    /// No limits.
    pub fn new() -> Self {
        Limits(SmallVec::new())
    }

    /// The status of a one-limit decision, held inline.
    pub(crate) fn one(status: LimitStatus) -> Self {
        Limits(SmallVec::from_buf([status]))
    }

    /// Appends the status of one more limit.
    pub fn push(&mut self, status: LimitStatus) {
        self.0.push(status);
    }

    /// The statuses as a `Vec`.
    pub fn into_vec(self) -> Vec<LimitStatus> {
        self.0.into_vec()
    }
}

impl std::ops::Deref for Limits {
    type Target = [LimitStatus];

    fn deref(&self) -> &[LimitStatus] {
        &self.0
    }
}

impl std::ops::DerefMut for Limits {
    fn deref_mut(&mut self) -> &mut [LimitStatus] {
        &mut self.0
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<LimitStatus> for Limits {
    fn from_iter<I: IntoIterator<Item = LimitStatus>>(iter: I) -> Self {
        Limits(iter.into_iter().collect())
    }
}

impl Extend<LimitStatus> for Limits {
    fn extend<I: IntoIterator<Item = LimitStatus>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl From<Vec<LimitStatus>> for Limits {
    fn from(limits: Vec<LimitStatus>) -> Self {
        Limits(SmallVec::from_vec(limits))
    }
}

impl From<Limits> for Vec<LimitStatus> {
    fn from(limits: Limits) -> Self {
        limits.into_vec()
    }
}

impl<'a> IntoIterator for &'a Limits {
    type Item = &'a LimitStatus;
    type IntoIter = std::slice::Iter<'a, LimitStatus>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Limits {
    type Item = LimitStatus;
    type IntoIter = LimitsIntoIter;

    fn into_iter(self) -> LimitsIntoIter {
        LimitsIntoIter(self.0.into_iter())
    }
}

/// The owning iterator of [`Limits`].
pub struct LimitsIntoIter(smallvec::IntoIter<[LimitStatus; 1]>);

impl fmt::Debug for LimitsIntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.as_slice()).finish()
    }
}

impl Iterator for LimitsIntoIter {
    type Item = LimitStatus;

    fn next(&mut self) -> Option<LimitStatus> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for LimitsIntoIter {
    fn next_back(&mut self) -> Option<LimitStatus> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for LimitsIntoIter {}

impl std::iter::FusedIterator for LimitsIntoIter {}
