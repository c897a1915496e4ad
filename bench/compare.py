#!/usr/bin/env python3
"""Side-by-side benchmark: xdr-ingest vs DuckDB doing the same job on the same files.
Run through bench/compare.sh, which builds the binary and the DuckDB venv.

Two DuckDB jobs: `duckdb` (bench/duckdb_job.py, the plain formulation) and `duckdb-fast`
(bench/duckdb_fast.py, the cheapest formulation we found; its docstring says how it was searched).
For each form (storage-export lines, Event Hub bodies), `runs` times, the three tools in an order
that rotates every run: xdr-ingest into a fresh local lake, each DuckDB job into a fresh directory.
Each run is measured with GNU time (user+sys of the whole process tree, peak RSS of the largest
process). Reports medians and the xdr-ingest / DuckDB ratios (against each job), and fails if the
tools disagree with each other or the generator on rows per table (the registry's tables, and the
untyped tables the generator's manifest expects).
"""
import argparse
import json
import os
import re
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
    registry = json.load(open(os.path.join(ROOT, "registry", "tables.json")))
    tools = {"xdr-ingest": None, "duckdb": "duckdb_job.py", "duckdb-fast": "duckdb_fast.py"}
    results = {}
    for form in ("storage", "eventhub"):
        exp = manifest[form]
        # rows per table compared: the registry's tables, and the untyped ones (categories the
        # registry does not know) when the generator expects them (older binaries dead-letter
        # those records instead)
        compared = {t["name"] for t in registry["tables"]} | set(exp["typed_rows"])
        inputs = files_of(os.path.join(data, form))
        mb = sum(os.path.getsize(f) for f in inputs) / 1e6
        runs = {tool: [] for tool in tools}
        counts = {}
        for i in range(ARGS.runs):
            names = list(tools)
            order = names[i % len(names):] + names[:i % len(names)]
            for tool in order:
                dest = os.path.join(ARGS.out, f"out-{tool}-{form}")
                shutil.rmtree(dest, ignore_errors=True)
                if tool == "xdr-ingest":
                    out, wall, cpu, rss = timed([ARGS.bin, "ingest", "--json", "--lake", dest,
                                                 os.path.join(data, form)])
                    rows = json.loads(out)["tables"]
                else:
                    out, wall, cpu, rss = timed([ARGS.python, os.path.join(HERE, tools[tool]),
                                                 form, dest] + inputs)
                    rows = json.loads(out)
                counts[tool] = {k: v for k, v in rows.items() if v and k in compared}
                runs[tool].append({"wall": wall, "cpu": cpu, "rss": rss, "bytes": du(dest)})
        expected = {k: v for k, v in exp["typed_rows"].items() if v and k in compared}
        if any(c != expected for c in counts.values()):
            sys.exit(f"{form}: the tools disagree on rows per table:\n"
                     + "".join(f"{tool:<11} {c}\n" for tool, c in counts.items())
                     + f"{'expected':<11} {expected}")
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
        x = report[form]["xdr-ingest"]
        for job in ("duckdb", "duckdb-fast"):
            d = report[form][job]
            print(f"{form:<9} {'ratio':<11} records/CPU-s xdr-ingest/{job} = "
                  f"{x['records_per_cpu_s'] / d['records_per_cpu_s']:.2f}x, records/wall-s "
                  f"{d['wall_s'] / x['wall_s']:.2f}x, peak RSS "
                  f"{x['peak_rss_mb'] / d['peak_rss_mb']:.2f}x")
        if ARGS.floor:
            f = floor(os.path.join(data, form))
            report[form]["floor"] = f
            print(f"{form:<9} {'floor':<11} parse {f['parse_cpu_s']:.2f} + compress "
                  f"{f['compress_cpu_s']:.2f} CPU-s = {f['records_per_cpu_s']:.0f} records/CPU-s; "
                  f"xdr-ingest costs {x['cpu_s'] / f['cpu_s']:.1f}x the floor, duckdb-fast "
                  f"{report[form]['duckdb-fast']['cpu_s'] / f['cpu_s']:.1f}x")
    print("rows per table: identical in all three tools and as the generator expects")
    with open(os.path.join(ARGS.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)


def floor(form_dir):
    """The physical floor on these files (benches/floor.rs: a parse-only and a compress-only
    pass, CPU of its own thread, so cargo's own time does not count)."""
    p = subprocess.run(["cargo", "bench", "--quiet", "--bench", "floor", "--", "--dir", form_dir],
                       cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"floor failed:\n{p.stderr[-3000:]}")
    line = next(l for l in p.stdout.splitlines() if " parse " in l and "floor" in l)
    nums = [float(x) for x in re.findall(r"([0-9.]+) CPU-s", line)]
    recs = float(re.search(r"= ([0-9.]+) records/CPU-s", line).group(1))
    return {"parse_cpu_s": nums[0], "compress_cpu_s": nums[1], "cpu_s": nums[2],
            "records_per_cpu_s": recs}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mb", type=float, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="also measure the physical floor (benches/floor.rs, built by cargo)")
    ARGS = ap.parse_args()
    ARGS.bin = os.path.abspath(ARGS.bin)
    os.makedirs(ARGS.out, exist_ok=True)
    main()
