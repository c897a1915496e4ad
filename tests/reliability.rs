//! The loss and duplication paths a reliability campaign found, one test each (issue 9 of the
//! project): concurrent compactions, a file reached twice, an unsafe vacuum, a recreated
//! Event Hub, gaps and out-of-order batches, lone surrogates. The handler- and process-level
//! cases (settings, full disks, log levels, the allow-list, replay refusals, the sweep after
//! an outage) are in `handler.rs` and `cli.rs`.

mod common;

use common::*;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::arrow::array::{Array, AsArray};
use xdr_ingest::deltalake::arrow::datatypes::Int64Type;
use xdr_ingest::ingest::eventhub::{EventBatchError, ingest_event_batch};
use xdr_ingest::ingest::{FileOptions, ingest_files};
use xdr_ingest::model::{Category, SourceId};
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::sink::Lake;
use xdr_ingest::sink::maintain::{CompactOptions, VacuumRetention, compact, maintain};
use xdr_ingest::source::file::collect_inputs;

/// One Event Hub body per sequence number, one record each, for three tables.
fn bodies(from: i64, n: i64, tag: &str) -> Vec<(i64, String)> {
    (from..from + n)
        .map(|seq| {
            let table = ["DeviceProcessEvents", "DeviceFileEvents", "DeviceNetworkEvents"][(seq % 3) as usize];
            (
                seq,
                format!(
                    r#"{{"records":[{{"time":"2026-07-18T14:08:10Z","category":"AdvancedHunting-{table}","properties":{{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"{tag}-{seq}"}}}}]}}"#
                ),
            )
        })
        .collect()
}

fn units<'a>(evs: &'a [(i64, String)], enqueued_base: i64) -> Vec<Unit<'a>> {
    evs.iter()
        .map(|(seq, body)| Unit {
            bytes: body.as_bytes(),
            full_len: body.len(),
            position: *seq,
            enqueued_at: Some(enqueued_base + seq * 1000),
        })
        .collect()
}

async fn typed_total(lake: &Lake) -> u64 {
    non_meta(&lake_rows(lake).await).values().sum()
}

/// The `DeviceName`s of three tables, sorted: what landed, by content.
async fn names(lake: &Lake) -> Vec<String> {
    let mut out = Vec::new();
    for t in [
        "DeviceProcessEvents",
        "DeviceFileEvents",
        "DeviceNetworkEvents",
    ] {
        for b in read(lake, t).await {
            if let Some(c) = b.column_by_name("DeviceName") {
                out.extend(c.as_string::<i32>().iter().flatten().map(str::to_owned));
            }
        }
    }
    out.sort();
    out
}

/// `_ingest_runs` rows of one source: (start, end, positions_skipped, positions_redelivered, note).
async fn run_rows(
    lake: &Lake,
    source: &str,
) -> Vec<(i64, i64, Option<i64>, Option<i64>, Option<String>)> {
    let mut out = Vec::new();
    for b in read(lake, "_ingest_runs").await {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let (src, start, end, skipped, redel, note) = (
            col("source"),
            col("start_position"),
            col("end_position"),
            col("positions_skipped"),
            col("positions_redelivered"),
            col("note"),
        );
        let (src, start, end) = (
            src.as_string::<i32>(),
            start.as_primitive::<Int64Type>(),
            end.as_primitive::<Int64Type>(),
        );
        let (skipped, redel, note) = (
            skipped.as_primitive::<Int64Type>(),
            redel.as_primitive::<Int64Type>(),
            note.as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            if src.value(i) == source {
                out.push((
                    start.value(i),
                    end.value(i),
                    skipped.is_valid(i).then(|| skipped.value(i)),
                    redel.is_valid(i).then(|| redel.value(i)),
                    note.is_valid(i).then(|| note.value(i).to_owned()),
                ));
            }
        }
    }
    out.sort();
    out
}

// ---- 1. concurrent compactions ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compactions_never_duplicate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let source = SourceId::event_hub("ns", "defender", "0");
    let evs = bodies(0, 90, "c");
    let cfg = PipelineConfig::default();
    for w in evs[0..60].chunks(6) {
        let u = units(w, 0);
        ingest_units(&lake, &source, &u, &cfg).await.unwrap(); // ten small files per table
    }
    let cat = Category::from_wire("AdvancedHunting-DeviceProcessEvents").unwrap();
    // three compactions from the same snapshot, racing each other and an append
    let snapshots = futures::future::join_all((0..3).map(|_| async {
        lake.typed(cat)
            .unwrap()
            .load_existing()
            .await
            .unwrap()
            .unwrap()
    }))
    .await;
    let late = units(&evs[60..90], 0);
    let opts = CompactOptions::default();
    let (results, appended) = tokio::join!(
        futures::future::join_all(snapshots.iter().map(|t| compact(t, &opts, u64::MAX))),
        ingest_units(&lake, &source, &late, &cfg)
    );
    appended.unwrap();
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let committed = results.iter().filter(|c| c.version.is_some()).count();
    assert_eq!(committed, 1, "exactly one compaction commits: {results:?}");
    assert!(
        results
            .iter()
            .filter(|c| c.version.is_none())
            .all(|c| c.gave_up.is_some()),
        "{results:?}"
    );
    assert_eq!(typed_total(&lake).await, 90);
    assert_no_duplicates(&lake).await;

    // whole maintenance runs at once, on three lake handles (three processes), beside appends
    let more = bodies(90, 60, "c");
    for w in more[0..40].chunks(4) {
        let u = units(w, 0);
        ingest_units(&lake, &source, &u, &cfg).await.unwrap();
    }
    let handles: Vec<Lake> = (0..3).map(|_| local_lake(dir.path())).collect();
    let last = units(&more[40..60], 0);
    let (runs, appended) = tokio::join!(
        futures::future::join_all(handles.iter().map(|l| maintain(
            l,
            VacuumRetention::default(),
            &opts
        ))),
        ingest_units(&lake, &source, &last, &cfg)
    );
    appended.unwrap();
    for r in runs {
        for m in r.unwrap() {
            assert!(m.error.is_none(), "{m:?}");
        }
    }
    assert_eq!(typed_total(&lake).await, 150);
    assert_no_duplicates(&lake).await;
    assert_eq!(names(&lake).await.len(), 150);
}

// ---- 2. the same file reached twice -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_reached_twice_in_one_run_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sub = data.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let line = |n: &str| {
        format!(
            r#"{{"time":"2026-07-18T14:08:10Z","category":"AdvancedHunting-DeviceInfo","properties":{{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"{n}"}}}}"#
        ) + "\n"
    };
    std::fs::write(data.join("a.json"), line("a1") + &line("a2")).unwrap();
    std::fs::write(sub.join("b.json"), line("b1")).unwrap();
    std::os::unix::fs::symlink(data.join("a.json"), dir.path().join("link.json")).unwrap();

    let paths = vec![
        data.join("a.json"),
        data.join("a.json"),
        data.clone(),
        sub.clone(),
        dir.path().join("link.json"),
        data.join("sub/../a.json"),
    ];
    let inputs = collect_inputs(&paths).unwrap();
    assert_eq!(inputs.len(), 2, "{inputs:?}");
    let lake = local_lake(&dir.path().join("lake"));
    let cfg = PipelineConfig::default();
    let run = ingest_files(&lake, &inputs, &cfg, &FileOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(run.written, 3);
    assert_eq!(lake_rows(&lake).await["DeviceInfo"], 3);
    // and even a caller that hands the library the same file twice gets it once
    let lake2 = local_lake(&dir.path().join("lake2"));
    let twice = vec![data.join("a.json"), dir.path().join("link.json")];
    ingest_files(&lake2, &twice, &cfg, &FileOptions::default(), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(lake_rows(&lake2).await["DeviceInfo"], 2);
    assert_no_duplicates(&lake2).await;
}

// ---- 3. vacuum below the floor ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_never_deletes_what_a_running_ingest_will_commit() {
    assert!(VacuumRetention::new(0, false).is_err());
    assert!(VacuumRetention::new(167, false).is_err());
    let e = VacuumRetention::new(1, false).unwrap_err().to_string();
    assert!(e.contains("not committed yet"), "{e}");
    assert_eq!(VacuumRetention::new(168, false).unwrap().hours(), 168);
    assert_eq!(VacuumRetention::new(0, true).unwrap().hours(), 0);

    // maintenance with the default retention beside a running ingest: nothing lost
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(&dir.path().join("lake"));
    let source = SourceId::event_hub("ns", "defender", "9");
    let evs = bodies(0, 200, "v");
    let cfg = PipelineConfig::default();
    let writer = async {
        for w in evs.chunks(10) {
            let u = units(w, 0);
            ingest_units(&lake, &source, &u, &cfg).await.unwrap();
        }
    };
    let maint = async {
        let other = local_lake(&dir.path().join("lake"));
        for _ in 0..5 {
            for m in maintain(
                &other,
                VacuumRetention::default(),
                &CompactOptions::default(),
            )
            .await
            .unwrap()
            {
                assert!(m.error.is_none(), "{m:?}");
            }
        }
    };
    tokio::join!(writer, maint);
    assert_eq!(typed_total(&lake).await, 200);
    assert_no_duplicates(&lake).await;
    // every file the tables reference is there (a fresh read of every row succeeds)
    assert_eq!(names(&lake).await.len(), 200);
}

// ---- 4. a recreated Event Hub -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_event_hub_lands_in_a_new_epoch_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let partition = SourceId::event_hub("ns.servicebus.windows.net", "defender", "2");
    let cfg = PipelineConfig::default();
    let t0 = 1_784_000_000_000_000;
    let old = bodies(0, 100, "old");
    for w in old.chunks(25) {
        let o = ingest_event_batch(&lake, &partition, &units(w, t0), &cfg)
            .await
            .unwrap();
        assert_eq!(o.source, partition);
        assert_eq!(o.continuity.note(), None);
    }
    // the hub is deleted and recreated: numbering starts at 0 again, enqueued later
    let t1 = t0 + 86_400_000_000;
    let new = bodies(0, 60, "new");
    let o = ingest_event_batch(&lake, &partition, &units(&new[0..30], t1), &cfg)
        .await
        .unwrap();
    assert_eq!(o.continuity.epoch, 1);
    assert_eq!(o.continuity.restarted_after, Some(99));
    assert_eq!(o.source.as_str(), format!("{partition}#epoch1"));
    assert_eq!(o.report.commit.written(), 30);
    // the rest of the new hub, then a redelivery with other boundaries: exactly once
    ingest_event_batch(&lake, &partition, &units(&new[30..60], t1), &cfg)
        .await
        .unwrap();
    let again = ingest_event_batch(&lake, &partition, &units(&new[10..50], t1), &cfg)
        .await
        .unwrap();
    assert_eq!(again.continuity.epoch, 1);
    assert_eq!(again.report.commit.written(), 0);
    assert_eq!(again.continuity.redelivered, Some((10, 49, 40)));
    // a late redelivery of the old hub's events is still recognised as such
    assert_eq!(typed_total(&lake).await, 160);
    assert_no_duplicates(&lake).await;
    let n = names(&lake).await;
    assert_eq!(n.iter().filter(|s| s.starts_with("old-")).count(), 100);
    assert_eq!(n.iter().filter(|s| s.starts_with("new-")).count(), 60);
    // the run table says what happened
    let runs = run_rows(&lake, &format!("{partition}#epoch1")).await;
    assert!(
        runs.iter().any(|r| r
            .4
            .as_deref()
            .is_some_and(|n| n.contains("sequence restarted"))),
        "{runs:?}"
    );
    // a new process (no cache) agrees
    let fresh = local_lake(dir.path());
    let o = ingest_event_batch(&fresh, &partition, &units(&new[55..60], t1), &cfg)
        .await
        .unwrap();
    assert_eq!((o.continuity.epoch, o.report.commit.written()), (1, 0));
}

// ---- 5. gaps, out-of-order and negative positions -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_regressions_are_counted_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let p = SourceId::event_hub("ns", "defender", "4");
    let cfg = PipelineConfig::default();
    let evs = bodies(0, 40, "g");
    let o = ingest_event_batch(&lake, &p, &units(&evs[0..10], 0), &cfg)
        .await
        .unwrap();
    assert_eq!(o.continuity.gap, None);
    // 10..19 never arrive
    let o = ingest_event_batch(&lake, &p, &units(&evs[20..30], 0), &cfg)
        .await
        .unwrap();
    assert_eq!(o.continuity.gap, Some((10, 19)));
    // an old batch shows up late: a regression, counted, nothing written twice
    let o = ingest_event_batch(&lake, &p, &units(&evs[5..15], 0), &cfg)
        .await
        .unwrap();
    assert_eq!(o.continuity.redelivered, Some((5, 14, 10)));
    assert_eq!(o.report.commit.written(), 0);
    let runs = run_rows(&lake, p.as_str()).await;
    assert!(
        runs.contains(&(
            20,
            29,
            Some(10),
            None,
            runs.iter().find(|r| r.0 == 20).and_then(|r| r.4.clone())
        )),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.0 == 20 && r.4.as_deref().is_some_and(|n| n.contains("10-19"))),
        "{runs:?}"
    );
    // the redelivery that added nothing is in the run table too
    assert!(
        runs.iter().any(|r| (r.0, r.1, r.3) == (5, 14, Some(10))),
        "{runs:?}"
    );
    // negative or non-increasing sequence numbers are refused, never silently dropped
    let neg = vec![(-3i64, evs[0].1.clone())];
    let e = ingest_event_batch(&lake, &p, &units(&neg, 0), &cfg)
        .await
        .unwrap_err();
    assert!(matches!(e, EventBatchError::Positions(_)), "{e}");
    let mut backwards = units(&evs[30..32], 0);
    backwards.reverse();
    assert!(
        ingest_event_batch(&lake, &p, &backwards, &cfg)
            .await
            .is_err()
    );

    // 16 concurrent overlapping batches of one partition (out of order, which the host never
    // does): every event either landed or lies in a gap recorded in the run table
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let p = SourceId::event_hub("ns", "defender", "5");
    let evs = bodies(0, 160, "o");
    let batches: Vec<Vec<(i64, String)>> = (0..16)
        .map(|i| evs[(i * 9)..(i * 9 + 20).min(160)].to_vec())
        .collect();
    let handles: Vec<Lake> = (0..4).map(|_| local_lake(dir.path())).collect();
    let results = futures::future::join_all(batches.iter().enumerate().map(|(i, b)| {
        let lake = &handles[i % 4];
        let p = &p;
        let cfg = &cfg;
        async move { ingest_event_batch(lake, p, &units(b, 0), cfg).await }
    }))
    .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert_no_duplicates(&lake).await;
    let landed: std::collections::HashSet<i64> = names(&lake)
        .await
        .iter()
        .map(|n| n.trim_start_matches("o-").parse().unwrap())
        .collect();
    let gaps: Vec<(i64, i64)> = run_rows(&lake, p.as_str())
        .await
        .iter()
        .filter_map(|r| r.4.as_ref().and_then(|n| gap_of(n)))
        .collect();
    let delivered: std::collections::BTreeSet<i64> =
        batches.iter().flatten().map(|(s, _)| *s).collect();
    assert_eq!(delivered.len(), 155);
    for &seq in &delivered {
        assert!(
            landed.contains(&seq) || gaps.iter().any(|(a, b)| (*a..=*b).contains(&seq)),
            "event {seq} neither landed nor is in a recorded gap {gaps:?}"
        );
    }
}

/// The range of a "gap: sequence numbers a-b" note.
fn gap_of(note: &str) -> Option<(i64, i64)> {
    let rest = note.split("gap: sequence numbers ").nth(1)?;
    let range = rest.split(' ').next()?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

// ---- 6. lone surrogates -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_surrogate_is_kept_readable_rescued_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.json");
    std::fs::write(
        &input,
        concat!(
            r#"{"category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"host-\ud800-1"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let lake = local_lake(&dir.path().join("lake"));
    let (stats, _) = ingest_paths(
        &lake,
        &[input],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    assert_eq!(stats.rescued_total(), 1);
    let b = &read(&lake, "DeviceInfo").await[0];
    assert_eq!(
        b.column_by_name("DeviceName")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "host-\u{FFFD}-1"
    );
    assert_eq!(
        b.column_by_name("_rescued")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        r#"{"DeviceName":"host-\ud800-1"}"#
    );
}
