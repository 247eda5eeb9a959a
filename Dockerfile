# Tollgate image: tollgate-sidecar, tollgate-demo-upstream and tollgate-loadgen in one slim,
# non-root Debian image. The compose demo (compose/docker-compose.yml) runs every one of its
# services from it, choosing the binary with `command:`.
#
# Two ways to build it:
#
#   docker build -t tollgate:local .
#       Online, from source: the `runtime` stage (the last one, so the default) compiles the
#       release binaries in a rust:bookworm builder. `docker compose up --build` does this.
#
#   cargo build --release -p tollgate-sidecar -p tollgate-loadgen
#   docker build --target prebuilt -t tollgate:local .
#       Offline: packages binaries already built on a Debian bookworm host (same glibc) from
#       target/release. No Rust image is needed; scripts/e2e.sh builds it this way.
#
# Stage order matters: Docker's legacy builder (no BuildKit) runs every stage up to --target in
# file order, so the stages that need no image registry beyond debian:bookworm-slim come first.

# --- base: the runtime image without our binaries ---------------------------------------------
FROM debian:bookworm-slim AS base
# curl serves the compose healthchecks (`curl -f http://127.0.0.1:9000/ready`) and debugging.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tollgate
# Sidecar proxy, sidecar admin, demo upstream.
EXPOSE 8000 9000 3000
CMD ["tollgate-sidecar"]

# --- prebuilt: binaries from the host's target/release (offline builds) -----------------------
FROM base AS prebuilt
# Only these three files of target/ are in the build context (.dockerignore). The `*` globs plus
# the always-present .dockerignore keep this COPY from failing when they were never built, so the
# legacy builder can still pass through this stage on its way to `runtime`.
COPY .dockerignore target/release/tollgate-sidecar* target/release/tollgate-demo-upstream* \
     target/release/tollgate-loadgen* /usr/local/bin/
RUN rm /usr/local/bin/.dockerignore; \
    for bin in tollgate-sidecar tollgate-demo-upstream tollgate-loadgen; do \
      [ -x "/usr/local/bin/$bin" ] || echo "warning: target/release/$bin was not built" >&2; \
    done
USER tollgate:tollgate

# --- builder: compile from source (needs the rust image) --------------------------------------
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY middleware middleware
COPY sidecar sidecar
COPY loadgen loadgen
RUN cargo build --release --locked -p tollgate-sidecar -p tollgate-loadgen \
 && install -m 0755 -t /usr/local/bin \
      target/release/tollgate-sidecar target/release/tollgate-demo-upstream target/release/tollgate-loadgen

# --- runtime (default): the image users build ---------------------------------------------------
FROM base AS runtime
COPY --from=builder /usr/local/bin/tollgate-sidecar /usr/local/bin/tollgate-demo-upstream \
     /usr/local/bin/tollgate-loadgen /usr/local/bin/
USER tollgate:tollgate
