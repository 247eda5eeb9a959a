#!/usr/bin/env bash
# Runs the README's main command exactly as written and checks what the README promises.
#
#   ./scripts/readme-demo.sh
#
# The command is read from README.md (the first ```sh block after "**Run it**"), so editing
# the README is what this tests. It is started from the repository root in the background,
# and then:
#
#   - the build may take up to BUILD_TIMEOUT s (default 1200) until cargo says `Running` (a cold
#     release build on a 2-core machine takes 6–8 minutes; the bound only catches a stuck one);
#   - http://127.0.0.1:8000/hello must answer within PORT_TIMEOUT s (default 20) after that;
#   - the first 10 answers are 200 with a RateLimit header, the 11th (same minute) is 429 with
#     Retry-After ("ten pass with RateLimit headers, the eleventh gets 429 with Retry-After");
#   - SIGTERM stops it, and it exits 0 within STOP_TIMEOUT s (default 20).
#
# Ports 8000 and 9000 on 127.0.0.1 must be free (the demo's fixed addresses); the script says
# so and fails otherwise. Whatever happens, what it started is stopped (EXIT trap). Prints
# `readme-demo: ok` last on success; exits 1 with the reason and the command's log otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD_TIMEOUT=${BUILD_TIMEOUT:-1200}
PORT_TIMEOUT=${PORT_TIMEOUT:-20}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
URL=http://127.0.0.1:8000/hello
LOG=$(mktemp "${TMPDIR:-/tmp}/tollgate-readme-demo.XXXXXX")
HEADERS=$(mktemp "${TMPDIR:-/tmp}/tollgate-readme-demo-headers.XXXXXX")
PID=""

log() { echo "readme-demo: $*"; }
die() {
  log "FAIL - $*"
  if [ -s "$LOG" ]; then
    log "---- last lines of the command's output"
    tail -n 30 "$LOG" | sed 's/^/  /'
  fi
  exit 1
}

# Stops the whole process group (cargo, rustc or the sidecar) if it still runs.
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null
  fi
  rm -f "$LOG" "$HEADERS"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

for tool in curl cargo setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done

# ---- the command, from the README ----------------------------------------------------------
CMD=$(awk '
  /\*\*Run it\*\*/ { after = 1; next }
  after && !inside && /^```sh[[:space:]]*$/ { inside = 1; next }
  inside && /^```/ { exit }
  inside && NF && $1 !~ /^#/ { print }
' README.md)
[ -n "$CMD" ] || die 'no ```sh block after "**Run it**" in README.md'
[ "$(printf '%s\n' "$CMD" | wc -l)" -eq 1 ] ||
  die "expected one command in the README's \"Run it\" block, found: $CMD"
log "README command: $CMD"

# ---- the demo's fixed ports must be free ----------------------------------------------------
for port in 8000 9000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port on 127.0.0.1 is already in use (the demo listens on 8000 and 9000): \
stop whatever listens there, e.g. find it with: ss -ltnp 'sport = :$port'"
  fi
done

# ---- start it --------------------------------------------------------------------------------
# Its own process group (setsid), so a failure can stop cargo and rustc too; `exec` all the way
# (cargo run execs the binary on Unix), so PID is the sidecar once it runs.
setsid bash -c "exec $CMD" >"$LOG" 2>&1 </dev/null &
PID=$!

deadline=$((SECONDS + BUILD_TIMEOUT))
until grep -q 'Running `' "$LOG"; do
  kill -0 "$PID" 2>/dev/null || { wait "$PID"; die "the command exited ($?) before running the binary"; }
  [ "$SECONDS" -lt "$deadline" ] || die "no \`Running\` from cargo within ${BUILD_TIMEOUT} s (build too slow or stuck)"
  sleep 1
done
log "built; waiting up to ${PORT_TIMEOUT} s for $URL"

# Polling must not spend the limit: only an HTTP answer counts as the first request.
deadline=$((SECONDS + PORT_TIMEOUT))
while :; do
  code=$(curl -s -m 5 -D "$HEADERS" -o /dev/null -w '%{http_code}' "$URL" 2>/dev/null) || code=000
  [ "$code" != 000 ] && break
  kill -0 "$PID" 2>/dev/null || { wait "$PID"; die "the sidecar exited ($?) before answering"; }
  [ "$SECONDS" -lt "$deadline" ] || die "$URL did not answer within ${PORT_TIMEOUT} s"
  sleep 0.2
done

# ---- what the README promises ---------------------------------------------------------------
header() { tr -d '\r' <"$HEADERS" | grep -i "^$1:" | head -n 1; }
for i in $(seq 1 11); do
  [ "$i" -gt 1 ] && code=$(curl -s -m 5 -D "$HEADERS" -o /dev/null -w '%{http_code}' "$URL" 2>/dev/null)
  if [ "$i" -le 10 ]; then
    [ "$code" = 200 ] || die "request $i got $code, want 200"
    ratelimit=$(header ratelimit)
    [ -n "$ratelimit" ] || die "request $i (200) has no RateLimit header"
  else
    [ "$code" = 429 ] || die "request 11 got $code, want 429"
    [ -n "$(header retry-after)" ] || die "request 11 (429) has no Retry-After header"
  fi
done
log "ok   - 10 × 200 with RateLimit (the 10th: $ratelimit), then 429 with $(header retry-after)"

# ---- SIGTERM: a clean exit -----------------------------------------------------------------
kill -TERM "$PID"
deadline=$((SECONDS + STOP_TIMEOUT))
while kill -0 "$PID" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || die "still running ${STOP_TIMEOUT} s after SIGTERM"
  sleep 0.2
done
wait "$PID"
rc=$?
PID=""
[ "$rc" -eq 0 ] || die "exited $rc after SIGTERM, want 0"
log "ok   - SIGTERM: exited 0"
log "ok"
