//! One run: the open-loop scheduler, the drain, and assembling the [`Summary`].
//!
//! The scheduler is a single loop that owns the key picker and the position `i` in the
//! [`Schedule`]. Each turn it issues every request whose intended time `t_i` has passed —
//! handing it to the target's connection pool and never awaiting a response — then sleeps until the next
//! `t_i` (or the next phase switch, so `BURST MODE` is printed on time even at low rates).
//! At high rates tokio's millisecond timer makes this batch naturally; every request still
//! carries its own exact `t_i`, and latency is measured from it.
//!
//! In-flight requests hold a permit of a semaphore sized `MAX_IN_FLIGHT`. When none is left the
//! request is counted `Failed(overload)` at once: the schedule is never slowed down by a slow
//! server, which is what keeps the measurement honest. The same semaphore drains the run:
//! acquiring every permit means every request has finished.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{sleep_until, Instant};

use crate::accuracy::AccuracyReport;
use crate::config::Config;
use crate::console::Console;
use crate::keys::{KeyPicker, KeySpace};
use crate::outcome::{FailReason, Outcome};
use crate::pool::{Job, PoolSettings, Pools};
use crate::report::Reporter;
use crate::request::RequestFactory;
use crate::schedule::{Phase, Schedule};
use crate::stats::{latency_histogram, Percentiles, Recorder};
use crate::summary::{ClassSummary, PhaseChange, StopCause, Summary, TargetSummary};

/// Most requests issued in one scheduler turn before yielding, so a scheduler that fell
/// behind cannot starve the request tasks and the shutdown signal while it catches up.
const MAX_BATCH: u32 = 1024;
/// After the schedule ends, requests get at least their timeout plus this to finish.
const DRAIN_SLACK: Duration = Duration::from_millis(100);

/// Runs the load described by `config` until its duration elapses or `shutdown` completes,
/// drains in-flight requests, and returns the summary. Lines go to `console`.
///
/// Traffic goes only to `config.targets`; nothing here binds a socket.
pub async fn run(config: Config, console: Console, shutdown: impl Future<Output = ()>) -> Summary {
    let keys = KeySpace::new(config.keys, &config.key_prefix);
    let recorder = Arc::new(Recorder::new(config.targets.len(), keys.len()));
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let start = Instant::now();
    let settings = PoolSettings {
        connections: config.connections,
        timeout: config.request_timeout,
        start,
    };
    let scheduler = Scheduler {
        schedule: config.schedule,
        picker: KeyPicker::new(config.keys),
        targets: config.targets.len() as u64,
        recorder: Arc::clone(&recorder),
        factory: RequestFactory::new(&config, keys),
        pools: Pools::new(&config.targets, settings, Arc::clone(&recorder)),
        permits: Arc::clone(&permits),
        console: console.clone(),
        start,
        lag: latency_histogram(),
        phase: Phase::Steady,
        phases: Vec::new(),
    };
    console.line(&banner(&config));
    let reporter = Reporter::spawn(
        Arc::clone(&recorder),
        console.clone(),
        scheduler.start,
        config.stats_interval,
    );

    let (stopped_by, issue_window, scheduler) = scheduler.drive(config.duration, shutdown).await;

    // After a signal the user wants out quickly; after a normal end every request can still
    // finish within its own timeout, so wait that long and count nothing as aborted.
    let bound = match stopped_by {
        StopCause::Signal => config.drain_timeout,
        StopCause::Duration => config
            .drain_timeout
            .max(config.request_timeout + DRAIN_SLACK),
    };
    let all =
        u32::try_from(config.max_in_flight).expect("MAX_IN_FLIGHT is capped far below u32::MAX");
    if tokio::time::timeout(bound, permits.acquire_many(all))
        .await
        .is_err()
    {
        let left = config
            .max_in_flight
            .saturating_sub(permits.available_permits());
        console.line(&format!(
            "warning: {left} requests still in flight after {} ms; counted as failed (aborted)",
            bound.as_millis()
        ));
    }
    let finished = start.elapsed();
    reporter.stop().await;
    console.finish();

    let send_lag = Percentiles::of(&scheduler.lag);
    let connections = scheduler.pools.connections().iter().sum();
    // Dropping the pools closes their queues, so idle workers exit and close their connections.
    let Scheduler {
        factory,
        pools,
        phases,
        ..
    } = scheduler;
    drop(pools);
    Assembly {
        config: &config,
        recorder: &recorder,
        keys: factory.keys(),
    }
    .summary(
        stopped_by,
        issue_window,
        finished,
        send_lag,
        connections,
        phases,
    )
}

fn banner(config: &Config) -> String {
    let s = &config.schedule;
    let bursts = match s.burst() {
        Some(b) => format!(
            "bursts x{} for {} s every {} s",
            b.multiplier, b.duration, b.interval
        ),
        None => "no bursts".to_owned(),
    };
    let duration = config.duration.map_or("until stopped".to_owned(), |d| {
        format!("for {:.1} s", d.as_secs_f64())
    });
    format!(
        "tollgate-loadgen: {} mode, {} rps {duration}, {bursts}, keys {}, targets {}",
        config.mode.name(),
        s.rate(),
        config.keys,
        config
            .targets
            .iter()
            .map(|t| t.base.as_str())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// The scheduler's state; see the module docs.
struct Scheduler {
    schedule: Schedule,
    picker: KeyPicker,
    targets: u64,
    recorder: Arc<Recorder>,
    factory: RequestFactory,
    pools: Pools,
    permits: Arc<Semaphore>,
    console: Console,
    start: Instant,
    /// Dispatch delay behind `t_i`, in µs: shows whether the loadgen itself kept up.
    lag: hdrhistogram::Histogram<u64>,
    phase: Phase,
    phases: Vec<PhaseChange>,
}

impl Scheduler {
    /// Issues requests until `duration` or `shutdown`; returns why it stopped and for how long it issued.
    async fn drive(
        mut self,
        duration: Option<Duration>,
        shutdown: impl Future<Output = ()>,
    ) -> (StopCause, Duration, Self) {
        tokio::pin!(shutdown);
        let total = duration.map(|d| self.schedule.count_within(d));
        let mut i: u64 = 0;
        loop {
            let elapsed = self.start.elapsed();
            let mut batch = 0;
            while total.is_none_or(|n| i < n) && batch < MAX_BATCH {
                let t = self.schedule.send_time(i);
                if t > elapsed {
                    break;
                }
                self.enter(self.schedule.phase_at(t), t);
                self.issue(i, t);
                i += 1;
                batch += 1;
            }
            if batch == MAX_BATCH {
                tokio::task::yield_now().await;
                continue;
            }
            // Also catches a phase switch with no arrival yet (low rates).
            self.enter(self.schedule.phase_at(elapsed), elapsed);

            let wake = match total {
                // Everything is issued: wait out the rest of the run so it lasts DURATION.
                Some(n) if i >= n => duration.unwrap_or_default(),
                _ => {
                    let next = self.schedule.send_time(i);
                    self.schedule
                        .next_phase_change(elapsed)
                        .map_or(next, |p| p.min(next))
                }
            };
            if total.is_some_and(|n| i >= n) && elapsed >= wake {
                return (StopCause::Duration, elapsed, self);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => return (StopCause::Signal, self.start.elapsed(), self),
                () = sleep_until(self.start + wake) => {}
            }
        }
    }

    /// Records and announces a switch into `phase` at schedule time `at`.
    fn enter(&mut self, phase: Phase, at: Duration) {
        if phase == self.phase {
            return;
        }
        self.phase = phase;
        // Report the boundary itself, not the moment the loop noticed it.
        let at = self.schedule.phase_started(at);
        self.phases.push(PhaseChange {
            at_ms: at.as_secs_f64() * 1000.0,
            phase,
        });
        let rate = self.schedule.rate_at(at);
        self.console.line(&match phase {
            Phase::Burst => format!("BURST MODE: {rate:.1} rps"),
            Phase::Steady => format!("STEADY MODE: {rate:.1} rps"),
        });
    }

    /// Issues request `i`, intended for `t` after the start, without waiting for it.
    fn issue(&mut self, i: u64, t: Duration) {
        // `i % targets` is below the number of targets, which is a usize.
        let target = (i % self.targets) as usize;
        let key = self.picker.next_key();
        let intended = self.start + t;
        self.recorder.sent(target, key);
        let lag_us = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.lag.saturating_record(lag_us.max(1));

        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.recorder.finished(
                target,
                key,
                Outcome::Failed(FailReason::Overload),
                None,
                None,
            );
            return;
        };
        let request = self.factory.build(target, key);
        self.pools.submit(
            target,
            Job {
                request,
                key,
                intended,
                permit,
            },
        );
    }
}

/// Builds the summary from the recorder once the run is over.
struct Assembly<'a> {
    config: &'a Config,
    recorder: &'a Recorder,
    keys: &'a KeySpace,
}

impl Assembly<'_> {
    fn summary(
        &self,
        stopped_by: StopCause,
        issue_window: Duration,
        finished: Duration,
        send_lag: Percentiles,
        connections: usize,
        phases: Vec<PhaseChange>,
    ) -> Summary {
        let mut totals = self.recorder.totals();
        let mut reasons = self.recorder.reasons();
        // Whatever is unaccounted for was still in flight when the drain gave up.
        let aborted = totals.in_flight();
        totals.failed += aborted;
        reasons[FailReason::Aborted.index()] += aborted;

        // `D` for the accuracy bound: first intended send (the start) to the last response.
        let span = self
            .recorder
            .last_response()
            .map_or(issue_window, |last| last.max(issue_window));
        let per_key = self.recorder.keys();
        let accuracy = (!self.keys.is_empty()).then(|| {
            AccuracyReport::build(
                self.config.policy,
                span,
                per_key
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (self.keys.name(i), c.key_counts())),
            )
        });
        let per_key_class = match &accuracy {
            None => {
                let mut unique = ClassSummary::new("unique");
                unique.add(&totals);
                unique.keys = totals.sent;
                vec![unique]
            }
            Some(a) => {
                let mut over = ClassSummary::new("over_limit");
                let mut within = ClassSummary::new("within_limit");
                for c in per_key.iter().filter(|c| c.sent > 0) {
                    if c.sent > a.allowed_max_per_key {
                        over.add(c)
                    } else {
                        within.add(c)
                    }
                }
                vec![over, within]
            }
        };
        let secs = |d: Duration| d.as_secs_f64().max(f64::MIN_POSITIVE);
        Summary {
            mode: self.config.mode.name().to_owned(),
            keys: self.config.keys.to_string(),
            target_rps: self.config.schedule.rate(),
            stopped_by,
            duration_ms: finished.as_secs_f64() * 1000.0,
            issue_window_ms: issue_window.as_secs_f64() * 1000.0,
            requests: totals.sent,
            success: totals.success(),
            admitted: totals.admitted,
            blocked: totals.blocked,
            failed: totals.failed,
            failures: FailReason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), reasons[r.index()]))
                .collect(),
            statuses: self
                .recorder
                .statuses()
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            send_rps: totals.sent as f64 / secs(issue_window),
            achieved_rps: totals.success() as f64 / secs(span),
            latency_ms: self.recorder.total_latency(),
            send_lag_ms: send_lag,
            connections,
            per_target: self
                .config
                .targets
                .iter()
                .zip(self.recorder.targets())
                .map(|(target, c)| TargetSummary {
                    target: target.base.clone(),
                    requests: c.sent,
                    admitted: c.admitted,
                    blocked: c.blocked,
                    failed: c.failed + c.in_flight(),
                })
                .collect(),
            per_key_class,
            accuracy,
            phases,
        }
    }
}
