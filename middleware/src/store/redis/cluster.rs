//! Redis Cluster: redis-rs' own cluster client (`cluster-async`) — it keeps the slot
//! map, follows `MOVED` and `ASK` during resharding and refreshes the topology after a
//! failover; nothing here knows about slots beyond hash tags.
//!
//! The client retries a command a few times on redirections and lost connections, with
//! short waits, so a reshard costs a little latency, not an error. A retried script may
//! have run already (a timeout does not cancel it): retries can only over-count, never
//! admit more than a limit allows.
//!
//! # Credentials and TLS
//!
//! The builder's user, password and TLS material apply to every node, the seeds and the
//! nodes the client discovers from `CLUSTER SLOTS` alike: redis-rs' cluster client keeps
//! one set for all of them. With `rediss://` seeds the nodes must announce their TLS
//! ports (`tls-cluster yes`).
//!
//! # Why a refused connection is asked again
//!
//! While the cluster client holds no connection at all, it answers every command with
//! "no connections found" and keeps the reason to itself (it logs it as text). A wrong
//! password or an untrusted certificate would then look like an outage. So in that one
//! case [`ClusterConn`] connects to the seeds itself, as the cluster client would, and
//! reports what they say: `auth`, `tls`, or the original error when a seed answers
//! `PING` or none is reachable. At most one such probe per second, so a cluster that is
//! down is not asked twice per decision.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    Value,
};

use super::backend::{Backend, Topology};
use super::{store_error, RedisStoreBuilder};
use crate::store::{StoreError, StoreErrorKind};

/// How long one probe's finding stands for the decisions that follow.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// redis-rs' cluster connection, with the probe of the module docs. Cheap to clone.
#[derive(Clone)]
pub(super) struct ClusterConn {
    conn: ClusterConnection,
    probe: Arc<Probe>,
}

struct Probe {
    /// One client per seed, set up as the cluster client sets up its connections.
    seeds: Vec<redis::Client>,
    config: AsyncConnectionConfig,
    /// When the last probe ran, and the cause it found (`None`: none).
    last: Mutex<Option<(Instant, Option<RedisError>)>>,
}

impl Probe {
    /// The cause behind `error`, a cluster client's "no connection", if a seed tells it.
    async fn diagnose(&self, error: RedisError) -> RedisError {
        let recent = self
            .last
            .lock()
            .ok()
            .and_then(|last| last.clone())
            .filter(|(at, _)| at.elapsed() < PROBE_EVERY);
        if let Some((_, cause)) = recent {
            return cause.unwrap_or(error);
        }
        let mut cause = None;
        for seed in &self.seeds {
            match seed
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
            {
                // A seed that lets us in: the cause is elsewhere.
                Ok(_) => break,
                Err(e) if is_refusal(&e) => {
                    cause = Some(e);
                    break;
                }
                // Unreachable: ask the next one.
                Err(_) => {}
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), cause.clone()));
        }
        cause.unwrap_or(error)
    }
}

/// A server that refused us for who we are, not one that could not be reached.
fn is_refusal(error: &RedisError) -> bool {
    matches!(
        store_error(error.clone()).kind(),
        StoreErrorKind::Auth | StoreErrorKind::Tls
    )
}

/// The cluster client's answer while it holds no connection to any node.
fn has_no_connection(error: &RedisError) -> bool {
    error.kind() == ErrorKind::ClusterConnectionNotFound
        || (error.kind() == ErrorKind::Io
            && error
                .to_string()
                .contains("Failed to create initial connections"))
}

impl ClusterConn {
    async fn checked<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        match result {
            Err(e) if has_no_connection(&e) => Err(self.probe.diagnose(e).await),
            result => result,
        }
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.checked(result).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.checked(result).await
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Connects lazily to the cluster behind `nodes`: the first command does.
pub(super) fn connect(
    builder: &RedisStoreBuilder,
    nodes: &[String],
) -> Result<Backend, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError::config(
            "a Redis Cluster needs at least one seed node",
        ));
    }
    let infos = nodes
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)?;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut client = ClusterClientBuilder::new(infos.iter().cloned())
        // Enough for a MOVED, then an ASK, then a refreshed slot map during a
        // reshard; each wait is short so a dead primary's slots fail fast.
        .retries(3)
        .min_retry_wait(5)
        .max_retry_wait(millis(builder.max_reconnect_delay).min(100))
        .connection_timeout(builder.connect_timeout)
        .response_timeout(builder.response_timeout)
        // Each attempt is bounded by the response timeout; the limiter's own timeout
        // bounds the whole decision, retries included.
        .overall_response_timeout(None);
    if let Some(username) = &builder.username {
        client = client.username(username);
    }
    if let Some(password) = &builder.password {
        // redis-rs would let the builder's password win silently; a second password
        // in a seed URL is more likely a mistake than a fallback.
        if infos
            .iter()
            .any(|i| i.redis_settings().password().is_some())
        {
            return Err(StoreError::config(
                "a password is given both in a cluster node URL and with .password(): keep one",
            ));
        }
        client = client.password(password);
    }
    #[cfg(feature = "redis-tls")]
    {
        let tls_urls = infos
            .iter()
            .filter(|i| matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }))
            .count();
        if let Some(tls) = &builder.tls {
            if tls_urls != infos.len() {
                return Err(StoreError::config(
                    "TLS settings need rediss:// URLs for every cluster node (redis:// is not encrypted)",
                ));
            }
            tls.check()?;
            client = client.certs(tls.certificates());
        }
        if tls_urls > 0 {
            super::tls::ensure_crypto_provider();
        }
    }
    let client = client.build().map_err(store_error)?;
    let config = ClusterConfig::new()
        .set_connection_timeout(builder.connect_timeout)
        .set_response_timeout(builder.response_timeout);
    let seeds = nodes
        .iter()
        .map(|url| {
            RedisStoreBuilder {
                url: url.clone(),
                topology: Topology::Single,
                ..builder.clone()
            }
            .client()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let probe = Probe {
        seeds,
        config: AsyncConnectionConfig::new()
            .set_connection_timeout(Some(builder.connect_timeout))
            .set_response_timeout(Some(builder.response_timeout)),
        last: Mutex::new(None),
    };
    Ok(Backend::Cluster(ClusterConn {
        conn: client.get_pending_async_connection_with_config(config),
        probe: Arc::new(probe),
    }))
}
