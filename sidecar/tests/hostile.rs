//! Hostile clients and broken upstreams against a real sidecar: slowloris, oversized
//! heads, request smuggling, connection floods, spoofed keys, garbage for `/check`,
//! an upstream that dies mid-body — bounded time and memory, and nothing leaked.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// Sends raw bytes and reads until the server closes or 5 s pass.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// The TCP sockets this process holds open whose local port is in `local` or whose
/// peer's port is in `remote`: the sidecar under test's own sockets (those it accepted
/// on its proxy port, those it opened to its upstream), told apart from every other
/// descriptor of the process.
///
/// Counting all of `/proc/self/fd` is not enough under `cargo test`: the other tests
/// of this binary run in the same process and open and close descriptors meanwhile.
/// Sockets are matched by inode between `/proc/self/fd` and `/proc/self/net/tcp{,6}`.
fn sockets(local: &[u16], remote: &[u16]) -> usize {
    let mut wanted = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| {
                addr.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            let (Some(l), Some(r), Some(inode)) = (
                fields.get(1).and_then(|a| port(a)),
                fields.get(2).and_then(|a| port(a)),
                fields.get(9),
            ) else {
                continue;
            };
            if *inode != "0" && (local.contains(&l) || remote.contains(&r)) {
                wanted.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| wanted.contains(target.to_string_lossy().as_ref()))
        .count()
}

/// The sockets of the sidecar proxying on `proxy` to an upstream on `upstream`.
fn sidecar_sockets(proxy: SocketAddr, upstream: SocketAddr) -> usize {
    sockets(&[proxy.port()], &[upstream.port()])
}

async fn in_flight(sc: &common::Running) -> Option<f64> {
    let text = common::metrics_text(sc.admin).await;
    common::metric(&text, "tollgate_proxy_in_flight", &[("node", &sc.node)])
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let upstream = common::upstream().await;
    let mut file = common::config(upstream, "100/m", "ip");
    file.proxy.header_read_timeout_ms = Some(1_000);
    let sc = common::start(file).await;
    let mut slow = TcpStream::connect(sc.proxy).await.expect("connect");
    slow.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut closed = false;
    for i in 0..40 {
        // One header byte every 100 ms: never finishing the head.
        if slow
            .write_all(if i % 2 == 0 { b"X" } else { b"y" })
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await
        {
            // A 408 or a bare close both end the attack.
            closed = n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408");
            if closed {
                break;
            }
        }
        // Meanwhile a normal client is served.
        if i == 3 {
            let res = common::get_url(format!("http://{}/echo", sc.proxy)).await;
            assert_eq!(res.status(), 200);
        }
    }
    assert!(closed, "the trickling connection was never closed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_heads_and_smuggling_are_refused() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    let huge = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let res = raw(sc.proxy, huge.as_bytes()).await;
    assert!(status_line(&res).contains(" 431 "), "{}", status_line(&res));

    // Conflicting lengths (RFC 9112 §6.3): refused, never forwarded.
    let res = raw(
        sc.proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert!(status_line(&res).contains(" 400 "), "{}", status_line(&res));

    // Transfer-Encoding and Content-Length together: chunked wins, the length is
    // dropped, and the smuggled second request is never seen as a body of the first.
    let res = raw(
        sc.proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    // RFC 9112 §6.1: the message is read as chunked (empty here) and the connection
    // is closed after the answer, so the smuggled request is never served.
    assert!(status_line(&res).contains(" 200 "), "{res}");
    assert!(res.contains("\"body_bytes\":0"), "{res}");
    assert!(
        res.to_ascii_lowercase().contains("connection: close"),
        "{res}"
    );
    assert_eq!(
        res.matches("HTTP/1.1 ").count(),
        1,
        "a second response: {res}"
    );
    assert!(!res.contains("smuggled"), "{res}");

    // An invalid Transfer-Encoding is refused.
    let res = raw(
        sc.proxy,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        status_line(&res).contains(" 400 ") || status_line(&res).contains(" 501 "),
        "{}",
        status_line(&res)
    );
}

#[tokio::test]
async fn a_connection_flood_is_survived_and_released() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    let held = || sidecar_sockets(sc.proxy, upstream);
    // The listener (and nothing else yet).
    let before = held();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(sc.proxy).await.expect("connect"));
    }
    let res = common::get_url(format!("http://{}/echo", sc.proxy)).await;
    assert_eq!(res.status(), 200);
    // The measure sees the sidecar's ends of the flood: a leak of them would show.
    let deadline = Instant::now() + Duration::from_secs(10);
    while held() < before + 300 {
        assert!(
            Instant::now() < deadline,
            "sockets {} < {before} + 300",
            held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(idle);
    // The server side closes its ends once the clients are gone. The one upstream
    // connection may stay pooled.
    let deadline = Instant::now() + Duration::from_secs(10);
    while held() > before + 1 {
        assert!(
            Instant::now() < deadline,
            "sockets {} > {before} + 1",
            held()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn clients_cannot_pick_their_key_with_x_forwarded_for() {
    let upstream = common::upstream().await;
    // xff with no trusted proxies: the key is the TCP peer, whatever the header says.
    let sc = common::start(common::config(upstream, "2/m", "xff")).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let res = client()
            .get(format!("http://{}/echo/limited", sc.proxy))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .expect("send");
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test]
async fn an_upstream_dying_mid_body_leaks_nothing() {
    // Promises 1000 bytes, sends 10, closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dying = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                // Dropping the socket here closes it 990 bytes short.
            });
        }
    });
    let sc = common::start(common::config(dying, "100/m", "ip")).await;
    let held = || sidecar_sockets(sc.proxy, dying);
    let before = held();
    for _ in 0..20 {
        let res = client()
            .get(format!("http://{}/echo", sc.proxy))
            .send()
            .await
            .expect("head arrives");
        assert_eq!(res.status(), 200);
        assert!(
            res.bytes().await.is_err(),
            "a truncated body must not look complete"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gauge = in_flight(&sc).await;
        // Every upstream connection died with its body, and every client left.
        if gauge == Some(0.0) && held() <= before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leak: in flight {gauge:?}, sidecar sockets {} vs {before}",
            held()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Any bytes as a config file: an error or a config, never a panic.
    #[test]
    fn config_files_never_panic(text in "\\PC{0,200}") {
        if let Ok(file) = tollgate_sidecar::config::FileConfig::from_toml("fuzz.toml", &text) {
            let _ = file.validate("fuzz.toml");
        }
    }

    /// Plausible TOML with random values: always a clear error naming a field, or valid.
    #[test]
    fn config_values_are_validated(
        rate in "[0-9]{0,4}/[0-9]{0,3}(ms|s|m|h|d|y)?(,burst=[0-9]{0,3})?",
        key in "(header:[a-z-]{0,8}|ip|xff|path|global|[a-z]{1,6})",
        algo in "(gcra|sliding-window|fixed-window|other)",
        endpoint in "(http|https|ftp)://[a-z0-9.]{0,10}(:[0-9]{1,6})?(/[a-z]{0,3})?",
    ) {
        let text = format!(
            "[upstreams.a]\nendpoints = [\"{endpoint}\"]\n[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"{rate}\"\nalgorithm = \"{algo}\"\nkey = \"{key}\"\n"
        );
        let file = tollgate_sidecar::config::FileConfig::from_toml("f.toml", &text).expect("well-formed TOML");
        if let Err(e) = file.validate("f.toml") {
            prop_assert!(e.field.starts_with("upstreams.a") || e.field.starts_with("policies"), "{}", e);
            prop_assert!(!e.reason.is_empty());
        }
    }
}

#[tokio::test]
async fn check_garbage_is_always_400() {
    let upstream = common::upstream().await;
    let sc = common::start(common::config(upstream, "100/m", "ip")).await;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    let bodies = prop::collection::vec(any::<u8>(), 0..200);
    let mut cases = Vec::new();
    for _ in 0..200 {
        cases.push(bodies.new_tree(&mut runner).expect("tree").current());
    }
    cases.push(br#"{"key":"k","limit":1e30,"window_ms":1}"#.to_vec());
    cases.push(
        format!(
            r#"{{"key":"{}","limit":1,"window_ms":1}}"#,
            "k".repeat(5000)
        )
        .into_bytes(),
    );
    for body in cases {
        let res = client()
            .post(format!("http://{}/check", sc.admin))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 400, "{:?}", String::from_utf8_lossy(&body));
    }
}
