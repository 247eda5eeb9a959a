//! `tollgate-loadgen` binary: parse and validate everything, run, print the summary.
//!
//! Exit codes: 0 after a completed run or a SIGINT/SIGTERM stop (the summary is printed either
//! way) in which at most `MAX_FAILED_PERCENT` % of the requests failed; 1 when more failed (the
//! last line says so and why), or the JSON summary cannot be written, or the runtime cannot
//! start; 64 for a configuration or usage error (nothing is sent).

use std::process::ExitCode;

use anyhow::Context;
use tollgate_loadgen::config::{Config, ConfigError};
use tollgate_loadgen::console::Console;
use tollgate_loadgen::Summary;

/// `EX_USAGE` from sysexits.h: the demo contract's code for bad configuration.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config = match Config::parse_from(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    let budget = config.failure_budget.clone();
    match run(config) {
        // Judged after the summary and the JSON are out, so a failed run still leaves its
        // numbers behind, and this verdict is the last line.
        Ok(summary) => match summary.check_failures(&budget) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate-loadgen: run failed: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("tollgate-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    match e {
        ConfigError::Usage(clap_error) if e.is_informational() => {
            // --help / --version: clap prints to stdout.
            let _ = clap_error.print();
            ExitCode::SUCCESS
        }
        ConfigError::Usage(clap_error) => {
            let _ = clap_error.print();
            ExitCode::from(EXIT_USAGE)
        }
        ConfigError::Invalid { .. } => {
            eprintln!("tollgate-loadgen: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(config: Config) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let console = Console::stdout(config.progress, config.duration);
        let json = config.json.clone();
        let summary = tollgate_loadgen::run(config, console.clone(), shutdown_signal()).await;
        console.line(&summary.render());
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&summary).context("serializing the summary")?;
            std::fs::write(&path, text)
                .with_context(|| format!("writing the JSON summary to {}", path.display()))?;
        }
        Ok(summary)
    })
}

/// Completes on SIGINT or SIGTERM. The handlers are installed now, not on first poll, so a
/// signal that arrives while the run is starting is not lost. A handler that cannot be
/// installed leaves that signal its default action (terminate without a summary), which is no
/// worse than not handling it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            () = recv(interrupt.as_mut()) => {}
            () = recv(terminate.as_mut()) => {}
        }
    }
}

/// Waits for one delivery of `signal`, or forever if it has no handler.
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
async fn shutdown_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
