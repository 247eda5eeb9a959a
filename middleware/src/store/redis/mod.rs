//! [`RedisStore`]: rate-limit state shared by every node through one Redis.
//!
//! # One round trip per decision
//!
//! Every decision is one `EVALSHA` of `decide.lua`, which reads the state of every
//! limit of the request, decides them all with the same arithmetic as
//! [`crate::algorithm`], and writes back only if all of them admit. Redis runs a script
//! atomically, so concurrent nodes can never both spend the last unit. If the script
//! cache was flushed (a restart, `SCRIPT FLUSH`), redis-rs sees `NOSCRIPT`, loads the
//! script and retries once by itself.
//!
//! # The clock
//!
//! The script reads the Redis server's `TIME`, so nodes whose clocks disagree still
//! make the same decisions. (Tests can inject a clock with
//! [`RedisStoreBuilder::clock`] to replay exact scenarios.)
//!
//! # Keys
//!
//! State for a check lives under `<prefix>:<check key>`; the limiter builds check keys
//! as `{<policy>:<key>}:<limit>`, so all limits of one policy and key share a Redis
//! Cluster hash slot. Every write sets a TTL: a key vanishes once idle long enough that
//! its state no longer matters, plus a small grace.
//!
//! # Failing fast
//!
//! The connection is a redis-rs `ConnectionManager`: multiplexed (one socket carries
//! every concurrent decision) and reconnecting by itself. Its defaults would block a
//! call for seconds while Redis is down, so the builder sets a short response and
//! connect timeout and a bounded reconnect backoff. The limiter additionally bounds
//! every decision with its own timeout and a circuit breaker.
//!
//! A timed-out script may still run when Redis wakes up: Redis cannot cancel it. The
//! store therefore never retries a decision; the request gets the failure mode's answer
//! instead.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use super::{Check, Store, StoreError, StoreErrorKind, StoreFuture};
use crate::algorithm::Verdict;
use crate::clock::Clock;

/// Rate-limit state in Redis, shared by every node that uses the same server.
///
/// Building the store does not connect: the first decision does, and the connection
/// is re-established by itself after an outage.
///
/// ```no_run
/// use std::time::Duration;
/// use tollgate::store::RedisStore;
///
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .response_timeout(Duration::from_millis(50))
///     .prefix("myapp:ratelimit")
///     .build()?;
/// # Ok::<(), tollgate::store::StoreError>(())
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    script: Arc<Script>,
    prefix: Arc<str>,
    grace_ms: u64,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("grace_ms", &self.grace_ms)
            .field("injected_clock", &self.clock.is_some())
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisStore`].
#[derive(Clone)]
pub struct RedisStoreBuilder {
    url: String,
    prefix: String,
    response_timeout: Duration,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
    grace: Duration,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The namespace every key starts with (default `tollgate`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one command may take before it fails (default 50 ms).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 250 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between reconnection attempts (default 1 s).
    pub fn max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// How long keys outlive the point where their state stops mattering (default 1 s).
    pub fn key_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Decide with this clock instead of the Redis server's `TIME`.
    ///
    /// For tests that replay exact time sequences. In production keep the server's
    /// clock: it is the one thing every node agrees on.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the store without connecting.
    ///
    /// # Errors
    ///
    /// A [`StoreErrorKind::Config`] error when the URL is invalid or a timeout is zero.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(StoreError::config(
                "redis timeouts must be greater than zero",
            ));
        }
        let client = redis::Client::open(self.url.as_str()).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.connect_timeout))
            // One reconnect attempt per failed call; the limiter's circuit breaker
            // paces calls during an outage, so the manager need not retry for long.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.max_reconnect_delay);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(store_error)?;
        Ok(RedisStore {
            conn,
            script: Arc::new(Script::new(include_str!("decide.lua"))),
            prefix: self.prefix.into(),
            grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            clock: self.clock,
        })
    }
}

impl RedisStore {
    /// Configures a store for the Redis at `url` (`redis://[:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "tollgate".into(),
            response_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            clock: None,
        }
    }

    /// The full Redis key a check's state lives under.
    pub fn redis_key(&self, check: &Check) -> String {
        format!("{}:{}", self.prefix, check.key)
    }

    async fn run(&self, checks: &[Check], cost: u64) -> Result<Vec<Verdict>, StoreError> {
        let mut invocation = self.script.prepare_invoke();
        let now = self.clock.as_ref().map(|c| c.now_us().to_string());
        invocation
            .arg(now.as_deref().unwrap_or(""))
            .arg(cost)
            .arg(self.grace_ms);
        for check in checks {
            let spec = &check.spec;
            invocation
                .key(self.redis_key(check))
                .arg(spec.algorithm().code())
                .arg(spec.quota())
                .arg(spec.period_ms())
                .arg(spec.burst())
                .arg(spec.interval_us());
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        if reply.len() != checks.len() * 4 {
            return Err(StoreError::protocol(format!(
                "expected {} integers, got {}",
                checks.len() * 4,
                reply.len()
            )));
        }
        Ok(reply
            .chunks_exact(4)
            .map(|v| Verdict {
                allowed: v[0] == 1,
                remaining: u64::try_from(v[1]).unwrap_or(0),
                reset_after_us: v[2],
                retry_after_us: v[3],
            })
            .collect())
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
        Box::pin(self.run(checks, cost))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING")
                .query_async::<()>(&mut conn)
                .await
                .map_err(store_error)
        })
    }
}

/// Translates a redis-rs error into the backend-neutral [`StoreError`], keeping it as
/// the source. The kinds keep the metric labels this store reported before
/// `StoreError` stopped exposing redis-rs (`timeout`, `connection`, `protocol`);
/// error replies, formerly `redis`, are `server`.
fn store_error(error: RedisError) -> StoreError {
    let kind = if error.is_timeout() {
        StoreErrorKind::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() {
        StoreErrorKind::Connection
    } else {
        match error.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
                StoreErrorKind::Auth
            }
            ErrorKind::InvalidClientConfig => StoreErrorKind::Config,
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreErrorKind::Protocol,
            ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorKind::Server,
            _ => StoreErrorKind::Other,
        }
    };
    // Beyond what the kind implies: a server that is loading, failing over or
    // read-only after a demotion answers again once it has settled.
    let settles = matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    let transient = kind.is_transient() || settles || error.is_unrecoverable_error();
    StoreError::new(kind, error.to_string())
        .transient(transient)
        .with_source(error)
}
