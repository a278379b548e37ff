#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it. Installs what a fresh machine lacks
# (nats-server, PostgreSQL 15, openssl for the TLS tests, chromium for the dashboard test)
# when it can, then: fmt check, clippy, all tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
need_pg=
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_pg=1
fi
if ((${#need[@]})) || [ -n "$need_pg" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  # PostgreSQL 15 where the distribution has it, else its default major version (the test
  # harness takes the newest /usr/lib/postgresql/*/bin).
  if [ -n "$need_pg" ]; then
    if apt-cache show postgresql-15 >/dev/null 2>&1; then need+=(postgresql-15); else need+=(postgresql); fi
  fi
  echo "==> installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked "$@"
