//! What the benchmarks (`benches/`) and the benchmark examples (`examples/*_bench.rs`)
//! share: the never-denying limit they all measure, their knobs, and reading Redis'
//! `INFO`. Included with `#[path]` (examples) or `mod common` (benches).
#![allow(dead_code)]

use std::time::Duration;

use tollgate::{Algorithm, LimitSpec};

/// GCRA, 10^9 per day (interval 86 µs, burst 10^9): never denies within a benchmark,
/// so every decision takes the admit-and-write path.
pub fn never_denying_gcra() -> LimitSpec {
    LimitSpec::new(
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(86_400),
        None,
    )
    .expect("valid spec")
}

/// The integer knob `name` from the environment: `default` when unset or not a number,
/// clamped to `lo..=hi`.
pub fn env_u64(name: &str, default: u64, lo: u64, hi: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .clamp(lo, hi)
}

/// `field=value` of the `INFO` line that starts with `line_prefix`, as an integer.
pub fn info_field(info: &str, line_prefix: &str, field: &str) -> Option<u64> {
    let line = info.lines().find(|l| l.starts_with(line_prefix))?;
    line.split([':', ','])
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.trim().parse().ok())
}
