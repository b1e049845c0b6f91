#!/usr/bin/env bash
# README's second command: installs and starts what the tests need, then runs
# every check and test: fmt, clippy, the OpenAPI drift check, a schemathesis
# run over both documents, then every test. `.ci/run` calls exactly this.
# Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n== %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  echo "nothing listens on 127.0.0.1:$1 after 20 s" >&2
  return 1
}

log "PostgreSQL on 127.0.0.1:5432"
if ! port_open 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_port 5432
fi

log "Redis on 127.0.0.1:6379"
if ! port_open 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi

log "Kafka-protocol broker (tansu) on 127.0.0.1:9092"
if ! command -v tansu >/dev/null; then
  cargo install tansu --locked --features dynostore
fi
if ! port_open 9092; then
  mkdir -p target
  nohup tansu broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 > target/tansu.log 2>&1 &
  wait_port 9092
fi

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then sudo_if_needed apt-get update -qq; apt_updated=1; fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

log "Chromium and ChromeDriver for the browser test"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi

log "curl and Python's venv for the schemathesis run"
if ! command -v curl >/dev/null; then
  apt_install curl
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt_install python3-venv
fi

log "promtool for the alert rules in deploy/prometheus"
if ! command -v promtool >/dev/null; then
  apt_install --no-install-recommends prometheus
fi

log "npm packages for the end-to-end tests (Clerk SDK, openid-client)"
for pkg in tests/e2e/*/; do
  (cd "$pkg" && npm ci --no-audit --no-fund --loglevel=error)
done

log "format and lints"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool test rules alerts.test.yml)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log "the OpenAPI documents match the code, and schemathesis finds nothing"
cargo build --locked
target/debug/gatehouse openapi --check
scripts/schemathesis.sh

log "every test"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
