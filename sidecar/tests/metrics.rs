//! Several sidecars in one process: one metrics recorder, installed once however the
//! sidecars race to bind, and every series labelled with the `node` that emitted it.

mod common;

use std::net::SocketAddr;

async fn get(proxy: SocketAddr, path: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{proxy}{path}"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_in_one_process_each_count_their_own_series() {
    let upstream = common::upstream().await;
    let start = |node: &str| {
        let mut file = common::config(upstream, "2/m", "header:x-api-key");
        file.node_id = Some(node.into());
        // On the runtime's two threads at once: both bind (and reach the recorder) together.
        tokio::spawn(common::start(file))
    };
    let (alpha, beta) = tokio::join!(start("alpha"), start("beta"));
    let (alpha, beta) = (alpha.expect("alpha binds"), beta.expect("beta binds"));

    // alpha: 3 on the limited route (2 pass, 1 refused) and 1 free request;
    // beta: 5 on the limited route (2 pass, 3 refused).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(alpha.proxy, "/echo/limited", "k").await);
    }
    statuses.push(get(alpha.proxy, "/echo/free", "k").await);
    for _ in 0..5 {
        statuses.push(get(beta.proxy, "/echo/limited", "k").await);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 200, 429, 429, 429]);

    // One registry per process: each admin port shows both nodes' series.
    for admin in [alpha.admin, beta.admin] {
        let text = common::metrics_text(admin).await;
        let value = |name: &str, labels: &[(&str, &str)]| {
            common::metric(&text, name, labels)
                .unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"))
        };
        for (node, allowed, limited, ok) in [("alpha", 2.0, 1.0, 3.0), ("beta", 2.0, 3.0, 2.0)] {
            let checked = |decision| {
                value(
                    "ratelimiter_requests_checked_total",
                    &[
                        ("node", node),
                        ("policy", "limited"),
                        ("decision", decision),
                    ],
                )
            };
            assert_eq!(checked("allowed"), allowed, "{node}");
            assert_eq!(checked("limited"), limited, "{node}");
            let sent = |status| {
                value(
                    "tollgate_proxy_requests_total",
                    &[("node", node), ("status", status)],
                )
            };
            assert_eq!(sent("200"), ok, "{node}");
            assert_eq!(sent("429"), limited, "{node}");
            assert_eq!(
                value("tollgate_proxy_in_flight", &[("node", node)]),
                0.0,
                "{node}"
            );
        }
        // Every series of both families carries a node.
        for line in text
            .lines()
            .filter(|l| l.starts_with("ratelimiter_") || l.starts_with("tollgate_"))
        {
            assert!(line.contains("node=\""), "a series without node: {line}");
        }
    }
}
