//! Commit latency against a store with realistic latency (object_store's throttled store,
//! 30 ms per request): a batch touching all 26 tables versus a batch touching one. Tables are
//! written and committed in parallel and their state is cached, so the 26-table batch should
//! cost well under 2x the one-table batch. `cargo bench --bench commit_latency`; under
//! `cargo test` it runs a short, unthrottled version so it cannot rot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
use xdr_ingest::deltalake::logstore::object_store::throttle::{ThrottleConfig, ThrottledStore};
use xdr_ingest::model::{Category, SourceId};
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::sink::{Lake, LakeSettings};

fn record(table: &str, i: usize) -> String {
    format!(
        r#"{{"time":"2026-11-26T10:00:00Z","category":"AdvancedHunting-{table}","properties":{{"Timestamp":"2026-11-26T09:59:00Z","DeviceName":"d{i}"}}}}"#
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let latency = Duration::from_millis(if full { 30 } else { 0 });
    let trials = if full { 9 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ThrottleConfig {
        wait_get_per_call: latency,
        wait_put_per_call: latency,
        wait_list_per_call: latency,
        wait_list_with_delimiter_per_call: latency,
        wait_delete_per_call: latency,
        ..Default::default()
    };
    let store = Arc::new(ThrottledStore::new(LocalFileSystem::new(), config));
    let settings = LakeSettings {
        store: Some(store),
        checkpoint_on_commit: false,
        ..Default::default()
    };
    let lake = Lake::open(dir.path().to_str().expect("path"), settings).expect("lake");
    let cfg = PipelineConfig::default();
    let tables: Vec<&str> = Category::all().map(|c| c.table_name()).collect();
    let source = SourceId::event_hub("bench", "defender", "0");
    let mut seq = 0i64;
    let mut run = |bodies: Vec<String>| -> Duration {
        let units: Vec<Unit> = bodies
            .iter()
            .map(|b| {
                seq += 1;
                Unit::new(b.as_bytes(), seq)
            })
            .collect();
        let t = Instant::now();
        rt.block_on(ingest_units(&lake, &source, &units, &cfg))
            .expect("ingest");
        t.elapsed()
    };
    // 100 records per batch, spread over all tables or all in one
    let all = |k: usize| -> Vec<String> {
        (0..100)
            .map(|i| record(tables[i % tables.len()], k * 100 + i))
            .collect()
    };
    let one = |k: usize| -> Vec<String> {
        (0..100)
            .map(|i| record("DeviceProcessEvents", k * 100 + i))
            .collect()
    };
    run(all(0)); // creates the tables and warms the caches
    let mut t1 = vec![];
    let mut t26 = vec![];
    for k in 1..=trials {
        t1.push(run(one(k)));
        t26.push(run(all(k)));
    }
    t1.sort();
    t26.sort();
    let (m1, m26) = (t1[t1.len() / 2], t26[t26.len() / 2]);
    println!(
        "store latency {latency:?} per request, {trials} trials, medians: 1 table {:.0} ms, 26 tables {:.0} ms, ratio {:.2}x",
        m1.as_secs_f64() * 1e3,
        m26.as_secs_f64() * 1e3,
        m26.as_secs_f64() / m1.as_secs_f64()
    );
}
