//! The proxy's accept loop: HTTP/1.1 and h2c on one port, drained on shutdown.
//!
//! Each connection is served by hyper-util's auto builder, which detects the HTTP/2
//! prior-knowledge preface and otherwise speaks HTTP/1.1. hyper enforces RFC 9112's
//! message framing (a request with both `Content-Length` and `Transfer-Encoding`, or
//! conflicting lengths, is refused), a request head must arrive within
//! `header_read_timeout` (slowloris) and fit in 64 KiB.
//!
//! On shutdown the listener closes first, then every connection is asked to finish
//! its in-flight requests (HTTP/1 stops keep-alive, HTTP/2 sends GOAWAY) within the
//! grace period; what is still running after it is cut, with a warning.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tollgate::key::PeerAddr;
use tollgate::layer::ResponseBody;
use tollgate::RateLimit;
use tower::ServiceExt;

use crate::proxy::{Proxy, ProxyBody};
use crate::runtime::Shared;
use crate::telemetry::{self, PROXY_IN_FLIGHT, PROXY_REQUESTS};

/// Per-status response counters, registered on first use and then reused, so a request
/// does not build a metric key (and allocate its label) each time.
struct StatusCounters {
    node: metrics::SharedString,
    by_code: Box<[OnceLock<metrics::Counter>]>,
}

impl StatusCounters {
    fn new(node: metrics::SharedString) -> Self {
        StatusCounters {
            node,
            by_code: (100..1000).map(|_| OnceLock::new()).collect(),
        }
    }

    fn count(&self, status: http::StatusCode) {
        // StatusCode is always within 100..=999.
        let slot = &self.by_code[usize::from(status.as_u16()) - 100];
        slot.get_or_init(|| {
            metrics::counter!(PROXY_REQUESTS, "node" => self.node.clone(), "status" => status.as_str().to_owned())
        })
        .increment(1);
    }
}

struct Meters {
    in_flight: metrics::Gauge,
    statuses: StatusCounters,
}

/// Counts a request in `tollgate_proxy_in_flight` from its head until its response
/// head, however the request ends.
struct InFlight<'a>(&'a metrics::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Answers one request with `stack`, the runtime's stack as loaded for it.
///
/// The request's own reference counts are kept few: each clone of an `Arc` shared by
/// every connection is an atomic on a cache line both worker threads write.
async fn handle(
    stack: RateLimit<Proxy>,
    meters: Arc<Meters>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody<ProxyBody>>, Infallible> {
    // A guard, not a decrement after the `.await`: a client that disconnects before
    // the response head drops this future, and the gauge must still come down.
    let _in_flight = InFlight::enter(&meters.in_flight);
    let response = stack.oneshot(request).await;
    if let Ok(response) = &response {
        meters.statuses.count(response.status());
    }
    response
}

/// hyper's connection settings, with `header_read_timeout` from the configuration.
fn connection_builder(header_read_timeout: Duration) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(64 * 1024);
    builder
}

/// Serves the proxy on `listener` until `shutdown` resolves, then drains.
///
/// `header_read_timeout` and `shutdown_grace` are read from the configuration in force:
/// a reload changes them for connections accepted after it, and for the drain.
pub async fn serve(listener: TcpListener, state: Shared, shutdown: impl Future<Output = ()>) {
    let mut header_read_timeout = state.load().config.proxy.header_read_timeout;
    let mut builder = connection_builder(header_read_timeout);
    let graceful = GracefulShutdown::new();
    // The node id cannot change on reload (it names this process's series), so the
    // meters are resolved once, from the configuration the sidecar started with.
    let node = telemetry::node_label(&state.load().config.node_id);
    let meters = Arc::new(Meters {
        in_flight: metrics::gauge!(PROXY_IN_FLIGHT, "node" => node.clone()),
        statuses: StatusCounters::new(node),
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and similar: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let configured = state.load().config.proxy.header_read_timeout;
        if configured != header_read_timeout {
            header_read_timeout = configured;
            builder = connection_builder(header_read_timeout);
        }
        let (state, meters) = (state.clone(), meters.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            // One load per request: a reload in the middle never splits a request. The
            // stack is cloned here, before the future, so the request holds the stack
            // (which owns all it uses) but neither the cell nor the whole `Runtime`:
            // two fewer shared counts to bump and drop. `load` borrows a guard (no
            // count in the common case) that ends with this statement, never held
            // across an `.await`, so it cannot hold up a reload's release of the old
            // runtime.
            let stack = state.load().stack.clone();
            handle(stack, meters.clone(), request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = state.load().config.proxy.shutdown_grace;
    tracing::info!(?grace, "draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing connections with requests still running");
    }
}
