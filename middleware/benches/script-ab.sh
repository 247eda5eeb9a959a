#!/usr/bin/env bash
# Redis CPU of two versions of decide.lua, side by side in one run (issue 16, aim 2).
#
#   git show a9bdb51:middleware/src/store/redis/decide.lua > /tmp/before.lua
#   middleware/benches/script-ab.sh /tmp/before.lua middleware/src/store/redis/decide.lua
#   ROUNDS=5 N=80000 middleware/benches/script-ab.sh A.lua B.lua
#
# Both scripts are loaded into one private redis-server (127.0.0.1, a free port, no
# persistence; killed on exit) and driven by redis-benchmark with EVALSHA and the arguments
# RedisStore sends (one GCRA limit of 10^9 per day, which never denies), `-c 1 -P 16`:
#   hot1    one request on one hot key per call
#   rand1   one request on a random key of 100,000 per call
#   hot8    a batch of 8 requests on one hot key per call
#   rand8   a batch of 8 requests on 8 random keys per call
# Per case, rounds interleaved (A then B each round): commandstats' usec per call and per
# decision (CONFIG RESETSTAT before each run), and the server's CPU time per decision from
# /proc/PID/stat (includes networking and key expiry, which commandstats does not).
# Every redis-benchmark run is bounded by -n and by `timeout`.
set -euo pipefail

A=${1:?usage: script-ab.sh A.lua B.lua}
B=${2:?usage: script-ab.sh A.lua B.lua}
ROUNDS=${ROUNDS:-3}
N=${N:-40000}
for tool in redis-server redis-cli redis-benchmark python3 timeout awk; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/test.sh installs redis)" >&2; exit 1; }
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --logfile "$WORK/redis.log" --daemonize no &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
cli() { timeout 10 redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
for _ in $(seq 1 50); do cli PING >/dev/null 2>&1 && break; sleep 0.1; done

# -x sends the file byte for byte (the SHA RedisStore computes from the same file).
SHA_A=$(cli -x SCRIPT LOAD <"$A")
SHA_B=$(cli -x SCRIPT LOAD <"$B")
# now = "" (Redis TIME), grace 1000 ms, 1 limit: GCRA, 10^9 per 86,400,000 ms, burst 10^9,
# interval 86 us.
LIMIT=("" 1000 1 0 1000000000 86400000 1000000000 86)
echo "== redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$PORT; A=$A B=$B"
echo "== same answers for a batch of two: A: $(cli EVALSHA "$SHA_A" 2 x y "${LIMIT[@]}" 2 1 1 0 1 1 1 0 1 | tr '\n' ' ')"
echo "                                    B: $(cli EVALSHA "$SHA_B" 2 x2 y2 "${LIMIT[@]}" 2 1 1 0 1 1 1 0 1 | tr '\n' ' ')"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$REDIS_PID/stat"; }
run() {
  local name=$1 sha=$2 kind=$3 keys=() reqs=() per=1 n=$N rand=()
  case $kind in
    hot1) keys=(k:hot); reqs=(1 1 1 0 1) ;;
    rand1) keys=(k:__rand_int__); reqs=(1 1 1 0 1); rand=(-r 100000) ;;
    hot8 | rand8)
      per=8; n=$((N / 4)); reqs=(8)
      for _ in 1 2 3 4 5 6 7 8; do
        if [[ $kind == hot8 ]]; then keys+=(k:hot); else keys+=(k:__rand_int__); fi
        reqs+=(1 1 0 1)
      done
      [[ $kind == rand8 ]] && rand=(-r 100000) ;;
  esac
  cli CONFIG RESETSTAT >/dev/null
  local t0; t0=$(cpu_ticks)
  timeout 300 redis-benchmark -h 127.0.0.1 -p "$PORT" "${rand[@]}" -c 1 -P 16 -n "$n" -q \
    EVALSHA "$sha" "${#keys[@]}" "${keys[@]}" "${LIMIT[@]}" "${reqs[@]}" >/dev/null
  local t1; t1=$(cpu_ticks)
  local line; line=$(cli INFO commandstats | tr -d '\r' | grep '^cmdstat_evalsha:')
  local calls=${line#*calls=}; calls=${calls%%,*}
  local us=${line#*usec_per_call=}; us=${us%%,*}
  awk -v name="$name" -v kind="$kind" -v us="$us" -v per="$per" -v calls="$calls" \
    -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
      printf "%-6s %-2s usec/call %7.2f  usec/decision %6.2f  process CPU us/decision %6.2f\n",
        kind, name, us, us / per, ticks * 1e6 / hz / (calls * per) }'
}
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  for kind in hot1 rand1 hot8 rand8; do
    run A "$SHA_A" "$kind"
    run B "$SHA_B" "$kind"
  done
done
