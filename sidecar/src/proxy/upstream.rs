//! Upstream endpoints, round-robin, and the pooled clients that reach them.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::{PathAndQuery, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{ProxyConfig, Upstream};

pub(super) struct Pool {
    pub(super) name: String,
    endpoints: Vec<Uri>,
    next: AtomicUsize,
    pub(super) h2c: bool,
}

impl Pool {
    pub(super) fn new(upstream: &Upstream) -> Self {
        Pool {
            name: upstream.name.clone(),
            endpoints: upstream.endpoints.clone(),
            next: AtomicUsize::new(0),
            h2c: upstream.h2c,
        }
    }

    /// The next endpoint, round-robin.
    pub(super) fn next(&self) -> &Uri {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }
}

/// `endpoint` + the request's path and query.
pub(super) fn target(endpoint: &Uri, path: &str) -> Result<Uri, http::Error> {
    let mut parts = endpoint.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path)?);
    Ok(Uri::from_parts(parts)?)
}

type HttpClient = Client<HttpConnector, Incoming>;

/// One keep-alive pool for HTTP/1.1 upstreams and one for h2c upstreams.
pub(super) struct Clients {
    http1: HttpClient,
    h2c: HttpClient,
}

impl Clients {
    pub(super) fn new(config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let build = |h2: bool| {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_timeout)
                .http2_only(h2);
            builder.build(connector.clone())
        };
        Clients {
            http1: build(false),
            h2c: build(true),
        }
    }

    pub(super) fn for_pool(&self, pool: &Pool) -> &HttpClient {
        if pool.h2c {
            &self.h2c
        } else {
            &self.http1
        }
    }
}
