//! Forwarding: the innermost service of the sidecar's tower stack.
//!
//! [`Proxy`] routes a request (first route whose method and path prefix match), picks
//! the upstream's next endpoint round-robin, rewrites headers for the next hop and
//! sends it with a pooled keep-alive client. Bodies stream both ways: the request's
//! `Incoming` body becomes the upstream request body, and the upstream's response body
//! is handed back unread.
//!
//! Failures are answered, never raised: no route → `404`; upstream refuses or resets
//! the connection → `502`; no response head within the request timeout → `504`; more
//! than `max_concurrent_requests` in flight → `503`. Each gets a one-line body and a log
//! line (at most one warning a second, with the count of those suppressed).
//!
//! A request whose upstream connection could not even be made is sent once more, to
//! the next endpoint (or on a fresh connection to the only one), as nginx's
//! `proxy_next_upstream error` does: nothing of it reached an upstream, so the retry
//! cannot duplicate it. A dropped SYN (an upstream's full accept queue) is covered by
//! the connect timeout instead, which leaves room for the kernel's SYN retransmissions.
//!
//! A request holds its `max_concurrent_requests` permit until its response body has
//! been sent to the end (or dropped), not merely until the response head: a slow
//! download is still a request in flight.

mod body;
mod endpoint;
pub mod headers;
mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tollgate::key::PeerAddr;
use tollgate::limiter::LogThrottle;
use tollgate::policy::PathMatch;
use tower::Service;

use self::endpoint::SendError;
use self::upstream::{Clients, Upstream};
use crate::config::{Config, ProxyConfig, Route};
use crate::telemetry::{self, UPSTREAM_ERRORS, UPSTREAM_RETRIES};

pub use self::body::ProxyBody;
pub use self::endpoint::PooledBody;

/// Forwards requests to upstreams. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Vec<RouteMatcher>,
    upstreams: Vec<Upstream>,
    clients: Clients,
    config: ProxyConfig,
    in_flight: Arc<Semaphore>,
    /// One upstream-failure warning a second: an outage under load would otherwise
    /// write a line per request.
    log: LogThrottle,
    /// The `node` label of this sidecar's series.
    node: metrics::SharedString,
}

impl Proxy {
    /// A proxy for `config`'s routes and upstreams. The routes' matchers are built
    /// here, once per configuration, so that routing a request allocates nothing.
    pub fn new(config: &Config) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                routes: config.routes.iter().map(RouteMatcher::new).collect(),
                upstreams: config
                    .upstreams
                    .iter()
                    .map(|u| Upstream::new(u, &config.proxy, &config.node_id))
                    .collect(),
                clients: Clients::new(&config.proxy),
                config: config.proxy.clone(),
                in_flight: Arc::new(Semaphore::new(config.proxy.max_concurrent_requests)),
                log: LogThrottle::new(),
                node: telemetry::node_label(&config.node_id),
            }),
        }
    }
}

/// A [`Route`] ready to match requests.
struct RouteMatcher {
    /// Methods matched (all when `None`).
    methods: Option<Vec<Method>>,
    /// The path prefix, at a segment boundary: the same matching as policies' prefixes.
    path: PathMatch,
    /// Index into the proxy's upstreams.
    upstream: usize,
}

impl RouteMatcher {
    fn new(route: &Route) -> Self {
        RouteMatcher {
            methods: route.methods.clone(),
            path: PathMatch::prefix(route.path_prefix.as_str()),
            upstream: route.upstream,
        }
    }

    /// Whether the route serves this request.
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method)) && self.path.matches(path)
    }
}

/// A response the proxy writes itself.
pub fn local_response(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::new(
        Either::Right(Full::new(Bytes::from(format!("{message}\n")))),
        None,
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        // Everything that needs no waiting happens here, before the boxed future exists:
        // that future then holds the request once and little else. (Built as one
        // `async fn` doing both, it was 2.8 KB: the request stored at every nesting
        // level, two timers, the h2c and retry paths' states. Past glibc's per-thread
        // cache that costs a slow allocation and a 2.8 KB copy per request.)
        match self.inner.prepare(request) {
            Ok(mut forward) => {
                let inner = self.inner.clone();
                // The block owns the request; `send` borrows it. (An `async fn` taking
                // it by value would store it twice: as its argument and as a local.)
                Box::pin(async move { Ok(inner.send(&mut forward).await) })
            }
            Err(response) => Box::pin(std::future::ready(Ok(response))),
        }
    }
}

/// A request ready for its upstream: headers rewritten, URI in the upstream's form.
struct Forward {
    /// `None` only while hyper holds it (sent, or being sent).
    request: Option<Request<Incoming>>,
    upstream: usize,
    /// The endpoint's position in the upstream's list.
    endpoint: usize,
    /// Held by the response body once there is one.
    permit: Option<OwnedSemaphorePermit>,
    /// Whether the client named a host (else the upstream's authority is sent).
    had_host: bool,
}

impl Forward {
    /// The request, to hand to hyper. It is taken once per attempt and put back only
    /// when nothing of it was sent, so a second take without that is a bug of ours:
    /// answered as a failed request, not a panic.
    fn take_request(&mut self) -> Result<Request<Incoming>, Failure> {
        self.request.take().ok_or_else(|| Failure::Upstream {
            connect: false,
            error: "request already sent".into(),
        })
    }
}

/// Why a request got no response from its upstream.
enum Failure {
    /// No response head within the request timeout.
    Timeout,
    /// The upstream refused, reset or could not be reached (`connect`: not at all).
    Upstream { connect: bool, error: String },
}

impl Inner {
    /// Admission, routing and the header rewrite: everything before the upstream call.
    #[allow(clippy::result_large_err)] // the `Err` is the proxy's own answer, built rarely
    fn prepare(&self, mut request: Request<Incoming>) -> Result<Forward, Response<ProxyBody>> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            metrics::counter!(UPSTREAM_ERRORS, "node" => self.node.clone(), "upstream" => "", "kind" => "overloaded").increment(1);
            return Err(local_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "proxy overloaded: too many requests in flight",
            ));
        };
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.matches(request.method(), request.uri().path()))
        else {
            return Err(local_response(
                StatusCode::NOT_FOUND,
                "no route for this request",
            ));
        };
        let upstream = &self.upstreams[route.upstream];
        let endpoint_index = upstream.next_index();
        let endpoint = &upstream.endpoint(endpoint_index).0;

        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map(|PeerAddr(a): &PeerAddr| a.ip());
        let host = headers::original_host(request.headers(), request.uri());
        let wants_trailers = headers::strip_hop_by_hop(request.headers_mut());
        headers::add_forwarded(request.headers_mut(), peer, host.as_ref());
        if upstream.h2c && wants_trailers {
            headers::keep_trailers(request.headers_mut());
        }
        // Shares the request's bytes: no copy of the path.
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // HTTP/1.1 connections take the origin form (`/path?query`); the h2c client
        // wants the absolute URI to derive `:scheme` and `:authority`.
        let uri = if upstream.h2c {
            match upstream::target(endpoint, path) {
                Ok(uri) => uri,
                Err(e) => {
                    tracing::warn!(%e, "cannot build upstream URI");
                    return Err(local_response(
                        StatusCode::BAD_REQUEST,
                        "invalid request target",
                    ));
                }
            }
        } else {
            http::Uri::from(path)
        };
        *request.uri_mut() = uri;
        let had_host = host.is_some();
        if self.config.rewrite_host || host.is_none() {
            set_host(&mut request, endpoint);
        } else if !request.headers().contains_key(http::header::HOST) {
            // An HTTP/2 client names the host in `:authority`; HTTP/1.1 needs `Host`.
            if let Some(v) = host {
                request.headers_mut().insert(http::header::HOST, v);
            }
        }
        if upstream.h2c {
            request.headers_mut().remove(http::header::HOST);
            *request.version_mut() = Version::HTTP_2;
        } else {
            *request.version_mut() = Version::HTTP_11;
        }
        Ok(Forward {
            request: Some(request),
            upstream: route.upstream,
            endpoint: endpoint_index,
            permit: Some(permit),
            had_host,
        })
    }

    /// Sends a prepared request and answers with the upstream's response, or with the
    /// proxy's own `502`/`504`.
    async fn send(&self, forward: &mut Forward) -> Response<ProxyBody> {
        let upstream = &self.upstreams[forward.upstream];
        let started = Instant::now();
        // One timer for the whole exchange, however many steps it takes.
        let deadline = std::pin::pin!(tokio::time::sleep(self.config.request_timeout));
        let sent = if upstream.h2c {
            // Boxed: its future (hyper-util's client) would size every HTTP/1.1 request's.
            Box::pin(self.send_h2c(forward, deadline)).await
        } else {
            self.send_h1(forward, deadline).await
        };
        upstream.latency.record(started.elapsed().as_secs_f64());
        let endpoint = &upstream.endpoint(forward.endpoint).0;
        match sent {
            Ok(mut response) => {
                headers::strip_hop_by_hop(response.headers_mut());
                let permit = forward.permit.take();
                response.map(|body| ProxyBody::new(Either::Left(body), permit))
            }
            Err(Failure::Upstream { connect, error }) => {
                let kind = if connect { "connect" } else { "other" };
                metrics::counter!(UPSTREAM_ERRORS, "node" => self.node.clone(), "upstream" => upstream.name.clone(), "kind" => kind).increment(1);
                if let Some(suppressed) = self.log.permit() {
                    tracing::warn!(upstream = %upstream.name, %endpoint, %error, suppressed, "upstream failed");
                }
                local_response(StatusCode::BAD_GATEWAY, "upstream unavailable")
            }
            Err(Failure::Timeout) => {
                metrics::counter!(UPSTREAM_ERRORS, "node" => self.node.clone(), "upstream" => upstream.name.clone(), "kind" => "timeout").increment(1);
                if let Some(suppressed) = self.log.permit() {
                    tracing::warn!(upstream = %upstream.name, %endpoint, timeout = ?self.config.request_timeout, suppressed, "upstream timed out");
                }
                local_response(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
            }
        }
    }

    /// An HTTP/1.1 upstream: a pooled connection, the request, its response head.
    ///
    /// The request stays in `forward` until the moment it is handed to hyper, so this
    /// future holds a reference to it, never a copy.
    async fn send_h1(
        &self,
        forward: &mut Forward,
        mut deadline: Pin<&mut Sleep>,
    ) -> Result<Response<PooledBody>, Failure> {
        let upstream = &self.upstreams[forward.upstream];
        // A request none of which reached an upstream (it could not connect) goes once
        // more to the next endpoint, as nginx's `proxy_next_upstream error` does.
        let mut retried = false;
        loop {
            let endpoint = &upstream.endpoint(forward.endpoint).1;
            let error = match timeout_at(deadline.as_mut(), endpoint.acquire()).await? {
                Ok(conn) => {
                    let request = forward.take_request()?;
                    match timeout_at(deadline.as_mut(), endpoint.send_on(conn, request)).await? {
                        Ok(response) => return Ok(response),
                        Err((error, unsent)) => {
                            forward.request = unsent;
                            error
                        }
                    }
                }
                Err(error) => error,
            };
            if retried || !error.is_connect() || forward.request.is_none() {
                return Err(error.into());
            }
            retried = true;
            metrics::counter!(UPSTREAM_RETRIES, "node" => self.node.clone(), "upstream" => upstream.name.clone()).increment(1);
            tracing::debug!(upstream = %upstream.name, endpoint = %upstream.endpoint(forward.endpoint).0, %error, "connect failed; retrying on the next endpoint");
            forward.endpoint = upstream.next_index();
            if self.config.rewrite_host || !forward.had_host {
                if let Some(request) = forward.request.as_mut() {
                    set_host(request, &upstream.endpoint(forward.endpoint).0);
                }
            }
        }
    }

    /// An h2c upstream, through hyper-util's client (HTTP/2 multiplexes requests over
    /// one connection, which that client manages).
    async fn send_h2c(
        &self,
        forward: &mut Forward,
        mut deadline: Pin<&mut Sleep>,
    ) -> Result<Response<PooledBody>, Failure> {
        let request = forward.take_request()?;
        match timeout_at(deadline.as_mut(), self.clients.h2c().request(request)).await? {
            Ok(response) => Ok(response.map(PooledBody::unpooled)),
            Err(e) => Err(Failure::Upstream {
                connect: e.is_connect(),
                error: error_chain(&e),
            }),
        }
    }
}

/// Sets `Host` to `endpoint`'s authority.
fn set_host<B>(request: &mut Request<B>, endpoint: &http::Uri) {
    if let Some(authority) = endpoint.authority() {
        if let Ok(v) = http::HeaderValue::try_from(authority.as_str()) {
            request.headers_mut().insert(http::header::HOST, v);
        }
    }
}

/// `future`, bounded by the request's deadline: one timer shared by every step, where
/// `tokio::time::timeout` would put a timer in each step's future. A named future, not
/// an `async fn`, which would hold `future` twice (as its argument and pinned).
fn timeout_at<'a, F: Future>(deadline: Pin<&'a mut Sleep>, future: F) -> Bounded<'a, F> {
    Bounded { deadline, future }
}

#[pin_project::pin_project]
struct Bounded<'a, F> {
    deadline: Pin<&'a mut Sleep>,
    #[pin]
    future: F,
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.deadline
            .as_mut()
            .poll(cx)
            .map(|()| Err(Failure::Timeout))
    }
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Self {
        Failure::Upstream {
            connect: error.is_connect(),
            error: error_chain(&error),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_method_and_prefix_at_a_segment_boundary() {
        let route = RouteMatcher::new(&Route {
            methods: Some(vec![Method::GET]),
            path_prefix: "/api".into(),
            upstream: 0,
        });
        assert!(route.matches(&Method::GET, "/api"));
        assert!(route.matches(&Method::GET, "/api/users"));
        assert!(!route.matches(&Method::GET, "/apis"));
        assert!(!route.matches(&Method::POST, "/api"));
        let everything = RouteMatcher::new(&Route {
            methods: None,
            path_prefix: "/".into(),
            upstream: 0,
        });
        assert!(everything.matches(&Method::DELETE, "/anything/at/all"));
    }
}
