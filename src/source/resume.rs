//! The resume protocol for sources we read ourselves (files, blobs): after every table of a
//! chunk has committed, one row in `_ingest_runs` records the chunk with `txn(source, end)`.
//! The next read starts at that watermark; per-table filters cover a chunk that was cut short.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::error::ArrowError;

use super::lines::Chunk;
use crate::model::SourceId;
use crate::pipeline::{
    BatchReport, BatchStats, PipelineConfig, PipelineError, build_for, commit_built,
};
use crate::registry::ingest_runs_schema;
use crate::sink::{AppendOutcome, Lake, SinkError};

/// Where to continue reading `source`: 0 if it was never read.
pub async fn resume_offset(lake: &Lake, source: &SourceId) -> Result<i64, SinkError> {
    Ok(lake.resume_position(source).await?.unwrap_or(0).max(0))
}

/// Ingests one chunk of a resumable source and records it in `_ingest_runs`. The chunk is
/// consumed: its bytes are freed once the typed batches are built (they own their data), so
/// the input does not stay in memory through the commit.
pub async fn ingest_chunk(
    lake: &Lake,
    source: &SourceId,
    chunk: Chunk,
    cfg: &PipelineConfig,
) -> Result<BatchReport, PipelineError> {
    let started = chrono::Utc::now().timestamp_micros();
    let (start, end) = (chunk.start, chunk.end);
    let (built, build_ms) = build_for(source, &chunk.units(), cfg)?;
    drop(chunk);
    let report = commit_built(lake, built, build_ms).await?;
    record_run(lake, source, start, end, &report.stats, started).await?;
    Ok(report)
}

/// One `_ingest_runs` row: a chunk `[start, end)` of `source` that has committed.
pub struct RunRow<'a> {
    pub source: &'a SourceId,
    pub start: i64,
    pub end: i64,
    pub stats: &'a BatchStats,
    pub started_at: i64,
}

fn run_batch(rows: &[RunRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let finished = chrono::Utc::now().timestamp_micros();
    let ints = |f: &dyn Fn(&RunRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let ts = |f: &dyn Fn(&RunRow) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    RecordBatch::try_new(
        ingest_runs_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.source.as_str()),
            )),
            ints(&|r| r.start),
            ints(&|r| r.end),
            ints(&|r| r.stats.records as i64),
            ints(&|r| r.stats.typed_total() as i64),
            ints(&|r| r.stats.dead_total() as i64),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                serde_json::to_string(&r.stats.typed_rows).unwrap_or_else(|_| "{}".into())
            }))),
            ints(&|r| r.end - r.start),
            ts(&|r| r.started_at),
            ts(&|_| finished),
            ints(&|r| (finished - r.started_at) / 1000),
        ],
    )
}

/// Appends run rows (one commit, with `txn(source, end)` per source).
pub async fn record_runs(lake: &Lake, rows: &[RunRow<'_>]) -> Result<AppendOutcome, SinkError> {
    if rows.is_empty() {
        return Ok(AppendOutcome::default());
    }
    let batch = run_batch(rows)?;
    lake.ingest_runs()?
        .append_exactly_once(&batch, "end_position", "source")
        .await
}

/// Appends the run row of one chunk.
pub async fn record_run(
    lake: &Lake,
    source: &SourceId,
    start: i64,
    end: i64,
    stats: &BatchStats,
    started_at: i64,
) -> Result<AppendOutcome, SinkError> {
    record_runs(
        lake,
        &[RunRow {
            source,
            start,
            end,
            stats,
            started_at,
        }],
    )
    .await
}
