//! The store conformance suite: a new [`Store`] proves itself with one call.
//!
//! [`conformance`] replays scripted scenarios and seeded random sequences against the
//! store under test and, step by step, against a [`MemoryStore`] (the reference)
//! driven by the same [`ManualClock`]. Every verdict — allowed, remaining, reset and
//! retry times — must be equal. The scenarios cover the three algorithms, bursts,
//! idle gaps longer than a period, costly and zero-cost requests, and multi-limit
//! batches that must be all or nothing, including refusals where another limit would
//! have admitted (that limit must report its state as it is, not as if consumed).
//! Some batches [span](Scenario::spanning) several Redis Cluster hash slots: a store
//! that cannot decide them atomically (the cluster store charges slot by slot and
//! refunds) must still give the same verdicts when requests come one at a time.
//!
//! The store must read the clock it is given (the Redis store: `RedisStoreBuilder::clock`);
//! a store clocked by anything else cannot agree step by step. The suite asks for a
//! new store per scenario; each scenario also uses keys of its own, so a factory that
//! hands out views of one shared backend (one Redis, one prefix) works too, as long
//! as it starts empty.
//!
//! ```
//! use tollgate::store::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! tollgate::testing::assert_conformance(|clock| MemoryStore::builder().clock(clock).build()).await;
//! # }
//! ```
//!
//! For property tests (with proptest or anything else), build a [`Scenario`] from
//! generated limits and steps and run it with [`run_scenario`]: the suite itself has
//! no random-testing dependency, its random sequences come from a fixed-seed
//! generator so a failure names a seed that reproduces it.

use std::fmt;
use std::time::Duration;

use crate::algorithm::{Algorithm, LimitSpec, Verdict};
use crate::clock::ManualClock;
use crate::store::{Check, MemoryStore, Store, StoreError};

/// The instant every scenario starts at: far from zero like a real clock, and aligned
/// to every window the scenarios use.
pub const START_US: i64 = 1_700_000_040_000_000;

/// How many seeded random sequences [`conformance`] runs after the scripted scenarios.
pub const RANDOM_SEQUENCES: u64 = 48;

/// How many of them (the first ones) [span](Scenario::spanning) hash slots.
pub const SPANNING_SEQUENCES: u64 = 16;

/// One request of a [`Scenario`]: move the clock, then decide at that cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How far the clock moves before the request.
    pub advance: Duration,
    /// The request's cost.
    pub cost: u64,
}

impl Step {
    /// A request of `cost`, `advance` after the previous one.
    pub fn new(advance: Duration, cost: u64) -> Self {
        Step { advance, cost }
    }
}

/// A batch of limits and the requests sent against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Names the scenario in a [`Mismatch`].
    pub name: String,
    /// The limits every request is checked against, as one batch.
    pub checks: Vec<Check>,
    /// The requests, in order.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// A scenario over `limits` (a label and a spec each). The keys share a Redis
    /// Cluster hash tag made of the name, so a cluster store can decide them in one
    /// script, and differ from every other scenario's.
    pub fn new<L: fmt::Display>(
        name: impl Into<String>,
        limits: impl IntoIterator<Item = (L, LimitSpec)>,
        steps: Vec<Step>,
    ) -> Self {
        Scenario::keyed(name.into(), limits, steps, |name, label| {
            format!("{{{name}}}:{label}")
        })
    }

    /// As [`Scenario::new`], but each limit gets a hash tag of its own (name and
    /// label), as a policy whose limits use different keys does: in a Redis Cluster the
    /// batch spans slots.
    pub fn spanning<L: fmt::Display>(
        name: impl Into<String>,
        limits: impl IntoIterator<Item = (L, LimitSpec)>,
        steps: Vec<Step>,
    ) -> Self {
        Scenario::keyed(name.into(), limits, steps, |name, label| {
            format!("{{{name}:{label}}}:{label}")
        })
    }

    fn keyed<L: fmt::Display>(
        name: String,
        limits: impl IntoIterator<Item = (L, LimitSpec)>,
        steps: Vec<Step>,
        key: impl Fn(&str, &L) -> String,
    ) -> Self {
        let checks = limits
            .into_iter()
            .map(|(label, spec)| Check::new(key(&name, &label), spec))
            .collect();
        Scenario {
            name,
            checks,
            steps,
        }
    }
}

/// Where a store under test parted from the reference.
#[derive(Debug)]
#[non_exhaustive]
pub struct Mismatch {
    /// The scenario's name.
    pub scenario: String,
    /// The step (0-based) whose verdicts differ.
    pub step: usize,
    /// That step's cost.
    pub cost: u64,
    /// The batch.
    pub checks: Vec<Check>,
    /// The reference's verdicts.
    pub expected: Vec<Verdict>,
    /// The store's verdicts, or its error.
    pub actual: Result<Vec<Verdict>, StoreError>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "store disagrees with MemoryStore in scenario {:?}, step {} (cost {}):",
            self.scenario, self.step, self.cost
        )?;
        for check in &self.checks {
            write!(f, "\n  check {:?}: {}", check.key, check.spec)?;
        }
        write!(f, "\n  expected: {:?}", self.expected)?;
        match &self.actual {
            Ok(verdicts) => write!(f, "\n  got:      {verdicts:?}"),
            Err(error) => write!(f, "\n  got error: {error}"),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Runs every scenario ([`scenarios`]) against a store from `make_store` and the
/// reference.
///
/// `make_store` is called once per scenario with the clock the store must read.
///
/// # Errors
///
/// The first [`Mismatch`]: a verdict that differs from [`MemoryStore`]'s, or an error
/// from the store.
pub async fn conformance<S, F>(mut make_store: F) -> Result<(), Mismatch>
where
    S: Store,
    F: FnMut(ManualClock) -> S,
{
    for scenario in scenarios() {
        run_scenario(&scenario, &mut make_store).await?;
    }
    Ok(())
}

/// [`conformance`], panicking with a readable report on the first mismatch.
///
/// # Panics
///
/// When the store disagrees with the reference or fails.
pub async fn assert_conformance<S, F>(make_store: F)
where
    S: Store,
    F: FnMut(ManualClock) -> S,
{
    if let Err(mismatch) = conformance(make_store).await {
        panic!("{mismatch}");
    }
}

/// Runs one scenario against a fresh store from `make_store` and a fresh reference,
/// both clocked by one [`ManualClock`] starting at [`START_US`].
///
/// Even steps go through [`Store::check_now`] when the store answers it (as the
/// limiter does first), odd steps through [`Store::check`], so both paths are held to
/// the reference.
///
/// # Errors
///
/// The first [`Mismatch`].
pub async fn run_scenario<S, F>(scenario: &Scenario, make_store: F) -> Result<(), Mismatch>
where
    S: Store,
    F: FnOnce(ManualClock) -> S,
{
    let clock = ManualClock::new(START_US);
    let reference = MemoryStore::builder().clock(clock.clone()).build();
    let store = make_store(clock.clone());
    let checks = &scenario.checks;
    for (i, step) in scenario.steps.iter().enumerate() {
        clock.advance(step.advance);
        let expected = reference.decide(checks, step.cost);
        let now = if i % 2 == 0 {
            store.check_now(checks, step.cost)
        } else {
            None
        };
        let actual = match now {
            Some(answer) => answer,
            None => store.check(checks, step.cost).await,
        };
        if actual.as_ref().ok() != Some(&expected) {
            return Err(Mismatch {
                scenario: scenario.name.clone(),
                step: i,
                cost: step.cost,
                checks: checks.clone(),
                expected,
                actual,
            });
        }
    }
    Ok(())
}

/// Every scenario [`conformance`] runs: the scripted ones, then [`RANDOM_SEQUENCES`]
/// seeded random ones.
pub fn scenarios() -> Vec<Scenario> {
    let mut all = Vec::new();
    for algorithm in ALGORITHMS {
        all.push(scripted(algorithm));
    }
    all.push(all_or_nothing());
    for algorithm in ALGORITHMS {
        all.push(refusal_reports_the_others_as_they_are(algorithm));
    }
    // The same multi-limit scenarios with one hash slot per limit.
    for scenario in all.clone().into_iter().skip(ALGORITHMS.len()) {
        all.push(spanning(scenario));
    }
    all.extend(
        (0..RANDOM_SEQUENCES).map(|seed| match seed < SPANNING_SEQUENCES {
            true => spanning(random(seed)),
            false => random(seed),
        }),
    );
    all
}

/// `scenario` with one hash tag per limit.
fn spanning(scenario: Scenario) -> Scenario {
    let name = format!("{}-spanning", scenario.name);
    let limits: Vec<_> = scenario
        .checks
        .iter()
        .enumerate()
        .map(|(i, check)| (i, check.spec))
        .collect();
    Scenario::spanning(name, limits, scenario.steps)
}

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::Gcra,
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
];

fn spec(algorithm: Algorithm, quota: u64, period_ms: u64, burst: Option<u64>) -> LimitSpec {
    LimitSpec::new(algorithm, quota, Duration::from_millis(period_ms), burst)
        .expect("the suite's limits are valid")
}

fn steps(list: &[(u64, u64)]) -> Vec<Step> {
    list.iter()
        .map(|&(ms, cost)| Step::new(Duration::from_millis(ms), cost))
        .collect()
}

/// One `5 per 10 s` limit: bursts, a steady trickle, idle gaps longer than the period,
/// requests costing more than what is left and more than the whole quota, cost 0.
fn scripted(algorithm: Algorithm) -> Scenario {
    Scenario::new(
        format!("scripted-{algorithm}"),
        [("k", spec(algorithm, 5, 10_000, None))],
        steps(&[
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 2),
            (0, 1),
            (0, 1),
            (1999, 1),
            (1, 1),
            (500, 3),
            (9_000, 1),
            (1, 6),
            (0, 0),
            (25_000, 5),
            (0, 1),
            (3_333, 1),
            (6_667, 2),
            (10_000, 1),
            (123, 1),
            (4_321, 4),
        ]),
    )
}

/// Three limits of three algorithms attempted at 2.5 requests/s: the per-second limit
/// refuses some, the per-minute one then refuses the rest, and the hour limit must
/// have counted only the admitted ones. A cost-0 request reads the final state.
fn all_or_nothing() -> Scenario {
    let mut list = vec![(0, 1)];
    list.extend([(400, 1); 11]);
    list.push((400, 0));
    Scenario::new(
        "all-or-nothing",
        [
            ("burst", spec(Algorithm::Gcra, 2, 1000, None)),
            ("minute", spec(Algorithm::SlidingWindow, 5, 60_000, None)),
            ("hour", spec(Algorithm::FixedWindow, 100, 3_600_000, None)),
        ],
        steps(&list),
    )
}

/// `5/m` and `100/h`: five admitted, three refused by the minute limit while the hour
/// limit would admit (it must report 95 left and its reset as before, not 94), then,
/// once the minute has recovered, a request that must see what it would have seen had
/// the refused ones never been sent.
fn refusal_reports_the_others_as_they_are(algorithm: Algorithm) -> Scenario {
    Scenario::new(
        format!("refusal-as-is-{algorithm}"),
        [
            ("per-minute", spec(algorithm, 5, 60_000, None)),
            ("per-hour", spec(algorithm, 100, 3_600_000, None)),
        ],
        steps(&[
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (150_000, 1),
        ]),
    )
}

/// A random scenario from `seed`: one to three limits (any algorithm, quota 1–19, a
/// period from 1 s to 1 h, sometimes a GCRA burst), one to 39 requests up to 4 s apart
/// costing 0–5 (the same ranges as the property tests in `tests/conformance.rs`).
pub fn random(seed: u64) -> Scenario {
    const LABELS: [&str; 3] = ["0", "1", "2"];
    const PERIODS_MS: [u64; 5] = [1_000, 3_000, 10_000, 60_000, 3_600_000];
    let mut rng = SplitMix64(seed);
    let limits: Vec<_> = LABELS[..1 + rng.below(3) as usize]
        .iter()
        .map(|&label| {
            let algorithm = ALGORITHMS[rng.below(3) as usize];
            let quota = 1 + rng.below(19);
            let period = PERIODS_MS[rng.below(5) as usize];
            let burst =
                (algorithm == Algorithm::Gcra && rng.below(2) == 1).then(|| 1 + rng.below(29));
            (label, spec(algorithm, quota, period, burst))
        })
        .collect();
    let steps = (0..1 + rng.below(39))
        .map(|_| Step::new(Duration::from_micros(rng.below(4_000_000)), rng.below(6)))
        .collect();
    Scenario::new(format!("random-{seed}"), limits, steps)
}

/// A tiny, well-known generator (Steele, Lea and Flood's SplitMix64): fixed seeds give
/// the same sequences on every machine, without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (the slight modulo bias does not matter for test inputs).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests;
