//! Redis Sentinel: the store asks the sentinels for the current primary of a named
//! master (redis-rs' `SentinelClient`), keeps one multiplexed connection to it, and
//! forgets that connection when it fails or the server says it is no longer the
//! primary (`READONLY` after a demotion, `MASTERDOWN`), so the next decision asks the
//! sentinels again and follows a failover without a restart.
//!
//! One lookup (ask the sentinels, connect to the primary) is bounded by the store's
//! lookup timeout: redis-rs' sentinel client uses its own defaults (1 s to connect,
//! 500 ms per answer) for each sentinel in turn, so sentinels that accept and never
//! answer would otherwise hold a lookup about 1 s each. Decisions that
//! arrive while a lookup runs wait for it, bounded by the limiter's timeout; the
//! failure mode answers those that run out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, ScriptInvocation, ServerErrorKind,
};

use super::backend::Backend;
use super::store_error;
use crate::store::StoreError;

pub(super) struct SentinelConnection {
    /// Serialises lookups: one decision asks the sentinels, the others wait for it.
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
    /// The bound on one lookup (see the module docs).
    lookup_timeout: Duration,
}

/// Builds the store's connection to `master` through `sentinels`, without connecting.
pub(super) fn connect(
    sentinels: &[String],
    master: &str,
    response_timeout: Duration,
    connect_timeout: Duration,
    lookup_timeout: Duration,
) -> Result<Backend, StoreError> {
    if sentinels.is_empty() || master.is_empty() {
        return Err(StoreError::config(
            "Redis Sentinel needs at least one sentinel and a master name",
        ));
    }
    // redis-rs takes the master name as `String` without its TLS feature and as
    // `impl ToString` with it: an owned `String` fits both.
    #[allow(clippy::unnecessary_to_owned)]
    let client = SentinelClient::build(
        sentinels.iter().map(String::as_str).collect(),
        master.to_string(),
        None,
        SentinelServerType::Master,
    )
    .map_err(store_error)?;
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout));
    Ok(Backend::Sentinel(Arc::new(SentinelConnection {
        client: tokio::sync::Mutex::new(client),
        current: Mutex::new(None),
        config,
        lookup_timeout,
    })))
}

impl SentinelConnection {
    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current.lock().map(|c| c.clone()).unwrap_or(None)
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let mut client = self.client.lock().await;
        // Another decision may have connected while this one waited for the lock.
        if let Some(conn) = self.cached() {
            return Ok(conn);
        }
        let lookup = async {
            client
                .async_get_client()
                .await?
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
        };
        let conn = tokio::time::timeout(self.lookup_timeout, lookup)
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "finding the primary through the sentinels timed out",
                ))
            })??;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }

    /// Forgets the connection when `error` says it may no longer reach the primary.
    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(error) = &result {
            if stale(error) {
                if let Ok(mut current) = self.current.lock() {
                    *current = None;
                }
            }
        }
        result
    }

    pub(super) async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> RedisResult<Vec<i64>> {
        let mut conn = self.connection().await?;
        self.check(invocation.invoke_async(&mut conn).await)
    }

    pub(super) async fn ping(&self) -> RedisResult<()> {
        let mut conn = self.connection().await?;
        self.check(redis::cmd("PING").query_async(&mut conn).await)
    }
}

fn stale(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}
