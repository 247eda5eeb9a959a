//! Bad input never panics: the rate parser, the key-spec parser, the forwarding-chain
//! readers and the cost header, fed arbitrary text by proptest.

use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use http::HeaderValue;
use proptest::prelude::*;
use tollgate::key::{Key, KeyExtractor, PeerAddr};
use tollgate::policy::Cost;
use tollgate::LimitSpec;

fn request(peer: SocketAddr, headers: &[(&'static str, Vec<u8>)]) -> Parts {
    let mut req = http::Request::get("/")
        .body(())
        .expect("valid")
        .into_parts()
        .0;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            req.headers.append(*name, v);
        }
    }
    req.extensions.insert(PeerAddr(peer));
    req
}

/// Every address the request's `header` chain holds, parsed here independently of the
/// crate: comma-separated entries of every line of the header; in `Forwarded` the `for=`
/// parameter (any case) of each element; an address may carry a port, brackets and quotes.
/// Listed canonical, as keys are (`peer::canonical`): an IPv4-mapped IPv6 address as the
/// IPv4 address it maps.
fn chain_addresses(req: &Parts, header: &str, is_forwarded: bool) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for value in req.headers.get_all(header) {
        let Ok(text) = value.to_str() else { continue };
        for entry in text.split(',') {
            let candidates: Vec<&str> = if is_forwarded {
                entry
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .filter(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .map(|(_, value)| value)
                    .collect()
            } else {
                vec![entry]
            };
            for candidate in candidates {
                let bare = candidate.trim().trim_matches('"');
                let ip = bare
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| bare.parse::<SocketAddr>().ok().map(|a| a.ip()))
                    .or_else(|| {
                        bare.strip_prefix('[')?
                            .strip_suffix(']')?
                            .parse::<IpAddr>()
                            .ok()
                    });
                out.extend(ip.map(|ip| match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                }));
            }
        }
    }
    out
}

/// Text that looks like forwarding chains: addresses, ports, brackets, quotes, junk.
fn chain() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"1.2.3.4".to_vec()),
            Just(b"10.0.0.7".to_vec()),
            Just(b"[2001:db8::1]:80".to_vec()),
            Just(b"for=\"[::1]\"".to_vec()),
            Just(b"For=10.9.8.7;proto=https".to_vec()),
            Just(b"10.1.2.3:8080".to_vec()),
            Just(b"::ffff:10.0.0.9".to_vec()),
            Just(b"for=\"[::ffff:203.0.113.9]:8\"".to_vec()),
            Just(b"unknown".to_vec()),
            Just(b",".to_vec()),
            Just(b";".to_vec()),
            Just(b" ".to_vec()),
            prop::collection::vec(any::<u8>(), 0..12),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn rate_specs_never_panic(text in "\\PC{0,40}") {
        if let Ok(spec) = text.parse::<LimitSpec>() {
            prop_assert!(spec.quota() >= 1 && spec.burst() >= 1 && spec.interval_us() >= 1);
        }
    }

    #[test]
    fn rate_specs_of_the_right_shape(quota in 0u64..u64::MAX, count in 0u64..1_000_000, unit in "(ms|s|m|h|d|x)", burst in proptest::option::of(0u64..u64::MAX)) {
        let text = match burst {
            Some(b) => format!("{quota}/{count}{unit},burst={b}"),
            None => format!("{quota}/{count}{unit}"),
        };
        let _ = text.parse::<LimitSpec>();
    }

    #[test]
    fn key_specs_never_panic(text in "\\PC{0,60}") {
        let _ = Key::parse_with(&text, &[]);
    }

    /// With no trusted proxy, whatever the headers say, the key is the peer.
    #[test]
    fn untrusted_chains_never_move_the_key(xff in chain(), fwd in chain()) {
        let peer: SocketAddr = "198.51.100.4:5000".parse().expect("addr");
        let req = request(peer, &[("x-forwarded-for", xff), ("forwarded", fwd)]);
        let (xff_key, fwd_key) = (Key::client_ip([]).extract(&req), Key::forwarded([]).extract(&req));
        prop_assert_eq!(xff_key.as_deref(), Some("198.51.100.4"));
        prop_assert_eq!(fwd_key.as_deref(), Some("198.51.100.4"));
    }

    /// Behind a trusted proxy the key is one of the addresses in the chain the request
    /// carries (or the peer), canonical as keys are, or none; never anything else, and
    /// never a panic.
    #[test]
    fn trusted_chains_yield_an_address_from_the_chain(xff in chain(), fwd in chain()) {
        let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
        let trusted = ["10.0.0.0/8".parse().expect("net")];
        let req = request(peer, &[("x-forwarded-for", xff), ("forwarded", fwd)]);
        for (key, header, is_forwarded) in [
            (Key::client_ip(trusted), "x-forwarded-for", false),
            (Key::forwarded(trusted), "forwarded", true),
        ] {
            if let Some(found) = key.extract(&req) {
                let mut allowed = chain_addresses(&req, header, is_forwarded);
                allowed.push(peer.ip());
                let ip: IpAddr = found.parse().expect("an IP");
                prop_assert!(allowed.contains(&ip), "{} ({}) not among {:?}", found, header, allowed);
                // The key's text is the address's canonical text.
                prop_assert_eq!(found, ip.to_string());
            }
        }
    }

    #[test]
    fn cost_headers_are_validated(value in prop::collection::vec(any::<u8>(), 0..24)) {
        let cost = Cost::header("x-cost", 1, 50);
        let req = request("192.0.2.1:1".parse().expect("addr"), &[("x-cost", value)]);
        if let Ok(n) = cost.of(&req) {
            prop_assert!(n <= 50);
        }
    }
}

#[test]
fn huge_and_numerous_forwarding_headers_stay_bounded() {
    let peer: SocketAddr = "10.0.0.1:5000".parse().expect("addr");
    let trusted = ["10.0.0.0/8".parse().expect("net")];
    let big = vec![b'1'; 200_000];
    let many: Vec<(&'static str, Vec<u8>)> = (0..5_000)
        .map(|i| {
            (
                "x-forwarded-for",
                format!("10.{}.{}.1", i % 200, i % 250).into_bytes(),
            )
        })
        .chain([("x-forwarded-for", big)])
        .collect();
    let req = request(peer, &many);
    // Only the last MAX_HOPS entries are read: the 200 kB entry is bad, so no key.
    assert_eq!(Key::client_ip(trusted).extract(&req), None);
}
