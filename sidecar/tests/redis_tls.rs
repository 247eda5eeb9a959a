//! The sidecar against a real `redis-server` with TLS and ACL users, with certificates
//! the test makes: exact decisions shared over TLS, a password read from a file that
//! never reaches the command line, each misconfiguration reported with its own `kind`
//! in the metrics and in `/ready`, and exit 64 for every bad flag or field.

mod common;
#[path = "../../middleware/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, free_addr, get_url, metric, metrics_text, Proc};
use support::tls::{path_str, Pki, MINIMAL_ACL};
use support::RedisServer;
use tollgate_sidecar::config::{FileConfig, RedisSection};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

fn set_user(server: &RedisServer, name: &str, password: &str, rules: &[&str]) {
    let pass = format!(">{password}");
    let mut args = vec!["ACL", "SETUSER", name, "on", &pass];
    args.extend_from_slice(rules);
    assert_eq!(server.cli(&args).as_deref().map(str::trim), Some("OK"));
}

fn redis(url: String) -> RedisSection {
    RedisSection {
        url,
        // Generous for a loaded machine: a handshake plus a script.
        timeout_ms: Some(2000),
        ..RedisSection::default()
    }
}

fn with_redis(upstream: SocketAddr, section: RedisSection) -> FileConfig {
    let mut file = common::config(upstream, "5/m", "header:x-api-key");
    file.redis = Some(section);
    file.limiter.timeout_ms = Some(2000);
    file
}

async fn status(proxy: SocketAddr, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{proxy}/echo/limited"))
        .header("x-api-key", key)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

async fn ready(admin: SocketAddr) -> (u16, serde_json::Value) {
    let response = get_url(format!("http://{admin}/ready")).await;
    let code = response.status().as_u16();
    (code, response.json().await.expect("ready json"))
}

#[tokio::test]
async fn two_sidecars_on_a_tls_redis_with_a_private_ca_admit_exactly_the_limit() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", false));
    let upstream = common::upstream().await;
    let section = RedisSection {
        ca_file: Some(path_str(&pki.path("ca.pem"))),
        ..redis(server.tls_url("localhost"))
    };
    let a = common::start(with_redis(upstream, section.clone())).await;
    let b = common::start(with_redis(upstream, section)).await;
    let mut admitted = 0;
    for i in 0..14 {
        let proxy = if i % 2 == 0 { a.proxy } else { b.proxy };
        match status(proxy, "shared").await {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(ready(a.admin).await.0, 200);
    // /config shows the CA file's path, never a file's contents.
    let config = get_url(format!("http://{}/config", a.admin))
        .await
        .text()
        .await
        .expect("config");
    assert!(config.contains("ca.pem"), "{config}");
    assert!(!config.contains("BEGIN CERTIFICATE"), "{config}");
}

#[tokio::test]
async fn a_server_from_another_ca_is_refused_reported_as_tls_and_not_ready() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("other-server", false));
    let upstream = common::upstream().await;
    let section = RedisSection {
        ca_file: Some(path_str(&pki.path("ca.pem"))),
        ..redis(server.tls_url("127.0.0.1"))
    };
    let sidecar = common::start(with_redis(upstream, section)).await;
    // The failure mode (open) answers meanwhile.
    assert_eq!(status(sidecar.proxy, "k").await, 200);
    let text = metrics_text(sidecar.admin).await;
    let tls = metric(
        &text,
        "ratelimiter_store_errors_total",
        &[("node", &sidecar.node), ("kind", "tls")],
    );
    assert!(tls.is_some_and(|n| n >= 1.0), "{text}");
    // Not ready despite failing open: a certificate does not heal by itself.
    let (code, body) = ready(sidecar.admin).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["store_error_kind"], "tls", "{body}");
    assert!(
        body["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{body}"
    );
}

#[tokio::test]
async fn mutual_tls_from_the_toml_fields() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", true));
    let upstream = common::upstream().await;
    let section = RedisSection {
        ca_file: Some(path_str(&pki.path("ca.pem"))),
        client_cert: Some(path_str(&pki.path("client.pem"))),
        client_key: Some(path_str(&pki.path("client-key.pem"))),
        ..redis(server.tls_url("localhost"))
    };
    let sidecar = common::start(with_redis(upstream, section)).await;
    assert_eq!(ready(sidecar.admin).await.0, 200);
    for _ in 0..5 {
        assert_eq!(status(sidecar.proxy, "m").await, 200);
    }
    assert_eq!(status(sidecar.proxy, "m").await, 429);
    let config = get_url(format!("http://{}/config", sidecar.admin))
        .await
        .text()
        .await
        .expect("config");
    assert!(config.contains("client-key.pem"), "{config}");
    assert!(!config.contains("PRIVATE KEY"), "{config}");
}

#[tokio::test]
async fn a_user_without_evalsha_is_reported_as_auth_and_not_ready() {
    let server = RedisServer::start();
    let rules: Vec<&str> = MINIMAL_ACL
        .iter()
        .copied()
        .filter(|r| *r != "+evalsha")
        .collect();
    set_user(&server, "weak", "weak-pw", &rules);
    let dir = Pki::generate();
    let password = dir.path("password");
    std::fs::write(&password, "weak-pw\n").expect("write");
    let upstream = common::upstream().await;
    let section = RedisSection {
        password_file: Some(path_str(&password)),
        ..redis(format!("redis://weak@127.0.0.1:{}", server.port))
    };
    let sidecar = common::start(with_redis(upstream, section)).await;
    assert_eq!(status(sidecar.proxy, "k").await, 200, "fails open");
    let text = metrics_text(sidecar.admin).await;
    let auth = metric(
        &text,
        "ratelimiter_store_errors_total",
        &[("node", &sidecar.node), ("kind", "auth")],
    );
    assert!(auth.is_some_and(|n| n >= 1.0), "{text}");
    // PING is allowed, EVALSHA is not: /ready reports the decisions' error.
    let (code, body) = ready(sidecar.admin).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["store_error_kind"], "auth", "{body}");
    assert!(
        body["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("evalsha")),
        "{body}"
    );
}

#[test]
fn a_changed_password_file_changes_the_store_settings_and_an_unchanged_one_does_not() {
    let pki = Pki::generate();
    let password = pki.path("password");
    std::fs::write(&password, "one\n").expect("write");
    let mut file = with_redis(
        "127.0.0.1:1".parse().expect("addr"),
        RedisSection {
            password_file: Some(path_str(&password)),
            ..redis("redis://tollgate@127.0.0.1:6379".into())
        },
    );
    file.node_id = Some("reload".into());
    let first = file.validate("test").expect("valid").store;
    let again = file.validate("test").expect("valid").store;
    assert_eq!(
        first, again,
        "same password: the store (and its counts) is kept"
    );
    std::fs::write(&password, "two\n").expect("write");
    let changed = file.validate("test").expect("valid").store;
    assert_ne!(first, changed, "a new password builds a new store");
    assert!(!format!("{changed:?}").contains("two"), "{changed:?}");
}

#[tokio::test]
async fn the_binary_reads_the_password_from_a_file_and_never_shows_it() {
    let pki = Pki::generate();
    let server = RedisServer::start_tls(pki.server_args("server", false)).with_admin();
    let secret = "pw-Zq81-never-on-the-command-line";
    set_user(&server, "tollgate", secret, MINIMAL_ACL);
    assert_eq!(
        server
            .cli(&["ACL", "SETUSER", "default", "off"])
            .as_deref()
            .map(str::trim),
        Some("OK")
    );
    let password = pki.path("redis-password");
    std::fs::write(&password, format!("{secret}\n")).expect("write");
    let upstream = common::upstream().await;
    let (proxy, admin) = (free_addr(), free_addr());
    let child = Command::new(BIN)
        .args(["--listen", &proxy.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://{upstream}")])
        .args([
            "--redis-url",
            &server
                .tls_url("localhost")
                .replace("rediss://", "rediss://tollgate@"),
        ])
        .arg("--redis-password-file")
        .arg(&password)
        .arg("--redis-ca-file")
        .arg(pki.path("ca.pem"))
        .args(["--limit", "3/m", "--key", "header:x-api-key"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let child = Proc(child);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.0.id())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(secret),
        "the password is on the command line"
    );
    eventually("ready", Duration::from_secs(20), || async {
        match reqwest::get(format!("http://{admin}/ready")).await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.text().await.unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let response = reqwest::Client::new()
            .get(format!("http://{proxy}/echo/x"))
            .header("x-api-key", "p")
            .send()
            .await
            .expect("send");
        codes.push(response.status().as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429],
        "decided in Redis as the ACL user"
    );
    let config = reqwest::get(format!("http://{admin}/config"))
        .await
        .expect("config")
        .text()
        .await
        .expect("text");
    assert!(!config.contains(secret), "{config}");
    assert!(config.contains("redis-password"), "{config}");
    let log = server.cli(&["ACL", "LOG"]).expect("acl log");
    assert!(
        log.trim().is_empty(),
        "the ACL line misses something: {log}"
    );
}

/// Runs `--check-config` with these arguments; (exit code, stderr).
fn check(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["--check-config", "--upstream", "http://127.0.0.1:1"])
        .args(args)
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("REDIS_URL")
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(path: &Path) -> String {
    path_str(path)
}

#[test]
fn bad_tls_and_secret_flags_exit_64_naming_the_flag_and_the_reason() {
    let pki = Pki::generate();
    let (ca, cert, key) = (
        s(&pki.path("ca.pem")),
        s(&pki.path("client.pem")),
        s(&pki.path("client-key.pem")),
    );
    let missing = s(&pki.path("missing.pem"));
    let not_pem = pki.path("password");
    std::fs::write(&not_pem, "hunter2\n").expect("write");
    let not_pem = s(&not_pem);
    let tls = "rediss://localhost:6380";
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--redis-url", tls, "--redis-ca-file", &missing],
            "--redis-ca-file",
            "cannot read",
        ),
        (
            vec!["--redis-url", tls, "--redis-ca-file", &not_pem],
            "--redis-ca-file",
            "no PEM certificate",
        ),
        (
            vec!["--redis-url", tls, "--redis-client-key", &key],
            "--redis-client-key",
            "needs --redis-client-cert",
        ),
        (
            vec!["--redis-url", tls, "--redis-client-cert", &cert],
            "--redis-client-cert",
            "needs --redis-client-key",
        ),
        (
            vec![
                "--redis-url",
                tls,
                "--redis-client-cert",
                &cert,
                "--redis-client-key",
                &not_pem,
            ],
            "--redis-client-key",
            "no PEM private key",
        ),
        (
            vec![
                "--redis-url",
                "redis://localhost:6379",
                "--redis-ca-file",
                &ca,
            ],
            "--redis-ca-file",
            "rediss://",
        ),
        (
            vec![
                "--redis-url",
                "redis://:inline@localhost:6379",
                "--redis-password-file",
                &not_pem,
            ],
            "--redis-password-file",
            "also in the Redis URL",
        ),
        (
            vec!["--redis-url", tls, "--redis-password-file", &missing],
            "--redis-password-file",
            "cannot read",
        ),
        (
            vec!["--redis-password-file", &not_pem],
            "--redis-password-file",
            "--redis-url",
        ),
    ];
    for (args, flag, reason) in cases {
        let (code, stderr) = check(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} should name {flag}: {stderr}"
        );
        assert!(
            stderr.contains(reason),
            "{args:?} should say {reason:?}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    // Valid: every file in place.
    let (code, stderr) = check(&[
        "--redis-url",
        tls,
        "--redis-ca-file",
        &ca,
        "--redis-client-cert",
        &cert,
        "--redis-client-key",
        &key,
        "--redis-password-file",
        &not_pem,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn bad_tls_and_secret_fields_exit_64_naming_the_field() {
    let pki = Pki::generate();
    let ca = s(&pki.path("ca.pem"));
    let key = s(&pki.path("client-key.pem"));
    let password = pki.path("password");
    std::fs::write(&password, "hunter2\n").expect("write");
    let password = s(&password);
    let config: PathBuf = pki.path("sidecar.toml");
    let cases = [
        (
            format!("url = \"redis://localhost:6379\"\nca_file = {ca:?}"),
            "redis.ca_file",
            "rediss://",
        ),
        (
            format!("url = \"rediss://localhost:6380\"\nclient_key = {key:?}"),
            "redis.client_key",
            "needs redis.client_cert",
        ),
        (
            format!(
                "url = \"rediss://localhost:6380\"\nclient_cert = {key:?}\nclient_key = {key:?}"
            ),
            "redis.client_cert",
            "no PEM certificate",
        ),
        (
            format!("url = \"redis://u:inline@localhost:6379\"\npassword_file = {password:?}"),
            "redis.password_file",
            "both in redis.url and in redis.password_file",
        ),
    ];
    for (redis, field, reason) in cases {
        std::fs::write(&config, format!("[redis]\n{redis}\n")).expect("write");
        let (code, stderr) = check(&["--config", &s(&config)]);
        assert_eq!(code, Some(64), "{redis}: {stderr}");
        assert!(
            stderr.contains(field),
            "{redis} should name {field}: {stderr}"
        );
        assert!(
            stderr.contains(reason),
            "{redis} should say {reason:?}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
