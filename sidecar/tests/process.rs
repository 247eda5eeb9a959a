//! The `tollgate-sidecar` binary as operators run it: configuration errors, reload on
//! SIGHUP and on file change, graceful shutdown on SIGTERM, and a `/metrics` that
//! Prometheus' own linter (`promtool check metrics`) accepts.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    eventually, free_addr, metric_value, ready_status, signal, spawn_with_config, temp_file,
    wait_ready, write, Proc, TempPath,
};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

/// One `ShouldRateLimit` call to the rate limit service at `addr`.
async fn rls_call(addr: SocketAddr) {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    let request = RateLimitRequest {
        domain: "d".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "k".into(),
                value: "v".into(),
            }],
            ..RateLimitDescriptor::default()
        }],
        hits_addend: 1,
    };
    let answer = RateLimitServiceClient::new(channel)
        .should_rate_limit(request)
        .await
        .expect("answered");
    assert_eq!(answer.into_inner().statuses.len(), 1);
}

fn config_text(upstream: SocketAddr, proxy: SocketAddr, admin: SocketAddr, rate: &str) -> String {
    format!(
        r#"
listen = "{proxy}"
admin_listen = "{admin}"
node_id = "proc"

[proxy]
shutdown_grace_ms = 5000

[upstreams.app]
endpoints = ["http://{upstream}"]

[[policies]]
name = "limited"
path_prefix = "/echo/limited"

[[policies.limits]]
name = "per-key"
rate = "{rate}"
key = "header:x-api-key"
"#
    )
}

/// The admin `/metrics` text.
async fn metrics(admin: SocketAddr) -> String {
    common::get_url(format!("http://{admin}/metrics"))
        .await
        .text()
        .await
        .expect("metrics text")
}

const RELOAD_ERRORS: &str = "tollgate_config_reloads_total{node=\"proc\",result=\"error\"}";

async fn reload_errors(admin: SocketAddr) -> f64 {
    metric_value(&metrics(admin).await, RELOAD_ERRORS)
}

/// Waits (at most 5 s) until more reloads than `before` were refused; the new count.
async fn refused_beyond(admin: SocketAddr, before: f64, what: &str) -> f64 {
    eventually(what, Duration::from_secs(5), || async {
        let errors = reload_errors(admin).await;
        if errors > before {
            Ok(errors)
        } else {
            Err(format!("{RELOAD_ERRORS} {errors}"))
        }
    })
    .await
}

/// Waits (at most 5 s) until the sidecar has a proxied request in flight.
async fn wait_in_flight(admin: SocketAddr) {
    eventually(
        "the slow request in flight",
        Duration::from_secs(5),
        || async {
            let line = metrics(admin).await;
            let n = metric_value(&line, "tollgate_proxy_in_flight{node=\"proc\"}");
            if n >= 1.0 {
                Ok(())
            } else {
                Err(format!("tollgate_proxy_in_flight {n}"))
            }
        },
    )
    .await;
}

/// Waits (at most 10 s) for the sidecar to exit; its exit status.
async fn wait_exit(child: &mut Proc) -> std::process::ExitStatus {
    eventually("exit after draining", Duration::from_secs(10), || {
        let exited = child.0.try_wait().expect("wait");
        async move { exited.ok_or_else(|| "still running".to_owned()) }
    })
    .await
}

struct Running {
    child: Proc,
    upstream: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// The config file; its directory is removed when the test ends.
    path: TempPath,
}

/// Starts a real upstream and the sidecar binary with a config file (`file_name`, one
/// policy of `rate`), and waits until it is ready.
async fn run_with_config(file_name: &str, rate: &str) -> Running {
    let upstream = common::upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file(file_name);
    write(&path, &config_text(upstream, proxy, admin, rate));
    let child = spawn_with_config(&path);
    wait_ready(admin).await;
    Running {
        child,
        upstream,
        proxy,
        admin,
        path,
    }
}

async fn policy_header(proxy: SocketAddr, key: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .get(format!("http://{proxy}/echo/limited"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("send");
    let policy = res
        .headers()
        .get("ratelimit-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (res.status().as_u16(), policy)
}

/// The stderr of the binary run with `args`, which must refuse them with exit 64 (an
/// invalid configuration exits at once).
fn refused<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> String {
    let out = Command::new(BIN).args(args).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    err
}

/// [`refused`] for the config file at `path`.
fn refused_file(path: &Path) -> String {
    refused([std::ffi::OsStr::new("--config"), path.as_os_str()])
}

#[test]
fn invalid_configuration_exits_64_naming_file_and_field() {
    let path = temp_file("bad.toml");
    write(
        &path,
        "[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n\n[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"10/fortnight\"\nkey = \"ip\"\n",
    );
    let err = refused_file(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("policies[0].limits[0].rate"), "{err}");

    // A trusted proxy that is not a network: the file, the field and the reason.
    write(
        &path,
        "[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n[limiter]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
    );
    let err = refused_file(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("trusted_proxies") && err.contains("longer than the address"),
        "{err}"
    );
    let err = refused([
        "--upstream",
        "http://127.0.0.1:1",
        "--trusted-proxy",
        "10.0.0/8",
    ]);
    assert!(
        err.contains("--trusted-proxy") && err.contains("\"10.0.0/8\" is not a network"),
        "{err}"
    );

    // Worker threads: 0 and an absurd count are refused, from the file and the flag.
    write(
        &path,
        "workers = 0\n[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n",
    );
    let err = refused_file(&path);
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("workers")
            && err.contains("between 1 and 1024"),
        "{err}"
    );
    let err = refused(["--upstream", "http://127.0.0.1:1", "--workers", "5000"]);
    assert!(
        err.contains("--workers") && err.contains("5000 is not between 1 and 1024"),
        "{err}"
    );

    write(&path, "listen = \"0.0.0.0:8000\"\nlisen = 1\n");
    assert!(refused_file(&path).contains("unknown field"));

    // Two Redis topologies at once: exit 64 naming both flags.
    let err = refused([
        "--upstream",
        "http://127.0.0.1:1",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--redis-cluster",
        "redis://127.0.0.1:2,redis://127.0.0.1:3",
    ]);
    assert!(
        err.contains("--redis-url") && err.contains("--redis-cluster"),
        "{err}"
    );
    // Sentinels without a master name: exit 64 naming the field.
    let err = refused([
        "--upstream",
        "http://127.0.0.1:1",
        "--redis-sentinel",
        "redis://127.0.0.1:2",
    ]);
    assert!(err.contains("redis.master"), "{err}");

    let err = refused([
        "--upstream",
        "http://127.0.0.1:1",
        "--limit",
        "10/s",
        "--failure-mode",
        "sideways",
    ]);
    // The error names the flag the user typed.
    assert!(err.contains("--failure-mode"), "{err}");

    let out = Command::new(BIN)
        .env("TOLLGATE_UPSTREAM", "http://127.0.0.1:1")
        .env("TOLLGATE_LIMIT", "10/s,burst=20")
        .env("TOLLGATE_KEY", "header:x-api-key")
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configuration OK"
    );
}

/// Polls until the proxy's policy header has `;q=<quota>;` (the config with that rate is
/// the one serving).
async fn wait_for_quota(proxy: SocketAddr, quota: &str, probe_key: &str, within: Duration) {
    let want = format!(";q={quota};");
    eventually(
        &format!("a config with quota {quota} serving"),
        within,
        || async {
            let (_, policy) = policy_header(proxy, probe_key).await;
            if policy.contains(&want) {
                Ok(())
            } else {
                Err(policy)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn reload_applies_good_configs_and_keeps_serving_through_bad_ones() {
    let Running {
        child,
        upstream,
        proxy,
        admin,
        path,
    } = run_with_config("reload.toml", "2/m").await;
    assert_eq!(
        policy_header(proxy, "a").await,
        (200, "\"per-key\";q=2;w=60".into())
    );

    // Traffic runs through every reload below; none of it may fail.
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for i in 0..400 {
            let res = client
                .get(format!("http://{proxy}/echo/limited"))
                .header("x-api-key", format!("load-{}", i % 7))
                .send()
                .await;
            statuses.push(res.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    });

    // Besides SIGHUP, the sidecar polls the file every second: a bad file may be read (and
    // refused) once more by the poll, and a good one applied before its SIGHUP. So what is
    // guaranteed is: each bad config adds at least one refusal and never replaces the one
    // serving; each good config is served soon after its SIGHUP.
    let mut serving = "2";
    for round in 0..4 {
        let errors_before = reload_errors(admin).await;
        write(&path, &config_text(upstream, proxy, admin, "2/sometimes"));
        signal(&child.0, "-HUP");
        let errors = refused_beyond(admin, errors_before, "the bad config refused").await;
        assert!(
            errors >= f64::from(round + 1),
            "{errors} refusals after round {round}"
        );
        let (status, policy) = policy_header(proxy, &format!("probe-{round}")).await;
        assert_eq!(status, 200);
        assert!(
            policy.contains(&format!(";q={serving};")),
            "the config with quota {serving} should still serve, got {policy}"
        );

        let rate = if round % 2 == 0 { "5/m" } else { "2/m" };
        write(&path, &config_text(upstream, proxy, admin, rate));
        signal(&child.0, "-HUP");
        serving = &rate[..1];
        wait_for_quota(
            proxy,
            serving,
            &format!("probe-{round}-ok"),
            Duration::from_secs(5),
        )
        .await;
    }

    // A change to the file alone, without SIGHUP, is picked up too.
    write(&path, &config_text(upstream, proxy, admin, "7/m"));
    wait_for_quota(proxy, "7", "file-change", Duration::from_secs(10)).await;

    let statuses = load.await.expect("load task");
    let failed: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, Ok(200) | Ok(429)))
        .collect();
    assert!(
        failed.is_empty(),
        "requests failed during reloads: {failed:?}"
    );
    let errors = reload_errors(admin).await;
    assert!(errors >= 4.0, "{RELOAD_ERRORS} {errors}, want at least 4");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let Running {
        mut child,
        proxy,
        admin,
        path: _path,
        ..
    } = run_with_config("drain.toml", "100/m").await;
    // The upstream takes 3 s to answer /slow.
    let slow = tokio::spawn(async move { reqwest::get(format!("http://{proxy}/slow")).await });
    wait_in_flight(admin).await;
    signal(&child.0, "-TERM");
    // Not ready while draining, and no new connections accepted.
    eventually(
        "/ready not 200 after SIGTERM",
        Duration::from_secs(5),
        || async {
            match ready_status(admin).await {
                Ok(200) => Err("200".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    eventually("the proxy port closed", Duration::from_secs(5), || async {
        match tokio::net::TcpStream::connect(proxy).await {
            Ok(_) => Err("still accepting".to_owned()),
            Err(_) => Ok(()),
        }
    })
    .await;
    let res = slow
        .await
        .expect("task")
        .expect("in-flight request completed");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("body"), "slow");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

/// `workers = 1`, a single-threaded runtime: the proxy limits and forwards, `/config`
/// shows the value, a reload that changes it is refused while the running configuration
/// keeps serving, and SIGTERM still drains a request in flight before exiting 0.
#[tokio::test]
async fn one_worker_limits_refuses_a_worker_reload_and_drains() {
    let upstream = common::upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file("one-worker.toml");
    let text = |workers: usize| {
        format!(
            "workers = {workers}\n{}",
            config_text(upstream, proxy, admin, "3/m")
        )
    };
    write(&path, &text(1));
    let mut child = spawn_with_config(&path);
    wait_ready(admin).await;

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(policy_header(proxy, "one").await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let config: serde_json::Value = common::get_url(format!("http://{admin}/config"))
        .await
        .json()
        .await
        .expect("/config is JSON");
    assert_eq!(config["workers"], 1, "{config}");

    let errors_before = reload_errors(admin).await;
    write(&path, &text(2));
    signal(&child.0, "-HUP");
    refused_beyond(admin, errors_before, "the worker change refused").await;
    // Still the running configuration: the key's budget is still spent.
    assert_eq!(policy_header(proxy, "one").await.0, 429);
    assert_eq!(policy_header(proxy, "two").await.0, 200);

    let slow = tokio::spawn(async move { reqwest::get(format!("http://{proxy}/slow")).await });
    wait_in_flight(admin).await;
    signal(&child.0, "-TERM");
    let res = slow
        .await
        .expect("task")
        .expect("in-flight request completed");
    assert_eq!(res.status(), 200);
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

#[test]
fn test_files_are_removed_with_their_directory() {
    let path = temp_file("gone.toml");
    write(&path, "lisen = 1\n");
    refused_file(&path);
    let folder = path.dir.clone();
    assert!(folder.exists());
    drop(path);
    assert!(!folder.exists(), "{} left behind", folder.display());
}

/// The words of `text` with punctuation around them trimmed (`header:NAME,` → `header:NAME`).
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| matches!(c, ',' | ';' | '.' | '(' | ')' | '[' | ']')))
        .collect()
}

/// The help text of one option: from its flag to the next line that starts with another.
fn option_help<'a>(help: &'a str, flag: &str) -> &'a str {
    let start = help
        .find(&format!("{flag} "))
        .unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
    let rest = &help[start + flag.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i)
        .find(|&i| rest[i + 1..].trim_start().starts_with('-'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn help_names_every_key_kind_and_the_conventional_env_aliases() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);

    // The key kinds the library's parser accepts, from its own error message
    // ("expected header:NAME, ip, …, global or const:VALUE"), so a kind added there
    // must be documented here too; and the tuple form.
    let reason = tollgate::key::Key::parse_with("no-such-kind", &[])
        .expect_err("an unknown kind is refused")
        .reason
        .to_string();
    let kinds: Vec<&str> = reason
        .strip_prefix("expected ")
        .unwrap_or_else(|| panic!("parser message changed shape: {reason}"))
        .split([',', ' '])
        .filter(|w| !w.is_empty() && *w != "or")
        .collect();
    assert!(kinds.len() >= 9, "{kinds:?}");
    let key_help = words(option_help(&help, "--key"));
    for kind in kinds.iter().chain(&["a+b"]) {
        assert!(
            key_help.contains(kind),
            "--key help does not name {kind}: {key_help:?}"
        );
    }

    // The consistencies the library accepts, from its own message ("expected exact or
    // leased"), named in --consistency's help, with the env twin the issue names.
    let reason = "no-such"
        .parse::<tollgate::policy::Consistency>()
        .expect_err("an unknown consistency is refused")
        .to_string();
    let values: Vec<&str> = reason
        .split_once("expected ")
        .unwrap_or_else(|| panic!("parser message changed shape: {reason}"))
        .1
        .split([',', ' '])
        .filter(|w| !w.is_empty() && *w != "or")
        .collect();
    assert!(values.len() >= 2, "{values:?}");
    let consistency_help = words(option_help(&help, "--consistency"));
    for value in values.iter().chain(&["TOLLGATE_CONSISTENCY"]) {
        assert!(
            consistency_help.iter().any(|w| w.contains(value)),
            "--consistency help does not name {value}: {consistency_help:?}"
        );
    }

    // REDIS_URL and NODE_ID on their own, not only inside TOLLGATE_REDIS_URL / _NODE_ID.
    for (flag, alias) in [("--redis-url", "REDIS_URL"), ("--node-id", "NODE_ID")] {
        let text = words(option_help(&help, flag));
        assert!(
            text.contains(&alias),
            "{flag} help does not mention {alias}: {text:?}"
        );
    }
}

/// The metric families `docs/metrics.md` lists: the first cell of each table row that
/// names one of the two prefixes.
fn documented_families() -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
        .filter(|name| name.starts_with("ratelimiter_") || name.starts_with("tollgate_"))
        .collect()
}

/// Every family the sidecar and its limiter emit, made to appear with real traffic (a
/// pass, 429s, one from the deny cache, an upstream error, a reload, a Redis outage
/// answered by the local fallback), then the whole `/metrics` piped to
/// `promtool check metrics`, which must accept it; the families shown and those
/// `docs/metrics.md` lists must be the same, each with a `# HELP` line.
#[tokio::test]
async fn metrics_pass_promtool_and_match_the_docs() {
    let mut redis = support::RedisServer::start();
    let upstream = common::upstream().await;
    let (_held, dead) = common::refusing_addr(); // connections refused
    let (proxy, admin, rls) = (free_addr(), free_addr(), free_addr());
    let path = temp_file("promtool.toml");
    // Envoy's rate limit service too, so that its families are shown.
    let rules = path.with_file_name("rules.yaml");
    write(
        &rules,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 5}\n",
    );
    let text = format!(
        r#"
listen = "{proxy}"
admin_listen = "{admin}"
node_id = "promtool"

[rls]
listen = "{rls}"
config = "{rules}"

[redis]
url = "{url}"
timeout_ms = 500

[limiter]
failure_mode = "local"
timeout_ms = 500

[upstreams.app]
endpoints = ["http://{upstream}"]

[upstreams.dead]
endpoints = ["http://{dead}"]

[[routes]]
path_prefix = "/dead"
upstream = "dead"

[[routes]]
upstream = "app"

[[policies]]
name = "limited"
path_prefix = "/echo/limited"

[[policies.limits]]
name = "per-key"
rate = "2/m"
key = "header:x-api-key"

# A leased limit, so that the lease families are shown too.
[[policies]]
name = "leased"
path_prefix = "/echo/leased"

[[policies.limits]]
name = "budget"
rate = "1000/h"
key = "global"
consistency = "leased"
"#,
        url = redis.url(),
        rules = rules.display()
    );
    write(&path, &text);
    let child = spawn_with_config(&path);
    wait_ready(admin).await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(policy_header(proxy, "k").await.0);
    }
    // The fourth refusal comes from the deny cache.
    assert_eq!(statuses, [200, 200, 429, 429]);
    let res = common::get_url(format!("http://{proxy}/dead")).await;
    assert_eq!(res.status(), 502);
    rls_call(rls).await;
    signal(&child.0, "-HUP");
    // Redis gone: the store error is counted and the local fallback decides.
    redis.kill();
    assert_eq!(policy_header(proxy, "other").await.0, 200);

    let want = documented_families();
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = common::metrics_text(admin).await;
        let shown: std::collections::BTreeSet<String> = metrics
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        if shown == want {
            break metrics;
        }
        // The reload is asynchronous; anything else missing will not come.
        assert!(
            Instant::now() < deadline,
            "families shown and documented differ:\nshown only: {:?}\ndocumented only: {:?}",
            shown.difference(&want).collect::<Vec<_>>(),
            want.difference(&shown).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for family in &want {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{metrics}"
        );
    }

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {promtool:?} ({e}); run scripts/test.sh, which installs it \
                 (Debian package `prometheus`)"
            )
        });
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write to promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(child);
}
