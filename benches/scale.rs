//! The scale scenario of `tests/scale.rs` at full size: `--writers` Event Hub partitions
//! (default 32), each its own process, delivering `--batches` batches each (default 4) of
//! `--per-table` records for every one of the 26 tables (default 20), all committing to one
//! lake at once, on the local disk and on a store with `--latency-ms` per request (default
//! 30); `--shared`: all partitions in one process (one lake handle). Prints commits per second, lost version races, appends redone and batch latency;
//! fails if a row is missing or doubled. `cargo bench --bench scale [-- --writers N ...]`;
//! under `cargo test` it runs once on 4 writers so it cannot rot.

#[path = "../tests/common/latency_store.rs"]
mod latency_store;
#[path = "../tests/common/scale.rs"]
mod scale;

use std::time::Duration;

use scale::{Scale, run};

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let writers = arg("--writers", if full { 32 } else { 4 });
    let batches = arg("--batches", if full { 4 } else { 1 });
    let per_table = arg("--per-table", if full { 20 } else { 1 });
    let latency_ms = arg("--latency-ms", if full { 30 } else { 2 }) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let shared = std::env::args().any(|a| a == "--shared");
        for latency in [0, latency_ms] {
            let dir = tempfile::tempdir().expect("tempdir");
            let s = Scale {
                writers,
                batches,
                per_table,
                latency: Duration::from_millis(latency),
                shared,
            };
            let r = run(dir.path(), &s).await;
            let label = if latency == 0 {
                "local lake".to_owned()
            } else {
                format!("store with {latency} ms latency")
            };
            r.print(&label, &s);
            let want = r.rows_expected + 1;
            for (table, rows) in &r.rows_by_table {
                if table.starts_with('_') {
                    continue;
                }
                assert_eq!(*rows, want, "{table}: rows");
            }
            assert_eq!(
                r.rows_by_table.len(),
                27,
                "26 tables and _ingest_runs: {:?}",
                r.rows_by_table
            );
        }
    });
}
