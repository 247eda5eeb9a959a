//! `tollgate-sidecar`: parse, validate everything, then bind and serve.
//!
//! Exit codes: 0 after a clean shutdown or a valid `--check-config`; 64 (EX_USAGE)
//! for an invalid configuration, before anything is bound; 1 when serving fails
//! (for example a port already in use).

use std::process::ExitCode;

use clap::Parser;
use tollgate_sidecar::cli::Cli;
use tollgate_sidecar::runtime::{Runtime, Stores};
use tollgate_sidecar::{demo, shutdown_signal, telemetry, Sidecar};

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    telemetry::init_logs();
    let mut cli = Cli::parse().with_conventional_env();
    let demo_listener = if cli.demo {
        match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(listener) => {
                if let Ok(addr) = listener.local_addr() {
                    cli.upstream = vec![format!("http://{addr}")];
                }
                if cli.limit.is_none() {
                    cli.limit = Some("10/m".into());
                }
                // A demo is for this machine only, unless asked otherwise.
                cli.listen.get_or_insert_with(|| "127.0.0.1:8000".into());
                cli.admin_listen
                    .get_or_insert_with(|| "127.0.0.1:9000".into());
                Some(listener)
            }
            Err(e) => {
                eprintln!("tollgate-sidecar: cannot start the demo upstream: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let config = match cli
        .file_config()
        .and_then(|file| file.validate(&cli.source()))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate-sidecar: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        if cli.check_config {
            // Also build (not bind) what the configuration describes.
            return match Runtime::build(config, &Stores::default()) {
                Ok(_) => {
                    println!("configuration OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "tollgate-sidecar: invalid configuration: {}: {e}",
                        cli.source()
                    );
                    ExitCode::from(EX_USAGE)
                }
            };
        }
        if let Some(listener) = demo_listener {
            let listener = listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener));
            match listener {
                Ok(listener) => {
                    tokio::spawn(async move {
                        if let Err(e) = demo::serve(listener).await {
                            tracing::error!(error = %e, "demo upstream failed");
                        }
                    });
                }
                Err(e) => {
                    eprintln!("tollgate-sidecar: cannot start the demo upstream: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let sidecar = match Sidecar::bind(config, Some(cli)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tollgate-sidecar: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        match sidecar.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate-sidecar: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
