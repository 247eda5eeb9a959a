//! An application that installed its own `metrics` recorder before binding a sidecar:
//! the default fails with an error naming the choice, and each choice works. A test
//! binary of its own, because a process has one recorder for its whole life.

mod common;

use metrics_exporter_prometheus::PrometheusBuilder;
use tollgate_sidecar::telemetry::{MetricsError, Recorder};
use tollgate_sidecar::Sidecar;

async fn serve(sidecar: Sidecar) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let addrs = (
        sidecar.proxy_addr().expect("addr"),
        sidecar.admin_addr().expect("addr"),
    );
    tokio::spawn(sidecar.run(std::future::pending()));
    addrs
}

#[tokio::test]
async fn an_application_recorder_is_a_choice_not_a_panic() {
    // The application's own recorder: a Prometheus one it renders itself.
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("the first recorder of this process");
    let upstream = common::upstream().await;
    let config = |node: &str| {
        let mut file = common::config(upstream, "2/m", "ip");
        file.node_id = Some(node.into());
        file.validate("test").expect("valid config")
    };

    let Err(error) = Sidecar::bind(config("default")).await else {
        panic!("the default must not replace the application's recorder");
    };
    assert!(
        matches!(
            error.downcast_ref::<MetricsError>(),
            Some(MetricsError::ForeignRecorder)
        ),
        "{error:#}"
    );
    let message = error.to_string();
    assert!(message.contains("already installed"), "{message}");
    assert!(message.contains("Recorder::Application"), "{message}");
    assert!(message.contains("Recorder::Prometheus"), "{message}");

    // Its Prometheus handle: /metrics renders the application's registry.
    let with_handle =
        Sidecar::bind_with_recorder(config("with-handle"), Recorder::Prometheus(handle))
            .await
            .expect("bind with the application's handle");
    let (proxy, admin) = serve(with_handle).await;
    let res = common::get_url(format!("http://{proxy}/echo")).await;
    assert_eq!(res.status(), 200);
    let text = common::metrics_text(admin).await;
    assert_eq!(
        common::metric(
            &text,
            "tollgate_proxy_requests_total",
            &[("node", "with-handle"), ("status", "200")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("# HELP tollgate_proxy_requests_total "),
        "{text}"
    );

    // Any recorder of the application's: /metrics says where metrics go.
    let application = Sidecar::bind_with_recorder(config("app"), Recorder::Application)
        .await
        .expect("bind into the application's recorder");
    let (proxy, admin) = serve(application).await;
    let res = common::get_url(format!("http://{proxy}/echo")).await;
    assert_eq!(res.status(), 200);
    let res = common::get_url(format!("http://{admin}/metrics")).await;
    assert_eq!(res.status(), 404);
    let body = res.text().await.expect("text");
    assert!(
        body.contains("application's own `metrics` recorder"),
        "{body}"
    );
}
