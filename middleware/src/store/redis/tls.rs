//! [`RedisTls`]: what a `rediss://` connection trusts and presents, and how its
//! failures are recognised.
//!
//! The handshake is redis-rs' own (tokio-rustls, with rustls' `ring` provider): no
//! OpenSSL and no C crypto build. There is no insecure mode: a server certificate that
//! does not chain to the trusted roots, or does not name the host in the URL, fails the
//! connection with a [`StoreErrorKind::Tls`] error.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use redis::{ClientTlsConfig, RedisError, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::super::{StoreError, StoreErrorKind};

/// TLS material for a `rediss://` [`RedisStore`](super::RedisStore): the roots it
/// trusts and, for mutual TLS, the certificate it presents. All PEM.
///
/// Without [`ca_pem`](Self::ca_pem) the system's roots are trusted, as for any
/// `rediss://` URL. The PEM is parsed when the store is built, so a file that is not a
/// certificate or a key is a [`StoreErrorKind::Config`] error then, not at the first
/// decision.
///
/// ```no_run
/// use tollgate::store::{RedisStore, RedisTls};
///
/// let tls = RedisTls::new()
///     .ca_pem(std::fs::read("/etc/tollgate/redis-ca.pem")?)
///     .client_identity(
///         std::fs::read("/etc/tollgate/client.pem")?,
///         std::fs::read("/etc/tollgate/client-key.pem")?,
///     );
/// let store = RedisStore::builder("rediss://tollgate@redis.internal:6380")
///     .password(std::fs::read_to_string("/run/secrets/redis-password")?.trim_end())
///     .tls(tls)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct RedisTls {
    /// Roots trusted instead of the system's; `None`: the system's.
    ca_pem: Option<Vec<u8>>,
    /// Certificate chain and private key presented to the server.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret; the rest says only what is set.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.identity.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Trust the system's roots, present no client certificate.
    pub fn new() -> Self {
        RedisTls::default()
    }

    /// Trust only the CA certificate(s) in this PEM, instead of the system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this certificate chain and private key (PEM) to the server: mutual TLS,
    /// for a Redis started with `tls-auth-clients yes`.
    pub fn client_identity(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// Parses every PEM now, so a bad file is refused when the store is built.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if let Some(pem) = &self.ca_pem {
            certificates(pem, "the CA")?;
        }
        if let Some((cert, key)) = &self.identity {
            certificates(cert, "the client certificate")?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                StoreError::config(format!("the client key is not a PEM private key: {e}"))
            })?;
        }
        Ok(())
    }

    pub(super) fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self.identity.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<(), StoreError> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| StoreError::config(format!("{what} is not PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(StoreError::config(format!(
            "{what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(())
}

/// rustls needs a process-wide crypto provider; this crate enables only `ring`, so
/// rustls picks it by itself — unless another crate in the build also enabled
/// `aws-lc-rs`, when rustls cannot choose. Installing `ring` then is what the
/// application would otherwise have to do before building a store; an application that
/// installed its own provider keeps it.
pub(super) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one meanwhile: that one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The TLS failure inside a redis-rs error, if it is one: a handshake refused, a
/// certificate that does not verify or does not name the host, an alert from the
/// server (such as a client certificate it requires but did not get).
pub(super) fn tls_failure(error: &RedisError) -> Option<String> {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(cause) = rustls_in(e) {
            return Some(cause);
        }
        next = e.source();
    }
    None
}

/// rustls' error in `e`, seen through the wrappers redis-rs and tokio-rustls put around
/// it (an `io::Error` carrying it, possibly behind an `Arc`).
fn rustls_in(e: &(dyn Error + 'static)) -> Option<String> {
    if let Some(arc) = e.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
        return rustls_in(&**arc);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.get_ref().and_then(|inner| rustls_in(inner));
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls.to_string());
    }
    e.downcast_ref::<rustls::pki_types::InvalidDnsNameError>()
        .map(|dns| format!("the URL's host cannot be checked against a certificate: {dns}"))
}

/// A store error for a TLS failure: not transient (a certificate does not start
/// verifying by itself), the cause first.
pub(super) fn store_error(cause: String, error: RedisError) -> StoreError {
    StoreError::new(StoreErrorKind::Tls, format!("TLS: {cause}"))
        .transient(false)
        .with_source(error)
}
