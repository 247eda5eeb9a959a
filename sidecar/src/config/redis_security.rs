//! `[redis]`'s secrets and TLS files: `password_file`, `ca_file`, `client_cert`,
//! `client_key`. Each file is read and parsed here, at validation, so a missing file, a
//! key without its certificate or a file that is not PEM stops the sidecar (exit 64)
//! or a reload before anything connects — and the flags check the same way with
//! [`read_certificates`] and [`read_private_key`], naming the flag.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::file::url_has_password;
use super::validate::Checker;
use super::{ConfigError, Pem, RedisSection, RedisSecurity, Secret};

/// Reads a PEM file of one or more certificates (a CA, a client certificate chain).
///
/// # Errors
///
/// A reason naming the file when it cannot be read or holds no valid certificate.
pub fn read_certificates(path: &str) -> Result<Pem, String> {
    let bytes = read(path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| format!("{path:?} is not a valid PEM certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(Pem(bytes.into()))
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
///
/// A reason naming the file when it cannot be read or holds no private key. The
/// reason never quotes the file's contents.
pub fn read_private_key(path: &str) -> Result<Pem, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{path:?} holds no PEM private key: {e}"))?;
    Ok(Pem(bytes.into()))
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
}

/// Reads and checks the section's files.
pub(super) fn validate(
    c: &Checker<'_>,
    redis: &RedisSection,
) -> Result<RedisSecurity, ConfigError> {
    let password = match &redis.password_file {
        Some(_) if url_has_password(&redis.url) => {
            return Err(c.err(
                "redis.password_file",
                "a password is both in redis.url and in redis.password_file: keep the file, \
                 which keeps it out of URLs and command lines",
            ));
        }
        Some(path) => Some(Secret::read(path).map_err(|r| c.err("redis.password_file", r))?),
        None => None,
    };
    let tls_fields: Vec<&str> = [
        ("redis.ca_file", &redis.ca_file),
        ("redis.client_cert", &redis.client_cert),
        ("redis.client_key", &redis.client_key),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.as_ref().map(|_| field))
    .collect();
    if let Some(first) = tls_fields.first() {
        if !redis.url.starts_with("rediss://") {
            return Err(c.err(
                *first,
                format!(
                    "{} need a rediss:// URL, and redis.url is not one (redis:// is not encrypted)",
                    tls_fields.join(", ")
                ),
            ));
        }
    }
    let ca = redis
        .ca_file
        .as_deref()
        .map(read_certificates)
        .transpose()
        .map_err(|r| c.err("redis.ca_file", r))?;
    let client_identity = match (&redis.client_cert, &redis.client_key) {
        (Some(cert), Some(key)) => Some((
            read_certificates(cert).map_err(|r| c.err("redis.client_cert", r))?,
            read_private_key(key).map_err(|r| c.err("redis.client_key", r))?,
        )),
        (Some(_), None) => {
            return Err(c.err(
                "redis.client_cert",
                "needs redis.client_key (mutual TLS takes both)",
            ));
        }
        (None, Some(_)) => {
            return Err(c.err(
                "redis.client_key",
                "needs redis.client_cert (mutual TLS takes both)",
            ));
        }
        (None, None) => None,
    };
    Ok(RedisSecurity {
        password,
        ca,
        client_identity,
    })
}
