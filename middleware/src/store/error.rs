//! [`StoreError`]: why a store could not decide, in terms that do not depend on the
//! backend.
//!
//! A backend's own error type (redis-rs' `RedisError`, a SQL driver's) never appears in
//! the public API: it would tie our semver to theirs, and the limiter only needs three
//! things from a failure — a stable [`StoreErrorKind`] for the `kind` metric label,
//! whether the failure is transient, and a message for the log. The backend's error
//! stays reachable, boxed, as [`std::error::Error::source`].

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// What kind of failure a [`StoreError`] is: what an operator alerts on.
///
/// [`as_str`](Self::as_str) is the `kind` label of `ratelimiter_store_errors_total`
/// (see `docs/metrics.md`); the labels are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached, or the connection broke (`connection`).
    Connection,
    /// The store's own client gave up waiting for an answer (`timeout`). The limiter's
    /// deadline around every call is reported separately, with the same label.
    Timeout,
    /// The store answered something this crate does not understand (`protocol`).
    Protocol,
    /// The store refused the credentials or the permission to run a command (`auth`;
    /// Redis: a wrong password, `NOAUTH`, an ACL `NOPERM`).
    Auth,
    /// A TLS connection could not be established (`tls`): the handshake failed, the
    /// server's certificate does not verify or does not name the host, or the server
    /// refused the client certificate.
    Tls,
    /// A configuration value was refused, such as an unparsable URL (`config`).
    Config,
    /// The store's server answered with an error (`server`; Redis: an error reply such
    /// as `LOADING`, `READONLY` or a script error).
    Server,
    /// Anything else (`other`).
    Other,
}

impl StoreErrorKind {
    /// The metric label: `connection`, `timeout`, `protocol`, `auth`, `tls`, `config`,
    /// `server` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Connection => "connection",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Protocol => "protocol",
            StoreErrorKind::Auth => "auth",
            StoreErrorKind::Tls => "tls",
            StoreErrorKind::Config => "config",
            StoreErrorKind::Server => "server",
            StoreErrorKind::Other => "other",
        }
    }

    /// Whether a failure of this kind usually goes away by itself (a reconnect, a
    /// failover): connections and timeouts do; a refused password, a certificate that
    /// does not verify or a bad URL does not.
    /// [`StoreError::new`] starts from this; a store that knows better says so with
    /// [`StoreError::transient`].
    pub fn is_transient(self) -> bool {
        matches!(self, StoreErrorKind::Connection | StoreErrorKind::Timeout)
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a store could not decide (or could not be built).
///
/// Backend-neutral, like limitador's `StorageErr`: a [`kind`](Self::kind), whether it is
/// [transient](Self::is_transient), a message, and the backend's own error as its
/// [`source`](Error::source). Stores outside this crate build one with
/// [`StoreError::new`]:
///
/// ```
/// use tollgate::store::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error = StoreError::new(StoreErrorKind::Connection, "cannot reach the database")
///     .with_source(io);
/// assert_eq!(error.kind().as_str(), "connection");
/// assert!(error.is_transient());
/// assert!(std::error::Error::source(&error).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{kind} error: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    transient: bool,
    message: String,
    #[source]
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl StoreError {
    /// An error of `kind`, transient when the kind usually is
    /// ([`StoreErrorKind::is_transient`]).
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            transient: kind.is_transient(),
            message: message.into(),
            source: None,
        }
    }

    /// A [`StoreErrorKind::Config`] error: a setting the store refuses.
    pub fn config(message: impl Into<String>) -> Self {
        StoreError::new(StoreErrorKind::Config, message)
    }

    /// A [`StoreErrorKind::Protocol`] error: a reply the store cannot interpret.
    pub fn protocol(message: impl Into<String>) -> Self {
        StoreError::new(StoreErrorKind::Protocol, message)
    }

    /// Attaches the underlying error, reported as [`Error::source`].
    pub fn with_source(mut self, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Overrides whether retrying later may succeed.
    pub fn transient(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    /// The kind, also the `kind` metric label.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What went wrong, without the kind or the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `n` copies of this error, for the callers one failure answers together (the
    /// requests of one batched Redis call): the same kind, transience and message, and
    /// the source shared between them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fan_out(self, n: usize) -> Vec<StoreError> {
        let source: Option<Arc<dyn Error + Send + Sync>> = self.source.map(Arc::from);
        (0..n)
            .map(|_| StoreError {
                kind: self.kind,
                transient: self.transient,
                message: self.message.clone(),
                source: source
                    .clone()
                    .map(|s| Box::new(Shared(s)) as Box<dyn Error + Send + Sync>),
            })
            .collect()
    }
}

/// A source shared by the copies [`StoreError::fan_out`] makes; reads as the original.
struct Shared(Arc<dyn Error + Send + Sync>);

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Shared {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_kind_and_source_is_kept() {
        let e = StoreError::protocol("expected 4 integers, got 3")
            .with_source(std::io::Error::other("inner"));
        assert_eq!(e.to_string(), "protocol error: expected 4 integers, got 3");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("inner")
        );
        assert!(!e.is_transient());
        assert!(e.transient(true).is_transient());
    }

    #[test]
    fn labels_are_stable() {
        let kinds = [
            StoreErrorKind::Connection,
            StoreErrorKind::Timeout,
            StoreErrorKind::Protocol,
            StoreErrorKind::Auth,
            StoreErrorKind::Tls,
            StoreErrorKind::Config,
            StoreErrorKind::Server,
            StoreErrorKind::Other,
        ];
        let labels: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "connection",
                "timeout",
                "protocol",
                "auth",
                "tls",
                "config",
                "server",
                "other"
            ]
        );
    }
}
