#!/usr/bin/env bash
# End-to-end test of the compose demo (compose/docker-compose.yml): brings the whole stack up
# from local images only and checks that three sidecars enforce one shared limit.
#
#   ./scripts/e2e.sh
#
# Steps: stand-in images for registry images that are missing (scripts/offline-images.sh),
# release binaries (cargo), our image from the Dockerfile's `prebuilt` stage as tollgate:local,
# then `down -v` + `up -d` under the project name tollgate-e2e, and these assertions:
#
#   - compose/docker-compose.yml is valid for the installed compose (`config -q`), and from
#     compose/ (as users run it) the project is named tollgate (compose/.env);
#   - every service with a healthcheck turns healthy (redis, upstream, sidecars, prometheus);
#   - Prometheus reports the three sidecar targets `up` (HTTP API), and its Tollgate console renders;
#   - one key, requests round-robin over the three sidecars: exactly the limit is admitted in
#     total, the rest get 429 with Retry-After and RateLimit headers;
#   - the demo upstream's own tollgate Layer limits /demo/limited (3 per 10 s per client);
#   - Prometheus sees allowed and limited decisions labelled with each of the three nodes;
#   - the loadgen prints stats lines and BURST MODE / STEADY MODE switches, blocks requests,
#     fails none (fail-closed: at most 1%), and exits 0 with its summary at the end of its DURATION;
#   - Redis killed: the sidecars follow their failure mode (open: requests pass; closed: 503),
#     and count the decisions as errors; Redis started again: limiting recovers;
#   - one sidecar cut off from Redis (docker network disconnect): it follows its failure mode
#     while the other two keep the shared limit, and it recovers by itself when reconnected;
#   - one sidecar of three killed under load: the other two keep the global limit exactly;
#   - `down -v` leaves no container, network or volume behind (it also runs from an EXIT trap).
#
# Prints `e2e: N passed, M failed` last and exits 1 on any failure. When `docker info` fails it
# prints `e2e: SKIPPED — docker info failed: <reason>` and exits 0, having asserted nothing.
#
# Host ports (127.0.0.1) default to 18001-18003 (proxies), 19001-19003 (admin) and 19090
# (Prometheus), away from the demo's own defaults; override with the variables of
# compose/.env.example. compose/.env is ignored: the run uses compose/.env.example plus the
# settings below, so a developer's local tweaks cannot change what CI checks.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

skip() {
  echo "e2e: SKIPPED — $*"
  exit 0
}

if ! command -v docker >/dev/null 2>&1; then
  skip "docker info failed: docker is not installed"
fi
if ! docker_out=$(docker info 2>&1); then
  skip "docker info failed: $(printf '%s\n' "$docker_out" | grep -v '^[[:space:]]*$' | tail -n 1)"
fi
if command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  skip "neither docker-compose nor the docker compose plugin is installed"
fi
for tool in curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed"
done

PROJECT=tollgate-e2e
COMPOSE_FILE="$ROOT/compose/docker-compose.yml"
ENV_FILE="$ROOT/compose/.env.example"
IMAGE=tollgate:local
RUN_ID="$(date +%s)-$$" # makes every key of this run fresh, even with Redis data left over

# The stack's settings for this run (these override compose/.env.example).
export SIDECAR_1_PORT=${SIDECAR_1_PORT:-18001} SIDECAR_2_PORT=${SIDECAR_2_PORT:-18002}
export SIDECAR_3_PORT=${SIDECAR_3_PORT:-18003}
export SIDECAR_1_ADMIN_PORT=${SIDECAR_1_ADMIN_PORT:-19001}
export SIDECAR_2_ADMIN_PORT=${SIDECAR_2_ADMIN_PORT:-19002}
export SIDECAR_3_ADMIN_PORT=${SIDECAR_3_ADMIN_PORT:-19003}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
export TOLLGATE_IMAGE=$IMAGE
export SIDECAR_LIMIT=20/1m SIDECAR_KEY=header:x-api-key
export SIDECAR_FAILURE_MODE=${SIDECAR_FAILURE_MODE:-open}
export LOADGEN_MODE=proxy LOADGEN_RPS=10 LOADGEN_DURATION=30 LOADGEN_STATS_INTERVAL=3
export LOADGEN_BURST_ENABLED=true LOADGEN_BURST_MULTIPLIER=5 LOADGEN_BURST_INTERVAL=8
export LOADGEN_BURST_DURATION=3 LOADGEN_KEYS=fixed:10 LOADGEN_LIMIT=20 LOADGEN_WINDOW_MS=60000
LIMIT=20                       # requests per key and window that SIDECAR_LIMIT admits
SENT=$((LIMIT + 10))           # requests per key in the shared-limit checks
PROXY_PORTS=("$SIDECAR_1_PORT" "$SIDECAR_2_PORT" "$SIDECAR_3_PORT")
HEALTHY_SERVICES=(redis upstream sidecar-1 sidecar-2 sidecar-3 prometheus)
PROM="http://127.0.0.1:$PROMETHEUS_PORT"

PASSED=0
FAILED=0
FINISHED=0
STARTED=$SECONDS

log() { echo "e2e: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "e2e: ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "e2e: FAIL - $*"; }
check() { # check CONDITION-EXIT-STATUS MESSAGE
  if [ "$1" -eq 0 ]; then pass "$2"; else fail "$2"; fi
}

dc() { "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" -f "$COMPOSE_FILE" "$@"; }

# Compose resources of the project still present (containers, networks, named volumes), plus
# anonymous volumes that appeared during the run.
leftovers() {
  local filter="label=com.docker.compose.project=$PROJECT"
  {
    docker ps -aq --filter "$filter" | sed 's/^/container /'
    docker network ls -q --filter "$filter" | sed 's/^/network /'
    docker volume ls -q --filter "$filter" | sed 's/^/volume /'
    comm -13 <(printf '%s\n' "${DANGLING_BEFORE:-}" | sort) \
      <(docker volume ls -q --filter dangling=true | sort) | sed 's/^/anonymous volume /'
  } | awk 'NF > 1 && $NF != "volume"'
}

diagnostics() {
  log "---- diagnostics: docker-compose ps"
  dc ps 2>&1 | sed 's/^/  /'
  log "---- diagnostics: last log lines per service"
  dc logs --no-color --tail 25 2>&1 | sed 's/^/  /'
  log "---- end of diagnostics"
}

# Tears the stack down, checks nothing is left, prints the result line and exits.
finish() {
  FINISHED=1
  [ "$FAILED" -gt 0 ] && diagnostics
  log "tearing down: docker-compose down -v"
  dc down -v --remove-orphans >/dev/null 2>&1
  local left
  left=$(leftovers)
  if [ -z "$left" ]; then
    pass "down -v left no container, network or volume behind"
  else
    fail "down -v left resources behind: $(echo "$left" | tr '\n' ' ')"
  fi
  log "took $((SECONDS - STARTED)) s"
  echo "e2e: $PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && exit 0
  exit 1
}
abort() {
  fail "$*"
  finish
}
# Whatever happens (a failed step, Ctrl-C, a CI timeout's SIGTERM), the stack goes away.
# shellcheck disable=SC2317 # called from the trap
on_exit() {
  [ "$FINISHED" -eq 1 ] && return
  dc down -v --remove-orphans >/dev/null 2>&1
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM

# HTTP status of one proxied request for KEY through the sidecar on PORT ("000": no answer).
status_via() { # PORT KEY [PATH]
  curl -s -o /dev/null -m 5 -w '%{http_code}' -H "x-api-key: $2" \
    "http://127.0.0.1:$1${3:-/e2e/hello}" 2>/dev/null || true
}

# Sends SENT requests for KEY round-robin over the three sidecars. Sets TALLY[code] counts,
# PER_NODE (admitted per node) and SPAN_MS.
declare -A TALLY
spread() { # KEY
  local key=$1 i code t0
  local -a admitted=(0 0 0)
  TALLY=()
  t0=$(date +%s%N)
  for ((i = 0; i < SENT; i++)); do
    code=$(status_via "${PROXY_PORTS[i % 3]}" "$key")
    TALLY[$code]=$((${TALLY[$code]:-0} + 1))
    [ "$code" = 200 ] && admitted[i % 3]=$((admitted[i % 3] + 1))
  done
  SPAN_MS=$((($(date +%s%N) - t0) / 1000000))
  PER_NODE="sidecar-1 ${admitted[0]}, sidecar-2 ${admitted[1]}, sidecar-3 ${admitted[2]}"
}
# Sends SENT requests for KEY round-robin over the given proxy ports only; sets TALLY.
spread_over() { # KEY PORT...
  local key=$1 i code
  shift
  local -a ports=("$@")
  TALLY=()
  for ((i = 0; i < SENT; i++)); do
    code=$(status_via "${ports[i % ${#ports[@]}]}" "$key")
    TALLY[$code]=$((${TALLY[$code]:-0} + 1))
  done
}
tally_text() {
  local code out=""
  for code in $(printf '%s\n' "${!TALLY[@]}" | sort); do out+="$code×${TALLY[$code]} "; done
  echo "${out% }"
}

health_of() { # SERVICE
  local id
  id=$(dc ps -q "$1" 2>/dev/null)
  [ -n "$id" ] || { echo missing; return; }
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
    "$id" 2>/dev/null || echo missing
}
# Waits up to SECONDS for every listed service to be healthy; sets NOT_HEALTHY.
wait_healthy() { # SECONDS SERVICE...
  local deadline=$((SECONDS + $1)) s
  shift
  while :; do
    NOT_HEALTHY=""
    for s in "$@"; do
      [ "$(health_of "$s")" = healthy ] || NOT_HEALTHY+="$s($(health_of "$s")) "
    done
    [ -z "$NOT_HEALTHY" ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 2
  done
}

# Runs a PromQL instant query and prints the sorted `node` labels of the result.
prom_nodes() { # QUERY
  curl -s -m 5 -G "$PROM/api/v1/query" --data-urlencode "query=$1" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
    print(" ".join(sorted(r["metric"].get("node", "?") for r in d["data"]["result"])))
except Exception:
    print("")
'
}
# Polls a PromQL query for up to SECONDS until all three nodes are in its result.
wait_prom_nodes() { # SECONDS QUERY
  local deadline=$((SECONDS + $1))
  while :; do
    PROM_SEEN=$(prom_nodes "$2")
    [ "$PROM_SEEN" = "sidecar-1 sidecar-2 sidecar-3" ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 2
  done
}

# ---- images ------------------------------------------------------------------------------
log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"

# ---- the demo as users start it (cd compose; no -p, no --env-file) ------------------------
# The compose file must be valid for this compose version (1.29 rejects keys v2 accepts, such
# as a top-level `name:`), and compose/.env must name the project `tollgate`, so that `ps` and
# `down -v` from compose/ find the stack.
demo_project() {
  (
    cd "$ROOT/compose" && unset COMPOSE_PROJECT_NAME || exit 1
    if [ "${COMPOSE[*]}" = docker-compose ]; then
      docker-compose --verbose ps 2>&1 | grep -o 'com\.docker\.compose\.project=[A-Za-z0-9_.-]*' |
        head -n 1 | cut -d= -f2
    else
      docker compose config 2>/dev/null | sed -n 's/^name: *//p' | head -n 1
    fi
  )
}
config_err=$(cd "$ROOT/compose" && "${COMPOSE[@]}" config -q 2>&1)
check $? "compose/docker-compose.yml is valid for ${COMPOSE[*]} (config -q)${config_err:+: $config_err}"
project=$(demo_project)
[ "$project" = tollgate ]
check $? "the demo's project name from compose/ is tollgate (got: ${project:-none})"
DANGLING_BEFORE=$(docker volume ls -q --filter dangling=true)

t=$SECONDS
./scripts/offline-images.sh || abort "stand-in images could not be built (scripts/offline-images.sh)"
log "base images ready ($((SECONDS - t)) s)"

t=$SECONDS
log "cargo build --release -p tollgate-sidecar -p tollgate-loadgen"
cargo build --release -q -p tollgate-sidecar -p tollgate-loadgen ||
  abort "cargo build --release failed"
# The image's build context holds only ./target/release (see .dockerignore): when cargo builds
# elsewhere (CARGO_TARGET_DIR), copy the three binaries there.
built_dir="${CARGO_TARGET_DIR:-target}/release"
for bin in tollgate-sidecar tollgate-demo-upstream tollgate-loadgen; do
  [ -x "$built_dir/$bin" ] || abort "$built_dir/$bin was not built"
  if [ "$(realpath "$built_dir/$bin")" != "$(realpath -m "target/release/$bin")" ]; then
    mkdir -p target/release && cp -f "$built_dir/$bin" "target/release/$bin" ||
      abort "could not copy $built_dir/$bin into target/release for the image"
  fi
done
log "release binaries ready ($((SECONDS - t)) s)"

t=$SECONDS
docker build -q --target prebuilt -t "$IMAGE" . >/dev/null 2>/tmp/tollgate-e2e-build.$$ || {
  cat /tmp/tollgate-e2e-build.$$ >&2
  rm -f /tmp/tollgate-e2e-build.$$
  abort "docker build --target prebuilt failed"
}
rm -f /tmp/tollgate-e2e-build.$$
log "image $IMAGE built from prebuilt binaries ($((SECONDS - t)) s)"

# ---- stack up ----------------------------------------------------------------------------
t=$SECONDS
dc down -v --remove-orphans >/dev/null 2>&1 # docker-compose 1.29 cannot recreate containers
log "docker-compose up -d (project $PROJECT)"
# `up -d` itself waits for the sidecars' health (the loadgen depends on it); bound it anyway.
timeout 240 "${COMPOSE[@]}" -p "$PROJECT" --env-file "$ENV_FILE" -f "$COMPOSE_FILE" \
  up -d --no-build 2>&1 | sed 's/^/  /'
up_rc=${PIPESTATUS[0]}
[ "$up_rc" -eq 0 ] || log "docker-compose up exited with $up_rc; checking health anyway"
if wait_healthy 180 "${HEALTHY_SERVICES[@]}"; then
  pass "all services healthy: ${HEALTHY_SERVICES[*]} ($((SECONDS - t)) s after up)"
else
  abort "services not healthy after 180 s: $NOT_HEALTHY"
fi
LOADGEN_ID=$(dc ps -q loadgen)
[ -n "$LOADGEN_ID" ] || abort "the loadgen container was not created"

# ---- Prometheus --------------------------------------------------------------------------
deadline=$((SECONDS + 60))
while :; do
  targets=$(curl -s -m 5 "$PROM/api/v1/targets" 2>/dev/null | python3 -c '
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print("no answer"); sys.exit()
t = [x for x in d["data"]["activeTargets"] if x["labels"].get("job") == "tollgate-sidecar"]
print(" ".join(sorted(x["labels"]["instance"] + "=" + x["health"] for x in t)))
')
  [ "$targets" = "sidecar-1:9000=up sidecar-2:9000=up sidecar-3:9000=up" ] && break
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 2
done
[ "$targets" = "sidecar-1:9000=up sidecar-2:9000=up sidecar-3:9000=up" ]
check $? "Prometheus reports the three sidecar targets up ($targets)"

# ---- one shared limit --------------------------------------------------------------------
KEY="e2e-shared-$RUN_ID"
spread "$KEY"
[ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ]
check $? "one key over three sidecars: $LIMIT of $SENT admitted in total, the rest 429 \
(got $(tally_text); admitted per node: $PER_NODE; ${SPAN_MS} ms)"

headers=$(curl -s -m 5 -D - -o /dev/null -H "x-api-key: $KEY" \
  "http://127.0.0.1:${PROXY_PORTS[0]}/e2e/hello" 2>/dev/null | tr -d '\r')
missing=""
for h in retry-after ratelimit ratelimit-policy; do
  grep -qi "^$h:" <<<"$headers" || missing+="$h "
done
[ "$(head -n 1 <<<"$headers" | cut -d' ' -f2)" = 429 ] && [ -z "$missing" ]
check $? "a limited request gets 429 with Retry-After, RateLimit and RateLimit-Policy \
(status line: $(head -n 1 <<<"$headers")${missing:+; missing: $missing})"

# The demo upstream runs the tollgate Layer itself: /demo/limited admits 3 per 10 s per client IP.
# Its client is the sidecar that forwards (no trusted proxy for the upstream), so five quick
# requests through one sidecar, under a fresh key the sidecar's own limit lets through, give 3 + 2.
codes=""
for _ in 1 2 3 4 5; do
  codes+="$(status_via "${PROXY_PORTS[0]}" "e2e-layer-$RUN_ID" /demo/limited) "
done
[ "$codes" = "200 200 200 429 429 " ]
check $? "the demo upstream's own Layer admits 3 of 5 quick requests to /demo/limited (got: ${codes% })"

wait_prom_nodes 45 'sum by (node) (ratelimiter_requests_checked_total{decision="allowed"})' &&
  wait_prom_nodes 30 'sum by (node) (ratelimiter_requests_checked_total{decision="limited"})'
check $? "Prometheus has allowed and limited decisions labelled with each node (latest: ${PROM_SEEN:-none})"

console=$(curl -s -m 10 -w '\n%{http_code}' "$PROM/consoles/tollgate.html" 2>/dev/null)
[ "$(tail -n 1 <<<"$console")" = 200 ] && grep -q '<td>sidecar-3</td>' <<<"$console"
check $? "the Prometheus console /consoles/tollgate.html renders a row per node"

# ---- loadgen -----------------------------------------------------------------------------
deadline=$((SECONDS + LOADGEN_DURATION + 60))
while [ "$(docker inspect -f '{{.State.Running}}' "$LOADGEN_ID" 2>/dev/null)" = true ] &&
  [ "$SECONDS" -lt "$deadline" ]; do
  sleep 2
done
loadgen_exit=$(docker inspect -f '{{if .State.Running}}running{{else}}{{.State.ExitCode}}{{end}}' \
  "$LOADGEN_ID" 2>/dev/null)
loadgen_log=$(docker logs "$LOADGEN_ID" 2>&1)
stats_re='^Requests: [0-9]+ \| Success: [0-9]+ \| Failed: [0-9]+ \| Blocked: [0-9]+ \| RPS: [0-9.]+ \| p50: .* \| p99: '
stats_lines=$(grep -cE "$stats_re" <<<"$loadgen_log")
[ "$stats_lines" -ge 3 ]
check $? "loadgen prints stats lines ($stats_lines; last: $(grep -E "$stats_re" <<<"$loadgen_log" | tail -n 1))"

burst_line=$(grep -n -m 1 '^BURST MODE' <<<"$loadgen_log" | cut -d: -f1)
steady_after=$(awk -v b="${burst_line:-0}" 'NR > b && /^STEADY MODE/ { print NR; exit }' <<<"$loadgen_log")
[ -n "$burst_line" ] && [ -n "$steady_after" ]
check $? "loadgen switches to BURST MODE and back to STEADY MODE \
($(grep -cE '^(BURST|STEADY) MODE' <<<"$loadgen_log") switches)"

summary=$(sed -n '/^=== Summary ===/,$p' <<<"$loadgen_log")
summary_stats=$(grep -m 1 -E "$stats_re" <<<"$summary")
blocked=$(sed -n 's/.*| Blocked: \([0-9]*\) |.*/\1/p' <<<"$summary_stats")
failed=$(sed -n 's/.*| Failed: \([0-9]*\) |.*/\1/p' <<<"$summary_stats")
[ "$loadgen_exit" = 0 ] && grep -q 'duration reached' <<<"$summary"
check $? "loadgen exits 0 with its summary after DURATION=${LOADGEN_DURATION}s (exit: $loadgen_exit)"
requests=$(sed -n 's/^Requests: \([0-9]*\) |.*/\1/p' <<<"$summary_stats")
# Fail closed turns every Redis hiccup into a 503, and a decision waits at most 50 ms for Redis:
# on a busy CI machine a few can time out, so that mode may fail up to 1% of requests.
allowed_failures=0
[ "$SIDECAR_FAILURE_MODE" = closed ] && allowed_failures=$((${requests:-0} / 100))
[ "${blocked:-0}" -gt 0 ] && [ "${failed:-1}" -le "$allowed_failures" ]
if [ "$allowed_failures" -eq 0 ]; then failed_text="nothing failed"; else
  failed_text="at most $allowed_failures requests failed"; fi
check $? "loadgen traffic was limited and $failed_text ($summary_stats)"

# ---- Redis outage ------------------------------------------------------------------------
log "killing redis"
dc kill redis >/dev/null 2>&1
deadline=$((SECONDS + 20))
while [ "$(docker inspect -f '{{.State.Running}}' "$(dc ps -q redis)" 2>/dev/null)" = true ] &&
  [ "$SECONDS" -lt "$deadline" ]; do
  sleep 1
done
case "$SIDECAR_FAILURE_MODE" in
  closed) expect=503 ;;
  *) expect=200 ;; # open passes everything; local admits up to the limit per node (> SENT/3)
esac
spread "e2e-outage-$RUN_ID"
redis_state=$(docker inspect -f '{{.State.Status}}' "$(dc ps -q redis)" 2>/dev/null)
[ "${TALLY[$expect]:-0}" -eq "$SENT" ] && [ "$redis_state" != running ]
check $? "Redis down: failure mode $SIDECAR_FAILURE_MODE gives $expect to all $SENT requests \
(got $(tally_text); redis $redis_state)"

wait_prom_nodes 30 'sum by (node) (ratelimiter_requests_checked_total{decision="error"})'
check $? "Prometheus counts the outage as decision=\"error\" on each node (latest: ${PROM_SEEN:-none})"

log "starting redis"
t=$SECONDS
dc start redis >/dev/null 2>&1
wait_healthy 60 redis || fail "redis not healthy 60 s after start: $NOT_HEALTHY"
deadline=$((SECONDS + 60))
attempt=0
while :; do
  attempt=$((attempt + 1))
  spread "e2e-recovered-$RUN_ID-$attempt"
  [ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ] && break
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 2
done
[ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ]
check $? "Redis back: the shared limit holds again, $LIMIT of $SENT admitted \
($((SECONDS - t)) s after start, attempt $attempt; got $(tally_text))"

wait_healthy 60 sidecar-1 sidecar-2 sidecar-3
check $? "sidecars report ready again after the outage${NOT_HEALTHY:+ (not healthy: $NOT_HEALTHY)}"

# ---- one sidecar cut off from Redis ------------------------------------------------------
# Redis is alone on the `store` network: disconnecting sidecar-1 from it is an outage for
# sidecar-1 only (packets vanish: no RST, so only timeouts and the breaker can tell).
STORE_NET=$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.network=store")
S1=$(dc ps -q sidecar-1)
log "cutting sidecar-1 off from redis (docker network disconnect)"
docker network disconnect "$STORE_NET" "$S1" >/dev/null 2>&1
codes=""
t0=$(date +%s%N)
for _ in 1 2 3 4 5 6; do codes+="$(status_via "$SIDECAR_1_PORT" "e2e-cut-$RUN_ID") "; done
cut_ms=$((($(date +%s%N) - t0) / 1000000))
case "$SIDECAR_FAILURE_MODE" in
  closed) want="503 503 503 503 503 503 " ;;
  *) want="200 200 200 200 200 200 " ;;
esac
[ "$codes" = "$want" ]
check $? "sidecar-1 cut from redis follows failure mode $SIDECAR_FAILURE_MODE, 6 requests in ${cut_ms} ms \
(got: ${codes% })"
spread_over "e2e-cut-others-$RUN_ID" "$SIDECAR_2_PORT" "$SIDECAR_3_PORT"
[ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ]
check $? "meanwhile sidecar-2 and sidecar-3 still share the limit: $LIMIT of $SENT (got $(tally_text))"
log "reconnecting sidecar-1 to redis"
docker network connect "$STORE_NET" "$S1" >/dev/null 2>&1
t=$SECONDS
deadline=$((SECONDS + 60))
attempt=0
while :; do
  attempt=$((attempt + 1))
  spread_over "e2e-reconnected-$RUN_ID-$attempt" "$SIDECAR_1_PORT"
  [ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ] && break
  [ "$SECONDS" -ge "$deadline" ] && break
  sleep 2
done
[ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ]
check $? "sidecar-1 reconnected recovers by itself: $LIMIT of $SENT admitted \
($((SECONDS - t)) s, attempt $attempt; got $(tally_text))"

# ---- one sidecar of three killed under load ----------------------------------------------
log "killing sidecar-3 while traffic runs through all three"
(
  end=$((SECONDS + 6))
  i=0
  while [ "$SECONDS" -lt "$end" ] && [ "$i" -lt 3000 ]; do
    status_via "${PROXY_PORTS[i % 3]}" "e2e-background-$RUN_ID-$((i % 7))" >/dev/null
    i=$((i + 1))
  done
) &
background=$!
sleep 2
dc kill sidecar-3 >/dev/null 2>&1
spread_over "e2e-survivors-$RUN_ID" "$SIDECAR_1_PORT" "$SIDECAR_2_PORT"
survivors="$(tally_text)"
wait "$background" 2>/dev/null
[ "${TALLY[200]:-0}" -eq "$LIMIT" ] && [ "${TALLY[429]:-0}" -eq $((SENT - LIMIT)) ]
check $? "sidecar-3 killed under load: sidecar-1 and sidecar-2 keep the global limit, $LIMIT of $SENT \
(got $survivors)"
dc start sidecar-3 >/dev/null 2>&1
wait_healthy 60 sidecar-3
check $? "sidecar-3 restarted and ready${NOT_HEALTHY:+ (not healthy: $NOT_HEALTHY)}"

finish
