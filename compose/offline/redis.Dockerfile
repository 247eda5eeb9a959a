# Offline stand-in for `redis:7-alpine`, built only by scripts/offline-images.sh when no image
# registry is reachable (CI). Users online get the official image under the same tag.
#
# It behaves like the official image where the demo depends on it: `redis-server` and
# `redis-cli` on PATH, data in the volume /data owned by the non-root `redis` user, and
# protected mode off (the official entrypoint adds `--protected-mode no` too, so containers on
# the compose network can connect without a password).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
