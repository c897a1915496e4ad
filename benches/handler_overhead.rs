//! Handler overhead: the same Event Hub batches through the real binary's `serve` (requests
//! shaped as the Functions host sends them, over loopback HTTP; with the trigger's `dataType`
//! `string` and `binary`) and through the library
//! (`ingest_units`) directly, each into a fresh lake with the handler's lake settings.
//! Compares CPU seconds: of the `serve` process (from /proc, so the client that sends the
//! requests is not counted) and of this process for the library path. The first batch of
//! each path (table creation, caches) is not counted.
//!
//! Then the same batches from 8 partitions at once (as when one instance serves 8
//! partitions): their appends share commits (group commit), and the table commits and CPU
//! seconds are reported beside those of one partition.
//!
//! `cargo bench --bench handler_overhead [-- --records N --runs N --per-batch N]` (default
//! ~87 MB in batches of 100 events, 5 runs each, medians; `XDR_BENCH_BIN` runs `serve` from
//! another build, e.g. the shipped one); under `cargo test` it runs once on a tiny input so it cannot rot.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use serde_json::{Value, json};
use xdr_ingest::decode::Unit;
use xdr_ingest::generate::{Form, GenerateOptions, write_dataset};
use xdr_ingest::handler::HandlerSettings;
use xdr_ingest::handler::protocol::{EventDataType, Invocation, decode_event_hub};
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::ingest_units;
use xdr_ingest::sink::Lake;

const NAMESPACE: &str = "bench.servicebus.windows.net";
const HUB: &str = "defender";

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// The host's request for one Event Hub batch (azure-functions.md): arrays JSON-encoded
/// inside strings, enqueued times without a zone.
fn request(events: &[(i64, &str)]) -> String {
    request_of("0", events)
}

fn request_of(partition: &str, events: &[(i64, &str)]) -> String {
    let bodies: Vec<&str> = events.iter().map(|(_, b)| *b).collect();
    let seqs: Vec<i64> = events.iter().map(|(s, _)| *s).collect();
    let n = events.len();
    json!({
        "Data": {"events": serde_json::to_string(&bodies).expect("json")},
        "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": NAMESPACE, "EventHubName": HUB,
                                 "ConsumerGroup": "xdr-ingest", "PartitionId": partition, "IsCheckpointingAfterInvocation": true},
            "PartitionKeyArray": serde_json::to_string(&vec![Value::Null; n]).expect("json"),
            "OffsetArray": serde_json::to_string(&seqs.iter().map(|s| (s * 4096).to_string()).collect::<Vec<_>>()).expect("json"),
            "SequenceNumberArray": serde_json::to_string(&seqs).expect("json"),
            "EnqueuedTimeUtcArray": serde_json::to_string(&vec!["2026-11-26T10:00:01.31"; n]).expect("json"),
            "PropertiesArray": serde_json::to_string(&vec![json!({}); n]).expect("json"),
            "sys": {"MethodName": "EventHubIngest", "UtcNow": "2026-11-26T10:00:02.12Z", "RandGuid": "00000000-0000-0000-0000-000000000000"}
        }
    })
    .to_string()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Through the library: CPU seconds of the batches after the first.
async fn library(batches: &[Vec<(i64, &str)>]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = HandlerSettings::from_env().expect("settings");
    let lake = Lake::open(
        dir.path().to_str().expect("utf-8 path"),
        settings.lake_settings(),
    )
    .expect("lake");
    let source = SourceId::event_hub(NAMESPACE, HUB, "0");
    let enqueued = Some(1_795_687_201_310_000);
    let mut start = 0.0;
    for (i, b) in batches.iter().enumerate() {
        if i == 1 {
            start = cpu_seconds("self");
        }
        let units: Vec<Unit<'_>> = b
            .iter()
            .map(|(seq, body)| Unit {
                enqueued_at: enqueued,
                ..Unit::new(body.as_bytes(), *seq)
            })
            .collect();
        let r = ingest_units(&lake, &source, &units, &settings.pipeline)
            .await
            .expect("ingest");
        assert!(r.stats.conserved());
    }
    cpu_seconds("self") - start
}

/// A field of /proc/<pid>/status in MB (`VmRSS`, `VmHWM`).
fn status_mb(pid: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// What one `serve` run measured, the first batch excluded.
struct Served {
    cpu: f64,
    commits: u64,
    /// Resident memory after the first batch (tables created, caches filled), MB.
    rest_mb: f64,
    /// Peak resident memory over the counted batches, MB.
    peak_mb: f64,
}

/// Table commits in the lake at `dir` (the versions of all its tables).
async fn commits(dir: &std::path::Path) -> u64 {
    let lake = Lake::open(dir.to_str().expect("utf-8 path"), Default::default()).expect("lake");
    xdr_ingest::sink::inspect::lake_info(&lake)
        .await
        .expect("lake info")
        .iter()
        .map(|t| t.version)
        .sum()
}

/// Through `serve`: CPU seconds, table commits and memory of the server process for the
/// batches after the first; `partitions` lists each partition's requests, sent in order per
/// partition and all partitions at once.
async fn handler(partitions: &[Vec<String>], data_type: &str) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    // `XDR_BENCH_BIN`: another build of the binary (e.g. the shipped static one)
    let bin =
        std::env::var("XDR_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_xdr-ingest").into());
    let mut child = std::process::Command::new(bin)
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("XDR_LAKE", dir.path())
        .env("XDR_EVENTHUB_DATA_TYPE", data_type)
        // the protocol's overhead, not the linger's wait (bench/eventhub_cost.py plays that)
        .env("XDR_COMMIT_LINGER_MS", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serve");
    let pid = child.id().to_string();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while client.get(&base).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |body: String| {
        let client = client.clone();
        let url = format!("{base}/EventHubIngest");
        async move {
            let r = client
                .post(url)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(body)
                .send()
                .await
                .expect("post");
            assert_eq!(
                r.status().as_u16(),
                200,
                "{}",
                r.text().await.unwrap_or_default()
            );
            r.bytes().await.expect("response");
        }
    };
    // the first batch creates the tables and fills the caches: not counted
    post(partitions[0][0].clone()).await;
    let rest_mb = status_mb(&pid, "VmRSS");
    // reset the peak to the current RSS (Linux: 5 to clear_refs)
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let start = cpu_seconds(&pid);
    let commits0 = commits(dir.path()).await;
    futures::future::join_all(partitions.iter().enumerate().map(|(p, reqs)| {
        let post = &post;
        async move {
            for body in &reqs[usize::from(p == 0)..] {
                post(body.clone()).await;
            }
        }
    }))
    .await;
    let cpu = cpu_seconds(&pid) - start;
    let peak_mb = status_mb(&pid, "VmHWM");
    let _ = child.kill();
    let _ = child.wait();
    Served {
        cpu,
        commits: commits(dir.path()).await - commits0,
        rest_mb,
        peak_mb,
    }
}

/// The value of `--name N` on the command line.
fn arg(name: &str) -> Option<usize> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
}

/// Partitions of the concurrent run.
const PARTITIONS: usize = 8;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (records, runs) = if full { (30_000, 5) } else { (200, 1) };
    let records = arg("--records").unwrap_or(records);
    let runs = arg("--runs").unwrap_or(runs).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = GenerateOptions {
        records,
        corrupt_rate: 0.001,
        seed: 11,
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"),
        small: false,
    };
    write_dataset(dir.path(), Form::Eventhub, &opts).expect("generate");
    let mut text = String::new();
    for f in
        xdr_ingest::source::file::collect_inputs(&[dir.path().join("eventhub")]).expect("inputs")
    {
        text.push_str(&std::fs::read_to_string(f).expect("read"));
    }
    let events: Vec<(i64, &str)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| (i as i64 + 1, l))
        .collect();
    // the host's default batch: up to 100 events (host.json maxEventBatchSize); tiny runs
    // still make several batches
    let per_batch = arg("--per-batch")
        .unwrap_or(if full { 100 } else { 4 })
        .max(1);
    let batches: Vec<Vec<(i64, &str)>> = events.chunks(per_batch).map(|c| c.to_vec()).collect();
    let requests: Vec<String> = batches.iter().map(|b| request(b)).collect();
    // the same batches as the host sends them with `dataType: binary`: base64 bodies
    let encoded: Vec<Vec<(i64, String)>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|(seq, body)| (*seq, BASE64_STANDARD.encode(body)))
                .collect()
        })
        .collect();
    let binary_requests: Vec<String> = encoded
        .iter()
        .map(|b| {
            let refs: Vec<(i64, &str)> = b.iter().map(|(s, e)| (*s, e.as_str())).collect();
            request(&refs)
        })
        .collect();
    let mb = text.len() as f64 / 1e6;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // the same batches from 8 partitions, each with its own increasing sequence numbers
    let fanned: Vec<Vec<String>> = (0..PARTITIONS)
        .map(|p| {
            batches
                .iter()
                .skip(p)
                .step_by(PARTITIONS)
                .map(|b| request_of(&p.to_string(), b))
                .collect()
        })
        .collect();
    let one = std::slice::from_ref(&requests);
    let one_bin = std::slice::from_ref(&binary_requests);
    let (mut lib, mut srv, mut bin, mut fan) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut srv_last, mut fan_last) = (None, None);
    for _ in 0..runs {
        lib.push(rt.block_on(library(&batches)));
        let s = rt.block_on(handler(one, "string"));
        srv.push(s.cpu);
        srv_last = Some(s);
        bin.push(rt.block_on(handler(one_bin, "binary")).cpu);
        let f = rt.block_on(handler(&fanned, "string"));
        fan.push(f.cpu);
        fan_last = Some(f);
    }
    let (srv_last, fan_last) = (
        srv_last.expect("at least one run"),
        fan_last.expect("at least one run"),
    );
    let mean_batch_mb = mb / batches.len().max(1) as f64;
    let (lib, srv, bin, fan) = (median(lib), median(srv), median(bin), median(fan));
    // the host protocol's part: parsing the invocation and its JSON-in-JSON event array
    let protocol = |reqs: &[String], data_type| {
        let start = cpu_seconds("self");
        for _ in 0..runs {
            for r in &reqs[1..] {
                let inv = Invocation::parse(r.as_bytes()).expect("invocation");
                let batch = decode_event_hub(&inv, "events", data_type).expect("batch");
                std::hint::black_box(batch);
            }
        }
        (cpu_seconds("self") - start) / runs as f64
    };
    let (proto_str, proto_bin) = (
        protocol(&requests, EventDataType::String),
        protocol(&binary_requests, EventDataType::Binary),
    );
    println!(
        "handler overhead: {} events in {} batches ({mb:.1} MB), first batch excluded, median of {runs} run(s)",
        events.len(),
        batches.len()
    );
    println!("  library (ingest_units): {lib:>6.2} CPU s");
    let pct = |x: f64| (x / lib.max(1e-9) - 1.0) * 100.0;
    println!(
        "  serve, dataType string: {srv:>6.2} CPU s = {:+.1} % vs the library (host protocol alone: {proto_str:.2} CPU s)",
        pct(srv)
    );
    println!(
        "  serve, dataType binary: {bin:>6.2} CPU s = {:+.1} % vs the library (host protocol alone: {proto_bin:.2} CPU s)",
        pct(bin)
    );
    let batches_counted = batches.len().saturating_sub(1).max(1) as f64;
    println!(
        "  serve, one partition:   {srv:>6.2} CPU s, {} table commits ({:.1} a batch); RSS {:.0} MB after the first batch, peak {:.0} MB with {mean_batch_mb:.1} MB batches",
        srv_last.commits,
        srv_last.commits as f64 / batches_counted,
        srv_last.rest_mb,
        srv_last.peak_mb
    );
    println!(
        "  serve, {PARTITIONS} partitions at once: {fan:>6.2} CPU s = {:+.1} % vs one partition, {} table commits ({:.1} a batch: appends of concurrent partitions share commits); RSS {:.0} MB after the first batch, peak {:.0} MB",
        (fan / srv.max(1e-9) - 1.0) * 100.0,
        fan_last.commits,
        fan_last.commits as f64 / batches_counted,
        fan_last.rest_mb,
        fan_last.peak_mb
    );
}
