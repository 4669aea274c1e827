#!/usr/bin/env bash
# The whole test suite, as a new user and CI run it: installs what the tests need, checks
# formatting and lints, builds, and runs every test against real servers and real clients.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "test dependencies: real tus clients"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed for the tus-js-client tests: apt-get install nodejs npm" >&2
  exit 1
fi
npm ci --prefix tests/clients/js --no-audit --no-fund --loglevel=error
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/py/requirements.txt

step "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "build"
cargo build --locked --release --workspace --bins

step "tests"
cargo test --locked --release --workspace
