#!/usr/bin/env bash
# Builds local stand-ins for the third-party images the compose demo uses, under the exact tags
# compose/docker-compose.yml and the Dockerfile name, so `docker-compose up` pulls nothing.
# For machines without an image registry (CI); users online simply get the real images.
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, imported (runtime base)
#   redis:7-alpine         Debian's redis-server           (compose/offline/redis.Dockerfile)
#   prom/prometheus:<tag>  Debian's prometheus + wget      (compose/offline/prometheus.Dockerfile)
#
# An image already present under its tag is kept (real or stand-in); `--rebuild` replaces the
# stand-ins. Stand-ins carry the label org.tollgate.offline-standin=true, so
#   docker images --filter label=org.tollgate.offline-standin=true
# lists them. Needs root (or sudo) for debootstrap, and containers that reach a Debian mirror.
# DEBIAN_MIRROR overrides the mirror (default: the one in apt's own sources list).
set -euo pipefail
cd "$(dirname "$0")/.."

REBUILD=0
case "${1:-}" in
  "") ;;
  --rebuild) REBUILD=1 ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "offline-images: unknown argument ${1} (try --help)" >&2; exit 64 ;;
esac

LABEL="org.tollgate.offline-standin=true"
COMPOSE_FILE=compose/docker-compose.yml
BASE_TAG=debian:bookworm-slim
# The tags are read from the files that use them, so the two can never drift apart.
image_in_compose() {
  sed -n "s/^ *image: *[\"']\{0,1\}\($1:[^\"' ]*\).*/\1/p" "$COMPOSE_FILE" | head -n 1
}
REDIS_TAG=$(image_in_compose redis)
PROM_TAG=$(image_in_compose 'prom\/prometheus')
if [ -z "$REDIS_TAG" ] || [ -z "$PROM_TAG" ]; then
  echo "offline-images: could not read the redis and prometheus tags from $COMPOSE_FILE" >&2
  exit 1
fi
grep -q "^FROM $BASE_TAG" Dockerfile || {
  echo "offline-images: Dockerfile no longer builds FROM $BASE_TAG; update BASE_TAG here" >&2
  exit 1
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
is_standin() {
  [ "$(docker image inspect -f '{{ index .Config.Labels "org.tollgate.offline-standin" }}' "$1" 2>/dev/null)" = "true" ]
}
# Skip an image that is present, unless --rebuild was given and it is one of ours.
wanted() {
  if have_image "$1"; then
    if [ "$REBUILD" -eq 1 ] && is_standin "$1"; then return 0; fi
    echo "offline-images: $1 present, kept"
    return 1
  fi
  return 0
}

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -n 's/^URIs: *\(http[^ ]*\/debian\/\{0,1\}\) *$/\1/p' | head -n 1)
  [ -z "$m" ] && m=$(sed -n 's/^deb  *\(http[^ ]*\/debian\/\{0,1\}\)  *bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
  echo "${m:-http://deb.debian.org/debian}"
}

if wanted "$BASE_TAG"; then
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "offline-images: installing debootstrap (Debian package)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
  fi
  mirror=$(debian_mirror)
  root=$(mktemp -d /var/tmp/tollgate-rootfs.XXXXXX)
  trap '$SUDO rm -rf "$root"' EXIT
  echo "offline-images: debootstrap bookworm (minbase) from $mirror -> $BASE_TAG"
  started=$SECONDS
  $SUDO debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1
  }
  rm -f "$root.log"
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $SUDO tar -C "$root" -c . | docker import \
    --change "LABEL $LABEL" --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  $SUDO rm -rf "$root"
  trap - EXIT
  echo "offline-images: $BASE_TAG imported ($((SECONDS - started)) s)"
fi

build_standin() {
  local tag=$1 dockerfile=$2
  wanted "$tag" || return 0
  echo "offline-images: building $tag from $dockerfile"
  docker build -q --label "$LABEL" -t "$tag" -f "$dockerfile" compose/offline >/dev/null
}
build_standin "$REDIS_TAG" compose/offline/redis.Dockerfile
build_standin "$PROM_TAG" compose/offline/prometheus.Dockerfile
echo "offline-images: ready: $BASE_TAG $REDIS_TAG $PROM_TAG"
