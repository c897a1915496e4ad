#!/usr/bin/env bash
# xdr-ingest vs DuckDB on the same seeded Defender dataset (both wire forms), medians of
# several alternating runs; two DuckDB jobs: the plain one (bench/duckdb_job.py) and the cheapest
# formulation we found (bench/duckdb_fast.py), a ratio against each.
# Full run (manual): bench/compare.sh  (~300 MB per form, 3 runs)
# Options: --mb N (size per form), --runs N, --bin PATH (default: the binary that ships, the
#          static musl build scripts/package.sh makes; --release: the glibc release build),
#          --out DIR (default bench/out). Also reports the physical floor (benches/floor.rs, a
#          release build of its own; --no-floor skips it).
#          CI runs a tiny one through tests/bench_smoke.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="" mb=300 runs=3 out=bench/out release="" floor="--floor"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --mb) mb="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --release) release=1; shift ;;
    --no-floor) floor=""; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ] && [ -n "$release" ]; then
  cargo build --release --quiet
  bin=target/release/xdr-ingest
elif [ -z "$bin" ]; then
  # the binary that ships: scripts/package.sh's static build
  scripts/package.sh target/xdr-ingest-functions.zip >/dev/null
  bin=target/x86_64-unknown-linux-musl/dist/xdr-ingest
fi
if ! .venv/bin/python -c "import duckdb" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
fi
exec .venv/bin/python bench/compare.py --bin "$bin" --python .venv/bin/python --out "$out" --mb "$mb" --runs "$runs" $floor
