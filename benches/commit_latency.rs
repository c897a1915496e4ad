//! Commit latency on a store with realistic latency: a batch touching all 26 tables against a
//! batch touching one. Every request to the store (get, put, head, list, each multipart
//! part) first waits `--latency-ms` (default 30 ms), as a cloud object store would. Tables
//! are created and cached before the measurement; each measured batch is a new position of
//! one Event Hub partition, so every table of the batch makes a real commit with its txn.
//!
//! `cargo bench --bench commit_latency` (full: 30 ms, 7 batches per case, medians);
//! under `cargo test` it runs once with 2 ms so it cannot rot.
//! The store is `tests/common/latency_store.rs`.

#[path = "../tests/common/latency_store.rs"]
mod latency_store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use latency_store::LatencyStore;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::registry::registry;
use xdr_ingest::sink::{Lake, LakeSettings};

/// One Event Hub body with `per_table` records for each of `categories`.
fn body(categories: &[&str], per_table: usize, seq: i64) -> String {
    let mut recs = Vec::new();
    for (i, c) in categories.iter().enumerate() {
        for j in 0..per_table {
            recs.push(format!(
                r#"{{"time":"2026-11-26T10:00:00Z","tenantId":"t","category":"{c}","properties":{{"Timestamp":"2026-11-26T09:59:{:02}Z","DeviceId":"d{i}","DeviceName":"host-{j}","ActionType":"X","ReportId":{seq}}}}}"#,
                j % 60
            ));
        }
    }
    format!(r#"{{"records":[{}]}}"#, recs.join(","))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let latency_ms: u64 = std::env::args()
        .skip_while(|a| a != "--latency-ms")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 30 } else { 2 });
    let batches = if full { 7 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LatencyStore::new(
            Arc::new(LocalFileSystem::new()),
            Duration::from_millis(latency_ms),
        ));
        let requests = store.requests.clone();
        // as the handler runs: checkpoints left to the maintenance timer
        let settings = LakeSettings {
            store: Some(store),
            checkpoint_on_commit: false,
            ..Default::default()
        };
        let lake = Lake::open(dir.path().to_str().expect("utf-8 path"), settings).expect("lake");
        let all: Vec<&str> = registry()
            .tables()
            .iter()
            .map(|t| t.category.as_str())
            .collect();
        let cfg = PipelineConfig::default();
        let source = SourceId::event_hub("ns", "hub", "0");
        let mut seq = 0i64;
        let mut run = async |cats: &[&str]| -> (f64, u64) {
            seq += 1;
            let text = body(cats, 20, seq);
            let units = [Unit::new(text.as_bytes(), seq)];
            let before = requests.load(Ordering::Relaxed);
            let t = Instant::now();
            let r = ingest_units(&lake, &source, &units, &cfg)
                .await
                .expect("ingest");
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(r.stats.typed_total(), (cats.len() * 20) as u64);
            (secs, requests.load(Ordering::Relaxed) - before)
        };
        // create and cache every table first
        run(&all).await;
        run(&all).await;
        let mut one = Vec::new();
        let mut many = Vec::new();
        let (mut one_req, mut many_req) = (0, 0);
        for _ in 0..batches {
            let (s, r) = run(&all[..1]).await;
            one.push(s);
            one_req = r;
            let (s, r) = run(&all).await;
            many.push(s);
            many_req = r;
        }
        let (one, many) = (median(one), median(many));
        println!(
            "commit latency, {latency_ms} ms per store request, median of {batches} batch(es):"
        );
        println!(
            "  1 table  : {:>7.0} ms per batch ({one_req} store requests)",
            one * 1e3
        );
        println!(
            "  {} tables: {:>7.0} ms per batch ({many_req} store requests) = {:.2}x one table",
            all.len(),
            many * 1e3,
            many / one
        );
    });
}
