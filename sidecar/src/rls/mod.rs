//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`): a
//! drop-in for envoyproxy/ratelimit, configured with its own YAML files.
//!
//! Served on `--rls-listen` (gRPC over HTTP/2 cleartext), next to `grpc.health.v1`
//! (service `""` and `envoy.service.ratelimit.v3.RateLimitService`, both `SERVING`
//! until shutdown). The rules come from `--rls-config`, a YAML file or a directory of
//! them ([`config`]); they are part of the sidecar's [`Config`](crate::config::Config),
//! so they are validated before anything is bound and reloaded with it.
//!
//! - [`config`]: the YAML model, its validation (file, line, field) and matching.
//! - [`service`]: `ShouldRateLimit`, decided with the same limiter, store, failure mode
//!   and metrics as the proxy (`docs/envoy.md`).

pub mod config;
pub mod service;

use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use self::config::RlsConfig;
pub use self::service::RlsService;
use crate::runtime::Shared;

/// Serves the rate limit service and gRPC health on `listener` until `shutdown`
/// resolves; then reports not serving and lets in-flight calls finish within `grace`.
///
/// # Errors
///
/// When the gRPC server fails.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimitServiceServer<RlsService>>()
        .await;
    let service = RateLimitServiceServer::new(RlsService::new(state));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    health
        .set_not_serving::<RateLimitServiceServer<RlsService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("grace period over: closing rate limit service connections");
            Ok(())
        }
    }
}
