//! **Simulated** nodes for the lease curve beyond three sidecars (issue 13).
//!
//! `loadgen/bench/lease-curve.sh` measures real sidecar processes (1–3 of them) through
//! HTTP. This extends the curve to more nodes than that script starts, in one process:
//! each simulated node is a `tollgate::RateLimiter` with its **own** `RedisStore` (its own
//! connection) on one real `redis-server`, so leases, slices and returns are exactly the
//! sidecar's; what is *not* real is the HTTP in front and the separate processes and
//! machines (every node shares this process's cores and clock). Results are labelled
//! "simulated" wherever they are printed or published.
//!
//! Two measurements per node count and consistency, on one hot key:
//! - **decisions/s**: `callers` closed-loop tasks per node call `decide_one` for
//!   `seconds` under a limit so high that every call admits (100 million per hour, fixed
//!   window); this is the ceiling the store puts on one key (exact: one Redis script per
//!   decision; leased: one per slice).
//! - **admitted ÷ ideal**: open-loop arrivals at `mult` × the limit (default 2×, the
//!   issue's aim), spread evenly over the nodes or 90 % on node 0, against
//!   `limit`/s with a burst of `limit` (GCRA); ideal = min(requests, burst + limit ×
//!   elapsed), what an exact limiter may admit at most.
//!
//! ```text
//! cargo build --release -p tollgate-sidecar --example lease_sim
//! redis-server --port 6390 --save '' --appendonly no &
//! target/release/examples/lease_sim redis://127.0.0.1:6390 --nodes 1,3,6,12 --seconds 3
//! ```
//!
//! Bounded: every phase runs `seconds`, each arrival task stops at its deadline, and a
//! call that outlives the limiter's timeout is a failed decision, not a hang. Loopback
//! Redis only (the URL is refused unless it names 127.0.0.1 or localhost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::key::Key;
use tollgate::policy::{Consistency, Limit};
use tollgate::store::RedisStore;
use tollgate::{Algorithm, DecisionKind, LeaseConfig, LimitSpec, RateLimiter};

struct Args {
    redis: String,
    nodes: Vec<usize>,
    seconds: f64,
    callers: usize,
    limit: u64,
    mult: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let redis = it.next().ok_or("usage: lease_sim REDIS_URL [--nodes 1,3,6,12] [--seconds 3] [--callers 16] [--limit 2000] [--mult 2]")?;
    if !(redis.starts_with("redis://127.0.0.1") || redis.starts_with("redis://localhost")) {
        return Err(format!(
            "{redis}: loopback Redis only (redis://127.0.0.1:PORT)"
        ));
    }
    let mut args = Args {
        redis,
        nodes: vec![1, 3, 6, 12],
        seconds: 3.0,
        callers: 16,
        limit: 2000,
        mult: 2.0,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--nodes" => {
                args.nodes = value
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?;
                if args.nodes.iter().any(|&n| n == 0 || n > 64) {
                    return Err(bad(&"each count must be 1 to 64"));
                }
            }
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--callers" => args.callers = value.parse().map_err(|e| bad(&e))?,
            "--limit" => args.limit = value.parse().map_err(|e| bad(&e))?,
            "--mult" => args.mult = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err("--seconds must be in (0, 60]".into());
    }
    if args.callers == 0
        || args.callers > 256
        || args.limit == 0
        || args.mult.is_nan()
        || args.mult <= 0.0
    {
        return Err("--callers 1..=256, --limit > 0, --mult > 0".into());
    }
    Ok(args)
}

/// `nodes` limiters, each with its own connection to `redis` under `prefix`.
fn nodes(redis: &str, prefix: &str, nodes: usize) -> Vec<RateLimiter> {
    (0..nodes)
        .map(|_| {
            let store = RedisStore::builder(redis.to_owned())
                .prefix(prefix.to_owned())
                .response_timeout(Duration::from_millis(200))
                .build()
                .expect("a loopback Redis URL builds");
            RateLimiter::builder()
                .store(store)
                .timeout(Duration::from_millis(500))
                .lease(LeaseConfig::new())
                .build()
                .expect("default settings build")
        })
        .collect()
}

fn limit(algorithm: Algorithm, quota: u64, period: Duration, consistency: Consistency) -> Limit {
    let spec =
        LimitSpec::new(algorithm, quota, period, None).expect("a positive rate is a valid spec");
    Limit::new("sim", spec, Key::global()).with_consistency(consistency)
}

/// Closed-loop decisions/s on one never-refusing hot key.
async fn throughput(args: &Args, n: usize, consistency: Consistency, run: u64) -> f64 {
    let limiters = nodes(&args.redis, &format!("sim{run}"), n);
    // A hundred million per hour, fixed window: never the bottleneck. Not GCRA: a GCRA lease is
    // spendable only while the store's backlog covers it, which at a rate far above the
    // traffic is microseconds, so the throughput would measure that rule, not leasing.
    let limit = Arc::new(limit(
        Algorithm::FixedWindow,
        100_000_000,
        Duration::from_secs(3600),
        consistency,
    ));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for _ in 0..args.callers {
            let (limiter, limit, done) = (limiter.clone(), limit.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    // Every answer counts as a decision; with this limit they all admit.
                    if limiter.decide_one(&limit, "hot", 1).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for limiter in &limiters {
        limiter.return_leases().await;
    }
    rate
}

/// Open-loop arrivals at `mult` × the limit; returns (requests, admitted, ideal).
async fn accuracy(
    args: &Args,
    n: usize,
    consistency: Consistency,
    uneven: bool,
    run: u64,
) -> (u64, u64, u64) {
    let limiters = nodes(&args.redis, &format!("sim{run}"), n);
    let limit = Arc::new(limit(
        Algorithm::Gcra,
        args.limit,
        Duration::from_secs(1),
        consistency,
    ));
    let offered = args.limit as f64 * args.mult;
    let (requests, admitted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for (i, limiter) in limiters.iter().enumerate() {
        let share = match (uneven, n) {
            (_, 1) | (false, _) => 1.0 / n as f64,
            (true, _) if i == 0 => 0.9,
            (true, _) => 0.1 / (n - 1) as f64,
        };
        // Arrivals every 1/rate s on a timer that catches up (open loop); each decision
        // is its own task so a slow one never delays the next arrival.
        let period = Duration::from_secs_f64(1.0 / (offered * share));
        let (limiter, limit) = (limiter.clone(), limit.clone());
        let (requests, admitted) = (requests.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = Vec::new();
            loop {
                tick.tick().await;
                if Instant::now() >= deadline {
                    break;
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let (limiter, limit, admitted) = (limiter.clone(), limit.clone(), admitted.clone());
                inflight.push(tokio::spawn(async move {
                    if let Ok(d) = limiter.decide_one(&limit, "hot", 1).await {
                        if d.kind == DecisionKind::Allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for limiter in &limiters {
        limiter.return_leases().await;
    }
    let requests = requests.load(Ordering::Relaxed);
    let allowed = args.limit + (args.limit as f64 * elapsed) as u64;
    (
        requests,
        admitted.load(Ordering::Relaxed),
        requests.min(allowed),
    )
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lease_sim: {e}");
            std::process::exit(64);
        }
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut run = run * 1000;
    println!(
        "## SIMULATED nodes (one process, one RedisStore each, one redis-server): {} s per cell, {} callers per node",
        args.seconds, args.callers
    );
    println!();
    println!("| nodes (simulated) | consistency | hot-key decisions/s | leased ÷ exact | admitted ÷ ideal at {}× even | at {}× 90 % on one |", args.mult, args.mult);
    println!("|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let mut exact_rate = 0.0;
        for consistency in [Consistency::Exact, Consistency::Leased] {
            run += 1;
            let rate = throughput(&args, n, consistency, run).await;
            if consistency == Consistency::Exact {
                exact_rate = rate;
            }
            run += 1;
            let (req, adm, ideal) = accuracy(&args, n, consistency, false, run).await;
            run += 1;
            let uneven = if n > 1 {
                let (_, adm_u, ideal_u) = accuracy(&args, n, consistency, true, run).await;
                format!(
                    "{:.2} % ({adm_u}/{ideal_u})",
                    100.0 * adm_u as f64 / ideal_u.max(1) as f64
                )
            } else {
                "—".into()
            };
            println!(
                "| {n} | {consistency} | {rate:.0} | {} | {:.2} % ({adm}/{ideal} of {req}) | {uneven} |",
                if consistency == Consistency::Leased {
                    format!("{:.1}×", rate / exact_rate.max(1.0))
                } else {
                    "1×".into()
                },
                100.0 * adm as f64 / ideal.max(1) as f64,
            );
        }
    }
}
