//! Helpers shared by the integration tests: temporary lakes, reading tables back, a failing
//! object store, and the external tools (Azurite, DuckDB) that `scripts/test.sh` installs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use xdr_ingest::deltalake::arrow::array::{AsArray, RecordBatch};
use xdr_ingest::deltalake::arrow::datatypes::Int64Type;
use xdr_ingest::ingest::{FileOptions, FileOutcome, ingest_files};
use xdr_ingest::pipeline::{BatchStats, PipelineConfig};
use xdr_ingest::sink::inspect::{lake_info, read_table};
use xdr_ingest::sink::{Lake, LakeSettings};
use xdr_ingest::source::file::collect_inputs;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Defender sample lines, which this repository may not redistribute: found at
/// `$XDR_REAL_SAMPLES` or `../shared/defender/samples/streaming` next to the checkout. `None`
/// (with a note) when they are not there, as on a plain clone: the tests that want them skip.
pub fn real_samples() -> Option<PathBuf> {
    let p = std::env::var_os("XDR_REAL_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/defender/samples/streaming"));
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "note: the real Defender samples are not at {} (set XDR_REAL_SAMPLES): skipping the part that reads them",
            p.display()
        );
        None
    }
}

pub fn local_lake(dir: &Path) -> Lake {
    Lake::open(dir.to_str().expect("utf-8 path"), LakeSettings::default()).expect("open lake")
}

/// Ingests every input under `paths` (as the CLI does: chunks of many files per commit)
/// and sums the stats.
pub async fn ingest_paths(
    lake: &Lake,
    paths: &[PathBuf],
    cfg: &PipelineConfig,
    opts: &FileOptions,
) -> (BatchStats, Vec<FileOutcome>) {
    let files = collect_inputs(paths).expect("inputs");
    let run = ingest_files(lake, &files, cfg, opts, &mut |_| {})
        .await
        .expect("ingest");
    let mut total = BatchStats::default();
    for o in &run.files {
        total.add(&o.stats);
    }
    (total, run.files)
}

/// Rows per table as the lake's Delta logs count them (file stats).
pub async fn lake_rows(lake: &Lake) -> BTreeMap<String, u64> {
    lake_info(lake)
        .await
        .expect("lake info")
        .into_iter()
        .map(|i| (i.name, i.rows))
        .collect()
}

/// Dead letters per reason, read from the dead-letter table's Parquet files.
pub async fn dead_by_reason(lake: &Lake) -> BTreeMap<String, u64> {
    lake_info(lake)
        .await
        .expect("lake info")
        .into_iter()
        .find(|i| i.name == "_dead_letters")
        .map(|i| i.by_reason)
        .unwrap_or_default()
}

pub async fn read(lake: &Lake, table: &str) -> Vec<RecordBatch> {
    let h = lake
        .table_by_name(table)
        .expect("handle")
        .expect("known table");
    read_table(&h).await.expect("read").unwrap_or_default()
}

/// (_source, _position, _record_index-or-0) of every row: must be unique in a typed table.
pub async fn row_keys(lake: &Lake, table: &str) -> Vec<(String, i64, String)> {
    let mut keys = Vec::new();
    for b in read(lake, table).await {
        let src = b
            .column_by_name("_source")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let pos = b
            .column_by_name("_position")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let raw = b.column_by_name("_raw").unwrap().as_string::<i32>().clone();
        for i in 0..b.num_rows() {
            keys.push((
                src.value(i).to_owned(),
                pos.value(i),
                raw.value(i).to_owned(),
            ));
        }
    }
    keys
}

/// Panics if any (source, position, raw) appears twice in any typed or dead-letter table.
pub async fn assert_no_duplicates(lake: &Lake) {
    for (table, _) in lake_rows(lake).await {
        // the audit tables have no lineage columns
        if table == "_ingest_runs" || table == "_redrives" {
            continue;
        }
        let mut keys = row_keys(lake, &table).await;
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{table} has duplicate rows");
    }
}

pub fn non_meta(m: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The Python with DuckDB and its delta extension that `scripts/test.sh` installs in `.venv`
/// (or `$XDR_PYTHON`); `None` with a note when it is not there.
pub fn duckdb_python() -> Option<PathBuf> {
    let py = std::env::var_os("XDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    if py.exists() {
        Some(py)
    } else {
        eprintln!(
            "note: {} is missing (scripts/test.sh installs it): DuckDB check skipped",
            py.display()
        );
        None
    }
}
