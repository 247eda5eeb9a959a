use std::net::SocketAddr;

use super::*;

fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::get("http://example.com/a/b?q=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(()).expect("valid request");
    let addr: SocketAddr = peer.parse().expect("valid peer");
    req.extensions_mut().insert(PeerAddr(addr));
    req.into_parts().0
}

fn nets(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|n| n.parse().expect("valid net")).collect()
}

#[test]
fn xff_is_ignored_unless_the_peer_is_trusted() {
    let spoof = parts("198.51.100.9:4000", &[("x-forwarded-for", "1.1.1.1")]);
    assert_eq!(
        Key::client_ip(nets(&[])).extract(&spoof).as_deref(),
        Some("198.51.100.9")
    );
    assert_eq!(
        Key::client_ip(nets(&["10.0.0.0/8"]))
            .extract(&spoof)
            .as_deref(),
        Some("198.51.100.9")
    );
    // "xff" parsed without trusted proxies is the peer too.
    let parsed: Key = "xff".parse().expect("parses");
    assert_eq!(parsed.extract(&spoof).as_deref(), Some("198.51.100.9"));
}

#[test]
fn xff_walks_right_to_left_through_trusted_hops_only() {
    let key = Key::client_ip(nets(&["10.0.0.0/8"]));
    // The client forged "6.6.6.6"; the trusted proxy 10.0.0.5 appended the real client.
    let req = parts(
        "10.0.0.1:80",
        &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.5")],
    );
    assert_eq!(key.extract(&req).as_deref(), Some("203.0.113.7"));
    // Several header lines form one chain, in order.
    let req = parts(
        "10.0.0.1:80",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7:5555"),
        ],
    );
    assert_eq!(key.extract(&req).as_deref(), Some("203.0.113.7"));
    // All hops trusted: the leftmost one is the client.
    let req = parts("10.0.0.1:80", &[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
    assert_eq!(key.extract(&req).as_deref(), Some("10.9.9.9"));
    // Garbage written by a trusted proxy: no key.
    let req = parts("10.0.0.1:80", &[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
    assert_eq!(key.extract(&req), None);
    // Garbage left of the first untrusted hop is never read.
    let req = parts("10.0.0.1:80", &[("x-forwarded-for", "not-an-ip, 1.2.3.4")]);
    assert_eq!(key.extract(&req).as_deref(), Some("1.2.3.4"));
}

#[test]
fn huge_chains_are_cut_at_max_hops() {
    let key = Key::client_ip(nets(&["10.0.0.0/8"]));
    let chain = vec!["10.1.1.1"; 10_000].join(",");
    let req = parts("10.0.0.1:80", &[("x-forwarded-for", chain.as_str())]);
    assert_eq!(key.extract(&req).as_deref(), Some("10.1.1.1"));
}

#[test]
fn forwarded_header_forms() {
    let key = Key::forwarded(nets(&["10.0.0.0/8", "::1/128"]));
    let req = parts(
        "[::1]:80",
        &[(
            "forwarded",
            "for=6.6.6.6, For=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3",
        )],
    );
    assert_eq!(key.extract(&req).as_deref(), Some("2001:db8::7"));
    let req = parts("10.0.0.2:80", &[("forwarded", "for=unknown")]);
    assert_eq!(key.extract(&req), None);
    let req = parts("10.0.0.2:80", &[("forwarded", "proto=http")]);
    assert_eq!(key.extract(&req), None);
}

#[test]
fn ipv4_mapped_peers_are_ipv4() {
    let req = parts("[::ffff:192.0.2.1]:80", &[]);
    assert_eq!(Key::peer_ip().extract(&req).as_deref(), Some("192.0.2.1"));
}

#[test]
fn header_method_path_global_and_tuples() {
    let req = parts("192.0.2.1:1", &[("x-api-key", "k|1%")]);
    assert_eq!(
        Key::header("x-api-key").extract(&req).as_deref(),
        Some("k|1%")
    );
    assert_eq!(Key::header("x-other").extract(&req), None);
    assert_eq!(Key::method().extract(&req).as_deref(), Some("GET"));
    assert_eq!(Key::path().extract(&req).as_deref(), Some("/a/b"));
    assert_eq!(Key::global().extract(&req).as_deref(), Some("global"));
    let tuple: Key = "header:x-api-key + path".parse().expect("parses");
    assert_eq!(tuple.extract(&req).as_deref(), Some("k%7C1%25|/a/b"));
    let missing: Key = "header:x-other+path".parse().expect("parses");
    assert_eq!(missing.extract(&req), None);
    assert_eq!(tuple.to_string(), "header:x-api-key+path");
}

#[test]
fn empty_and_binary_header_values() {
    let mut req = parts("192.0.2.1:1", &[("x-api-key", "")]);
    assert_eq!(Key::header("x-api-key").extract(&req), None);
    req.headers.insert(
        "x-api-key",
        http::HeaderValue::from_bytes(&[0xff, 0x41]).expect("opaque bytes are valid"),
    );
    assert_eq!(
        Key::header("x-api-key").extract(&req).as_deref(),
        Some("0xff41")
    );
}

#[test]
fn bad_specs_name_the_part() {
    for bad in ["header", "header:bad name", "cookie:x", "", "ip+", "const:"] {
        let err = bad.parse::<Key>().expect_err(bad);
        assert!(err.to_string().contains("invalid key"), "{err}");
    }
}

#[test]
fn missing_peer_means_no_ip_key() {
    let req = http::Request::get("/")
        .body(())
        .expect("valid")
        .into_parts()
        .0;
    assert_eq!(Key::peer_ip().extract(&req), None);
    assert_eq!(Key::client_ip(nets(&["0.0.0.0/0"])).extract(&req), None);
}

/// A header key is the header's first value whether the request has a few headers
/// (scanned) or many (looked up by hash).
#[test]
fn a_header_key_is_the_first_value_with_few_or_many_headers() {
    let key = Key::header("x-api-key");
    for others in [0, 3, 16, 17, 40] {
        let names: Vec<String> = (0..others).map(|i| format!("x-other-{i}")).collect();
        let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert_eq!(
            key.extract(&parts("10.0.0.1:1", &headers)),
            None,
            "{others}"
        );
        headers.insert(others / 2, ("x-api-key", "first"));
        headers.push(("X-Api-Key", "second"));
        headers.push(("accept", "*/*"));
        let request = parts("10.0.0.1:1", &headers);
        assert_eq!(key.extract(&request).as_deref(), Some("first"), "{others}");
        assert_eq!(
            Key::header("accept").extract(&request).as_deref(),
            Some("*/*")
        );
    }
}
