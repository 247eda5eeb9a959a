//! What the limiter decided about one request.

use std::sync::Arc;
use std::time::Duration;

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
    pub limits: Vec<LimitStatus>,
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
            limits: Vec::new(),
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
