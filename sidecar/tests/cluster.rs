//! Three `tollgate-sidecar` processes on one real Redis Cluster (three primaries, three
//! replicas on loopback ports): requests for keys owned by every primary, spread over
//! the three proxies at once, are admitted exactly up to the limit — the counts are
//! shared through the cluster, not kept per process. And one sidecar on a cluster that
//! speaks only TLS, as an ACL user whose password comes from a file.

mod common;
#[path = "../../middleware/tests/support/tls.rs"]
mod tls;
#[path = "../../middleware/tests/support/topology.rs"]
mod topology;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, free_addr, temp_file, write, Proc};
use tls::{Pki, CLUSTER_ACL, MINIMAL_ACL};
use topology::{Cluster, Security};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");

/// The limit of every key: 5 in an hour, so nothing refills during the test.
const LIMIT: usize = 5;
const KEYS: usize = 10;
/// Requests per key, spread over the three sidecars.
const PER_KEY: usize = 9;

/// A config file with long store timeouts: these tests are about exact counts, and on a
/// loaded machine (two cores, six redis-servers, three sidecars) a 50 ms default would
/// turn a slow answer into the failure mode's 503 instead.
fn patient_config() -> common::TempPath {
    let path = temp_file("tollgate.toml");
    write(
        &path,
        "[redis]\ntimeout_ms = 2000\n\n[limiter]\ntimeout_ms = 2000\n",
    );
    path
}

/// `count` header values whose slots are owned round-robin by the three primaries, so
/// every primary holds some: the catch-all policy `default` stores the header key
/// `k` under the hash tag `{default:k}`.
fn keys_on_every_primary(cluster: &Cluster, count: usize) -> Vec<String> {
    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|p| p.1).collect();
    assert_eq!(primaries.len(), 3, "three primaries");
    let mut chosen = Vec::new();
    let mut candidates = (0..1000).map(|i| format!("key-{i}"));
    while chosen.len() < count {
        let want = primaries[chosen.len() % primaries.len()];
        let key = candidates
            .find(|k| cluster.owner(&format!("{{default:{k}}}")) == want)
            .expect("a key for every primary among 1000 candidates");
        chosen.push(key);
    }
    chosen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_share_exact_counts_on_a_cluster() {
    let cluster = Cluster::start();
    let seeds = cluster.urls()[..3].join(",");
    let upstream = common::upstream().await;

    let config = patient_config();
    let mut sidecars = Vec::new();
    let mut proxies = Vec::new();
    for i in 0..3 {
        let (proxy, admin) = (free_addr(), free_addr());
        let child = Command::new(BIN)
            .args(["--listen", &proxy.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(["--redis-cluster", &seeds])
            .args(["--limit", &format!("{LIMIT}/1h")])
            .args(["--key", "header:x-api-key"])
            .args(["--failure-mode", "closed"])
            .args(["--node-id", &format!("side-{i}")])
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the sidecar");
        sidecars.push(Proc(child));
        eventually("sidecar ready", Duration::from_secs(30), || async move {
            match reqwest::get(format!("http://{admin}/ready")).await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{:?}", other.map(|r| r.status()))),
            }
        })
        .await;
        proxies.push(proxy);
    }

    let keys = keys_on_every_primary(&cluster, KEYS);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    // All 90 requests at once, request n of a key through sidecar n % 3.
    let proxies = &proxies;
    let requests: Vec<_> = keys
        .iter()
        .flat_map(|key| (0..PER_KEY).map(move |n| (key.clone(), proxies[n % 3])))
        .map(|(key, proxy)| {
            let client = client.clone();
            tokio::spawn(async move {
                let status = client
                    .get(format!("http://{proxy}/echo"))
                    .header("x-api-key", &key)
                    .send()
                    .await
                    .expect("the proxy answers")
                    .status()
                    .as_u16();
                (key, status)
            })
        })
        .collect();
    let mut admitted = std::collections::HashMap::<String, usize>::new();
    let mut refused = 0;
    for r in requests {
        match r.await.expect("request task") {
            (key, 200) => *admitted.entry(key).or_default() += 1,
            (_, 429) => refused += 1,
            (key, other) => panic!("{key}: status {other}"),
        }
    }
    for key in &keys {
        assert_eq!(admitted.get(key), Some(&LIMIT), "{key}: {admitted:?}");
    }
    assert_eq!(refused, KEYS * (PER_KEY - LIMIT));

    // The state really is spread: every primary holds some of the keys.
    for (_, port, _) in cluster.primaries() {
        let held: usize = topology::cli(port, &["DBSIZE"])
            .and_then(|s| s.trim().parse().ok())
            .expect("DBSIZE");
        assert!(held >= KEYS / 3, "primary {port} holds {held} keys");
    }
    drop(sidecars);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_on_a_tls_cluster_reads_the_password_from_a_file_and_decides_exactly() {
    let pki = Pki::generate();
    let cluster = Cluster::start_with(&Security::tls_and_acl(
        pki.server_args("node", false),
        pki.path("ca.pem"),
    ));
    let secret = "pw-Kc72-only-in-the-file";
    let mut setuser = vec!["ACL", "SETUSER", "tollgate", "on"];
    let pass = format!(">{secret}");
    setuser.push(&pass);
    setuser.extend_from_slice(MINIMAL_ACL);
    setuser.extend_from_slice(CLUSTER_ACL);
    assert!(cluster
        .cli_everywhere(&setuser)
        .iter()
        .all(|o| o.as_deref().map(str::trim) == Some("OK")));
    let password = pki.path("redis-password");
    std::fs::write(&password, format!("{secret}\n")).expect("write");
    // The user in the seed URLs, the password in the file, the CA in a file.
    let seeds: Vec<String> = cluster.urls()[..2]
        .iter()
        .map(|u| u.replace("rediss://", "rediss://tollgate@"))
        .collect();

    let upstream = common::upstream().await;
    let config = patient_config();
    let (proxy, admin) = (free_addr(), free_addr());
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--listen", &proxy.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://{upstream}")])
        .args(["--redis-cluster", &seeds.join(",")])
        .arg("--redis-password-file")
        .arg(&password)
        .arg("--redis-ca-file")
        .arg(pki.path("ca.pem"))
        .args(["--limit", &format!("{LIMIT}/1h")])
        .args(["--key", "header:x-api-key"])
        .args(["--failure-mode", "closed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the sidecar");
    let _sidecar = Proc(child);
    eventually("sidecar ready", Duration::from_secs(30), || async move {
        match reqwest::get(format!("http://{admin}/ready")).await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(r.text().await.unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for key in keys_on_every_primary(&cluster, 3) {
        let mut codes = Vec::new();
        for _ in 0..LIMIT + 2 {
            let status = client
                .get(format!("http://{proxy}/echo"))
                .header("x-api-key", &key)
                .send()
                .await
                .expect("the proxy answers")
                .status()
                .as_u16();
            codes.push(status);
        }
        let admitted = codes.iter().filter(|c| **c == 200).count();
        assert_eq!(admitted, LIMIT, "{key}: {codes:?}");
        assert!(codes[LIMIT..].iter().all(|c| *c == 429), "{key}: {codes:?}");
    }
    let config = reqwest::get(format!("http://{admin}/config"))
        .await
        .expect("config")
        .text()
        .await
        .expect("text");
    assert!(!config.contains(secret), "{config}");
    assert!(config.contains("redis-password"), "{config}");
    for (node, log) in cluster
        .nodes
        .iter()
        .zip(cluster.cli_everywhere(&["ACL", "LOG"]))
    {
        let log = log.expect("ACL LOG");
        assert!(log.trim().is_empty(), "node {}: {log}", node.port);
    }
}
