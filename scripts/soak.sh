#!/usr/bin/env bash
# Bounded soak benchmark (issue 7): three tollgate-sidecar processes sharing one Redis, a steady
# rate with bursts for SOAK_SECONDS, and at the end a report of memory growth (sidecar RSS,
# Redis used_memory and key count), errors (loadgen failures, sidecar error counters) and
# global accuracy (the loadgen's over-admission across the three nodes).
#
#   ./scripts/soak.sh                    # 600 s (the documented run, docs/reliability.md#soak)
#   SOAK_SECONDS=60 ./scripts/soak.sh    # quick run
#
# What runs (everything on 127.0.0.1, ports picked free by the kernel):
#   redis-server --save '' --appendonly no        one, private to this run
#   tollgate-demo-upstream                        the upstream of the three sidecars
#   tollgate-sidecar x3                           --limit SOAK_LIMIT/SOAK_WINDOW_S s per x-api-key,
#                                                 --algorithm SOAK_ALGORITHM, failure mode open
#   tollgate-loadgen (main)                       proxy mode, round-robin over the three proxies,
#                                                 SOAK_RPS steady with SOAK_BURST_MULTIPLIER x
#                                                 bursts, keys SOAK_KEYS (all hot: the accuracy
#                                                 report compares admitted with the policy)
#   tollgate-loadgen (churn)                      proxy mode, SOAK_CHURN_RPS of never-repeated
#                                                 keys: every request creates a Redis key and
#                                                 limiter state that must expire (0 disables)
# Every SOAK_SAMPLE_INTERVAL s it records each sidecar's VmRSS and open fds, the upstream's RSS,
# Redis used_memory and DBSIZE, the store errors so far (sum of the sidecars'
# ratelimiter_store_errors_total) and the 1-minute load average; after the load it waits
# SOAK_IDLE_AFTER s and samples again (the keys must have expired by then).
#
# Exit status: 0 pass; 1 when a process died (or the loadgen exited non-zero), failed requests
# > SOAK_MAX_FAILED_PCT % (0.1) of all requests, or over-admission > SOAK_MAX_OVER_PCT % (1);
# 69 a tool is missing; 70 setup failed (a port, a /ready that never came).
# Results stay in SOAK_OUT (default target/soak/<UTC timestamp>): samples.csv, the loadgen
# logs and JSON summaries, the sidecars' logs and final /metrics, report.txt.
#
# Tunables (env; the loadgen's own variables such as RPS are deliberately not read):
#   SOAK_SECONDS=600 SOAK_RPS=300 SOAK_BURST_MULTIPLIER=5 SOAK_BURST_DURATION=5
#   SOAK_BURST_INTERVAL=30 SOAK_KEYS=fixed:50 SOAK_LIMIT=20 SOAK_WINDOW_S=10
#   SOAK_ALGORITHM=gcra SOAK_CHURN_RPS=20 SOAK_SAMPLE_INTERVAL=30 SOAK_IDLE_AFTER=15
#   SOAK_MAX_FAILED_PCT=0.1 SOAK_MAX_OVER_PCT=1 SOAK_BUILD=0 (1: cargo build even if present)
#   SOAK_OUT=DIR
set -uo pipefail

SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_RPS=${SOAK_RPS:-300}
SOAK_BURST_MULTIPLIER=${SOAK_BURST_MULTIPLIER:-5}
SOAK_BURST_DURATION=${SOAK_BURST_DURATION:-5}
SOAK_BURST_INTERVAL=${SOAK_BURST_INTERVAL:-30}
SOAK_KEYS=${SOAK_KEYS:-fixed:50}
SOAK_LIMIT=${SOAK_LIMIT:-20}
SOAK_WINDOW_S=${SOAK_WINDOW_S:-10}
SOAK_ALGORITHM=${SOAK_ALGORITHM:-gcra}
SOAK_CHURN_RPS=${SOAK_CHURN_RPS:-20}
SOAK_SAMPLE_INTERVAL=${SOAK_SAMPLE_INTERVAL:-30}
SOAK_IDLE_AFTER=${SOAK_IDLE_AFTER:-15}
SOAK_MAX_FAILED_PCT=${SOAK_MAX_FAILED_PCT:-0.1}
SOAK_MAX_OVER_PCT=${SOAK_MAX_OVER_PCT:-1}
SOAK_BUILD=${SOAK_BUILD:-0}

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))
cd "$root" || exit 70

for tool in redis-server redis-cli curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "soak: $tool is not installed" >&2; exit 69; }
done
case $SOAK_SECONDS in '' | *[!0-9]*) echo "soak: SOAK_SECONDS must be whole seconds" >&2; exit 64 ;; esac
[ "$SOAK_SECONDS" -ge 1 ] || { echo "soak: SOAK_SECONDS must be >= 1" >&2; exit 64; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${SOAK_OUT:-$root/target/soak/$stamp}
mkdir -p "$OUT" || exit 70
log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# ---- binaries ------------------------------------------------------------------------------
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null)
target_dir=${target_dir:-$root/target}
rel="$target_dir/release"
if [ "$SOAK_BUILD" = 1 ] || [ ! -x "$rel/tollgate-sidecar" ] || [ ! -x "$rel/tollgate-demo-upstream" ] ||
  [ ! -x "$rel/tollgate-loadgen" ]; then
  log "building release binaries"
  cargo build --release -p tollgate-sidecar -p tollgate-loadgen || { echo "soak: build failed" >&2; exit 70; }
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-soak.XXXXXX") || exit 70
pids=()   # every process this script started, in start order
names=()  # their names, same order
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local i pid
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null; done
  for _ in $(seq 50); do # at most 5 s of grace, then SIGKILL
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A snapshot of the binaries: other builds may replace target/release while the soak runs.
for b in tollgate-sidecar tollgate-demo-upstream tollgate-loadgen; do
  cp "$rel/$b" "$tmp/$b" || { echo "soak: cannot copy $rel/$b" >&2; exit 70; }
done
SIDECAR="$tmp/tollgate-sidecar" UPSTREAM="$tmp/tollgate-demo-upstream" LOADGEN="$tmp/tollgate-loadgen"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# started NAME PID: remembers a process for cleanup and the liveness checks.
started() { names+=("$1"); pids+=("$2"); }
# wait_http URL: waits (at most 15 s) for a 200.
wait_http() {
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "soak: not ready: $1" >&2
  exit 70
}
# dead: names of the started servers that are gone (empty when all live; loadgens excluded).
dead() {
  local i out=""
  for i in "${!pids[@]}"; do
    case ${names[$i]} in loadgen*) continue ;; esac
    kill -0 "${pids[$i]}" 2>/dev/null || out+="${names[$i]} "
  done
  printf '%s' "${out% }"
}

# ---- processes -------------------------------------------------------------------------------
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no --logfile "$OUT/redis.log" >/dev/null 2>&1 &
started redis $!
for _ in $(seq 100); do
  redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || { echo "soak: redis did not start" >&2; exit 70; }

up_port=$(free_port)
LISTEN=127.0.0.1:$up_port RUST_LOG=warn "$UPSTREAM" >"$OUT/upstream.log" 2>&1 &
started upstream $!
wait_http "http://127.0.0.1:$up_port/health"

limit_spec="$SOAK_LIMIT/${SOAK_WINDOW_S}s"
proxy_ports=() admin_ports=() sidecar_pids=() targets=""
for i in 1 2 3; do
  p=$(free_port) a=$(free_port)
  RUST_LOG=warn "$SIDECAR" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
    --upstream "http://127.0.0.1:$up_port" --redis-url "redis://127.0.0.1:$redis_port" \
    --limit "$limit_spec" --algorithm "$SOAK_ALGORITHM" --key header:x-api-key \
    --node-id "soak-$i" >"$OUT/sidecar-$i.log" 2>&1 &
  started "sidecar-$i" $!
  sidecar_pids+=($!) proxy_ports+=("$p") admin_ports+=("$a")
  targets+="${targets:+,}http://127.0.0.1:$p"
done
for a in "${admin_ports[@]}"; do wait_http "http://127.0.0.1:$a/ready"; done
log "redis :$redis_port, upstream :$up_port, sidecars ${proxy_ports[*]} (admin ${admin_ports[*]}), out $OUT"

# ---- samples ---------------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
redis_used() { redis-cli -p "$redis_port" info memory 2>/dev/null | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
redis_keys() { redis-cli -p "$redis_port" dbsize 2>/dev/null | tr -d '\r'; }
# counter SERIES: the sum of a counter over the three sidecars' /metrics (absent series = 0).
counter() {
  local a
  for a in "${admin_ports[@]}"; do curl -s --max-time 2 "http://127.0.0.1:$a/metrics"; done |
    awk -v s="$1" 'index($0, s) == 1 { n += $NF } END { printf "%d", n }'
}
samples="$OUT/samples.csv"
echo "t_s,phase,load1,rss_kb_1,rss_kb_2,rss_kb_3,fds_1,fds_2,fds_3,rss_kb_upstream,redis_used_memory,redis_keys,store_errors,dead" >"$samples"
t_start=$(date +%s)
sample() { # sample PHASE
  local t row i
  t=$(($(date +%s) - t_start))
  row="$t,$1,$(cut -d' ' -f1 /proc/loadavg)"
  for i in 0 1 2; do row+=",$(rss_kb "${sidecar_pids[$i]}")"; done
  for i in 0 1 2; do row+=",$(fds "${sidecar_pids[$i]}")"; done
  row+=",$(rss_kb "${pids[1]}"),$(redis_used),$(redis_keys),$(counter ratelimiter_store_errors_total),$(dead)"
  echo "$row" >>"$samples"
}

meta="$OUT/meta.txt"
{
  echo "date_utc=$stamp"
  echo "git=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- middleware sidecar loadgen 2>/dev/null || echo ' (working tree differs in middleware/sidecar/loadgen)')"
  echo "binaries=$(for b in tollgate-sidecar tollgate-loadgen; do printf '%s built %s; ' "$b" "$(date -r "$rel/$b" +%H:%M)"; done)"
  echo "cpus=$(nproc)"
  echo "uptime_start=$(uptime)"
  echo "redis=$(redis-server --version | awk '{ print $3 }')"
  echo "params=SOAK_SECONDS=$SOAK_SECONDS SOAK_RPS=$SOAK_RPS bursts=${SOAK_BURST_MULTIPLIER}x ${SOAK_BURST_DURATION}s every ${SOAK_BURST_INTERVAL}s SOAK_KEYS=$SOAK_KEYS limit=$limit_spec algorithm=$SOAK_ALGORITHM SOAK_CHURN_RPS=$SOAK_CHURN_RPS"
} >"$meta"
log "$(uptime)"

sample idle
for i in 1 2 3; do
  curl -sf --max-time 5 "http://127.0.0.1:${admin_ports[$((i - 1))]}/metrics" >"$OUT/metrics-start-$i.txt"
done

# ---- load ------------------------------------------------------------------------------------
lg_common=(--targets "$targets" --mode proxy --path /api/items --key-header x-api-key
  --limit "$SOAK_LIMIT" --window-ms "$((SOAK_WINDOW_S * 1000))" --algorithm "$SOAK_ALGORITHM"
  --burst "$SOAK_LIMIT" --duration "$SOAK_SECONDS" --progress never)
log "load: ${SOAK_SECONDS}s, $SOAK_RPS rps, ${SOAK_BURST_MULTIPLIER}x bursts of ${SOAK_BURST_DURATION}s every ${SOAK_BURST_INTERVAL}s, keys $SOAK_KEYS, limit $limit_spec ($SOAK_ALGORITHM); churn $SOAK_CHURN_RPS rps"
"$LOADGEN" "${lg_common[@]}" --rps "$SOAK_RPS" --keys "$SOAK_KEYS" --key-prefix user- \
  --burst-enabled true --burst-multiplier "$SOAK_BURST_MULTIPLIER" \
  --burst-duration "$SOAK_BURST_DURATION" --burst-interval "$SOAK_BURST_INTERVAL" \
  --stats-interval 30 --json "$OUT/loadgen.json" >"$OUT/loadgen.log" 2>&1 &
lg_pid=$!
started loadgen $lg_pid
churn_pid=""
if [ "$SOAK_CHURN_RPS" != 0 ]; then
  "$LOADGEN" "${lg_common[@]}" --rps "$SOAK_CHURN_RPS" --keys unique --key-prefix churn- \
    --burst-enabled false --stats-interval 60 --json "$OUT/churn.json" >"$OUT/churn.log" 2>&1 &
  churn_pid=$!
  started loadgen-churn "$churn_pid"
fi

# Sample every SOAK_SAMPLE_INTERVAL s while the loadgens run; bounded by SOAK_SECONDS + 60 s.
t_load=$(date +%s)
next=$SOAK_SAMPLE_INTERVAL
deadline=$((t_load + SOAK_SECONDS + 60))
while kill -0 "$lg_pid" 2>/dev/null || { [ -n "$churn_pid" ] && kill -0 "$churn_pid" 2>/dev/null; }; do
  now=$(date +%s)
  if [ "$now" -ge "$deadline" ]; then
    echo "soak: the loadgen did not finish by SOAK_SECONDS + 60 s; stopping it" >&2
    kill -TERM "$lg_pid" ${churn_pid:+"$churn_pid"} 2>/dev/null
    sleep 5
    break
  fi
  if [ $((now - t_load)) -ge "$next" ] && [ $((now - t_load)) -lt "$SOAK_SECONDS" ]; then
    sample load
    log "t=$((now - t_load))s $(tail -n 1 "$samples")"
    next=$((next + SOAK_SAMPLE_INTERVAL))
  fi
  sleep 1
done
wait "$lg_pid"; lg_rc=$?
churn_rc=0
[ -n "$churn_pid" ] && { wait "$churn_pid"; churn_rc=$?; }
sample end
died_during=$(dead)
for i in 1 2 3; do
  curl -sf --max-time 5 "http://127.0.0.1:${admin_ports[$((i - 1))]}/metrics" >"$OUT/metrics-$i.txt" || : >"$OUT/metrics-$i.txt"
done
log "load done (loadgen rc $lg_rc, churn rc $churn_rc); idle ${SOAK_IDLE_AFTER}s for keys to expire"
sleep "$SOAK_IDLE_AFTER"
sample after
died=$(dead)
[ -n "$died_during" ] && died=$died_during # a process gone by the end of the load
echo "uptime_end=$(uptime)" >>"$meta"

# ---- report ----------------------------------------------------------------------------------
python3 - "$OUT" "$lg_rc" "$churn_rc" "$died" "$SOAK_MAX_FAILED_PCT" "$SOAK_MAX_OVER_PCT" <<'PY' | tee "$OUT/report.txt"
import csv, json, os, re, sys

out, lg_rc, churn_rc, died, max_failed, max_over = sys.argv[1:7]
lg_rc, churn_rc, max_failed, max_over = int(lg_rc), int(churn_rc), float(max_failed), float(max_over)
meta = dict(l.rstrip("\n").split("=", 1) for l in open(f"{out}/meta.txt") if "=" in l)
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
mb = lambda kb: int(kb or 0) / 1024

def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except (OSError, ValueError):
        return None

def metrics(i):
    m = {}
    try:
        text = open(f"{out}/metrics-{i}.txt").read()
    except OSError:
        return m
    for line in text.splitlines():
        hit = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})?\s+(\S+)$", line)
        if hit:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', hit.group(2) or ""))
            labels.pop("node", None)
            m[(hit.group(1), tuple(sorted(labels.items())))] = float(hit.group(3))
    return m

print(f"== Tollgate soak {meta.get('date_utc')}  git {meta.get('git')}")
print(f"   {meta.get('params')}")
print(f"   {meta.get('cpus')} CPUs; redis {meta.get('redis')}; binaries: {meta.get('binaries')}")
print(f"   start: {meta.get('uptime_start', '').strip()}")
print(f"   end:   {meta.get('uptime_end', '').strip()}")
print()
print("-- samples (t in s from the idle sample; RSS in MB; store_err cumulative, all three sidecars)")
print(f"{'t_s':>5} {'phase':<6} {'load1':>5} {'sc-1':>7} {'sc-2':>7} {'sc-3':>7} {'fds':>11} {'upstr':>7} {'redis_MB':>8} {'keys':>6} {'store_err':>9}  dead")
for r in rows:
    fds = "/".join(r[f"fds_{i}"] for i in (1, 2, 3))
    print(f"{r['t_s']:>5} {r['phase']:<6} {r['load1']:>5} {mb(r['rss_kb_1']):7.1f} {mb(r['rss_kb_2']):7.1f} "
          f"{mb(r['rss_kb_3']):7.1f} {fds:>11} {mb(r['rss_kb_upstream']):7.1f} "
          f"{int(r['redis_used_memory'] or 0) / 2**20:8.2f} {r['redis_keys']:>6} {r['store_errors']:>9}  {r['dead']}")
print()

loaded = [r for r in rows if r["phase"] in ("load", "end")]
idle = rows[0]
warm = loaded[0] if loaded else idle
final = next((r for r in rows if r["phase"] == "end"), rows[-1])
half = loaded[len(loaded) // 2] if loaded else idle
print("-- sidecar RSS (MB): idle = before load, warm = first sample under load, final = end of load")
print(f"{'':9} {'idle':>6} {'warm':>6} {'mid':>6} {'final':>6} {'max':>6}  {'final-warm':>16}  {'final-mid':>10}  {'final-idle':>10}")
for i in (1, 2, 3):
    k = f"rss_kb_{i}"
    v = lambda r: mb(r[k])
    mx = max(v(r) for r in rows)
    g = v(final) - v(warm)
    pct = 100 * g / v(warm) if v(warm) else 0
    print(f"sidecar-{i} {v(idle):6.1f} {v(warm):6.1f} {v(half):6.1f} {v(final):6.1f} {mx:6.1f}  "
          f"{g:+7.1f} ({pct:+5.1f}%)  {v(final) - v(half):+10.1f}  {v(final) - v(idle):+10.1f}")
keys_load = [int(r["redis_keys"] or 0) for r in loaded]
used = [int(r["redis_used_memory"] or 0) / 2**20 for r in rows]
print(f"redis keys under load: min {min(keys_load, default=0)} max {max(keys_load, default=0)}; "
      f"{rows[-1]['redis_keys']} after the idle wait")
print(f"redis used_memory (MB): idle {used[0]:.2f} final {int(final['redis_used_memory'] or 0) / 2**20:.2f} "
      f"max {max(used):.2f} after idle {used[-1]:.2f}")
print()

def lg_line(name, s):
    if s is None:
        print(f"{name}: no JSON summary")
        return
    fails = ", ".join(f"{k} {v}" for k, v in s["failures"].items() if v) or "none"
    lat, lag = s["latency_ms"], s["send_lag_ms"]
    print(f"{name}: requests {s['requests']}  success {s['success']} (admitted {s['admitted']}, blocked {s['blocked']})"
          f"  failed {s['failed']} ({fails})")
    print(f"{'':{len(name)}}  statuses {s['statuses']}; send {s['send_rps']:.1f} rps, achieved {s['achieved_rps']:.1f} rps;"
          f" latency p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p999']:.2f} max {lat['max']:.2f} ms;"
          f" send lag p99 {lag['p99']:.2f} max {lag['max']:.2f} ms; {s['connections']} connections")

main, churn = load("loadgen.json"), load("churn.json")
print("-- loadgen")
lg_line("main ", main)
lg_line("churn", churn)
acc = main.get("accuracy") if main else None
if acc:
    ratio = 100 * acc["admitted"] / acc["allowed_max_total"] if acc["allowed_max_total"] else 0
    print(f"accuracy ({acc['policy']['algorithm']}, D {acc['elapsed_ms'] / 1000:.1f} s): keys {acc['keys']}, "
          f"admitted {acc['admitted']} of allowed_max {acc['allowed_max_total']} ({ratio:.2f} % of the bound), "
          f"excess {acc['excess']}, keys_over {acc['keys_over']}, over-admission {acc['over_admission_pct']:.3f} %")
print()

print("-- sidecar /metrics at the end of the load")
tot = {}
for i in (1, 2, 3):
    m = metrics(i)
    if not m:
        print(f"sidecar-{i}: no metrics (scrape failed)")
        continue
    statuses = {dict(l)["status"]: int(v) for (n, l), v in m.items() if n == "tollgate_proxy_requests_total"}
    decisions = {dict(l)["decision"]: int(v) for (n, l), v in m.items() if n == "ratelimiter_requests_checked_total"}
    store_err = {dict(l).get("kind", "?"): int(v) for (n, l), v in m.items() if n == "ratelimiter_store_errors_total"}
    up_err = {dict(l).get("kind", "?"): int(v) for (n, l), v in m.items() if n == "tollgate_upstream_errors_total"}
    deny = int(sum(v for (n, l), v in m.items() if n == "ratelimiter_deny_cache_hits_total"))
    circuit = int(max((v for (n, l), v in m.items() if n == "ratelimiter_circuit_state"), default=0))
    other = {k: v for k, v in statuses.items() if not (k.startswith("2") or k == "429")}
    print(f"sidecar-{i}: statuses {dict(sorted(statuses.items()))}; decisions {dict(sorted(decisions.items()))}; "
          f"deny-cache hits {deny}")
    print(f"{'':10} store errors {store_err or 0}; upstream errors {up_err or 0}; non-2xx/429 statuses {other or 0}; "
          f"circuit state {circuit}")
    for k, v in (("2xx", sum(v for k, v in statuses.items() if k.startswith("2"))), ("429", statuses.get("429", 0)),
                 ("other", sum(other.values())), ("store_errors", sum(store_err.values())),
                 ("upstream_errors", sum(up_err.values())), ("decision_error", decisions.get("error", 0))):
        tot[k] = tot.get(k, 0) + v
print(f"all three: {tot}")
if main:
    lg_2xx = main["admitted"] + (churn["admitted"] if churn else 0)
    lg_429 = main["blocked"] + (churn["blocked"] if churn else 0)
    print(f"cross-check: loadgen admitted {lg_2xx} / sidecars 2xx {tot.get('2xx')}; "
          f"loadgen blocked {lg_429} / sidecars 429 {tot.get('429')}")
print()

fail = []
if died:
    fail.append(f"process(es) died: {died}")
if lg_rc != 0 or churn_rc != 0:
    fail.append(f"loadgen exit codes main {lg_rc}, churn {churn_rc}")
if main is None:
    fail.append("no loadgen summary")
else:
    reqs = main["requests"] + (churn["requests"] if churn else 0)
    failed = main["failed"] + (churn["failed"] if churn else 0)
    fpct = 100 * failed / reqs if reqs else 100
    print(f"failed requests: {failed} of {reqs} = {fpct:.4f} % (limit {max_failed} %)")
    if fpct > max_failed:
        fail.append(f"failed requests {fpct:.4f} % > {max_failed} %")
    if acc is None:
        fail.append("no accuracy report")
    else:
        print(f"over-admission: {acc['over_admission_pct']:.4f} % (limit {max_over} %)")
        if acc["over_admission_pct"] > max_over:
            fail.append(f"over-admission {acc['over_admission_pct']:.4f} % > {max_over} %")
print("SOAK " + ("FAILED: " + "; ".join(fail) if fail else "PASSED"))
sys.exit(1 if fail else 0)
PY
rc=${PIPESTATUS[0]}
log "results in $OUT (exit $rc)"
exit "$rc"
