//! The `tollgate-sidecar` binary as operators run it: configuration errors, reload on
//! SIGHUP and on file change, graceful shutdown on SIGTERM, and a `/metrics` that
//! Prometheus' own linter (`promtool check metrics`) accepts.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-sidecar-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn write(path: &Path, text: &str) {
    // Write-then-rename, as editors and ConfigMap updates do.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
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

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill {sig}");
}

async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("http://{admin}/ready")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sidecar never became ready");
}

struct Running {
    child: Proc,
    upstream: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    path: PathBuf,
}

/// Starts a real upstream and the sidecar binary with a config file (`file_name`, one
/// policy of `rate`), and waits until it is ready.
async fn run_with_config(file_name: &str, rate: &str) -> Running {
    let upstream = common::upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file(file_name);
    write(&path, &config_text(upstream, proxy, admin, rate));
    let child = Proc(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
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

/// Runs the binary on a config file until it exits (invalid configs exit at once).
fn run_to_exit(path: &Path) -> std::process::Output {
    Command::new(BIN)
        .arg("--config")
        .arg(path)
        .output()
        .expect("run")
}

#[test]
fn invalid_configuration_exits_64_naming_file_and_field() {
    let path = temp_file("bad.toml");
    write(
        &path,
        "[upstreams.app]\nendpoints = [\"http://127.0.0.1:1\"]\n\n[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"10/fortnight\"\nkey = \"ip\"\n",
    );
    let out = run_to_exit(&path);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("policies[0].limits[0].rate"), "{err}");

    write(&path, "listen = \"0.0.0.0:8000\"\nlisen = 1\n");
    let out = run_to_exit(&path);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));

    let out = Command::new(BIN)
        .args([
            "--upstream",
            "http://127.0.0.1:1",
            "--limit",
            "10/s",
            "--failure-mode",
            "sideways",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    // The flag the user typed, not the file field it overrides.
    assert!(String::from_utf8_lossy(&out.stderr).contains("flags: --failure-mode"));

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

    for round in 0..4 {
        // A broken config, by SIGHUP: refused; the old one keeps serving.
        write(&path, &config_text(upstream, proxy, admin, "2/sometimes"));
        signal(&child.0, "-HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (_, policy) = policy_header(proxy, &format!("probe-{round}")).await;
        assert!(
            policy.contains(";q=2;") || policy.contains(";q=5;"),
            "{policy}"
        );
        // A good one, by SIGHUP: applied.
        let rate = if round % 2 == 0 { "5/m" } else { "2/m" };
        write(&path, &config_text(upstream, proxy, admin, rate));
        signal(&child.0, "-HUP");
        let want = format!(";q={};", &rate[..1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, policy) = policy_header(proxy, &format!("probe-{round}-ok")).await;
            if policy.contains(&want) {
                break;
            }
            assert!(Instant::now() < deadline, "reload never applied: {policy}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A change to the file alone, without SIGHUP, is picked up too.
    write(&path, &config_text(upstream, proxy, admin, "7/m"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, policy) = policy_header(proxy, "file-change").await;
        if policy.contains(";q=7;") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "file change never applied: {policy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let statuses = load.await.expect("load task");
    let failed: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, Ok(200) | Ok(429)))
        .collect();
    assert!(
        failed.is_empty(),
        "requests failed during reloads: {failed:?}"
    );
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tollgate_config_reloads_total{node=\"proc\",result=\"error\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let Running {
        mut child,
        proxy,
        admin,
        ..
    } = run_with_config("drain.toml", "100/m").await;
    // The upstream takes 3 s to answer /slow.
    let slow = tokio::spawn(async move { reqwest::get(format!("http://{proxy}/slow")).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child.0, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not ready while draining; no new connections accepted.
    let ready = reqwest::get(format!("http://{admin}/ready"))
        .await
        .map(|r| r.status().as_u16());
    assert!(matches!(ready, Ok(503) | Err(_)), "{ready:?}");
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "still accepting"
    );
    let res = slow
        .await
        .expect("task")
        .expect("in-flight request completed");
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("body"), "slow");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
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
    let dead = free_addr(); // nothing listens there: connection refused
    let (proxy, admin) = (free_addr(), free_addr());
    let path = temp_file("promtool.toml");
    let text = format!(
        r#"
listen = "{proxy}"
admin_listen = "{admin}"
node_id = "promtool"

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
"#,
        url = redis.url()
    );
    write(&path, &text);
    let child = Proc(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_ready(admin).await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(policy_header(proxy, "k").await.0);
    }
    // The fourth refusal comes from the deny cache.
    assert_eq!(statuses, [200, 200, 429, 429]);
    let res = common::get_url(format!("http://{proxy}/dead")).await;
    assert_eq!(res.status(), 502);
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
