//! Connections: a pool of HTTP/1.1 keep-alive connections per target, each driven by a worker.
//!
//! Every target has a queue of [`Job`]s and up to `CONNECTIONS` workers. A worker owns one
//! connection (opened lazily, reopened after the server closes it or a request times out) and
//! sends one job at a time on it, because HTTP/1.1 without pipelining carries one request at a
//! time. The scheduler pushes a job and opens another worker only when more jobs are queued
//! than workers are idle, so a slow target gets more connections and a fast one stays with
//! few — and none is opened per request, which would measure TCP setup instead of the limiter.
//!
//! Workers record each outcome straight into the [`Recorder`]: no task or channel per
//! request, which is what lets the loadgen outrun the servers it measures.
//!
//! Each job must finish within `REQUEST_TIMEOUT_MS` of its *intended* send time; a job that
//! waited in the queue past that fails as `timeout` without being sent. So every request's
//! lifetime is bounded, whatever happens to the target.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::config::Target;
use crate::keys::KeyId;
use crate::outcome::{classify, FailReason, Outcome};
use crate::stats::Recorder;

/// One request on its way to a target.
#[derive(Debug)]
pub struct Job {
    /// The request, in origin form with a `Host` header.
    pub request: Request<Full<Bytes>>,
    /// Its key, for per-key counts.
    pub key: KeyId,
    /// Its intended send time: latency and the timeout are measured from here.
    pub intended: Instant,
    /// Its in-flight slot, released once the outcome is recorded.
    pub permit: OwnedSemaphorePermit,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("TCP connect failed: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Settings every worker needs.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections per target.
    pub connections: usize,
    /// Bound on a request's life from its intended send time.
    pub timeout: Duration,
    /// The run's start, for the time of the last response.
    pub start: Instant,
}

/// The pools of all targets.
#[derive(Debug)]
pub struct Pools {
    targets: Vec<TargetPool>,
}

#[derive(Debug)]
struct TargetPool {
    queue: async_channel::Sender<Job>,
    shared: Arc<Shared>,
}

/// State shared by one target's workers.
#[derive(Debug)]
struct Shared {
    target: usize,
    host: String,
    port: u16,
    jobs: async_channel::Receiver<Job>,
    /// Workers waiting for a job (a new worker counts as idle from the start).
    idle: AtomicUsize,
    /// Workers started.
    open: AtomicUsize,
    settings: PoolSettings,
    recorder: Arc<Recorder>,
}

impl Pools {
    /// Pools for `targets` (validated base URLs); nothing connects until the first job.
    pub fn new(targets: &[Target], settings: PoolSettings, recorder: Arc<Recorder>) -> Self {
        let targets = targets
            .iter()
            .enumerate()
            .map(|(target, t)| {
                let (queue, jobs) = async_channel::unbounded();
                let shared = Shared {
                    target,
                    host: t.host.clone(),
                    port: t.port,
                    jobs,
                    idle: AtomicUsize::new(0),
                    open: AtomicUsize::new(0),
                    settings: settings.clone(),
                    recorder: Arc::clone(&recorder),
                };
                TargetPool {
                    queue,
                    shared: Arc::new(shared),
                }
            })
            .collect();
        Pools { targets }
    }

    /// Queues `job` for `target`, starting a worker if the queue outgrows the idle ones.
    ///
    /// The number of queued jobs is bounded by the caller's in-flight semaphore.
    pub fn submit(&self, target: usize, job: Job) {
        let pool = &self.targets[target];
        // The pool's `Shared` holds a receiver, so the channel is open as long as `self` is.
        if let Err(e) = pool.queue.try_send(job) {
            let job = e.into_inner();
            pool.shared.recorder.finished(
                target,
                job.key,
                Outcome::Failed(FailReason::Overload),
                None,
                None,
            );
            return;
        }
        let shared = &pool.shared;
        // Only the scheduler starts workers, so this check-then-increment does not race.
        let open = shared.open.load(Relaxed);
        if pool.queue.len() > shared.idle.load(Relaxed) && open < shared.settings.connections {
            shared.open.store(open + 1, Relaxed);
            shared.idle.fetch_add(1, Relaxed);
            tokio::spawn(worker(Arc::clone(shared)));
        }
    }

    /// Connections (workers) opened so far, per target.
    pub fn connections(&self) -> Vec<usize> {
        self.targets
            .iter()
            .map(|p| p.shared.open.load(Relaxed))
            .collect()
    }
}

/// An open connection: the handle requests are sent through and the future that does the I/O.
///
/// The worker polls `driver` itself instead of spawning it as hyper's examples do: the request,
/// the connection and the response then live in one task, which saves two cross-task wake-ups
/// per request — the difference between keeping up with `wrk` and not.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
}

/// Sends jobs one at a time on one connection until the pool is dropped and the queue is empty.
async fn worker(shared: Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    loop {
        let job = match conn.as_mut() {
            // Keep driving an idle connection, so a close by the server is noticed now.
            Some(c) => tokio::select! {
                biased;
                job = shared.jobs.recv() => job,
                _ = &mut c.driver => {
                    conn = None;
                    continue;
                }
            },
            None => shared.jobs.recv().await,
        };
        let Ok(job) = job else { break };
        shared.idle.fetch_sub(1, Relaxed);
        let deadline = job.intended + shared.settings.timeout;
        let exchange = exchange(&mut conn, job.request, &shared);
        let (outcome, status) = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => {
                // An abandoned HTTP/1.1 exchange leaves the connection unusable: open a fresh one.
                conn = None;
                (Outcome::Failed(FailReason::Timeout), None)
            }
        };
        let now = Instant::now();
        let timing = status.map(|_| {
            (
                now.duration_since(job.intended),
                now.duration_since(shared.settings.start),
            )
        });
        shared
            .recorder
            .finished(shared.target, job.key, outcome, status, timing);
        // Released only after counting, so a drained run has counted everything.
        drop(job.permit);
        shared.idle.fetch_add(1, Relaxed);
    }
}

/// How one attempt on a connection ended.
enum Attempt {
    /// A complete response with this status.
    Done(StatusCode),
    /// The connection was closed before the request was written: it can be sent again.
    /// Boxed because it is rare and the request is much larger than the other variants.
    Unsent(Box<Request<Full<Bytes>>>),
    /// The exchange broke after the request may have been written.
    Broken,
}

/// Sends `request` on `conn` (opening it if needed) and reads the whole response.
async fn exchange(
    conn: &mut Option<Conn>,
    mut request: Request<Full<Bytes>>,
    shared: &Shared,
) -> (Outcome, Option<StatusCode>) {
    // Two attempts: a kept-alive connection that the server closed while it was idle is not
    // the request's failure, so such a request is re-sent once on a fresh connection.
    for attempt in 0..2 {
        let c = match conn {
            Some(c) if !c.sender.is_closed() => c,
            _ => match connect(shared).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    *conn = None;
                    return (Outcome::Failed(FailReason::Connect), None);
                }
            },
        };
        let (result, alive) = {
            let mut send = std::pin::pin!(send_on(&mut c.sender, request));
            tokio::select! {
                biased;
                result = &mut send => (result, true),
                // The connection ended; hyper still resolves the exchange (response or error).
                _ = &mut c.driver => (send.await, false),
            }
        };
        if !alive {
            *conn = None;
        }
        match result {
            Attempt::Done(status) => return (classify(status), Some(status)),
            Attempt::Unsent(unsent) if attempt == 0 => {
                *conn = None;
                request = *unsent;
            }
            Attempt::Unsent(_) | Attempt::Broken => {
                *conn = None;
                return (Outcome::Failed(FailReason::Protocol), None);
            }
        }
    }
    (Outcome::Failed(FailReason::Protocol), None)
}

/// One attempt: send, then read the body to its end (latency is to the end of the body).
async fn send_on(sender: &mut SendRequest<Full<Bytes>>, request: Request<Full<Bytes>>) -> Attempt {
    if sender.ready().await.is_err() {
        return Attempt::Unsent(Box::new(request));
    }
    match sender.try_send_request(request).await {
        Ok(response) => {
            let status = response.status();
            // Frames are dropped as they come, not buffered.
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                if frame.is_err() {
                    return Attempt::Broken;
                }
            }
            Attempt::Done(status)
        }
        Err(mut e) => match e.take_message() {
            Some(unsent) => Attempt::Unsent(Box::new(unsent)),
            None => Attempt::Broken,
        },
    }
}

async fn connect(shared: &Shared) -> Result<Conn, ConnectError> {
    let stream = TcpStream::connect((shared.host.as_str(), shared.port)).await?;
    // Small requests must not wait for Nagle's algorithm: that would add latency we measure.
    stream.set_nodelay(true)?;
    let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
    Ok(Conn { sender, driver })
}
