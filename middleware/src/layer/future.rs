//! [`ResponseFuture`]: waits for a decision if needed, then for the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project::pin_project;
use tower_service::Service;

use super::ResponseBody;
use crate::limiter::Decision;
use crate::response::Responder;

type DecisionFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// The response future of [`super::RateLimit`].
#[pin_project]
pub struct ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    #[pin]
    state: State<S, ReqBody>,
}

#[pin_project(project = StateProj)]
enum State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Waiting for the store; the service and request wait with it.
    Deciding {
        decision: DecisionFuture,
        call: Option<(S, Request<ReqBody>)>,
        responder: Responder,
    },
    /// The request passed; waiting for the inner service.
    Calling {
        #[pin]
        future: S::Future,
        decision: Decision,
        responder: Responder,
    },
    /// Refused: the response is ready.
    Refused { response: Option<Response<Bytes>> },
}

impl<S, ReqBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn deciding(
        decision: DecisionFuture,
        service: S,
        request: Request<ReqBody>,
        responder: Responder,
    ) -> Self {
        ResponseFuture {
            state: State::Deciding {
                decision,
                call: Some((service, request)),
                responder,
            },
        }
    }

    pub(super) fn calling(future: S::Future, decision: Decision, responder: Responder) -> Self {
        ResponseFuture {
            state: State::Calling {
                future,
                decision,
                responder,
            },
        }
    }

    pub(super) fn refused(response: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding {
                    decision,
                    call,
                    responder,
                } => {
                    let decision = ready!(decision.as_mut().poll(cx));
                    let (mut service, request) = call
                        .take()
                        .expect("the state leaves Deciding when the call is taken");
                    let responder = responder.clone();
                    if decision.passes() {
                        let future = service.call(request);
                        this.state.set(State::Calling {
                            future,
                            decision,
                            responder,
                        });
                    } else {
                        let (parts, _) = request.into_parts();
                        let response = responder.reject(&decision, &parts);
                        this.state.set(State::Refused {
                            response: Some(response),
                        });
                    }
                }
                StateProj::Calling {
                    future,
                    decision,
                    responder,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    responder.decorate(decision, response.headers_mut());
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response
                        .take()
                        .expect("a future is not polled after it completed");
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            }
        }
    }
}
