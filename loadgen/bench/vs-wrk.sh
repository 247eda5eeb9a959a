#!/usr/bin/env bash
# Benchmark: the highest rate tollgate-loadgen sustains against a trivial server, compared with
# `wrk` against the same server in the same run. Everything stays on 127.0.0.1 and every step
# is bounded in time; the server exits by itself after SERVER_LIFETIME seconds regardless.
#
# Usage: loadgen/bench/vs-wrk.sh            (from anywhere inside the repository)
# Tunables (env): WRK_SECONDS=10 STEP_SECONDS=5 CONNECTIONS=64 MAX_STEPS=20
#
# "Sustains" means: achieved rate (successful answers per second) ≥ 99 % of the target rate,
# with at most 0.1 % of requests failed. The search starts at 50 % of wrk's rate and climbs in
# steps of 5 % of wrk's rate until a rate fails twice in a row; wrk runs once before and once
# after the search.
set -euo pipefail

WRK_SECONDS=${WRK_SECONDS:-10}
STEP_SECONDS=${STEP_SECONDS:-5}
CONNECTIONS=${CONNECTIONS:-64}
MAX_STEPS=${MAX_STEPS:-20}
SERVER_LIFETIME=$(( 2 * WRK_SECONDS + 2 * MAX_STEPS * (STEP_SECONDS + 5) + 30 ))

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))
cd "$root"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 69; }

echo "== building (release)"
cargo build --release --quiet -p tollgate-loadgen --bin tollgate-loadgen --example trivial_server
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
loadgen="$target_dir/release/tollgate-loadgen"
server="$target_dir/release/examples/trivial_server"

out=$(mktemp)
"$server" 0 "$SERVER_LIFETIME" >"$out" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
addr=$(head -n1 "$out")
case "$addr" in 127.0.0.1:*) ;; *) echo "server did not start on 127.0.0.1: '$addr'" >&2; exit 70 ;; esac
url="http://$addr"

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); server, wrk and loadgen share them"

wrk_rate() {
  wrk -t1 -c"$CONNECTIONS" -d"${WRK_SECONDS}s" "$url/" | awk '/^Requests\/sec:/ {printf "%d", $2}'
}

echo "== wrk -t1 -c$CONNECTIONS -d${WRK_SECONDS}s $url/"
wrk_before=$(wrk_rate)
echo "wrk: $wrk_before req/s"

# One loadgen step at `rate`; prints its line and returns 0 if the rate was sustained.
step_ok() {
  local rate=$1 line requests failed achieved p99 ok
  line=$("$loadgen" --targets "$url" --rps "$rate" --duration "$STEP_SECONDS" --burst-enabled false \
    --keys fixed:100 --connections "$CONNECTIONS" --stats-interval 3600 --progress never)
  requests=$(sed -n 's/^Requests: \([0-9]*\) .*/\1/p' <<<"$line" | tail -n1)
  failed=$(sed -n 's/^Requests: .* Failed: \([0-9]*\) .*/\1/p' <<<"$line" | tail -n1)
  achieved=$(sed -n 's/.* achieved \([0-9.]*\) rps.*/\1/p' <<<"$line")
  p99=$(sed -n 's/^Latency.* p99 \([^ ]*\) .*/\1/p' <<<"$line")
  ok=$(awk -v a="$achieved" -v r="$rate" -v f="$failed" -v n="$requests" \
    'BEGIN { print (a >= 0.99 * r && f <= 0.001 * n) ? "yes" : "no" }')
  printf 'loadgen --rps %-7s achieved %9.1f req/s  failed %-7s p99 %-9s sustained: %s\n' \
    "$rate" "$achieved" "$failed" "$p99" "$ok"
  [ "$ok" = yes ]
}

# Climb until a rate fails twice in a row: on a shared machine one step can be unlucky.
best=0
step=$(( wrk_before / 20 ))
rate=$(( wrk_before / 2 ))
for _ in $(seq "$MAX_STEPS"); do
  if step_ok "$rate" || step_ok "$rate"; then
    best=$rate
    rate=$(( rate + step ))
  else
    break
  fi
done

echo "== wrk again, to show how much the machine drifted during the search"
wrk_after=$(wrk_rate)
echo "wrk: $wrk_after req/s"

wrk_mean=$(( (wrk_before + wrk_after) / 2 ))
awk -v b="$best" -v w="$wrk_mean" -v w1="$wrk_before" -v w2="$wrk_after" 'BEGIN {
  printf "== result: loadgen sustains %d req/s; wrk %d / %d req/s (mean %d); ratio %.0f %%\n", b, w1, w2, w, 100 * b / w
}'
