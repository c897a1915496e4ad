#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it first installs what the tests need:
# Azurite (npm, from package-lock.json) and DuckDB + its delta extension (PyPI, in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/azurite-blob ]; then
  echo "== installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
if ! .venv/bin/python -c "import duckdb" 2>/dev/null; then
  echo "== installing DuckDB + duckdb-ext-delta into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi

echo "== cargo test"
cargo test --all-targets "$@"
