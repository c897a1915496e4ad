#!/usr/bin/env bash
# xdr-ingest vs DuckDB on the same seeded Defender dataset (both wire forms), medians of
# several alternating runs. Full run (manual): bench/compare.sh  (~300 MB per form, 3 runs)
# Options: --mb N (size per form), --runs N, --bin PATH (default: a release build),
#          --out DIR (default bench/out). CI runs a tiny one through tests/bench_smoke.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="" mb=300 runs=3 out=bench/out
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --mb) mb="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/xdr-ingest
fi
if ! .venv/bin/python -c "import duckdb" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
exec .venv/bin/python bench/compare.py --bin "$bin" --python .venv/bin/python --out "$out" --mb "$mb" --runs "$runs"
