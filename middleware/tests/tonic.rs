//! The tonic example, served on a real socket, called with a real gRPC client.

#[path = "../examples/tonic.rs"]
#[allow(dead_code)]
mod example;

use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn call(
    client: &mut HealthClient<tonic::transport::Channel>,
    key: &str,
) -> Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().expect("ascii"));
    client.check(request).await
}

#[tokio::test]
async fn grpc_calls_are_limited_with_resource_exhausted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(example::serve(
        listener,
        example::limiter().expect("limiter"),
        async {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);

    for remaining in (0..3).rev() {
        let ok = call(&mut client, "k1").await.expect("admitted");
        let state = ok.metadata().get("ratelimit").expect("RateLimit metadata");
        assert!(state
            .to_str()
            .expect("ascii")
            .starts_with(&format!("\"per-key\";r={remaining};")));
    }
    let refused = call(&mut client, "k1").await.expect_err("refused");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("rate limit exceeded"),
        "{}",
        refused.message()
    );
    assert!(refused.metadata().get("retry-after").is_some());
    // The same connection keeps working for other keys.
    call(&mut client, "k2").await.expect("other key admitted");

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server exits cleanly");
}
