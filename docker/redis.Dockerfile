# Redis for docker-compose, from Debian's redis-server package (bookworm: Redis 7.0), so the stack
# builds where no container registry can be reached; the chart uses the public redis image.
#   docker build -f docker/redis.Dockerfile -t chatforge/redis .
# BASE: debian:bookworm-slim, or the offline base of docker/base.sh.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# The redis user first, with a fixed uid/gid, so the package's postinst keeps it.
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid 999 --home-dir /data --no-create-home redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends 'redis-server=5:7.0.*' \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data \
    && chown 999:999 /data
WORKDIR /data
USER 999
EXPOSE 6379
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s CMD ["redis-cli", "-p", "6379", "ping"]
# Debian's /etc/redis/redis.conf daemonizes and binds loopback: run from arguments instead.
ENTRYPOINT ["redis-server"]
CMD ["--port", "6379", "--dir", "/data", "--appendonly", "yes", "--protected-mode", "no"]
