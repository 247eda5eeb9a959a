#!/usr/bin/env bash
# The lease curve (issue 13): admitted ÷ limit and decisions/s of real sidecars on one real
# Redis, driven by the loadgen through their proxy ports, as functions of
#   - consistency and slice size: exact, and leased with a few `[lease]` settings,
#   - the offered rate: 1×, 2×, 4× the limit,
#   - the number of sidecars (1–3) and the spread: even round-robin, or 90 % on one sidecar,
# plus a hot-key run (a limit far above the offered rate: every request is a decision that
# admits) giving decisions/s and Redis commands per decision, exact vs leased.
# More than three nodes: sidecar/examples/lease_sim.rs (in-process, labelled simulated).
#
# Usage: loadgen/bench/lease-curve.sh      (from anywhere inside the repository)
# Tunables (env): RATE=500 (limit per second) DURATION=8 (s per run) MULTS="1 2 4"
#   SLICES="20:0.1 100:0.25" (target_ms:max_fraction per leased row) HOT_RPS=5000 HOT_SECONDS=6
#   SECTIONS="accuracy hot" (either or both)
#
# Everything listens on 127.0.0.1, every run is bounded by its duration (and `timeout`), and
# the upstream exits by itself; the trap stops what the script started. Prints a markdown table.
set -euo pipefail

RATE=${RATE:-500}
DURATION=${DURATION:-8}
MULTS=${MULTS:-"1 2 4"}
SLICES=${SLICES:-"20:0.1 100:0.25"}
HOT_RPS=${HOT_RPS:-5000}
SECTIONS=${SECTIONS:-"accuracy hot"}
HOT_SECONDS=${HOT_SECONDS:-6}

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))
cd "$root"
for tool in redis-server redis-cli jq curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 69; }
done

echo "== building (release)" >&2
cargo build --release --quiet -p tollgate-sidecar -p tollgate-loadgen --bins --example trivial_server
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
work=$(mktemp -d)
# Copies: a target directory shared with other checkouts may be rebuilt under us mid-run.
cp "$target_dir/release/tollgate-sidecar" "$target_dir/release/tollgate-loadgen" \
  "$target_dir/release/examples/trivial_server" "$work/"
sidecar="$work/tollgate-sidecar"
loadgen="$work/tollgate-loadgen"
server="$work/trivial_server"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || shuf -i 20000-60000 -n 1
}

# Runs per configuration: at most (3 mults × 2 spreads + 2 node counts) × (DURATION + a few s).
runs_per_cfg=$(( $(wc -w <<<"$MULTS") * 2 + 2 ))
n_cfgs=$(( 1 + $(wc -w <<<"$SLICES") ))
lifetime=$(( n_cfgs * runs_per_cfg * (DURATION + 10) + 2 * (HOT_SECONDS + 10) * 2 + 120 ))

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$server" 0 "$lifetime" >"$work/upstream" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/upstream" ] && break; sleep 0.1; done
upstream=$(head -n1 "$work/upstream")
case "$upstream" in 127.0.0.1:*) ;; *) echo "upstream did not start on 127.0.0.1: '$upstream'" >&2; exit 70 ;; esac

load_now() { cut -d' ' -f1-3 /proc/loadavg; }
echo "== machine: $(nproc) cores, load average $(load_now) at start; redis, 3 sidecars, the upstream and the loadgen share them" >&2

# start_sidecars NAME CONSISTENCY TARGET_MS MAX_FRACTION LIMIT_SPEC [ALGORITHM]: three sidecars,
# their proxy base URLs in $proxies[]
sidecar_pids=()
proxies=()
start_sidecars() {
  local name=$1 consistency=$2 target_ms=$3 fraction=$4 spec=$5 algorithm=${6:-gcra} i proxy admin
  proxies=()
  sidecar_pids=()
  for i in 1 2 3; do
    proxy=$(free_port); admin=$(free_port)
    cat >"$work/$name-$i.toml" <<EOF
listen = "127.0.0.1:$proxy"
admin_listen = "127.0.0.1:$admin"
node_id = "$name-$i"

[redis]
url = "redis://127.0.0.1:$redis_port"
timeout_ms = 1000

# Closed, and a long timeout: on a loaded machine a slow Redis answer must show as a failed
# request (the table's last column), never as an admission that fail-open would add.
[limiter]
failure_mode = "closed"
timeout_ms = 1000

[lease]
target_ms = $target_ms
max_fraction = $fraction

[upstreams.app]
endpoints = ["http://$upstream"]

[[policies]]
name = "curve"

[[policies.limits]]
name = "hot"
rate = "$spec"
algorithm = "$algorithm"
key = "header:x-api-key"
consistency = "$consistency"
EOF
    RUST_LOG=warn "$sidecar" --config "$work/$name-$i.toml" >"$work/$name-$i.log" 2>&1 &
    sidecar_pids+=($!)
    pids+=($!)
    proxies+=("http://127.0.0.1:$proxy")
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null && break; sleep 0.1; done
    curl -fsS -o /dev/null "http://127.0.0.1:$admin/ready" 2>/dev/null ||
      { echo "sidecar $name-$i not ready within 10 s:" >&2; cat "$work/$name-$i.log" >&2; exit 70; }
  done
}

stop_sidecars() {
  local pid
  for pid in "${sidecar_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${sidecar_pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}

# Script calls Redis has run (EVAL/EVALSHA/FCALL: every decision, lease and return is one);
# total_commands_processed would also count the commands each script runs inside.
redis_commands() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_\(evalsha\|eval\|fcall\|evalsha_ro\|eval_ro\|fcall_ro\):calls=\([0-9]*\).*/\2/p' |
    awk '{ n += $1 } END { print n + 0 }'
}

run_id=0
n=0 # configurations started, for unique node names
# run LABEL SPREAD NODES MULT RPS LIMIT BURST [ALGORITHM WINDOW_MS]: one loadgen run on one hot
# key; prints a table row.
run() {
  local label=$1 spread=$2 nodes=$3 mult=$4 rps=$5 limit=$6 burst=$7 algorithm=${8:-gcra} window_ms=${9:-1000}
  local targets i before after json
  run_id=$((run_id + 1))
  case "$spread" in
    even) targets=$(IFS=,; echo "${proxies[*]:0:$nodes}") ;;
    # 18 of 20 round-robin slots on the first sidecar: 90 %, the rest split over the others.
    uneven) targets=$(for i in $(seq 18); do printf '%s,' "${proxies[0]}"; done; IFS=,; echo "${proxies[*]:1:$((nodes - 1))}") ;;
  esac
  json="$work/run-$run_id.json"
  before=$(redis_commands)
  timeout $((DURATION + HOT_SECONDS + 30)) "$loadgen" --mode proxy --targets "$targets" --rps "$rps" \
    --duration "$DURATION" --burst-enabled false --keys fixed:1 --key-prefix "run$run_id-" \
    --limit "$limit" --window-ms "$window_ms" --algorithm "$algorithm" --burst "$burst" \
    --stats-interval 3600 --progress never --max-failed-percent 100 --json "$json" >/dev/null 2>&1 || true
  after=$(redis_commands)
  [ -s "$json" ] || { echo "| $label | $nodes | $spread | ${mult}× | (loadgen wrote no summary) |"; return; }
  jq -r --arg lbl "$label" --arg spread "$spread" --arg nodes "$nodes" --arg mult "$mult" \
    --arg cmds "$((after - before))" --arg first "${proxies[0]}" '
    (.accuracy.ideal_total // ([.requests, (.accuracy.allowed_max_total // 0)] | min)) as $ideal
    | ([.per_target[] | select(.target == $first) | .requests] | add // 0) as $on_first
    | "| \($lbl) | \($nodes) | \($spread) (\(if .requests > 0 then ($on_first * 100 / .requests | floor) else 0 end) % on one) | \($mult) | \(.requests) | \(.admitted) | \($ideal) | \(if $ideal > 0 then (.admitted * 10000 / $ideal | floor) / 100 else 0 end) % | \(.achieved_rps | floor) | \(.latency_ms.p99) | \(if .requests > 0 then (($cmds | tonumber) * 100 / .requests | floor) / 100 else 0 end) | \(.failed) |"
  ' "$json"
}

header() {
  echo
  echo "| consistency (target_ms / max_fraction) | sidecars | spread | offered | requests | admitted | ideal | admitted ÷ ideal | decisions/s | p99 ms | Redis scripts / request | failed |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
}

if [[ " $SECTIONS " == *" accuracy "* ]]; then
echo "## Accuracy: one hot key, limit $RATE/s (GCRA, burst $RATE), ${DURATION} s per run"
echo
echo "ideal = min(requests, the most GCRA allows over the run: burst + rate × elapsed): the loadgen's accuracy.ideal_total."
header
configs=("exact:20:0.1")
for s in $SLICES; do configs+=("leased:$s"); done
for cfg in "${configs[@]}"; do
  IFS=: read -r consistency target_ms fraction <<<"$cfg"
  n=$((n + 1))
  label=$consistency
  [ "$consistency" = leased ] && label="leased ($target_ms / $fraction)"
  start_sidecars "c$n" "$consistency" "$target_ms" "$fraction" "$RATE/s"
  for mult in $MULTS; do
    run "$label" even 3 "${mult}×" $((RATE * mult)) "$RATE" "$RATE"
    run "$label" uneven 3 "${mult}×" $((RATE * mult)) "$RATE" "$RATE"
  done
  run "$label" even 1 2× $((RATE * 2)) "$RATE" "$RATE"
  run "$label" even 2 2× $((RATE * 2)) "$RATE" "$RATE"
  stop_sidecars
done
fi

if [[ " $SECTIONS " == *" hot "* ]]; then
echo
echo "## Hot key: offered $HOT_RPS/s for ${HOT_SECONDS} s over three sidecars, limit 100000000 per hour (fixed window: every request a decision that admits)"
echo
echo "A fixed window, not GCRA: a GCRA lease is only spendable while the store's backlog covers it, which at a rate this far above the traffic is microseconds (see docs/benchmarks.md)."
header
DURATION=$HOT_SECONDS
for cfg in "exact:20:0.1" "leased:20:0.1"; do
  IFS=: read -r consistency target_ms fraction <<<"$cfg"
  n=$((n + 1))
  start_sidecars "h$n" "$consistency" "$target_ms" "$fraction" "100000000/1h" fixed-window
  run "$consistency" even 3 "$HOT_RPS/s" "$HOT_RPS" 100000000 100000000 fixed-window 3600000
  stop_sidecars
done
fi
echo
echo "load average at the end: $(load_now) ($(nproc) cores)"
