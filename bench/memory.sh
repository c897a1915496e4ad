#!/usr/bin/env bash
# Peak RSS of `xdr-ingest ingest` against input size: the same generator, seed and form at
# several sizes, each into a fresh lake. The input is streamed in bounded chunks, so the peak
# should not grow with the input. Manual: bench/memory.sh [--form eventhub|storage]
#   [--sizes "100000 700000"] (records; ~2.9 KB each, so 700000 is ~2 GB) [--bin PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="" form=eventhub sizes="100000 700000" out=bench/out/memory
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --form) form="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=target/release/xdr-ingest
fi
mkdir -p "$out"
printf '%-9s %9s %9s %8s %8s %12s\n' form records "input MB" "CPU s" "wall s" "peak RSS MB"
for n in $sizes; do
  data="$out/data-$form-$n"
  [ -d "$data" ] || "$bin" generate --out "$data" --records "$n" --form "$form" --corrupt 0.001 \
    --seed 9 --date 2026-11-26 > /dev/null
  rm -rf "$out/lake"
  /usr/bin/time -f "%U %S %e %M" -o "$out/time.txt" "$bin" ingest --lake "$out/lake" "$data/$form" > /dev/null
  read -r user sys wall rss < "$out/time.txt"
  mb=$(du -sm "$data/$form" | cut -f1)
  printf '%-9s %9s %9s %8.1f %8.1f %12.0f\n' "$form" "$n" "$mb" "$(echo "$user + $sys" | bc)" "$wall" "$(echo "$rss / 1024" | bc)"
done
rm -rf "$out/lake"
