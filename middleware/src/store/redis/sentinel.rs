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
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, RedisResult,
    ServerErrorKind,
};

use super::backend::Backend;
use super::{store_error, RedisStoreBuilder};
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
///
/// Two kinds of connection, configured apart (see the module docs): to the sentinels,
/// with the user, password and scheme of the sentinel URLs; to the primary, with the
/// builder's user, password and TLS material.
pub(super) fn connect(
    builder: &RedisStoreBuilder,
    sentinels: &[String],
    master: &str,
    lookup_timeout: Duration,
) -> Result<Backend, StoreError> {
    if sentinels.is_empty() || master.is_empty() {
        return Err(StoreError::config(
            "Redis Sentinel needs at least one sentinel and a master name",
        ));
    }
    let infos = sentinels
        .iter()
        .map(|url| url.as_str().into_connection_info())
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)?;
    let first = infos[0].redis_settings();
    // redis-rs keeps one user and password for all the sentinels.
    if infos.iter().any(|i| {
        i.redis_settings().username() != first.username()
            || i.redis_settings().password() != first.password()
    }) {
        return Err(StoreError::config(
            "every sentinel URL must carry the same user and password (or none)",
        ));
    }
    let tls_sentinels = infos.iter().filter(|i| is_tls(i.addr())).count();
    if tls_sentinels != 0 && tls_sentinels != infos.len() {
        return Err(StoreError::config(
            "sentinel URLs must be all redis:// or all rediss://",
        ));
    }
    let mut client = SentinelClientBuilder::new(
        infos.iter().map(|i| i.addr().clone()),
        master,
        SentinelServerType::Master,
    )
    .map_err(store_error)?;
    if let Some(username) = first.username() {
        client = client.set_client_to_sentinel_username(username);
    }
    if let Some(password) = first.password() {
        client = client.set_client_to_sentinel_password(password);
    }
    // The primary's user: the builder's, else the one the sentinel URLs name (one name
    // for one ACL user defined on the sentinels and the servers); never their password.
    if let Some(username) = builder.username.as_deref().or(first.username()) {
        client = client.set_client_to_redis_username(username);
    }
    if let Some(password) = &builder.password {
        client = client.set_client_to_redis_password(password);
    }
    #[cfg(feature = "redis-tls")]
    {
        // Sentinels reached over TLS name primaries that serve TLS (a deployment
        // that encrypts one encrypts both); TLS material alone also asks for it.
        if builder.tls.is_some() || tls_sentinels > 0 {
            super::tls::ensure_crypto_provider();
            client = client.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        }
        if let Some(tls) = &builder.tls {
            tls.check()?;
            client = client.set_client_to_redis_certificates(tls.certificates());
            if tls_sentinels > 0 {
                client = client.set_client_to_sentinel_certificates(tls.certificates());
            }
        }
    }
    let client = client.build().map_err(store_error)?;
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(builder.response_timeout))
        .set_connection_timeout(Some(builder.connect_timeout));
    Ok(Backend::Sentinel(Arc::new(SentinelConnection {
        client: tokio::sync::Mutex::new(client),
        current: Mutex::new(None),
        config,
        lookup_timeout,
    })))
}

fn is_tls(addr: &ConnectionAddr) -> bool {
    matches!(addr, ConnectionAddr::TcpTls { .. })
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

    pub(super) async fn invoke(
        &self,
        call: &super::call::ScriptCall,
        script: &redis::Script,
    ) -> RedisResult<Vec<i64>> {
        let mut conn = self.connection().await?;
        self.check(call.run(&mut conn, script).await)
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
