#!/usr/bin/env bash
# Benchmark (issues 4 and 16): what a proxy in front of a service costs, in one command.
#
# Rows, measured in one run with the same client, rounds interleaved (every row once per round,
# in order) and the median of the rounds reported, with nginx `worker_processes auto` as the
# baseline (1.00):
#   direct        the upstream directly
#   nginx-auto    nginx proxy_pass, worker_processes auto, upstream keepalive 64   (baseline)
#   nginx-1       the same with worker_processes 1
#   mem           tollgate-sidecar, memory store, --key global
#   redis         tollgate-sidecar, Redis store, --key global
#   redis-rand    tollgate-sidecar, Redis store, --key header:x-api-key, 100k random keys
# Extra rows on request (CONFIGS): mem-rand (memory store, 100k random header keys); mem-alt
# and redis-rand-alt (as mem and redis-rand, but another build of the sidecar, ALT_BIN=path: to
# compare a change in one run; the two Redis rows share one redis-server); bare
# (sidecar/examples/bare_proxy.rs: hyper server + one upstream connection per client
# connection, nothing else — the floor of a hyper proxy).
#
# The client is the same for every row: `wrk -t1 -c64 -d5s --latency -s random-key.lua`, which
# sends `x-api-key: k<N>` with N drawn from 100,000 keys (shuffled once per run; rows that do not
# key on the header ignore it). The upstream is nginx `return 200` (1 worker), the issue's
# setup; UPSTREAM=trivial uses loadgen/examples/trivial_server instead.
#
# Redis CPU per decision comes from `INFO commandstats` (CONFIG RESETSTAT after each warm-up,
# read after the run): the usec of the script calls (EVALSHA and kin, which include the commands
# the scripts ran), divided by the requests wrk counted. The script also reads each process's CPU time from /proc around every run.
#
# CPU per request is split into user and system time for the proxy, the upstream (both from
# /proc/PID/stat utime and stime, workers included) and wrk (its rusage), and printed as a
# second table. With nginx-auto and mem in the run it also prints the floor of aim 1: the CPU a
# proxy may spend per request to reach 1.2x nginx auto when every process shares the cores,
# (nginx + others) / 1.2 - others, next to the kernel time per request the proxies spend.
#
# The markdown table is printed and written to docs/benchmarks.md between the markers
# `<!-- proxy-vs-nginx:begin -->` and `<!-- proxy-vs-nginx:end -->` (DOCS=0: print only), with
# the machine, the load average before/after and the tool versions.
#
# Everything listens on 127.0.0.1 only; every wrk run is bounded by -d and by `timeout`; every
# process the script starts (upstream, sidecars, redis-server, nginx) is stopped on exit. wrk,
# nginx and redis-server are installed from Debian's packages when missing (apt-get; sudo when
# not root): `apt-get install -y wrk nginx-light redis-server`.
#
# Usage: sidecar/bench/proxy-vs-nginx.sh       (from anywhere inside the repository)
# Tunables (env):
#   ROUNDS=3 DURATION=5 WARMUP=1 THREADS=1 CONNECTIONS=64 KEYS=100000
#   CONFIGS="direct nginx-auto nginx-1 mem redis redis-rand"   rows, in interleaving order
#   UPSTREAM=nginx|trivial      the service behind every proxy (default nginx `return 200`)
#   SIDECAR_ARGS="..."          extra flags for every sidecar (e.g. to compare settings)
#   SIDECAR_BIN=path            the sidecar binary to run (default: build it in release)
#   ALT_BIN=path                the binary of the mem-alt and redis-rand-alt rows
#   BARE_BIN=path               the bare row's binary (default: build the bare_proxy example)
#   OUT=FILE                    also write the raw per-run lines to FILE
#   DOCS=1                      write the table into docs/benchmarks.md (0: do not)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-64}
KEYS=${KEYS:-100000}
CONFIGS=${CONFIGS:-"direct nginx-auto nginx-1 mem redis redis-rand"}
UPSTREAM=${UPSTREAM:-nginx}
SIDECAR_ARGS=${SIDECAR_ARGS:-}
DOCS=${DOCS:-1}
LIMIT=1000000000/1h # never denies within a run: every request is decided, then proxied

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))
cd "$root"
bench_dir="$root/sidecar/bench"

# nginx is often only in /usr/sbin, which may not be on PATH for normal users.
export PATH="$PATH:/usr/sbin"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
{ command -v redis-server && command -v redis-cli; } >/dev/null || missing+=(redis-server redis-tools)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in wrk nginx redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed and could not be installed" >&2; exit 69; }
done
NGINX=$(command -v nginx)

echo "== building (release)"
[ -z "${SIDECAR_BIN:-}" ] && cargo build --release --quiet -p tollgate-sidecar --bin tollgate-sidecar
[ "$UPSTREAM" = trivial ] && cargo build --release --quiet -p tollgate-loadgen --example trivial_server
[[ " $CONFIGS " == *" bare "* ]] && [ -z "${BARE_BIN:-}" ] && cargo build --release --quiet -p tollgate-sidecar --example bare_proxy
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
sidecar_bin=${SIDECAR_BIN:-"$target_dir/release/tollgate-sidecar"}

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

# ---- the client's keys: wrk cycles through KEYS pre-built requests in a shuffled order --------
cat >"$tmp/random-key.lua" <<EOF
-- One request per key, built once in init() so the per-request cost is a table lookup.
local reqs, i, n = {}, 0, $KEYS
function init(args)
  math.randomseed(os.time())
  for k = 1, n do reqs[k] = "k" .. k end
  for k = n, 2, -1 do
    local j = math.random(k)
    reqs[k], reqs[j] = reqs[j], reqs[k]
  end
  for k = 1, n do
    wrk.headers["x-api-key"] = reqs[k]
    reqs[k] = wrk.format("GET", "/bench")
  end
  i = math.random(n) - 1
end
function request()
  i = i % n + 1
  return reqs[i]
end
EOF

# ---- upstream ---------------------------------------------------------------------------
up_port=$(free_port)
lifetime=$(( ROUNDS * 8 * (DURATION + WARMUP + 12) + 300 ))
start_nginx() { # name workers mode(proxy|origin) port
  local name=$1 workers=$2 mode=$3 port=$4 prefix
  prefix="$tmp/nginx-$name"
  mkdir -p "$prefix/tmp" "$prefix/logs"
  if [ "$mode" = origin ]; then
    sed -e "s|@WORKERS@|$workers|" -e "s|@PID@|$prefix/nginx.pid|" -e "s|@LISTEN@|127.0.0.1:$port|" \
      "$bench_dir/nginx-origin.conf.template" >"$prefix/nginx.conf"
  else
    sed -e "s|@WORKERS@|$workers|" -e "s|@PID@|$prefix/nginx.pid|" \
        -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@UPSTREAM@|127.0.0.1:$up_port|" \
        "$bench_dir/nginx.conf.template" >"$prefix/nginx.conf"
  fi
  "$NGINX" -c "$prefix/nginx.conf" -p "$prefix" -e stderr -g 'daemon off;' 2>"$prefix/error.log" &
  pid_of[$name]=$!
  pids+=("${pid_of[$name]}")
  url[$name]="http://127.0.0.1:$port"
  wait_http "${url[$name]}/health"
}

declare -A url pid_of admin_of describe
case "$UPSTREAM" in
  nginx)
    start_nginx upstream 1 origin "$up_port"
    up_describe="nginx \`return 200\`, 1 worker"
    ;;
  trivial)
    "$target_dir/release/examples/trivial_server" "$up_port" "$lifetime" >"$tmp/upstream.out" 2>&1 &
    pid_of[upstream]=$!
    pids+=("${pid_of[upstream]}")
    up_describe="loadgen/examples/trivial_server (hyper)"
    wait_http "http://127.0.0.1:$up_port/health"
    ;;
  *) echo "UPSTREAM must be nginx or trivial" >&2; exit 64 ;;
esac
up_pid=${pid_of[upstream]}

# ---- redis ------------------------------------------------------------------------------
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$tmp" --logfile "$tmp/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" ping >/dev/null
rcli() { redis-cli -p "$redis_port" "$@"; }

# ---- proxies ----------------------------------------------------------------------------
url[direct]="http://127.0.0.1:$up_port"
pid_of[direct]=$up_pid
describe[direct]="direct to the upstream"

start_sidecar() { # name key [redis [binary]]
  local name=$1 key=$2 redis=${3:-} bin=${4:-$sidecar_bin} port admin args
  port=$(free_port); admin=$(free_port)
  args=(--listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
        --upstream "http://127.0.0.1:$up_port" --limit "$LIMIT" --key "$key"
        --node-id "bench-$name")
  [ -n "$redis" ] && args+=(--redis-url "redis://127.0.0.1:$redis_port")
  # shellcheck disable=SC2086 # SIDECAR_ARGS is a list of flags on purpose
  RUST_LOG=warn "$bin" "${args[@]}" $SIDECAR_ARGS >"$tmp/sidecar-$name.log" 2>&1 &
  pid_of[$name]=$!
  pids+=("${pid_of[$name]}")
  admin_of[$name]=$admin
  url[$name]="http://127.0.0.1:$port"
  wait_http "http://127.0.0.1:$admin/ready"
}

for c in $CONFIGS; do
  case "$c" in
    direct) ;;
    nginx-auto) start_nginx nginx-auto auto proxy "$(free_port)"
                describe[$c]="nginx \`proxy_pass\`, \`worker_processes auto\` ($(nproc)), keepalive 64" ;;
    nginx-1)    start_nginx nginx-1 1 proxy "$(free_port)"
                describe[$c]="nginx \`proxy_pass\`, 1 worker, keepalive 64" ;;
    mem)        start_sidecar mem global
                describe[$c]="tollgate-sidecar, memory store, global key" ;;
    mem-alt)    [ -n "${ALT_BIN:-}" ] || { echo "mem-alt needs ALT_BIN" >&2; exit 64; }
                start_sidecar mem-alt global "" "$ALT_BIN"
                describe[$c]="tollgate-sidecar, memory store, global key, $ALT_BIN" ;;
    bare)       port=$(free_port)
                "${BARE_BIN:-$target_dir/release/examples/bare_proxy}" "$port" "127.0.0.1:$up_port" "$lifetime" >"$tmp/bare.out" 2>&1 &
                pid_of[$c]=$!; pids+=("${pid_of[$c]}"); url[$c]="http://127.0.0.1:$port"
                wait_http "${url[$c]}/health"
                describe[$c]="bare hyper proxy (sidecar/examples/bare_proxy.rs), no limiter" ;;
    mem-rand)   start_sidecar mem-rand header:x-api-key
                describe[$c]="tollgate-sidecar, memory store, $KEYS random header keys" ;;
    redis)      start_sidecar redis global "$redis_port"
                describe[$c]="tollgate-sidecar, Redis store, global key" ;;
    redis-rand) start_sidecar redis-rand header:x-api-key "$redis_port"
                describe[$c]="tollgate-sidecar, Redis store, $KEYS random header keys" ;;
    redis-rand-alt)
                [ -n "${ALT_BIN:-}" ] || { echo "redis-rand-alt needs ALT_BIN" >&2; exit 64; }
                start_sidecar redis-rand-alt header:x-api-key "$redis_port" "$ALT_BIN"
                describe[$c]="tollgate-sidecar, Redis store, $KEYS random header keys, $ALT_BIN" ;;
    *) echo "unknown configuration $c" >&2; exit 64 ;;
  esac
done

# CPU clock ticks "user sys" of a process and its child processes (nginx workers), from
# /proc/PID/stat utime and stime (fields 14 and 15).
cpu_ticks() {
  local pid=$1 user=0 sys=0 p u s
  for p in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    if [ -r "/proc/$p/stat" ]; then
      read -r u s < <(awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$p/stat")
      user=$(( user + u )); sys=$(( sys + s ))
    fi
  done
  echo "$user $sys"
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

# From INFO commandstats: "script_usec script_calls all_calls". A script call's usec already
# includes the commands the script ran (which commandstats also counts on their own lines), so
# the CPU per decision is the script calls' usec only; with no script calls (a store deciding
# with plain commands) it is every command's usec.
redis_usec_calls() {
  rcli info commandstats | tr -d '\r' | awk -F'[=,:]' '/^cmdstat_/ {
      name = $1; sub(/^cmdstat_/, "", name)
      script = (name ~ /^(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/)
      for (i = 2; i <= NF; i++) {
        if ($i == "calls") { c += $(i + 1); if (script) sc += $(i + 1) }
        if ($i == "usec") { u += $(i + 1); if (script) su += $(i + 1) }
      } }
    END { if (sc) printf "%d %d %d", su, sc, c; else printf "%d %d %d", u, c, c }'
}

wrk_base=(wrk -t"$THREADS" -c"$CONNECTIONS" -s "$tmp/random-key.lua")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
machine="$(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), Linux $(uname -r)"
echo "== machine: $machine; load average before: $load_before"
echo "== client: ${wrk_base[*]} -d${DURATION}s --latency URL/bench (after ${WARMUP}s of warm-up)"
echo "== upstream: $up_describe"
echo "== rows:"
for c in $CONFIGS; do printf '   %-10s %s  %s\n' "$c" "${url[$c]}" "${describe[$c]}"; done

results="$tmp/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    # Warm-up: fills every pool (wrk's, the proxy's upstream keep-alive connections).
    timeout $(( WARMUP + 10 )) "${wrk_base[@]}" -d"${WARMUP}s" "${url[$c]}/bench" >/dev/null
    load=$(cut -d' ' -f1 /proc/loadavg)
    rcli config resetstat >/dev/null
    read -r proxy_u0 proxy_s0 <<<"$(cpu_ticks "${pid_of[$c]}")"
    read -r up_u0 up_s0 <<<"$(cpu_ticks "$up_pid")"
    read -r redis_u0 redis_s0 <<<"$(cpu_ticks "$redis_pid")"
    # wrk's own CPU: `times` in the command substitution's subshell reports its waited-for
    # children (timeout, and wrk, which timeout waited for), user and sys, in ms.
    out=$(timeout $(( DURATION + 10 )) "${wrk_base[@]}" -d"${DURATION}s" --latency "${url[$c]}/bench"
          times >"$tmp/wrk-times")
    read -r proxy_u1 proxy_s1 <<<"$(cpu_ticks "${pid_of[$c]}")"
    read -r up_u1 up_s1 <<<"$(cpu_ticks "$up_pid")"
    read -r redis_u1 redis_s1 <<<"$(cpu_ticks "$redis_pid")"
    # "0m1.234s 0m3.456s" (children's user, sys) -> seconds
    read -r wrk_u wrk_s < <(awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, t, /[ms]/); v[i] = t[1] * 60 + t[2] }
                                           print v[1], v[2] }' "$tmp/wrk-times")
    read -r rusec rcalls rall <<<"$(redis_usec_calls)"
    rps=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<<"$out")
    total=$(awk '/requests in/ { print $1 }' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    errors=$(awk '/Socket errors:/ { sub(/^.*Socket errors: /, ""); gsub(/ /, ""); print }' <<<"$out")
    per_req() { awk -v a="$1" -v b="$2" -v n="$total" -v hz="$hz" 'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / n }'; }
    per_req_s() { awk -v s="$1" -v n="$total" 'BEGIN { printf "%.1f", s * 1e6 / n }'; }
    cpu_proxy_usr=$(per_req "$proxy_u1" "$proxy_u0"); cpu_proxy_sys=$(per_req "$proxy_s1" "$proxy_s0")
    [ "$c" = direct ] && { cpu_proxy_usr=0.0; cpu_proxy_sys=0.0; }
    cpu_proxy=$(awk -v u="$cpu_proxy_usr" -v s="$cpu_proxy_sys" 'BEGIN { printf "%.1f", u + s }')
    cpu_up_usr=$(per_req "$up_u1" "$up_u0"); cpu_up_sys=$(per_req "$up_s1" "$up_s0")
    cpu_up=$(awk -v u="$cpu_up_usr" -v s="$cpu_up_sys" 'BEGIN { printf "%.1f", u + s }')
    cpu_wrk_usr=$(per_req_s "$wrk_u"); cpu_wrk_sys=$(per_req_s "$wrk_s")
    cpu_redis=$(per_req "$((redis_u1 + redis_s1))" "$((redis_u0 + redis_s0))")
    redis_us=$(awk -v u="$rusec" -v n="$total" 'BEGIN { printf "%.2f", u / n }')
    redis_calls=$(awk -v c="$rcalls" -v n="$total" 'BEGIN { printf "%.2f", c / n }')
    redis_all=$(awk -v c="$rall" -v n="$total" 'BEGIN { printf "%.2f", c / n }')
    line="round=$round config=$c rps=$rps p50_ms=$p50 p99_ms=$p99 requests=$total non2xx=${non2xx:-0} cpu_us_proxy=$cpu_proxy cpu_us_proxy_usr=$cpu_proxy_usr cpu_us_proxy_sys=$cpu_proxy_sys cpu_us_upstream=$cpu_up cpu_us_upstream_usr=$cpu_up_usr cpu_us_upstream_sys=$cpu_up_sys cpu_us_wrk_usr=$cpu_wrk_usr cpu_us_wrk_sys=$cpu_wrk_sys cpu_us_redis_proc=$cpu_redis redis_cmd_us=$redis_us redis_calls=$redis_calls redis_all=$redis_all load1=$load"
    [ -n "$errors" ] && line="$line socket_errors=$errors"
    echo "$line" | tee -a "$results"
  done
done
[ -n "${OUT:-}" ] && cp "$results" "$OUT"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== sidecar decisions (ratelimiter_requests_checked_total), to show every request was decided"
decisions=""
for c in $CONFIGS; do
  [ -n "${admin_of[$c]:-}" ] || continue
  m=$(curl -fs --max-time 2 "http://127.0.0.1:${admin_of[$c]}/metrics" || true)
  sum_of() { awk -v pat="$1" '$0 !~ /^#/ && $0 ~ pat { s += $NF } END { printf "%d", s }' <<<"$m"; }
  d=$(printf '%s: allowed %s, limited %s, error (failed open) %s' "$c" \
    "$(sum_of 'ratelimiter_requests_checked_total.*decision="allowed"')" \
    "$(sum_of 'ratelimiter_requests_checked_total.*decision="limited"')" \
    "$(sum_of 'ratelimiter_requests_checked_total.*decision="error"')")
  echo "   $d"
  decisions="${decisions:+$decisions; }$d"
done
echo "== load average after: $load_after"

# ---- summary: medians over rounds, ratios ------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { awk -v c="$1" -v k="$2" '{ ok = 0; for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "config" && kv[2] == c) ok = 1; if (ok && kv[1] == k) print kv[2] } }' "$results"; }
# Per-round ratio num/den (same round = same machine conditions), one line per round.
per_round_ratio() {
  local r
  for r in $(seq "$ROUNDS"); do
    awk -v r="$r" -v n="$1" -v d="$2" '
      { split($1, a, "="); split($2, b, "="); split($3, c, "=")
        if (a[2] == r && b[2] == n) x = c[2]; if (a[2] == r && b[2] == d) y = c[2] }
      END { if (x && y) printf "%.2f\n", x / y }' "$results"
  done
}
has() { [[ " $CONFIGS " == *" $1 "* ]]; }
# 12345 -> 12,345 (the issue's table style), whatever the locale.
fmt_int() { awk -v n="$1" 'BEGIN { s = sprintf("%d", n); r = ""
  while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
  print s r }'; }

table="$tmp/table.md"
{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`sidecar/bench/proxy-vs-nginx.sh\` (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')):"
  echo "$machine; load average $load_before before, $load_after after (1/5/15 min)."
  echo "Client \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s random-key.lua\` ($KEYS keys), upstream $up_describe;"
  echo "median of $ROUNDS interleaved rounds. $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $("$NGINX" -v 2>&1 | cut -d' ' -f3), $(redis-server --version | cut -d' ' -f1-3)."
  echo
  echo "| path | req/s | vs nginx auto | p50 | p99 | proxy CPU / req | Redis CPU / decision |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for c in $CONFIGS; do
    rps=$(field "$c" rps | median)
    p50=$(field "$c" p50_ms | median); p99=$(field "$c" p99_ms | median)
    cpu=$(field "$c" cpu_us_proxy | median)
    ratio="—"
    if has nginx-auto && [ "$c" != direct ]; then
      ratio=$(per_round_ratio "$c" nginx-auto | median)
      [ "$c" = nginx-auto ] && ratio="1.00"
      case "$c" in mem*|redis*|bare) ratio="**$ratio**" ;; esac
    fi
    [ "$c" = direct ] && cpu="—" || cpu="$cpu µs"
    rcpu="—"
    case "$c" in redis*) rcpu="$(field "$c" redis_cmd_us | median) µs" ;; esac
    printf '| %s | %s | %s | %.2f ms | %.2f ms | %s | %s |\n' "${describe[$c]}" "$(fmt_int "${rps%.*}")" "$ratio" "$p50" "$p99" "$cpu" "$rcpu"
  done
  echo
  echo "Ratios are medians of the per-round ratios (same round, same machine conditions)."
  for pair in "mem nginx-auto" "redis-rand mem" "redis mem" "redis-rand-alt mem" "redis-rand redis-rand-alt"; do
    set -- $pair
    has "$1" && has "$2" || continue
    printf -- '- %s / %s per round: %s\n' "$1" "$2" "$(per_round_ratio "$1" "$2" | paste -sd' ' | sed 's/ /, /g')"
  done
  for c in redis redis-rand redis-rand-alt; do
    has "$c" || continue
    printf -- '- %s: %s script calls and %s commands in all (with those the scripts ran) per request; redis-server used %s µs of CPU per request (/proc, incl. networking).\n' \
      "$c" "$(field "$c" redis_calls | median)" "$(field "$c" redis_all | median)" "$(field "$c" cpu_us_redis_proc | median)"
  done
  [ -n "$decisions" ] && echo "- Decisions counted by the sidecars: $decisions."
  errs=$(awk '/socket_errors=|non2xx=[1-9]/' "$results" | wc -l)
  echo "- Runs with socket errors or non-2xx answers: $errs."
  echo
  echo "CPU per request in µs, user + system, medians of the rounds (\`/proc/PID/stat\` utime and stime of each"
  echo "process and its workers; wrk's from its rusage); \"all\" adds redis-server; \"cores busy\" = all × req/s."
  echo
  echo "| path | proxy user | proxy sys | upstream user | upstream sys | wrk user | wrk sys | all | cores busy |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONFIGS; do
    col() { field "$c" "$1" | median; }
    read -r pu ps uu us wu ws rp rps < <(echo "$(col cpu_us_proxy_usr) $(col cpu_us_proxy_sys) $(col cpu_us_upstream_usr) $(col cpu_us_upstream_sys) $(col cpu_us_wrk_usr) $(col cpu_us_wrk_sys) $(col cpu_us_redis_proc) $(col rps)")
    awk -v name="$c" -v pu="$pu" -v ps="$ps" -v uu="$uu" -v us="$us" -v wu="$wu" -v ws="$ws" -v rp="$rp" -v rps="$rps" 'BEGIN {
      all = pu + ps + uu + us + wu + ws + rp
      printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", name, pu, ps, uu, us, wu, ws, all, all * rps / 1e6 }'
  done
  # The floor: with every process on the same cores, a row's rate is about cores / (all its CPU
  # per request), so proxy P reaches 1.2x nginx N (same others O: wrk + upstream) only when
  # P <= (N + O) / 1.2 - O. Compared with the kernel time per request the proxies spend.
  if has nginx-auto && has mem; then
    m() { field "$1" "$2" | median; }
    awk -v n="$(m nginx-auto cpu_us_proxy)" -v ns="$(m nginx-auto cpu_us_proxy_sys)" \
        -v o="$(awk -v a="$(m nginx-auto cpu_us_upstream)" -v b="$(m nginx-auto cpu_us_wrk_usr)" -v c="$(m nginx-auto cpu_us_wrk_sys)" 'BEGIN { print a + b + c }')" \
        -v p="$(m mem cpu_us_proxy)" -v pu="$(m mem cpu_us_proxy_usr)" -v ps="$(m mem cpu_us_proxy_sys)" \
        -v bare="$(has bare && m bare cpu_us_proxy_sys)" 'BEGIN {
      budget = (n + o) / 1.2 - o
      printf "- Floor for aim 1: nginx auto costs %.1f µs per request, wrk and the upstream %.1f µs with it; 1.2× nginx auto needs a proxy at ≤ (%.1f + %.1f) / 1.2 − %.1f = **%.1f µs** per request in all.\n", n, o, n, o, o, budget
      printf "- Kernel (system) time per request of the proxies in the same run: nginx auto %.1f µs, sidecar %.1f µs", ns, ps
      if (bare != "") printf ", bare hyper %.1f µs", bare
      printf ". The sidecar spends %.1f µs (%.1f user + %.1f system).\n", p, pu, ps
      if (budget <= ns) printf "- The budget (%.1f µs) is below even nginx'"'"'s kernel time per request (%.1f µs): out of reach for any user-space proxy making the same system calls on this box with this client.\n", budget, ns
      else printf "- Above nginx'"'"'s kernel time (%.1f µs), the budget leaves %.1f µs per request of user time; the sidecar uses %.1f µs of user time and %.1f µs of system time.\n", ns, budget - ns, pu, ps
    }'
  fi
} >"$table"

echo
cat "$table"
echo
if has mem && has nginx-auto; then
  m=$(per_round_ratio mem nginx-auto | median)
  echo "Aim 1 (issue 16): mem / nginx-auto >= 1.2: $(awk -v m="$m" 'BEGIN { print (m >= 1.2) ? "met" : "not met" }') ($m)"
fi
if has mem && has redis-rand; then
  m=$(per_round_ratio redis-rand mem | median)
  echo "Aim 2 (issue 16): redis-rand / mem >= 0.9: $(awk -v m="$m" 'BEGIN { print (m >= 0.9) ? "met" : "not met" }') ($m)"
fi

if [ "$DOCS" = 1 ]; then
  docs="$root/docs/benchmarks.md"
  if grep -q '<!-- proxy-vs-nginx:begin -->' "$docs" && grep -q '<!-- proxy-vs-nginx:end -->' "$docs"; then
    python3 - "$docs" "$table" <<'EOF'
import sys
docs, table = sys.argv[1], sys.argv[2]
text = open(docs, encoding="utf-8").read()
begin, end = "<!-- proxy-vs-nginx:begin -->", "<!-- proxy-vs-nginx:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
new = open(table, encoding="utf-8").read().rstrip("\n")
open(docs, "w", encoding="utf-8").write(f"{head}{begin}\n{new}\n{end}{tail}")
EOF
    echo "== written to docs/benchmarks.md (between the proxy-vs-nginx markers)"
  else
    echo "== docs/benchmarks.md has no proxy-vs-nginx markers: table not written" >&2
  fi
fi
