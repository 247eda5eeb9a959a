//! Natural batching: concurrent decisions share one script call.
//!
//! Most of a decision's Redis CPU is the script call itself and its `redis.call`s, not
//! the arithmetic, so deciding many independent requests in one `EVALSHA` (one `TIME`,
//! one `MGET` for all their keys) costs Redis far less per decision than one call each.
//!
//! # No window, no timer
//!
//! The store counts its script calls in flight. A decision that finds none sends its
//! own call at once, from its own task: an unloaded request pays nothing for batching,
//! not even a hand-over to another task. A decision that finds a call in flight queues
//! itself instead; one driver task per store takes everything queued, up to
//! [`batch_max`](super::RedisStoreBuilder::batch_max) requests (and at most
//! [`MAX_KEYS`] keys), as one call, and again as long as requests keep queueing. So
//! under load the batch grows with the load and Redis CPU per decision falls, and no
//! request ever waits for a timer: at most for the call in flight ahead of it.
//!
//! # Failures and timeouts
//!
//! Each request in a batch is still decided atomically across its own limits (the
//! script decides them one after the other, see `decide.lua`). When the call fails,
//! every request in it gets the same [`StoreError`] (the limiter's failure mode then
//! answers each one). A request whose caller gave up (the limiter's timeout) before its
//! batch was sent is dropped from it, so it consumes nothing; once sent, its answer is
//! discarded and the others' are unaffected.
//!
//! The driver is spawned on the first decision, on the caller's Tokio runtime, and again
//! if that runtime went away (a test's runtime, a reload): the store itself needs no
//! runtime to be built.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use smallvec::SmallVec;
use tokio::sync::{mpsc, oneshot};

use super::{Mode, RedisStore};
use crate::algorithm::{LimitSpec, Verdict};
use crate::store::{Check, StoreError, StoreErrorKind, StoreFuture};

/// At most this many keys in one call: bounds the script's reply and the time one call
/// holds Redis (other clients wait while a script runs). A request with more keys than
/// this is sent alone.
pub(super) const MAX_KEYS: usize = 1024;

/// One queued decision: what the script needs, owned (it crosses to the driver task),
/// and where its answer goes.
struct Queued {
    /// Each limit's Redis key and spec; inline for the usual one-limit policy.
    limits: SmallVec<[(String, LimitSpec); 1]>,
    cost: u64,
    reply: oneshot::Sender<Result<Vec<Verdict>, StoreError>>,
}

/// The queue in front of one store's driver task.
pub(super) struct Batcher {
    max: usize,
    tx: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
    /// Script calls in flight, direct or batched (see the module docs).
    in_flight: Arc<AtomicUsize>,
}

/// Counts one call in flight until dropped: also when the caller's future is dropped
/// mid-call (the limiter's timeout), so the count never leaks.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Batcher {
    pub(super) fn new(max: usize) -> Self {
        Batcher {
            max,
            tx: Mutex::new(None),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Decides `checks` in the next batch of `store`.
    ///
    /// The returned future is small on purpose: a queued decision (the common case
    /// under load) only waits for its answer, so its future holds the receiver and
    /// nothing else. The direct call, which drives redis-rs' (much larger) futures,
    /// gets its own box, allocated only when nothing is in flight: a future sized for
    /// the largest path would cost every decision a large allocation and its moves.
    pub(super) fn submit<'a>(
        &'a self,
        store: &'a RedisStore,
        checks: &'a [Check],
        cost: u64,
    ) -> StoreFuture<'a, Vec<Verdict>> {
        Box::pin(async move {
            // Nothing in flight: this call is the only one, send it now from this task.
            if self
                .in_flight
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let _in_flight = InFlight(Arc::clone(&self.in_flight));
                return Box::pin(store.eval_plain(checks, cost)).await;
            }
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                limits: checks
                    .iter()
                    .map(|c| (store.redis_key(c), c.spec))
                    .collect(),
                cost,
                reply,
            };
            let Some(tx) = self.sender(store) else {
                // No Tokio runtime to run a driver on: decide in the caller's own task.
                return Box::pin(store.eval_plain(checks, cost)).await;
            };
            if let Err(mpsc::error::SendError(queued)) = tx.send(queued) {
                // The driver's runtime shut down between `sender` and here.
                let _ = queued;
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        })
    }

    /// The driver's queue, spawning the driver when there is none or it has stopped.
    fn sender(&self, store: &RedisStore) -> Option<mpsc::UnboundedSender<Queued>> {
        let mut tx = self
            .tx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(tx) = tx.as_ref().filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, rx) = mpsc::unbounded_channel();
        // The driver's store has no batcher: it must not hold its own queue open, or
        // it would outlive every handle to the store.
        let unbatched = RedisStore {
            batch: None,
            ..store.clone()
        };
        runtime.spawn(drive(unbatched, rx, self.max, Arc::clone(&self.in_flight)));
        *tx = Some(sender.clone());
        Some(sender)
    }
}

fn stopped() -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        "the Redis batching task stopped (its Tokio runtime shut down)",
    )
    .transient(true)
}

/// The driver: one call at a time, each taking what queued while the last was in flight.
async fn drive(
    store: RedisStore,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    max: usize,
    in_flight: Arc<AtomicUsize>,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(max);
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut keys = first.limits.len();
        batch.push(first);
        while batch.len() < max {
            let Ok(next) = rx.try_recv() else { break };
            if keys + next.limits.len() > MAX_KEYS {
                carried = Some(next);
                break;
            }
            keys += next.limits.len();
            batch.push(next);
        }
        // A caller that gave up before its batch left consumes nothing.
        batch.retain(|q| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let requests = batch.iter().map(|q| {
            (
                q.limits.iter().map(|(key, spec)| (key.as_str(), spec)),
                q.cost,
                Mode::Plain,
            )
        });
        let call = match store.prepare(requests) {
            Ok(call) => call,
            Err(error) => {
                answer_all(&mut batch, error);
                continue;
            }
        };
        let _in_flight = InFlight::enter(&in_flight);
        match store.send(call).await {
            Ok(answers) => {
                for (q, (verdicts, _)) in batch.drain(..).zip(answers) {
                    let _ = q.reply.send(Ok(verdicts));
                }
            }
            Err(error) => answer_all(&mut batch, error),
        }
    }
}

/// Fails every request of `batch` with `error`.
fn answer_all(batch: &mut Vec<Queued>, error: StoreError) {
    let errors = error.fan_out(batch.len());
    for (q, error) in batch.drain(..).zip(errors) {
        let _ = q.reply.send(Err(error));
    }
}
