#!/usr/bin/env python3
"""Reads every Delta table of a lake (untyped ones under _untyped/ too) with DuckDB's delta
extension (an independent reader) and prints, as JSON, per table: row count, non-null Timestamp count, distinct _date values, and
for _dead_letters the count per reason. Offline: the extension comes from the
duckdb-ext-delta wheel, nothing is downloaded.

usage: duckdb_check.py <lake dir>
"""
import json
import os
import site
import sys

import duckdb


def connect():
    ext_dir = None
    for sp in site.getsitepackages():
        cand = os.path.join(sp, "duckdb_ext", "extensions")
        if os.path.isdir(cand):
            ext_dir = cand
    if ext_dir is None:
        sys.exit("duckdb-ext-delta is not installed (pip install -r scripts/requirements-test.txt)")
    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false",
                                 "extension_directory": ext_dir})
    con.execute("LOAD delta")
    return con


def main():
    lake = sys.argv[1]
    con = connect()
    out = {}
    # typed tables at the top, untyped ones (new categories) under _untyped/
    tables = [(n, os.path.join(lake, n)) for n in sorted(os.listdir(lake))]
    untyped = os.path.join(lake, "_untyped")
    if os.path.isdir(untyped):
        tables += [(n, os.path.join(untyped, n)) for n in sorted(os.listdir(untyped))]
    for name, path in tables:
        if not os.path.isdir(os.path.join(path, "_delta_log")):
            continue
        scan = f"delta_scan('{path}')"
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
        info = {"rows": con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]}
        if "Timestamp" in cols:
            info["timestamps"] = con.execute(
                f'SELECT count("Timestamp") FROM {scan}').fetchone()[0]
        if "_date" in cols:
            info["dates"] = con.execute(
                f"SELECT count(DISTINCT _date) FROM {scan}").fetchone()[0]
        if name == "_dead_letters":
            info["by_reason"] = dict(con.execute(
                f"SELECT reason, count(*) FROM {scan} GROUP BY reason").fetchall())
        out[name] = info
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
