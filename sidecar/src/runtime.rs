//! What a configuration turns into, and how it is swapped on reload.
//!
//! A [`Runtime`] is everything a request needs: the limiter and the tower stack
//! `RateLimit<Proxy>` — the very [`RateLimitLayer`] library users get. The server loads
//! the current runtime once per request from a [`Shared`] cell, so a reload swaps it
//! atomically: requests already running finish on the old one, new ones see the new
//! one, none is dropped, and no request ever sees half of each.
//!
//! The store outlives reloads: counts in memory (or the Redis connection) are kept
//! when the store settings did not change, so a reload does not reset anyone's limits.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tollgate::store::{MemoryStore, RedisStore, RedisTls, Store, StoreError};
use tollgate::{LeaseConfig, RateLimit, RateLimitLayer, RateLimiter};
use tower::Layer;

use crate::config::{Config, RedisSecurity, RedisTopology, StoreConfig};
use crate::proxy::Proxy;

/// The serving half of a configuration.
pub struct Runtime {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The decision engine (also used by `POST /check`).
    pub limiter: RateLimiter,
    /// The request path: rate limit, then proxy.
    pub stack: RateLimit<Proxy>,
}

/// The current runtime, swapped whole on reload.
pub type Shared = Arc<ArcSwap<Runtime>>;

/// Keeps the store across reloads while its settings stay the same.
#[derive(Default)]
pub struct Stores {
    current: Mutex<Option<(StoreConfig, Arc<dyn Store>)>>,
}

impl Stores {
    fn get(&self, config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((existing, store)) = current.as_ref() {
            if existing == config {
                return Ok(store.clone());
            }
        }
        let store: Arc<dyn Store> = match config {
            StoreConfig::Memory { max_keys } => {
                Arc::new(MemoryStore::builder().max_keys(*max_keys).build())
            }
            StoreConfig::Redis {
                url,
                topology,
                timeout,
                prefix,
                batch_max,
                security,
            } => Arc::new(
                secured(
                    match topology {
                        RedisTopology::Single => RedisStore::builder(url.clone()),
                        RedisTopology::Cluster(nodes) => RedisStore::cluster(nodes.clone()),
                        RedisTopology::Sentinel { sentinels, master } => {
                            RedisStore::sentinel(sentinels.clone(), master.clone())
                        }
                    },
                    security,
                )
                .response_timeout(*timeout)
                .prefix(prefix.clone())
                .batch_max(*batch_max)
                .build()?,
            ),
        };
        *current = Some((config.clone(), store.clone()));
        Ok(store)
    }
}

/// The password and TLS material read from `[redis]`'s files, on a store builder.
fn secured(
    mut builder: tollgate::store::RedisStoreBuilder,
    security: &RedisSecurity,
) -> tollgate::store::RedisStoreBuilder {
    if let Some(password) = &security.password {
        builder = builder.password(password.expose());
    }
    if security.ca.is_none() && security.client_identity.is_none() {
        // A rediss:// URL without files trusts the system's roots.
        return builder;
    }
    let mut tls = RedisTls::new();
    if let Some(ca) = &security.ca {
        tls = tls.ca_pem(ca.bytes());
    }
    if let Some((cert, key)) = &security.client_identity {
        tls = tls.client_identity(cert.bytes(), key.bytes());
    }
    builder.tls(tls)
}

/// The configuration field that names the store's addresses, for error messages.
fn store_field(store: &StoreConfig) -> &'static str {
    match store {
        StoreConfig::Redis {
            topology: RedisTopology::Cluster(_),
            ..
        } => "redis.cluster",
        StoreConfig::Redis {
            topology: RedisTopology::Sentinel { .. },
            ..
        } => "redis.sentinels",
        _ => "redis.url",
    }
}

/// Why a validated configuration could still not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store could not be created (e.g. an unparsable Redis URL); `field` names
    /// the setting it came from (`redis.url`, `redis.cluster` or `redis.sentinels`).
    #[error("{field}: {source}")]
    Store {
        /// The configuration field of the store's addresses.
        field: &'static str,
        /// Why the store could not be built.
        source: StoreError,
    },
    /// The limiter refused the policies.
    #[error("policies: {0}")]
    Limiter(#[from] tollgate::limiter::BuildError),
}

/// The longest a shutdown or a reload waits for leases to go back to Redis. Returning
/// is one script call per leased key; a Redis that does not answer within this must not
/// hold the exit, and what it did not take back is lost only until the lease's
/// `max_age` would have returned it anyway.
pub const RETURN_LEASES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Runtime {
    /// Gives this runtime's unused leased units back to the shared store, waiting at
    /// most [`RETURN_LEASES_TIMEOUT`]. Called once no request uses the runtime any
    /// more: after the drain on SIGTERM, and for the replaced runtime after a reload
    /// (its limiter, and the leases it holds, serve no new request).
    pub async fn return_leases(&self) {
        if tokio::time::timeout(RETURN_LEASES_TIMEOUT, self.limiter.return_leases())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?RETURN_LEASES_TIMEOUT,
                "returning leases timed out: units not given back stay stranded until their lease's max age"
            );
        }
    }

    /// Adds the rate-limit headers this runtime sends for `decision`.
    pub fn layer_headers(&self, decision: &tollgate::Decision, headers: &mut http::HeaderMap) {
        tollgate::response::insert_rate_limit_headers(
            headers,
            decision,
            self.config.limiter.headers,
        );
    }

    /// Builds the runtime for `config`, reusing the store from `stores` if unchanged.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when the store or limiter cannot be created.
    pub fn build(config: Config, stores: &Stores) -> Result<Self, BuildError> {
        let store = stores
            .get(&config.store)
            .map_err(|source| BuildError::Store {
                field: store_field(&config.store),
                source,
            })?;
        let l = &config.limiter;
        let limiter = RateLimiter::builder()
            .shared_store(store)
            .policies(config.policies.iter().cloned())
            .failure_mode(l.failure_mode)
            .timeout(l.timeout)
            .deny_cache(l.deny_cache)
            .shadow(l.shadow)
            // One recorder per process: the label keeps this sidecar's series apart.
            .metric_label("node", config.node_id.clone())
            .lease(
                LeaseConfig::new()
                    .target(config.lease.target)
                    .max_fraction(config.lease.max_fraction)
                    .max_age(config.lease.max_age),
            )
            .build()?;
        let layer = RateLimitLayer::new(limiter.clone()).headers(l.headers);
        let stack = layer.layer(Proxy::new(&config));
        Ok(Runtime {
            config: Arc::new(config),
            limiter,
            stack,
        })
    }
}
