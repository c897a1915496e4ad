#!/usr/bin/env python3
"""Event Hub cost per day: `xdr-ingest serve` fed in real time as the Functions host would, lake on Azurite.

Measures: what a day of Defender's Event Hub stream at --gb-per-day costs in storage requests
(counted by class from Azurite's access log), in compute (CPU seconds of the serve processes; and
separately the wall-clock seconds in which an instance had an invocation active, which is what
Flex Consumption bills) and in executions. Also: invocations, latency from an event's arrival to
the answer of the invocation that carried it (from then on it is durable and queryable), peak
memory, failures, and whether the rows in the lake equal the records sent.

Run:  python3 bench/eventhub_cost.py [--gb-per-day 100] [--partitions 4] [--instances 1]
          [--seconds 120] [--event-kb KB] [--max-event-batch-size N] [--min-event-batch-size N]
          [--max-wait-time hh:mm:ss] [--env XDR_COMMIT_LINGER_MS=50]... [--data DIR] [--keep] [--json]
      --bin, else $XDR_BENCH_BIN, else target/release/xdr-ingest, else target/debug/xdr-ingest.
      Exit code 0 only if the lake check is OK and no invocation failed.

Numbers: counts of the run are scaled to a day by 86400 / --seconds (the arrival window; what the
drain after it costs is included). Prices: write and list requests $0.0715 per 10,000, reads
$0.0057 per 10,000, deletes free; compute $0.000052 per second (2048 MB x $0.000026 per GB-s);
executions (every attempt) $0.40 per million. "total (CPU)" prices compute by CPU seconds,
"total (active)" by active instance seconds. The emulated host: each partition receives events at
a steady byte rate; it dispatches once minEventBatchSize events are there (or, with at least one
there, maxWaitTime after its previous dispatch returned), at most maxEventBatchSize per invocation,
never two invocations of a partition at once, and resends a failed batch after 5 s. After the
arrival window what is left is sent at once. The first invocations create the tables, which a
short run scales up with the rest. The client runs on the same machine and takes CPU from serve.
"""
import argparse, base64, bisect, glob, hashlib, hmac, http.client, json, os, random, re, shutil
import signal, socket, subprocess, sys, tempfile, threading, time, urllib.parse, types, uuid
from email.utils import formatdate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
NAMESPACE, HUB = "bench.servicebus.windows.net", "defender"
CLASSES = ("write", "list", "read", "delete", "other")
PRICE = {"write": 0.0715e-4, "list": 0.0715e-4, "read": 0.0057e-4, "delete": 0.0, "other": 0.0,
         "second": 0.000052, "execution": 0.40e-6}
BYTES_PER_RECORD = 2854  # `generate`'s realistic mix (the committed sample: 1,141,568 B / 400 records)
RETRY_S = 5.0  # the retry policy's minimumInterval in EventHubIngest/function.json
procs = []  # every process we start; all get SIGKILL at exit

def log(msg):
    print(msg, file=sys.stderr, flush=True)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def parse_args():
    with open(os.path.join(ROOT, "host.json")) as f:  # the host's batching knobs are the defaults
        eh = json.load(f).get("extensions", {}).get("eventHubs", {})
    builds = [os.path.join(ROOT, "target", d, "xdr-ingest") for d in ("release", "debug")]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.environ.get("XDR_BENCH_BIN")
                   or next((b for b in builds if os.path.exists(b)), builds[1]))
    p.add_argument("--gb-per-day", type=float, default=100.0)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--instances", type=int, default=1, help="serve processes; partitions split evenly")
    p.add_argument("--seconds", type=float, default=120.0, help="arrival window, real time")
    p.add_argument("--event-kb", type=float, help="regroup records into bodies of this mean size")
    p.add_argument("--max-event-batch-size", type=int, default=eh.get("maxEventBatchSize", 100))
    p.add_argument("--min-event-batch-size", type=int, default=eh.get("minEventBatchSize", 1))
    # not in host.json: the extension's default, 60 s (it only matters when minEventBatchSize > 1)
    p.add_argument("--max-wait-time", default=eh.get("maxWaitTime", "00:01:00"), help="hh:mm:ss")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="extra env for serve (repeatable; passed through unchecked)")
    p.add_argument("--max-retries", type=int, default=12,
                   help="resends of one batch before its partition gives up (the host never does)")
    p.add_argument("--data", help="reuse a dataset dir of `generate` (eventhub/*.jsonl, _manifest.json)")
    p.add_argument("--corrupt", type=float, default=0.002, help="corrupt share of generated data")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data, Azurite)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    a = p.parse_args()
    h, m, s = a.max_wait_time.split(":")
    a.max_wait_s = int(h) * 3600 + int(m) * 60 + float(s)
    if not 1 <= a.instances <= a.partitions or any("=" not in kv for kv in a.env):
        p.error("need 1 <= --instances <= --partitions, and --env K=V")
    return a

# ---------------------------------------------------------------- dataset

def generate(a, out, records):
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([a.bin, "generate", "--out", out, "--records", str(records), "--form", "eventhub",
                    "--corrupt", str(a.corrupt), "--seed", "7", "--date", "2026-11-26"],
                   check=True, stdout=subprocess.DEVNULL)

def record_spans(body):
    """The raw text of each record of a `{"records":[...]}` body, or None if it is not one."""
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
    """[(body, records it counts for)] in file order (a body that is not JSON counts as one record,
    as the pipeline counts it); with event_kb the same records regrouped into bodies of that mean size."""
    bodies = []
    for f in sorted(glob.glob(os.path.join(data_dir, "eventhub", "**", "*.json*"), recursive=True)):
        with open(f, encoding="utf-8", errors="surrogateescape") as fh:
            bodies += [l.rstrip("\r\n") for l in fh if l.strip()]
    parsed = [(b, record_spans(b)) for b in bodies]
    if not event_kb:
        return [(b, len(r) if r is not None else 1) for b, r in parsed]
    sizes = [len(x) for _, r in parsed if r for x in r]
    m = max(1, round(event_kb * 1000 * len(sizes) / max(1, sum(sizes))))  # records per body, mean
    rng, out, cur, want = random.Random(7), [], [], 0
    def flush():
        if cur:
            out.append(('{"records":[' + ",".join(cur) + "]}", len(cur)))
            cur.clear()
    for b, r in parsed:
        if r is None:  # a corrupt body stays as it is, in its place
            flush()
            out.append((b, 1))
        for x in r or []:
            want = want or rng.randint(1, 2 * m - 1)  # uniform, mean m, like generate's 1..40
            cur.append(x)
            if len(cur) >= want:
                flush()
                want = 0
    flush()
    return out

def schedule(events, a):
    """Deal the events in order to the partition whose next arrival is earliest, each partition at
    a steady byte rate. Per partition [(arrival s, body, records)], and whether all events fit."""
    rate = a.gb_per_day * 1e9 / 86400 / a.partitions
    clock, parts = [0.0] * a.partitions, [[] for _ in range(a.partitions)]
    for body, n in events:
        p = min(range(a.partitions), key=clock.__getitem__)
        t = clock[p] + len(body.encode("utf-8", "surrogateescape")) / rate
        if t > a.seconds:
            return parts, False
        clock[p] = t
        parts[p].append((t, body, n))
    return parts, True

# ---------------------------------------------------------------- Azurite

def signed_put(port, resource, query):
    """An empty SharedKey-signed PUT, signed as tests/common/azurite.rs signs it."""
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    canon = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items())) + f"/{ACCOUNT}/{ACCOUNT}/{resource}"
    sts = "PUT" + "\n" * 12 + canon + "".join(f"\n{k}:{v}" for k, v in query)  # 12 empty std headers
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), sts.encode(), hashlib.sha256).digest()).decode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("PUT", f"/{ACCOUNT}/{resource}?" + "&".join(f"{k}={v}" for k, v in query), body=b"",
              headers={**headers, "Content-Length": "0", "Authorization": f"SharedKey {ACCOUNT}:{sig}"})
    status = c.getresponse().status
    c.close()
    return status

def wait_http(port, p, what, timeout=30):
    """Until GET / gets any HTTP answer (as the host probes its handler)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited with code {p.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            return c.close()
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer on port {port}")

def start_azurite(tmp):
    binary = os.path.join(ROOT, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(binary):
        subprocess.run(["npm", "ci"], cwd=ROOT, check=True)
    port, logf, loc = free_port(), os.path.join(tmp, "azurite.log"), os.path.join(tmp, "azurite")
    os.makedirs(loc)
    # no --silent: Azurite then prints one access-log line per request on stdout
    procs.append(subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", loc,
         "--skipApiVersionCheck", "--loose"],
        stdout=open(logf, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    wait_http(port, procs[-1], "azurite")
    status = signed_put(port, "lake", [("restype", "container")])
    if status not in (201, 409):
        raise RuntimeError(f"creating the container: HTTP {status}")
    return port, logf

def quiet_size(path, quiet=0.5, limit=5.0):
    """The size of a growing file once it has not grown for `quiet` s (waiting `limit` s at most)."""
    size, since, start = os.path.getsize(path), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - start < limit:
        time.sleep(0.05)
        if os.path.getsize(path) != size:
            size, since = os.path.getsize(path), time.monotonic()
    return size


# 127.0.0.1 - - [04/Dec/2026:21:37:27 +0000] "PUT /devstoreaccount1/lake?restype=container HTTP/1.1" 201 -
LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})')

def count_requests(logf, offset):
    """Requests by price class after byte `offset` of the access log, and counts by kind."""
    counts, kinds = dict.fromkeys(CLASSES, 0), {}
    with open(logf, "rb") as f:
        f.seek(offset)
        for m in LINE.finditer(f.read().decode("utf-8", "replace")):
            method, target, status = m.groups()
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
            comp = q.get("comp", [""])[0]
            if comp == "list" or (method == "GET" and q.get("resource") == ["filesystem"]):
                cls = "list"  # also restype=container&comp=list; comp=list on the account
            else:  # failed writes (409, 412) are billed too
                cls = {"PUT": "write", "POST": "write", "PATCH": "write", "GET": "read",
                       "HEAD": "read", "DELETE": "delete"}.get(method, "other")
            counts[cls] += 1
            kind = f"{method}{' comp=' + comp if comp else ''} {status}"
            kinds[kind] = kinds.get(kind, 0) + 1
    return counts, dict(sorted(kinds.items(), key=lambda kv: -kv[1]))

# ---------------------------------------------------------------- serve and the emulated host

def lake_options(az_port):  # as tests/azure.rs builds XDR_LAKE_OPTIONS
    return (f"azure_storage_account_name={ACCOUNT};azure_storage_account_key={KEY};"
            f"azure_storage_endpoint=http://127.0.0.1:{az_port}/{ACCOUNT};azure_allow_http=true")

def start_serve(a, tmp, az_port, i):
    port = free_port()
    env = {**os.environ, "FUNCTIONS_CUSTOMHANDLER_PORT": str(port), "XDR_LAKE": "az://lake/defender",
           "XDR_LAKE_OPTIONS": lake_options(az_port), "XDR_LOG": "warn", "RUST_LOG": "warn"}
    env.update(kv.split("=", 1) for kv in a.env)
    procs.append(subprocess.Popen([a.bin, "serve"], env=env, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  stdout=open(os.path.join(tmp, f"serve-{i}.log"), "wb")))
    wait_http(port, procs[-1], f"serve {i}")
    return procs[-1], port

def proc_cpu(pid):  # utime + stime of /proc/<pid>/stat (fields 14 and 15), USER_HZ 100
    rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / 100.0

def proc_hwm_mb(pid):  # peak resident memory
    return next(int(l.split()[1]) / 1024 for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))

def utc(ts, zone=""):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}{zone}"

def request_of(partition, batch, wall0):
    """The host's Event Hub invocation, shaped as benches/handler_overhead.rs `request_of` shapes it:
    arrays JSON-encoded inside strings, enqueued times (= arrival) without a zone."""
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
                    "RandGuid": str(uuid.uuid4())}}}).encode("utf-8", "surrogateescape")

def is_object(text):
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False

def play_partition(p, arrivals, port, inst, a, t0, wall0, st):
    """One partition's host loop: batch what has arrived, one invocation in flight at a time."""
    times = [t for t, _, _ in arrivals]
    nxt, last_return = 0, 0.0  # the next event to send; when the previous dispatch returned (play s)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    while nxt < len(arrivals):
        now = time.monotonic() - t0
        arrived = bisect.bisect_right(times, now)
        avail, all_in = arrived - nxt, arrived == len(times)
        waited = now - last_return >= a.max_wait_s
        if not (avail >= a.min_event_batch_size or (avail >= 1 and (waited or all_in))):
            wake = [] if all_in else [times[arrived]]  # the next arrival
            if avail >= 1:
                wake.append(last_return + a.max_wait_s)  # or the end of maxWaitTime
            time.sleep(max(0.001, min(wake) - now))
            continue
        take = min(avail, a.max_event_batch_size)
        batch = [(nxt + k, *arrivals[nxt + k]) for k in range(take)]  # (seq, arrival, body, records)
        req = request_of(p, batch, wall0)
        for attempt in range(a.max_retries + 1):  # the host resends the same batch until it succeeds
            start = time.monotonic() - t0
            try:
                conn.request("POST", "/EventHubIngest", body=req, headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "x-azure-functions-invocationid": str(uuid.uuid4())})
                r = conn.getresponse()
                text = r.read()
                ok, why = 200 <= r.status < 300 and is_object(text), f"HTTP {r.status}: {text[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                ok, why = False, repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            end = time.monotonic() - t0
            with st.lock:
                st.attempts += 1
                st.intervals.setdefault(inst, []).append((start, end))
                if not ok:
                    st.failures += 1
                    st.errors.append(f"partition {p} at {end:.1f} s: {why}")
            if ok:
                break
            time.sleep(RETRY_S)
        else:
            with st.lock:
                st.errors.append(f"partition {p}: gave up after {a.max_retries} resends; events left unsent")
            break
        last_return = time.monotonic() - t0
        with st.lock:
            st.events += take
            st.records += sum(n for _, _, _, n in batch)
            st.latencies += [end - t for _, t, _, _ in batch]  # arrival -> durable
        nxt += take
    conn.close()

def union_seconds(intervals):
    """Length of the union of (start, end) intervals: the seconds with an invocation active."""
    total, covered = 0.0, float("-inf")
    for s, e in sorted(intervals):
        total, covered = total + max(0.0, e - max(s, covered)), max(covered, e)
    return total

def pct(xs, q):
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

# ---------------------------------------------------------------- correctness

def lake_check(a, az_port, manifest, records_sent, whole):
    """Rows in the lake (typed + untyped + dead letters), from `xdr-ingest tables --json`, against
    the records sent; per table and dead-letter reason against the manifest if all of it was sent."""
    opts = [x for kv in lake_options(az_port).split(";") for x in ("--storage-option", kv)]
    r = subprocess.run([a.bin, "tables", "--lake", "az://lake/defender", *opts, "--json"],
                       capture_output=True, text=True, env={**os.environ, "XDR_LOG": "error"})
    if r.returncode != 0:
        return {"status": "UNKNOWN", "detail": f"`tables` failed ({r.returncode}): {r.stderr.strip()[:300]}"}
    rows, dead = {}, {}
    for t in json.loads(r.stdout)["tables"]:
        name = t["name"].removeprefix("_untyped/")
        if name == "_dead_letters":
            dead = t.get("by_reason", {})
        elif not name.startswith("_"):  # not _ingest_runs, _redrives
            rows[name] = rows.get(name, 0) + t["rows"]
    typed, dl = sum(rows.values()), sum(dead.values())
    res = {"records_sent": records_sent, "rows_landed": typed + dl, "typed_rows": typed, "dead_letters": dl,
           "status": "OK" if typed + dl == records_sent else "MISMATCH",
           "manifest": "not compared (only part of the dataset was sent)"}
    eh = (manifest or {}).get("eventhub")
    if whole and eh:
        exp = eh["typed_rows"]
        diffs = [f"{k}: lake {rows.get(k, 0)}, manifest {exp.get(k, 0)}" for k in sorted({*rows, *exp})
                 if rows.get(k, 0) != exp.get(k, 0)]
        diffs += [f"dead letters {k}: lake {dead.get(k, 0)}, manifest {v}"
                  for k, v in eh["dead_letters"].items() if dead.get(k, 0) != v]
        if eh["records"] != records_sent:
            diffs.append(f"records: sent {records_sent}, manifest {eh['records']}")
        res["manifest"] = "OK (per table and dead-letter reason)" if not diffs else "MISMATCH"
        if diffs:
            res["status"], res["manifest_diffs"] = "MISMATCH", diffs[:20]
    return res

# ---------------------------------------------------------------- main

def run(a, tmp):
    if not os.path.exists(a.bin):
        raise SystemExit(f"{a.bin} does not exist (--bin, XDR_BENCH_BIN)")
    t_prep, data = time.monotonic(), a.data
    if not data:  # enough records for the window, then exactly those that arrive in it
        data, records = os.path.join(tmp, "data"), int(a.gb_per_day * 1e9 / 86400 * a.seconds / BYTES_PER_RECORD * 1.15) + 50
        while True:
            generate(a, data, records)
            parts, all_fit = schedule(load_events(data, a.event_kb), a)
            if not all_fit:
                break
            records = int(records * 1.5)
        generate(a, data, max(1, sum(n for part in parts for _, _, n in part)))  # same seed: a prefix
    mpath = os.path.join(data, "_manifest.json")
    manifest = json.load(open(mpath)) if os.path.exists(mpath) else None
    events = load_events(data, a.event_kb)
    parts, whole = schedule(events, a)
    play_s = a.seconds
    if whole and a.data:  # a given dataset that is too small: the window lasts as long as it does
        play_s = max(p[-1][0] for p in parts if p)
        log(f"note: the dataset ran out at {play_s:.0f} s of {a.seconds:g} s; per day is scaled by that")
    if a.min_event_batch_size > 1 and a.seconds < 2 * a.max_wait_s:
        log(f"note: --seconds {a.seconds:g} is short against maxWaitTime {a.max_wait_s:g} s: small batches "
            "wait for it, and what is left at the end is sent at once; play several maxWaitTimes")
    log(f"dataset: {len(events)} events, {sum(map(len, parts))} arrive in {play_s:.0f} s "
        f"({time.monotonic() - t_prep:.1f} s to prepare)")

    az_port, logf = start_azurite(tmp)
    servers = [start_serve(a, tmp, az_port, i) for i in range(a.instances)]
    # not counted: the container create and serve's start-up probe of the lake (PUT, GET, list,
    # batch delete); the count starts once the log is quiet, just before the first invocation
    offset = quiet_size(logf)
    cpu0 = [proc_cpu(p.pid) for p, _ in servers]
    st = types.SimpleNamespace(lock=threading.Lock(), attempts=0, failures=0, events=0, records=0,
                               latencies=[], intervals={}, errors=[])  # shared by the partition threads
    t0, wall0 = time.monotonic(), time.time()
    owner = [p * a.instances // a.partitions for p in range(a.partitions)]  # contiguous, even split
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
    for p, _ in servers:  # so that nothing of serve's lands in the log after this
        p.kill()
        p.wait()
    time.sleep(0.5)
    counts, kinds = count_requests(logf, offset)  # before `tables`, whose reads are not counted
    check = lake_check(a, az_port, manifest, st.records, whole)

    day, inv = 86400 / play_s, st.attempts
    active = [union_seconds(st.intervals.get(i, [])) for i in range(a.instances)]
    usd = {k: counts[k] * day * PRICE[k] for k in ("write", "list", "read")}
    usd["requests"] = sum(counts[k] * day * PRICE[k] for k in CLASSES)
    usd.update(compute_cpu=cpu * day * PRICE["second"], compute_active=sum(active) * day * PRICE["second"],
               executions=inv * day * PRICE["execution"])
    usd["total_cpu"] = usd["requests"] + usd["compute_cpu"] + usd["executions"]
    usd["total_active"] = usd["requests"] + usd["compute_active"] + usd["executions"]
    sizes = [len(b.encode("utf-8", "surrogateescape")) for part in parts for _, b, _ in part]
    return {
        "settings": {"gb_per_day": a.gb_per_day, "partitions": a.partitions, "instances": a.instances,
                     "seconds": play_s, "max_event_batch_size": a.max_event_batch_size,
                     "min_event_batch_size": a.min_event_batch_size, "max_wait_time_s": a.max_wait_s,
                     "mean_event_kb": sum(sizes) / max(1, len(sizes)) / 1000, "env": a.env, "bin": a.bin},
        "sent": {"events": st.events, "records": st.records, "arrived_events": len(sizes),
                 "arrived_mb": sum(sizes) / 1e6, "wall_s": wall},
        "invocations": {"total": inv, "failed": st.failures, "per_partition_per_minute": inv / a.partitions / (play_s / 60),
                        "mean_events": st.events / max(1, inv - st.failures), "errors": st.errors[:5]},
        "requests": {**counts, "per_invocation": {k: v / max(1, inv) for k, v in counts.items()}, "kinds": kinds},
        "requests_per_day": {k: v * day for k, v in counts.items()},
        "compute": {"cpu_s": cpu, "active_s_per_instance": active, "peak_mb_per_instance": hwm},
        "latency_s": {"p50": pct(st.latencies, 0.5), "p95": pct(st.latencies, 0.95),
                      "max": max(st.latencies, default=float("nan"))},
        "usd_per_day": usd, "check": check}

def render(r):
    s, n, i, q, d, u, c, cm, lat = (r[k] for k in ("settings", "sent", "invocations", "requests", "requests_per_day",
                                                   "usd_per_day", "check", "compute", "latency_s"))
    out = [f"Event Hub cost: {s['gb_per_day']:g} GB/day, {s['partitions']} partitions on {s['instances']} instance(s), "
           f"{s['seconds']:.0f} s played ({n['wall_s']:.0f} s wall); batches {s['min_event_batch_size']}-"
           f"{s['max_event_batch_size']} events, maxWaitTime {s['max_wait_time_s']:g} s; env {' '.join(s['env']) or '-'}",
           f"sent          {n['events']:,} events, {n['records']:,} records (arrived: {n['arrived_events']:,} events, "
           f"{n['arrived_mb']:.1f} MB, {s['mean_event_kb']:.1f} KB mean)",
           f"invocations   {i['total']:,} ({i['failed']} failed), {i['per_partition_per_minute']:.1f} per partition "
           f"per minute, {i['mean_events']:.1f} events each"]
    out += [f"  failure: {e}" for e in i["errors"]]
    out.append(f"{'requests':<14}{'run':>9}{'per inv.':>10}{'per day':>14}{'$/day':>10}")
    for k in CLASSES:
        out.append(f"  {k:<12}{q[k]:>9,}{q['per_invocation'][k]:>10.2f}{d[k]:>14,.0f}{u.get(k, 0.0):>10.2f}")
    out += ["  by kind: " + ", ".join(f"{k} x{v:,}" for k, v in list(q["kinds"].items())[:8]),
            f"compute       {cm['cpu_s']:.1f} CPU s; active s per instance "
            + ", ".join(f"{x:.1f}" for x in cm["active_s_per_instance"])
            + "; peak RSS " + ", ".join(f"{x:.0f} MB" for x in cm["peak_mb_per_instance"]),
            f"latency       arrival -> durable: p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s, max {lat['max']:.2f} s",
            f"$/day         requests {u['requests']:.2f}; compute {u['compute_cpu']:.2f} by CPU s, "
            f"{u['compute_active']:.2f} by active s; executions {u['executions']:.2f}",
            f"  total       {u['total_cpu']:.2f} (compute by CPU s) / {u['total_active']:.2f} (compute by active s)",
            f"lake check    {c['status']}: " + (c.get("detail") or (
                f"records sent {c['records_sent']:,}, rows landed {c['rows_landed']:,} (typed {c['typed_rows']:,}"
                f" + dead letters {c['dead_letters']:,}); manifest: {c['manifest']}"))]
    return "\n".join(out + [f"  {x}" for x in c.get("manifest_diffs", [])])

def main():
    a = parse_args()
    tmp = tempfile.mkdtemp(prefix="eventhub-cost-")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` runs
    try:
        r = run(a, tmp)
        print(json.dumps(r) if a.json else render(r))
        return 0 if r["check"]["status"] == "OK" and not r["invocations"]["failed"] else 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:  # also on Ctrl-C and errors; Azurite does not exit on SIGTERM reliably: SIGKILL all
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if a.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    sys.exit(main())
