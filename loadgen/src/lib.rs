//! `tollgate-loadgen`: an open-loop HTTP load generator that demonstrates and measures Tollgate.
//!
//! It talks HTTP only — nothing from the `tollgate` crate is imported — so it measures the
//! limiter exactly as a client sees it. Requests are sent at a scheduled arrival rate whatever
//! the responses do (open loop), latency is measured from each request's intended send time
//! (no coordinated omission), and an accuracy report checks the admitted counts per key against
//! what the configured policy allows, across all targets.
//!
//! # Layout
//!
//! - [`cli`]: the flags and environment variables, as raw strings.
//! - [`config`]: validation into a typed [`Config`]; errors name the variable (exit 64).
//! - [`schedule`]: intended send times and burst phases, as pure functions of elapsed time.
//! - [`keys`]: key distributions (`unique`, `fixed:N`, `zipf:N:s`) and key names.
//! - [`request`]: building `check` / `proxy` requests, with everything reusable built once.
//! - [`pool`]: keep-alive HTTP/1.1 connections per target, each driven by a worker.
//! - [`outcome`]: how a request ended (admitted, blocked, failed and why).
//! - [`stats`]: counters and HDR latency histograms shared by all request tasks.
//! - [`report`]: the periodic stats line and progress updates.
//! - [`console`]: plain lines, a progress bar, or captured lines for tests.
//! - [`accuracy`]: the per-key admitted-vs-allowed bounds and over-admission percentage.
//! - [`summary`]: the end-of-run [`Summary`], its text form and its JSON form.
//! - [`run`](mod@run): the scheduler loop and drain, tying it together in [`run()`].
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), tollgate_loadgen::config::ConfigError> {
//! use tollgate_loadgen::{config::Config, console::Console};
//!
//! let config = Config::parse_from(["tollgate-loadgen", "--targets", "http://127.0.0.1:8000", "--duration", "5"])?;
//! let summary = tollgate_loadgen::run(config, Console::plain(), std::future::pending()).await;
//! println!("{}", summary.render());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod accuracy;
pub mod cli;
pub mod config;
pub mod console;
pub mod keys;
pub mod outcome;
pub mod pool;
pub mod report;
pub mod request;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod summary;

pub use config::Config;
pub use run::run;
pub use summary::Summary;
