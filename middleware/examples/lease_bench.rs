//! Hot key, leased vs exact: decisions/s of one `RateLimiter` against one real
//! `redis-server`, in the same run (issue 13; docs/benchmarks.md, "Leased budgets").
//!
//! ```sh
//! cargo run --release -p tollgate --example lease_bench
//! ```
//!
//! Starts its own `redis-server` on a free 127.0.0.1 port (the harness of
//! `tests/support/`) and kills it on exit. Each round measures exact first and leased
//! second (interleaved, so a noisy neighbour hits both): `CALLERS` tasks share one
//! limiter and call `decide_one` on **one** key for `SECS` seconds — GCRA, 10^9 per day,
//! so nothing is ever refused and every exact decision is Redis's admit-and-write path.
//! Around each measurement `CONFIG RESETSTAT` / `INFO commandstats` count the EVALSHA
//! calls Redis actually ran (leases and give-backs included).
//!
//! Knobs (environment, all optional and clamped): `SECS` (1..=10, default 3), `ROUNDS`
//! (1..=4, default 2), `CALLERS` (1..=256, default 64). Output lines start with `BENCH`.

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{env_u64, info_field};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::RedisServer;
use tollgate::algorithm::Verdict;
use tollgate::key::Key;
use tollgate::policy::{Consistency, Limit};
use tollgate::store::{Charged, Check, RedisStore, Store, StoreFuture};
use tollgate::{Algorithm, DecisionKind, LeaseConfig, LimitSpec, RateLimiter};

/// EVALSHA calls since the last `CONFIG RESETSTAT`.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]).unwrap_or_default();
    info_field(&info, "cmdstat_evalsha:", "calls").unwrap_or(0)
}

/// The store, counting what the limiter asks of it: exact decisions (`check`), leases
/// (`charge`) and give-backs, so the output says where the Redis calls go.
struct Counted {
    inner: RedisStore,
    checks: AtomicU64,
    charges: AtomicU64,
    give_backs: AtomicU64,
}

impl Counted {
    /// (checks, charges, give-backs) since the last call.
    fn take(&self) -> (u64, u64, u64) {
        (
            self.checks.swap(0, Ordering::Relaxed),
            self.charges.swap(0, Ordering::Relaxed),
            self.give_backs.swap(0, Ordering::Relaxed),
        )
    }
}

impl Store for Counted {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check<'a>(&'a self, checks: &'a [Check], cost: u64) -> StoreFuture<'a, Vec<Verdict>> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.inner.check(checks, cost)
    }

    fn charge<'a>(&'a self, check: &'a Check, units: u64) -> StoreFuture<'a, Charged> {
        self.charges.fetch_add(1, Ordering::Relaxed);
        self.inner.charge(check, units)
    }

    fn give_back<'a>(&'a self, check: &'a Check, mark: i64, units: u64) -> StoreFuture<'a, ()> {
        self.give_backs.fetch_add(1, Ordering::Relaxed);
        self.inner.give_back(check, mark, units)
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.inner.ping()
    }
}

/// `callers` tasks deciding `limit` on one key until `secs` pass: (admitted, other, s).
async fn run(limiter: &RateLimiter, limit: &Limit, callers: u64, secs: f64) -> (u64, u64, f64) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (limiter, limit, ok, bad) =
                (limiter.clone(), limit.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                let (mut good, mut other) = (0u64, 0u64);
                // Bounded in time (the deadline) and in count.
                for _ in 0..50_000_000u64 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match limiter.decide_one(&limit, "hot", 1).await {
                        Ok(d) if d.kind == DecisionKind::Allowed => good += 1,
                        Ok(d) => {
                            if other == 0 {
                                eprintln!("BENCH first other decision: {:?}", d.kind);
                            }
                            other += 1;
                        }
                        Err(_) => other += 1,
                    }
                }
                ok.fetch_add(good, Ordering::Relaxed);
                bad.fetch_add(other, Ordering::Relaxed);
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

#[tokio::main]
async fn main() {
    let secs = env_u64("SECS", 3, 1, 10) as f64;
    let rounds = env_u64("ROUNDS", 2, 1, 4);
    let callers = env_u64("CALLERS", 64, 1, 256);
    let server = RedisServer::start();
    // Generous timeouts: on a loaded machine the 50 ms defaults time out healthy calls.
    let store = Arc::new(Counted {
        inner: RedisStore::builder(server.url())
            .response_timeout(Duration::from_millis(250))
            .build()
            .expect("valid url"),
        checks: AtomicU64::new(0),
        charges: AtomicU64::new(0),
        give_backs: AtomicU64::new(0),
    });
    let limiter = RateLimiter::builder()
        .shared_store(store.clone())
        .timeout(Duration::from_millis(250))
        .lease(LeaseConfig::new())
        .build()
        .expect("valid limiter");
    let spec = LimitSpec::new(
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(86_400),
        None,
    )
    .expect("valid spec");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "BENCH setup callers={callers} secs={secs} rounds={rounds} loadavg_before={}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut best = [0f64; 2];
    for round in 1..=rounds {
        for (i, consistency) in [Consistency::Exact, Consistency::Leased]
            .into_iter()
            .enumerate()
        {
            // A limit name per run: each starts from a fresh key and a cold lease.
            let name = format!("{}{round}", consistency.as_str());
            let limit = Limit::new(name, spec, Key::global()).with_consistency(consistency);
            server
                .cli(&["CONFIG", "RESETSTAT"])
                .expect("CONFIG RESETSTAT");
            store.take();
            let (ok, other, took) = run(&limiter, &limit, callers, secs).await;
            let calls = evalsha_calls(&server);
            let (checks, charges, give_backs) = store.take();
            let per_sec = ok as f64 / took;
            best[i] = best[i].max(per_sec);
            println!(
                "BENCH {} round={round} decisions={ok} other={other} secs={took:.2} \
                 per_sec={per_sec:.0} redis_evalsha={calls} decisions_per_redis_call={:.1} \
                 exact_calls={checks} leases={charges} give_backs={give_backs}",
                consistency.as_str(),
                ok as f64 / calls.max(1) as f64,
            );
        }
    }
    limiter.return_leases().await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "BENCH best exact_per_sec={:.0} leased_per_sec={:.0} ratio={:.1} loadavg_after={}",
        best[0],
        best[1],
        best[1] / best[0].max(1.0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
