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
    annotate: impl FnOnce(&mut RunRow<'_>),
) -> Result<BatchReport, PipelineError> {
    let started = chrono::Utc::now().timestamp_micros();
    let (start, end) = (chunk.start, chunk.end);
    let (built, build_ms) = build_for(source, &chunk.units(), cfg)?;
    drop(chunk);
    let report = commit_built(lake, built, build_ms).await?;
    let mut row = RunRow::chunk(source, start, end, &report.stats, started);
    row.written = Some(report.commit.written());
    row.already_present = Some(report.commit.already_present());
    annotate(&mut row);
    record_runs(lake, &[row]).await?;
    Ok(report)
}

/// One `_ingest_runs` row: a chunk `[start, end)` of `source` that has committed (or an
/// Event Hub batch, positions `start..=end`).
pub struct RunRow<'a> {
    pub source: &'a SourceId,
    pub start: i64,
    pub end: i64,
    /// Input bytes.
    pub bytes: u64,
    pub stats: &'a BatchStats,
    pub started_at: i64,
    /// Rows this run wrote and rows the lake already had, when known for this source alone.
    pub written: Option<u64>,
    pub already_present: Option<u64>,
    /// Positions between the source's watermark and `start` that never arrived.
    pub skipped: Option<i64>,
    /// Units at or below the source's watermark.
    pub redelivered: Option<i64>,
    /// What was unusual, in words.
    pub note: Option<String>,
}

impl<'a> RunRow<'a> {
    /// A chunk of a file or blob: `[start, end)` bytes.
    pub fn chunk(
        source: &'a SourceId,
        start: i64,
        end: i64,
        stats: &'a BatchStats,
        started_at: i64,
    ) -> Self {
        RunRow {
            source,
            start,
            end,
            bytes: (end - start).max(0) as u64,
            stats,
            started_at,
            written: None,
            already_present: None,
            skipped: None,
            redelivered: None,
            note: None,
        }
    }
}

fn run_batch(rows: &[RunRow<'_>]) -> Result<RecordBatch, ArrowError> {
    let finished = chrono::Utc::now().timestamp_micros();
    let ints = |f: &dyn Fn(&RunRow) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let opt_ints = |f: &dyn Fn(&RunRow) -> Option<i64>| -> ArrayRef {
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
            ints(&|r| r.bytes as i64),
            ts(&|r| r.started_at),
            ts(&|_| finished),
            ints(&|r| (finished - r.started_at) / 1000),
            opt_ints(&|r| r.written.map(|v| v as i64)),
            opt_ints(&|r| r.already_present.map(|v| v as i64)),
            opt_ints(&|r| r.skipped),
            opt_ints(&|r| r.redelivered),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.note.clone()).collect::<Vec<_>>(),
            )),
        ],
    )
}

/// Appends run rows (one commit, with `txn(source, end)` per source).
pub async fn record_runs(lake: &Lake, rows: &[RunRow<'_>]) -> Result<AppendOutcome, SinkError> {
    record_runs_with(lake, rows, &[]).await
}

/// [`record_runs`] with more txns committed beside the sources' (see
/// [`crate::sink::TableHandle::append_exactly_once_with`]). A row at or below its source's
/// watermark (a redelivery that added nothing) is still recorded, as an audit row without a
/// txn, so that the run table shows every delivery.
pub async fn record_runs_with(
    lake: &Lake,
    rows: &[RunRow<'_>],
    extra_txns: &[(String, i64)],
) -> Result<AppendOutcome, SinkError> {
    if rows.is_empty() {
        return Ok(AppendOutcome::default());
    }
    let batch = run_batch(rows)?;
    let runs = lake.ingest_runs()?;
    let o = runs
        .append_exactly_once_with(&batch, "end_position", "source", extra_txns)
        .await?;
    if o.written == 0 && rows.iter().any(|r| r.note.is_some()) {
        runs.append_unfenced(&batch).await?;
    }
    Ok(o)
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
        &[RunRow::chunk(source, start, end, stats, started_at)],
    )
    .await
}
