//! At most one warning a second for a kind of failure that can repeat per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lets one log line through per second and counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last line written, plus one (0 = never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new() -> Self {
        LogThrottle {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub(crate) fn permit(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        // Another thread may have stored a later `last` after this one read the clock.
        if last != 0 && now.saturating_sub(last) < 1000 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_counted_silence() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.permit(), Some(0));
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.permit(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_later_timestamp_from_another_thread_does_not_underflow() {
        let throttle = LogThrottle::new();
        throttle.last_ms.store(u64::MAX / 2, Ordering::Relaxed);
        assert_eq!(throttle.permit(), None);
    }
}
