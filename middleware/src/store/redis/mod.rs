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
//!
//! # Credentials, TLS and the least privilege
//!
//! An ACL user and password come from the URL (`redis://user:password@host`) or, to keep
//! a secret out of URLs and command lines, from [`RedisStoreBuilder::username`] and
//! [`RedisStoreBuilder::password`]. `rediss://` URLs connect over TLS (feature
//! `redis-tls`), with a private CA and a client certificate from
//! [`RedisStoreBuilder::tls`]. A wrong password or a missing permission is a
//! [`StoreErrorKind::Auth`] error, a failed handshake or a certificate that does not
//! verify a [`StoreErrorKind::Tls`] one.
//!
//! The commands the store sends, for an ACL user limited to them (`<prefix>` is
//! [`RedisStoreBuilder::prefix`]):
//!
//! ```text
//! ACL SETUSER tollgate on >PASSWORD resetkeys ~<prefix>:* resetchannels -@all
//!     +evalsha +script|load +time +hmget +hset +pexpire +ping
//! ```
//!
//! `EVALSHA` runs `decide.lua` (`SCRIPT LOAD` when Redis lost it), which calls `TIME`,
//! `HMGET`, `HSET` and `PEXPIRE` on its keys — commands a script calls are checked
//! against the user's ACL too; readiness probes send `PING`. `AUTH` needs no
//! permission, `SELECT` is sent only for a non-zero database in the URL (add `+select`
//! then), and the store does not send redis-rs' `CLIENT SETINFO` (Redis 7.2+ would check
//! it against the ACL too).

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis-tls")]
mod tls;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind};

#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use self::tls::RedisTls;

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
    /// ACL user name, replacing the URL's.
    username: Option<String>,
    /// Password, kept out of the URL (and so out of logs and command lines).
    password: Option<String>,
    #[cfg(feature = "redis-tls")]
    tls: Option<RedisTls>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL (it may hold a password) nor the password.
        let mut s = f.debug_struct("RedisStoreBuilder");
        s.field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"));
        #[cfg(feature = "redis-tls")]
        s.field("tls", &self.tls);
        s.finish_non_exhaustive()
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

    /// Authenticate as this ACL user (replaces a user name in the URL).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Authenticate with this password (with the URL's or [`username`](Self::username)'s
    /// user, else Redis' `default` user). Read it from a secret rather than putting it in
    /// the URL, which ends up in command lines and logs; giving both is refused.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The roots to trust and the client certificate to present for a `rediss://` URL
    /// (see [`RedisTls`]). Without it a `rediss://` URL trusts the system's roots.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Builds the store without connecting.
    ///
    /// # Errors
    ///
    /// A [`StoreErrorKind::Config`] error when the URL is invalid, a timeout is zero, a
    /// password is given both in the URL and with [`password`](Self::password), or (with
    /// [`tls`](Self::tls)) the URL is not `rediss://` or a PEM does not parse.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        if self.response_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(StoreError::config(
                "redis timeouts must be greater than zero",
            ));
        }
        let client = self.client()?;
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

impl RedisStoreBuilder {
    /// The redis-rs client: the URL, the credentials given apart, the TLS material.
    fn client(&self) -> Result<redis::Client, StoreError> {
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(store_error)?;
        // No `CLIENT SETINFO` at connect: Redis 7.2+ checks it against the ACL (a
        // refusal, though ignored, fills `ACL LOG`) and older servers do not know it, so
        // skipping it keeps one least-privilege line right for every version.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            if settings.password().is_some() {
                return Err(StoreError::config(
                    "a password is given both in the URL and with .password(): keep one",
                ));
            }
            settings = settings.set_password(password);
        }
        let info = info.set_redis_settings(settings);
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &self.tls {
            if !matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                return Err(StoreError::config(
                    "TLS settings need a rediss:// URL (redis:// is not encrypted)",
                ));
            }
            tls.check()?;
            tls::ensure_crypto_provider();
            return redis::Client::build_with_tls(info, tls.certificates()).map_err(store_error);
        }
        #[cfg(feature = "redis-tls")]
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            tls::ensure_crypto_provider();
        }
        redis::Client::open(info).map_err(store_error)
    }
}

impl RedisStore {
    /// Configures a store for the Redis at `url`:
    /// `redis://[user[:password]@]host:port[/db]`, or `rediss://…` for TLS (feature
    /// `redis-tls`; without it such a URL is a [`StoreErrorKind::Config`] error).
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: url.into(),
            prefix: "tollgate".into(),
            response_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            max_reconnect_delay: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            clock: None,
            username: None,
            password: None,
            #[cfg(feature = "redis-tls")]
            tls: None,
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
/// error replies, formerly `redis`, are `server`; a TLS failure, which redis-rs reports
/// as an I/O error, is `tls`.
fn store_error(error: RedisError) -> StoreError {
    #[cfg(feature = "redis-tls")]
    if let Some(cause) = tls::tls_failure(&error) {
        return tls::store_error(cause, error);
    }
    let kind = if error.is_timeout() {
        StoreErrorKind::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() {
        StoreErrorKind::Connection
    } else {
        match error.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm) => {
                StoreErrorKind::Auth
            }
            // `NOAUTH`: the server wants a password and got none; a command longer
            // than an unauthenticated client may send is refused as a protocol error.
            ErrorKind::Server(ServerErrorKind::ResponseError) | ErrorKind::Extension
                if error.code() == Some("NOAUTH")
                    || error
                        .detail()
                        .is_some_and(|d| d.contains("unauthenticated")) =>
            {
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
