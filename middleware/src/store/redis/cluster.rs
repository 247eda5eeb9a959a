//! Redis Cluster: redis-rs' own cluster client (`cluster-async`) — it keeps the slot
//! map, follows `MOVED` and `ASK` during resharding and refreshes the topology after a
//! failover; nothing here knows about slots beyond hash tags.
//!
//! The client retries a command a few times on redirections and lost connections, with
//! short waits, so a reshard costs a little latency, not an error. A retried script may
//! have run already (a timeout does not cancel it): retries can only over-count, never
//! admit more than a limit allows.

use std::time::Duration;

use redis::cluster::{ClusterClientBuilder, ClusterConfig};

use super::backend::Backend;
use super::store_error;
use crate::store::StoreError;

/// Connects lazily to the cluster behind `nodes`: the first command does.
pub(super) fn connect(
    nodes: &[String],
    response_timeout: Duration,
    connect_timeout: Duration,
    max_reconnect_delay: Duration,
) -> Result<Backend, StoreError> {
    if nodes.is_empty() {
        return Err(StoreError::config(
            "a Redis Cluster needs at least one seed node",
        ));
    }
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        // Enough for a MOVED, then an ASK, then a refreshed slot map during a
        // reshard; each wait is short so a dead primary's slots fail fast.
        .retries(3)
        .min_retry_wait(5)
        .max_retry_wait(millis(max_reconnect_delay).min(100))
        .connection_timeout(connect_timeout)
        .response_timeout(response_timeout)
        // Each attempt is bounded by the response timeout; the limiter's own timeout
        // bounds the whole decision, retries included.
        .overall_response_timeout(None)
        .build()
        .map_err(store_error)?;
    let config = ClusterConfig::new()
        .set_connection_timeout(connect_timeout)
        .set_response_timeout(response_timeout);
    Ok(Backend::Cluster(
        client.get_pending_async_connection_with_config(config),
    ))
}
