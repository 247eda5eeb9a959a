//! Envoy's rate limit service on real sockets: a tonic client built from the same
//! protos (envoy-types) against in-process sidecars and the binary, with real
//! redis-server processes for the shared and failure cases.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tollgate_sidecar::config::{ConfigSource, FileConfig, RedisSection, RlsSection};
use tollgate_sidecar::Sidecar;
use tonic::transport::Channel;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");
const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;
const SECOND: i32 = 1;
const MINUTE: i32 = 2;
const HOUR: i32 = 3;

/// A directory of its own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-rls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// Writes `name` (write-then-rename, as editors and ConfigMaps do).
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Running {
    rls: SocketAddr,
    admin: SocketAddr,
    state: tollgate_sidecar::runtime::Shared,
    stores: std::sync::Arc<tollgate_sidecar::runtime::Stores>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn file_config(rules: &Path, redis: Option<(String, &str)>) -> FileConfig {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut file = FileConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        node_id: Some(format!("rls-{}", NEXT.fetch_add(1, Ordering::Relaxed))),
        rls: RlsSection {
            listen: Some("127.0.0.1:0".into()),
            config: Some(rules.display().to_string()),
        },
        ..FileConfig::default()
    };
    if let Some((url, mode)) = redis {
        file.redis = Some(RedisSection {
            url,
            timeout_ms: Some(50),
            ..RedisSection::default()
        });
        file.limiter.failure_mode = Some(mode.into());
    }
    file
}

async fn start(file: FileConfig) -> Running {
    let config = file.validate("test").expect("valid config");
    assert!(!config.proxy_enabled, "no upstream: the proxy is off");
    let sidecar = Sidecar::bind(config).await.expect("bind");
    assert!(sidecar.proxy_addr().is_err());
    let rls = sidecar.rls_addr().expect("rls bound");
    let admin = sidecar.admin_addr().expect("admin");
    let (state, stores) = (sidecar.state(), sidecar.stores());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(sidecar.run(async {
        let _ = stopped.await;
    }));
    Running {
        rls,
        admin,
        state,
        stores,
        stop,
        done,
    }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean stop");
    }
}

async fn client(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    RateLimitServiceClient::new(channel)
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: hits,
    }
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    r: RateLimitRequest,
) -> Result<RateLimitResponse, tonic::Status> {
    c.should_rate_limit(r)
        .await
        .map(tonic::Response::into_inner)
}

async fn ok(c: &mut RateLimitServiceClient<Channel>, r: RateLimitRequest) -> RateLimitResponse {
    ask(c, r).await.expect("answered")
}

/// (code, requests_per_unit, unit, remaining) of each status.
fn summary(r: &RateLimitResponse) -> Vec<(i32, u32, i32, u32)> {
    r.statuses
        .iter()
        .map(|s: &DescriptorStatus| {
            let (n, unit) = s
                .current_limit
                .as_ref()
                .map_or((0, 0), |l| (l.requests_per_unit, l.unit));
            (s.code, n, unit, s.limit_remaining)
        })
        .collect()
}

/// A value no earlier run used, so counters in a shared Redis start at zero.
fn unique() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{nanos}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Waits until at least `need` seconds remain in the current `unit`-long window, so a
/// sequence of calls is not split by a window boundary.
async fn clear_of_boundary(unit: u64, need: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let into = now.as_secs() % unit;
    if unit - into < need {
        let wait =
            Duration::from_secs(unit - into) - Duration::from_nanos(u64::from(now.subsec_nanos()));
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
    }
}

const RULES: &str = "
domain: shop
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: user
    value: vip
    rate_limit: {unit: hour, requests_per_unit: 5, name: vip}
  - key: path
    value: /login*
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: org
    value: acme
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 2}
  - key: health
    rate_limit: {unlimited: true}
  - key: dry
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: tokens
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 60, algorithm: gcra}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_match_count_and_answer_with_every_status_field() {
    let dir = TempDir::new();
    let rules = dir.write("shop.yaml", RULES);
    let sidecar = start(file_config(&rules, None)).await;
    let mut c = client(sidecar.rls).await;
    let u = unique();

    // Per-unit limit, wildcard key: each distinct value counts on its own.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(summary(
            &ok(
                &mut c,
                request("shop", vec![descriptor(&[("user", &u)])], 0),
            )
            .await,
        ));
    }
    assert_eq!(
        seen,
        [
            vec![(OK, 3, HOUR, 2)],
            vec![(OK, 3, HOUR, 1)],
            vec![(OK, 3, HOUR, 0)],
            vec![(OVER, 3, HOUR, 0)],
        ]
    );
    let other = ok(
        &mut c,
        request("shop", vec![descriptor(&[("user", &format!("{u}-b"))])], 1),
    )
    .await;
    assert_eq!(summary(&other), [(OK, 3, HOUR, 2)]);

    // The most specific value wins, with its name; reset within the hour.
    let vip = ok(
        &mut c,
        request("shop", vec![descriptor(&[("user", "vip")])], 1),
    )
    .await;
    let status = &vip.statuses[0];
    let limit = status.current_limit.as_ref().expect("limit");
    assert_eq!((limit.name.as_str(), limit.requests_per_unit), ("vip", 5));
    let reset = status.duration_until_reset.as_ref().expect("reset").seconds;
    assert!((1..=3600).contains(&reset), "{reset}");
    assert_eq!(vip.overall_code, OK);
    // IETF draft-11 fields for Envoy to add to the response.
    let headers: Vec<(&str, &str)> = vip
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert!(
        headers.contains(&("ratelimit-policy", "\"vip\";q=5;w=3600")),
        "{headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| *k == "ratelimit" && v.starts_with("\"vip\";r=")),
        "{headers:?}"
    );

    // Wildcard value (`/login*`) and nested descriptors.
    let login = |v: &str| request("shop", vec![descriptor(&[("path", v)])], 1);
    assert_eq!(
        summary(&ok(&mut c, login(&format!("/login/{u}"))).await)[0].3,
        1
    );
    assert_eq!(
        summary(&ok(&mut c, login("/logout")).await),
        [(OK, 0, 0, 0)]
    );
    let nested = |user: &str| {
        request(
            "shop",
            vec![descriptor(&[("org", "acme"), ("user", user)])],
            1,
        )
    };
    let n: Vec<_> = [
        ok(&mut c, nested(&u)).await,
        ok(&mut c, nested(&u)).await,
        ok(&mut c, nested(&u)).await,
    ]
    .iter()
    .flat_map(summary)
    .collect();
    assert_eq!(n, [(OK, 2, 4, 1), (OK, 2, 4, 0), (OVER, 2, 4, 0)]);
    // Only the first level: no limit there.
    let top = ok(
        &mut c,
        request("shop", vec![descriptor(&[("org", "acme")])], 1),
    )
    .await;
    assert_eq!(summary(&top), [(OK, 0, 0, 0)]);

    // Unlimited, unknown domain, unmatched.
    let free = ok(
        &mut c,
        request("shop", vec![descriptor(&[("health", "x")])], 1),
    )
    .await;
    assert_eq!(summary(&free), [(OK, 0, 0, u32::MAX)]);
    let unknown = ok(
        &mut c,
        request("nope", vec![descriptor(&[("user", "x")])], 1),
    )
    .await;
    assert_eq!(
        (unknown.overall_code, summary(&unknown)),
        (OK, vec![(OK, 0, 0, 0)])
    );

    // Shadow mode: over the limit, answered OK, counted as shadow_over_limit.
    let dry = || request("shop", vec![descriptor(&[("dry", &u)])], 1);
    ok(&mut c, dry()).await;
    let second = ok(&mut c, dry()).await;
    assert_eq!((second.overall_code, second.statuses[0].code), (OK, OK));

    // GCRA by extension: remaining after one of 60 per minute.
    let g = ok(
        &mut c,
        request("shop", vec![descriptor(&[("gcra", &u)])], 1),
    )
    .await;
    assert_eq!(summary(&g), [(OK, 60, MINUTE, 59)]);

    // Invalid requests: gRPC INVALID_ARGUMENT, as the reference.
    let empty = ask(&mut c, request("shop", vec![], 1))
        .await
        .expect_err("no descriptors");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    let no_domain = ask(&mut c, request("", vec![descriptor(&[("a", "b")])], 1)).await;
    assert_eq!(
        no_domain.expect_err("no domain").code(),
        tonic::Code::InvalidArgument
    );

    // Metrics: the domain, the rule's place (not the value) and the result.
    let text = common::metrics_text(sidecar.admin).await;
    let node = sidecar.state.load().config.node_id.clone();
    let count = |descriptor: &str, result: &str| {
        common::metric(
            &text,
            "tollgate_rls_descriptors_total",
            &[
                ("node", &node),
                ("domain", "shop"),
                ("descriptor", descriptor),
                ("result", result),
            ],
        )
    };
    assert_eq!(count("user", "ok"), Some(4.0), "{text}");
    assert_eq!(count("user", "over_limit"), Some(1.0));
    assert_eq!(count("dry", "shadow_over_limit"), Some(1.0));
    assert_eq!(count("health", "unlimited"), Some(1.0));
    let calls = |domain: &str, code: &str| {
        common::metric(
            &text,
            "tollgate_rls_requests_total",
            &[("node", &node), ("domain", domain), ("code", code)],
        )
    };
    assert_eq!(calls("(unknown)", "ok"), Some(1.0));
    assert_eq!(calls("shop", "invalid"), Some(1.0));
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_addend_and_the_limit_override() {
    let dir = TempDir::new();
    let rules = dir.write("shop.yaml", RULES);
    let sidecar = start(file_config(&rules, None)).await;
    let mut c = client(sidecar.rls).await;
    let u = unique();
    let tokens = || descriptor(&[("tokens", &u)]);

    // Request-level hits: 3 of 10.
    let r = ok(&mut c, request("shop", vec![tokens()], 3)).await;
    assert_eq!(summary(&r), [(OK, 10, HOUR, 7)]);
    // The descriptor's own hits win over the request's.
    let mut five = tokens();
    five.hits_addend = Some(UInt64Value { value: 5 });
    let r = ok(&mut c, request("shop", vec![five], 3)).await;
    assert_eq!(summary(&r), [(OK, 10, HOUR, 2)]);
    // Too many: over, and (atomic) not counted.
    let r = ok(&mut c, request("shop", vec![tokens()], 3)).await;
    assert_eq!(
        (r.overall_code, summary(&r)),
        (OVER, vec![(OVER, 10, HOUR, 0)])
    );
    let r = ok(&mut c, request("shop", vec![tokens()], 2)).await;
    assert_eq!(summary(&r), [(OK, 10, HOUR, 0)]);

    // The request's own limit replaces the configuration's.
    let mut custom = descriptor(&[("anything", &u)]);
    custom.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: HOUR,
    });
    let got: Vec<_> = [
        ok(&mut c, request("shop", vec![custom.clone()], 1)).await,
        ok(&mut c, request("shop", vec![custom.clone()], 1)).await,
        ok(&mut c, request("shop", vec![custom.clone()], 1)).await,
    ]
    .iter()
    .flat_map(summary)
    .collect();
    assert_eq!(
        got,
        [(OK, 2, HOUR, 1), (OK, 2, HOUR, 0), (OVER, 2, HOUR, 0)]
    );
    sidecar.stop().await;
}

/// Envoy's token-quota pattern: check with `hits_addend: 0` before the upstream call,
/// debit the real cost after. It needs `atomic: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_false_records_the_debit_that_crosses_the_limit() {
    let dir = TempDir::new();
    let quota =
        "descriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 100}\n";
    dir.write("a.yaml", &format!("domain: tokens-atomic\n{quota}"));
    dir.write(
        "b.yml",
        &format!("domain: tokens-reference\natomic: false\n{quota}"),
    );
    let sidecar = start(file_config(&dir.0, None)).await;
    let mut c = client(sidecar.rls).await;
    let u = unique();
    let run = |domain: &'static str| {
        let mut c = c.clone();
        let u = u.clone();
        async move {
            let mut codes = Vec::new();
            for hits in [0, 80, 0, 50, 0] {
                let mut d = descriptor(&[("tenant", &u)]);
                d.hits_addend = Some(UInt64Value { value: hits });
                let r = ok(&mut c, request(domain, vec![d], 1)).await;
                codes.push((r.statuses[0].code, r.statuses[0].limit_remaining));
            }
            codes
        }
    };
    // The reference's behaviour: the crossing debit is recorded (up to the limit), so
    // the next check is refused.
    assert_eq!(
        run("tokens-reference").await,
        [(OK, 100), (OK, 20), (OK, 20), (OVER, 0), (OVER, 0)]
    );
    // All-or-nothing: the crossing debit is refused and never recorded.
    assert_eq!(
        run("tokens-atomic").await,
        [(OK, 100), (OK, 20), (OK, 20), (OVER, 0), (OK, 20)]
    );
    // The reference's own token-quota run (integration-test/scripts/token-quota.sh):
    // 2 per unit, a check of 0 before and a debit of 1 after each request: requests
    // 1 to 3 pass the check, the 4th is refused.
    let v = unique();
    let mut passed = Vec::new();
    for _ in 0..4 {
        let mut check = descriptor(&[("service", &v)]);
        check.hits_addend = Some(UInt64Value { value: 0 });
        check.limit = Some(RateLimitOverride {
            requests_per_unit: 2,
            unit: HOUR,
        });
        let r = ok(&mut c, request("tokens-reference", vec![check.clone()], 1)).await;
        passed.push(r.overall_code == OK);
        if r.overall_code == OK {
            check.hits_addend = Some(UInt64Value { value: 1 });
            ok(&mut c, request("tokens-reference", vec![check], 1)).await;
        }
    }
    assert_eq!(passed, [true, true, true, false]);
    sidecar.stop().await;
}

/// envoyproxy/ratelimit's integration test (`testBasicBaseConfig`, basic.yaml and
/// another.yaml): same configuration, same sequence, same codes and remaining counts.
/// All-or-nothing gives the reference's `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT`
/// expectations; `atomic: false` its default ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_reference_integration_sequence() {
    let dir = TempDir::new();
    let basic = "domain: basic
descriptors:
  - key: key1
    rate_limit:
      unit: second
      requests_per_unit: 50
  - key: one_per_minute
    rate_limit:
      unit: minute
      requests_per_unit: 1
";
    let another = "descriptors:
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: key3
    rate_limit:
      unit: hour
      requests_per_unit: 10
";
    dir.write("basic.yaml", basic);
    dir.write("another.yaml", &format!("domain: another\n{another}"));
    dir.write(
        "another-reference.yaml",
        &format!("domain: another-reference\natomic: false\n{another}"),
    );
    let sidecar = start(file_config(&dir.0, None)).await;
    let mut c = client(sidecar.rls).await;

    let r = ok(
        &mut c,
        request("foo", vec![descriptor(&[("hello", "world")])], 1),
    )
    .await;
    assert_eq!((r.overall_code, summary(&r)), (OK, vec![(OK, 0, 0, 0)]));
    clear_of_boundary(1, 1).await;
    let r = ok(
        &mut c,
        request("basic", vec![descriptor(&[("key1", "foo")])], 1),
    )
    .await;
    assert_eq!(
        (r.overall_code, summary(&r)),
        (OK, vec![(OK, 50, SECOND, 49)])
    );

    for (domain, stop_when_over) in [("another", true), ("another-reference", false)] {
        clear_of_boundary(60, 5).await;
        let v = unique();
        for i in 0..25u32 {
            let r = ok(
                &mut c,
                request(domain, vec![descriptor(&[("key2", &v)])], 1),
            )
            .await;
            let (code, remaining) = if i >= 20 {
                (OVER, 0)
            } else {
                (OK, 20 - (i + 1))
            };
            assert_eq!(
                (r.overall_code, summary(&r)),
                (code, vec![(code, 20, MINUTE, remaining)]),
                "{domain} {i}"
            );
            assert!(r.statuses[0]
                .duration_until_reset
                .as_ref()
                .is_some_and(|d| (1..=60).contains(&d.seconds)));
        }
        let v = unique();
        for i in 0..15u32 {
            let r = ok(
                &mut c,
                request(
                    domain,
                    vec![descriptor(&[("key2", &v)]), descriptor(&[("key3", &v)])],
                    1,
                ),
            )
            .await;
            let mut code = OK;
            let mut remaining1 = 20 - (i + 1);
            let mut remaining2 = 10u32.saturating_sub(i + 1);
            if i >= 10 {
                code = OVER;
                remaining2 = 0;
                if stop_when_over {
                    remaining1 = 10;
                }
            }
            assert_eq!(
                (r.overall_code, summary(&r)),
                (
                    code,
                    vec![(OK, 20, MINUTE, remaining1), (code, 10, HOUR, remaining2)]
                ),
                "{domain} {i}"
            );
        }
    }
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_old_rules_serving() {
    let dir = TempDir::new();
    let rules = dir.write("shop.yaml", "domain: shop\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n");
    let file = file_config(&rules, None);
    let sidecar = start(file.clone()).await;
    let mut c = client(sidecar.rls).await;
    let u = unique();
    let k = || request("shop", vec![descriptor(&[("k", &u)])], 1);
    assert_eq!(summary(&ok(&mut c, k()).await), [(OK, 1, HOUR, 0)]);

    let source = ConfigSource::new(None).with_overrides(move |f| {
        *f = file.clone();
        Ok(())
    });
    dir.write("shop.yaml", "domain: shop\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 9}\n");
    let error = source.load().expect_err("broken");
    assert_eq!(error.origin, rules.display().to_string());
    assert_eq!(error.field, "line 3");
    assert!(
        error.reason.contains("rate_limit.unit") && error.reason.contains("fortnight"),
        "{error}"
    );
    assert!(!tollgate_sidecar::reload::reload(
        &source,
        &sidecar.state,
        &sidecar.stores
    ));
    assert_eq!(
        summary(&ok(&mut c, k()).await),
        [(OVER, 1, HOUR, 0)],
        "the old rules serve"
    );

    dir.write("shop.yaml", "domain: shop\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 3}\n");
    assert!(tollgate_sidecar::reload::reload(
        &source,
        &sidecar.state,
        &sidecar.stores
    ));
    // Same counter (domain, values, unit): one used, two left after this one.
    assert_eq!(summary(&ok(&mut c, k()).await), [(OK, 3, HOUR, 1)]);
    sidecar.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_answers_by_the_failure_mode_within_the_timeout() {
    let mut redis = support::RedisServer::start();
    let dir = TempDir::new();
    let rules = dir.write("shop.yaml", RULES);
    let open = start(file_config(&rules, Some((redis.url(), "open")))).await;
    let closed = start(file_config(&rules, Some((redis.url(), "closed")))).await;
    let (mut o, mut cl) = (client(open.rls).await, client(closed.rls).await);
    let u = unique();
    let r = || request("shop", vec![descriptor(&[("user", &u)])], 1);
    assert_eq!(summary(&ok(&mut o, r()).await), [(OK, 3, HOUR, 2)]);
    assert_eq!(
        summary(&ok(&mut cl, r()).await),
        [(OK, 3, HOUR, 1)],
        "one Redis, one counter"
    );

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let answer = ok(&mut o, r()).await;
        assert_eq!(answer.overall_code, OK);
        let refused = ask(&mut cl, r()).await.expect_err("fail closed");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    open.stop().await;
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_on_one_redis_admit_exactly_the_limit() {
    let redis = support::RedisServer::start();
    let dir = TempDir::new();
    let rules = dir.write(
        "shared.yaml",
        "domain: shared\ndescriptors:\n  - key: api\n    rate_limit: {unit: day, requests_per_unit: 25}\n",
    );
    let mut sidecars = Vec::new();
    for _ in 0..3 {
        let mut file = file_config(&rules, Some((redis.url(), "closed")));
        if let Some(r) = file.redis.as_mut() {
            r.timeout_ms = Some(1000);
        }
        file.limiter.timeout_ms = Some(1000);
        sidecars.push(start(file).await);
    }
    let u = unique();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, s) in sidecars.iter().enumerate() {
        for _ in 0..4 {
            let (addr, u) = (s.rls, u.clone());
            tasks.spawn(async move {
                let mut c = client(addr).await;
                let mut admitted = 0;
                for _ in 0..5 {
                    let r = ok(
                        &mut c,
                        request("shared", vec![descriptor(&[("api", &u)])], 1),
                    )
                    .await;
                    admitted += usize::from(r.overall_code == OK);
                }
                (n, admitted)
            });
        }
    }
    let mut total = 0;
    let deadline = Duration::from_secs(30);
    while let Some(done) = tokio::time::timeout(deadline, tasks.join_next())
        .await
        .expect("in time")
    {
        total += done.expect("task").1;
    }
    assert_eq!(total, 25, "60 calls through 3 sidecars, limit 25");
    for s in sidecars {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_reports_serving() {
    let dir = TempDir::new();
    let rules = dir.write("shop.yaml", RULES);
    let sidecar = start(file_config(&rules, None)).await;
    let channel = Channel::from_shared(format!("http://{}", sidecar.rls))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "envoy.service.ratelimit.v3.RateLimitService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    sidecar.stop().await;
}

#[test]
fn the_binary_refuses_a_bad_yaml_with_exit_64_naming_file_line_and_field() {
    let dir = TempDir::new();
    let rules = dir.write(
        "bad.yaml",
        "domain: shop\ndescriptors:\n  - key: k\n    rate_limt: {unit: hour, requests_per_unit: 1}\n",
    );
    let out = std::process::Command::new(BIN)
        .args([
            "--rls-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--rls-config",
        ])
        .arg(&rules)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: line 4: descriptors[0]: unknown field `rate_limt`",
            rules.display()
        )),
        "{stderr}"
    );
    // Half of the pair is an error too, naming the field.
    let out = std::process::Command::new(BIN)
        .args(["--rls-listen", "127.0.0.1:0", "--check-config"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rls.config"));
    // Without an upstream and without the service, the upstream is still required.
    let out = std::process::Command::new(BIN)
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstreams"));
}

/// The binary reloads the YAML when a file of its directory changes and on SIGHUP; a
/// broken file leaves the last good rules serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_the_yaml_on_change_and_keeps_serving_on_a_broken_file() {
    let dir = TempDir::new();
    let rules = |n: u32| {
        format!("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: {n}}}\n")
    };
    dir.write("d.yaml", &rules(5));
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    };
    let (admin, rls) = (free(), free());
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Child(
        std::process::Command::new(BIN)
            .args([
                "--admin-listen",
                &admin.to_string(),
                "--rls-listen",
                &rls.to_string(),
            ])
            .arg("--rls-config")
            .arg(&dir.0)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        if let Ok(channel) = Channel::from_shared(format!("http://{rls}"))
            .expect("uri")
            .timeout(Duration::from_secs(5))
            .connect()
            .await
        {
            break RateLimitServiceClient::new(channel);
        }
        assert!(
            Instant::now() < deadline,
            "the rate limit service did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let u = unique();
    async fn until(c: &RateLimitServiceClient<Channel>, u: &str, want: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = ok(
                &mut c.clone(),
                request("d", vec![descriptor(&[("k", u)])], 0),
            )
            .await;
            let limit = r.statuses[0]
                .current_limit
                .as_ref()
                .map_or(0, |l| l.requests_per_unit);
            if limit == want {
                return;
            }
            assert!(Instant::now() < deadline, "limit never became {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    until(&c, &u, 5).await;
    // A file change is picked up within a second or so.
    dir.write("d.yaml", &rules(7));
    until(&c, &u, 7).await;
    // A broken file: refused, the last good rules serve.
    dir.write(
        "d.yaml",
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: lightyear}\n",
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    until(&c, &u, 7).await;
    // A new file in the directory, then SIGHUP: both domains serve.
    dir.write("d.yaml", &rules(9));
    dir.write(
        "e.yaml",
        "domain: e\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 4}\n",
    );
    let pid = child.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    until(&c, &u, 9).await;
    let e = ok(&mut c, request("e", vec![descriptor(&[("k", &u)])], 1)).await;
    assert_eq!(summary(&e), [(OK, 4, HOUR, 3)]);
    drop(child);
}
