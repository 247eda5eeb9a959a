#!/usr/bin/env bash
# Benchmark (issue 4): requests/s and p50/p99 latency of
#   a     the upstream directly,
#   b     through tollgate-sidecar with the memory store,
#   c     through tollgate-sidecar with Redis,
#   d     through nginx proxy_pass with upstream keepalive,
# measured in one run with the same client (wrk), rounds interleaved (a b c d a b c d ...), and
# the median of the rounds reported. Extra variants, in the same interleaving:
#   b-hdr / c-hdr   the sidecar limiting per `--key header:x-api-key` instead of `--key global`
#   b-1t            as b, but with TOKIO_WORKER_THREADS=1 (one event loop, like nginx's d)
#   d-auto          nginx with `worker_processes auto` (d itself runs `worker_processes 1`)
#
# Everything listens on 127.0.0.1 only, every wrk run is bounded by -d, and every process the
# script starts (upstream, sidecars, redis-server, nginx) is stopped on exit (trap).
#
# Usage: sidecar/bench/proxy-vs-nginx.sh       (from anywhere inside the repository)
# Tunables (env):
#   ROUNDS=3 DURATION=10 WARMUP=2 THREADS=1 CONNECTIONS=32
#   CONFIGS="a b b-hdr b-1t c c-hdr d d-auto"   which configurations, in interleaving order
#   UPSTREAM=trivial|demo                  trivial: loadgen/examples/trivial_server (default)
#   OUT=FILE                               also write the raw per-run lines to FILE
#
# The same wrk command is used for every configuration, including a fixed `x-api-key` header
# (ignored by everything except the `-hdr` sidecars).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
CONFIGS=${CONFIGS:-"a b b-hdr b-1t c c-hdr d d-auto"}
UPSTREAM=${UPSTREAM:-trivial}
LIMIT=1000000000/1h # never denies within a run: every request is decided, then proxied

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))
cd "$root"
bench_dir="$root/sidecar/bench"
for tool in wrk nginx redis-server redis-cli curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 69; }
done
# nginx is often only in /usr/sbin, which may not be on PATH for normal users.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "== building (release)"
cargo build --release --quiet -p tollgate-sidecar --bin tollgate-sidecar --bin tollgate-demo-upstream
cargo build --release --quiet -p tollgate-loadgen --example trivial_server
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
sidecar_bin="$target_dir/release/tollgate-sidecar"

tmp=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free 127.0.0.1 port (the kernel picks; tiny race before we bind it again, fine here).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until `curl URL` answers 2xx (at most 10 s).
wait_http() {
  local url=$1
  for _ in $(seq 100); do
    curl -fs -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.1
  done
  echo "not ready: $url" >&2
  exit 70
}

# ---- upstream ---------------------------------------------------------------------------
up_port=$(free_port)
lifetime=$(( ROUNDS * 10 * (DURATION + WARMUP + 3) + 300 ))
case "$UPSTREAM" in
  trivial)
    "$target_dir/release/examples/trivial_server" "$up_port" "$lifetime" >"$tmp/upstream.out" 2>&1 &
    ;;
  demo)
    LISTEN="127.0.0.1:$up_port" RUST_LOG=warn "$target_dir/release/tollgate-demo-upstream" >"$tmp/upstream.out" 2>&1 &
    ;;
  *) echo "UPSTREAM must be trivial or demo" >&2; exit 64 ;;
esac
up_pid=$!
pids+=("$up_pid")
wait_http "http://127.0.0.1:$up_port/health"

# ---- redis ------------------------------------------------------------------------------
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null

# ---- proxies ----------------------------------------------------------------------------
declare -A url pid_of admin_of describe
url[a]="http://127.0.0.1:$up_port"
pid_of[a]=$up_pid
describe[a]="upstream directly ($UPSTREAM)"

start_sidecar() { # name key [redis [worker-threads]]
  local name=$1 key=$2 redis=${3:-} threads=${4:-} port admin args
  port=$(free_port); admin=$(free_port)
  args=(--listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
        --upstream "http://127.0.0.1:$up_port" --limit "$LIMIT" --key "$key"
        --node-id "bench-$name")
  [ -n "$redis" ] && args+=(--redis-url "redis://127.0.0.1:$redis_port")
  if [ -n "$threads" ]; then
    TOKIO_WORKER_THREADS=$threads RUST_LOG=warn "$sidecar_bin" "${args[@]}" >"$tmp/sidecar-$name.log" 2>&1 &
  else
    RUST_LOG=warn "$sidecar_bin" "${args[@]}" >"$tmp/sidecar-$name.log" 2>&1 &
  fi
  pid_of[$name]=$!
  pids+=("${pid_of[$name]}")
  admin_of[$name]=$admin
  url[$name]="http://127.0.0.1:$port"
  wait_http "http://127.0.0.1:$admin/ready"
}

start_nginx() { # name workers
  local name=$1 workers=$2 port prefix
  port=$(free_port)
  prefix="$tmp/nginx-$name"
  mkdir -p "$prefix/tmp" "$prefix/logs"
  sed -e "s|@WORKERS@|$workers|" -e "s|@PID@|$prefix/nginx.pid|" \
      -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@UPSTREAM@|127.0.0.1:$up_port|" \
      "$bench_dir/nginx.conf.template" >"$prefix/nginx.conf"
  "$NGINX" -c "$prefix/nginx.conf" -p "$prefix" -e stderr -g 'daemon off;' 2>"$prefix/error.log" &
  pid_of[$name]=$!
  pids+=("${pid_of[$name]}")
  url[$name]="http://127.0.0.1:$port"
  wait_http "${url[$name]}/health"
}

for c in $CONFIGS; do
  case "$c" in
    a) ;;
    b)      start_sidecar b global;                  describe[b]="sidecar, memory store, --key global" ;;
    b-hdr)  start_sidecar b-hdr header:x-api-key;    describe[b-hdr]="sidecar, memory store, --key header:x-api-key" ;;
    b-1t)   start_sidecar b-1t global "" 1;          describe[b-1t]="sidecar, memory store, --key global, TOKIO_WORKER_THREADS=1" ;;
    c)      start_sidecar c global "$redis_port";    describe[c]="sidecar, Redis, --key global" ;;
    c-hdr)  start_sidecar c-hdr header:x-api-key "$redis_port"; describe[c-hdr]="sidecar, Redis, --key header:x-api-key" ;;
    d)      start_nginx d 1;                         describe[d]="nginx proxy_pass, keepalive 64, worker_processes 1" ;;
    d-auto) start_nginx d-auto auto;                 describe[d-auto]="nginx proxy_pass, keepalive 64, worker_processes auto ($(nproc))" ;;
    *) echo "unknown configuration $c" >&2; exit 64 ;;
  esac
done

# CPU seconds (user+sys) of a process and its children threads/processes (nginx workers).
cpu_ticks() {
  local pid=$1 total=0 p
  for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    if [ -r "/proc/$p/stat" ]; then
      total=$(( total + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat") ))
    fi
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

# wrk latency text (e.g. 812.00us, 1.23ms, 2.01s) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n
  }'
}

wrk_cmd=(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "x-api-key: bench-client-1")
echo "== machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== client: ${wrk_cmd[*]} URL/bench"
echo "== configurations:"
for c in $CONFIGS; do printf '   %-7s %s  %s\n' "$c" "${url[$c]}" "${describe[$c]}"; done

results="$tmp/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    # Short warm-up: fills every pool (wrk's, the proxy's upstream keep-alive connections).
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -H "x-api-key: bench-client-1" "${url[$c]}/bench" >/dev/null
    load=$(cut -d' ' -f1 /proc/loadavg)
    proxy_before=$(cpu_ticks "${pid_of[$c]}")
    up_before=$(cpu_ticks "$up_pid")
    redis_before=$(cpu_ticks "$redis_pid")
    out=$("${wrk_cmd[@]}" "${url[$c]}/bench")
    proxy_after=$(cpu_ticks "${pid_of[$c]}")
    up_after=$(cpu_ticks "$up_pid")
    redis_after=$(cpu_ticks "$redis_pid")
    rps=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<<"$out")
    total=$(awk '/requests in/ { print $1 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    errors=$(awk '/Socket errors:/ { sub(/^.*Socket errors: /, ""); print }' <<<"$out")
    # CPU microseconds per request: the proxy's own (0 for "a", where it is the upstream).
    cpu_proxy=$(awk -v a="$proxy_after" -v b="$proxy_before" -v n="$total" -v hz="$hz" \
      'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / n }')
    cpu_up=$(awk -v a="$up_after" -v b="$up_before" -v n="$total" -v hz="$hz" \
      'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / n }')
    cpu_redis=$(awk -v a="$redis_after" -v b="$redis_before" -v n="$total" -v hz="$hz" \
      'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / n }')
    [ "$c" = a ] && cpu_proxy=0.0
    line="round=$round config=$c rps=$rps p50_ms=$p50 p99_ms=$p99 requests=$total non2xx=${non2xx:-0} cpu_us_per_req_proxy=$cpu_proxy cpu_us_per_req_upstream=$cpu_up cpu_us_per_req_redis=$cpu_redis load1=$load"
    [ -n "$errors" ] && line="$line socket_errors=\"$errors\""
    echo "$line" | tee -a "$results"
  done
done
[ -n "${OUT:-}" ] && cp "$results" "$OUT"

echo "== sidecar decisions (ratelimiter_requests_checked_total), to show every request was decided"
for c in $CONFIGS; do
  [ -n "${admin_of[$c]:-}" ] || continue
  m=$(curl -fs --max-time 2 "http://127.0.0.1:${admin_of[$c]}/metrics" || true)
  sum_of() { awk -v pat="$1" '$0 !~ /^#/ && $0 ~ pat { s += $NF } END { printf "%d", s }' <<<"$m"; }
  allowed=$(sum_of 'ratelimiter_requests_checked_total.*decision="allowed"')
  errored=$(sum_of 'ratelimiter_requests_checked_total.*decision="error"')
  printf '   %-7s allowed=%s limited=%s error=%s (failed open: %s %%) store_errors=%s fallback=%s\n' "$c" \
    "$allowed" "$(sum_of 'ratelimiter_requests_checked_total.*decision="limited"')" "$errored" \
    "$(awk -v e="$errored" -v a="$allowed" 'BEGIN { printf "%.2f", (a + e) ? 100 * e / (a + e) : 0 }')" \
    "$(sum_of '^ratelimiter_store_errors_total')" \
    "$(sum_of '^ratelimiter_fallback_decisions_total')"
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- summary: medians over rounds, ratios ------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { awk -v c="$1" -v k="$2" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "config" && kv[2] != c) next; if (kv[1] == k) print kv[2] } }' "$results"; }

declare -A med_rps
for c in $CONFIGS; do med_rps[$c]=$(field "$c" rps | median); done
a_rps=${med_rps[a]:-}

echo
echo "== medians of $ROUNDS interleaved rounds (wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s)"
echo
echo "| Configuration | req/s | p50 | p99 | req/s vs (a) | proxy CPU / request | Redis CPU / request |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for c in $CONFIGS; do
  p50=$(field "$c" p50_ms | median); p99=$(field "$c" p99_ms | median)
  cpu=$(field "$c" cpu_us_per_req_proxy | median)
  rcpu=$(field "$c" cpu_us_per_req_redis | median)
  ratio="-"
  [ -n "$a_rps" ] && ratio=$(awk -v x="${med_rps[$c]}" -v a="$a_rps" 'BEGIN { printf "%.0f %%", 100 * x / a }')
  [ "$c" = a ] && cpu="-" || cpu="$cpu µs"
  case "$c" in c*) rcpu="$rcpu µs" ;; *) rcpu="-" ;; esac
  printf '| (%s) %s | %s | %.2f ms | %.2f ms | %s | %s | %s |\n' "$c" "${describe[$c]}" "${med_rps[$c]}" "$p50" "$p99" "$ratio" "$cpu" "$rcpu"
done

# Ratios the issue asks about, per round (same round = same machine conditions) and as medians.
echo
per_round_ratio() { # num den
  local r
  for r in $(seq "$ROUNDS"); do
    awk -v r="$r" -v n="$1" -v d="$2" '
      { split($1, a, "="); split($2, b, "="); split($3, c, "=")
        if (a[2] == r && b[2] == n) x = c[2]; if (a[2] == r && b[2] == d) y = c[2] }
      END { if (x && y) printf "%.2f\n", x / y }' "$results"
  done
}
for pair in "b d" "b d-auto" "b-1t d" "c b" "b-hdr b" "c-hdr b-hdr"; do
  set -- $pair
  [ -n "${med_rps[$1]:-}" ] && [ -n "${med_rps[$2]:-}" ] || continue
  rounds=$(per_round_ratio "$1" "$2" | paste -sd' ')
  med=$(per_round_ratio "$1" "$2" | median)
  printf 'req/s (%s)/(%s): per round %s; median %s\n' "$1" "$2" "$rounds" "$med"
done
echo "Aims (issue 4): (b)/(d) >= 1.00; (c)/(b) >= 0.75"
