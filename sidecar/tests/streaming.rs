//! 256 MiB through the `tollgate-sidecar` binary, up and down, over HTTP/1.1 and h2c,
//! without the proxy's memory growing with the body (issue 16: streaming must survive
//! the proxy's performance work).
//!
//! The sidecar runs as its own process so that its resident memory can be read from
//! `/proc/<pid>/status`: `VmHWM` (the peak) after the transfers against `VmRSS` before
//! them. A proxy that buffered a body would peak at least 256 MiB higher; the bound
//! below leaves room for allocator and socket-buffer noise, not for a body.
//!
//! The upstream counts what it receives without keeping it and produces what it sends
//! lazily, and the client sends one shared 1 MiB buffer again and again, so the only
//! process that could hold a whole body is the sidecar.

mod common;

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use http_body_util::BodyExt;

use common::{free_addr, temp_file, wait_ready, write};

/// One transfer: 256 chunks of 1 MiB.
const CHUNKS: usize = 256;
const CHUNK: usize = 1 << 20;
const TOTAL: u64 = (CHUNKS * CHUNK) as u64;

/// The most the sidecar's peak resident memory may rise over the whole test. Four
/// buffered bodies would be 1 GiB; one would be 256 MiB.
const GROWTH_BOUND: u64 = 64 << 20;

/// An upstream that counts uploaded bytes frame by frame (keeping none) and streams
/// 256 MiB on `GET /download`, each chunk made as it is sent.
async fn counting_upstream() -> SocketAddr {
    async fn count(request: Request) -> String {
        let mut body = request.into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("upload frame").into_data() {
                total += data.len() as u64;
            }
        }
        total.to_string()
    }
    let app = Router::new().route("/upload", post(count)).route(
        "/download",
        get(|| async {
            let chunk = Bytes::from(vec![b'd'; CHUNK]);
            Body::from_stream(futures_util::stream::iter(
                (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            ))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"));
    kib * 1024
}

async fn upload(client: &reqwest::Client, proxy: SocketAddr) {
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    let chunks = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let res = client
        .post(format!("http://{proxy}/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("upload sent");
    assert_eq!(res.status(), 200);
    let counted: u64 = res
        .text()
        .await
        .expect("upload answer")
        .parse()
        .expect("a count");
    assert_eq!(
        counted, TOTAL,
        "the upstream did not receive the whole body"
    );
}

async fn download(client: &reqwest::Client, proxy: SocketAddr) {
    let res = client
        .get(format!("http://{proxy}/download"))
        .send()
        .await
        .expect("download sent");
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let (mut total, mut frames) = (0u64, 0usize);
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("download chunk").len() as u64;
        frames += 1;
    }
    assert_eq!(total, TOTAL, "the client did not receive the whole body");
    assert!(frames > 1, "the body arrived in one piece: buffered?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_256_mib_stream_both_ways_over_h1_and_h2c_without_memory_growth() {
    let upstream = counting_upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file("streaming.toml");
    write(
        &path,
        &format!(
            r#"
listen = "{proxy}"
admin_listen = "{admin}"
node_id = "streaming"

[upstreams.app]
endpoints = ["http://{upstream}"]

[[policies]]
name = "all"

[[policies.limits]]
name = "per-ip"
rate = "1000/m"
key = "ip"
"#
        ),
    );
    let child = common::spawn_with_config(&path);
    wait_ready(admin).await;
    let pid = child.0.id();

    let h1 = reqwest::Client::builder().build().expect("client");
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // A small request through each client first, so connection set-up is not counted
    // as growth.
    for client in [&h1, &h2c] {
        let res = client
            .get(format!("http://{proxy}/upload"))
            .send()
            .await
            .expect("warm-up");
        assert_eq!(
            res.status(),
            405,
            "the upstream answers GET /upload with 405"
        );
    }
    let before = status_bytes(pid, "VmRSS");

    upload(&h1, proxy).await;
    download(&h1, proxy).await;
    upload(&h2c, proxy).await;
    download(&h2c, proxy).await;

    let peak = status_bytes(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < GROWTH_BOUND,
        "the sidecar's peak RSS rose by {} MiB while 4 × 256 MiB went through \
         (before {} MiB, peak {} MiB): a body was buffered",
        growth >> 20,
        before >> 20,
        peak >> 20
    );
}
