//! The store error of the most recent failed decision, until one succeeds or it is
//! [`REMEMBERED`] old: what a readiness probe reports when the store answers `PING` but
//! refuses decisions (an ACL user without `EVALSHA`).
//!
//! It fades by itself because a not-ready instance gets no traffic: without decisions
//! nothing would ever clear it once the ACL is fixed. While decisions keep failing it is
//! renewed every second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an error is reported without a newer failure.
pub(crate) const REMEMBERED: Duration = Duration::from_secs(10);

use crate::store::{StoreError, StoreErrorKind};

#[derive(Debug, Default)]
pub(crate) struct LastError {
    /// Set with `error`; read first, so a healthy store costs successes one relaxed load.
    failing: AtomicBool,
    error: Mutex<Option<(Instant, StoreErrorKind, String)>>,
}

impl LastError {
    /// Remembers `error`. Called at most once a second (with the throttled warning).
    pub(crate) fn set(&self, error: &StoreError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some((Instant::now(), error.kind(), error.to_string()));
        self.failing.store(true, Ordering::Relaxed);
    }

    /// Forgets the error after a decision succeeded.
    pub(crate) fn clear(&self) {
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    pub(crate) fn get(&self) -> Option<(StoreErrorKind, String)> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _, _)| at.elapsed() < REMEMBERED)
            .map(|(_, kind, message)| (*kind, message.clone()))
    }
}
