//! `[redis]`'s secrets and TLS files: `password_file`, `ca_file`, `client_cert`,
//! `client_key`, for one Redis (`url`), every node of a cluster (`cluster`) and the
//! primary behind sentinels (`sentinels`; the sentinels' own user and password stay in
//! their URLs). Each file is read and parsed here, at validation, so a missing file, a
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

/// The field whose URL holds a password that `password_file` would duplicate: `url`,
/// or a `cluster` node's. The file's password is the data servers' password (one Redis,
/// every cluster node, the primary behind sentinels); a sentinel URL's own password
/// authenticates to the sentinels only, so it may stand beside the file.
pub(crate) fn password_in_urls(redis: &RedisSection) -> Option<&'static str> {
    if url_has_password(&redis.url) {
        Some("redis.url")
    } else if redis.cluster.iter().any(|u| url_has_password(u)) {
        Some("redis.cluster")
    } else {
        None
    }
}

/// Why the TLS files cannot apply: the URL, or a cluster node's, is not `rediss://`.
/// With sentinels the files ask for TLS to the primary whatever the sentinels' own
/// scheme (sentinels that serve TLS are trusted with the same CA).
pub(crate) fn plain_data_urls(redis: &RedisSection) -> Option<&'static str> {
    if !redis.url.is_empty() && !redis.url.starts_with("rediss://") {
        Some("redis.url is not one")
    } else if redis.cluster.iter().any(|u| !u.starts_with("rediss://")) {
        Some("not every redis.cluster URL is one")
    } else {
        None
    }
}

/// Reads and checks the section's files.
pub(super) fn validate(
    c: &Checker<'_>,
    redis: &RedisSection,
) -> Result<RedisSecurity, ConfigError> {
    let in_url = password_in_urls(redis);
    let password = match (&redis.password_file, in_url) {
        (Some(_), Some(field)) => {
            return Err(c.err(
                "redis.password_file",
                format!(
                    "a password is both in {field} and in redis.password_file: keep the file, \
                     which keeps it out of URLs and command lines"
                ),
            ));
        }
        (Some(path), None) => {
            Some(Secret::read(path).map_err(|r| c.err("redis.password_file", r))?)
        }
        (None, _) => None,
    };
    let tls_fields: Vec<&str> = [
        ("redis.ca_file", &redis.ca_file),
        ("redis.client_cert", &redis.client_cert),
        ("redis.client_key", &redis.client_key),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.as_ref().map(|_| field))
    .collect();
    let plain = plain_data_urls(redis);
    if let (Some(first), Some(which)) = (tls_fields.first(), plain) {
        return Err(c.err(
            *first,
            format!(
                "{} need rediss:// URLs, and {which} (redis:// is not encrypted)",
                tls_fields.join(", ")
            ),
        ));
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
