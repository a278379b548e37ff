# Local stand-in for the official nats:2.9-alpine image, for machines without a registry:
# Debian's nats-server (2.9) with wget for the compose health check, as its non-root user.
# Same entry point contract: arguments go to nats-server. Built by deploy/build-images.sh.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends nats-server wget; \
    rm -rf /var/lib/apt/lists/*; \
    id nats >/dev/null 2>&1 || useradd --system --home-dir /data nats; \
    mkdir -p /data; chown nats:nats /data
USER nats
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]
CMD ["-js", "-sd", "/data", "-m", "8222"]
