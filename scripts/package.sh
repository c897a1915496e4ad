#!/usr/bin/env bash
# Builds the deployable Azure Functions zip: host.json, one folder per function, and the
# handler binary (release build, executable bit set inside the zip). Usage:
#   scripts/package.sh [out.zip]
# A static musl binary needs the x86_64-unknown-linux-musl target (`rustup target add`);
# when it is installed the script uses it, otherwise it ships the glibc build, which runs on
# the Functions Linux images (Debian-based).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/xdr-ingest-functions.zip}"
target_args=()
bin=target/release/xdr-ingest
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
  target_args=(--target x86_64-unknown-linux-musl)
  bin=target/x86_64-unknown-linux-musl/release/xdr-ingest
fi
cargo build --release --locked "${target_args[@]}"
python3 - "$out" "$bin" <<'PY'
import sys, zipfile, os, glob
out, binary = sys.argv[1], sys.argv[2]
functions = ["EventHubIngest", "BlobIngest", "BlobSweep", "Replay", "Maintenance"]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    z.write("host.json", "host.json")
    for f in functions:
        z.write(f"{f}/function.json", f"{f}/function.json")
    z.write("config/rules.toml", "config/rules.toml")
    info = zipfile.ZipInfo("xdr-ingest")
    info.external_attr = (0o100755 << 16)   # regular file, rwxr-xr-x: the host runs it as is
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(binary, "rb") as b:
        z.writestr(info, b.read())
print(f"wrote {out} ({os.path.getsize(out)} bytes)")
PY
