//! A real `redis-server` per test, on a free loopback port, started by the test itself.
//!
//! The binary comes from `$REDIS_SERVER` or `redis-server` on the PATH; the project's
//! `scripts/test.sh` installs it when missing. A test that needs Redis and cannot start
//! it fails loudly: it never skips in silence.
#![allow(dead_code)]

pub mod tls;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `GET /` whose `x-key` header carries `key`: the request the Redis tests' limiters key by.
pub fn request(key: &str) -> http::request::Parts {
    http::Request::get("/")
        .header("x-key", key)
        .body(())
        .expect("valid")
        .into_parts()
        .0
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// The TLS port, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    /// More arguments for `redis-server` (the TLS ones).
    extra: Vec<String>,
    /// The user and password `cli` authenticates as, once the default user is off.
    admin: Option<(String, String)>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(None, Vec::new())
    }

    /// A server that also listens for TLS on `tls_port` with the given `--tls-*`
    /// arguments. The plain port stays open on loopback for the test's own `cli`.
    pub fn start_tls(args: Vec<String>) -> Self {
        Self::start_with(Some(free_port()), args)
    }

    fn start_with(tls_port: Option<u16>, extra: Vec<String>) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            tls_port,
            extra,
            admin: None,
        };
        server.spawn();
        server
    }

    /// Creates an all-powerful `admin` user and makes `cli` use it, so that the
    /// `default` user can be switched off.
    pub fn with_admin(mut self) -> Self {
        let set = self.cli(&[
            "ACL",
            "SETUSER",
            "admin",
            "on",
            ">admin-pw",
            "~*",
            "&*",
            "+@all",
        ]);
        assert_eq!(set.as_deref().map(str::trim), Some("OK"), "admin user");
        self.admin = Some(("admin".into(), "admin-pw".into()));
        self
    }

    /// `rediss://HOST:TLS_PORT` with `host` (an IP or `localhost`).
    pub fn tls_url(&self, host: &str) -> String {
        format!(
            "rediss://{host}:{}",
            self.tls_port.expect("started with start_tls")
        )
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .args(
                self.tls_port
                    .map(|p| vec!["--tls-port".to_owned(), p.to_string()])
                    .unwrap_or_default(),
            )
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin:?} ({e}); run scripts/test.sh, which installs redis-server"
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).is_some_and(|out| out.trim() == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within 10 s",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let mut cli = Command::new("redis-cli");
        cli.args(["-p", &self.port.to_string()]);
        if let Some((user, pass)) = &self.admin {
            cli.args(["--user", user, "--pass", pass, "--no-auth-warning"]);
        }
        let out = cli.args(args).stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .filter(|s| !s.starts_with("Could not connect"))
    }

    /// Kills the server (SIGKILL): connections drop, state is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server ignores SIGKILL until resumed on some kernels' job control;
            // resume first so the kill always lands.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A start time aligned to every window the tests use, far from zero like a real clock.
pub const T0: i64 = 1_700_000_040_000_000;

/// Serves `app` on a free loopback port with axum's connect info (what `Key::peer_ip`
/// reads), in the background; returns its address.
pub async fn serve_app(app: axum::Router) -> std::net::SocketAddr {
    let (listener, addr) = loopback_listener().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    addr
}

/// A listener on a free loopback port, and its address.
pub async fn loopback_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}
