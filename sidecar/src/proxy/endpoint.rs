//! Keep-alive connections to HTTP/1.1 upstream endpoints.
//!
//! hyper-util's general-purpose pooled client costs, per request, a pool lock keyed by
//! authority, channel hops and — because the sidecar streams response bodies — an extra
//! spawned task to put the connection back (measured in `docs/benchmarks.md`). A proxy
//! knows its endpoints up front, so each endpoint gets a plain stack of idle
//! [`SendRequest`] handles from hyper's connection-level API:
//!
//! - a request takes an idle connection that is ready (or dials a new one, bounded by the
//!   connect timeout) and drives that connection's I/O in its own task: no task per
//!   connection, no hop between tasks per request;
//! - the connection rides along inside the response body ([`PooledBody`]) and goes back
//!   to the stack when the body has been read to its end — HTTP/1.1 cannot start the next
//!   request on it before; a body dropped early takes its connection with it;
//! - connections idle longer than the idle timeout, or closed by the upstream, are
//!   discarded when next looked at;
//! - a request that hyper could not even start sending on a pooled connection (the
//!   upstream closed it meanwhile) is retried once on a fresh one: nothing of it reached
//!   the upstream, so the retry cannot duplicate it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request could not be sent upstream.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// The TCP connection could not be made.
    #[error("connect to {authority}: {source}")]
    Connect {
        /// Where.
        authority: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP connection was not made within the connect timeout.
    #[error("connect to {0}: timed out")]
    ConnectTimeout(String),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

impl SendError {
    /// Whether the upstream could not be reached at all.
    pub(super) fn is_connect(&self) -> bool {
        matches!(
            self,
            SendError::Connect { .. } | SendError::ConnectTimeout(_)
        )
    }
}

type Io = TokioIo<TcpStream>;

/// One keep-alive connection: both halves of hyper's HTTP/1.1 client connection.
///
/// The [`Connection`](http1::Connection) half does the I/O. It is not given a task of its
/// own: whoever holds the pair polls it — the request's task while the request and its
/// response head are in flight, the response body while it streams. A request then never
/// crosses to another task and back (hyper's `SendRequest` channel is only a hand-over
/// within one task), which is where the wake-ups and context switches of the profile in
/// `docs/benchmarks.md` went.
struct Conn {
    sender: SendRequest<Incoming>,
    /// `None` once it has finished (closed or failed): the sender then fails too.
    io: Option<http1::Connection<Io, Incoming>>,
}

impl Conn {
    /// Drives the connection's I/O; `false` once it has finished. A finished
    /// connection is dropped at once, which fails whatever request it still held
    /// (hyper answers a dropped dispatcher's requests with an error).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(io) = &mut self.io {
            if let Poll::Ready(result) = Pin::new(io).poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
                self.io = None;
            }
        }
        self.io.is_some()
    }

    /// Drives the connection until it can take a request. `Ready(false)`: it cannot.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if !self.drive(cx) {
            return Poll::Ready(false);
        }
        match self.sender.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(true),
            Poll::Ready(Err(_)) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The idle connections of one endpoint.
pub(super) struct Endpoint {
    authority: String,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Endpoint {
    /// An endpoint reached at `uri`'s authority.
    pub(super) fn new(uri: &Uri, connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let authority = uri.authority().map_or_else(String::new, |a| {
            if a.port().is_some() {
                a.to_string()
            } else {
                format!("{a}:80")
            }
        });
        Arc::new(Endpoint {
            authority,
            idle: Mutex::new(Vec::new()),
            max_idle: 512,
            idle_timeout,
            connect_timeout,
        })
    }

    fn pop_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(idle) = idle.pop() {
            if idle.since.elapsed() < self.idle_timeout && !idle.conn.sender.is_closed() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// An idle connection ready for a request. Nobody polls a connection while it is
    /// idle, so a close by the upstream (or the last step of the previous exchange) is
    /// noticed here: the connection is driven once, and briefly awaited if it is not
    /// ready yet.
    async fn take_idle(&self) -> Option<Conn> {
        while let Some(mut conn) = self.pop_idle() {
            // Usually ready at the first poll: no timer armed on the common path.
            let ready = std::future::poll_fn(|cx| match conn.poll_ready(cx) {
                Poll::Ready(ready) => Poll::Ready(Some(ready)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let ready = match ready {
                Some(ready) => ready,
                None => tokio::time::timeout(
                    Duration::from_millis(100),
                    std::future::poll_fn(|cx| conn.poll_ready(cx)),
                )
                .await
                .unwrap_or(false),
            };
            if ready {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose response has ended. `cx` (the body's reader) drives
    /// it one last step; a connection that still cannot take a request then — it is
    /// still sending a request body the upstream answered before reading to its end —
    /// finishes in a task of its own, as a connection task would have, and comes back
    /// when it is ready.
    fn release(self: Arc<Self>, mut conn: Conn, cx: Option<&mut Context<'_>>) {
        let ready = match cx {
            Some(cx) => conn.poll_ready(cx),
            None if conn.sender.is_ready() => Poll::Ready(true),
            None => Poll::Pending,
        };
        match ready {
            Poll::Ready(true) => self.put_back(conn),
            Poll::Ready(false) => {}
            Poll::Pending => {
                // Outside a runtime (never in the sidecar) the connection is closed instead.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let timeout = self.idle_timeout;
                    runtime.spawn(async move {
                        let ready = std::future::poll_fn(|cx| conn.poll_ready(cx));
                        if let Ok(true) = tokio::time::timeout(timeout, ready).await {
                            self.put_back(conn);
                        }
                    });
                }
            }
        }
    }

    fn put_back(&self, conn: Conn) {
        if conn.io.is_none() || conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
                .await
                .map_err(|_| SendError::ConnectTimeout(self.authority.clone()))?
                .map_err(|source| SendError::Connect {
                    authority: self.authority.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, io) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            io: Some(io),
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) and returns the response, whose
    /// body returns the connection to this endpoint when read to its end.
    ///
    /// # Errors
    ///
    /// The failure, with the request handed back when none of it was sent (the
    /// connection could not be made), so the caller may try another endpoint.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
    ) -> Result<Response<PooledBody>, (SendError, Option<Request<Incoming>>)> {
        let mut fresh = false;
        loop {
            let mut conn = match self.take_idle().await {
                Some(conn) => conn,
                None => {
                    fresh = true;
                    match self.connect().await {
                        Ok(conn) => conn,
                        Err(e) => return Err((e, Some(request))),
                    }
                }
            };
            let mut response = std::pin::pin!(conn.sender.try_send_request(request));
            // The connection's I/O first, then the response: what the I/O just read is
            // then picked up in the same poll.
            let sent = std::future::poll_fn(|cx| {
                conn.drive(cx);
                response.as_mut().poll(cx)
            })
            .await;
            match sent {
                Ok(response) => {
                    let endpoint = self.clone();
                    return Ok(response.map(|body| {
                        let mut body = PooledBody {
                            body,
                            home: Some((conn, endpoint)),
                        };
                        // An empty body (HEAD, 204, 304) may never be polled.
                        if body.body.is_end_stream() {
                            body.release(None);
                        }
                        body
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never started on a pooled connection: safe to try a fresh one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err((SendError::Http(e.into_error()), None)),
                },
            }
        }
    }
}

/// An upstream response body that returns its connection to the pool at its end.
///
/// While it streams, the body also drives its connection's I/O (see [`Conn`]): the
/// upstream's bytes are read by whichever task reads this body.
pub struct PooledBody {
    body: Incoming,
    home: Option<(Conn, Arc<Endpoint>)>,
}

impl PooledBody {
    /// A body with no connection to return (HTTP/2 upstreams multiplex instead).
    pub fn unpooled(body: Incoming) -> Self {
        PooledBody { body, home: None }
    }

    fn release(&mut self, cx: Option<&mut Context<'_>>) {
        if let Some((conn, endpoint)) = self.home.take() {
            endpoint.release(conn, cx);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some((conn, _)) = &mut self.home {
            // A finished connection has already handed the body its end or error.
            conn.drive(cx);
        }
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.release(Some(cx)),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(Some(cx)),
            Poll::Ready(Some(Err(_))) => self.home = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
