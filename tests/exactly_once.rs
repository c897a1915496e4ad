//! Exactly once under failure and concurrency: a commit failing at every point, redelivery
//! with shifted batch boundaries, and two writers on one lake.

mod common;
#[path = "common/failing_store.rs"]
mod failing_store;
#[path = "common/latency_store.rs"]
mod latency_store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use failing_store::{FailMode, FailingStore};
use latency_store::LatencyStore;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
use xdr_ingest::ingest::{FileOptions, ingest_file};
use xdr_ingest::model::Category;
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::sink::maintain::{CompactOptions, VacuumRetention, compact, maintain};
use xdr_ingest::sink::{Lake, LakeSettings};

/// A file with records for four tables, dead letters and rule failures, read in chunks.
fn scenario_file(dir: &Path) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..30 {
        let table = [
            "DeviceProcessEvents",
            "DeviceNetworkEvents",
            "EmailEvents",
            "IdentityInfo",
        ][i % 4];
        text.push_str(&format!(
            r#"{{"time":"2026-07-18T14:08:10Z","tenantId":"t","category":"AdvancedHunting-{table}","properties":{{"Timestamp":"2026-07-18T14:05:{:02}Z","ReportId":"{i}","DeviceName":"host-{i}"}}}}"#,
            i % 60
        ));
        text.push('\n');
        if i % 10 == 5 {
            text.push_str("{not json\n");
            text.push_str(r#"{"category":"AdvancedHunting-DeviceInfo","properties":{}}"#);
            text.push('\n');
        }
    }
    let p = dir.join("input.json");
    std::fs::write(&p, text).unwrap();
    p
}

fn expected_rows() -> BTreeMap<String, u64> {
    [
        ("DeviceProcessEvents", 8),
        ("DeviceNetworkEvents", 8),
        ("EmailEvents", 7),
        ("IdentityInfo", 7),
        ("_dead_letters", 6),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn failing_lake(dir: &Path, fail_at: usize, mode: FailMode) -> (Lake, Arc<FailingStore>) {
    let store = Arc::new(FailingStore::new(
        Arc::new(LocalFileSystem::new()),
        fail_at,
        mode,
    ));
    let settings = LakeSettings {
        store: Some(store.clone()),
        ..Default::default()
    };
    (Lake::open(dir.to_str().unwrap(), settings).unwrap(), store)
}

const CHUNK: FileOptions = FileOptions { chunk_bytes: 1200 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_at_any_point_heals_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = scenario_file(dir.path());
    let cfg = PipelineConfig::default();

    // A clean run through the wrapper: how many commits the scenario makes.
    let clean = dir.path().join("clean");
    let (lake, store) = failing_lake(&clean, usize::MAX, FailMode::Before);
    let o = ingest_file(&lake, &input, &cfg, &CHUNK, &mut |_| {})
        .await
        .unwrap();
    let chunks = o.chunks;
    assert!(chunks >= 3, "{chunks} chunks");
    let mut want_clean = expected_rows();
    want_clean.insert("_ingest_runs".into(), chunks);
    assert_eq!(lake_rows(&lake).await, want_clean);
    let commits = store.commits.load(Ordering::SeqCst);
    assert!(commits >= 15, "{commits} commits");

    for mode in [FailMode::Before, FailMode::After] {
        for k in 1..=commits {
            let lake_dir = dir.path().join(format!("lake-{mode:?}-{k}"));
            let (lake, store) = failing_lake(&lake_dir, k, mode);
            let first = ingest_file(&lake, &input, &cfg, &CHUNK, &mut |_| {}).await;
            assert!(store.commits.load(Ordering::SeqCst) >= k.min(commits));
            if mode == FailMode::Before {
                assert!(first.is_err(), "k={k}: the failure is reported");
            }
            // a new process (new lake handle, no cache) runs the same input again
            let lake = local_lake(&lake_dir);
            ingest_file(&lake, &input, &cfg, &CHUNK, &mut |_| {})
                .await
                .unwrap_or_else(|e| panic!("{mode:?} k={k}: re-run failed: {e}"));
            let rows = lake_rows(&lake).await;
            let mut want = expected_rows();
            // a lost _ingest_runs commit is redone as one more run row, never more data
            let runs = rows.get("_ingest_runs").copied().unwrap_or(0);
            assert!(
                (chunks..=chunks + 1).contains(&runs),
                "{mode:?} k={k}: {runs} run rows"
            );
            want.insert("_ingest_runs".into(), runs);
            assert_eq!(rows, want, "{mode:?} k={k}");
            assert_no_duplicates(&lake).await;
            // and a third run adds nothing
            let o = ingest_file(&lake, &input, &cfg, &CHUNK, &mut |_| {})
                .await
                .unwrap();
            assert_eq!(o.stats.records, 0);
        }
    }
}

/// Event Hub style units: one body per sequence number, 1-3 records each.
fn events(n: i64) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| {
            let seq = 5000 + i;
            let recs: Vec<String> = (0..(1 + i % 3))
                .map(|j| {
                    let table = ["DeviceProcessEvents", "DeviceFileEvents", "AlertInfo"][((i + j) % 3) as usize];
                    format!(
                        r#"{{"time":"2026-07-18T14:08:10Z","category":"AdvancedHunting-{table}","properties":{{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"e{seq}-{j}"}}}}"#
                    )
                })
                .collect();
            (seq, format!(r#"{{"records":[{}]}}"#, recs.join(",")))
        })
        .collect()
}

async fn deliver(lake: &Lake, source: &SourceId, evs: &[(i64, String)]) {
    let units: Vec<Unit> = evs
        .iter()
        .map(|(seq, body)| Unit::new(body.as_bytes(), *seq))
        .collect();
    let r = ingest_units(lake, source, &units, &PipelineConfig::default())
        .await
        .unwrap();
    assert!(r.stats.conserved());
}

fn total_records(evs: &[(i64, String)]) -> u64 {
    evs.iter()
        .map(|(seq, _)| (1 + (seq - 5000) % 3) as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_with_shifted_boundaries_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let source = SourceId::event_hub("ns.servicebus.windows.net", "defender", "0");
    let evs = events(100);
    deliver(&lake, &source, &evs[0..40]).await;
    deliver(&lake, &source, &evs[20..70]).await; // overlaps
    deliver(&lake, &source, &evs[0..100]).await; // everything again
    deliver(&lake, &source, &evs[95..100]).await;
    deliver(&lake, &source, &evs[10..11]).await; // an old single event
    let rows = lake_rows(&lake).await;
    assert_eq!(non_meta(&rows).values().sum::<u64>(), total_records(&evs));
    assert_no_duplicates(&lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_lake() {
    let dir = tempfile::tempdir().unwrap();
    let evs = events(90);
    // Different sources at once (two processes: two lake handles, two caches).
    let (a, b) = (local_lake(dir.path()), local_lake(dir.path()));
    let (p0, p1) = (
        SourceId::event_hub("ns", "defender", "0"),
        SourceId::event_hub("ns", "defender", "1"),
    );
    tokio::join!(
        async {
            for w in evs.chunks(15) {
                deliver(&a, &p0, w).await
            }
        },
        async {
            for w in evs.chunks(20) {
                deliver(&b, &p1, w).await
            }
        }
    );
    let rows = lake_rows(&a).await;
    assert_eq!(
        non_meta(&rows).values().sum::<u64>(),
        2 * total_records(&evs)
    );

    // The same source at once, as when a partition changes owner mid-batch.
    let dir2 = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let (a, b) = (local_lake(dir2.path()), local_lake(dir2.path()));
        let p = SourceId::event_hub("ns", "defender", "7");
        tokio::join!(
            async {
                for w in evs.chunks(30) {
                    deliver(&a, &p, w).await
                }
            },
            async {
                for w in evs.chunks(45 - round * 10) {
                    deliver(&b, &p, w).await
                }
            }
        );
        let rows = lake_rows(&a).await;
        assert_eq!(
            non_meta(&rows).values().sum::<u64>(),
            total_records(&evs),
            "round {round}"
        );
        assert_no_duplicates(&a).await;
    }
}

/// One instance serving many partitions (one lake handle): their concurrent appends to a table
/// share commits (group commit), each with its own txn; a partition delivered twice at once
/// (its redelivery racing the original) never has its two appends merged into one commit, so
/// nothing is doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_groups_partitions_into_shared_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(local_lake(dir.path()));
    let evs = events(60);
    let chunks = 3;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let lake = lake.clone();
        let evs = evs.clone();
        tasks.push(tokio::spawn(async move {
            let source = SourceId::event_hub("ns", "defender", &p.to_string());
            for w in evs.chunks(evs.len() / chunks) {
                deliver(&lake, &source, w).await
            }
        }));
    }
    // partition 0 again at once, with other batch boundaries
    {
        let lake = lake.clone();
        let evs = evs.clone();
        tasks.push(tokio::spawn(async move {
            let source = SourceId::event_hub("ns", "defender", "0");
            for w in evs.chunks(25) {
                deliver(&lake, &source, w).await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = lake_rows(&lake).await;
    assert_eq!(
        non_meta(&rows).values().sum::<u64>(),
        8 * total_records(&evs)
    );
    assert_no_duplicates(&lake).await;
    // 8 partitions x 3 batches reached DeviceProcessEvents (the racing redelivery adds
    // more); one commit each would be 24 versions after the create
    let info = xdr_ingest::sink::inspect::lake_info(&lake).await.unwrap();
    let dpe = info
        .iter()
        .find(|t| t.name == "DeviceProcessEvents")
        .unwrap();
    assert_eq!(dpe.sources.len(), 8, "{:?}", dpe.sources);
    assert!(
        dpe.version < (8 * chunks) as u64,
        "concurrent partitions should share commits: version {}",
        dpe.version
    );
}

/// A caller dropped while the commit it leads carries other callers' appends (an invocation
/// the host gave up on, whose connection closed) fails none of them: the group's commit runs
/// in a task of its own. The dropped caller's own append is made whole by its redelivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_caller_does_not_fail_the_appends_its_commit_carries() {
    use std::time::Duration;
    use xdr_ingest::sink::runs::{RunCounts, RunRow, record_runs};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LatencyStore::new(
        Arc::new(LocalFileSystem::new()),
        Duration::from_millis(20),
    ));
    let settings = LakeSettings {
        store: Some(store),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(dir.path().to_str().unwrap(), settings).unwrap());
    let append = |lake: Arc<Lake>, partition: &str| {
        let source = SourceId::event_hub("ns", "hub", partition);
        async move {
            let row = RunRow::chunk(&source, 0, 10, RunCounts::default(), 0);
            record_runs(&lake, &[row]).await
        }
    };
    append(lake.clone(), "warm-up").await.unwrap();
    // X commits alone, slowly; A, B and C queue behind it, and A leads the next commit
    let x = tokio::spawn(append(lake.clone(), "x"));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let a = tokio::spawn(append(lake.clone(), "a"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = tokio::spawn(append(lake.clone(), "b"));
    let c = tokio::spawn(append(lake.clone(), "c"));
    x.await.unwrap().unwrap();
    // A's commit (of A, B and C) is in flight: drop A
    tokio::time::sleep(Duration::from_millis(40)).await;
    a.abort();
    let (b, c) = (b.await.unwrap(), c.await.unwrap());
    assert!(b.is_ok() && c.is_ok(), "{b:?} {c:?}");
    // A's redelivery: its row once, whether the dropped call had landed it or not
    append(lake.clone(), "a").await.unwrap();
    append(lake.clone(), "a").await.unwrap();
    let info = xdr_ingest::sink::inspect::lake_info(&lake).await.unwrap();
    let runs = info.iter().find(|t| t.name == "_ingest_runs").unwrap();
    assert_eq!(runs.rows, 5, "{runs:?}");
    assert_eq!(runs.sources.len(), 5, "{:?}", runs.sources);
}

/// Files per table, as the Delta logs list them.
async fn files_of(lake: &Lake) -> BTreeMap<String, u64> {
    xdr_ingest::sink::inspect::lake_info(lake)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.files))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_row_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let source = SourceId::event_hub("ns", "defender", "0");
    let evs = events(60);
    for w in evs[0..50].chunks(5) {
        deliver(&lake, &source, w).await; // ten commits: ten small files per table
    }
    let tables = ["DeviceProcessEvents", "DeviceFileEvents", "AlertInfo"];
    let mut before = BTreeMap::new();
    for t in tables {
        let mut keys = row_keys(&lake, t).await;
        keys.sort();
        before.insert(t, keys);
    }
    assert!(before.values().all(|keys| !keys.is_empty()));
    let files = files_of(&lake).await;
    assert!(tables.iter().all(|t| files[*t] == 10), "{files:?}");

    let done = maintain(
        &lake,
        VacuumRetention::default(),
        &CompactOptions::default(),
    )
    .await
    .unwrap();
    for m in &done {
        assert!(m.error.is_none(), "{m:?}");
        if tables.contains(&m.table.as_str()) {
            assert_eq!(
                (m.compaction.files_removed, m.compaction.files_added),
                (10, 1),
                "{m:?}"
            );
        }
    }
    let files = files_of(&lake).await;
    assert!(tables.iter().all(|t| files[*t] == 1), "{files:?}");
    // the same rows, byte for byte (lineage columns and raw record included)
    for t in tables {
        let mut keys = row_keys(&lake, t).await;
        keys.sort();
        assert_eq!(keys, before[t], "{t}");
    }

    // the same lake handle, whose cached table state predates the compaction: a redelivery
    // overlapping what was compacted adds only the new events
    deliver(&lake, &source, &evs[30..60]).await;
    let rows = lake_rows(&lake).await;
    assert_eq!(non_meta(&rows).values().sum::<u64>(), total_records(&evs));
    assert_no_duplicates(&lake).await;

    // nothing left to compact: one big-enough file and one new one per table
    let again = maintain(
        &lake,
        VacuumRetention::default(),
        &CompactOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        again.iter().all(|m| m.compaction.files_removed == 0),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_commits_over_appends_made_while_it_ran() {
    // Maintenance runs beside the handler: appends land between compaction's read of the
    // table and its commit. The commit must go through (compaction conflicts with no blind
    // append), remove only the files it read, and lose nothing appended meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let source = SourceId::event_hub("ns", "defender", "0");
    let evs = events(60);
    for w in evs[0..40].chunks(4) {
        deliver(&lake, &source, w).await;
    }
    let cat = Category::from_wire("AdvancedHunting-DeviceProcessEvents").unwrap();
    let old = lake
        .typed(cat)
        .unwrap()
        .load_existing()
        .await
        .unwrap()
        .unwrap();
    deliver(&lake, &source, &evs[40..60]).await; // lands after compaction's snapshot
    // no budget, no work
    let none = compact(&old, &CompactOptions::default(), 0).await.unwrap();
    assert_eq!((none.files_removed, none.version), (0, None));
    let c = compact(&old, &CompactOptions::default(), u64::MAX)
        .await
        .unwrap();
    assert_eq!((c.files_removed, c.files_added), (10, 1), "{c:?}");
    assert_eq!(
        c.version,
        Some(old.version().unwrap() + 2),
        "committed after the append"
    );
    let files = files_of(&lake).await;
    assert_eq!(
        files["DeviceProcessEvents"], 2,
        "the compacted file and the late append's"
    );
    let rows = lake_rows(&lake).await;
    assert_eq!(non_meta(&rows).values().sum::<u64>(), total_records(&evs));
    assert_no_duplicates(&lake).await;
}

/// Defender re-sends (identical properties, a fresh envelope time) spread over sources.
fn resends(source: usize) -> Vec<String> {
    (0..8)
        .map(|i| {
            // records 0..4 are sent by every source; 4..8 are each source's own
            let name = if i < 4 {
                format!("shared-{i}")
            } else {
                format!("own-{source}-{i}")
            };
            // today's: maintenance dedups the recent days' partitions only
            let today = chrono::Utc::now().format("%Y-%m-%d");
            format!(
                r#"{{"time":"{today}T1{source}:00:00Z","tenantId":"t","category":"AdvancedHunting-DeviceProcessEvents","properties":{{"Timestamp":"{today}T00:01:00Z","DeviceName":"{name}"}}}}"#
            )
        })
        .chain((0..2).map(|i| format!(
            r#"{{"time":"2026-11-29T1{source}:00:00Z","tenantId":"t","category":"AdvancedHunting-DeviceNetworkEvents","properties":{{"Timestamp":"2026-11-29T09:59:00Z","DeviceName":"net-{source}-{i}"}}}}"#
        )))
        .collect()
}

/// Compacts as soon as a partition has two files, so a maintenance run commits a dedup and a
/// compaction.
fn eager() -> CompactOptions {
    CompactOptions {
        min_files: 2,
        ..CompactOptions::default()
    }
}

async fn land_resends(lake: &Lake) {
    for s in 0..3 {
        let lines = resends(s);
        let u: Vec<Unit> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
            .collect();
        ingest_units(
            lake,
            &SourceId::custom(format!("blob://{s}")),
            &u,
            &PipelineConfig::default(),
        )
        .await
        .unwrap();
    }
}

async fn hashes(lake: &Lake) -> Vec<i64> {
    use xdr_ingest::deltalake::arrow::array::{Array, Int64Array};
    let mut out = Vec::new();
    for b in read(lake, "DeviceProcessEvents").await {
        let h = b
            .column_by_name("_record_hash")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        out.extend((0..h.len()).map(|i| h.value(i)));
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_dedup_heals_after_a_crash_and_races_safely() {
    let dir = tempfile::tempdir().unwrap();
    // 3 sources x 8 records, 4 shared: 24 rows land, 16 distinct
    let clean = dir.path().join("clean");
    land_resends(&local_lake(&clean)).await;
    let (lake, store) = failing_lake(&clean, usize::MAX, FailMode::Before);
    let before = store.commits.load(Ordering::SeqCst);
    let done = maintain(&lake, VacuumRetention::default(), &eager())
        .await
        .unwrap();
    let m = done
        .iter()
        .find(|m| m.table == "DeviceProcessEvents")
        .unwrap();
    assert_eq!(m.dedup.rows_removed, 8, "{m:?}");
    let commits = store.commits.load(Ordering::SeqCst) - before;
    assert!(commits >= 2, "a dedup and a compaction: {commits}");
    let want = hashes(&lake).await;
    assert_eq!(want.len(), 16);
    assert!(want.windows(2).all(|w| w[0] != w[1]));

    // a commit failing at each point of a maintenance run: the next run heals, never a row
    // lost or left twice
    for mode in [FailMode::Before, FailMode::After] {
        for k in 1..=commits {
            let d = dir.path().join(format!("m-{mode:?}-{k}"));
            land_resends(&local_lake(&d)).await;
            let (lake, _) = failing_lake(&d, k, mode);
            let _ = maintain(&lake, VacuumRetention::default(), &eager()).await;
            let lake = local_lake(&d);
            maintain(&lake, VacuumRetention::default(), &eager())
                .await
                .unwrap();
            assert_eq!(hashes(&lake).await, want, "{mode:?} k={k}");
            assert_eq!(lake_rows(&lake).await["DeviceNetworkEvents"], 6);
            // and a redelivery of everything adds nothing
            land_resends(&lake).await;
            assert_eq!(hashes(&lake).await, want, "{mode:?} k={k}: redelivered");
        }
    }

    // three maintenance runs at once (three processes) beside a new source's append
    let d = dir.path().join("race");
    land_resends(&local_lake(&d)).await;
    let handles: Vec<Lake> = (0..3).map(|_| local_lake(&d)).collect();
    let late = local_lake(&d);
    let late_lines = resends(3);
    let late_units: Vec<Unit> = late_lines
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    let opts = eager();
    let cfg = PipelineConfig::default();
    let source = SourceId::custom("blob://3");
    let (runs, appended) = tokio::join!(
        futures::future::join_all(handles.iter().map(|l| maintain(
            l,
            VacuumRetention::default(),
            &opts
        ))),
        ingest_units(&late, &source, &late_units, &cfg)
    );
    appended.unwrap();
    for r in runs {
        for m in r.unwrap() {
            assert!(m.error.is_none(), "{m:?}");
        }
    }
    // a last run takes what the race left (the late source's shared copies)
    maintain(&late, VacuumRetention::default(), &eager())
        .await
        .unwrap();
    let h = hashes(&late).await;
    assert_eq!(h.len(), 16 + 4, "the late source's own 4 records are kept");
    assert!(h.windows(2).all(|w| w[0] != w[1]));
}

/// Group commit with a linger (as the handler runs it): 8 partitions delivering at once, and
/// partition 0 redelivered at the same time with other batch boundaries, land every record
/// once, in far fewer commits than appends: each table's committer waits for the others'
/// appends to join its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_group_commits_keep_redeliveries_exact() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let settings = LakeSettings {
        linger: Duration::from_millis(300),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(dir.path().to_str().unwrap(), settings).unwrap());
    // the tables exist before the partitions race (creation is not what is measured)
    let evs = events(60);
    deliver(
        &lake,
        &SourceId::event_hub("ns", "defender", "warm"),
        &evs[..3],
    )
    .await;
    let chunks = 3;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let lake = lake.clone();
        let evs = evs.clone();
        tasks.push(tokio::spawn(async move {
            let source = SourceId::event_hub("ns", "defender", &p.to_string());
            for w in evs.chunks(evs.len() / chunks) {
                deliver(&lake, &source, w).await
            }
        }));
    }
    {
        let lake = lake.clone();
        let evs = evs.clone();
        tasks.push(tokio::spawn(async move {
            let source = SourceId::event_hub("ns", "defender", "0");
            for w in evs.chunks(7) {
                deliver(&lake, &source, w).await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rows = lake_rows(&lake).await;
    assert_eq!(
        non_meta(&rows).values().sum::<u64>(),
        8 * total_records(&evs) + total_records(&evs[..3])
    );
    assert_no_duplicates(&lake).await;
    let info = xdr_ingest::sink::inspect::lake_info(&lake).await.unwrap();
    let dpe = info
        .iter()
        .find(|t| t.name == "DeviceProcessEvents")
        .unwrap();
    assert_eq!(dpe.sources.len(), 9, "{:?}", dpe.sources);
    // 8 x 3 appends plus the redelivery's 9 (partition 0's two deliveries never share a
    // commit): with the linger they share a handful of commits (1 create + 1 warm-up + ...)
    assert!(
        dpe.version <= 2 + 12,
        "lingering appends should share commits: version {}",
        dpe.version
    );
}

/// The handler's Event Hub path with group commit's linger: four partitions' batches at once
/// share each table's commit (and `_ingest_runs`'), and a crash at any of those commits
/// (before it lands, or after it landed unheard) heals when the host redelivers every batch
/// to a new process with other boundaries: every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_shared_commit_heals_on_redelivery() {
    use std::time::Duration;
    use xdr_ingest::ingest::eventhub::ingest_event_batch;
    use xdr_ingest::sink::with_linger;
    let dir = tempfile::tempdir().unwrap();
    let evs = events(24);
    let partitions = 4;
    // each partition delivers its events in two batches, all partitions at once
    async fn deliver_all(lake: Arc<Lake>, evs: Vec<(i64, String)>, parts: usize, batch: usize) {
        let mut tasks = Vec::new();
        for p in 0..parts {
            let lake = lake.clone();
            let evs = evs.clone();
            tasks.push(tokio::spawn(async move {
                let source = SourceId::event_hub("ns", "hub", &p.to_string());
                for w in evs.chunks(batch) {
                    let units: Vec<Unit> = w
                        .iter()
                        .map(|(seq, body)| Unit {
                            enqueued_at: Some(1_700_000_000_000_000 + seq),
                            ..Unit::new(body.as_bytes(), *seq)
                        })
                        .collect();
                    with_linger(
                        Duration::from_millis(100),
                        ingest_event_batch(&lake, &source, &units, &PipelineConfig::default()),
                    )
                    .await?;
                }
                Ok::<_, xdr_ingest::ingest::eventhub::EventBatchError>(())
            }));
        }
        let mut failed = None;
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            panic!("{e}");
        }
    }
    let clean = dir.path().join("clean");
    let (lake, store) = failing_lake(&clean, usize::MAX, FailMode::Before);
    deliver_all(Arc::new(lake), evs.clone(), partitions, 12).await;
    let commits = store.commits.load(Ordering::SeqCst);
    let want = non_meta(&lake_rows(&local_lake(&clean)).await);
    assert_eq!(
        want.values().sum::<u64>(),
        partitions as u64 * total_records(&evs)
    );
    for mode in [FailMode::Before, FailMode::After] {
        for k in 1..=commits {
            let lake_dir = dir.path().join(format!("eh-{mode:?}-{k}"));
            let (lake, _) = failing_lake(&lake_dir, k, mode);
            let lake = Arc::new(lake);
            // the first delivery may fail (the host retries it): run it in a task of its own
            let _ = tokio::spawn(deliver_all(lake, evs.clone(), partitions, 12)).await;
            // the host redelivers to a new process, with other boundaries
            let lake = Arc::new(local_lake(&lake_dir));
            deliver_all(lake.clone(), evs.clone(), partitions, 7).await;
            assert_eq!(
                non_meta(&lake_rows(&lake).await),
                want,
                "{mode:?} k={k} of {commits}"
            );
            assert_no_duplicates(&lake).await;
        }
    }
}
