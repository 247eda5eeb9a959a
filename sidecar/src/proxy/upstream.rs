//! An upstream: its endpoints used round-robin, and the h2c client that reaches them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::uri::{PathAndQuery, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::endpoint::Endpoint;
use crate::config::{self, ProxyConfig};
use crate::telemetry::{self, UPSTREAM_DURATION};

/// One upstream: its endpoints, each with its own connection pool, used round-robin.
pub(super) struct Upstream {
    pub(super) name: String,
    endpoints: Vec<(Uri, Arc<Endpoint>)>,
    next: AtomicUsize,
    pub(super) h2c: bool,
    /// Time to the upstream's response head, resolved once rather than per request.
    pub(super) latency: metrics::Histogram,
}

impl Upstream {
    pub(super) fn new(upstream: &config::Upstream, config: &ProxyConfig, node_id: &str) -> Self {
        Upstream {
            name: upstream.name.clone(),
            endpoints: upstream
                .endpoints
                .iter()
                .map(|uri| {
                    (
                        uri.clone(),
                        Endpoint::new(uri, config.connect_timeout, config.idle_timeout),
                    )
                })
                .collect(),
            next: AtomicUsize::new(0),
            h2c: upstream.h2c,
            latency: metrics::histogram!(UPSTREAM_DURATION, "node" => telemetry::node_label(node_id), "upstream" => upstream.name.clone()),
        }
    }

    /// The position of the next endpoint, round-robin.
    pub(super) fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len()
    }

    /// The endpoint at `index` (from [`next_index`](Self::next_index)).
    pub(super) fn endpoint(&self, index: usize) -> &(Uri, Arc<Endpoint>) {
        &self.endpoints[index % self.endpoints.len()]
    }
}

/// `endpoint` + the request's path and query.
pub(super) fn target(
    endpoint: &Uri,
    path: PathAndQuery,
) -> Result<Uri, http::uri::InvalidUriParts> {
    let mut parts = endpoint.clone().into_parts();
    parts.path_and_query = Some(path);
    Uri::from_parts(parts)
}

type HttpClient = Client<HttpConnector, Incoming>;

/// The client for h2c upstreams: HTTP/2 multiplexes requests over one connection, which
/// hyper-util's client manages well. (HTTP/1.1 upstreams use [`Endpoint`] pools.)
pub(super) struct Clients {
    h2c: HttpClient,
}

impl Clients {
    pub(super) fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .http2_only(true);
        Clients {
            h2c: builder.build(connector),
        }
    }

    pub(super) fn h2c(&self) -> &HttpClient {
        &self.h2c
    }
}
