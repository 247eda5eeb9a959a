//! Decision cost benchmarks (see docs/benchmarks.md, section "tollgate decisions").
//!
//! ```text
//! cargo bench -p tollgate --bench decision                 # in-memory (criterion)
//! middleware/benches/redis-ceiling.sh                      # Redis vs redis-benchmark
//! ```
//!
//! Two parts:
//!
//! 1. Criterion groups for the in-memory path: `memory/gcra_one_key`,
//!    `memory/sliding_window`, `memory/1000_keys`, `memory/two_limits`,
//!    `memory/threads/{1,2,2_private_stores}` and `limiter/memory_end_to_end`.
//! 2. When `TOLLGATE_BENCH_REDIS_URL` is set (and the criterion filter, if any, contains
//!    `redis`), a plain timed section measuring `RedisStore` decisions/s with 1 caller
//!    and with 64 concurrent callers. It prints machine-readable lines
//!    `TOLLGATE_REDIS <label> c=<n> round=<r> ops=<count> secs=<s> per_sec=<rate> errors=<e>`
//!    that `redis-ceiling.sh` puts next to `redis-benchmark` running the same script.
//!
//! Redis section knobs (all optional): `TOLLGATE_BENCH_REDIS_SECS` (seconds per
//! measurement, 1..=5, default 3), `TOLLGATE_BENCH_REDIS_ROUNDS` (default 2),
//! `TOLLGATE_BENCH_REDIS_RAW=1` (also time the same EVALSHA through plain redis-rs, to
//! separate client cost from tollgate's), `TOLLGATE_BENCH_REDIS_FIRST_ROUND` (label only).
//!
//! Every limit here is so generous that it never denies, so each decision takes the
//! admit-and-write path (the expensive one), in memory and in Redis alike.

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::store::{Check, MemoryStore, RedisStore, Store};
use tollgate::{Algorithm, LimitSpec, RateLimiter};

/// GCRA, 10^9 per day: interval 86 µs, burst 10^9 — never denies within a benchmark.
fn gcra_spec() -> LimitSpec {
    LimitSpec::new(
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(86_400),
        None,
    )
    .expect("valid spec")
}

/// Sliding window, 10^8 per hour (quota × period_ms = 3.6·10^14 < 2^50): never denies
/// within a benchmark.
fn sliding_spec() -> LimitSpec {
    LimitSpec::new(
        Algorithm::SlidingWindow,
        100_000_000,
        Duration::from_secs(3600),
        None,
    )
    .expect("valid spec")
}

fn keys(prefix: &str, n: usize, spec: LimitSpec) -> Vec<Check> {
    (0..n)
        .map(|i| Check::new(format!("{{p:{prefix}-{i}}}:l"), spec))
        .collect()
}

fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));

    g.bench_function("gcra_one_key", |b| {
        let store = MemoryStore::new();
        let check = [Check::new("{p:k}:l", gcra_spec())];
        b.iter(|| black_box(store.decide(black_box(&check), 1)));
    });

    g.bench_function("sliding_window", |b| {
        let store = MemoryStore::new();
        let check = [Check::new("{p:k}:l", sliding_spec())];
        b.iter(|| black_box(store.decide(black_box(&check), 1)));
    });

    g.bench_function("1000_keys", |b| {
        let store = MemoryStore::new();
        let checks = keys("k", 1000, gcra_spec());
        let mut i = 0usize;
        b.iter(|| {
            let check = std::slice::from_ref(&checks[i]);
            i = if i == 999 { 0 } else { i + 1 };
            black_box(store.decide(black_box(check), 1))
        });
    });

    g.bench_function("two_limits", |b| {
        // A per-day GCRA and a per-hour sliding window on one key, decided atomically
        // (whether the two keys share a shard depends on the store's random hasher).
        let store = MemoryStore::new();
        let checks = [
            Check::new("{p:k}:daily", gcra_spec()),
            Check::new("{p:k}:hourly", sliding_spec()),
        ];
        b.iter(|| black_box(store.decide(black_box(&checks), 1)));
    });
    g.finish();

    // Same work per thread (rotating over that thread's own 1000 keys) on one shared
    // store, with 1 and 2 threads. Criterion's time is wall time per iteration, where one
    // iteration is one decision on every thread, i.e. the time per decision per thread;
    // the throughput line (elements = threads) is the aggregate decisions/s.
    let mut g = c.benchmark_group("memory/threads");
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::from_parameter(threads), |b| {
            let store = MemoryStore::new();
            let sets: Vec<Vec<Check>> = (0..threads)
                .map(|t| keys(&format!("t{t}"), 1000, gcra_spec()))
                .collect();
            b.iter_custom(|iters| threaded(&[&store], &sets, iters));
        });
    }
    // Control: the same 2 threads, each on a store of its own (nothing shared). The gap
    // between this and `2` is what sharing one store costs; the gap between this and
    // `1` is what the machine costs (two busy cores, caches, a noisy neighbour).
    g.throughput(Throughput::Elements(2));
    g.bench_function("2_private_stores", |b| {
        let stores = [MemoryStore::new(), MemoryStore::new()];
        let sets: Vec<Vec<Check>> = (0..2)
            .map(|t| keys(&format!("t{t}"), 1000, gcra_spec()))
            .collect();
        b.iter_custom(|iters| threaded(&[&stores[0], &stores[1]], &sets, iters));
    });
    g.finish();
}

/// Runs `iters` decisions on each of `sets.len()` threads at once (thread `t` on
/// `stores[t % stores.len()]`); returns the wall time from the common start until the
/// last thread finishes.
fn threaded(stores: &[&MemoryStore], sets: &[Vec<Check>], iters: u64) -> Duration {
    let start = Barrier::new(sets.len() + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = sets
            .iter()
            .enumerate()
            .map(|(t, set)| {
                let start = &start;
                let store = stores[t % stores.len()];
                s.spawn(move || {
                    start.wait();
                    let mut i = 0usize;
                    for _ in 0..iters {
                        let check = std::slice::from_ref(&set[i]);
                        i = if i + 1 == set.len() { 0 } else { i + 1 };
                        black_box(store.decide(black_box(check), 1));
                    }
                    Instant::now()
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let ended = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .expect("at least one thread");
        ended.duration_since(began)
    })
}

fn limiter(c: &mut Criterion) {
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("memory_end_to_end", |b| {
        // Policy matching, header key extraction, storage-key formatting, the memory
        // store and the decision bookkeeping (metrics macros with no recorder installed).
        let limiter = RateLimiter::builder()
            .policy(Policy::single("p", gcra_spec(), Key::header("x-api-key")))
            .build()
            .expect("limiter");
        let parts = http::Request::get("/")
            .header("x-api-key", "k")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        // The memory store answers without waiting, so the future is ready on its first
        // poll: poll it directly instead of paying for a runtime's block_on.
        let mut cx = Context::from_waker(Waker::noop());
        b.iter(|| {
            let fut = std::pin::pin!(limiter.check(black_box(&parts)));
            match fut.poll(&mut cx) {
                Poll::Ready(decision) => black_box(decision),
                Poll::Pending => panic!("memory limiter must answer on the first poll"),
            }
        });
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------
// Redis: decisions/s, 1 caller and 64 concurrent callers.
// ---------------------------------------------------------------------------------------

/// The key and limit `redis-ceiling.sh` hands to `redis-benchmark`: the store's prefix
/// `tollgate` + this check key = `tollgate:{bench:k}:p`, GCRA 10^9 per 86 400 000 ms.
const REDIS_CHECK_KEY: &str = "{bench:k}:p";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Outcome {
    ops: u64,
    errors: u64,
    secs: f64,
}

/// `callers` tasks each deciding in a loop (sequential awaits) until `secs` pass.
async fn timed<F, Fut>(callers: usize, secs: f64, op: F) -> Outcome
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (op, ops, errors) = (op.clone(), ops.clone(), errors.clone());
            tokio::spawn(async move {
                let (mut ok, mut bad) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if op().await {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                }
                ops.fetch_add(ok, Ordering::Relaxed);
                errors.fetch_add(bad, Ordering::Relaxed);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller task");
    }
    Outcome {
        ops: ops.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
    }
}

fn report(label: &str, callers: usize, round: u64, o: &Outcome) -> f64 {
    let rate = o.ops as f64 / o.secs;
    println!(
        "TOLLGATE_REDIS {label} c={callers} round={round} ops={} secs={:.3} per_sec={rate:.0} errors={}",
        o.ops, o.secs, o.errors
    );
    rate
}

fn redis_section(url: &str) {
    let secs = env_u64("TOLLGATE_BENCH_REDIS_SECS", 3).clamp(1, 5) as f64;
    let rounds = env_u64("TOLLGATE_BENCH_REDIS_ROUNDS", 2).clamp(1, 5);
    let raw = std::env::var("TOLLGATE_BENCH_REDIS_RAW").is_ok_and(|v| v == "1");
    // The default multi-thread runtime: one worker per core (2 here).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = RedisStore::builder(url)
            // Generous: a shared 2-core machine must not turn queueing into errors.
            .response_timeout(Duration::from_secs(2))
            .build()
            .expect("redis store");
        let checks: Arc<[Check]> = Arc::from(vec![Check::new(REDIS_CHECK_KEY, gcra_spec())]);
        let probe = store.check(&checks, 1).await.expect("redis reachable");
        assert!(probe[0].allowed, "bench limit must never deny");

        let tollgate_op = {
            let (store, checks) = (store.clone(), checks.clone());
            move || {
                let (store, checks) = (store.clone(), checks.clone());
                async move { matches!(store.check(&checks, 1).await, Ok(v) if v[0].allowed) }
            }
        };

        // Diagnostic: the same EVALSHA through the same redis-rs multiplexed client,
        // without tollgate (arguments prebuilt), to split client cost from tollgate cost.
        let raw_op = if raw {
            let client = redis::Client::open(url).expect("redis url");
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .expect("redis connect");
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(include_str!("../src/store/redis/decide.lua"))
                .query_async(&mut conn.clone())
                .await
                .expect("script load");
            let spec = gcra_spec();
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha)
                .arg(1)
                .arg(format!("tollgate:{REDIS_CHECK_KEY}"))
                .arg("")
                .arg(1)
                .arg(1000)
                .arg(0) // algorithm code: GCRA
                .arg(spec.quota())
                .arg(spec.period_ms())
                .arg(spec.burst())
                .arg(spec.interval_us());
            let cmd = Arc::new(cmd);
            Some(move || {
                let (mut conn, cmd) = (conn.clone(), cmd.clone());
                async move { cmd.query_async::<Vec<i64>>(&mut conn).await.is_ok() }
            })
        } else {
            None
        };

        // Warm-up: connections, script cache, allocator, CPU frequency.
        let _ = timed(64, 1.0, tollgate_op.clone()).await;
        let mut best = [0f64; 4];
        let first = env_u64("TOLLGATE_BENCH_REDIS_FIRST_ROUND", 1);
        for round in first..first + rounds {
            for (i, callers) in [1usize, 64].into_iter().enumerate() {
                let o = timed(callers, secs, tollgate_op.clone()).await;
                best[i] = best[i].max(report("tollgate", callers, round, &o));
                if let Some(op) = &raw_op {
                    let o = timed(callers, secs, op.clone()).await;
                    best[2 + i] = best[2 + i].max(report("redis-rs-raw", callers, round, &o));
                }
            }
        }
        println!(
            "TOLLGATE_REDIS_BEST tollgate c=1 per_sec={:.0} c=64 per_sec={:.0}",
            best[0], best[1]
        );
        if raw_op.is_some() {
            println!(
                "TOLLGATE_REDIS_BEST redis-rs-raw c=1 per_sec={:.0} c=64 per_sec={:.0}",
                best[2], best[3]
            );
        }
    });
}

fn main() {
    // Criterion reads `cargo bench -- <filter>` itself; the Redis section runs when its
    // URL is set and there is no filter or the filter mentions `redis`.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let redis_only = !filter.is_empty() && filter.iter().all(|f| f.contains("redis"));
    if !redis_only {
        memory(&mut c);
        limiter(&mut c);
        c.final_summary();
    }
    if let Ok(url) = std::env::var("TOLLGATE_BENCH_REDIS_URL") {
        if filter.is_empty() || filter.iter().any(|f| f.contains("redis")) {
            redis_section(&url);
        }
    }
}
