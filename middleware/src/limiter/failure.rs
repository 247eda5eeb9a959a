//! What to do when the store cannot answer, and why it did not.

use std::str::FromStr;
use std::time::Duration;

use crate::store::StoreError;

/// Why the limiter got no answer from its store: the store failed, or the limiter
/// itself stopped waiting or did not ask.
///
/// The deadline and the circuit breaker belong to the limiter, not to any store, so
/// they are reported here rather than as a [`StoreError`]. Returned by
/// [`RateLimiter::ping`](super::RateLimiter::ping); a decision that meets one is
/// answered by the [`FailureMode`] and counted in `ratelimiter_store_errors_total`
/// under [`kind`](Self::kind).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The store answered with an error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store did not answer within the limiter's deadline.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open: the store is not being asked during an outage.
    #[error("circuit breaker open: store not consulted")]
    CircuitOpen,
}

impl Unavailable {
    /// The `kind` metric label: the store error's kind, `timeout` or `circuit_open`.
    pub fn kind(&self) -> &'static str {
        match self {
            Unavailable::Store(e) => e.kind().as_str(),
            Unavailable::Timeout(_) => "timeout",
            Unavailable::CircuitOpen => "circuit_open",
        }
    }

    /// The store's error, when the store answered with one.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Unavailable::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// The answer given while the store is failing (timeouts, connection loss, open breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailureMode {
    /// Let requests through uncounted: the limiter never becomes the outage. Default.
    #[default]
    Open,
    /// Refuse requests with `503 Service Unavailable` and `Retry-After`: for limits
    /// that protect something more fragile than availability (cost, abuse).
    Closed,
    /// Decide against a per-process in-memory store with the same policies: limits
    /// hold per node (so N nodes admit up to N× the limit) until the store returns.
    Local,
}

/// A failure mode name that is not `open`, `closed` or `local`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure mode {0:?}: expected open, closed or local")]
pub struct UnknownFailureMode(pub String);

impl FromStr for FailureMode {
    type Err = UnknownFailureMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FailureMode::Open),
            "closed" => Ok(FailureMode::Closed),
            "local" | "fallback" => Ok(FailureMode::Local),
            other => Err(UnknownFailureMode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for FailureMode {
    /// The name [`FromStr`] reads back: `open`, `closed`, `local`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
            FailureMode::Local => "local",
        })
    }
}
