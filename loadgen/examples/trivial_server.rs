//! A trivial HTTP/1.1 server for benchmarks: answers every request `200 ok` at once.
//!
//! It is the fixed point both `wrk` and the loadgen are measured against in
//! `loadgen/bench/vs-wrk.sh`, so it does as little as possible: no routing, no body parsing
//! (the request body is drained by hyper), keep-alive on. It binds 127.0.0.1 only and exits
//! by itself after a bounded lifetime so a forgotten benchmark cannot keep it running.
//!
//! Usage: `trivial_server [PORT] [LIFETIME_SECS]` (defaults: 0 = any free port, 300 s). The
//! bound address is printed as the first line on stdout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(Ok(0), |p| p.parse())?;
    let lifetime: u64 = args.next().map_or(Ok(300), |s| s.parse())?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("{}", listener.local_addr()?);

    let serve = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // As in any benchmark client, small responses must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                // A client closing its connection mid-request is normal at the end of a run.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = tokio::time::sleep(Duration::from_secs(lifetime)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
