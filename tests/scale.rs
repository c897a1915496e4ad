//! Delta's optimistic concurrency at scale: 32 Event Hub partitions (32 processes) committing
//! to the same 26 tables at once, on a local lake and on a store with a cloud's latency;
//! rows exact, no duplicates, and the measurements printed (`cargo test --test scale --
//! --nocapture`). The full-size runs are `cargo bench --bench scale`.

mod common;
#[path = "common/latency_store.rs"]
mod latency_store;
#[path = "common/scale.rs"]
mod scale;

use std::time::Duration;

use common::*;
use scale::{Scale, run};

async fn check(latency_ms: u64, batches: usize, shared: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = Scale {
        writers: 32,
        batches,
        per_table: 2,
        latency: Duration::from_millis(latency_ms),
        shared,
    };
    let r = run(dir.path(), &s).await;
    r.print(&format!("scale test, {latency_ms} ms"), &s);
    // every record once: the warm-up batch's one row per table, then the partitions'
    let want = r.rows_expected + 1;
    for t in xdr_ingest::registry::registry().tables() {
        assert_eq!(
            r.rows_by_table.get(&t.name).copied(),
            Some(want),
            "{}",
            t.name
        );
    }
    // one run row per batch (and the warm-up)
    assert_eq!(
        r.rows_by_table["_ingest_runs"],
        (s.writers * s.batches) as u64 + 1
    );
    assert!(!r.rows_by_table.contains_key("_dead_letters"));
    assert_no_duplicates(&local_lake(dir.path())).await;
    assert_eq!(r.appends, (s.writers * s.batches * 27) as u64);
    if shared {
        // one process: its partitions' appends to a table share commits, and with one
        // committer per table they never race each other for a version
        assert!(r.commits < r.appends, "{r:?}");
        assert_eq!(r.conflicts, 0, "{r:?}");
    } else {
        // every batch committed to 26 tables and _ingest_runs on its own
        assert_eq!(r.commits, r.appends);
        // 32 writers on the same tables lose version races; delta-rs retries them at the
        // next version (appends do not conflict), so they cost time, never a row
        assert!(r.conflicts > 0, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_partitions_on_one_local_lake() {
    check(0, 1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_partitions_of_one_process_on_a_store_with_latency() {
    check(5, 1, true).await;
}
