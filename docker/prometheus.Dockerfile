# Prometheus for docker-compose's monitoring profile, from Debian's package (bookworm: 2.42), so
# the profile builds where no container registry can be reached. Grafana is not packaged by
# Debian: compose runs its public image (docker/README.md).
#   docker build -f docker/prometheus.Dockerfile -t chatforge/prometheus .
# BASE: debian:bookworm-slim, or the offline base of docker/base.sh.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN groupadd --system --gid 998 prometheus \
    && useradd --system --uid 998 --gid 998 --home-dir /prometheus --no-create-home prometheus \
    && apt-get update \
    && apt-get install -y --no-install-recommends 'prometheus=2.42.*' \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown 998:998 /prometheus
WORKDIR /prometheus
USER 998
EXPOSE 9090
STOPSIGNAL SIGTERM
# No curl or wget in the image: bash's /dev/tcp asks /-/healthy.
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /-/healthy HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
