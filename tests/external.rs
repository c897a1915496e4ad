//! Against real external parts: the Azure path on a real Azurite, and DuckDB's delta
//! extension reading every table we wrote. `scripts/test.sh` installs both.

#[path = "common/azurite.rs"]
mod azurite;
mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use xdr_ingest::generate::{Form, GenerateOptions, write_dataset};
use xdr_ingest::ingest::FileOptions;
use xdr_ingest::pipeline::PipelineConfig;
use xdr_ingest::sink::inspect::lake_info;
use xdr_ingest::sink::{Lake, LakeSettings};

fn opts(records: usize) -> GenerateOptions {
    GenerateOptions {
        records,
        corrupt_rate: 0.02,
        seed: 99,
        date: chrono::Utc::now().date_naive(),
        small: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_path_on_azurite() {
    let az = azurite::Azurite::start().await;
    az.create_container("lake").await;
    let dir = tempfile::tempdir().unwrap();
    let m = write_dataset(dir.path(), Form::Both, &opts(400)).unwrap();
    let settings = LakeSettings {
        storage_options: az.storage_options(),
        ..Default::default()
    };
    for url in [
        "az://lake/defender".to_owned(),
        format!(
            "abfss://lake@{}.dfs.core.windows.net/other",
            azurite::ACCOUNT
        ),
    ] {
        let lake = Lake::open(&url, settings.clone()).unwrap();
        let cfg = PipelineConfig::default();
        let (stats, _) = ingest_paths(
            &lake,
            &[dir.path().to_path_buf()],
            &cfg,
            &FileOptions::default(),
        )
        .await;
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for e in [m.storage.as_ref().unwrap(), m.eventhub.as_ref().unwrap()] {
            for (k, v) in &e.typed_rows {
                *want.entry(k.clone()).or_default() += v;
            }
        }
        assert_eq!(stats.typed_rows, want);
        // read back through a new handle: the Delta log on Azurite says the same
        let fresh = Lake::open(&url, settings.clone()).unwrap();
        let rows = lake_rows(&fresh).await;
        assert_eq!(non_meta(&rows), want, "{url}");
        assert_eq!(rows["_dead_letters"], stats.dead_total());
        // the txn watermark of every file is recorded
        let runs = lake_info(&fresh)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.name == "_ingest_runs")
            .unwrap();
        assert_eq!(
            runs.sources.len(),
            m.storage.as_ref().unwrap().files.len() + 1
        );
        // a re-run reads nothing and adds nothing
        let (again, _) = ingest_paths(
            &fresh,
            &[dir.path().to_path_buf()],
            &cfg,
            &FileOptions::default(),
        )
        .await;
        assert_eq!(again.records, 0);
        assert_eq!(lake_rows(&fresh).await, rows);
        assert_no_duplicates(&fresh).await;
    }
}

fn python() -> String {
    std::env::var("XDR_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_every_table_we_wrote() {
    let py = python();
    assert!(
        std::path::Path::new(&py).exists(),
        "{py} is missing: run scripts/test.sh (it makes the venv with duckdb + duckdb-ext-delta)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data, Form::Both, &opts(1500)).unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = local_lake(&lake_dir);
    ingest_paths(
        &lake,
        &[data],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    // the real samples too, where they are: their types and quirks must read back as well
    if let Some(samples) = real_samples() {
        ingest_paths(
            &lake,
            &[samples],
            &PipelineConfig::default(),
            &FileOptions::default(),
        )
        .await;
    }

    let out = Command::new(&py)
        .arg(repo().join("scripts/duckdb_check.py"))
        .arg(&lake_dir)
        .output()
        .expect("run duckdb_check.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let infos = lake_info(&lake).await.unwrap();
    assert_eq!(
        infos.len(),
        29,
        "26 typed tables, the generator's new category (untyped), dead letters, runs"
    );
    assert!(
        infos
            .iter()
            .any(|i| i.untyped && i.name == "DeviceTvmSoftwareInventory")
    );
    for info in &infos {
        let d = &duck[&info.name];
        assert_eq!(
            d["rows"].as_u64(),
            Some(info.rows),
            "{}: DuckDB and our log disagree",
            info.name
        );
        if info.name.starts_with('_') {
            continue;
        }
        assert_eq!(
            d["timestamps"].as_u64(),
            Some(info.rows),
            "{}: every Timestamp reads back",
            info.name
        );
        assert!(d["dates"].as_u64().unwrap() >= 1);
    }
    let by_reason: BTreeMap<String, u64> =
        serde_json::from_value(duck["_dead_letters"]["by_reason"].clone()).unwrap();
    assert_eq!(by_reason, dead_by_reason(&lake).await);
}
