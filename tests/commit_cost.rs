//! What a table commit costs in storage requests, and that the cost does not grow with the
//! table's age: an append is a Parquet put, a put-if-absent of the next log entry and one
//! read (of the version after the newest known, to see whether another process committed):
//! no listing of `_delta_log`, no re-read of our own commit, no `_last_checkpoint` probe and
//! no expired-log cleanup. Counted by a store wrapper that classes every request as Azure
//! Storage bills it; the same counts against Azurite are in `bench/eventhub_cost.py`.

#[path = "common/latency_store.rs"]
mod latency_store;

use std::sync::Arc;
use std::time::Duration;

use latency_store::{Classes, LatencyStore};
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
use xdr_ingest::ingest::eventhub::ingest_event_batch;
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::sink::maintain::{CompactOptions, VacuumRetention, maintain};
use xdr_ingest::sink::{Lake, LakeSettings};

fn body(seq: i64, tables: &[&str]) -> String {
    let recs: Vec<String> = tables
        .iter()
        .map(|t| {
            format!(
                r#"{{"time":"2026-07-18T14:08:10Z","category":"AdvancedHunting-{t}","properties":{{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"h{seq}"}}}}"#
            )
        })
        .collect();
    format!(r#"{{"records":[{}]}}"#, recs.join(","))
}

fn lake(dir: &std::path::Path) -> (Lake, Arc<LatencyStore>) {
    let store = Arc::new(LatencyStore::new(
        Arc::new(LocalFileSystem::new()),
        Duration::ZERO,
    ));
    // as the handler runs: no inline checkpoints
    let settings = LakeSettings {
        store: Some(store.clone()),
        checkpoint_on_commit: false,
        ..Default::default()
    };
    (Lake::open(dir.to_str().unwrap(), settings).unwrap(), store)
}

/// The requests of one append of `seq` to one table.
async fn one_append(lake: &Lake, store: &LatencyStore, seq: i64) -> Classes {
    let text = body(seq, &["DeviceProcessEvents"]);
    let before = store.classes();
    let r = ingest_units(
        lake,
        &SourceId::event_hub("ns", "hub", "0"),
        &[Unit::new(text.as_bytes(), seq)],
        &PipelineConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.stats.typed_total(), 1);
    store.classes() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_commit_costs_the_same_requests_on_an_old_log_as_on_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, store) = lake(dir.path());
    // create the table and its cache
    one_append(&lake, &store, 1).await;
    let young = one_append(&lake, &store, 2).await;
    let floor = Classes {
        put: 2,
        get: 1,
        list: 0,
        delete: 0,
    };
    assert_eq!(young, floor, "a young table's commit");
    // age the log: 300 more commits, then the maintenance timer's checkpoint (and its log
    // cleanup, which keeps these: they are not 30 days old)
    for seq in 3..303 {
        one_append(&lake, &store, seq).await;
    }
    let r = maintain(
        &lake,
        VacuumRetention::default(),
        &CompactOptions::default(),
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    // (the first append after maintenance reads its commits: compaction, checkpoint)
    one_append(&lake, &store, 400).await;
    let old = one_append(&lake, &store, 401).await;
    assert_eq!(old, floor, "a 300-commit table's commit");
    let log = std::fs::read_dir(dir.path().join("DeviceProcessEvents/_delta_log"))
        .unwrap()
        .count();
    assert!(log > 300, "{log} log files");
}

/// Another process's commits are read (cheap reads), never listed, and stepped over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writers_commits_are_read_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, store) = lake(dir.path());
    let (b, _) = lake(dir.path());
    one_append(&a, &store, 1).await;
    one_append(&a, &store, 2).await;
    // b (another instance) commits three times behind a's back
    for seq in 10..13 {
        let text = body(seq, &["DeviceProcessEvents"]);
        ingest_units(
            &b,
            &SourceId::event_hub("ns", "hub", "1"),
            &[Unit::new(text.as_bytes(), seq)],
            &PipelineConfig::default(),
        )
        .await
        .unwrap();
    }
    let c = one_append(&a, &store, 3).await;
    // three winners read and the absent fourth: 4 reads; still no listing
    assert_eq!(
        c,
        Classes {
            put: 2,
            get: 4,
            list: 0,
            delete: 0
        }
    );
}

/// An Event Hub batch touching three tables: each table's commit, plus `_ingest_runs`'s read
/// of the partition's state and its run row, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_hub_batch_costs_three_requests_per_table_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, store) = lake(dir.path());
    let tables = ["DeviceProcessEvents", "DeviceFileEvents", "AlertInfo"];
    let partition = SourceId::event_hub("ns", "hub", "0");
    let deliver = async |seq: i64| {
        let text = body(seq, &tables);
        let before = store.classes();
        let units = [Unit {
            enqueued_at: Some(seq * 1_000_000),
            ..Unit::new(text.as_bytes(), seq)
        }];
        ingest_event_batch(&lake, &partition, &units, &PipelineConfig::default())
            .await
            .unwrap();
        store.classes() - before
    };
    deliver(1).await;
    let c = deliver(2).await;
    // 3 tables and _ingest_runs: 2 puts each; a read before each commit, and one more for
    // the partition's state in _ingest_runs
    assert_eq!(
        c,
        Classes {
            put: 2 * 4,
            get: 4 + 1,
            list: 0,
            delete: 0
        }
    );
}
