use super::*;

fn memory(clock: ManualClock) -> MemoryStore {
    MemoryStore::builder().clock(clock).build()
}

/// The reference against itself: the suite runs, and every scenario is met.
#[tokio::test]
async fn memory_store_conforms() {
    assert_conformance(memory).await;
}

/// Verdicts of the reference alone, one per step.
fn replay(scenario: &Scenario) -> Vec<Vec<Verdict>> {
    let clock = ManualClock::new(START_US);
    let store = memory(clock.clone());
    scenario
        .steps
        .iter()
        .map(|step| {
            clock.advance(step.advance);
            store.decide(&scenario.checks, step.cost)
        })
        .collect()
}

/// The scenarios test what they claim, so a store matching the reference has those
/// properties too.
#[test]
fn scenarios_exercise_what_they_claim() {
    for algorithm in ALGORITHMS {
        let verdicts = replay(&scripted(algorithm));
        let allowed = verdicts.iter().filter(|v| v[0].allowed).count();
        assert!(
            allowed > 3 && allowed < verdicts.len(),
            "{algorithm}: {allowed}"
        );

        let scenario = refusal_reports_the_others_as_they_are(algorithm);
        let verdicts = replay(&scenario);
        let last_admitted = &verdicts[4];
        assert!(last_admitted.iter().all(|v| v.allowed), "{algorithm}");
        assert_eq!(last_admitted[1].remaining, 95, "{algorithm}");
        for refusal in &verdicts[5..8] {
            assert!(!refusal[0].allowed, "{algorithm}: the minute limit refuses");
            assert!(
                refusal[1].allowed,
                "{algorithm}: the hour limit would admit"
            );
            assert_eq!(refusal[1].remaining, 95, "{algorithm}");
            assert_eq!(refusal[1].reset_after_us, last_admitted[1].reset_after_us);
            assert_eq!(refusal[1].retry_after_us, 0, "{algorithm}");
        }
        // The same admitted requests without the refused ones in between.
        let mut without_refusals = scenario.clone();
        without_refusals.steps.drain(5..8);
        assert_eq!(
            verdicts.last(),
            replay(&without_refusals).last(),
            "{algorithm}"
        );
    }

    let verdicts = replay(&all_or_nothing());
    let last = verdicts.last().expect("steps");
    // The minute limit refuses while the hour limit would admit.
    assert!(verdicts.iter().any(|v| !v[1].allowed && v[2].allowed));
    assert_eq!((last[1].remaining, last[2].remaining), (0, 95));
}

#[test]
fn random_scenarios_are_reproducible_and_varied() {
    assert_eq!(random(7), random(7));
    let all: Vec<_> = (0..RANDOM_SEQUENCES).map(random).collect();
    for algorithm in ALGORITHMS {
        assert!(all
            .iter()
            .any(|s| s.checks.iter().any(|c| c.spec.algorithm() == algorithm)));
    }
    assert!(all.iter().any(|s| s.checks.len() == 3));
}

/// Reports one unit more than is left.
struct OffByOne(MemoryStore);

impl Store for OffByOne {
    fn kind(&self) -> &'static str {
        "off-by-one"
    }

    fn check<'a>(
        &'a self,
        checks: &'a [Check],
        cost: u64,
    ) -> crate::store::StoreFuture<'a, Vec<Verdict>> {
        let mut verdicts = self.0.decide(checks, cost);
        for v in &mut verdicts {
            v.remaining += 1;
        }
        Box::pin(std::future::ready(Ok(verdicts)))
    }

    fn ping(&self) -> crate::store::StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Decides each limit on its own: a limit that admits consumes even when another
/// refuses the request (not all or nothing).
struct OneByOne(MemoryStore);

impl Store for OneByOne {
    fn kind(&self) -> &'static str {
        "one-by-one"
    }

    fn check<'a>(
        &'a self,
        checks: &'a [Check],
        cost: u64,
    ) -> crate::store::StoreFuture<'a, Vec<Verdict>> {
        let verdicts = checks
            .iter()
            .map(|c| self.0.decide(std::slice::from_ref(c), cost)[0])
            .collect();
        Box::pin(std::future::ready(Ok(verdicts)))
    }

    fn ping(&self) -> crate::store::StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[tokio::test]
async fn a_wrong_remaining_is_reported() {
    let mismatch = conformance(|clock| OffByOne(memory(clock)))
        .await
        .expect_err("remaining + 1 must not pass");
    assert_eq!(
        (mismatch.scenario.as_str(), mismatch.step),
        ("scripted-gcra", 0)
    );
    let text = mismatch.to_string();
    assert!(text.contains("remaining: 4"), "{text}");
    assert!(text.contains("remaining: 5"), "{text}");
}

#[tokio::test]
async fn consuming_on_refusal_is_reported() {
    let mismatch = conformance(|clock| OneByOne(memory(clock)))
        .await
        .expect_err("a store that is not all or nothing must not pass");
    // Single-limit scenarios cannot tell; the first multi-limit one does.
    assert_eq!(mismatch.scenario, "all-or-nothing", "{mismatch}");
}

#[tokio::test]
#[should_panic(expected = "store disagrees with MemoryStore")]
async fn assert_conformance_panics_on_a_mismatch() {
    assert_conformance(|clock| OffByOne(memory(clock))).await;
}
