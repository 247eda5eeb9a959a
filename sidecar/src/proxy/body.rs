//! [`ProxyBody`]: a proxied response's body, holding the request's in-flight permit.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use tokio::sync::OwnedSemaphorePermit;

use super::PooledBody;

/// The body of a proxied response: the upstream's, streamed, or the proxy's own.
///
/// It carries the request's `max_concurrent_requests` permit, released when the body
/// has been read to its end or dropped: until then the request is still in flight.
pub struct ProxyBody {
    inner: Either<PooledBody, Full<Bytes>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl ProxyBody {
    /// `inner`, holding `permit` until its end.
    pub fn new(
        inner: Either<PooledBody, Full<Bytes>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let mut body = ProxyBody { inner, permit };
        // An empty body (HEAD, 204, 304) may never be polled.
        if body.inner.is_end_stream() {
            body.permit = None;
        }
        body
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) || this.inner.is_end_stream() {
            this.permit = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
