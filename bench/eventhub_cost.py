#!/usr/bin/env python3
"""Event Hub cost per day: `xdr-ingest serve` fed in real time as the Functions host would, lake on Azurite.

Measures: what one day of Defender's Event Hub stream at --gb-per-day costs in storage requests
(counted by class from Azurite's access log), compute (CPU seconds of the serve processes, and
separately the wall-clock seconds during which an invocation was active, as Flex Consumption
bills), and executions; also invocations, latency from an event's arrival to the answer of the
invocation that carried it (durable and queryable from then on), peak memory, failures, and
whether the rows in the lake equal the records sent.

Run:  python3 bench/eventhub_cost.py [--gb-per-day 100] [--partitions 4] [--instances 1]
          [--seconds 120] [--event-kb KB] [--max-event-batch-size N] [--min-event-batch-size N]
          [--max-wait-time hh:mm:ss] [--env XDR_COMMIT_LINGER_MS=50]... [--data DIR] [--keep] [--json]
      (--bin, else $XDR_BENCH_BIN, else target/release/xdr-ingest, else target/debug/xdr-ingest)

Numbers: counts in the run are scaled to a day by 86400 / --seconds (the arrival window; the
drain after it is counted in the run). Prices: write and list requests $0.0715 per 10,000, reads
$0.0057 per 10,000, deletes free, compute $0.000052 per second (2048 MB x $0.000026 per GB-s),
executions $0.40 per million. "total (CPU)" prices compute by CPU seconds, "total (active)" by
active instance seconds. The emulated host: each partition receives events at a steady byte rate;
it dispatches once minEventBatchSize events are there (or maxWaitTime after the last dispatch
returned, if any are there), at most maxEventBatchSize per invocation, one invocation per
partition at a time, and resends a failed batch after 5 s. After the arrival window the rest is
sent at once. The client runs on the same machine and takes CPU from the server.
"""
import argparse, base64, bisect, glob, hashlib, hmac, json, os, random, re, shutil, signal
import socket, subprocess, sys, tempfile, threading, time, urllib.parse, uuid
import http.client
from email.utils import formatdate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
NAMESPACE, HUB = "bench.servicebus.windows.net", "defender"
PRICE = {"write": 0.0715 / 1e4, "list": 0.0715 / 1e4, "read": 0.0057 / 1e4, "delete": 0.0,
         "other": 0.0, "second": 0.000052, "execution": 0.40 / 1e6}
BYTES_PER_RECORD = 2854  # realistic mix of `generate` (the committed sample: 1,141,568 B / 400)
RETRY_S = 5.0
procs = []  # every process we started: killed with SIGKILL at exit


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hms(s):
    h, m, sec = s.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def host_defaults():
    """Event Hub batching of /work/main/host.json (maxWaitTime: the extension's default, 60 s)."""
    with open(os.path.join(ROOT, "host.json")) as f:
        eh = json.load(f).get("extensions", {}).get("eventHubs", {})
    return (eh.get("maxEventBatchSize", 100), eh.get("minEventBatchSize", 1),
            eh.get("maxWaitTime", "00:01:00"))


def parse_args():
    mx, mn, wait = host_defaults()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.environ.get("XDR_BENCH_BIN") or next(
        (b for b in (os.path.join(ROOT, "target", d, "xdr-ingest") for d in ("release", "debug"))
         if os.path.exists(b)), os.path.join(ROOT, "target/debug/xdr-ingest")))
    p.add_argument("--gb-per-day", type=float, default=100.0)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--event-kb", type=float, help="regroup records into bodies of this mean size")
    p.add_argument("--max-event-batch-size", type=int, default=mx)
    p.add_argument("--min-event-batch-size", type=int, default=mn)
    p.add_argument("--max-wait-time", default=wait, help="hh:mm:ss")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for serve")
    p.add_argument("--data", help="reuse a dataset dir (eventhub/*.jsonl and _manifest.json)")
    p.add_argument("--corrupt", type=float, default=0.002, help="corrupt share of generated data")
    p.add_argument("--keep", action="store_true", help="keep temp dirs and logs")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    a.max_wait_s = hms(a.max_wait_time)
    assert a.instances >= 1 and a.partitions >= a.instances, "need partitions >= instances >= 1"
    return a


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- dataset

def generate(binary, out, records, corrupt):
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([binary, "generate", "--out", out, "--records", str(records), "--form", "eventhub",
                    "--corrupt", str(corrupt), "--seed", "7", "--date", "2026-11-26"],
                   check=True, stdout=subprocess.DEVNULL)


def record_spans(body):
    """Raw text of each record of a `{"records":[...]}` body, or None if it is not one."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(obj, dict) and list(obj) == ["records"] and isinstance(obj["records"], list)):
        return None
    dec, i, out = json.JSONDecoder(), body.index("[") + 1, []
    while True:
        while body[i] in " \t\r\n,":
            i += 1
        if body[i] == "]":
            return out
        _, j = dec.raw_decode(body, i)
        out.append(body[i:j])
        i = j


def load_events(data_dir, event_kb):
    """[(body, records it counts for)] in file order; regrouped to ~event_kb if asked."""
    bodies = []
    for f in sorted(glob.glob(os.path.join(data_dir, "eventhub", "**", "*.json*"), recursive=True)):
        with open(f, encoding="utf-8", errors="surrogateescape") as fh:
            bodies += [l.rstrip("\r\n") for l in fh if l.strip()]
    parsed = [(b, record_spans(b)) for b in bodies]
    if not event_kb:
        return [(b, len(r) if r is not None else 1) for b, r in parsed]
    # regroup: the same records in the same order, counts per body uniform in 1..2m-1 (mean m)
    sizes = [len(x) for _, r in parsed if r for x in r]
    m = max(1, round(event_kb * 1000 / (sum(sizes) / max(1, len(sizes)))))
    rng, out, cur, want = random.Random(7), [], [], None
    def flush():
        if cur:
            out.append(('{"records":[' + ",".join(cur) + "]}", len(cur)))
            cur.clear()
    for b, r in parsed:
        if r is None:  # a corrupt body stays as it is, in place (it counts as one record)
            flush()
            out.append((b, 1))
            continue
        for x in r:
            want = want or rng.randint(1, 2 * m - 1)
            cur.append(x)
            if len(cur) >= want:
                flush()
                want = None
    flush()
    return out


def schedule(events, a):
    """Deal events in order to the partition whose next arrival is earliest; steady bytes/s each.
    Returns per partition [(arrival s, body, records)] and whether the dataset ran out."""
    rate = a.gb_per_day * 1e9 / 86400 / a.partitions
    clock, parts = [0.0] * a.partitions, [[] for _ in range(a.partitions)]
    for body, n in events:
        p = min(range(a.partitions), key=lambda i: clock[i])
        t = clock[p] + len(body.encode("utf-8", "surrogateescape")) / rate
        if t > a.seconds:
            return parts, False
        clock[p] = t
        parts[p].append((t, body, n))
    return parts, True


# ---------------------------------------------------------------- Azurite

def signed_put(port, resource, query):
    """A SharedKey-signed empty PUT (tests/common/azurite.rs's signing)."""
    date = formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
    canon = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items())) + f"/{ACCOUNT}/{ACCOUNT}/{resource}"
    canon += "".join(f"\n{k}:{v}" for k, v in query)
    sts = "PUT" + "\n" * 12 + canon  # verb and 12 empty standard headers (Content-Length 0 is "")
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), sts.encode(), hashlib.sha256).digest()).decode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("PUT", f"/{ACCOUNT}/{resource}?" + "&".join(f"{k}={v}" for k, v in query), body=b"",
              headers={**headers, "Content-Length": "0", "Authorization": f"SharedKey {ACCOUNT}:{sig}"})
    status = c.getresponse().status
    c.close()
    return status


def start_azurite(tmp):
    binary = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(binary):
        subprocess.run(["npm", "ci"], cwd=ROOT, check=True)
    port, logf = free_port(), os.path.join(tmp, "azurite.log")
    loc = os.path.join(tmp, "azurite")
    os.makedirs(loc)
    # no --silent: Azurite prints one access-log line per request on stdout
    p = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", loc,
                          "--skipApiVersionCheck", "--loose"],
                         stdout=open(logf, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(p)
    wait_port(port, p, "azurite")
    status = signed_put(port, "lake", [("restype", "container")])
    assert status in (201, 409), f"container create: HTTP {status}"
    return port, logf


def wait_port(port, p, what, path=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, f"{what} exited with {p.returncode}"
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            if path:
                c.request("GET", path)
                c.getresponse().read()
            else:
                c.connect()
            c.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on port {port}")


LINE = re.compile(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3})')


def classify(method, target):
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    if "list" in q.get("comp", []) or (method == "GET" and q.get("resource") == ["filesystem"]):
        return "list"
    return {"PUT": "write", "POST": "write", "PATCH": "write", "GET": "read", "HEAD": "read",
            "DELETE": "delete"}.get(method, "other")


def count_requests(logf, offset):
    """Requests by class after byte `offset` of the access log, and a breakdown by kind."""
    counts, kinds = dict.fromkeys(("write", "list", "read", "delete", "other"), 0), {}
    with open(logf, "rb") as f:
        f.seek(offset)
        for line in f.read().decode("utf-8", "replace").splitlines():
            m = LINE.search(line)
            if not m:
                continue
            method, target, status = m.groups()
            cls = classify(method, target)
            counts[cls] += 1
            comp = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("comp", [""])[0]
            kind = f"{method}{' comp=' + comp if comp else ''} {status}"
            kinds[kind] = kinds.get(kind, 0) + 1
    return counts, kinds


# ---------------------------------------------------------------- serve and the emulated host

def lake_options(az_port):
    return (f"azure_storage_account_name={ACCOUNT};azure_storage_account_key={KEY};"
            f"azure_storage_endpoint=http://127.0.0.1:{az_port}/{ACCOUNT};azure_allow_http=true")


def start_serve(a, tmp, az_port, i):
    port = free_port()
    env = {**os.environ, "FUNCTIONS_CUSTOMHANDLER_PORT": str(port), "XDR_LAKE": "az://lake/defender",
           "XDR_LAKE_OPTIONS": lake_options(az_port), "XDR_LOG": "warn", "RUST_LOG": "warn"}
    env.update(kv.split("=", 1) for kv in a.env)  # passed through as given, known or not
    p = subprocess.Popen([a.bin, "serve"], env=env, stdin=subprocess.DEVNULL,
                         stdout=open(os.path.join(tmp, f"serve-{i}.log"), "wb"), stderr=subprocess.STDOUT)
    procs.append(p)
    wait_port(port, p, f"serve {i}", path="/")
    return p, port


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / 100.0  # utime + stime, USER_HZ 100


def proc_hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def utc(ts, zone=""):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}{zone}"


def request_of(partition, batch, wall0):
    """The host's Event Hub invocation, as benches/handler_overhead.rs `request_of` builds it."""
    n, seqs = len(batch), [seq for seq, _, _, _ in batch]
    enc = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return enc({
        "Data": {"events": "[" + ",".join(enc(body) for _, _, body, _ in batch) + "]"},
        "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": NAMESPACE, "EventHubName": HUB,
                                 "ConsumerGroup": "xdr-ingest", "PartitionId": str(partition),
                                 "IsCheckpointingAfterInvocation": True},
            "PartitionKeyArray": enc([None] * n),
            "OffsetArray": enc([str(s * 4096) for s in seqs]),
            "SequenceNumberArray": enc(seqs),
            "EnqueuedTimeUtcArray": enc([utc(wall0 + t) for _, t, _, _ in batch]),
            "PropertiesArray": enc([{}] * n),
            "sys": {"MethodName": "EventHubIngest", "UtcNow": utc(time.time(), "Z"),
                    "RandGuid": str(uuid.uuid4())},
        }}).encode("utf-8", "surrogateescape")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = self.failures = self.events = self.records = 0
        self.latencies, self.intervals, self.errors = [], {}, []


def play_partition(p, arrivals, port, inst, a, t0, wall0, st):
    """One partition: the host's batching loop, one invocation in flight at a time."""
    times = [t for t, _, _ in arrivals]
    nxt, last_return = 0, 0.0  # next event to send; when the previous dispatch returned (play s)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    while nxt < len(arrivals):
        now = time.monotonic() - t0
        arrived = bisect.bisect_right(times, now)
        avail, all_in = arrived - nxt, arrived == len(times)
        waited = now - last_return >= a.max_wait_s
        if not (avail >= a.min_event_batch_size or (avail >= 1 and (waited or all_in))):
            wake = [times[arrived]] if not all_in else []  # the next arrival
            if avail >= 1:
                wake.append(last_return + a.max_wait_s)  # or the end of maxWaitTime
            time.sleep(max(0.001, min(wake) - now))
            continue
        take = min(avail, a.max_event_batch_size)
        batch = [(nxt + k, *arrivals[nxt + k]) for k in range(take)]  # (seq, arrival, body, records)
        req = request_of(p, batch, wall0)
        while True:  # the host retries the same batch until it succeeds
            start = time.monotonic() - t0
            ok, why = False, ""
            try:
                conn.request("POST", "/EventHubIngest", body=req, headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "x-azure-functions-invocationid": str(uuid.uuid4())})
                r = conn.getresponse()
                text = r.read()
                try:
                    is_obj = isinstance(json.loads(text), dict)
                except ValueError:
                    is_obj = False
                ok, why = 200 <= r.status < 300 and is_obj, f"HTTP {r.status}: {text[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                why = repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            end = time.monotonic() - t0
            with st.lock:
                st.attempts += 1
                st.intervals.setdefault(inst, []).append((start, end))
                if not ok:
                    st.failures += 1
                    st.errors.append(f"partition {p}: {why}")
            if ok:
                break
            time.sleep(RETRY_S)
        last_return = time.monotonic() - t0
        with st.lock:
            st.events += take
            st.records += sum(n for _, _, _, n in batch)
            st.latencies += [end - t for _, t, _, _ in batch]
        nxt += take
    conn.close()


def union_seconds(intervals):
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            total += (cur_e - cur_s) if cur_e is not None else 0.0
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + ((cur_e - cur_s) if cur_e is not None else 0.0)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# ---------------------------------------------------------------- correctness

def lake_check(a, az_port, manifest, records_sent, whole):
    """Rows in the lake (typed + untyped + dead letters) against the records sent, via `tables`."""
    opts = [x for kv in lake_options(az_port).split(";") for x in ("--storage-option", kv)]
    r = subprocess.run([a.bin, "tables", "--lake", "az://lake/defender", *opts, "--json"],
                       capture_output=True, text=True, env={**os.environ, "XDR_LOG": "error"})
    if r.returncode != 0:
        return {"status": "UNKNOWN", "detail": f"tables failed ({r.returncode}): {r.stderr.strip()[:300]}"}
    rows, dead = {}, {}
    for t in json.loads(r.stdout)["tables"]:
        name = t["name"].removeprefix("_untyped/")
        if name == "_dead_letters":
            dead = t.get("by_reason", {})
        elif not name.startswith("_"):
            rows[name] = rows.get(name, 0) + t["rows"]
    landed = sum(rows.values()) + sum(dead.values())
    res = {"records_sent": records_sent, "rows_landed": landed, "typed_rows": sum(rows.values()),
           "dead_letters": sum(dead.values()), "status": "OK" if landed == records_sent else "MISMATCH"}
    eh = (manifest or {}).get("eventhub")
    if whole and eh:  # the whole dataset was sent: per table and per reason against the manifest
        diffs = [f"{k}: lake {rows.get(k, 0)} manifest {v}" for k, v in eh["typed_rows"].items() if rows.get(k, 0) != v]
        diffs += [f"{k}: lake {v} manifest 0" for k, v in rows.items() if k not in eh["typed_rows"]]
        diffs += [f"dead {k}: lake {dead.get(k, 0)} manifest {v}" for k, v in eh["dead_letters"].items()
                  if dead.get(k, 0) != v]
        res["manifest"] = "OK" if not diffs and eh["records"] == records_sent else "MISMATCH"
        if diffs:
            res["manifest_diffs"], res["status"] = diffs[:20], "MISMATCH"
    else:
        res["manifest"] = "not compared (only part of the dataset was sent)"
    return res


# ---------------------------------------------------------------- main

def run(a, tmp):
    for kv in a.env:
        assert "=" in kv, f"--env {kv}: expected K=V"
    assert os.path.exists(a.bin), f"{a.bin} does not exist (--bin / XDR_BENCH_BIN)"
    t_gen = time.monotonic()
    data = a.data
    if not data:  # enough records for the window, then exactly the ones that arrive in it
        data = os.path.join(tmp, "data")
        records = int(a.gb_per_day * 1e9 / 86400 * a.seconds / BYTES_PER_RECORD * 1.15) + 50
        while True:
            generate(a.bin, data, records, a.corrupt)
            parts, ran_out = schedule(load_events(data, a.event_kb), a)
            if not ran_out:
                break
            records = int(records * 1.5)
        fits = sum(n for part in parts for _, _, n in part)
        generate(a.bin, data, max(1, fits), a.corrupt)  # same seed: a prefix of the first dataset
    manifest = None
    if os.path.exists(os.path.join(data, "_manifest.json")):
        with open(os.path.join(data, "_manifest.json")) as f:
            manifest = json.load(f)
    events = load_events(data, a.event_kb)
    parts, whole = schedule(events, a)
    sent_events = sum(map(len, parts))
    play_s = a.seconds
    if whole and a.data:  # a given dataset that is too small: the window is as long as it lasts
        play_s = max((p[-1][0] for p in parts if p), default=a.seconds)
        log(f"note: the dataset ran out at {play_s:.0f} s of {a.seconds:g} s; per day is scaled by that")
    log(f"dataset: {len(events)} events, {sent_events} arrive in {play_s:.0f} s ({time.monotonic() - t_gen:.1f} s to prepare)")

    az_port, logf = start_azurite(tmp)
    servers = [start_serve(a, tmp, az_port, i) for i in range(a.instances)]
    time.sleep(0.3)
    offset = os.path.getsize(logf)  # the container create and anything before the play are excluded
    cpu0 = [proc_cpu(p.pid) for p, _ in servers]
    st, t0, wall0 = Stats(), time.monotonic(), time.time()
    owner = [p * a.instances // a.partitions for p in range(a.partitions)]
    threads = [threading.Thread(target=play_partition, daemon=True,
                                args=(p, parts[p], servers[owner[p]][1], owner[p], a, t0, wall0, st))
               for p in range(a.partitions) if parts[p]]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    cpu = sum(proc_cpu(p.pid) - c for (p, _), c in zip(servers, cpu0))
    hwm = [proc_hwm_mb(p.pid) for p, _ in servers]
    for p, _ in servers:  # nothing of serve's runs after this point
        p.kill()
        p.wait()
    time.sleep(0.5)
    counts, kinds = count_requests(logf, offset)
    check = lake_check(a, az_port, manifest, st.records, whole)

    day = 86400 / play_s
    inv = st.attempts
    active = [union_seconds(st.intervals.get(i, [])) for i in range(a.instances)]
    req_cost = {k: counts[k] * day * PRICE[k] for k in counts}
    c_cpu, c_act, c_exec = cpu * day * PRICE["second"], sum(active) * day * PRICE["second"], inv * day * PRICE["execution"]
    storage = sum(req_cost.values())
    sizes = [len(b.encode("utf-8", "surrogateescape")) for part in parts for _, b, _ in part]
    return {
        "settings": {"gb_per_day": a.gb_per_day, "partitions": a.partitions, "instances": a.instances,
                     "seconds": play_s, "max_event_batch_size": a.max_event_batch_size,
                     "min_event_batch_size": a.min_event_batch_size, "max_wait_time_s": a.max_wait_s,
                     "mean_event_kb": sum(sizes) / max(1, len(sizes)) / 1000, "env": a.env, "bin": a.bin},
        "sent": {"events": st.events, "records": st.records, "mb": sum(sizes) / 1e6, "wall_s": wall},
        "invocations": {"total": inv, "failed": st.failures,
                        "per_partition_per_minute": inv / a.partitions / (play_s / 60),
                        "mean_events": st.events / max(1, inv - st.failures), "errors": st.errors[:5]},
        "requests": {**counts, "per_invocation": {k: v / max(1, inv) for k, v in counts.items()},
                     "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))},
        "requests_per_day": {k: v * day for k, v in counts.items()},
        "compute": {"cpu_s": cpu, "active_s_per_instance": active, "peak_mb_per_instance": hwm},
        "latency_s": {"p50": pct(st.latencies, 0.5), "p95": pct(st.latencies, 0.95),
                      "max": max(st.latencies, default=float("nan"))},
        "usd_per_day": {"write": req_cost["write"], "list": req_cost["list"], "read": req_cost["read"],
                        "requests": storage, "compute_cpu": c_cpu, "compute_active": c_act,
                        "executions": c_exec, "total_cpu": storage + c_cpu + c_exec,
                        "total_active": storage + c_act + c_exec},
        "check": check,
    }


def render(r):
    s, n, i, q, d, u, c = (r[k] for k in ("settings", "sent", "invocations", "requests",
                                          "requests_per_day", "usd_per_day", "check"))
    out = [f"Event Hub cost: {s['gb_per_day']:g} GB/day, {s['partitions']} partitions on {s['instances']} "
           f"instance(s), {s['seconds']:.0f} s played ({n['wall_s']:.0f} s wall), batches {s['min_event_batch_size']}-"
           f"{s['max_event_batch_size']} events, maxWait {s['max_wait_time_s']:g} s, events {s['mean_event_kb']:.1f} KB",
           f"  env: {' '.join(s['env']) or '-'}",
           f"sent        {n['events']:,} events, {n['records']:,} records, {n['mb']:.1f} MB",
           f"invocations {i['total']:,} ({i['failed']} failed), {i['per_partition_per_minute']:.1f} per partition-minute, "
           f"{i['mean_events']:.1f} events each"]
    out += [f"  failure: {e}" for e in i["errors"]]
    out.append(f"{'storage requests':<16}{'run':>9}{'per inv.':>10}{'per day':>14}{'$/day':>10}")
    for k in ("write", "list", "read", "delete", "other"):
        out.append(f"  {k:<14}{q[k]:>9,}{q['per_invocation'][k]:>10.2f}{d[k]:>14,.0f}{u.get(k, 0.0):>10.2f}")
    out.append("  by kind: " + ", ".join(f"{k} x{v}" for k, v in list(q["kinds"].items())[:8]))
    cm = r["compute"]
    out += [f"compute     {cm['cpu_s']:.1f} CPU s; active s per instance "
            + ", ".join(f"{x:.1f}" for x in cm["active_s_per_instance"])
            + "; peak RSS " + ", ".join(f"{x:.0f} MB" for x in cm["peak_mb_per_instance"]),
            f"latency     arrival -> durable: p50 {r['latency_s']['p50']:.2f} s, p95 {r['latency_s']['p95']:.2f} s, "
            f"max {r['latency_s']['max']:.2f} s",
            "$/day       " + f"requests {u['requests']:.2f} | compute: CPU {u['compute_cpu']:.2f}, active "
            f"{u['compute_active']:.2f} | executions {u['executions']:.2f}",
            f"            total {u['total_cpu']:.2f} (CPU-priced) / {u['total_active']:.2f} (active-priced)",
            f"check       {c['status']}: " + (c.get("detail") or
                                             f"records sent {c['records_sent']:,}, rows landed {c['rows_landed']:,} "
                                             f"(typed {c['typed_rows']:,} + dead letters {c['dead_letters']:,}); "
                                             f"manifest: {c['manifest']}")]
    out += [f"  {x}" for x in c.get("manifest_diffs", [])]
    return "\n".join(out)


def main():
    a = parse_args()
    tmp = tempfile.mkdtemp(prefix="eventhub-cost-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    try:
        r = run(a, tmp)
        print(json.dumps(r) if a.json else render(r))
        return 0 if r["check"]["status"] == "OK" and not r["invocations"]["failed"] else 1
    finally:
        for p in procs:  # Azurite does not exit on SIGTERM reliably: SIGKILL everything we started
            if p.poll() is None:
                p.kill()
                p.wait()
        if a.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
