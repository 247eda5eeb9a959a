//! The accuracy report against a fake decision API with real fixed-window counters.
//!
//! Three servers sharing one store behave like three sidecars sharing one limit: no key is
//! admitted beyond the policy. Three servers with their own stores behave like sidecars that
//! do not share: every key gets up to three times its limit, and the report must say so.

mod common;

use std::future::pending;
use std::sync::Arc;

use common::{check_server, config, FixedWindowStore};
use tollgate_loadgen::accuracy::Algorithm;
use tollgate_loadgen::console::Console;
use tollgate_loadgen::Summary;

/// 2 keys at 150 requests per second each for 2 s against limit 20 per 1 s window.
async fn run_against(stores: [Arc<FixedWindowStore>; 3]) -> Summary {
    let mut servers = Vec::new();
    for store in stores {
        servers.push(check_server(store).await);
    }
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let cfg = config(
        &urls,
        &[
            "--rps",
            "300",
            "--duration",
            "2",
            "--keys",
            "fixed:2",
            "--limit",
            "20",
            "--window-ms",
            "1000",
            "--algorithm",
            "fixed-window",
        ],
    );
    tollgate_loadgen::run(cfg, Console::capture().0, pending()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_limit_shows_no_over_admission() {
    let shared = Arc::new(FixedWindowStore::default());
    let s = run_against([Arc::clone(&shared), Arc::clone(&shared), shared]).await;

    assert_eq!(s.requests, 600);
    assert_eq!(s.failed, 0);
    let a = s
        .accuracy
        .as_ref()
        .expect("fixed keys have an accuracy report");
    assert_eq!(a.policy.algorithm, Algorithm::FixedWindow);
    // D is just over 2 s, so the span touches at most ceil(D / 1 s) + 1 = 4 windows → 80.
    assert_eq!(a.allowed_max_per_key, 80);
    assert_eq!(a.keys, 2);
    assert_eq!(a.excess, 0);
    assert_eq!(a.over_admission_pct, 0.0);
    // A ~2 s span holds one full window and parts of two or three more (if it starts just
    // before an edge); a part of at least 0.5 s fills its window, so each key gets 40..=80.
    assert!((80..=160).contains(&a.admitted), "{a:?}");
    assert!(
        a.per_key
            .iter()
            .all(|k| (40..=80).contains(&k.admitted) && k.admitted + k.denied == k.requests),
        "{a:?}"
    );
    assert_eq!(s.blocked + s.admitted, 600);

    let over = &s.per_key_class[0];
    assert_eq!(
        (over.class.as_str(), over.keys, over.requests),
        ("over_limit", 2, 600)
    );
    assert_eq!(over.admitted, a.admitted);
    assert_eq!(over.denied, s.blocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_limits_show_up_as_over_admission() {
    let s = run_against([Default::default(), Default::default(), Default::default()]).await;

    let a = s
        .accuracy
        .as_ref()
        .expect("fixed keys have an accuracy report");
    // Each server admits 20 per key per window on its own: about 3× the shared limit.
    assert!(a.admitted >= 240, "{a:?}");
    assert_eq!(a.keys_over, 2, "{a:?}");
    assert_eq!(
        a.excess,
        a.per_key
            .iter()
            .map(|k| k.admitted - k.allowed_max)
            .sum::<u64>()
    );
    let expected_pct = 100.0 * a.excess as f64 / (2 * a.allowed_max_per_key) as f64;
    assert!((a.over_admission_pct - expected_pct).abs() < 1e-9);
    assert!(a.over_admission_pct > 50.0, "{a:?}");
    let text = s.render();
    assert!(text.contains("over-admission:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_keys_are_never_limited_and_have_no_per_key_report() {
    let store = Arc::new(FixedWindowStore::default());
    let server = check_server(store).await;
    let cfg = config(
        &[&server.url],
        &[
            "--rps",
            "100",
            "--duration",
            "0.5",
            "--keys",
            "unique",
            "--limit",
            "1",
        ],
    );

    let s = tollgate_loadgen::run(cfg, Console::capture().0, pending()).await;

    assert_eq!((s.requests, s.admitted, s.blocked), (50, 50, 0));
    assert!(s.accuracy.is_none());
    assert_eq!(s.per_key_class[0].class, "unique");
    assert_eq!(s.per_key_class[0].requests, 50);
}
