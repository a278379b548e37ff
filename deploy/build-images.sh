#!/usr/bin/env bash
# Builds every image the compose topology needs on a machine WITHOUT a container registry:
#
#   switchboard-local/debian:bookworm     Debian bookworm made with debootstrap + `docker import`
#   switchboard-local/distroless-cc:12    glibc + CA certificates + user 65532 (distroless stand-in)
#   switchboard-local/nats:2.9            Debian's nats-server        (stand-in for nats:2.9-alpine)
#   switchboard-local/postgres:15         Debian's postgresql-15      (stand-in for postgres:15-alpine)
#   switchboard:latest                    deploy/Dockerfile, target `prebuilt`: the binary from
#                                         `cargo build --release` on this host (glibc of bookworm)
#
# and writes deploy/.env so that `docker compose -f deploy/docker-compose.yml …` picks them.
# With a registry none of this is needed: `docker compose -f deploy/docker-compose.yml build`
# uses the official images (see docs/operations.md).
#
# Usage: deploy/build-images.sh [--no-cargo]   (--no-cargo: reuse target/release/switchboard)
# Needs: docker, debootstrap (apt-get install debootstrap; installed when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LOCAL=switchboard-local
DEBIAN_IMAGE="$LOCAL/debian:bookworm"
RUNTIME_IMAGE="$LOCAL/distroless-cc:12"
NATS_IMAGE="$LOCAL/nats:2.9"
POSTGRES_IMAGE="$LOCAL/postgres:15"
SWITCHBOARD_IMAGE="switchboard:latest"
cargo_build=1
[ "${1:-}" = "--no-cargo" ] && cargo_build=

step() { printf '==> %s\n' "$*"; }
elapsed() { printf '    %s: %ss\n' "$1" "$(($(date +%s) - $2))"; }

# The classic builder when BuildKit (buildx) is missing; the Dockerfiles work with both.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
build() { docker build --quiet "$@" >/dev/null; }

t0=$(date +%s)
if ! docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  step "$DEBIAN_IMAGE: debootstrap bookworm (minbase) from $MIRROR"
  if ! command -v debootstrap >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  elapsed debootstrap "$t0"
else
  step "$DEBIAN_IMAGE: present"
fi

t=$(date +%s)
step "$RUNTIME_IMAGE, $NATS_IMAGE, $POSTGRES_IMAGE"
build -f deploy/local/runtime-base.Dockerfile --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$RUNTIME_IMAGE" deploy/local
build -f deploy/local/nats.Dockerfile --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$NATS_IMAGE" deploy/local
build -f deploy/local/postgres.Dockerfile --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$POSTGRES_IMAGE" deploy/local
elapsed "stand-in images" "$t"

if [ -n "$cargo_build" ]; then
  t=$(date +%s)
  step "cargo build --release -p switchboard"
  cargo build --release --locked -p switchboard
  elapsed "cargo build" "$t"
fi
[ -x target/release/switchboard ] || { echo "target/release/switchboard is missing" >&2; exit 1; }

t=$(date +%s)
step "$SWITCHBOARD_IMAGE (deploy/Dockerfile, target prebuilt)"
version="$(target/release/switchboard --version | awk '{print $2}')"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
build -f deploy/Dockerfile --target prebuilt \
  --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$SWITCHBOARD_IMAGE" -t "switchboard:$version" .
elapsed "switchboard image" "$t"

# Keep the control token of an earlier run: agents and console must agree on it.
token="$(sed -n 's/^CONTROL_TOKEN=//p' deploy/.env 2>/dev/null || true)"
[ -n "$token" ] || token="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
umask 077
cat >deploy/.env <<EOF
# Written by deploy/build-images.sh: local images for a machine without a registry.
# Remove the *_IMAGE lines to use the official images (docs/operations.md).
SWITCHBOARD_IMAGE=$SWITCHBOARD_IMAGE
NATS_IMAGE=$NATS_IMAGE
POSTGRES_IMAGE=$POSTGRES_IMAGE
# Shared secret of the control console and its agents (random, made on this machine).
CONTROL_TOKEN=$token
EOF

step "images (deploy/.env now selects them)"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' \
  | grep -E "^($LOCAL/|switchboard:)" | sort | sed 's/^/    /'
elapsed total "$t0"
