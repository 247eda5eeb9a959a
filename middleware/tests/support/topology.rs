//! Real Redis Cluster and Sentinel deployments on loopback ports, for the cluster and
//! sentinel tests: `redis-server` processes started by the test, torn down on drop.
//!
//! Settings that make a one-machine cluster survive a primary's loss: a 1 s node
//! timeout, `cluster-require-full-coverage no` (else the surviving primaries answer
//! CLUSTERDOWN while a slot has no owner), an explicit cluster bus port (port + 10000
//! can pass 65535), diskless replication without delay, and waiting until every replica
//! is in sync before anything is killed.
//!
//! [`Security`] secures a deployment: TLS only (`--port 0`, the cluster bus and
//! replication over TLS too) and an `admin` user for the test's own `redis-cli`, for
//! replication and for the sentinels, with the `default` user switched off. The
//! certificates come from the caller (`support::tls::Pki`), so this file stays usable on
//! its own (the sidecar's tests and the examples include it by path).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs `redis-cli -p port ARGS`; `None` if it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    cli_with(&Security::default(), port, args)
}

/// TLS and an admin user for every server of a deployment (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `redis-server`'s `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file`,
    /// `--tls-auth-clients` arguments (`Pki::server_args`); empty: plain TCP.
    pub tls_args: Vec<String>,
    /// The CA file the test's `redis-cli` trusts (with `tls_args`).
    pub ca: Option<PathBuf>,
    /// Password of the all-powerful `admin` user; `None`: the `default` user, no ACL.
    pub admin_password: Option<String>,
}

impl Security {
    /// TLS with these `redis-server` arguments and CA, and an `admin` user.
    pub fn tls_and_acl(tls_args: Vec<String>, ca: PathBuf) -> Security {
        Security {
            tls_args,
            ca: Some(ca),
            admin_password: Some("admin-pw".into()),
        }
    }

    pub fn is_tls(&self) -> bool {
        !self.tls_args.is_empty()
    }

    /// `redis://` or `rediss://`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// `redis-cli`'s own arguments to reach a server of this deployment.
    fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(ca) = &self.ca {
            args.extend(["--tls".into(), "--cacert".into(), path_str(ca)]);
        }
        if let Some(password) = &self.admin_password {
            args.extend(
                ["--user", "admin", "--pass", password, "--no-auth-warning"].map(String::from),
            );
        }
        args
    }

    /// `redis-server` arguments: where it listens, TLS for clients, the cluster bus and
    /// replication, and the users.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args = Vec::new();
        if self.is_tls() {
            args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-replication",
                    "yes",
                ]
                .map(String::from),
            );
            args.extend(self.tls_args.iter().cloned());
        } else {
            args.extend(["--port".into(), port.to_string()]);
        }
        if let Some(password) = &self.admin_password {
            args.extend(
                [
                    "--user",
                    "admin",
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                    "--user",
                    "default",
                    "off",
                    "--masteruser",
                    "admin",
                    "--masterauth",
                    password,
                ]
                .map(String::from),
            );
        }
        args
    }

    /// The same for a sentinel's configuration file: its listener, its own users, and
    /// how it reaches the servers and the other sentinels.
    fn sentinel_conf(&self, port: u16) -> String {
        let mut conf = String::new();
        if self.is_tls() {
            conf += &format!("port 0\ntls-port {port}\ntls-replication yes\n");
            for pair in self.tls_args.chunks(2) {
                conf += &format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]);
            }
        } else {
            conf += &format!("port {port}\n");
        }
        if let Some(password) = &self.admin_password {
            conf += &format!(
                "user admin on >{password} ~* &* +@all\nuser default off\n\
                 sentinel sentinel-user admin\nsentinel sentinel-pass {password}\n"
            );
        }
        conf
    }

    /// How a sentinel authenticates to the servers of `master`; these lines must follow
    /// its `sentinel monitor` line.
    fn sentinel_auth(&self, master: &str) -> String {
        match &self.admin_password {
            Some(password) => format!(
                "sentinel auth-user {master} admin\nsentinel auth-pass {master} {password}\n"
            ),
            None => String::new(),
        }
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// [`cli`] for a server of a deployment secured by `security`.
pub fn cli_with(security: &Security, port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(security.cli_args())
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|s| !s.starts_with("Could not connect"))
}

/// Polls `ready` every 50 ms for up to `within`; panics naming `what` if it never holds.
pub fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} within {within:?}");
}

/// One redis-server process.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
    security: Security,
}

impl Node {
    fn spawn(port: u16, dir: &Path, extra: &[String], security: &Security) -> Node {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut args: Vec<String> = extra.to_vec();
        args.extend(security.server_args(port));
        args.extend(
            [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
                "--dir",
                &dir.to_string_lossy(),
            ]
            .map(String::from),
        );
        let child = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin:?} ({e}); run scripts/test.sh"));
        let node = Node {
            port,
            child: Some(child),
            security: security.clone(),
        };
        wait_for(
            &format!("redis on {port} answers PING"),
            Duration::from_secs(10),
            || node.cli(&["PING"]).is_some_and(|o| o.trim() == "PONG"),
        );
        node
    }

    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli_with(&self.security, self.port, args)
    }

    /// SIGKILL: connections drop, unreplicated writes are lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-{kind}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A primary as `CLUSTER NODES` shows it: node id, port, inclusive slot ranges.
pub type Primary = (String, u16, Vec<(u16, u16)>);

/// A Redis Cluster of three primaries with one replica each.
pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
    security: Security,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&Security::default())
    }

    /// A cluster secured by `security`: with TLS the nodes talk TLS to clients, to each
    /// other on the cluster bus (`tls-cluster`) and for replication, and announce their
    /// TLS ports in `CLUSTER SLOTS`.
    pub fn start_with(security: &Security) -> Cluster {
        let dir = temp_dir("cluster");
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let port = free_port();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{i}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-port",
                    &free_port().to_string(),
                    "--tls-cluster",
                    if security.is_tls() { "yes" } else { "no" },
                ]
                .map(String::from);
                Node::spawn(port, &dir, &extra, security)
            })
            .collect();
        let mut create = security.cli_args();
        create.extend(["--cluster".to_string(), "create".to_string()]);
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let mut create = Command::new("redis-cli")
            .args(&create)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        // `--cluster create` waits for the nodes to join without a bound of its own
        // (forever when the cluster bus cannot connect, e.g. a TLS misconfiguration).
        let mut status = None;
        wait_for(
            "redis-cli --cluster create ends",
            Duration::from_secs(60),
            || {
                status = create.try_wait().ok().flatten();
                status.is_some()
            },
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed"
        );
        let cluster = Cluster {
            nodes,
            dir,
            security: security.clone(),
        };
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    /// Runs `redis-cli ARGS` on every live node (ACLs are per node, not replicated);
    /// each node's output, in node order.
    pub fn cli_everywhere(&self, args: &[&str]) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.cli(args))
            .collect()
    }

    /// Until every live node sees `cluster_state:ok` and every live replica is in sync.
    pub fn wait_healthy(&self, within: Duration) {
        wait_for("cluster healthy", within, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
                let repl = n.cli(&["INFO", "replication"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        });
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", self.security.scheme(), n.port))
            .collect()
    }

    fn any_live(&self) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node")
    }

    /// `(node id, port, slot ranges)` of every primary that owns slots.
    pub fn primaries(&self) -> Vec<Primary> {
        let nodes = self
            .any_live()
            .cli(&["CLUSTER", "NODES"])
            .unwrap_or_default();
        nodes
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                    return None;
                }
                let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let ranges = f[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .filter_map(|r| match r.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => r.parse().ok().map(|s| (s, s)),
                    })
                    .collect();
                Some((f[0].to_string(), port, ranges))
            })
            .collect()
    }

    pub fn slot(&self, redis_key: &str) -> u16 {
        self.any_live()
            .cli(&["CLUSTER", "KEYSLOT", redis_key])
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }

    /// The port of the primary that owns `redis_key` now.
    pub fn owner(&self, redis_key: &str) -> u16 {
        let slot = self.slot(redis_key);
        self.primaries()
            .into_iter()
            .find(|(_, _, ranges)| ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|(_, port, _)| port)
            .expect("an owner")
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// Moves `slots` slots from primary `from` to primary `to` (node ids) with
    /// `redis-cli --cluster reshard`; blocks until done.
    pub fn reshard(&self, from: &str, to: &str, slots: u32) {
        let status = Command::new("redis-cli")
            .args(self.security.cli_args())
            .args([
                "--cluster",
                "reshard",
                &format!("127.0.0.1:{}", self.any_live().port),
                "--cluster-from",
                from,
                "--cluster-to",
                to,
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
                "--cluster-pipeline",
                "50",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster reshard failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, one replica and three sentinels watching it as `mymaster`.
pub struct Sentinels {
    pub primary: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    dir: PathBuf,
    security: Security,
}

impl Sentinels {
    pub const MASTER: &'static str = "mymaster";

    pub fn start() -> Sentinels {
        Sentinels::start_with(&Security::default())
    }

    /// A deployment secured by `security`: the servers and the sentinels alike (the
    /// sentinels reach the servers over TLS as `admin`, and require `admin` themselves).
    pub fn start_with(security: &Security) -> Sentinels {
        let dir = temp_dir("sentinel");
        let primary = Node::spawn(free_port(), &dir, &[], security);
        let replica_port = free_port();
        let replica = Node::spawn(
            replica_port,
            &dir,
            &["--replicaof", "127.0.0.1", &primary.port.to_string()].map(String::from),
            security,
        );
        wait_for("replica in sync", Duration::from_secs(20), || {
            replica
                .cli(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "{}bind 127.0.0.1\nprotected-mode no\ndir {}\n\
                         sentinel monitor {} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {} 1000\n\
                         sentinel failover-timeout {} 5000\n\
                         sentinel parallel-syncs {} 1\n{}",
                        security.sentinel_conf(port),
                        dir.to_string_lossy(),
                        Self::MASTER,
                        primary.port,
                        Self::MASTER,
                        Self::MASTER,
                        Self::MASTER,
                        security.sentinel_auth(Self::MASTER),
                    ),
                )
                .expect("write sentinel.conf");
                let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
                let child = Command::new(&bin)
                    .arg(&conf)
                    .arg("--sentinel")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a sentinel");
                let node = Node {
                    port,
                    child: Some(child),
                    security: security.clone(),
                };
                wait_for("sentinel answers", Duration::from_secs(10), || {
                    node.cli(&["PING"]).is_some_and(|o| o.trim() == "PONG")
                });
                node
            })
            .collect::<Vec<_>>();
        let all = Sentinels {
            primary,
            replica,
            sentinels,
            dir,
            security: security.clone(),
        };
        // Every sentinel must know the replica and the other sentinels before a failover.
        wait_for(
            "sentinels see each other and the replica",
            Duration::from_secs(20),
            || {
                all.sentinels.iter().all(|s| {
                    let m = s
                        .cli(&["SENTINEL", "MASTER", Self::MASTER])
                        .unwrap_or_default();
                    let fields: Vec<&str> = m.lines().collect();
                    let get = |name: &str| {
                        fields
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| fields.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(0)
                    };
                    get("num-slaves") >= 1 && get("num-other-sentinels") >= 2
                })
            },
        );
        all
    }

    /// The sentinels' URLs, without credentials (see [`urls_as`](Self::urls_as)).
    pub fn urls(&self) -> Vec<String> {
        self.urls_as("")
    }

    /// The sentinels' URLs with `userinfo` (`user:password@`, or empty).
    pub fn urls_as(&self, userinfo: &str) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|n| {
                format!(
                    "{}://{userinfo}127.0.0.1:{}",
                    self.security.scheme(),
                    n.port
                )
            })
            .collect()
    }

    /// The port the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER])
                .and_then(|o| o.lines().nth(1).and_then(|p| p.trim().parse().ok()))
        })
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.primary.kill();
        self.replica.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
