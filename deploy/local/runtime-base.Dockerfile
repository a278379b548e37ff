# Local stand-in for gcr.io/distroless/cc-debian12:nonroot, for machines without a registry:
# glibc and libgcc from Debian bookworm, CA certificates, a non-root user 65532, nothing else
# (no shell, no package manager). Built by deploy/build-images.sh.
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE} AS src
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates libc6 libgcc-s1; \
    mkdir -p /out/etc/ssl/certs /out/tmp /out/home/nonroot /out/usr/lib/os-release.d; \
    for pkg in libc6 libgcc-s1; do dpkg -L "$pkg"; done \
      | grep -E '/lib(64)?/.*\.so(\.[0-9]+)*$' | grep -v gconv \
      | while read -r f; do cp -a --parents "$f" /out; done; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    cp /etc/os-release /out/etc/os-release; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group; \
    printf 'hosts: files dns\n' > /out/etc/nsswitch.conf; \
    chmod 1777 /out/tmp; \
    chown 65532:65532 /out/home/nonroot

FROM scratch
COPY --from=src /out/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /home/nonroot
