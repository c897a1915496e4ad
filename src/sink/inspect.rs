//! Read-side views of the lake for `xdr-ingest tables` and tests: each table's version, row
//! count, dead letters by reason, and the txn watermark of each source.

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::runs::INGEST_RUNS_TABLE;
pub use super::runs::{SourceAnomalies, source_anomalies};
use super::{Lake, SinkError, TableHandle, delta_err, get_bytes};
use crate::model::Category;
use crate::registry::DEAD_LETTER_TABLE;

#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub version: u64,
    pub rows: u64,
    pub files: u64,
    /// Dead letters per reason (the dead-letter table only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_reason: BTreeMap<String, u64>,
    /// Txn watermark per source id.
    pub sources: BTreeMap<String, i64>,
    /// When the newest commit was made (ms since the epoch), if the log says.
    pub last_commit_ms: Option<i64>,
}

/// Describes one table, or `None` if it does not exist yet.
pub async fn table_info(h: &TableHandle) -> Result<Option<TableInfo>, SinkError> {
    let Some(table) = h.load_existing().await? else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| delta_err(h, e))?;
    let mut rows = 0u64;
    let mut files = Vec::new();
    for f in snapshot.log_data().iter() {
        rows += f.num_records().unwrap_or(0) as u64;
        files.push(f.object_store_path());
    }
    let store = table.object_store();
    let mut by_reason = BTreeMap::new();
    if h.name() == DEAD_LETTER_TABLE {
        for path in &files {
            let bytes = get_bytes(h, store.as_ref(), path).await?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| delta_err(h, e.into()))?;
            let Some(idx) = builder
                .schema()
                .fields()
                .iter()
                .position(|f| f.name() == crate::registry::dead::REASON)
            else {
                continue;
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| delta_err(h, e.into()))?;
            for batch in reader {
                let batch = batch.map_err(|e| delta_err(h, e.into()))?;
                for r in batch.column(0).as_string::<i32>().iter().flatten() {
                    *by_reason.entry(r.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    // Source ids: the app ids of the txn actions in the retained commit files, each resolved
    // through the kernel (which applies txn expiry).
    let mut app_ids = BTreeSet::new();
    let log_prefix = deltalake::Path::from("_delta_log");
    let metas: Vec<_> = store
        .list(Some(&log_prefix))
        .try_collect()
        .await
        .map_err(|e| delta_err(h, e.into()))?;
    for m in metas {
        if !m.location.as_ref().ends_with(".json") {
            continue;
        }
        let bytes = get_bytes(h, store.as_ref(), &m.location).await?;
        for line in bytes.split(|b| *b == b'\n') {
            if line.starts_with(b"{\"txn\"")
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(id) = v["txn"]["appId"].as_str()
            {
                app_ids.insert(id.to_owned());
            }
        }
    }
    let mut sources = BTreeMap::new();
    for id in app_ids {
        if let Some(v) = snapshot
            .transaction_version(table.log_store().as_ref(), &id)
            .await
            .map_err(|e| delta_err(h, e))?
        {
            sources.insert(id, v);
        }
    }
    let last_commit_ms = table
        .history(Some(1))
        .next()
        .await
        .and_then(Result::ok)
        .and_then(|c| c.timestamp);
    Ok(Some(TableInfo {
        name: h.name().to_owned(),
        version: table.version().unwrap_or(0),
        rows,
        files: files.len() as u64,
        by_reason,
        sources,
        last_commit_ms,
    }))
}

/// Every existing table of the lake: typed tables in registry order, then `_dead_letters`
/// and `_ingest_runs`.
pub async fn lake_info(lake: &Lake) -> Result<Vec<TableInfo>, SinkError> {
    let mut handles = Vec::new();
    for c in Category::all() {
        handles.push(lake.typed(c)?);
    }
    handles.push(lake.dead_letters()?);
    handles.push(lake.ingest_runs()?);
    let infos = futures::future::join_all(handles.iter().map(|h| table_info(h))).await;
    let mut out = Vec::new();
    for i in infos {
        if let Some(i) = i? {
            out.push(i);
        }
    }
    out.sort_by(|a, b| {
        let special = |n: &str| n == DEAD_LETTER_TABLE || n == INGEST_RUNS_TABLE;
        (special(&a.name), &a.name).cmp(&(special(&b.name), &b.name))
    });
    Ok(out)
}

/// Reads every row of a table's current version (all columns), for tests and checks on
/// small tables; `None` if the table does not exist.
pub async fn read_table(h: &TableHandle) -> Result<Option<Vec<RecordBatch>>, SinkError> {
    let Some(table) = h.load_existing().await? else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| delta_err(h, e))?;
    let store = table.object_store();
    let mut out = Vec::new();
    for f in snapshot.log_data().iter() {
        let bytes = get_bytes(h, store.as_ref(), &f.object_store_path()).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| delta_err(h, e.into()))?;
        for batch in reader {
            out.push(batch?);
        }
    }
    Ok(Some(out))
}
