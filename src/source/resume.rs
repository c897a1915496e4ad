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
use crate::pipeline::{BatchReport, BatchStats, PipelineConfig, PipelineError, ingest_units};
use crate::registry::ingest_runs_schema;
use crate::sink::{AppendOutcome, Lake, SinkError};

/// Where to continue reading `source`: 0 if it was never read.
pub async fn resume_offset(lake: &Lake, source: &SourceId) -> Result<i64, SinkError> {
    Ok(lake.resume_position(source).await?.unwrap_or(0).max(0))
}

/// Ingests one chunk of a resumable source and records it in `_ingest_runs`.
pub async fn ingest_chunk(
    lake: &Lake,
    source: &SourceId,
    chunk: &Chunk,
    cfg: &PipelineConfig,
) -> Result<BatchReport, PipelineError> {
    let started = chrono::Utc::now().timestamp_micros();
    let units = chunk.units();
    let report = ingest_units(lake, source, &units, cfg).await?;
    record_run(lake, source, chunk.start, chunk.end, &report.stats, started).await?;
    Ok(report)
}

fn run_batch(
    source: &SourceId,
    start: i64,
    end: i64,
    stats: &BatchStats,
    started_at: i64,
) -> Result<RecordBatch, ArrowError> {
    let finished = chrono::Utc::now().timestamp_micros();
    let by_table = serde_json::to_string(&stats.typed_rows).unwrap_or_else(|_| "{}".into());
    let ts = |v: i64| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v]).with_timezone("UTC"))
    };
    let i = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    RecordBatch::try_new(
        ingest_runs_schema(),
        vec![
            Arc::new(StringArray::from(vec![source.as_str()])),
            i(start),
            i(end),
            i(stats.records as i64),
            i(stats.typed_total() as i64),
            i(stats.dead_total() as i64),
            Arc::new(StringArray::from(vec![by_table])),
            i(end - start),
            ts(started_at),
            ts(finished),
            i((finished - started_at) / 1000),
        ],
    )
}

/// Appends the run row with `txn(source, end)`.
pub async fn record_run(
    lake: &Lake,
    source: &SourceId,
    start: i64,
    end: i64,
    stats: &BatchStats,
    started_at: i64,
) -> Result<AppendOutcome, SinkError> {
    let batch = run_batch(source, start, end, stats, started_at)?;
    lake.ingest_runs()?
        .append_exactly_once(&batch, "end_position", "source")
        .await
}
