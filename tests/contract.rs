//! The data contract when Defender changes under us: categories the registry does not know
//! get tables of their own (bounded, garbage stays a dead letter), drift is reported, a schema
//! overlay promotes a column and the Delta table's schema evolves (read back by DuckDB), a type
//! change is refused.

mod common;

use std::process::Command;

use common::*;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::arrow::array::AsArray;
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::sink::inspect::lake_info;

fn rec(category: &str, name: &str) -> String {
    format!(
        r#"{{"time":"2026-11-29T10:00:00Z","tenantId":"t","category":"{category}","properties":{{"Timestamp":"2026-11-29T09:59:00Z","DeviceName":"{name}","ActionType":"x","Extra":{{"a":[1,2]}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_categories_get_untyped_tables_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let src = SourceId::event_hub("ns", "hub", "0");
    let lines: Vec<String> = (0..6)
        .map(|i| {
            let cat = [
                "AdvancedHunting-CloudAuditEvents",
                "AdvancedHunting-BehaviorAnomalies",
            ][i % 2];
            rec(cat, &format!("n{i}"))
        })
        .collect();
    let units: Vec<Unit> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    let cfg = PipelineConfig::default();
    let r = ingest_units(&lake, &src, &units, &cfg).await.unwrap();
    assert!(r.stats.conserved());
    assert_eq!(r.stats.typed_rows["CloudAuditEvents"], 3);
    assert!(r.stats.untyped_tables.contains("BehaviorAnomalies"));
    // a redelivery adds nothing (a txn per source, as for every table)
    let again = ingest_units(&lake, &src, &units[2..], &cfg).await.unwrap();
    assert_eq!(again.commit.written(), 0);
    let fresh = local_lake(dir.path());
    let infos = lake_info(&fresh).await.unwrap();
    let t = infos.iter().find(|i| i.name == "CloudAuditEvents").unwrap();
    assert!(t.untyped);
    assert_eq!(t.rows, 3);
    // the envelope and metadata columns, the properties as JSON, the raw record
    let b = &read(&fresh, "CloudAuditEvents").await[0];
    let props = b.column_by_name("properties").unwrap().as_string::<i32>();
    let v: serde_json::Value = serde_json::from_str(props.value(0)).unwrap();
    assert_eq!(v["Extra"]["a"][1], 2);
    assert!(
        b.column_by_name("_raw")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .contains("CloudAuditEvents")
    );
    // (`_date` is the partition: in the log, not in the files)
    assert!(b.column_by_name("Timestamp").is_some());
    assert_no_duplicates(&fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_categories_does_not_make_thousands_of_tables() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let cfg = PipelineConfig {
        max_new_tables_per_batch: 3,
        max_untyped_tables: 5,
        ..PipelineConfig::default()
    };
    let mut total_records = 0u64;
    for batch in 0..4 {
        // 300 plausible new names and 300 that are not names at all, per batch
        let lines: Vec<String> = (0..600)
            .map(|i| {
                if i % 2 == 0 {
                    rec(&format!("AdvancedHunting-Flood{batch}x{i}"), "f")
                } else {
                    rec(&format!("AdvancedHunting-bad name {i}/.."), "f")
                }
            })
            .collect();
        let units: Vec<Unit> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
            .collect();
        let src = SourceId::custom(format!("flood://{batch}"));
        let r = ingest_units(&lake, &src, &units, &cfg).await.unwrap();
        assert!(r.stats.conserved());
        total_records += r.stats.records;
    }
    let infos = lake_info(&local_lake(dir.path())).await.unwrap();
    let untyped = infos.iter().filter(|i| i.untyped).count();
    assert_eq!(untyped, 5, "the lake-wide cap");
    let rows = lake_rows(&lake).await;
    let dead = rows["_dead_letters"];
    assert_eq!(dead + non_meta(&rows).values().sum::<u64>(), total_records);
    assert_eq!(
        dead_by_reason(&lake).await["unknown_category"],
        total_records - 5
    );
}

fn xdr(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
        .args(args)
        .env_remove("XDR_SCHEMA_FILE")
        .output()
        .unwrap()
}

#[test]
fn drift_then_a_promoted_column_evolves_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d1");
    std::fs::create_dir_all(&data).unwrap();
    let line = |name: &str, extra: &str| {
        format!(
            r#"{{"category":"AdvancedHunting-DeviceInfo","properties":{{"Timestamp":"2026-11-29T10:00:00Z","DeviceId":"d","DeviceName":"{name}","SensorTier":"{extra}","OSBuild":"not-a-number"}}}}"#
        ) + "\n"
    };
    std::fs::write(
        data.join("a.json"),
        line("a", "gold") + &line("b", "silver"),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    assert!(
        xdr(&["ingest", "--lake", lake_s, data.to_str().unwrap()])
            .status
            .success()
    );

    // drift: the key with no column, the value that did not fit, with counts
    let o = xdr(&["drift", "--lake", lake_s, "--json"]);
    assert!(o.status.success());
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = d[0]["items"].as_array().unwrap();
    let find = |k: &str| items.iter().find(|i| i["key"] == k).unwrap().clone();
    assert_eq!(find("SensorTier")["kind"], "unknown_key");
    assert_eq!(find("SensorTier")["count"], 2);
    assert_eq!(find("OSBuild")["kind"], "not_coercible");
    assert_eq!(find("OSBuild")["column_type"], "long");

    // promote it with an overlay: the next commit evolves the table
    let overlay = dir.path().join("overlay.json");
    std::fs::write(
        &overlay,
        r#"{"tables":[{"name":"DeviceInfo","columns":[{"name":"SensorTier","type":"string"}]}]}"#,
    )
    .unwrap();
    let data2 = dir.path().join("d2");
    std::fs::create_dir_all(&data2).unwrap();
    std::fs::write(data2.join("b.json"), line("c", "bronze")).unwrap();
    let o = xdr(&[
        "--schema",
        overlay.to_str().unwrap(),
        "ingest",
        "--lake",
        lake_s,
        data2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // an independent reader sees the new column; the old rows read it as null
    if let Some(py) = duckdb_python() {
        let out = Command::new(py)
            .arg("-c")
            .arg(format!(
                "import sys; sys.path.insert(0, {:?}); from duckdb_check import connect; con = connect(); \
                 print(con.sql(\"select DeviceName, SensorTier from delta_scan('{}') order by 1\").fetchall())",
                repo().join("scripts").display().to_string(),
                lake.join("DeviceInfo").display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            "[('a', None), ('b', None), ('c', 'bronze')]",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // a type change is refused, before anything is touched
    std::fs::write(
        &overlay,
        r#"{"tables":[{"name":"DeviceInfo","columns":[{"name":"OSBuild","type":"string"}]}]}"#,
    )
    .unwrap();
    let o = xdr(&[
        "--schema",
        overlay.to_str().unwrap(),
        "ingest",
        "--lake",
        lake_s,
        data2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused"));
}

#[path = "common/failing_store.rs"]
mod failing_store;

/// Dead letters that a rule too strict for the data rejected: 3 tables, 30 records.
fn strict_rules() -> xdr_ingest::quality::Rules {
    xdr_ingest::quality::Rules::parse(
        "[[rule]]\nname='strict'\ntables=['Device*']\ncolumn='DeviceId'\ncheck='not_null'\naction='reject'\n",
    )
    .unwrap()
}

async fn landed_names(lake: &xdr_ingest::sink::Lake) -> Vec<String> {
    let mut out = Vec::new();
    for t in [
        "DeviceProcessEvents",
        "DeviceFileEvents",
        "DeviceNetworkEvents",
    ] {
        for b in read(lake, t).await {
            out.extend(
                b.column_by_name("DeviceName")
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_owned),
            );
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_lands_fixed_dead_letters_once_even_across_crashes() {
    use failing_store::{FailMode, FailingStore};
    use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
    use xdr_ingest::ingest::redrive::{RedriveFilter, redrive};
    use xdr_ingest::sink::{Lake, LakeSettings};

    let lines: Vec<String> = (0..30)
        .map(|i| {
            let t = [
                "DeviceProcessEvents",
                "DeviceFileEvents",
                "DeviceNetworkEvents",
            ][i % 3];
            rec(&format!("AdvancedHunting-{t}"), &format!("r{i:02}"))
        })
        .collect();
    let units: Vec<Unit> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    let strict = PipelineConfig {
        rules: strict_rules(),
        ..PipelineConfig::default()
    };
    let relaxed = PipelineConfig::default();
    for (k, mode) in (1..=6)
        .flat_map(|k| [(k, FailMode::Before), (k, FailMode::After)])
        .chain([(0, FailMode::Before)])
    {
        let dir = tempfile::tempdir().unwrap();
        let lake = local_lake(dir.path());
        let src = SourceId::event_hub("ns", "hub", "1");
        ingest_units(&lake, &src, &units, &strict).await.unwrap();
        assert_eq!(dead_by_reason(&lake).await["rule_failed"], 30);
        assert!(landed_names(&lake).await.is_empty());
        if k > 0 {
            // a redrive that crashes at its k-th commit (before it lands, or after)
            let store = std::sync::Arc::new(FailingStore::new(
                std::sync::Arc::new(LocalFileSystem::new()),
                k,
                mode,
            ));
            let failing = Lake::open(
                dir.path().to_str().unwrap(),
                LakeSettings {
                    store: Some(store),
                    ..Default::default()
                },
            )
            .unwrap();
            let _ = redrive(&failing, &relaxed, RedriveFilter::default(), None).await;
        }
        // a new process redrives (resuming the crashed run, if there was one)
        let fresh = local_lake(dir.path());
        let o = redrive(&fresh, &relaxed, RedriveFilter::default(), None)
            .await
            .unwrap();
        assert!(o.finished, "k={k} {mode:?}: {o:?}");
        // and again: nothing left to land
        let again = redrive(&fresh, &relaxed, RedriveFilter::default(), None)
            .await
            .unwrap();
        assert_eq!(again.landed.values().sum::<u64>(), 0, "k={k} {mode:?}");
        let names = landed_names(&fresh).await;
        let want: Vec<String> = (0..30).map(|i| format!("r{i:02}")).collect();
        assert_eq!(names, want, "k={k} {mode:?}: every record exactly once");
        // the dead letters stay an audit trail; lineage is the original
        assert_eq!(dead_by_reason(&fresh).await["rule_failed"], 30);
        let keys = row_keys(&fresh, "DeviceFileEvents").await;
        assert!(keys.iter().all(|(s, _, _)| s == src.as_str()), "{keys:?}");
        assert_no_duplicates(&fresh).await;
    }
}

#[test]
fn a_new_category_is_typed_by_redrive_once_the_registry_knows_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    let lines: String = (0..5)
        .map(|i| rec("AdvancedHunting-CloudAuditEvents", &format!("c{i}")) + "\n")
        .collect();
    std::fs::write(data.join("a.json"), lines).unwrap();
    let lake = dir.path().join("lake");
    let lake_s = lake.to_str().unwrap();
    assert!(
        xdr(&["ingest", "--lake", lake_s, data.to_str().unwrap()])
            .status
            .success()
    );
    let o = xdr(&["tables", "--lake", lake_s, "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tables = t["tables"].as_array().unwrap();
    assert!(
        tables
            .iter()
            .any(|x| x["name"] == "CloudAuditEvents" && x["untyped"] == true)
    );

    let overlay = dir.path().join("overlay.json");
    std::fs::write(
        &overlay,
        r#"{"tables":[{"name":"CloudAuditEvents","columns":[{"name":"Timestamp","type":"datetime"},{"name":"DeviceName","type":"string"},{"name":"ActionType","type":"string"}]}]}"#,
    )
    .unwrap();
    let ov = overlay.to_str().unwrap();
    for round in 0..2 {
        let o = xdr(&["--schema", ov, "redrive", "--lake", lake_s, "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let landed = r["landed"]["CloudAuditEvents"].as_u64().unwrap_or(0);
        assert_eq!(landed, if round == 0 { 5 } else { 0 }, "{r}");
    }
    let o = xdr(&["--schema", ov, "tables", "--lake", lake_s, "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tables = t["tables"].as_array().unwrap();
    let typed = tables
        .iter()
        .find(|x| x["name"] == "CloudAuditEvents" && x.get("untyped").is_none())
        .expect("the typed table");
    assert_eq!(typed["rows"], 5);
}

/// The same Defender record sent twice: identical properties, a fresh envelope time.
/// A DeviceProcessEvents record of today (maintenance dedups the recent days' partitions:
/// a fixed date would age out of that window and the test with it).
fn resend(name: &str, time: &str) -> String {
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let time = time.replace("2026-11-29", &today.to_string());
    format!(
        r#"{{"time":"{time}","tenantId":"t","category":"AdvancedHunting-DeviceProcessEvents","properties":{{"Timestamp":"{today}T00:01:00Z","ReportId":77,"DeviceName":"{name}","ProcessCommandLine":"cmd /c x"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defender_resends_are_held_once() {
    use xdr_ingest::sink::maintain::{CompactOptions, VacuumRetention, maintain};
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let cfg = PipelineConfig::default();
    // within one batch: dropped at ingest, and counted
    let b1 = [
        resend("a", "2026-11-29T10:00:00Z"),
        resend("a", "2026-11-29T10:05:00Z"),
        resend("b", "2026-11-29T10:00:00Z"),
    ];
    let units: Vec<Unit> = b1
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    let r = ingest_units(&lake, &SourceId::custom("s://1"), &units, &cfg)
        .await
        .unwrap();
    assert_eq!(r.stats.duplicates["DeviceProcessEvents"], 1);
    assert!(r.stats.conserved(), "{:?}", r.stats);
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 2);
    // across batches (another blob, an hour later): kept at ingest...
    let b2 = [
        resend("a", "2026-11-29T11:00:00Z"),
        resend("c", "2026-11-29T11:00:00Z"),
    ];
    let units: Vec<Unit> = b2
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    ingest_units(&lake, &SourceId::custom("s://2"), &units, &cfg)
        .await
        .unwrap();
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 4);
    // ...and removed by the next maintenance run, the first ingested copy kept
    let done = maintain(
        &lake,
        VacuumRetention::default(),
        &CompactOptions::default(),
    )
    .await
    .unwrap();
    let m = done
        .iter()
        .find(|m| m.table == "DeviceProcessEvents")
        .unwrap();
    assert_eq!(m.dedup.rows_removed, 1, "{m:?}");
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 3);
    let keys = row_keys(&lake, "DeviceProcessEvents").await;
    assert!(
        keys.iter()
            .any(|(s, _, raw)| s == "s://1" && raw.contains(r#""DeviceName":"a""#))
    );
    assert!(
        !keys
            .iter()
            .any(|(s, _, raw)| s == "s://2" && raw.contains(r#""DeviceName":"a""#))
    );
    // counted where an operator looks
    let info = lake_info(&local_lake(dir.path())).await.unwrap();
    assert_eq!(
        info.iter()
            .find(|i| i.name == "DeviceProcessEvents")
            .unwrap()
            .duplicates_removed,
        1
    );
    // nothing more to remove; a redelivery of the removed copy adds nothing
    let again = maintain(
        &lake,
        VacuumRetention::default(),
        &CompactOptions::default(),
    )
    .await
    .unwrap();
    assert!(again.iter().all(|m| m.dedup.rows_removed == 0));
    let r = ingest_units(&lake, &SourceId::custom("s://2"), &units, &cfg)
        .await
        .unwrap();
    assert_eq!(r.commit.written(), 0);
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 3);
    // turned off: kept
    let dir2 = tempfile::tempdir().unwrap();
    let lake2 = local_lake(dir2.path());
    let off = PipelineConfig {
        dedup: false,
        ..PipelineConfig::default()
    };
    let units: Vec<Unit> = b1
        .iter()
        .enumerate()
        .map(|(i, l)| Unit::new(l.as_bytes(), i as i64))
        .collect();
    ingest_units(&lake2, &SourceId::custom("s://1"), &units, &off)
        .await
        .unwrap();
    let done = maintain(
        &lake2,
        VacuumRetention::default(),
        &CompactOptions {
            dedup_days: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(done.iter().all(|m| m.dedup.rows_removed == 0));
    assert_eq!(lake_rows(&lake2).await["DeviceProcessEvents"], 3);
}

/// Registry coverage: every table of the Defender schema reference (the 23 the Streaming API
/// page lists, and the 3 seen streamed beyond it) is in the embedded registry, with every
/// documented column (Log Analytics system columns aside) at its documented type. The
/// reference is not redistributable: without it (a plain clone), this skips with a note.
#[test]
fn the_registry_covers_every_streamable_defender_table() {
    let p = std::env::var_os("XDR_SCHEMA_REFERENCE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/defender/schemas.json"));
    let Ok(text) = std::fs::read_to_string(&p) else {
        eprintln!(
            "note: the Defender schema reference is not at {} (set XDR_SCHEMA_REFERENCE): skipping",
            p.display()
        );
        return;
    };
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tables = reference["tables"].as_object().unwrap();
    assert!(tables.len() >= 26, "{}", tables.len());
    let reg = xdr_ingest::registry::registry();
    let mut missing = Vec::new();
    for (name, t) in tables {
        let cat = t["category"].as_str().unwrap();
        let Some(def) = reg.by_category(cat) else {
            missing.push(format!("table {name} ({cat})"));
            continue;
        };
        assert_eq!(def.name, *name);
        for c in t["columns"].as_array().unwrap() {
            if c["log_analytics_system_column"].as_bool() == Some(true) {
                continue;
            }
            let col = c["name"].as_str().unwrap();
            match def.columns.iter().find(|x| x.name == col) {
                None => missing.push(format!("{name}.{col}")),
                Some(x) => {
                    let ty = serde_json::to_value(x.ty).unwrap();
                    assert_eq!(ty, c["type"], "{name}.{col}");
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in the registry: {missing:?}");
    // and the registry has nothing the reference does not know of
    for def in reg.tables() {
        assert!(
            tables.contains_key(&def.name),
            "{} is not in the reference",
            def.name
        );
    }
}
