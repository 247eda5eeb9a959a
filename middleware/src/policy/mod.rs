//! Which limits apply to a request.
//!
//! A [`Policy`] matches requests by method and path and names one or more [`Limit`]s,
//! each with its own key and algorithm: `10/s per API key` and `1000/d per API key`
//! together, or `100/min per IP` beside `5000/min global`. A request is checked against
//! the first policy that matches it (declaration order) and must pass every one of
//! that policy's limits; they are consumed together or not at all.
//!
//! Policies also say what a request's cost is ([`Cost`]), what happens when it has no
//! key ([`MissingKey`]), and whether the policy is in shadow mode (decide and record,
//! never reject).

mod cost;
mod route;

use std::sync::Arc;

use http::request::Parts;
use http::Method;

pub use self::cost::{Cost, CostError, CostFn};
pub use self::route::{PathMatch, PathPattern, PatternError};
use crate::algorithm::LimitSpec;
use crate::key::Key;

/// What to do with a request that has no key for one of its limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Answer `400 Bad Request` naming the missing key (gRPC: `INVALID_ARGUMENT`).
    #[default]
    Reject,
    /// Let the request through without counting it anywhere.
    Allow,
    /// Count it under this key instead (all keyless requests share one bucket).
    Fallback(String),
}

/// A [`MissingKey`] spelled other than `reject`, `allow` or `fallback:KEY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected reject, allow or fallback:KEY")]
pub struct UnknownMissingKey(pub String);

impl std::str::FromStr for MissingKey {
    type Err = UnknownMissingKey;

    /// `reject`, `allow` or `fallback:KEY` (a non-empty key).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(MissingKey::Reject),
            "allow" => Ok(MissingKey::Allow),
            other => match other.strip_prefix("fallback:") {
                Some(key) if !key.is_empty() => Ok(MissingKey::Fallback(key.to_owned())),
                _ => Err(UnknownMissingKey(other.to_owned())),
            },
        }
    }
}

/// How a limit's decisions reach the shared state.
///
/// Only a shared store (Redis) tells the two apart: a store in this process is exact
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum Consistency {
    /// Every decision is made by the store (today's behaviour): exact across nodes.
    #[default]
    Exact,
    /// A node leases a slice of the key's budget from the store in one call and spends
    /// it locally, so most decisions are memory decisions. Leasing consumes in advance,
    /// so it never admits more than the limit; its error is units stranded in one
    /// node's lease while another refuses, bounded by the slice (docs/design.md).
    Leased,
}

impl Consistency {
    /// The name used in configuration and metrics: `exact` or `leased`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Exact => "exact",
            Consistency::Leased => "leased",
        }
    }
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`Consistency`] spelled other than `exact` or `leased`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected exact or leased")]
pub struct UnknownConsistency(pub String);

impl std::str::FromStr for Consistency {
    type Err = UnknownConsistency;

    /// `exact` or `leased`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(Consistency::Exact),
            "leased" => Ok(Consistency::Leased),
            other => Err(UnknownConsistency(other.to_owned())),
        }
    }
}

/// One named limit inside a policy: a rate and the key it is counted per.
#[derive(Debug, Clone)]
pub struct Limit {
    pub(crate) name: Arc<str>,
    pub(crate) spec: LimitSpec,
    pub(crate) key: Key,
    pub(crate) consistency: Consistency,
}

impl Limit {
    /// A limit called `name` (shown in the `RateLimit` headers) of `spec` per `key`.
    pub fn new(name: impl Into<Arc<str>>, spec: LimitSpec, key: Key) -> Self {
        Limit {
            name: name.into(),
            spec,
            key,
            consistency: Consistency::Exact,
        }
    }

    /// Decides this limit [exactly](Consistency::Exact) (the default) or from
    /// [leased](Consistency::Leased) budgets.
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// How the limit's decisions reach the shared state.
    pub fn consistency(&self) -> Consistency {
        self.consistency
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rate.
    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// The key it is counted per.
    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// A rule: which requests it matches and which limits they must pass.
///
/// ```
/// use http::Method;
/// use tollgate::key::Key;
/// use tollgate::policy::{Cost, Limit, MissingKey, Policy};
///
/// let uploads = Policy::new("uploads")
///     .methods([Method::POST, Method::PUT])
///     .path_prefix("/upload")
///     .limit(Limit::new("per-second", "5/s".parse()?, Key::header("x-api-key")))
///     .limit(Limit::new("per-day", "1000/d".parse()?, Key::header("x-api-key")))
///     .cost(Cost::header("x-cost", 1, 100))
///     .missing_key(MissingKey::Reject);
/// assert_eq!(uploads.limits().len(), 2);
/// # Ok::<(), tollgate::SpecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) methods: Option<Vec<Method>>,
    pub(crate) path: PathMatch,
    pub(crate) limits: Vec<Limit>,
    pub(crate) cost: Cost,
    pub(crate) missing_key: MissingKey,
    pub(crate) shadow: bool,
}

impl Policy {
    /// A policy that matches every request and has no limits yet.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Policy {
            name: name.into(),
            methods: None,
            path: PathMatch::Any,
            limits: Vec::new(),
            cost: Cost::default(),
            missing_key: MissingKey::default(),
            shadow: false,
        }
    }

    /// Shorthand: one limit, named like the policy, of `spec` per `key`, on all requests.
    pub fn single(name: impl Into<Arc<str>>, spec: LimitSpec, key: Key) -> Self {
        let name = name.into();
        Policy::new(name.clone()).limit(Limit::new(name, spec, key))
    }

    /// Matches only these methods (default: all).
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = Some(methods.into_iter().collect());
        self
    }

    /// Matches paths equal to `prefix` or below it at a segment boundary:
    /// `/api` matches `/api` and `/api/users`, not `/apix`.
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path = PathMatch::prefix(prefix);
        self
    }

    /// Matches paths against a glob: `*` within one segment, `**` across segments
    /// (`/users/*/orders`, `/static/**`).
    ///
    /// # Errors
    ///
    /// [`PatternError`] when the pattern is not a valid glob.
    pub fn path_pattern(mut self, pattern: &str) -> Result<Self, PatternError> {
        self.path = PathMatch::pattern(pattern)?;
        Ok(self)
    }

    /// Adds a limit.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// How much each request costs (default 1).
    pub fn cost(mut self, cost: Cost) -> Self {
        self.cost = cost;
        self
    }

    /// What to do when a request has no key (default: reject with 400).
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// Decide and record, but never reject (default off).
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its limits.
    pub fn limits(&self) -> &[Limit] {
        &self.limits
    }

    /// Whether it is in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }

    /// Whether the policy applies to this request.
    pub fn matches(&self, request: &Parts) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.contains(&request.method))
            && self.path.matches(request.uri.path())
    }

    /// Checks names and limits: what the limiter checks before it builds, for callers
    /// (a configuration loader) that want the answer without building one.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] naming the policy and the problem.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let err = |reason: PolicyProblem| PolicyError {
            policy: self.name.to_string(),
            reason,
        };
        check_name(&self.name).map_err(|r| err(PolicyProblem::PolicyName(r)))?;
        if self.limits.is_empty() {
            return Err(err(PolicyProblem::NoLimits));
        }
        for (i, limit) in self.limits.iter().enumerate() {
            check_name(&limit.name).map_err(|r| err(PolicyProblem::LimitName(r)))?;
            if self.limits[..i].iter().any(|l| l.name == limit.name) {
                return Err(err(PolicyProblem::DuplicateLimit(limit.name.to_string())));
            }
        }
        if let MissingKey::Fallback(key) = &self.missing_key {
            if key.is_empty() {
                return Err(err(PolicyProblem::EmptyFallback));
            }
        }
        Ok(())
    }
}

/// Names appear in headers as structured-field strings and in Redis keys: keep them
/// to a safe alphabet rather than escape them everywhere.
pub(crate) fn check_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() || name.len() > 64 {
        return Err(InvalidName::Length(name.to_owned()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(InvalidName::Character {
            name: name.to_owned(),
            character: c,
        });
    }
    Ok(())
}

/// A policy or limit name outside the safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// Empty or longer than 64 bytes.
    #[error("{0:?} must be 1 to 64 characters")]
    Length(String),
    /// A character other than letters, digits, `-`, `_` and `.`.
    #[error("{name:?} contains {character:?}; use letters, digits, '-', '_' and '.'")]
    Character {
        /// The name.
        name: String,
        /// The first character not allowed.
        character: char,
    },
}

/// A policy that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {policy:?}: {reason}")]
pub struct PolicyError {
    /// The policy's name.
    pub policy: String,
    /// What is wrong.
    pub reason: PolicyProblem,
}

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyProblem {
    /// The policy's own name.
    #[error("policy name: {0}")]
    PolicyName(InvalidName),
    /// A limit's name.
    #[error("limit name: {0}")]
    LimitName(InvalidName),
    /// No limits.
    #[error("has no limits")]
    NoLimits,
    /// Two limits share a name.
    #[error("limit {0:?} is declared twice")]
    DuplicateLimit(String),
    /// `MissingKey::Fallback` with an empty key.
    #[error("missing-key fallback must not be empty")]
    EmptyFallback,
}

#[cfg(test)]
mod tests;
