//! Read-side views of the lake for `xdr-ingest tables`, `xdr-ingest drift` and tests: each
//! table's version, row count, dead letters by reason, and the txn watermark of each source;
//! what arrives that the schema does not hold (keys in `_rescued`, values that did not fit).

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

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
    /// Defender's re-sends removed by maintenance (over the retained log).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicates_removed: u64,
    /// A table of a category the registry does not know (its `properties` kept as JSON).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untyped: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    let mut duplicates_removed = 0u64;
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
            // re-sends a dedup commit removed (its commit metadata)
            if line.starts_with(b"{\"commitInfo\"")
                && memchr::memmem::find(line, super::maintain::DUPLICATES_REMOVED_KEY.as_bytes())
                    .is_some()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
            {
                duplicates_removed += v["commitInfo"][super::maintain::DUPLICATES_REMOVED_KEY]
                    .as_u64()
                    .unwrap_or(0);
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
        name: h
            .name()
            .strip_prefix(&format!("{}/", super::UNTYPED_DIR))
            .unwrap_or(h.name())
            .to_owned(),
        version: table.version().unwrap_or(0),
        rows,
        files: files.len() as u64,
        by_reason,
        sources,
        last_commit_ms,
        duplicates_removed,
        untyped: h.name().starts_with(super::UNTYPED_DIR),
    }))
}

/// Every existing table of the lake: typed tables in registry order, then `_dead_letters`
/// and `_ingest_runs`.
pub async fn lake_info(lake: &Lake) -> Result<Vec<TableInfo>, SinkError> {
    let mut handles = Vec::new();
    for c in Category::all() {
        handles.push(lake.typed(c)?);
    }
    let mut untyped: Vec<String> = lake.untyped_tables().await?.existing.into_iter().collect();
    untyped.sort();
    for name in untyped {
        handles.push(lake.untyped(&name)?);
    }
    handles.push(lake.dead_letters()?);
    handles.push(lake.ingest_runs()?);
    handles.push(lake.redrives()?);
    let infos = futures::future::join_all(handles.iter().map(|h| table_info(h))).await;
    let mut out = Vec::new();
    for i in infos {
        if let Some(i) = i? {
            out.push(i);
        }
    }
    out.sort_by(|a, b| {
        let special = |n: &str| n.starts_with('_');
        (special(&a.name), a.untyped, &a.name).cmp(&(special(&b.name), b.untyped, &b.name))
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

/// Reads `columns` of a table (those it has), from files of `_date` partitions on or after
/// `since` (all files without it). `None` if the table does not exist.
pub async fn read_columns(
    h: &TableHandle,
    columns: &[&str],
    since: Option<chrono::NaiveDate>,
) -> Result<Option<Vec<RecordBatch>>, SinkError> {
    read_columns_at(h, columns, since, None).await
}

/// [`read_columns`] as of table version `version` (the newest without it).
pub async fn read_columns_at(
    h: &TableHandle,
    columns: &[&str],
    since: Option<chrono::NaiveDate>,
    version: Option<u64>,
) -> Result<Option<Vec<RecordBatch>>, SinkError> {
    let Some(mut table) = h.load_existing().await? else {
        return Ok(None);
    };
    if let Some(v) = version
        && table.version() != Some(v)
    {
        table.load_version(v).await.map_err(|e| delta_err(h, e))?;
    }
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| delta_err(h, e))?;
    let store = table.object_store();
    let mut out = Vec::new();
    for f in files {
        if let Some(since) = since {
            let date = f
                .partition_values_map()
                .get(crate::registry::meta::DATE)
                .cloned()
                .flatten()
                .and_then(|d| chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
            if date.is_some_and(|d| d < since) {
                continue;
            }
        }
        let path = deltalake::Path::from_url_path(f.path().as_ref())
            .map_err(|e| delta_err(h, deltalake::DeltaTableError::Generic(e.to_string())))?;
        let bytes = get_bytes(h, store.as_ref(), &path).await?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| delta_err(h, e.into()))?;
        let mask = super::projection(builder.schema(), builder.parquet_schema(), columns);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| delta_err(h, e.into()))?;
        for batch in reader {
            out.push(batch.map_err(|e| delta_err(h, e.into()))?);
        }
    }
    Ok(Some(out))
}

/// One key that arrives but has no column, or one column whose values did not fit its type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DriftItem {
    /// `unknown_key` (no column) or `not_coercible` (the column's type did not take it).
    pub kind: &'static str,
    pub key: String,
    /// The column's type, for `not_coercible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_type: Option<String>,
    pub count: u64,
    /// When the first and last such row was ingested (RFC 3339).
    pub first_seen: String,
    pub last_seen: String,
    /// One value as it arrived (cut at 200 characters).
    pub example: String,
}

/// The drift of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableDrift {
    pub table: String,
    pub rows_with_rescued: u64,
    pub items: Vec<DriftItem>,
}

/// Per typed table, the keys that arrive but are not columns and the values that failed
/// coercion, from `_rescued`, most frequent first; tables without any are left out.
pub async fn drift(
    lake: &Lake,
    since: Option<chrono::NaiveDate>,
) -> Result<Vec<TableDrift>, SinkError> {
    use crate::registry::meta;
    let mut out = Vec::new();
    for cat in Category::all() {
        let h = lake.typed(cat)?;
        let Some(batches) = read_columns(&h, &[meta::RESCUED, meta::INGESTED_AT], since).await?
        else {
            continue;
        };
        let table = cat.table();
        let mut items: BTreeMap<(String, &'static str), DriftItem> = BTreeMap::new();
        let mut rows = 0u64;
        for b in &batches {
            let (Some(rescued), Some(at)) = (
                b.column_by_name(meta::RESCUED),
                b.column_by_name(meta::INGESTED_AT),
            ) else {
                continue;
            };
            let rescued = rescued.as_string::<i32>();
            let at = at.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                if rescued.is_null(i) {
                    continue;
                }
                let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(rescued.value(i))
                else {
                    continue;
                };
                rows += 1;
                let when = chrono::DateTime::from_timestamp_micros(at.value(i))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                for (k, v) in map {
                    let (kind, column_type) = match table.column_index(&k) {
                        Some(ci) => (
                            "not_coercible",
                            Some(format!("{:?}", table.columns[ci].ty).to_lowercase()),
                        ),
                        None => ("unknown_key", None),
                    };
                    let e = items.entry((k.clone(), kind)).or_insert_with(|| DriftItem {
                        kind,
                        key: k.clone(),
                        column_type,
                        count: 0,
                        first_seen: when.clone(),
                        last_seen: when.clone(),
                        example: v.to_string().chars().take(200).collect(),
                    });
                    e.count += 1;
                    if when < e.first_seen {
                        e.first_seen = when.clone();
                    }
                    if when > e.last_seen {
                        e.last_seen = when.clone();
                    }
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        let mut items: Vec<DriftItem> = items.into_values().collect();
        items.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        out.push(TableDrift {
            table: table.name.clone(),
            rows_with_rescued: rows,
            items,
        });
    }
    Ok(out)
}
