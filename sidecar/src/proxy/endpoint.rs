//! Keep-alive connections to HTTP/1.1 upstream endpoints.
//!
//! hyper-util's general-purpose pooled client costs, per request, a pool lock keyed by
//! authority, channel hops and — because the sidecar streams response bodies — an extra
//! spawned task to put the connection back (measured in `docs/benchmarks.md`). A proxy
//! knows its endpoints up front, so each endpoint gets a plain stack of idle
//! [`SendRequest`] handles from hyper's connection-level API:
//!
//! - a request takes an idle connection that is ready (or dials a new one, bounded by the
//!   connect timeout);
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
    /// Polled again after it finished (a caller's bug, answered rather than a panic).
    #[error("polled after completion")]
    Polled,
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

struct Idle {
    sender: SendRequest<Incoming>,
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

    fn pop_idle(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < self.idle_timeout && !conn.sender.is_closed() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// An idle connection ready for a request. A connection goes back to the stack the
    /// moment its last body frame is read, a moment before its task marks it ready
    /// again, so readiness is awaited here (briefly) rather than demanded there.
    async fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        while let Some(mut sender) = self.pop_idle() {
            // Usually ready already: no timer armed on the common path.
            if sender.is_ready() {
                return Some(sender);
            }
            // Boxed: the timer would otherwise sit in every request's future.
            let ready = Box::pin(tokio::time::timeout(
                Duration::from_millis(100),
                sender.ready(),
            ));
            if let Ok(Ok(())) = ready.await {
                return Some(sender);
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<Incoming>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, SendError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
                .await
                .map_err(|_| SendError::ConnectTimeout(self.authority.clone()))?
                .map_err(|source| SendError::Connect {
                    authority: self.authority.clone(),
                    source,
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A connection for the next request: an idle one, or a new one.
    ///
    /// # Errors
    ///
    /// The connection could not be made (nothing was sent: the caller may try another
    /// endpoint).
    pub(super) async fn acquire(&self) -> Result<Conn, SendError> {
        if let Some(sender) = self.take_idle().await {
            return Ok(Conn {
                sender,
                fresh: false,
            });
        }
        // Boxed: dialling is rare next to reusing, and its future (connect, handshake,
        // timeout) would otherwise enlarge every request's future.
        let sender = Box::pin(self.connect()).await?;
        Ok(Conn {
            sender,
            fresh: true,
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) on `conn` and returns the response,
    /// whose body returns the connection to this endpoint when read to its end.
    ///
    /// A request hyper could not even start on a pooled connection (the upstream closed
    /// it meanwhile) is sent once more on a new one: none of it reached the upstream.
    ///
    /// # Errors
    ///
    /// The failure, with the request handed back when none of it was sent (that new
    /// connection could not be made), so the caller may try another endpoint.
    pub(super) fn send_on(
        self: &Arc<Self>,
        conn: Conn,
        request: Request<Incoming>,
    ) -> SendOn<impl Future<Output = HyperAnswer> + Send + 'static> {
        // The request goes to hyper's connection task here, so the returned future does
        // not keep a slot for it.
        let Conn { mut sender, fresh } = conn;
        SendOn {
            sent: sender.try_send_request(request),
            home: Some((sender, self.clone())),
            fresh,
            retry: None,
        }
    }

    /// [`send_on`](Self::send_on) on a new connection, for a request a pooled one could
    /// not start.
    async fn send_fresh(
        self: &Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<PooledBody>, Unsent> {
        let mut sender = match self.connect().await {
            Ok(sender) => sender,
            Err(e) => return Err((e, Some(request))),
        };
        let response = sender
            .try_send_request(request)
            .await
            .map_err(|e| (SendError::Http(e.into_error()), None))?;
        Ok(self.pooled(response, sender))
    }

    /// `response`, whose body takes `sender` home to this endpoint at its end.
    fn pooled(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<Incoming>,
    ) -> Response<PooledBody> {
        let endpoint = self.clone();
        response.map(|body| {
            let mut body = PooledBody {
                body,
                home: Some((sender, endpoint)),
            };
            // An empty body (HEAD, 204, 304) may never be polled.
            if body.body.is_end_stream() {
                body.release();
            }
            body
        })
    }
}

/// The future of [`Endpoint::send_on`]: hyper's answer, then the response whose body
/// takes the connection home.
///
/// A named future rather than an `async` block, which would keep hyper's future twice
/// (once captured, once being awaited) and the request once more for the retry: this
/// one is a few words, so every request's boxed future stays small.
#[pin_project::pin_project]
pub(super) struct SendOn<F> {
    #[pin]
    sent: F,
    home: Option<(SendRequest<Incoming>, Arc<Endpoint>)>,
    fresh: bool,
    /// The retry on a new connection, once hyper handed the request back unsent.
    retry: Option<Retry>,
}

/// The boxed retry of a [`SendOn`].
type Retry = Pin<Box<dyn Future<Output = Result<Response<PooledBody>, Unsent>> + Send>>;

/// What hyper's `try_send_request` answers.
type HyperAnswer = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Incoming>>>;

impl<F: Future<Output = HyperAnswer>> Future for SendOn<F> {
    type Output = Result<Response<PooledBody>, Unsent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(retry) = this.retry.as_mut() {
            let answer = std::task::ready!(retry.as_mut().poll(cx));
            // Done: a later poll finds neither future and answers `Polled`.
            *this.retry = None;
            return Poll::Ready(answer);
        }
        // `home` is taken when hyper's future completes: without it (and without a
        // retry), this future has answered, and neither inner one may be polled again.
        if this.home.is_none() {
            return Poll::Ready(Err((SendError::Polled, None)));
        }
        let answer = std::task::ready!(this.sent.poll(cx));
        let Some((sender, endpoint)) = this.home.take() else {
            return Poll::Ready(Err((SendError::Polled, None)));
        };
        match answer {
            Ok(response) => Poll::Ready(Ok(endpoint.pooled(response, sender))),
            Err(mut e) => match e.take_message() {
                // Never started on a pooled connection: safe to try a fresh one.
                Some(unsent) if !*this.fresh => {
                    let mut retry = Box::pin(async move { endpoint.send_fresh(unsent).await });
                    let poll = retry.as_mut().poll(cx);
                    if poll.is_pending() {
                        *this.retry = Some(retry);
                    }
                    poll
                }
                _ => Poll::Ready(Err((SendError::Http(e.into_error()), None))),
            },
        }
    }
}

/// A failed send, with the request when none of it was sent.
pub(super) type Unsent = (SendError, Option<Request<Incoming>>);

/// A connection taken for one request.
pub(super) struct Conn {
    sender: SendRequest<Incoming>,
    /// Made for this request (not reused from the pool).
    fresh: bool,
}

/// An upstream response body that returns its connection to the pool at its end.
pub struct PooledBody {
    body: Incoming,
    home: Option<(SendRequest<Incoming>, Arc<Endpoint>)>,
}

impl PooledBody {
    /// A body with no connection to return (HTTP/2 upstreams multiplex instead).
    pub fn unpooled(body: Incoming) -> Self {
        PooledBody { body, home: None }
    }

    fn release(&mut self) {
        if let Some((sender, endpoint)) = self.home.take() {
            endpoint.put_back(sender);
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
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
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
