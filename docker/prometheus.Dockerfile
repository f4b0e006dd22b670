# The `monitoring` profile's Prometheus: Debian's own prometheus package on the same Debian 12 base as the server
# image (docker/test.sh makes debian:bookworm-slim with mmdebstrap where no registry is reachable), configured by
# docker/prometheus.yml to scrape vae-server's /metrics. Built by docker-compose from this folder:
#   docker-compose --profile monitoring up -d        # Prometheus on 127.0.0.1:${VAE_PROMETHEUS_PORT:-9090}
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# No recommends: the package recommends the node exporter, which this deployment does not run.
RUN --mount=type=cache,id=vae-apt-cache,target=/var/cache/apt,sharing=locked \
    --mount=type=cache,id=vae-apt-lists,target=/var/lib/apt/lists,sharing=locked \
    rm -f /etc/apt/apt.conf.d/docker-clean \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && install -d -o prometheus -g prometheus -m 0755 /prometheus \
 && prometheus --version 2>&1 | head -n 1
COPY prometheus.yml /etc/prometheus/vae.yml
USER prometheus
EXPOSE 9090
CMD ["prometheus", "--config.file=/etc/prometheus/vae.yml", "--storage.tsdb.path=/prometheus", \
     "--storage.tsdb.retention.time=7d", "--web.listen-address=0.0.0.0:9090"]
