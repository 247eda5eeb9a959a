//! What to do when the store cannot answer.

use std::str::FromStr;

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
