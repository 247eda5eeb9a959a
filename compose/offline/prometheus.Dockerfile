# Offline stand-in for `prom/prometheus:<tag>` (the tag compose/docker-compose.yml pins), built
# only by scripts/offline-images.sh when no image registry is reachable (CI). Users online get
# the official image under the same tag.
#
# Debian's prometheus package (2.42) plus wget, laid out like the official image: the binary at
# /bin/prometheus as the entrypoint, the default flags for /etc/prometheus/prometheus.yml and the
# TSDB in the volume /prometheus, run as `nobody`. wget serves the compose healthcheck, as
# busybox's wget does in the official image.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
WORKDIR /prometheus
VOLUME /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
