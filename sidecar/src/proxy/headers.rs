//! Header rewriting at the proxy boundary.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message:
//! `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authenticate`,
//! `Proxy-Authorization`. They are removed in both directions; hyper frames the body
//! again for the next hop. The one exception is `TE: trailers` towards an HTTP/2
//! upstream, which gRPC requires and HTTP/2 allows.

use std::io::Write;
use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TE};
use http::HeaderMap;
use smallvec::SmallVec;

const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `name` is hop-by-hop by itself (the headers `Connection` names aside).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.iter().any(|h| h == name)
}

/// Removes hop-by-hop headers. Returns whether the client asked for `TE: trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // Most messages carry none of them: one pass over the few names present is cheaper
    // than nine removals, each of which hashes and probes. Without `Connection` no other
    // header is named as hop-by-hop, and without `TE` no trailers were asked for.
    if !headers.keys().any(is_hop_by_hop) {
        return false;
    }
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    // The tokens of `Connection` borrow the map they are removed from, so they are
    // copied out first: into a buffer on the stack for the usual `keep-alive` or
    // `close`. Each is removed by `&str`, which `HeaderMap` matches case-insensitively
    // without building (and, for a custom name, allocating) a `HeaderName`.
    let mut named: SmallVec<[u8; 64]> = SmallVec::new();
    for value in headers.get_all(CONNECTION).iter() {
        if value.to_str().is_ok() {
            named.extend_from_slice(value.as_bytes());
            named.push(b',');
        }
    }
    // Visible ASCII (checked above), so always UTF-8.
    if let Ok(named) = std::str::from_utf8(&named) {
        for token in named.split(',') {
            // Not a valid header name (blank, inner spaces): nothing can bear it.
            headers.remove(token.trim());
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    wants_trailers
}

/// Restores `TE: trailers` for an HTTP/2 upstream.
pub fn keep_trailers(headers: &mut HeaderMap) {
    headers.insert(TE, HeaderValue::from_static("trailers"));
}

/// Appends the peer to `X-Forwarded-For` (joining earlier lines into one) and sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` when a proxy before us did not.
pub fn add_forwarded(headers: &mut HeaderMap, peer: Option<IpAddr>, host: Option<&HeaderValue>) {
    if let Some(peer) = peer {
        // An address is at most 45 characters (IPv6 with an embedded IPv4 address):
        // formatted on the stack, it is copied once, into the header value.
        let mut ip = [0u8; 64];
        let ip = {
            let mut rest = &mut ip[..];
            match write!(rest, "{peer}") {
                Ok(()) => {
                    let len = 64 - rest.len();
                    &ip[..len]
                }
                // Cannot happen (64 bytes always suffice); then no header, not a panic.
                Err(_) => &[][..],
            }
        };
        // Earlier proxies' lines (the rare case) are joined into one, ours last.
        let mut joined = String::new();
        for earlier in headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            joined.push_str(earlier);
            joined.push_str(", ");
        }
        let value = if ip.is_empty() {
            None
        } else if joined.is_empty() {
            HeaderValue::from_bytes(ip).ok()
        } else {
            // Visible ASCII (the earlier lines were `to_str` and `ip` is an address).
            joined.push_str(std::str::from_utf8(ip).unwrap_or_default());
            HeaderValue::try_from(joined).ok()
        };
        if let Some(v) = value {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(v) = host {
            headers.insert(X_FORWARDED_HOST, v.clone());
        }
    }
}

/// The host the client addressed: `Host` (when it is visible ASCII), or the HTTP/2
/// `:authority`. A `Host` value is shared with the request, not copied.
pub fn original_host(headers: &HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    headers
        .get(HOST)
        .filter(|h| h.to_str().is_ok())
        .cloned()
        .or_else(|| {
            uri.authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn connection_names_match_any_case_and_spacing() {
        let long = format!("x-{}", "long-name-".repeat(10));
        let mut h = HeaderMap::new();
        h.append(
            CONNECTION,
            HeaderValue::from_static("Keep-Alive,  X-Custom-Thing , , bad name,"),
        );
        h.append(
            CONNECTION,
            HeaderValue::from_str(&format!("CLOSE,\tX-OTHER\t, {}", long.to_uppercase()))
                .expect("value"),
        );
        // Not text: its tokens cannot be read, and the line goes with `Connection`.
        h.append(
            CONNECTION,
            HeaderValue::from_bytes(b"x-keep, \xff").expect("opaque bytes"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-custom-thing", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        h.insert(
            HeaderName::from_bytes(long.as_bytes()).expect("name"),
            HeaderValue::from_static("3"),
        );
        h.insert("x-keep", HeaderValue::from_static("yes"));
        h.insert("x-custom", HeaderValue::from_static("yes"));
        assert!(!strip_hop_by_hop(&mut h));
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-custom", "x-keep"]);
    }

    #[test]
    fn leaves_end_to_end_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("app.example"));
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert!(!strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 2);
        // A lone TE asks for trailers and is still removed.
        h.insert(TE, HeaderValue::from_static("trailers"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key(TE));
    }

    #[test]
    fn original_host_prefers_host_then_authority() {
        let uri: http::Uri = "http://authority.example/x".parse().expect("uri");
        let mut h = HeaderMap::new();
        assert_eq!(
            original_host(&h, &uri).expect("authority"),
            "authority.example"
        );
        h.insert(HOST, HeaderValue::from_static("host.example"));
        assert_eq!(original_host(&h, &uri).expect("host"), "host.example");
        // Not visible ASCII: the authority, as before.
        h.insert(
            HOST,
            HeaderValue::from_bytes(b"h\xc3\xa9.example").expect("opaque bytes"),
        );
        assert_eq!(
            original_host(&h, &uri).expect("authority"),
            "authority.example"
        );
        let origin_form: http::Uri = "/x".parse().expect("uri");
        h.remove(HOST);
        assert!(original_host(&h, &origin_form).is_none());
    }

    #[test]
    fn forwarded_headers_append_and_default() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        add_forwarded(
            &mut h,
            Some("10.0.0.1".parse().expect("ip")),
            Some(&HeaderValue::from_static("app.example")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "app.example");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn forwarded_for_without_earlier_proxies_is_the_peer() {
        let mut h = HeaderMap::new();
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("ip");
        add_forwarded(&mut h, Some(v6), None);
        assert_eq!(h[&X_FORWARDED_FOR], v6.to_string().as_str());
        assert!(!h.contains_key(&X_FORWARDED_HOST));

        // An earlier line that is not text is dropped, as before.
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff").expect("opaque bytes"),
        );
        add_forwarded(&mut h, Some("::1".parse().expect("ip")), None);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut h, Some("192.0.2.7".parse().expect("ip")), None);
        assert_eq!(h[&X_FORWARDED_FOR], "::1, 192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }
}
