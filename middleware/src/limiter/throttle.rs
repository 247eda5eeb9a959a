//! At most one warning a second for a failure that can repeat per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lets one log line through per second and counts those it holds back: an outage
/// under load would otherwise write one line per request. The limiter throttles its
/// store warnings with it; public so that a service around the limiter (the sidecar's
/// upstream warnings) does the same.
///
/// ```
/// use tollgate::limiter::LogThrottle;
///
/// let throttle = LogThrottle::new();
/// assert_eq!(throttle.permit(), Some(0)); // write it
/// assert_eq!(throttle.permit(), None); // within the second: suppressed, counted
/// ```
#[derive(Debug)]
pub struct LogThrottle {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written, plus one (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new()
    }
}

impl LogThrottle {
    /// A throttle that lets the next line through.
    pub fn new() -> Self {
        LogThrottle {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub fn permit(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        // Another thread may have stored a later `last` after this one read the clock.
        if last != 0 && now.saturating_sub(last) < 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()
            .map(|_| self.suppressed.swap(0, Ordering::Relaxed))
            .or_else(|| {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_log_throttle_survives_a_later_timestamp_from_another_thread() {
        let throttle = LogThrottle::new();
        // Another thread read the clock after this one and stored its time first.
        throttle.last_ms.store(u64::MAX / 2, Ordering::Relaxed);
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_log_throttle_counts_what_it_suppresses() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.permit(), Some(0));
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }
}
