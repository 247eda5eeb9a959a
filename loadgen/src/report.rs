//! The live view: one stats line every `STATS_INTERVAL`, and the progress bar's message.
//!
//! The line keeps the demo's format,
//! `Requests: N | Success: N | Failed: N | Blocked: N | RPS: X.X | p50: … | p99: …`, where the
//! counts are cumulative (the story so far) and `RPS`, `p50`, `p99` cover the last interval
//! only, so a burst shows up in the line printed right after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{interval, interval_at, Instant, MissedTickBehavior};

use crate::console::Console;
use crate::stats::{CountSnapshot, Percentiles, Recorder};

/// How often the progress bar's message is refreshed.
const BAR_REFRESH: Duration = Duration::from_millis(250);

/// Formats the stats line.
pub fn stats_line(totals: &CountSnapshot, rps: f64, latency: &Percentiles) -> String {
    format!(
        "Requests: {} | Success: {} | Failed: {} | Blocked: {} | RPS: {:.1} | p50: {} | p99: {}",
        totals.sent,
        totals.success(),
        totals.failed,
        totals.blocked,
        rps,
        fmt_ms(latency, latency.p50),
        fmt_ms(latency, latency.p99),
    )
}

/// A latency in ms for display, or `-` when nothing was recorded.
pub fn fmt_ms(p: &Percentiles, value: f64) -> String {
    if p.count == 0 {
        "-".to_owned()
    } else {
        format!("{value:.2}ms")
    }
}

/// The background task printing stats lines; stop it with [`Reporter::stop`].
#[derive(Debug)]
pub struct Reporter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Starts printing a line every `every` after `start`.
    pub fn spawn(
        recorder: Arc<Recorder>,
        console: Console,
        start: Instant,
        every: Duration,
    ) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut stats = interval_at(start + every, every);
            // After a stall, print once and carry on rather than a flurry of catch-up lines.
            stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut bar = interval(BAR_REFRESH);
            bar.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let show_bar = console.shows_progress();
            let mut previous = (start, 0_u64);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    now = stats.tick() => {
                        let totals = recorder.totals();
                        let secs = now.duration_since(previous.0).as_secs_f64();
                        let rps = if secs > 0.0 { (totals.sent - previous.1) as f64 / secs } else { 0.0 };
                        previous = (now, totals.sent);
                        console.line(&stats_line(&totals, rps, &recorder.take_interval()));
                    }
                    now = bar.tick(), if show_bar => {
                        let t = recorder.totals();
                        console.progress(
                            now.duration_since(start),
                            format!(
                                "sent {} | ok {} | 429 {} | failed {} | in flight {}",
                                t.sent, t.admitted, t.blocked, t.failed, t.in_flight()
                            ),
                        );
                    }
                }
            }
        });
        Reporter { stop, task }
    }

    /// Stops the task and waits for it, so no line is printed after the summary.
    pub async fn stop(self) {
        // The task only ends by this signal, so a send error means it is already gone.
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_the_demo_format() {
        let totals = CountSnapshot {
            sent: 120,
            admitted: 90,
            blocked: 20,
            failed: 5,
        };
        let latency = Percentiles {
            count: 3,
            p50: 1.234,
            p99: 12.5,
            ..Percentiles::default()
        };
        assert_eq!(
            stats_line(&totals, 12.04, &latency),
            "Requests: 120 | Success: 110 | Failed: 5 | Blocked: 20 | RPS: 12.0 | p50: 1.23ms | p99: 12.50ms"
        );
        assert!(stats_line(&totals, 0.0, &Percentiles::default()).ends_with("p50: - | p99: -"));
    }
}
