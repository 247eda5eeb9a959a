//! [`RateLimiterBuilder`]: every setting of a [`RateLimiter`], validated at once.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::Breaker;
use super::deny_cache::DenyCache;
use super::lease::Leases;
use super::metrics::{self, describe_metrics, LimiterMetrics};
use super::throttle::LogThrottle;
use super::{BreakerConfig, FailureMode, Inner, LeaseConfig, RateLimiter};
use crate::clock::{Clock, MonotonicClock};
use crate::policy::{Policy, PolicyError};
use crate::store::{MemoryStore, Store};

impl RateLimiter {
    /// Checks `policies` as [`RateLimiterBuilder::build`] will: each policy valid
    /// ([`Policy::validate`]) and no two sharing a name. For configuration loaders that
    /// want the answer without building a limiter.
    ///
    /// # Errors
    ///
    /// The first problem, as a [`BuildError`].
    pub fn validate_policies(policies: &[Policy]) -> Result<(), BuildError> {
        for (i, policy) in policies.iter().enumerate() {
            policy.validate()?;
            if policies[..i].iter().any(|p| p.name == policy.name) {
                return Err(BuildError::DuplicatePolicy(policy.name.to_string()));
            }
        }
        Ok(())
    }

    /// Configures a limiter.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            store: None,
            policies: Vec::new(),
            failure_mode: FailureMode::default(),
            timeout: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
            deny_cache: true,
            shadow: false,
            fallback_max_keys: 100_000,
            clock: None,
            metric_labels: Vec::new(),
            lease: LeaseConfig::default(),
        }
    }
}

/// A limiter that could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Two policies share a name.
    #[error("policy {0:?} is declared twice")]
    DuplicatePolicy(String),
    /// The decision timeout is zero.
    #[error("decision timeout must be greater than zero")]
    ZeroTimeout,
    /// A static metric label is not a valid Prometheus label name, is reserved, or is
    /// given twice.
    #[error("metric label {name:?}: {reason}")]
    MetricLabel {
        /// The label's name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A [`LeaseConfig`] setting is out of range.
    #[error("lease {field}: {reason}")]
    Lease {
        /// The setting (`max_fraction`, `max_age`).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Configures a [`RateLimiter`].
pub struct RateLimiterBuilder {
    store: Option<Arc<dyn Store>>,
    policies: Vec<Policy>,
    failure_mode: FailureMode,
    timeout: Duration,
    breaker: BreakerConfig,
    deny_cache: bool,
    shadow: bool,
    fallback_max_keys: usize,
    /// `None`: a [`MonotonicClock`], made at `build` (the first one calibrates).
    clock: Option<Arc<dyn Clock>>,
    metric_labels: Vec<(Arc<str>, Arc<str>)>,
    lease: LeaseConfig,
}

impl RateLimiterBuilder {
    /// Where state lives (default: a new [`MemoryStore`]).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store already shared behind an `Arc`.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a policy; the first policy that matches a request decides it.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// Adds several policies.
    pub fn policies(mut self, policies: impl IntoIterator<Item = Policy>) -> Self {
        self.policies.extend(policies);
        self
    }

    /// What to answer while the store fails (default [`FailureMode::Open`]).
    pub fn failure_mode(mut self, mode: FailureMode) -> Self {
        self.failure_mode = mode;
        self
    }

    /// The longest a decision may wait for the store (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Circuit breaker settings (default: open after 3 failures for 500 ms). Not used
    /// with a [partitioned](crate::store::Store::is_partitioned) store such as a Redis
    /// Cluster, where the timeout alone bounds each decision.
    pub fn circuit_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Answer keys the store refused from a local cache until their `Retry-After`
    /// passes (default on; only used with stores that are not already local).
    pub fn deny_cache(mut self, enabled: bool) -> Self {
        self.deny_cache = enabled;
        self
    }

    /// Shadow mode for every policy: decide and record, never reject (default off).
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Key bound of the local fallback store used by [`FailureMode::Local`].
    pub fn fallback_max_keys(mut self, max_keys: usize) -> Self {
        self.fallback_max_keys = max_keys;
        self
    }

    /// The clock of the deny cache and the local fallback store (default:
    /// [`MonotonicClock`](crate::MonotonicClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Adds a label that every metric series of this limiter carries, such as
    /// `node="sidecar-1"` (default: none).
    ///
    /// The `metrics` facade has one recorder per process, so two limiters in one
    /// process write into the same families; static labels keep their series apart.
    /// `name` must be a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
    /// with `__`) other than the limiter's own `policy`, `decision`, `store`, `source` and
    /// `kind`; [`build`](Self::build) says which rule a bad name breaks.
    pub fn metric_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metric_labels
            .push((name.into().into(), value.into().into()));
        self
    }

    /// How leased limits ([`Consistency::Leased`](crate::policy::Consistency)) size
    /// and age their slices (default [`LeaseConfig::default`]). Used only with a
    /// shared store: with a local one every limit is exact.
    pub fn lease(mut self, config: LeaseConfig) -> Self {
        self.lease = config;
        self
    }

    /// Validates everything and builds the limiter.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the invalid policy or setting.
    pub fn build(self) -> Result<RateLimiter, BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        for (i, (name, _)) in self.metric_labels.iter().enumerate() {
            let reason = if !is_label_name(name) {
                Some("not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            } else if name.starts_with("__") {
                Some("names starting with `__` are reserved by Prometheus")
            } else if metrics::OWN_LABELS.contains(&&**name) {
                Some("the limiter sets this label itself")
            } else if self.metric_labels[..i].iter().any(|(n, _)| n == name) {
                Some("given twice")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(BuildError::MetricLabel {
                    name: name.to_string(),
                    reason,
                });
            }
        }
        self.lease.validate()?;
        RateLimiter::validate_policies(&self.policies)?;
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(MonotonicClock::new()));
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::builder().clock(clock.clone()).build()));
        let local = store.is_local();
        // A store-wide breaker would fail every key when one server of a partitioned
        // store fails; there the timeout alone bounds each decision.
        let breaker = if store.is_partitioned() {
            BreakerConfig::new(0, self.breaker.cooldown)
        } else {
            self.breaker
        };
        let fallback = (self.failure_mode == FailureMode::Local && !local).then(|| {
            MemoryStore::builder()
                .max_keys(self.fallback_max_keys)
                .clock(clock.clone())
                .build()
        });
        let names: Vec<Arc<str>> = self.policies.iter().map(|p| p.name.clone()).collect();
        let store_kind = store.kind();
        let limiter = RateLimiter {
            inner: Arc::new(Inner {
                policies: self.policies,
                store_kind,
                store,
                fallback,
                failure_mode: self.failure_mode,
                timeout: self.timeout,
                breaker: Breaker::new(breaker),
                deny_cache: (self.deny_cache && !local).then(DenyCache::default),
                shadow: self.shadow,
                clock,
                log: LogThrottle::new(),
                last_error: Default::default(),
                metrics: LimiterMetrics::new(&self.metric_labels, &names, store_kind),
                leases: (!local).then(|| Leases::new(self.lease)),
            }),
        };
        // Every build, not once per process: a recorder installed after an earlier
        // build would otherwise never get the descriptions. It is a few map inserts.
        describe_metrics();
        limiter.register_lease_metrics();
        Ok(limiter)
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
