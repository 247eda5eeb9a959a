//! The connection a [`RedisStore`](super::RedisStore) talks through: one Redis, a Redis
//! Cluster, or the primary Redis Sentinel points at. Everything above this file sends
//! the same script and reads the same reply whichever it is.

use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};

use super::call::ScriptCall;

/// Where the store's state lives, as configured (the builder's constructors set it).
#[derive(Debug, Clone)]
pub(super) enum Topology {
    /// One Redis at the builder's URL.
    Single,
    /// A Redis Cluster reached through these seed nodes.
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
    /// The primary of `master`, as these sentinels report it.
    #[cfg(feature = "redis-sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// A live connection of one of the [`Topology`] kinds. Cheap to clone.
#[derive(Clone)]
pub(super) enum Backend {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(super::cluster::ClusterConn),
    #[cfg(feature = "redis-sentinel")]
    Sentinel(std::sync::Arc<super::sentinel::SentinelConnection>),
}

impl Backend {
    /// Whether keys of different hash slots live on different servers, so one script
    /// may only touch keys of one slot.
    pub(super) fn is_cluster(&self) -> bool {
        #[cfg(feature = "redis-cluster")]
        if let Backend::Cluster(_) = self {
            return true;
        }
        false
    }

    /// Runs `call` of `script`, loading the script first where a server answers
    /// `NOSCRIPT`.
    pub(super) async fn invoke(&self, call: &ScriptCall, script: &Script) -> RedisResult<Vec<i64>> {
        match self {
            Backend::Single(conn) => call.run(&mut conn.clone(), script).await,
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(conn) => call.run(&mut conn.clone(), script).await,
            #[cfg(feature = "redis-sentinel")]
            Backend::Sentinel(sentinel) => sentinel.invoke(call, script).await,
        }
    }

    pub(super) async fn ping(&self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Backend::Single(conn) => ping.query_async(&mut conn.clone()).await,
            #[cfg(feature = "redis-cluster")]
            Backend::Cluster(conn) => ping.query_async(&mut conn.clone()).await,
            #[cfg(feature = "redis-sentinel")]
            Backend::Sentinel(sentinel) => sentinel.ping().await,
        }
    }
}
