//! The floor under the sidecar's proxy path: hyper, and nothing else.
//!
//! A benchmark reference for `sidecar/bench/proxy-vs-nginx.sh` (row `bare`), to tell what the
//! sidecar's own work costs from what hyper and tokio cost by themselves. Each client
//! connection gets one upstream HTTP/1.1 connection of its own, opened when the client
//! connects, and its requests are forwarded over it unchanged, in order: no routing, no
//! pool, no header rewriting, no rate limit, no metrics, no timeouts. It is not a proxy
//! anyone should run — it only shows how cheap a hyper proxy can get on this machine.
//!
//! It binds 127.0.0.1 only and exits by itself after its lifetime, so a forgotten benchmark
//! cannot keep it running. The bound address is printed as the first line on stdout.
//!
//! ```text
//! cargo build --release -p tollgate-sidecar --example bare_proxy
//! target/release/examples/bare_proxy PORT UPSTREAM_ADDR [LIFETIME_SECS]   # 0 = any free port
//! ```

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map_or(Ok(0), |p| p.parse())?;
    let upstream: SocketAddr = args
        .next()
        .context("usage: bare_proxy PORT UPSTREAM_ADDR [LIFETIME_SECS]")?
        .parse()?;
    let lifetime: u64 = args.next().map_or(Ok(300), |s| s.parse())?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("{}", listener.local_addr()?);

    let serve = async {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Err(e) = serve_connection(client, upstream).await {
                    eprintln!("connection: {e:#}");
                }
            });
        }
    };
    tokio::select! {
        () = serve => {}
        () = tokio::time::sleep(Duration::from_secs(lifetime)) => {}
    }
    Ok(())
}

/// Serves one client connection over one upstream connection of its own.
async fn serve_connection(client: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let _ = client.set_nodelay(true);
    let up = TcpStream::connect(upstream).await.context("connect")?;
    let _ = up.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(connection);
    // HTTP/1.1 serves one request at a time per connection, so the lock is never contended;
    // it only lets the `Fn` service reach the `&mut` sender.
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |request: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            // A poisoned lock still holds a usable sender.
            let lock = || sender.lock().unwrap_or_else(PoisonError::into_inner);
            // The previous response's end can come a moment before the connection is ready.
            let sent = match poll_fn(|cx| lock().poll_ready(cx)).await {
                Ok(()) => {
                    let response = lock().try_send_request(request);
                    response.await.map_err(|e| e.into_error())
                }
                Err(e) => Err(e),
            };
            Ok::<_, hyper::Error>(match sent {
                Ok(response) => response.map(Either::Left),
                Err(_) => {
                    let mut bad = Response::new(Either::Right(Empty::<Bytes>::new()));
                    *bad.status_mut() = StatusCode::BAD_GATEWAY;
                    bad
                }
            })
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}
