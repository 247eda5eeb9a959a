//! [`RedisStore`]: rate-limit state shared by every node through one Redis.
//!
//! # One round trip per decision, one script call per batch
//!
//! Every decision is decided by one `EVALSHA` of `decide.lua`, which reads the state of
//! every limit of the request, decides them all with the same arithmetic as
//! [`crate::algorithm`], and writes back only if all of them admit. Redis runs a script
//! atomically, so concurrent nodes can never both spend the last unit. If the script
//! cache was flushed (a restart, `SCRIPT FLUSH`), redis-rs sees `NOSCRIPT`, loads the
//! script and retries once by itself.
//!
//! Redis CPU, not the network, is what a shared Redis runs out of, and most of a
//! decision's Redis CPU is the script call and each `redis.call` inside it. So one call
//! decides a whole *batch* of independent requests (each still all or nothing across its
//! own limits) with one `TIME`, one `MGET` for every key, and one `SET … PX` per key
//! written. Decisions that arrive while a call is in flight are sent together as the next
//! call ([`RedisStoreBuilder::batch_max`], `batch.rs`): there is no batching window, so an
//! unloaded request waits for no timer.
//!
//! # The clock
//!
//! The script reads the Redis server's `TIME`, so nodes whose clocks disagree still
//! make the same decisions. (Tests can inject a clock with
//! [`RedisStoreBuilder::clock`] to replay exact scenarios.)
//!
//! # Keys
//!
//! State for a check lives under `<prefix>:<check key>:v2`; the limiter builds check
//! keys as `{<policy>:<key>}:<limit>`, so all limits of one policy and key share a Redis
//! Cluster hash slot. Each is one string (`SET … PX`: the value and its TTL in one
//! command): the GCRA theoretical arrival time, or `start:current:previous` for the
//! windows. Every write sets a TTL: a key vanishes once idle long enough that its state
//! no longer matters, plus a small grace.
//!
//! ## Upgrading from the hash format
//!
//! Versions before this one kept a hash per limit under `<prefix>:<check key>` (no
//! suffix). The `:v2` suffix keeps the two formats apart, so old and new nodes can share
//! one Redis during a rolling upgrade without either failing on the other's keys (an old
//! node's `HMGET` would fail with `WRONGTYPE` on a string). The price, while both
//! versions run: each keeps its own count, so a client whose requests are spread over
//! old and new nodes can get up to the limit from each (at most twice the limit), and
//! the new nodes start from empty state (a full burst per key once). The old keys expire
//! by their TTL. Grant the ACL user both command sets below until the last old node is
//! gone. A value the script cannot read (a hash, a foreign string) at a `:v2` key reads
//! as no state and is replaced: `MGET` answers nil for another type, so no key can make
//! a decision fail with `WRONGTYPE`.
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
//! # Past one Redis
//!
//! - [`RedisStore::cluster`] (feature `redis-cluster`): a Redis Cluster through
//!   redis-rs' cluster client, unbatched (one script may only touch keys of one slot, and
//!   grouping concurrent decisions by slot is left for later: each decision is its own
//!   call, as before). Limits that share a hash tag are decided by one script
//!   on the primary that owns the slot; a policy whose limits span slots is decided slot
//!   by slot with refunds (`spanning.rs`), never admitting more than any limit allows.
//!   The store reports itself [partitioned](Store::is_partitioned): the limiter keeps no
//!   store-wide circuit breaker, so keys on healthy primaries keep exact answers while
//!   one primary's slots fail over.
//! - [`RedisStore::sentinel`] (feature `redis-sentinel`): the primary that Redis
//!   Sentinel names, followed across failovers (`sentinel.rs`).
//!
//! Both decide with each primary's own clock (`TIME`); keep the servers' clocks in sync.
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
//!     +evalsha +script|load +time +mget +set +ping
//! ```
//!
//! `EVALSHA` runs `decide.lua` (`SCRIPT LOAD` when Redis lost it), which calls `TIME`,
//! `MGET` and `SET` on its keys — commands a script calls are checked against the user's
//! ACL too; readiness probes send `PING`. (Versions before the `:v2` keys needed
//! `+hmget +hset +pexpire` instead; see the upgrade note above.) `AUTH` needs no
//! permission, `SELECT` is sent only for a non-zero database in the URL (add `+select`
//! then), and the store does not send redis-rs' `CLIENT SETINFO` (Redis 7.2+ would check
//! it against the ACL too).
//!
//! ## Cluster and Sentinel
//!
//! [`RedisStore::cluster`] applies the builder's user, password and [`RedisTls`] to every
//! node — the seeds and those found in `CLUSTER SLOTS` alike; TLS needs `rediss://` for
//! every seed, and nodes started with `tls-cluster yes` so they announce TLS ports. A
//! password in a seed URL and in [`RedisStoreBuilder::password`] is refused. Each node
//! (ACLs are per node) needs the line above and `+cluster|slots`.
//!
//! [`RedisStore::sentinel`] talks to two kinds of server, authenticated apart:
//!
//! - the **sentinels**, with the user and password of the sentinel URLs (the same in
//!   each), over TLS when they are `rediss://` (trusting [`RedisTls`]'s CA). Their user
//!   needs `-@all +sentinel|masters +role`;
//! - the **primary** the sentinels name (and the replica that replaces it), with
//!   [`RedisStoreBuilder::username`] (else the sentinel URLs' user name) and
//!   [`RedisStoreBuilder::password`] — never the sentinel URLs' password — over TLS when
//!   [`RedisStoreBuilder::tls`] is given or the sentinel URLs are `rediss://`. Its user
//!   needs the line above and `+role` (redis-rs asks the server it is about to use
//!   whether it is the primary).
//!
//! A wrong password or certificate is `auth` or `tls` with these topologies too: while
//! the cluster client has no connection at all it hides why, so the store then asks a
//! seed itself (`cluster.rs`). Unlike the single-Redis connection, redis-rs' cluster and
//! sentinel clients send `CLIENT SETINFO` when they connect and ignore the answer; on
//! Redis 7.2+ add `+client|setinfo` to keep `ACL LOG` free of those refusals.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis-tls")]
mod tls;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind};

#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use self::tls::RedisTls;

use self::backend::{Backend, Topology};
use super::{Charged, Check, Store, StoreError, StoreErrorKind, StoreFuture};
use crate::algorithm::{LimitSpec, Verdict};
use crate::clock::Clock;

/// The version of the state format, the last part of every key (see the module docs).
const KEY_VERSION: &str = "v2";

mod backend;
mod batch;
mod call;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod lease;
#[cfg(feature = "redis-sentinel")]
mod sentinel;
#[cfg(feature = "redis-cluster")]
mod spanning;

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
    conn: Backend,
    /// The queue concurrent decisions share calls through (`batch.rs`); `None` when
    /// batching is off (`batch_max(1)`) or for a Redis Cluster.
    batch: Option<Arc<batch::Batcher>>,
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
    topology: Topology,
    /// The most requests one script call decides (1: every decision its own call).
    batch_max: usize,
    /// ACL user name, replacing the URL's.
    username: Option<String>,
    /// Password, kept out of the URL (and so out of logs and command lines).
    password: Option<String>,
    #[cfg(feature = "redis-tls")]
    tls: Option<RedisTls>,
    /// Bounds finding the primary through the sentinels: redis-rs' sentinel client
    /// talks to them with its own defaults (1 s to connect, 500 ms per answer, each
    /// sentinel in turn), not the store's timeouts.
    #[cfg_attr(not(feature = "redis-sentinel"), allow(dead_code))]
    lookup_timeout: Option<Duration>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL (it may hold a password) nor the password.
        let mut s = f.debug_struct("RedisStoreBuilder");
        s.field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("topology", &self.topology)
            .field("batch_max", &self.batch_max)
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

    /// The most concurrent decisions one script call may decide (default 64; `1` turns
    /// batching off). Applies to one Redis and to Sentinel; a Redis Cluster store never
    /// batches (a script may only touch keys of one slot).
    ///
    /// There is no batching window: a decision is sent at once when no call is in
    /// flight, and decisions that arrive while one is in flight go together in the next
    /// call, up to this many (and at most 1024 keys). An unloaded request therefore
    /// waits for no timer; a loaded store spends much less Redis CPU per decision. Each
    /// request in a batch is still all or nothing across its own limits; when the call
    /// fails, each of them fails with the same error.
    pub fn batch_max(mut self, max: usize) -> Self {
        self.batch_max = max;
        self
    }

    /// How long keys outlive the point where their state stops mattering (default 1 s).
    pub fn key_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long finding the primary through the sentinels may take: asking them and
    /// connecting to the primary they name (default: twice the connect timeout plus
    /// twice the response timeout). Only for [`RedisStore::sentinel`].
    ///
    /// A decision that needs a lookup (the first one, and the first after the primary
    /// failed) fails with [`StoreErrorKind::Timeout`] when this runs out, also when a
    /// sentinel accepts the connection and never answers.
    #[cfg(feature = "redis-sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-sentinel")))]
    pub fn sentinel_lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = Some(timeout);
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
    /// (see [`RedisTls`]). Without it a `rediss://` URL trusts the system's roots. With
    /// [`RedisStore::sentinel`] it also asks for TLS to the primary.
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
    /// password is given both in the URL (a cluster node's) and with
    /// [`password`](Self::password), (with `tls`, feature `redis-tls`) the URL or a cluster
    /// node's is not `rediss://` or a PEM does not parse, or sentinel URLs mix schemes or
    /// credentials.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        if self.response_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.lookup_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(StoreError::config(
                "redis timeouts must be greater than zero",
            ));
        }
        if self.batch_max == 0 {
            return Err(StoreError::config(
                "batch_max must be at least 1 (1 turns batching off)",
            ));
        }
        if let Some(conn) = self.connect_distributed()? {
            return Ok(self.finish(conn));
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
        Ok(self.finish(Backend::Single(conn)))
    }

    /// The connection of a cluster or sentinel topology; `None` for one Redis.
    fn connect_distributed(&self) -> Result<Option<Backend>, StoreError> {
        match &self.topology {
            Topology::Single => Ok(None),
            #[cfg(feature = "redis-cluster")]
            Topology::Cluster(nodes) => {
                if self.prefix.contains('{') || self.prefix.contains('}') {
                    // A brace in the prefix would become every key's hash tag.
                    return Err(StoreError::config(
                        "a Redis Cluster prefix must not contain { or }",
                    ));
                }
                cluster::connect(self, nodes).map(Some)
            }
            #[cfg(feature = "redis-sentinel")]
            Topology::Sentinel { sentinels, master } => sentinel::connect(
                self,
                sentinels,
                master,
                self.lookup_timeout
                    .unwrap_or(2 * (self.connect_timeout + self.response_timeout)),
            )
            .map(Some),
        }
    }

    fn finish(self, conn: Backend) -> RedisStore {
        let batch = (self.batch_max > 1 && !conn.is_cluster())
            .then(|| Arc::new(batch::Batcher::new(self.batch_max)));
        RedisStore {
            conn,
            batch,
            script: Arc::new(Script::new(include_str!("decide.lua"))),
            prefix: self.prefix.into(),
            grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
            clock: self.clock,
        }
    }
}

/// How `decide.lua` runs: plainly, or one step of a decision spanning cluster slots.
#[derive(Debug, Clone, Copy)]
enum Mode<'a> {
    /// Decide and commit all or nothing.
    Plain,
    /// As `Plain`, and return one refund mark per limit when admitted.
    Charge,
    /// Decide without writing.
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    Probe,
    /// Give back a charge that left these marks, then report each limit at cost 0.
    Refund(&'a [i64]),
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
            topology: Topology::Single,
            batch_max: 64,
            username: None,
            password: None,
            #[cfg(feature = "redis-tls")]
            tls: None,
            lookup_timeout: None,
        }
    }

    /// Configures a store for the Redis Cluster reached through these seed nodes
    /// (`redis://[user@]host:port` or `rediss://…` each; one reachable node is enough,
    /// the client discovers the others). The other builder settings — user, password,
    /// TLS included — apply to every node (see the module docs for the ACL line).
    ///
    /// Must be built inside a Tokio runtime (the cluster client runs a task).
    ///
    /// ```no_run
    /// use tollgate::store::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tollgate::store::StoreError> {
    /// let store = RedisStore::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut builder = RedisStore::builder(nodes.first().cloned().unwrap_or_default());
        builder.topology = Topology::Cluster(nodes);
        builder
    }

    /// Configures a store for the primary of `master` as these sentinels
    /// (`redis://[user[:password]@]host:26379` or `rediss://…` each) report it, followed
    /// across failovers.
    ///
    /// The sentinel URLs' password authenticates to the sentinels only; the builder's
    /// [`username`](RedisStoreBuilder::username) (else the URLs' user name),
    /// [`password`](RedisStoreBuilder::password) and [`tls`](RedisStoreBuilder::tls) are
    /// for the primary (see the module docs).
    ///
    /// ```no_run
    /// use tollgate::store::RedisStore;
    ///
    /// let store = RedisStore::sentinel(["redis://10.0.0.1:26379"], "mymaster").build()?;
    /// # Ok::<(), tollgate::store::StoreError>(())
    /// ```
    #[cfg(feature = "redis-sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-sentinel")))]
    pub fn sentinel<I, S>(sentinels: I, master: impl Into<String>) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let sentinels: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let mut builder = RedisStore::builder(sentinels.first().cloned().unwrap_or_default());
        builder.topology = Topology::Sentinel {
            sentinels,
            master: master.into(),
        };
        builder
    }

    /// The full Redis key a check's state lives under:
    /// `<prefix>:<check key>:v2` (the suffix is the state format's version; see the
    /// module docs on upgrading).
    pub fn redis_key(&self, check: &Check) -> String {
        // The parts `key_arg` writes, joined in one allocation of the exact size.
        self.key_arg(check).0.concat()
    }

    /// [`redis_key`](Self::redis_key) as a script argument, written straight into the
    /// command without a `String` of its own.
    fn key_arg<'k>(&'k self, check: &'k Check) -> call::RedisKey<'k> {
        call::RedisKey([&self.prefix, ":", &check.key, ":", KEY_VERSION])
    }

    async fn run(&self, checks: &[Check], cost: u64) -> Result<Vec<Verdict>, StoreError> {
        #[cfg(feature = "redis-cluster")]
        if self.conn.is_cluster() && checks.len() > 1 {
            let keys: Vec<String> = checks.iter().map(|c| self.redis_key(c)).collect();
            if let Some(groups) = spanning::groups(&keys) {
                return spanning::decide(self, checks, &groups, cost).await;
            }
        }
        self.eval_plain(checks, cost).await
    }

    /// One script call deciding `checks` alone.
    async fn eval_plain(&self, checks: &[Check], cost: u64) -> Result<Vec<Verdict>, StoreError> {
        self.eval(checks, cost, Mode::Plain)
            .await
            .map(|(verdicts, _)| verdicts)
    }

    /// One run of `decide.lua` over `checks` as one request: the verdicts, and the
    /// refund marks when `mode` is [`Mode::Charge`] and the checks admitted.
    async fn eval<'c>(
        &self,
        checks: impl IntoIterator<Item = &'c Check>,
        cost: u64,
        mode: Mode<'_>,
    ) -> Result<(Vec<Verdict>, Vec<i64>), StoreError> {
        let limits = checks
            .into_iter()
            .map(|check| (self.key_arg(check), &check.spec));
        // Encoded before the first await: the future then holds no borrowing iterator
        // (which would make it lose `Send` through a higher-ranked closure type).
        let call = self.prepare([(limits, cost, mode)])?;
        let mut answers = self.send(call).await?;
        answers
            .pop()
            .ok_or_else(|| StoreError::protocol("the script answered no request"))
    }

    /// Encodes one run of `decide.lua` deciding several independent requests, each a
    /// list of `(redis key, limit)`, a cost and a mode; [`send`](Self::send) runs it.
    fn prepare<'s, R, L, K>(&self, requests: R) -> Result<Call, StoreError>
    where
        R: IntoIterator<Item = (L, u64, Mode<'s>)>,
        L: IntoIterator<Item = (K, &'s LimitSpec)>,
        K: redis::ToRedisArgs,
    {
        // The distinct limits of the batch (usually one or a few), sent once; each
        // request names them by number. Per request: its number of limits, cost, mode
        // and those numbers, to send after the limits. Everything is written straight
        // into one command buffer (redis-rs' `ScriptInvocation` kept a vector per
        // argument, then copied them all into the command).
        let mut keys: Vec<K> = Vec::new();
        let mut specs: Vec<&LimitSpec> = Vec::new();
        let mut numbers: Vec<i128> = Vec::new();
        let mut bodies: Vec<(u64, Mode<'_>, std::ops::Range<usize>)> = Vec::new();
        for (limits, cost, mode) in requests {
            let first = numbers.len();
            for (key, spec) in limits {
                keys.push(key);
                let number = match specs.iter().position(|s| *s == spec) {
                    Some(i) => i + 1,
                    None => {
                        specs.push(spec);
                        specs.len()
                    }
                };
                numbers.push(number as i128);
            }
            bodies.push((cost, mode, first..numbers.len()));
        }
        let mut invocation = call::ScriptCall::new(&self.script, &keys);
        let now = self.clock.as_ref().map(|c| c.now_us().to_string());
        invocation
            .arg(now.as_deref().unwrap_or(""))
            .arg(self.grace_ms)
            .arg(specs.len());
        // i128: every u64 and i64 below, printed exactly as before.
        let mut ints: Vec<i128> =
            Vec::with_capacity(5 * specs.len() + 1 + 3 * bodies.len() + numbers.len());
        for spec in &specs {
            ints.extend([
                i128::from(spec.algorithm().code()),
                i128::from(spec.quota()),
                i128::from(spec.period_ms()),
                i128::from(spec.burst()),
                i128::from(spec.interval_us()),
            ]);
        }
        ints.push(bodies.len() as i128);
        let mut shapes = Vec::with_capacity(bodies.len());
        for (cost, mode, range) in bodies {
            let n = range.len();
            let code = match mode {
                Mode::Plain => 0,
                Mode::Charge => 1,
                Mode::Probe => 2,
                Mode::Refund(_) => 3,
            };
            ints.extend([n as i128, i128::from(cost), code]);
            ints.extend_from_slice(&numbers[range]);
            if let Mode::Refund(marks) = mode {
                if marks.len() != n {
                    return Err(StoreError::protocol(format!(
                        "a refund needs one mark per limit: {} marks for {n} limits",
                        marks.len()
                    )));
                }
                // The marks come last in a refund's arguments: flush what precedes them.
                invocation.arg(&ints).arg(marks);
                ints.clear();
            }
            shapes.push((n, matches!(mode, Mode::Charge)));
        }
        invocation.arg(&ints);
        Ok(Call { invocation, shapes })
    }

    /// Runs a prepared call: per request, the verdicts and (in [`Mode::Charge`], when
    /// admitted) the refund marks.
    async fn send(&self, call: Call) -> Result<Vec<(Vec<Verdict>, Vec<i64>)>, StoreError> {
        let Call { invocation, shapes } = call;
        let reply = self
            .conn
            .invoke(&invocation, &self.script)
            .await
            .map_err(store_error)?;
        let expected: usize = shapes
            .iter()
            .map(|&(n, charge)| if charge { n * 5 } else { n * 4 })
            .sum();
        if reply.len() != expected {
            return Err(StoreError::protocol(format!(
                "expected {expected} integers, got {}",
                reply.len()
            )));
        }
        let mut rest = reply.as_slice();
        let mut answers = Vec::with_capacity(shapes.len());
        for (n, charge) in shapes {
            let (verdicts, tail) = rest.split_at(n * 4);
            let verdicts: Vec<Verdict> = verdicts
                .chunks_exact(4)
                .map(|v| Verdict {
                    allowed: v[0] == 1,
                    remaining: u64::try_from(v[1]).unwrap_or(0),
                    reset_after_us: v[2],
                    retry_after_us: v[3],
                })
                .collect();
            let (marks, tail) = if charge {
                tail.split_at(n)
            } else {
                (&tail[..0], tail)
            };
            // Marks only mean something for an admission (the script sends 0s otherwise).
            let marks = if charge && verdicts.iter().all(|v| v.allowed) {
                marks.to_vec()
            } else {
                Vec::new()
            };
            answers.push((verdicts, marks));
            rest = tail;
        }
        Ok(answers)
    }
}

/// An encoded script call and, per request, its number of limits and whether it
/// charges (to read the reply).
struct Call {
    invocation: call::ScriptCall,
    shapes: Vec<(usize, bool)>,
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
        match &self.batch {
            // Batching is off for a Redis Cluster, so `run`'s slot spanning never
            // applies here.
            Some(batch) if checks.len() <= batch::MAX_KEYS => batch.submit(self, checks, cost),
            _ => Box::pin(self.run(checks, cost)),
        }
    }

    fn is_partitioned(&self) -> bool {
        self.conn.is_cluster()
    }

    // Leases (issue 13): see lease.rs.
    fn charge<'a>(&'a self, check: &'a Check, units: u64) -> StoreFuture<'a, Charged> {
        Box::pin(self.charge_one(check, units))
    }

    fn give_back<'a>(&'a self, check: &'a Check, mark: i64, units: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.give_back_one(check, mark, units))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.conn.ping().await.map_err(store_error) })
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
