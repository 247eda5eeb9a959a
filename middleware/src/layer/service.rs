//! [`RateLimit`]: the service that decides before calling the inner one.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::ResponseBody;
use crate::response::Responder;
use crate::RateLimiter;

/// Rate-limits requests before they reach `S`. Built by [`super::RateLimitLayer`].
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    responder: Responder,
}

impl<S> RateLimit<S> {
    /// A [`RateLimitLayer`](super::RateLimitLayer) deciding with `limiter`, as
    /// tower-http's middlewares offer `Foo::layer`.
    pub fn layer(limiter: RateLimiter) -> super::RateLimitLayer {
        super::RateLimitLayer::new(limiter)
    }

    /// Wraps `inner`.
    pub fn new(inner: S, limiter: RateLimiter, responder: Responder) -> Self {
        RateLimit {
            inner,
            limiter,
            responder,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S>
where
    // `Clone` only: the boxed decision future holds the limiter and the pending
    // decision, never `S` or the request, so neither needs to be `Send + 'static`.
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        match self.limiter.check_now(&parts) {
            // Decided now: the ready service is called at once, no clone needed.
            Ok(decision) if decision.passes() => {
                let future = self.inner.call(Request::from_parts(parts, body));
                ResponseFuture::calling(future, decision, self.responder.clone())
            }
            Ok(decision) => ResponseFuture::refused(self.responder.reject(&decision, &parts)),
            Err(pending) => {
                // The service that was driven to readiness is the one that must be
                // called, later, after the store answers: keep it and leave a fresh
                // clone behind (tower's documented pattern).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let limiter = self.limiter.clone();
                let decision = Box::pin(async move { limiter.ask_store_owned(pending).await });
                ResponseFuture::deciding(
                    decision,
                    inner,
                    Request::from_parts(parts, body),
                    self.responder.clone(),
                )
            }
        }
    }
}
