#!/usr/bin/env bash
# Runs every test of the workspace: formatting, lints, docs, unit, property,
# conformance, Redis-failure, axum, tonic and loadgen tests, against a real
# redis-server that the tests start themselves, and the sidecar's /metrics through
# `promtool check metrics` (both installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean CI checkout builds once: incremental caches would only cost disk.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi

need_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}
# promtool (Debian's `prometheus` package) lints the sidecar's /metrics in
# sidecar/tests/process.rs::metrics_pass_promtool_and_match_the_docs.
need_promtool() {
  command -v "${PROMTOOL:-promtool}" >/dev/null 2>&1
}
if ! need_redis || ! need_promtool; then
  echo "==> installing redis-server and promtool (Debian packages) for the tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  need_redis || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
  need_promtool || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
need_redis || { echo "redis-server is required for the tests and could not be installed" >&2; exit 1; }
need_promtool || { echo "promtool is required for the tests and could not be installed" >&2; exit 1; }

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

# ---- the library without the workspace's feature unification ---------------------------------
# Inside the workspace the sidecar turns `redis` and `axum` on, so the crate alone and each
# feature alone are never compiled by the stages above: a memory-only user must not need
# redis-rs, and a cfg slip must not hide behind another member's features.
echo "==> tollgate alone: no default features, then each feature by itself"
cargo check -p tollgate --no-default-features
for feature in redis redis-tls axum tonic testing; do
  cargo check -p tollgate --no-default-features --features "$feature"
done
cargo clippy -p tollgate --no-default-features -- -D warnings
# ---- end of the feature stage -----------------------------------------------------------------

echo "==> cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

echo "==> tests"
# The binaries' crates are tested as they are built for users (default features), so a
# feature missing from their Cargo.toml cannot hide behind --all-features; the library
# is tested with every feature (its axum/tonic tests declare required-features).
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  cargo nextest run -p tollgate --all-features --no-fail-fast
  # nextest does not run doc tests.
  cargo test --workspace --all-features --doc
  # nextest gives every test a process of its own; plain `cargo test` (what a
  # contributor types, and how an application embeds the crates) runs a binary's tests
  # together in one process: one metrics recorder, shared file descriptors, sidecars
  # binding concurrently. Run the library's and the sidecar's tests that way too, so a
  # failure only one runner shows cannot hide.
  echo "==> tests again with plain cargo test (all tests of a binary in one process)"
  cargo test -p tollgate-sidecar -p tollgate-loadgen --no-fail-fast --lib --tests
  cargo test -p tollgate --all-features --no-fail-fast --lib --tests
else
  cargo test --workspace --no-fail-fast
  cargo test -p tollgate --all-features --no-fail-fast
fi

# ---- README's main command (scripts/readme-demo.sh) ------------------------------------------
# Runs the command of README.md's "Run it" block exactly as written (a release build, then the
# demo on 127.0.0.1:8000/9000) and checks the 200s, the 429 and a clean SIGTERM exit.
echo "==> README: the main command as written"
./scripts/readme-demo.sh
# ---- end of README stage ------------------------------------------------------------------

echo "==> end-to-end: the compose stack (skipped, and says so, when docker is unavailable)"
./scripts/e2e.sh
