//! The store error of the most recent failed decision, until one succeeds: what a
//! readiness probe reports when the store answers `PING` but refuses decisions (an ACL
//! user without `EVALSHA`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::store::{StoreError, StoreErrorKind};

#[derive(Debug, Default)]
pub(crate) struct LastError {
    /// Set with `error`; read first, so a healthy store costs successes one relaxed load.
    failing: AtomicBool,
    error: Mutex<Option<(StoreErrorKind, String)>>,
}

impl LastError {
    /// Remembers `error`. Called at most once a second (with the throttled warning).
    pub(crate) fn set(&self, error: &StoreError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some((error.kind(), error.to_string()));
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
            .clone()
    }
}
