#!/usr/bin/env bash
# Redis decisions of tollgate's RedisStore next to the physical ceiling, and the Redis CPU
# each decision costs (issue 16, aim 2: <= 4 us). redis-benchmark runs the very same Lua
# script (EVALSHA of middleware/src/store/redis/decide.lua, same key, same arguments)
# against the same private redis-server, in the same run.
#
#   middleware/benches/redis-ceiling.sh            # from anywhere in the repository
#   ROUNDS=3 SECS=4 middleware/benches/redis-ceiling.sh
#
# It starts its own redis-server on a free 127.0.0.1 port (no persistence), kills it on
# exit, and talks to nothing else. Every step is bounded by `timeout`.
#
# Per round (ROUNDS, default 2, interleaved so a noisy neighbour hits both sides):
#   redis-benchmark -c 1  -P 1   -n N1    one connection, one request in flight
#   redis-benchmark -c 64 -P 1   -n N64   64 connections, one request in flight each
#   redis-benchmark -c 1  -P 64  -n N64   one connection, 64 pipelined (what a multiplexed
#                                         client sending 64 concurrent calls resembles)
#   cargo bench ... -- redis              the previous script (v1), the store unbatched
#                                         and batched, 1 and 8 limits, 1 and 64 callers:
#                                         decisions/s, p50/p99, and Redis CPU per decision
#                                         from INFO commandstats (reset before each case)
# and finally the best of the rounds for each and the ratios tollgate / redis-benchmark.
# Redis CPU per call (commandstats) barely moves with a neighbour's load; decisions/s and
# latency do: read those against the same run's redis-benchmark only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-2}
SECS=${SECS:-3}          # seconds per tollgate measurement (the bench clamps to 1..5)
N1=${N1:-100000}         # requests for redis-benchmark -c 1
N64=${N64:-400000}       # requests for redis-benchmark -c 64 and -P 64
LUA=middleware/src/store/redis/decide.lua
KEY='tollgate:{bench:k}:p:v2'
# ARGV as RedisStore sends them for one request with one GCRA limit of 10^9 per
# 86 400 000 ms (LimitSpec 1_000_000_000 per day): now="" (Redis TIME), grace 1000 ms,
# 1 distinct limit: algorithm 0, quota, period_ms, burst, interval_us = 86 400 000 000 /
# 10^9 = 86; then 1 request: 1 limit, cost 1, mode 0 (plain), limit number 1. It never
# denies, so both sides do the same TIME + MGET + SET on every call.
ARGS=("" 1000 1 0 1000000000 86400000 1000000000 86 1 1 1 0 1)

for tool in redis-server redis-cli redis-benchmark cargo timeout awk; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "== building the bench (before Redis starts)"
timeout 1800 cargo bench -p tollgate --bench decision --no-run

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    if ! ss -ltn | awk '{print $4}' | grep -q ":$p\$"; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}

PORT=$(free_port)
WORK=$(mktemp -d)
REDIS_PID=
cleanup() {
  if [[ -n $REDIS_PID ]]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no &
REDIS_PID=$!
cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
for _ in $(seq 1 50); do
  cli PING >/dev/null 2>&1 && break
  sleep 0.1
done
cli PING >/dev/null
echo "== redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT (pid $REDIS_PID)"

# -x sends the file byte for byte (a "$(cat ...)" would drop the final newline and give
# another SHA1 than the one RedisStore computes from the same file).
SHA=$(cli -x SCRIPT LOAD <"$LUA")
echo "== script sha $SHA; one call: $(cli EVALSHA "$SHA" 1 "$KEY" "${ARGS[@]}" | tr '\n' ' ')"

# redis-benchmark --csv prints a header and one line: "<test>","<rps>",...
bench_rps() {
  local clients=$1 pipeline=$2 n=$3
  timeout 120 redis-benchmark -h 127.0.0.1 -p "$PORT" -c "$clients" -P "$pipeline" -n "$n" \
    --csv EVALSHA "$SHA" 1 "$KEY" "${ARGS[@]}" | tail -n 1 | awk -F'","' '{print $2}' | tr -d '"'
}

best() { printf '%s\n' "$@" | sort -g | tail -n 1; }

rb1=() rb64=() rbp=() rbp_us=()
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  v=$(bench_rps 1 1 "$N1");    rb1+=("$v");  echo "redis-benchmark -c 1  -P 1  : $v req/s"
  v=$(bench_rps 64 1 "$N64");  rb64+=("$v"); echo "redis-benchmark -c 64 -P 1  : $v req/s"
  cli CONFIG RESETSTAT >/dev/null
  v=$(bench_rps 1 64 "$N64");  rbp+=("$v")
  us=$(cli INFO commandstats | tr -d '\r' | awk -F'usec_per_call=' '/^cmdstat_evalsha:/ {split($2, a, ","); print a[1]}')
  rbp_us+=("$us")
  echo "redis-benchmark -c 1  -P 64 : $v req/s, $us us of Redis CPU per call"
  if ! TOLLGATE_BENCH_REDIS_URL="redis://127.0.0.1:$PORT" TOLLGATE_BENCH_REDIS_ROUNDS=1 TOLLGATE_BENCH_REDIS_FIRST_ROUND="$round" \
       TOLLGATE_BENCH_REDIS_SECS="$SECS" \
       timeout 600 cargo bench -q -p tollgate --bench decision -- redis \
       >"$WORK/bench.out" 2>"$WORK/bench.err"; then
    cat "$WORK/bench.out" "$WORK/bench.err" >&2; exit 1
  fi
  grep '^TOLLGATE_REDIS ' "$WORK/bench.out" | tee -a "$WORK/all.out"
done

echo "== server-side errors: $(cli INFO errorstats | grep '^errorstat_' | tr -d '\r' | tr '\n' ' ')"
echo "== state $KEY = $(cli GET "$KEY")"

best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
# The best of the rounds of one field for one label and caller count ("min" for latency
# and CPU, where lower is better; "max" for rates).
pick() {
  awk -v l="$1" -v c="c=$2" -v f="$3=" -v how="$4" '
    $2 == l && $3 == c { for (i = 4; i <= NF; i++) if (index($i, f) == 1) { v = substr($i, length(f) + 1) + 0
      if (n == 0 || (how == "max" && v > b) || (how == "min" && v < b)) b = v; n++ } }
    END { if (n) printf "%s", b; else printf "-" }' "$WORK/all.out"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f %%", 100 * a / b}'; }

B_RB1=$(best "${rb1[@]}"); B_RB64=$(best "${rb64[@]}"); B_RBP=$(best "${rbp[@]}")
B_TG1=$(pick tollgate 1 per_sec max); B_TG64=$(pick tollgate 64 per_sec max)

echo
echo "== best of $ROUNDS rounds (decisions/s; ratio = tollgate / redis-benchmark)"
echo "| callers | tollgate RedisStore | redis-benchmark (same script) | ratio |"
echo "|---|---:|---:|---:|"
echo "| 1 | $B_TG1 | $B_RB1 (-c 1 -P 1) | $(pct "$B_TG1" "$B_RB1") |"
echo "| 64 | $B_TG64 | $B_RB64 (-c 64 -P 1) | $(pct "$B_TG64" "$B_RB64") |"
echo "| 64 | $B_TG64 | $B_RBP (-c 1 -P 64) | $(pct "$B_TG64" "$B_RBP") |"
echo
echo "== Redis CPU per decision (INFO commandstats usec / decisions; best of $ROUNDS rounds), rate and latency"
echo "| case | callers | decisions/s | p50 µs | p99 µs | decisions per call | Redis µs per call | Redis µs per decision | per limit |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| redis-benchmark -P 64 (same script, 1 limit) | 1 conn | $B_RBP | - | - | 1 | $(printf "%s\n" "${rbp_us[@]}" | sort -g | head -n 1) | - | - |"
for label in v1-script unbatched tollgate batched-100k-keys v1-script-8-limits unbatched-8-limits batched-8-limits; do
  for c in 1 64; do
    [[ $(pick "$label" "$c" per_sec max) == - ]] && continue
    echo "| $label | $c | $(pick "$label" "$c" per_sec max) | $(pick "$label" "$c" p50_us min) | $(pick "$label" "$c" p99_us min) | $(pick "$label" "$c" decisions_per_call max) | $(pick "$label" "$c" redis_us_per_call min) | $(pick "$label" "$c" redis_us_per_decision min) | $(pick "$label" "$c" redis_us_per_limit min) |"
  done
done
echo "all rounds: rb1=${rb1[*]} rb64=${rb64[*]} rbP64=${rbp[*]} rbP64_us_per_call=${rbp_us[*]}"
