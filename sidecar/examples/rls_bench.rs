//! `ShouldRateLimit` (gRPC) against `POST /check` (HTTP/1.1), same sidecar, same run.
//!
//! Starts the release `tollgate-sidecar` binary as a separate process (memory store, or
//! a redis-server it starts itself with `--redis`), then drives each API for
//! `--seconds` with `--concurrency` closed-loop callers (each waits for its answer before
//! the next call), one decision per call over 1000 keys under a limit so high that every
//! call is admitted: what is measured is the decision path, not refusals. Prints calls/s,
//! p50, p99 and p99.9 latency, and the sidecar's resident memory after each phase.
//! Loopback only; every phase is bounded in time.
//!
//! ```text
//! cargo build --release -p tollgate-sidecar --bins --examples
//! target/release/examples/rls_bench --seconds 5 --concurrency 16 [--redis]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use hdrhistogram::Histogram;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_ready(admin: SocketAddr) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("http://{admin}/ready")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sidecar did not become ready in 10 s");
}

fn report(name: &str, hist: &Histogram<u64>, elapsed: Duration, errors: u64, rss: u64) {
    let q = |p: f64| Duration::from_nanos(hist.value_at_quantile(p));
    println!(
        "{name:<22} {:>9.0} calls/s  p50 {:>8.1?}  p99 {:>8.1?}  p99.9 {:>8.1?}  errors {errors}  sidecar RSS {} MiB",
        hist.len() as f64 / elapsed.as_secs_f64(),
        q(0.50),
        q(0.99),
        q(0.999),
        rss / 1024
    );
}

async fn phase<F, Fut>(concurrency: u64, seconds: u64, call: F) -> (Histogram<u64>, Duration, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0;
            let mut n = worker;
            while Instant::now() < deadline {
                let t = Instant::now();
                if call(n % 1000).await {
                    let _ = hist.record(t.elapsed().as_nanos() as u64);
                } else {
                    errors += 1;
                }
                n += concurrency;
            }
            (hist, errors)
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("worker");
        all.add(h).expect("merge");
        errors += e;
    }
    (all, started.elapsed(), errors)
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 5).clamp(1, 60);
    let concurrency = arg("--concurrency", 16).clamp(1, 256);
    let with_redis = std::env::args().any(|a| a == "--redis");
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tollgate-sidecar");
    let dir = std::env::temp_dir().join(format!("tollgate-rls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rules = dir.join("bench.yaml");
    std::fs::write(
        &rules,
        "domain: bench\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 100000000}\n",
    )
    .expect("rules");

    let redis = with_redis.then(|| {
        let port = free_addr().port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        std::thread::sleep(Duration::from_millis(300));
        (Killed(child), format!("redis://127.0.0.1:{port}"))
    });
    let (admin, rls) = (free_addr(), free_addr());
    let mut command = Command::new(&bin);
    command
        .args([
            "--admin-listen",
            &admin.to_string(),
            "--rls-listen",
            &rls.to_string(),
        ])
        .arg("--rls-config")
        .arg(&rules)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    if let Some((_, url)) = &redis {
        command.args(["--redis-url", url]);
    }
    let sidecar = Killed(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("{bin:?}: {e}: build it first")),
    );
    let pid = sidecar.0.id();
    wait_ready(admin).await;
    println!(
        "store {}, {concurrency} callers, {seconds} s per phase, sidecar RSS at start {} MiB",
        if with_redis { "redis" } else { "memory" },
        rss_kib(pid) / 1024
    );

    // gRPC: one HTTP/2 connection per 8 callers (as Envoy multiplexes on few).
    let channels: Vec<_> =
        futures_util::future::join_all((0..concurrency.div_ceil(8)).map(|_| async {
            tonic::transport::Channel::from_shared(format!("http://{rls}"))
                .expect("uri")
                .timeout(Duration::from_secs(2))
                .connect()
                .await
                .expect("connect")
        }))
        .await;
    let channels = Arc::new(channels);
    let (hist, elapsed, errors) = phase(concurrency, seconds, move |key| {
        let channel = channels[(key as usize) % channels.len()].clone();
        async move {
            let request = RateLimitRequest {
                domain: "bench".into(),
                descriptors: vec![RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "user".into(),
                        value: format!("u{key}"),
                    }],
                    ..RateLimitDescriptor::default()
                }],
                hits_addend: 1,
            };
            RateLimitServiceClient::new(channel)
                .should_rate_limit(request)
                .await
                .is_ok_and(|r| r.into_inner().overall_code == 1)
        }
    })
    .await;
    report(
        "ShouldRateLimit (gRPC)",
        &hist,
        elapsed,
        errors,
        rss_kib(pid),
    );

    // HTTP: keep-alive connections from one pooled client.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let (hist, elapsed, errors) = phase(concurrency, seconds, move |key| {
        let client = client.clone();
        async move {
            let body = format!(r#"{{"key":"u{key}","limit":100000000,"window_ms":3600000}}"#);
            client
                .post(format!("http://{admin}/check"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    report(
        "POST /check (HTTP/1.1)",
        &hist,
        elapsed,
        errors,
        rss_kib(pid),
    );
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&dir);
}
