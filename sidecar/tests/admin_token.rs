//! `admin_token_file`: `POST /check` and `GET /config` require the bearer token; the
//! probes and `/metrics` stay open; a reload rotates the token; a missing file refuses
//! to start, naming the flag.

mod common;

use std::net::SocketAddr;

use common::{config, start};
use tollgate_sidecar::config::ConfigSource;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn status(admin: SocketAddr, method: &str, path: &str, token: Option<&str>) -> u16 {
    let client = reqwest::Client::new();
    let url = format!("http://{admin}{path}");
    let mut request = match method {
        "POST" => client
            .post(url)
            .body(r#"{"key":"k","limit":10,"window_ms":60000}"#),
        _ => client.get(url),
    };
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.send().await.expect("send").status().as_u16()
}

#[tokio::test]
async fn check_and_config_need_the_token_and_probes_do_not() {
    let dir = TempDir::new("admin-token");
    let token_file = dir.0.join("token");
    // Mounted secrets end with a newline; it is not part of the token.
    std::fs::write(&token_file, "s3cret\n").expect("write");
    let upstream = common::upstream().await;
    let mut file = config(upstream, "100/m", "ip");
    file.admin_token_file = Some(token_file.display().to_string());
    let source = {
        let file = file.clone();
        ConfigSource::new(None).with_overrides(move |f| {
            *f = file.clone();
            Ok(())
        })
    };
    let sidecar = start(file).await;
    let admin = sidecar.admin;

    for path in ["/health", "/ready", "/metrics"] {
        assert_eq!(status(admin, "GET", path, None).await, 200, "{path}");
    }
    assert_eq!(status(admin, "GET", "/config", None).await, 401);
    assert_eq!(status(admin, "GET", "/config", Some("wrong")).await, 401);
    assert_eq!(status(admin, "GET", "/config", Some("s3cret")).await, 200);
    assert_eq!(status(admin, "POST", "/check", None).await, 401);
    assert_eq!(status(admin, "POST", "/check", Some("s3cret")).await, 200);

    let refused = reqwest::Client::new()
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // The token itself is never shown; the file's path is.
    let shown = reqwest::Client::new()
        .get(format!("http://{admin}/config"))
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(!shown.contains("s3cret"), "{shown}");

    // A reload re-reads the file: the new token works, the old one no longer does.
    std::fs::write(&token_file, "rotated").expect("write");
    assert!(tollgate_sidecar::reload::reload(
        &source,
        &sidecar.state,
        &sidecar.stores
    ));
    assert_eq!(status(admin, "GET", "/config", Some("s3cret")).await, 401);
    assert_eq!(status(admin, "GET", "/config", Some("rotated")).await, 200);
}

#[test]
fn a_missing_token_file_refuses_to_start_naming_the_flag() {
    let out = std::process::Command::new(BIN)
        .args([
            "--upstream",
            "http://127.0.0.1:1",
            "--admin-token-file",
            "/nonexistent/tollgate-token",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-token-file"), "{err}");
    assert!(err.contains("/nonexistent/tollgate-token"), "{err}");
}
