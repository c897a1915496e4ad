#!/usr/bin/env bash
# Builds the deployable Azure Functions zip: host.json, one folder per function, the rules,
# and the handler as a static, stripped x86_64 musl binary (jemalloc as its allocator), whose
# zip entry is a Unix file with mode 0755, so the host can run it as it is. Usage:
#   scripts/package.sh [out.zip]
# It installs what it needs (the musl target through rustup; Debian's musl-tools for the C
# dependencies, when run as root with apt) or stops with a message saying what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/xdr-ingest-functions.zip}"
target=x86_64-unknown-linux-musl

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "== adding the $target target (rustup)"
  rustup target add "$target" || {
    echo "error: cannot add the Rust target $target (rustup target add $target): the package must be a static binary" >&2
    exit 1
  }
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing musl-tools (apt) for the C dependencies"
    apt-get install -y -q musl-tools >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q musl-tools >/dev/null; }
  fi
  command -v musl-gcc >/dev/null 2>&1 || {
    echo "error: musl-gcc is missing: the C dependencies (zstd, ring, aws-lc, jemalloc) must be built for $target; install musl-tools (Debian/Ubuntu) or your system's musl C compiler" >&2
    exit 1
  }
fi

echo "== cargo build --profile dist --target $target"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --profile dist --locked --target "$target"
bin="target/$target/dist/xdr-ingest"

# the package must not depend on the image's C library: no program interpreter, no libraries
if readelf -l "$bin" | grep -q "INTERP" || readelf -d "$bin" 2>/dev/null | grep -q "NEEDED"; then
  echo "error: $bin is not a static binary" >&2
  exit 1
fi
python3 scripts/make_zip.py "$out" "$bin"
