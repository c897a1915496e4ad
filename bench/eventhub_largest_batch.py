#!/usr/bin/env python3
"""Peak memory of `xdr-ingest serve` at the largest Event Hub batches the shipped defaults allow.

The host sends up to `maxEventBatchSize` events per invocation (host.json: 500), and Defender
events may be up to 1 MB each (the Event Hubs Standard limit), so one request can hold ~500 MB
of events, JSON-escaped inside the host's envelope. An instance serves several partitions at
once. This sends `--partitions` such requests at the same moment to one `serve` (with the
handler's defaults unless `--env` says otherwise), on a local lake, and reports the process's
peak resident memory (VmHWM), each request's status and time, and whether every record landed
(rows = records, from `xdr-ingest tables --json`). A 2048 MB Flex instance is the budget.

Run:  python3 bench/eventhub_largest_batch.py [--partitions 4] [--events 500] [--event-kb 1000]
          [--env XDR_MAX_INFLIGHT_BYTES=...] [--bin PATH]
      (--bin, else $XDR_BENCH_BIN, else target/release/xdr-ingest, else target/debug/xdr-ingest)

Every record is distinct (no re-sends for the dedup to drop), ~3.3 KB, DeviceProcessEvents and
DeviceNetworkEvents alternating; the client builds all requests before sending, so its own
memory (not measured) is several times the total.
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time, http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(p, seq, kb):
    """One Event Hub event of ~kb KB: distinct records in Defender's envelope."""
    pad = "x" * 3000
    recs, size, j = [], 0, 0
    while size < kb * 1000:
        t = ("DeviceProcessEvents", "DeviceNetworkEvents")[j % 2]
        r = ('{"time":"2026-11-26T09:59:00Z","tenantId":"t","category":"AdvancedHunting-%s",'
             '"properties":{"Timestamp":"2026-11-26T09:58:00Z","DeviceName":"p%d-s%d-r%d",'
             '"ProcessCommandLine":"%s"}}' % (t, p, seq, j, pad))
        recs.append(r)
        size += len(r) + 1
        j += 1
    return '{"records":[' + ",".join(recs) + "]}", j


def request(p, events):
    enc = lambda v: json.dumps(v, separators=(",", ":"))
    seqs = [s for s, _ in events]
    n = len(events)
    return enc({
        "Data": {"events": "[" + ",".join(enc(b) for _, b in events) + "]"},
        "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": "bench.servicebus.windows.net",
                                 "EventHubName": "defender", "ConsumerGroup": "xdr-ingest",
                                 "PartitionId": str(p), "IsCheckpointingAfterInvocation": True},
            "PartitionKeyArray": enc([None] * n),
            "OffsetArray": enc([str(s * 4096) for s in seqs]),
            "SequenceNumberArray": enc(seqs),
            "EnqueuedTimeUtcArray": enc(["2026-11-26T10:00:01.31"] * n),
            "PropertiesArray": enc([{}] * n),
            "sys": {"MethodName": "EventHubIngest", "UtcNow": "2026-11-26T10:00:02.12Z",
                    "RandGuid": "00000000-0000-0000-0000-000000000000"},
        }}).encode()


def hwm_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("XDR_BENCH_BIN") or next(
        (b for b in (os.path.join(ROOT, "target", d, "xdr-ingest") for d in ("release", "debug"))
         if os.path.exists(b)), "target/debug/xdr-ingest"))
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--event-kb", type=float, default=1000)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    a = ap.parse_args()

    reqs, records = [], 0
    for p in range(a.partitions):
        evs = []
        for i in range(a.events):
            b, n = body(p, i, a.event_kb)
            evs.append((1000 + i, b))
            records += n
        reqs.append(request(p, evs))
    print(f"{a.partitions} requests of {a.events} events of ~{a.event_kb:.0f} KB: "
          f"{sum(map(len, reqs)) / 1e6:.0f} MB in all, {records} records", flush=True)

    with tempfile.TemporaryDirectory() as lake:
        port = free_port()
        env = dict(os.environ, FUNCTIONS_CUSTOMHANDLER_PORT=str(port), XDR_LAKE=lake)
        env.update(kv.split("=", 1) for kv in a.env)
        srv = subprocess.Popen([a.bin, "serve"], env=env, stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(lake, "..", os.path.basename(lake) + ".log"), "w"))
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            rest = hwm_mb(srv.pid)
            results = [None] * len(reqs)

            def send(i):
                t = time.time()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
                c.request("POST", "/EventHubIngest", reqs[i], {"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                results[i] = (r.status, time.time() - t)

            samples, done = [], threading.Event()

            def sample():  # resident memory over time, for where the peak is
                t = time.time()
                while not done.is_set():
                    with open(f"/proc/{srv.pid}/status") as f:
                        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
                    samples.append((time.time() - t, rss / 1024))
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample)
            sampler.start()
            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(reqs))]
            t0 = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.time() - t0
            peak = hwm_mb(srv.pid)
            done.set()
            sampler.join()
        finally:
            srv.kill()
            srv.wait()
        out = subprocess.run([a.bin, "tables", "--lake", lake, "--json"], capture_output=True,
                             text=True, check=True).stdout
        tables = json.loads(out)
        rows = sum(t.get("rows", 0) for t in (tables if isinstance(tables, list) else tables.get("tables", []))
                   if not t.get("name", "").startswith("_"))
    print(f"statuses/seconds: {[(st, round(t, 1)) for st, t in results]}")
    # the resident memory's maximum in each 5 s of the run
    buckets = {}
    for t, mb in samples:
        buckets[int(t // 5)] = max(buckets.get(int(t // 5), 0), mb)
    print("RSS MB per 5 s: " + " ".join(f"{v:.0f}" for _, v in sorted(buckets.items())))
    print(f"wall {wall:.1f} s; serve peak RSS {peak:.0f} MB (at rest {rest:.0f} MB); "
          f"rows {rows} of {records} records: {'OK' if rows == records else 'MISMATCH'}")
    if rows != records or any(s != 200 for s, _ in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
