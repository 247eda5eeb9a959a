//! `tollgate-sidecar`: a reverse proxy that enforces Tollgate limits in front of
//! services that cannot change their own code.
//!
//! # Layout
//!
//! - [`cli`]: flags and their environment twins, turned into a
//!   [`ConfigSource`] (only `main` uses it).
//! - [`config`]: the TOML model, its validation (every error names its field) and the
//!   [`ConfigSource`] that produces it again on reload.
//! - [`runtime`]: what a configuration builds — the `tollgate` layer over the
//!   [`proxy`] — swapped atomically on [`reload`].
//! - [`proxy`]: routing, round-robin upstreams, hop-by-hop headers, 502/504.
//! - [`server`]: the accept loop (HTTP/1.1 + h2c) and its graceful drain.
//! - [`admin`]: `/health`, `/ready`, `/metrics`, `/config`, `POST /check`.
//! - [`rls`]: Envoy's rate limit service (`--rls-listen`), configured with
//!   envoyproxy/ratelimit's YAML, on the same limiter.
//! - [`telemetry`]: logs, the metrics recorder and the sidecar's metric families.
//! - [`demo`]: the demo upstream.
//!
//! The sidecar uses only `tollgate`'s public API: it is a library user like any other.
//!
//! # Lifecycle
//!
//! [`Sidecar::bind`] validates nothing more (the configuration is already validated),
//! sets up the metrics recorder ([`telemetry::Recorder`]), builds the runtime and binds
//! its ports (the proxy unless it is off, the admin port, the rate limit service if
//! configured); [`Sidecar::with_reload`] names the [`ConfigSource`]
//! to reload from; [`Sidecar::run`] serves until the shutdown
//! future resolves, then reports not-ready, stops accepting, drains in-flight requests
//! within the grace period, gives unused leased units back to Redis and returns.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod proxy;
pub mod reload;
pub mod rls;
pub mod runtime;
pub mod server;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::config::{Config, ConfigSource};
use crate::runtime::{Runtime, Shared, Stores};
use crate::telemetry::{Exposition, Recorder};

/// A sidecar with its ports bound, ready to [`run`](Sidecar::run).
pub struct Sidecar {
    /// `None` when the proxy is off (no upstream, rate limit service only).
    proxy: Option<TcpListener>,
    admin: TcpListener,
    /// Envoy's rate limit service, when configured.
    rls: Option<TcpListener>,
    state: Shared,
    stores: Arc<Stores>,
    metrics: Exposition,
    serving: Arc<AtomicBool>,
    /// Where to reload from on SIGHUP or file change; `None`: never reload.
    reload: Option<ConfigSource>,
}

impl Sidecar {
    /// Builds the runtime for `config` and binds its two ports. It is not reloaded
    /// unless told where from, with [`with_reload`](Self::with_reload).
    ///
    /// Metrics go to a Prometheus recorder installed once per process
    /// ([`Recorder::InstallPrometheus`]); several sidecars in one process share it, their
    /// series told apart by `node`. An application with its own recorder uses
    /// [`bind_with_recorder`](Self::bind_with_recorder).
    ///
    /// # Errors
    ///
    /// When the runtime cannot be built or a port cannot be bound, and
    /// [`MetricsError::ForeignRecorder`](telemetry::MetricsError::ForeignRecorder) when
    /// the process already has another `metrics` recorder.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        Self::bind_with_recorder(config, Recorder::default()).await
    }

    /// [`bind`](Self::bind), with metrics recorded as `recorder` says.
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind); the metrics error only with
    /// [`Recorder::InstallPrometheus`].
    pub async fn bind_with_recorder(config: Config, recorder: Recorder) -> anyhow::Result<Self> {
        let metrics = telemetry::setup(recorder)?;
        let stores = Arc::new(Stores::default());
        let (listen, admin_listen) = (config.listen, config.admin_listen);
        let (proxy_enabled, rls_listen) =
            (config.proxy_enabled, config.rls.as_ref().map(|r| r.listen));
        let runtime = Runtime::build(config, &stores)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))
        };
        let proxy = match proxy_enabled {
            true => Some(bind(listen).await?),
            false => None,
        };
        let admin = bind(admin_listen).await?;
        let rls = match rls_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Sidecar {
            proxy,
            admin,
            rls,
            state: Arc::new(ArcSwap::from_pointee(runtime)),
            stores,
            metrics,
            serving: Arc::new(AtomicBool::new(true)),
            reload: None,
        })
    }

    /// Reloads from `source` on SIGHUP and whenever its file changes, while running.
    /// `source` should be what produced the configuration given to
    /// [`bind`](Self::bind); a reload that would change the addresses or the node is
    /// refused ([`reload::reload`]).
    #[must_use]
    pub fn with_reload(mut self, source: ConfigSource) -> Self {
        self.reload = Some(source);
        self
    }

    /// The proxy's bound address.
    ///
    /// # Errors
    ///
    /// `NotConnected` when the proxy is off (no upstream, rate limit service only).
    pub fn proxy_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.proxy {
            Some(proxy) => proxy.local_addr(),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the proxy is off: no upstream is configured",
            )),
        }
    }

    /// The rate limit service's bound address, when it is configured.
    pub fn rls_addr(&self) -> Option<SocketAddr> {
        self.rls.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The admin server's bound address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// The current runtime cell (tests and the admin server read it).
    pub fn state(&self) -> Shared {
        self.state.clone()
    }

    /// The store cache, for reloading by hand.
    pub fn stores(&self) -> Arc<Stores> {
        self.stores.clone()
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    ///
    /// # Errors
    ///
    /// When the admin server fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let runtime = self.state.load_full();
        let show = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or_else(|| "off".to_owned(), |a| a.to_string())
        };
        tracing::info!(
            proxy = %show(&self.proxy),
            admin = %self.admin.local_addr()?,
            rls = %show(&self.rls),
            store = runtime.limiter.store_kind(),
            node = %runtime.config.node_id,
            policies = runtime.limiter.policies().len(),
            "tollgate-sidecar serving"
        );
        drop(runtime);

        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = axum::serve(
            self.admin,
            admin::router(admin::AdminState {
                runtime: self.state.clone(),
                metrics: self.metrics,
                serving: self.serving.clone(),
            }),
        )
        .with_graceful_shutdown(async {
            let _ = admin_stopped.await;
        });
        let admin = tokio::spawn(async move { admin.await });
        let watcher = self.reload.map(|source| {
            tokio::spawn(reload::watch(
                source,
                self.state.clone(),
                self.stores.clone(),
            ))
        });

        // Told once the shutdown begins, so the RLS drains alongside the proxy.
        let (stop_rls, rls_stopped) = tokio::sync::watch::channel(false);
        let rls = self.rls.map(|listener| {
            let grace = runtime_grace(&self.state);
            let mut stopped = rls_stopped.clone();
            tokio::spawn(rls::serve(
                listener,
                self.state.clone(),
                grace,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });
        let serving = self.serving.clone();
        let shutdown = async move {
            shutdown.await;
            // Not ready first, so balancers stop sending before the drain starts.
            serving.store(false, Ordering::Release);
            tracing::info!("shutdown requested");
            let _ = stop_rls.send(true);
        };
        match self.proxy {
            Some(proxy) => server::serve(proxy, self.state.clone(), shutdown).await,
            None => shutdown.await,
        }
        if let Some(rls) = rls {
            match rls.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "rate limit service ended with an error"),
                Err(e) => tracing::warn!(error = %e, "rate limit service task failed"),
            }
        }

        if let Some(watcher) = watcher {
            watcher.abort();
        }
        // Every request has been answered: what this node leased and did not spend
        // goes back, so the other nodes can spend it (bounded, see `return_leases`).
        self.state.load_full().return_leases().await;
        let _ = stop_admin.send(());
        admin.await.context("admin server task")??;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The drain time in force.
fn runtime_grace(state: &Shared) -> std::time::Duration {
    state.load().config.proxy.shutdown_grace
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
