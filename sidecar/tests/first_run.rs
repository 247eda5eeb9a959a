//! Regressions from a first run by a new user (issue 10): each test failed before its fix.
//!
//! Real sockets throughout: an upstream on loopback, the sidecar in this process or as
//! its binary, clients that connect and disconnect as real ones do.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{config, get_url, start};
use tokio::io::AsyncWriteExt;
use tollgate_sidecar::cli::Cli;
use tollgate_sidecar::config::{FileConfig, UpstreamSection};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

/// The value of `family`'s sample for sidecar `node` on a `/metrics` page. (Sidecars
/// in one process share one registry, told apart by `node`: under plain `cargo test`
/// the tests of this file run as threads of one process.)
async fn metric(admin: SocketAddr, family: &str, node: &str) -> Option<f64> {
    let text = get_url(format!("http://{admin}/metrics"))
        .await
        .text()
        .await
        .expect("metrics");
    let label = format!("node=\"{node}\"");
    text.lines()
        .find(|l| {
            l.starts_with(family)
                && l.as_bytes().get(family.len()) == Some(&b'{')
                && l.contains(&label)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `config` with a node id of its own, so this test's series are its own.
fn own_config(upstream: SocketAddr, node: &str) -> FileConfig {
    let mut file = config(upstream, "100/m", "ip");
    file.node_id = Some(node.into());
    file
}

/// Polls `check` every 50 ms for up to `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_gone_before_the_response_head_leaves_no_request_in_flight() {
    let upstream = common::upstream().await;
    let sidecar = start(own_config(upstream, "gone-early")).await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(sidecar.proxy)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(stream);
    }
    // /slow answers after 3 s; the gauge must be back to 0 without waiting for it.
    let admin = sidecar.admin;
    let settled = eventually(Duration::from_millis(2_000), || async move {
        metric(admin, "tollgate_proxy_in_flight", "gone-early").await == Some(0.0)
    })
    .await;
    assert!(
        settled,
        "in flight: {:?}",
        metric(admin, "tollgate_proxy_in_flight", "gone-early").await
    );
}

#[tokio::test]
async fn a_request_is_in_flight_until_its_body_has_been_sent() {
    let upstream = common::upstream().await;
    let mut file = config(upstream, "100/m", "ip");
    file.proxy.max_concurrent_requests = Some(1);
    let sidecar = start(file).await;
    let client = reqwest::Client::new();
    // 8 MiB, streamed: the head arrives long before the body is done.
    let download = client
        .get(format!("http://{}/download", sidecar.proxy))
        .send()
        .await
        .expect("head");
    assert_eq!(download.status(), 200);
    let busy = client
        .get(format!("http://{}/echo", sidecar.proxy))
        .send()
        .await
        .expect("send");
    assert_eq!(
        busy.status(),
        503,
        "the download still holds the only permit"
    );
    let body = download.bytes().await.expect("body");
    assert_eq!(body.len(), 8 << 20);
    let proxy = sidecar.proxy;
    let freed = eventually(Duration::from_secs(5), || {
        let client = client.clone();
        async move {
            client
                .get(format!("http://{proxy}/echo"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(freed, "the permit is released once the body has been read");
}

/// An upstream whose accept queue (backlog 1) is full when the burst arrives: the
/// kernel drops the new connections' SYNs, and the clients' kernels retransmit them
/// after 1 s and again at 3 s. It starts accepting after 1.5 s, so the SYNs sent at 3 s
/// get through. Returns the address and the connections that fill the queue.
async fn full_backlog_upstream() -> (SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..2 {
        fillers.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("fill the queue"),
        );
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, fillers)
}

/// With the old 1 s connect timeout (`TOLLGATE_TEST_CONNECT_TIMEOUT_MS=1000` shows it)
/// every request here is a 502: the connect gives up just as the first retransmission
/// is due. The default leaves room for two.
#[tokio::test]
async fn new_upstream_connections_whose_syns_are_dropped_get_no_502() {
    let (upstream, _fillers) = full_backlog_upstream().await;
    let mut file = config(upstream, "100/m", "ip");
    if let Ok(ms) = std::env::var("TOLLGATE_TEST_CONNECT_TIMEOUT_MS") {
        file.proxy.connect_timeout_ms = ms.parse().ok();
    }
    let sidecar = start(file).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let started = Instant::now();
    let requests = (0..16).map(|_| {
        let client = client.clone();
        let url = format!("http://{}/", sidecar.proxy);
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
    });
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task").expect("response"));
    }
    let bad: Vec<_> = statuses.iter().filter(|&&s| s != 200).collect();
    assert!(bad.is_empty(), "not 200: {bad:?}");
    // The SYNs really were dropped: nothing connected before the acceptor started.
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "answered in {:?}: no SYN was dropped, so this tested nothing",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_connect_is_retried_on_the_next_endpoint() {
    let upstream = common::upstream().await;
    // A port nothing listens on: connections are refused at once.
    let (_held, dead) = common::refusing_addr();
    let mut file = own_config(upstream, "retrying");
    file.upstreams.insert(
        "app".into(),
        UpstreamSection {
            endpoints: vec![format!("http://{dead}"), format!("http://{upstream}")],
            protocol: None,
        },
    );
    let sidecar = start(file).await;
    for i in 0..10 {
        let res = get_url(format!("http://{}/echo", sidecar.proxy)).await;
        assert_eq!(res.status(), 200, "request {i}");
    }
    assert!(
        metric(sidecar.admin, "tollgate_upstream_retries_total", "retrying")
            .await
            .is_some_and(|n| n >= 5.0),
        "every other request went to the dead endpoint first"
    );
}

#[tokio::test]
async fn config_shows_effective_values_not_nulls() {
    let upstream = common::upstream().await;
    let sidecar = start(config(upstream, "100/m", "ip")).await;
    let config: serde_json::Value = get_url(format!("http://{}/config", sidecar.admin))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["proxy"]["connect_timeout_ms"], 5000);
    assert_eq!(config["proxy"]["shutdown_grace_ms"], 10_000);
    assert_eq!(config["proxy"]["host"], "preserve");
    assert_eq!(config["limiter"]["failure_mode"], "open");
    assert_eq!(config["limiter"]["timeout_ms"], 50);
    assert_eq!(config["limiter"]["deny_cache"], true);
    assert_eq!(config["limiter"]["max_keys"], 1_000_000);
    assert_eq!(config["upstreams"]["app"]["protocol"], "http1");
    assert_eq!(config["routes"][0]["path_prefix"], "/");
    assert_eq!(config["policies"][0]["missing_key"], "reject");
    assert_eq!(config["policies"][0]["limits"][0]["algorithm"], "gcra");
    for section in ["proxy", "limiter"] {
        for (field, value) in config[section].as_object().expect("object") {
            assert!(!value.is_null(), "{section}.{field} is null");
        }
    }
}

#[test]
fn toml_errors_name_the_right_line_and_field() {
    let text = "listen = \"127.0.0.1:0\"\n\n[proxy]\nconnect_timeout_ms = \"soon\"\n";
    let err = FileConfig::from_toml("f.toml", text).expect_err("a string for a number");
    assert_eq!(err.field, "line 4 (proxy.connect_timeout_ms)", "{err}");
    let err = FileConfig::from_toml("f.toml", "nonsense = 1\n").expect_err("unknown field");
    assert_eq!(err.field, "line 1 (nonsense)", "{err}");
}

#[test]
fn flag_errors_name_the_flag_the_user_typed() {
    for (args, flag) in [
        (&["--failure-mode", "sometimes"][..], "--failure-mode"),
        (&["--redis-url", "localhost:6379"][..], "--redis-url"),
        (&["--listen", "everywhere"][..], "--listen"),
        (&["--admin-listen", "9000"][..], "--admin-listen"),
        (&["--node-id", ""][..], "--node-id"),
    ] {
        let cli = Cli::try_parse_from(
            ["tollgate-sidecar", "--upstream", "http://127.0.0.1:1"]
                .iter()
                .chain(args),
        )
        .expect("parses");
        let err = cli.file_config().expect_err("invalid");
        assert_eq!(err.field, flag, "{err}");
        assert_eq!(err.origin, "flags");
    }
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .output()
            .expect("run")
    };
    let unknown = run(&["--no-such-flag"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--no-such-flag"));
    let both = run(&["--demo", "--upstream", "http://127.0.0.1:1"]);
    assert_eq!(both.status.code(), Some(64));
    let err = String::from_utf8_lossy(&both.stderr);
    assert!(
        err.contains("--demo") && err.contains("--upstream"),
        "{err}"
    );
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

#[tokio::test]
async fn reload_applies_every_field_or_refuses_it_by_name() {
    let upstream = common::upstream().await;
    let dir = std::env::temp_dir().join(format!("tollgate-first-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sidecar.toml");
    let text = |node: &str, grace: u64, head: u64| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nnode_id = \"{node}\"\n\
             [proxy]\nshutdown_grace_ms = {grace}\nheader_read_timeout_ms = {head}\n\
             [upstreams.app]\nendpoints = [\"http://{upstream}\"]\n"
        )
    };
    std::fs::write(&path, text("a", 10_000, 10_000)).expect("write");
    let cli = Cli::try_parse_from([
        "tollgate-sidecar",
        "--config",
        path.to_str().expect("utf-8"),
    ])
    .expect("parses");
    // What main builds from the command line, and reloads from.
    let source = cli.config_source();
    let file = source.file_config().expect("file");
    let sidecar = start(file).await;

    std::fs::write(&path, text("b", 10_000, 10_000)).expect("write");
    assert!(
        !tollgate_sidecar::reload::reload(&source, &sidecar.state, &sidecar.stores),
        "a new node_id needs a restart"
    );
    assert_eq!(sidecar.state.load().config.node_id, "a");

    std::fs::write(&path, text("a", 1_234, 200)).expect("write");
    assert!(tollgate_sidecar::reload::reload(
        &source,
        &sidecar.state,
        &sidecar.stores
    ));
    let proxy = &sidecar.state.load().config.proxy;
    assert_eq!(proxy.shutdown_grace, Duration::from_millis(1_234));
    assert_eq!(proxy.header_read_timeout, Duration::from_millis(200));
    // The new head timeout applies to connections accepted after the reload: a client
    // that sends half a head is cut after 200 ms, not 10 s.
    let mut stream = tokio::net::TcpStream::connect(sidecar.proxy)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was cut by the new timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = std::fs::remove_dir_all(&dir);
}
