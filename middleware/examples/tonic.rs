//! A tonic gRPC server (the standard health service) behind Tollgate.
//!
//! ```text
//! cargo run -p tollgate --features tonic --example tonic
//! grpcurl -plaintext -H 'x-api-key: demo' 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! Refused calls end with `RESOURCE_EXHAUSTED` and the `RateLimit` headers as metadata.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream_shim::incoming;
use tollgate::key::Key;
use tollgate::policy::{MissingKey, Policy};
use tollgate::{RateLimitLayer, RateLimiter};
use tonic::transport::Server;
use tonic_health::ServingStatus;

/// Three calls per minute per API key; calls without a key share one bucket.
pub fn limiter() -> Result<RateLimiter, Box<dyn std::error::Error>> {
    let policy = Policy::single("per-key", "3/m".parse()?, Key::header("x-api-key"))
        .missing_key(MissingKey::Fallback("anonymous".into()));
    Ok(RateLimiter::builder().policy(policy).build()?)
}

/// Serves the health service on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    limiter: RateLimiter,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    Server::builder()
        .layer(RateLimitLayer::new(limiter))
        .add_service(health)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// A `Stream` of accepted connections, as tonic's `serve_with_incoming` wants.
mod tokio_stream_shim {
    use tokio::net::{TcpListener, TcpStream};

    pub fn incoming(
        listener: TcpListener,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<TcpStream>> {
        tokio_stream::wrappers::TcpListenerStream::new(listener)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:50051".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("gRPC health service on {}", listener.local_addr()?);
    serve(listener, limiter()?, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
