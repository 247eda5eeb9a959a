//! Leased limits (`consistency = "leased"`) across real sidecar processes on one real
//! Redis: they never admit more than the limit under concurrency, SIGTERM gives the
//! unused units back, small limits stay exact, and with Redis gone a sidecar spends
//! what it leased and then follows its failure mode. Plus the interface: the flags and
//! fields exit 64 naming themselves.
//!
//! The budgets are fixed windows of 30 days, so no window can roll over during a test
//! and every count is exact: what was admitted plus what is left is the limit.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_addr, signal, temp_file, wait_ready, write, Proc, TempPath};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

/// How a test's sidecars lease.
#[derive(Clone, Copy)]
struct Lease {
    target_ms: u64,
    max_fraction: f64,
    max_age_ms: u64,
}

/// Large slices that stay leased for the whole test: what is stranded in a node stays
/// there until it spends it, stops, or a minute has passed.
const LARGE: Lease = Lease {
    target_ms: 5_000,
    max_fraction: 0.2,
    max_age_ms: 60_000,
};

/// One sidecar process, its ports and its config file (removed when dropped).
struct Node {
    child: Proc,
    proxy: SocketAddr,
    admin: SocketAddr,
    config: TempPath,
}

/// The two policies every node serves: `/big` (600 per 30 days, fixed window) and
/// `/small` (10 per minute, GCRA), both on one global key, both with `consistency`.
fn config_text(
    node: &str,
    upstream: SocketAddr,
    redis: &str,
    (proxy, admin): (SocketAddr, SocketAddr),
    consistency: &str,
    failure_mode: &str,
    lease: Lease,
) -> String {
    let Lease {
        target_ms,
        max_fraction,
        max_age_ms,
    } = lease;
    format!(
        r#"
listen = "{proxy}"
admin_listen = "{admin}"
node_id = "{node}"

# Long timeouts: on a loaded machine a slow answer must not turn into a failure-mode
# decision, which would blur the exact counts below.
[redis]
url = "{redis}"
timeout_ms = 2000

[limiter]
failure_mode = "{failure_mode}"
timeout_ms = 2000
# Every refusal is decided by the limiter (and its lease), never by a cached refusal
# that would hide units returned meanwhile.
deny_cache = false

[lease]
target_ms = {target_ms}
max_fraction = {max_fraction}
max_age_ms = {max_age_ms}

[proxy]
shutdown_grace_ms = 5000

[upstreams.app]
endpoints = ["http://{upstream}"]

[[policies]]
name = "big"
path_prefix = "/echo/big"

[[policies.limits]]
name = "budget"
rate = "600/30d"
algorithm = "fixed-window"
key = "global"
consistency = "{consistency}"

[[policies]]
name = "small"
path_prefix = "/echo/small"

[[policies.limits]]
name = "budget"
rate = "10/m"
key = "global"
consistency = "{consistency}"
"#
    )
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Starts a sidecar binary on a config of [`config_text`] and waits until it is ready.
async fn node(
    upstream: SocketAddr,
    redis: &str,
    consistency: &str,
    failure_mode: &str,
    lease: Lease,
) -> Node {
    let name = format!("lease-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file("lease.toml");
    write(
        &path,
        &config_text(
            &name,
            upstream,
            redis,
            (proxy, admin),
            consistency,
            failure_mode,
            lease,
        ),
    );
    let child = common::spawn_with_config(&path);
    wait_ready(admin).await;
    Node {
        child,
        proxy,
        admin,
        config: path,
    }
}

async fn three(upstream: SocketAddr, redis: &str, consistency: &str, lease: Lease) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        // Closed: a store failure is a 503 the tests see, never an uncounted admission.
        nodes.push(node(upstream, redis, consistency, "closed", lease).await);
    }
    nodes
}

/// Responses by status: `[200s, 429s, 503s, anything else]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    ok: usize,
    limited: usize,
    unavailable: usize,
    other: usize,
}

/// Sends `total` GETs of `path`, request `i` to `proxies[i % len]`, from `concurrency`
/// workers at once; bounded by the count, a 5 s timeout per request and 60 s overall.
async fn drive(proxies: &[SocketAddr], path: &str, total: usize, concurrency: usize) -> Tally {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let proxies: Arc<[SocketAddr]> = proxies.into();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, proxies) = (client.clone(), next.clone(), proxies.clone());
            let path = path.to_owned();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return tally;
                    }
                    let proxy = proxies[i % proxies.len()];
                    let status = client
                        .get(format!("http://{proxy}{path}"))
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    match status {
                        200 => tally.ok += 1,
                        429 => tally.limited += 1,
                        503 => tally.unavailable += 1,
                        _ => tally.other += 1,
                    }
                }
            })
        })
        .collect();
    let all = async {
        let mut sum = Tally::default();
        for worker in workers {
            let t = worker.await.expect("worker");
            sum.ok += t.ok;
            sum.limited += t.limited;
            sum.unavailable += t.unavailable;
            sum.other += t.other;
        }
        sum
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("load finished within 60 s")
}

/// SIGTERM, then wait (at most 20 s) for exit status 0.
fn terminate(node: &mut Node) {
    signal(&node.child.0, "-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.child.0.try_wait().expect("wait") {
            assert!(status.success(), "sidecar exited with {status}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sidecar did not exit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three sidecars hammer one leased budget of 600 with twice that many concurrent
/// requests: they admit at most 600. Then they stop (SIGTERM returns what they still
/// held) and a fourth, exact sidecar spends what is left: together exactly 600 —
/// nothing over-admitted, nothing lost on a clean shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_leased_sidecars_never_over_admit_and_lose_nothing_on_shutdown() {
    let redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let mut nodes = three(upstream, &redis.url(), "leased", LARGE).await;
    let proxies: Vec<_> = nodes.iter().map(|n| n.proxy).collect();

    let first = drive(&proxies, "/echo/big", 1_200, 48).await;
    assert_eq!(first.other + first.unavailable, 0, "{first:?}");
    assert!(first.ok <= 600, "over-admitted: {first:?}");
    assert!(first.ok > 0, "{first:?}");

    for node in &mut nodes {
        terminate(node);
    }
    let last = node(upstream, &redis.url(), "exact", "closed", LARGE).await;
    let rest = drive(&[last.proxy], "/echo/big", 700, 8).await;
    assert_eq!(
        first.ok + rest.ok,
        600,
        "three leased sidecars admitted {}, then an exact one {}",
        first.ok,
        rest.ok
    );
}

/// Units a sidecar leased and did not spend are given back on SIGTERM: with two of
/// three sidecars holding leases, the third alone exhausts Redis and still falls short
/// of the budget (the others' slices are stranded there); after the two stop, the third
/// can spend exactly what they held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_returns_unused_leased_units() {
    let redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let mut nodes = three(upstream, &redis.url(), "leased", LARGE).await;
    let proxies: Vec<_> = nodes.iter().map(|n| n.proxy).collect();

    // Each node sees traffic and leases a slice, well within the budget.
    let warm = drive(&proxies, "/echo/big", 150, 6).await;
    assert_eq!(warm.ok, 150, "{warm:?}");
    // The first node alone, until it refuses: Redis is empty, the other two hold slices.
    let alone = drive(&proxies[..1], "/echo/big", 700, 4).await;
    assert!(
        warm.ok + alone.ok < 600,
        "nothing was stranded in the other two sidecars' leases ({} + {} admitted), so \
         this test proves nothing: are their slices leased?",
        warm.ok,
        alone.ok
    );

    terminate(&mut nodes[1]);
    terminate(&mut nodes[2]);
    let after = drive(&proxies[..1], "/echo/big", 700, 4).await;
    assert_eq!(
        warm.ok + alone.ok + after.ok,
        600,
        "admitted {} while warming, {} alone, {} after the others stopped",
        warm.ok,
        alone.ok,
        after.ok
    );
}

/// A small limit (10 per minute) is decided exactly even when leased: a slice would be
/// a fraction of a burst of 10, so the nodes ask Redis each time and three sidecars
/// admit exactly 10 of 60 concurrent requests — none stranded, none extra.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_leased_limits_stay_exact_across_three_sidecars() {
    let redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let nodes = three(upstream, &redis.url(), "leased", LARGE).await;
    let proxies: Vec<_> = nodes.iter().map(|n| n.proxy).collect();
    // 60 requests take well under the 6 s in which GCRA would refill one unit.
    let t = drive(&proxies, "/echo/small", 60, 12).await;
    assert_eq!(
        (t.ok, t.limited, t.unavailable + t.other),
        (10, 50, 0),
        "{t:?}"
    );
}

/// With Redis gone, a leased sidecar answers from the slice it holds (an exact one,
/// `failure_mode = "closed"`, would answer 503 at once), then the failure mode applies:
/// 503, and never an admission again until Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_spends_the_lease_then_follows_the_failure_mode() {
    let mut redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let lease = Lease {
        max_fraction: 0.5,
        ..LARGE
    };
    let n = node(upstream, &redis.url(), "leased", "closed", lease).await;
    let warm = drive(&[n.proxy], "/echo/big", 100, 2).await;
    assert_eq!(warm.ok, 100, "{warm:?}");

    redis.kill();
    // One at a time, so the order of answers is the order of decisions.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut statuses = Vec::new();
    for _ in 0..400 {
        let status = client
            .get(format!("http://{}/echo/big", n.proxy))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        statuses.push(status);
        if statuses.iter().filter(|&&s| s == 503).count() >= 5 {
            break;
        }
    }
    let from_lease = statuses.iter().take_while(|&&s| s == 200).count();
    assert!(
        from_lease > 0,
        "the first answer after Redis stopped was {:?}, not one from the lease",
        statuses.first()
    );
    // Then closed: only 503s, and at most what one slice can hold was admitted.
    let tail = &statuses[from_lease..];
    assert!(
        !tail.is_empty() && tail.iter().all(|&s| s == 503),
        "after {from_lease} admissions from the lease: {tail:?}"
    );
    assert!(from_lease <= 300, "{from_lease} admitted with Redis down");
}

/// A reload that turns a leased limit exact gives the old limiter's slice back at once:
/// the exact limiter can then spend the whole remaining budget (without the return, the
/// slice would be stranded for the lease's `max_age`, a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_to_exact_returns_the_lease() {
    let redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let n = node(upstream, &redis.url(), "leased", "closed", LARGE).await;
    let warm = drive(&[n.proxy], "/echo/big", 100, 2).await;
    assert_eq!(warm.ok, 100, "{warm:?}");

    let text = std::fs::read_to_string(&*n.config).expect("config");
    write(
        &n.config,
        &text.replace("consistency = \"leased\"", "consistency = \"exact\""),
    );
    let admin = n.admin;
    common::eventually("reloaded", Duration::from_secs(10), || async move {
        let text = common::metrics_text(admin).await;
        match common::metric(&text, "tollgate_config_reloads_total", &[("result", "ok")]) {
            Some(v) if v >= 1.0 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let config: serde_json::Value = common::get_url(format!("http://{admin}/config"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        config["policies"][0]["limits"][0]["consistency"], "exact",
        "{config}"
    );
    // The replaced limiter returns its slice in the background, right after the swap.
    common::eventually(
        "the slice returned",
        Duration::from_secs(5),
        || async move {
            let text = common::metrics_text(admin).await;
            match common::metric(
                &text,
                "ratelimiter_lease_units_returned_total",
                &[("policy", "big")],
            ) {
                Some(v) if v > 0.0 => Ok(()),
                _ => Err(text
                    .lines()
                    .filter(|l| l.contains("lease") || l.contains("reload"))
                    .collect::<Vec<_>>()
                    .join("\n")),
            }
        },
    )
    .await;
    let more = drive(&[n.proxy], "/echo/big", 700, 4).await;
    assert_eq!(
        warm.ok + more.ok,
        600,
        "admitted {} leased, then {} exact after the reload",
        warm.ok,
        more.ok
    );
}

/// The interface's flags and fields, spelled wrong: exit 64, naming them.
#[test]
fn invalid_consistency_and_lease_settings_exit_64_naming_them() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["--upstream", "http://127.0.0.1:1", "--check-config"])
            .args(args)
            .env_remove("TOLLGATE_CONSISTENCY")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, named) in [
        (
            &["--limit", "10/s", "--consistency", "eventual"][..],
            "--consistency",
        ),
        (&["--consistency", "leased"][..], "--consistency"),
        (&["--lease-max-fraction", "1.5"][..], "--lease-max-fraction"),
        (&["--lease-target-ms", "0"][..], "--lease-target-ms"),
        (&["--lease-max-age-ms", "0"][..], "--lease-max-age-ms"),
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    let (code, err) = run(&["--limit", "10/s", "--consistency", "leased"]);
    assert_eq!(code, Some(0), "{err}");

    // The environment twin, and the file's field.
    let out = Command::new(BIN)
        .args([
            "--upstream",
            "http://127.0.0.1:1",
            "--limit",
            "10/s",
            "--check-config",
        ])
        .env("TOLLGATE_CONSISTENCY", "strong")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("strong"));

    let path = temp_file("bad-lease.toml");
    write(
        &path,
        "[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n[lease]\nmax_fraction = 0\n",
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&*path)
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease.max_fraction"));
}
