#!/usr/bin/env python3
"""Writes the Functions package: host.json, each function's function.json, every file of
config/ (rules.toml, and a schema overlay if you put one there: XDR_SCHEMA_FILE=config/<file>),
and the handler binary as `xdr-ingest`, a Unix file (created-by Unix, mode 0755) so that the
host can run it from Flex's read-only package mount, where it cannot chmod it.

    python3 scripts/make_zip.py <out.zip> <binary>
"""
import os
import sys
import zipfile

FUNCTIONS = ["EventHubIngest", "BlobIngest", "BlobSweep", "Replay", "Maintenance"]
UNIX = 3


def entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.create_system = UNIX
    info.external_attr = (0o100000 | mode) << 16  # a regular file with this mode
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: make_zip.py <out.zip> <binary>")
    out, binary = sys.argv[1], sys.argv[2]
    config = sorted(f"config/{n}" for n in os.listdir("config") if os.path.isfile(f"config/{n}"))
    files = ["host.json"] + config + [f"{f}/function.json" for f in FUNCTIONS]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with zipfile.ZipFile(out, "w") as z:
        for f in files:
            with open(f, "rb") as fh:
                z.writestr(entry(f, 0o644), fh.read())
        with open(binary, "rb") as fh:
            z.writestr(entry("xdr-ingest", 0o755), fh.read())
    print(f"wrote {out} ({os.path.getsize(out)} bytes; binary {os.path.getsize(binary)} bytes)")


if __name__ == "__main__":
    main()
