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
//!    `redis`), a plain timed section measuring Redis decisions with 1 caller and with 64
//!    concurrent callers: the previous script (`decide_v1.lua`, the "before"), the store
//!    unbatched (`batch_max(1)`) and batched (the default), with 1 and 8 limits per
//!    request. Before each measurement it resets Redis' statistics and after it reads
//!    `INFO commandstats`, so each line carries the Redis CPU per decision. It prints
//!    machine-readable lines `TOLLGATE_REDIS <label> c=<n> round=<r> ops=<count> secs=<s>
//!    per_sec=<rate> errors=<e> p50_us=… p99_us=… calls=… decisions_per_call=…
//!    redis_us_per_call=… redis_us_per_decision=… redis_us_per_limit=…` that
//!    `redis-ceiling.sh` puts next to `redis-benchmark`.
//!
//! Redis section knobs (all optional): `TOLLGATE_BENCH_REDIS_SECS` (seconds per
//! measurement, 1..=5, default 3), `TOLLGATE_BENCH_REDIS_ROUNDS` (default 2),
//! `TOLLGATE_BENCH_REDIS_FIRST_ROUND` (label only).
//!
//! Every limit here is so generous that it never denies, so each decision takes the
//! admit-and-write path (the expensive one), in memory and in Redis alike.

mod common;

use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::{env_u64, never_denying_gcra};
use criterion::{BenchmarkId, Criterion, Throughput};
use tollgate::key::Key;
use tollgate::policy::Policy;
use tollgate::store::{Check, MemoryStore, RedisStore, Store};
use tollgate::{Algorithm, LimitSpec, RateLimiter};

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
        let check = [Check::new("{p:k}:l", never_denying_gcra())];
        b.iter(|| black_box(store.decide(black_box(&check), 1)));
    });

    g.bench_function("sliding_window", |b| {
        let store = MemoryStore::new();
        let check = [Check::new("{p:k}:l", sliding_spec())];
        b.iter(|| black_box(store.decide(black_box(&check), 1)));
    });

    g.bench_function("1000_keys", |b| {
        let store = MemoryStore::new();
        let checks = keys("k", 1000, never_denying_gcra());
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
            Check::new("{p:k}:daily", never_denying_gcra()),
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
                .map(|t| keys(&format!("t{t}"), 1000, never_denying_gcra()))
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
            .map(|t| keys(&format!("t{t}"), 1000, never_denying_gcra()))
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
            .policy(Policy::single(
                "p",
                never_denying_gcra(),
                Key::header("x-api-key"),
            ))
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
// Redis: decisions/s, latency at one caller, and Redis CPU per decision.
// ---------------------------------------------------------------------------------------

/// The key and limit `redis-ceiling.sh` hands to `redis-benchmark`: the store's prefix
/// `tollgate` + this check key + the format version = `tollgate:{bench:k}:p:v2`, GCRA
/// 10^9 per 86 400 000 ms.
const REDIS_CHECK_KEY: &str = "{bench:k}:p";

struct Outcome {
    ops: u64,
    errors: u64,
    secs: f64,
    /// Per-decision latency, nanoseconds, sorted.
    latencies: Vec<u64>,
}

impl Outcome {
    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }
}

type Op =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'static>> + Send + Sync>;

/// `callers` tasks each deciding in a loop (sequential awaits) until `secs` pass.
async fn timed(callers: usize, secs: f64, op: &Op) -> Outcome {
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (op, ops, errors) = (op.clone(), ops.clone(), errors.clone());
            tokio::spawn(async move {
                let (mut ok, mut bad) = (0u64, 0u64);
                let mut latencies = Vec::with_capacity(1 << 16);
                loop {
                    let t = Instant::now();
                    if t >= deadline {
                        break;
                    }
                    if op().await {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                    latencies.push(t.elapsed().as_nanos() as u64);
                }
                ops.fetch_add(ok, Ordering::Relaxed);
                errors.fetch_add(bad, Ordering::Relaxed);
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("caller task"));
    }
    latencies.sort_unstable();
    Outcome {
        ops: ops.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        latencies,
    }
}

/// `(calls, usec)` of `EVALSHA` from `INFO commandstats`.
async fn evalsha_stats(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .unwrap_or("");
    let field = |name: &str| {
        line.split(',')
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls="), field("usec="))
}

/// Limit `i`'s key of a hot-key case: the very key redis-benchmark uses when alone.
fn hot_key(limits: usize, i: usize) -> String {
    if limits == 1 {
        REDIS_CHECK_KEY.to_owned()
    } else {
        format!("{REDIS_CHECK_KEY}{i}")
    }
}

/// One measured case: how it decides, and how many limits each decision checks.
struct Case {
    label: &'static str,
    limits: usize,
    op: Op,
}

/// A `RedisStore` case: `limits` limits per request, each request on the hot key or, when
/// `spread` is set, on one of 100 000 keys drawn per decision.
fn store_case(label: &'static str, store: &RedisStore, limits: usize, spread: bool) -> Case {
    let spec = never_denying_gcra();
    let hot: Arc<[Check]> = (0..limits)
        .map(|i| Check::new(hot_key(limits, i), spec))
        .collect();
    let store = store.clone();
    let next = Arc::new(AtomicU64::new(0x9e37_79b9_7f4a_7c15));
    let op: Op = Arc::new(move || {
        let (store, hot) = (store.clone(), hot.clone());
        let seed = next.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Box::pin(async move {
            let checks: Arc<[Check]> = if spread {
                // splitmix64 of a counter: a cheap, well-spread key index.
                let mut z = seed;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                let k = (z ^ (z >> 31)) % 100_000;
                (0..limits)
                    .map(|i| Check::new(format!("{{bench:{k}}}:p{i}"), spec))
                    .collect()
            } else {
                hot
            };
            matches!(store.check(&checks, 1).await, Ok(v) if v.iter().all(|v| v.allowed))
        })
    });
    Case { label, limits, op }
}

/// The script before this version (`benches/decide_v1.lua`: a hash per limit, `HMGET` +
/// `HSET` + `PEXPIRE` and a `TIME` per call), sent through a plain redis-rs multiplexed
/// connection as the old `RedisStore` sent it: the "before" of issue 16, aim 2.
async fn v1_case(
    label: &'static str,
    conn: &redis::aio::MultiplexedConnection,
    limits: usize,
) -> Case {
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(include_str!("decide_v1.lua"))
        .query_async(&mut conn.clone())
        .await
        .expect("script load");
    let spec = never_denying_gcra();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(limits);
    for i in 0..limits {
        cmd.arg(format!("tollgate:{}", hot_key(limits, i)));
    }
    cmd.arg("").arg(1).arg(1000);
    for _ in 0..limits {
        cmd.arg(0) // algorithm code: GCRA
            .arg(spec.quota())
            .arg(spec.period_ms())
            .arg(spec.burst())
            .arg(spec.interval_us());
    }
    let (cmd, conn) = (Arc::new(cmd), conn.clone());
    let op: Op = Arc::new(move || {
        let (mut conn, cmd) = (conn.clone(), cmd.clone());
        Box::pin(async move { cmd.query_async::<Vec<i64>>(&mut conn).await.is_ok() })
    });
    Case { label, limits, op }
}

fn redis_section(url: &str) {
    let secs = env_u64("TOLLGATE_BENCH_REDIS_SECS", 3, 1, 5) as f64;
    let rounds = env_u64("TOLLGATE_BENCH_REDIS_ROUNDS", 2, 1, 5);
    // The default multi-thread runtime: one worker per core (2 here).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let build = |batch_max: usize| {
            RedisStore::builder(url)
                // Generous: a shared 2-core machine must not turn queueing into errors.
                .response_timeout(Duration::from_secs(2))
                .batch_max(batch_max)
                .build()
                .expect("redis store")
        };
        let (unbatched, batched) = (build(1), build(64));
        let probe = batched
            .check(&[Check::new(REDIS_CHECK_KEY, never_denying_gcra())], 1)
            .await
            .expect("redis reachable");
        assert!(probe[0].allowed, "bench limit must never deny");
        let client = redis::Client::open(url).expect("redis url");
        let mut admin = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect");
        let raw = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connect");

        // (case, caller counts). `tollgate` is the default store (batched), the one
        // `redis-ceiling.sh` compares with redis-benchmark.
        let cases = [
            (v1_case("v1-script", &raw, 1).await, vec![1, 64]),
            (store_case("unbatched", &unbatched, 1, false), vec![1, 64]),
            (store_case("tollgate", &batched, 1, false), vec![1, 64]),
            (store_case("batched-100k-keys", &batched, 1, true), vec![64]),
            (v1_case("v1-script-8-limits", &raw, 8).await, vec![1, 64]),
            (
                store_case("unbatched-8-limits", &unbatched, 8, false),
                vec![1, 64],
            ),
            (
                store_case("batched-8-limits", &batched, 8, false),
                vec![1, 64],
            ),
        ];
        // Warm-up: connections, script cache, allocator, CPU frequency.
        for (case, _) in &cases {
            let _ = timed(16, 0.3, &case.op).await;
        }
        let first = env_u64("TOLLGATE_BENCH_REDIS_FIRST_ROUND", 1, 0, u64::MAX);
        for round in first..first + rounds {
            for (case, callers) in &cases {
                for &c in callers {
                    redis::cmd("CONFIG")
                        .arg("RESETSTAT")
                        .query_async::<()>(&mut admin)
                        .await
                        .expect("CONFIG RESETSTAT");
                    let o = timed(c, secs, &case.op).await;
                    let (calls, usec) = evalsha_stats(&mut admin).await;
                    let decisions = (o.ops + o.errors).max(1) as f64;
                    println!(
                        "TOLLGATE_REDIS {} c={c} round={round} ops={} secs={:.3} per_sec={:.0} \
                         errors={} p50_us={:.1} p99_us={:.1} calls={calls} \
                         decisions_per_call={:.2} redis_us_per_call={:.2} \
                         redis_us_per_decision={:.2} redis_us_per_limit={:.2}",
                        case.label,
                        o.ops,
                        o.secs,
                        o.ops as f64 / o.secs,
                        o.errors,
                        o.percentile_us(0.5),
                        o.percentile_us(0.99),
                        decisions / calls.max(1) as f64,
                        usec as f64 / calls.max(1) as f64,
                        usec as f64 / decisions,
                        usec as f64 / decisions / case.limits as f64,
                    );
                }
            }
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
