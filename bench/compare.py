#!/usr/bin/env python3
"""Side-by-side benchmark: xdr-ingest vs DuckDB doing the same job on the same files.
Run through bench/compare.sh, which builds the binary and the DuckDB venv.

For each form (storage-export lines, Event Hub bodies), alternating the tools, `runs` times:
xdr-ingest into a fresh local lake, DuckDB (bench/duckdb_job.py) into a fresh directory. Each run
is measured with GNU time (user+sys of the whole process tree, peak RSS of the largest process).
Reports medians and the xdr-ingest / DuckDB ratios, and fails if the two disagree on rows per table.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (stdout, wall s, cpu s, peak RSS MB)."""
    tf = os.path.join(ARGS.out, "time.txt")
    p = subprocess.run(["/usr/bin/time", "-o", tf, "-f", "%e %U %S %M"] + cmd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    wall, user, sys_, rss = open(tf).read().split()[-4:]
    return p.stdout, float(wall), float(user) + float(sys_), int(rss) / 1024


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            total += os.path.getsize(os.path.join(d, f))
    return total


def files_of(form_dir):
    out = []
    for d, _, fs in os.walk(form_dir):
        out += [os.path.join(d, f) for f in fs if f.endswith((".json", ".jsonl"))]
    return sorted(out)


def main():
    data = os.path.join(ARGS.out, "data")
    manifest_path = os.path.join(data, "_manifest.json")
    records = int(ARGS.mb * 1_000_000 / 2900)
    if not os.path.exists(manifest_path) or json.load(open(manifest_path)).get("seed") != ARGS.seed \
            or ARGS.regenerate:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([ARGS.bin, "generate", "--out", data, "--records", str(records), "--corrupt",
                        "0.001", "--seed", str(ARGS.seed), "--date", "2026-11-26"], check=True,
                       stdout=subprocess.DEVNULL)
    manifest = json.load(open(manifest_path))
    results = {}
    for form in ("storage", "eventhub"):
        exp = manifest[form]
        inputs = files_of(os.path.join(data, form))
        mb = sum(os.path.getsize(f) for f in inputs) / 1e6
        runs = {"xdr-ingest": [], "duckdb": []}
        counts = {}
        for i in range(ARGS.runs):
            order = ["xdr-ingest", "duckdb"] if i % 2 == 0 else ["duckdb", "xdr-ingest"]
            for tool in order:
                dest = os.path.join(ARGS.out, f"out-{tool}-{form}")
                shutil.rmtree(dest, ignore_errors=True)
                if tool == "xdr-ingest":
                    out, wall, cpu, rss = timed([ARGS.bin, "ingest", "--json", "--lake", dest,
                                                 os.path.join(data, form)])
                    summary = json.loads(out)
                    counts[tool] = {k: v for k, v in summary["tables"].items() if v}
                else:
                    out, wall, cpu, rss = timed([ARGS.python, os.path.join(HERE, "duckdb_job.py"),
                                                 form, dest] + inputs)
                    counts[tool] = {k: v for k, v in json.loads(out).items() if not k.startswith("_")}
                runs[tool].append({"wall": wall, "cpu": cpu, "rss": rss, "bytes": du(dest)})
        if counts["xdr-ingest"] != counts["duckdb"] or counts["duckdb"] != exp["typed_rows"]:
            sys.exit(f"{form}: the tools disagree on rows per table:\n"
                     f"xdr-ingest {counts['xdr-ingest']}\nduckdb     {counts['duckdb']}\n"
                     f"expected   {exp['typed_rows']}")
        results[form] = {"mb": mb, "records": exp["records"], "runs": runs}

    med = lambda xs: statistics.median(xs)
    print(f"\n{ARGS.runs} run(s) per tool and form, medians; {os.cpu_count()} CPUs; "
          f"binary {os.path.relpath(ARGS.bin, ROOT)}")
    print(f"{'form':<9} {'tool':<11} {'MB':>7} {'records':>9} {'rec/CPU-s':>10} {'MB/CPU-s':>9} "
          f"{'wall s':>7} {'CPU s':>7} {'peak RSS MB':>11} {'output MB':>9}")
    report = {}
    for form, r in results.items():
        report[form] = {}
        for tool, rs in r["runs"].items():
            cpu = med([x["cpu"] for x in rs]) or 1e-9
            row = {"records_per_cpu_s": r["records"] / cpu, "mb_per_cpu_s": r["mb"] / cpu,
                   "wall_s": med([x["wall"] for x in rs]), "cpu_s": cpu,
                   "peak_rss_mb": med([x["rss"] for x in rs]),
                   "output_mb": med([x["bytes"] for x in rs]) / 1e6}
            report[form][tool] = row
            print(f"{form:<9} {tool:<11} {r['mb']:>7.1f} {r['records']:>9} "
                  f"{row['records_per_cpu_s']:>10.0f} {row['mb_per_cpu_s']:>9.1f} {row['wall_s']:>7.2f} "
                  f"{row['cpu_s']:>7.2f} {row['peak_rss_mb']:>11.0f} {row['output_mb']:>9.1f}")
        x, d = report[form]["xdr-ingest"], report[form]["duckdb"]
        print(f"{form:<9} {'ratio':<11} records/CPU-s xdr-ingest/DuckDB = "
              f"{x['records_per_cpu_s'] / d['records_per_cpu_s']:.2f}x, peak RSS "
              f"{x['peak_rss_mb'] / d['peak_rss_mb']:.2f}x")
    print("rows per table: identical in both tools and as the generator expects")
    with open(os.path.join(ARGS.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mb", type=float, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--regenerate", action="store_true")
    ARGS = ap.parse_args()
    ARGS.bin = os.path.abspath(ARGS.bin)
    os.makedirs(ARGS.out, exist_ok=True)
    main()
