//! `tollgate-demo-upstream`: the demo service the sidecar is put in front of.
//! `LISTEN` sets the address (default `0.0.0.0:3000`).
#![forbid(unsafe_code)]

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tollgate_sidecar::telemetry::init_logs();
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "demo upstream listening");
    tokio::select! {
        served = tollgate_sidecar::demo::serve(listener) => served,
        _ = tokio::signal::ctrl_c() => Ok(()),
        () = tollgate_sidecar::shutdown_signal() => Ok(()),
    }
}
