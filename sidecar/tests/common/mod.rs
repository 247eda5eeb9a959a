//! Shared pieces of the sidecar tests: a real upstream server and config builders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use tollgate_sidecar::config::{FileConfig, LimitSection, PolicySection, UpstreamSection};
use tollgate_sidecar::Sidecar;

/// An upstream with the behaviours the proxy tests need.
pub async fn upstream() -> SocketAddr {
    let app = Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .route(
            "/download",
            get(|| async {
                // 8 MiB in 1 MiB chunks, produced as they are sent.
                let chunks = futures_util::stream::iter(
                    (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1 << 20]))),
                );
                Body::from_stream(chunks)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn echo(request: Request) -> axum::Json<serde_json::Value> {
    let (parts, body) = request.into_parts();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_or(0, |b| b.len());
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": bytes,
    }))
}

/// GET `url` with a fresh client (20 s timeout); panics if no response arrives.
pub async fn get_url(url: String) -> reqwest::Response {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("send")
}

/// A config proxying to `upstream` on loopback port 0, with one policy, and a node id
/// of its own (`test-N`): the sidecars of one test binary share the process's metrics
/// registry, and their series are told apart by `node`.
pub fn config(upstream: SocketAddr, rate: &str, key: &str) -> FileConfig {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut file = FileConfig {
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        node_id: Some(format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))),
        ..FileConfig::default()
    };
    file.upstreams.insert(
        "app".into(),
        UpstreamSection {
            endpoints: vec![format!("http://{upstream}")],
            protocol: None,
        },
    );
    file.policies.push(PolicySection {
        name: "limited".into(),
        path_prefix: Some("/echo/limited".into()),
        limits: vec![LimitSection {
            name: "per-key".into(),
            rate: rate.into(),
            algorithm: None,
            key: key.into(),
            consistency: None,
        }],
        ..PolicySection::default()
    });
    file
}

pub struct Running {
    pub node: String,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub state: tollgate_sidecar::runtime::Shared,
    pub stores: std::sync::Arc<tollgate_sidecar::runtime::Stores>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a sidecar for `file` in this process.
pub async fn start(file: FileConfig) -> Running {
    let config = file.validate("test").expect("valid config");
    let node = config.node_id.clone();
    let sidecar = Sidecar::bind(config).await.expect("bind");
    let proxy = sidecar.proxy_addr().expect("addr");
    let admin = sidecar.admin_addr().expect("addr");
    let state = sidecar.state();
    let stores = sidecar.stores();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(sidecar.run(async {
        let _ = stopped.await;
    }));
    Running {
        node,
        proxy,
        admin,
        state,
        stores,
        stop,
        done,
    }
}

/// The value of the series `name` whose labels include all of `labels`, in Prometheus
/// text; `None` when no such series is shown.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (family, rest) = series.split_once('{').unwrap_or((series, "}"));
            if family != name {
                return None;
            }
            let rest = rest.strip_suffix('}')?;
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// `GET /metrics` of the admin server at `admin`.
pub async fn metrics_text(admin: SocketAddr) -> String {
    get_url(format!("http://{admin}/metrics"))
        .await
        .text()
        .await
        .expect("metrics text")
}

/// Polls `probe` every 50 ms until it returns `Ok`, for at most `within`; panics naming
/// `what` and the last state the probe reported (its `Err`) when time runs out. For tests
/// that wait for a state instead of sleeping a fixed time and hoping.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(state) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last state: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The value of the Prometheus sample whose line starts with `series` (name and labels,
/// e.g. `tollgate_config_reloads_total{node="a",result="error"}`); 0 when absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(series))
        .find_map(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

/// An address where connections are refused, held for as long as the socket lives: bound
/// but not listening, so no other test's server can take the port meanwhile (a port
/// merely freed can be, and a "refused" endpoint would then answer).
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// A child process (the sidecar binary, usually), killed and reaped when dropped, so a
/// failing test leaves nothing running.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sidecar binary serving the config file at `path`, its stderr discarded (stopped
/// when dropped). Callers wait for readiness themselves (`wait_ready`).
pub fn spawn_with_config(path: &std::path::Path) -> Proc {
    Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
            .arg("--config")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn the sidecar"),
    )
}

/// A loopback address free at the time of the call, for a child process to bind.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Sends `sig` (`-TERM`, `-HUP`, …) to `child` with kill(1).
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill {sig}");
}

/// The status of the admin `/ready`, or why there is none.
pub async fn ready_status(admin: SocketAddr) -> Result<u16, String> {
    reqwest::get(format!("http://{admin}/ready"))
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Waits (at most 20 s) until the sidecar whose admin port is `admin` answers `/ready`
/// with 200.
pub async fn wait_ready(admin: SocketAddr) {
    eventually("sidecar ready", Duration::from_secs(20), || async {
        match ready_status(admin).await {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// A file path in a directory of its own (`tollgate-sidecar-test-<pid>-<n>` in the temp
/// dir); the directory and everything in it are removed when this is dropped, also when
/// the test panics. Used as a `&std::path::Path` (and as a command argument) through `Deref`/`AsRef`.
pub struct TempPath {
    pub dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl std::ops::Deref for TempPath {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh path named `name` in a directory of its own.
pub fn temp_file(name: &str) -> TempPath {
    // One directory per call: tests of one process (cargo test runs them as threads) never
    // share, so one test's cleanup cannot remove another's files.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-sidecar-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempPath {
        path: dir.join(name),
        dir,
    }
}

/// Writes `text` to `path` atomically (write-then-rename).
pub fn write(path: &std::path::Path, text: &str) {
    // Write-then-rename, as editors and ConfigMap updates do.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
}
