//! Decisions/s and Redis CPU per decision: one Redis next to a Redis Cluster (3 primaries
//! + 3 replicas), in the same run, with many keys (issue 12).
//!
//! ```sh
//! cargo run --release -p tollgate --features redis-cluster --example cluster_bench
//! ```
//!
//! Starts its own `redis-server` processes on free 127.0.0.1 ports (the test harness of
//! `tests/support/`, the same steps as `tests/cluster.rs`) and kills them on exit. Then,
//! for each round, single node first and cluster second (interleaved, so a noisy neighbour
//! hits both): 64 tasks share one `RedisStore` and decide in a loop for `SECS` seconds,
//! each on a key drawn at random from `KEYS` keys (GCRA, 10^9 per day: never denies, so
//! every decision is the admit-and-write path). Before each measurement every primary's
//! `CONFIG RESETSTAT`; after it, `INFO commandstats` (EVALSHA calls and usec: time inside
//! the script) and the process's CPU time from `/proc` (script + network I/O + event loop).
//!
//! Knobs (environment, all optional and clamped): `SECS` (1..=10, default 4), `ROUNDS`
//! (1..=4, default 2), `KEYS` (1..=1 000 000, default 100 000), `CALLERS` (1..=256,
//! default 64). Output lines start with `BENCH` and are quoted in docs/benchmarks.md.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/support/topology.rs"]
mod topology;

use common::{env_u64, info_field, never_denying_gcra};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::store::{Check, RedisStore, Store};

/// Clock ticks of user + system CPU of process `pid` (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // `rest` starts at field 3 (state): utime is field 14 → index 11, stime → 12.
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on.
const TICK_US: u64 = 10_000;

/// A redis-server being measured: its port and pid.
struct Primary {
    port: u16,
    pid: u64,
}

impl Primary {
    fn new(port: u16) -> Primary {
        let info = topology::cli(port, &["INFO", "server"]).expect("INFO server");
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("process_id");
        Primary { port, pid }
    }

    fn reset(&self) -> u64 {
        topology::cli(self.port, &["CONFIG", "RESETSTAT"]).expect("CONFIG RESETSTAT");
        cpu_ticks(self.pid)
    }

    /// (EVALSHA calls, EVALSHA usec) since the last reset.
    fn evalsha(&self) -> (u64, u64) {
        let info = topology::cli(self.port, &["INFO", "commandstats"]).expect("INFO commandstats");
        (
            info_field(&info, "cmdstat_evalsha:", "calls").unwrap_or(0),
            info_field(&info, "cmdstat_evalsha:", "usec").unwrap_or(0),
        )
    }
}

/// 64 (`callers`) tasks sharing `store`, each deciding on random keys until `secs` pass.
/// Returns (decisions, errors, seconds).
async fn run(
    store: &RedisStore,
    keys: &Arc<Vec<Arc<[Check]>>>,
    callers: u64,
    secs: f64,
) -> (u64, u64, f64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let (store, keys, ok, bad) = (store.clone(), keys.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                // xorshift64: a cheap, per-task random key index.
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
                let (mut good, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let checks = &keys[(x % keys.len() as u64) as usize];
                    match store.check(checks, 1).await {
                        Ok(v) if v[0].allowed => good += 1,
                        _ => failed += 1,
                    }
                }
                ok.fetch_add(good, Ordering::Relaxed);
                bad.fetch_add(failed, Ordering::Relaxed);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    label: &str,
    round: u64,
    store: &RedisStore,
    primaries: &[Primary],
    replicas: &[Primary],
    keys: &Arc<Vec<Arc<[Check]>>>,
    callers: u64,
    secs: f64,
) {
    let before: Vec<u64> = primaries.iter().map(Primary::reset).collect();
    let replicas_before: u64 = replicas.iter().map(|r| cpu_ticks(r.pid)).sum();
    let me = u64::from(std::process::id());
    let client_before = cpu_ticks(me);
    let (ok, errors, took) = run(store, keys, callers, secs).await;
    let client_cpu_us = (cpu_ticks(me) - client_before) * TICK_US;
    let total = ok + errors;
    println!(
        "BENCH {label} round={round} callers={callers} decisions={ok} errors={errors} secs={took:.2} \
         per_sec={:.0} client_cpu_us_per_decision={:.1}",
        ok as f64 / took,
        client_cpu_us as f64 / total.max(1) as f64,
    );
    let (mut all_calls, mut all_usec, mut all_cpu) = (0u64, 0u64, 0u64);
    for (p, b) in primaries.iter().zip(before) {
        let (calls, usec) = p.evalsha();
        let cpu_us = (cpu_ticks(p.pid) - b) * TICK_US;
        all_calls += calls;
        all_usec += usec;
        all_cpu += cpu_us;
        println!(
            "BENCH {label} round={round} primary={} evalsha_calls={calls} share={:.1}% \
             evalsha_us_per_call={:.2} process_cpu_us_per_call={:.2} busy={:.0}%",
            p.port,
            100.0 * calls as f64 / total.max(1) as f64,
            usec as f64 / calls.max(1) as f64,
            cpu_us as f64 / calls.max(1) as f64,
            100.0 * cpu_us as f64 / (took * 1e6),
        );
    }
    let replicas_cpu: u64 =
        replicas.iter().map(|r| cpu_ticks(r.pid)).sum::<u64>() - replicas_before;
    println!(
        "BENCH {label} round={round} all_primaries evalsha_calls={all_calls} \
         evalsha_us_per_decision={:.2} process_cpu_us_per_decision={:.2} \
         replicas_cpu_us_per_decision={:.2}",
        all_usec as f64 / all_calls.max(1) as f64,
        all_cpu as f64 / all_calls.max(1) as f64,
        (replicas_cpu * TICK_US) as f64 / all_calls.max(1) as f64,
    );
}

fn main() {
    let secs = env_u64("SECS", 4, 1, 10) as f64;
    let rounds = env_u64("ROUNDS", 2, 1, 4);
    let n_keys = env_u64("KEYS", 100_000, 1, 1_000_000);
    let callers = env_u64("CALLERS", 64, 1, 256);

    let single = support::RedisServer::start();
    let cluster = topology::Cluster::start();
    let single_primaries = vec![Primary::new(single.port)];
    let cluster_primaries: Vec<Primary> = cluster
        .primaries()
        .into_iter()
        .map(|(_, port, _)| Primary::new(port))
        .collect();
    assert_eq!(cluster_primaries.len(), 3, "three primaries");
    // The replicas apply every write too: their CPU is part of what a decision costs.
    let cluster_replicas: Vec<Primary> = cluster
        .nodes
        .iter()
        .filter(|n| cluster_primaries.iter().all(|p| p.port != n.port))
        .map(|n| Primary::new(n.port))
        .collect();

    let spec = never_denying_gcra();
    let keys: Arc<Vec<Arc<[Check]>>> = Arc::new(
        (0..n_keys)
            .map(|i| Arc::from(vec![Check::new(format!("{{k{i}}}:p"), spec)]))
            .collect(),
    );

    // The default multi-thread runtime: one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Generous timeouts: on a shared 2-core machine queueing must not become errors.
        let t = Duration::from_secs(2);
        let one = RedisStore::builder(single.url())
            .response_timeout(t)
            .connect_timeout(t)
            .build()
            .expect("single-node store");
        let many = RedisStore::cluster(cluster.urls())
            .response_timeout(t)
            .connect_timeout(t)
            .build()
            .expect("cluster store");
        println!(
            "BENCH setup keys={n_keys} callers={callers} secs={secs} rounds={rounds} cores={}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        // Warm-up: connections, slot map, script caches on every primary.
        let _ = run(&one, &keys, callers, 1.0).await;
        let _ = run(&many, &keys, callers, 1.0).await;
        for round in 1..=rounds {
            measure(
                "single",
                round,
                &one,
                &single_primaries,
                &[],
                &keys,
                callers,
                secs,
            )
            .await;
            measure(
                "cluster",
                round,
                &many,
                &cluster_primaries,
                &cluster_replicas,
                &keys,
                callers,
                secs,
            )
            .await;
        }
    });
}
