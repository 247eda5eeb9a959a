//! `tollgate-sidecar`: parse, validate everything, then bind and serve.
//!
//! Exit codes: 0 after a clean shutdown, a valid `--check-config`, `--help` or
//! `--version`; 64 (EX_USAGE) for a usage error (an unknown flag, a missing value) or an
//! invalid configuration, before anything is bound; 1 when serving fails (for example
//! a port already in use).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tollgate_sidecar::cli::Cli;
use tollgate_sidecar::runtime::{Runtime, Stores};
use tollgate_sidecar::{shutdown_signal, telemetry, Sidecar};

const EX_USAGE: u8 = 64;

/// The runtime every server, timer and store connection of the process runs on.
///
/// One worker is a current-thread runtime: the request, the upstream connection and the
/// Redis connection then share one thread, so no wake-up crosses threads and no
/// work-stealing machinery runs (up to 10 % less CPU per request in most paired runs,
/// but one core at most: docs/benchmarks.md, "Worker threads"). More workers are
/// tokio's multi-threaded runtime with that many threads.
fn async_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    telemetry::init_logs();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli.with_conventional_env(),
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    let demo = if cli.demo {
        match cli.prepare_demo() {
            Ok(demo) => Some(demo),
            Err(e) => {
                eprintln!("tollgate-sidecar: invalid configuration: {e}");
                return ExitCode::from(EX_USAGE);
            }
        }
    } else {
        None
    };
    // Flags, environment and file become one value, once; reload works from it too.
    let source = cli.config_source();
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate-sidecar: invalid configuration: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = match async_runtime(config.workers) {
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
                        source.origin()
                    );
                    ExitCode::from(EX_USAGE)
                }
            };
        }
        if let Some(demo) = demo {
            if let Err(e) = demo.spawn() {
                eprintln!("tollgate-sidecar: cannot start the demo upstream: {e}");
                return ExitCode::FAILURE;
            }
        }
        let sidecar = match Sidecar::bind(config).await {
            Ok(s) => s.with_reload(source),
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

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_is_a_current_thread_runtime_and_more_are_that_many_threads() {
        let one = super::async_runtime(1).expect("runtime");
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let three = super::async_runtime(3).expect("runtime");
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
    }
}
