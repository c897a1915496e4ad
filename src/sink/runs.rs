//! The `_ingest_runs` table, in one place: its schema, its rows (one per chunk of a file or
//! blob, per Event Hub batch, per sweep that moved its cursor), recording them exactly once
//! with `txn(source, end)` (and an audit row, without a txn, for a delivery that added
//! nothing), and reading a source's resume watermark. After every table of a chunk has
//! committed, its run row moves the watermark; the next read starts there, and the per-table
//! filters cover a chunk that was cut short.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use deltalake::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use super::{AppendOutcome, Lake, SinkError, delta_err, get_bytes};
use crate::model::SourceId;
use crate::registry::{assemble, timestamp_type};

/// Name of the table.
pub const INGEST_RUNS_TABLE: &str = "_ingest_runs";

/// Column names.
pub mod col {
    pub const SOURCE: &str = "source";
    pub const START: &str = "start_position";
    pub const END: &str = "end_position";
    pub const RECORDS: &str = "records";
    pub const TYPED_ROWS: &str = "typed_rows";
    pub const DEAD_LETTERS: &str = "dead_letters";
    pub const ROWS_BY_TABLE: &str = "rows_by_table";
    pub const BYTES: &str = "bytes";
    pub const STARTED_AT: &str = "started_at";
    pub const FINISHED_AT: &str = "finished_at";
    pub const DURATION_MS: &str = "duration_ms";
    pub const ROWS_WRITTEN: &str = "rows_written";
    pub const ROWS_ALREADY_PRESENT: &str = "rows_already_present";
    pub const POSITIONS_SKIPPED: &str = "positions_skipped";
    pub const POSITIONS_REDELIVERED: &str = "positions_redelivered";
    pub const NOTE: &str = "note";
}

/// The table's schema (the columns after `duration_ms` came later: nullable, so tables
/// written before read them as null).
pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(col::SOURCE, DataType::Utf8, false),
            Field::new(col::START, DataType::Int64, false),
            Field::new(col::END, DataType::Int64, false),
            Field::new(col::RECORDS, DataType::Int64, false),
            Field::new(col::TYPED_ROWS, DataType::Int64, false),
            Field::new(col::DEAD_LETTERS, DataType::Int64, false),
            Field::new(col::ROWS_BY_TABLE, DataType::Utf8, false),
            Field::new(col::BYTES, DataType::Int64, false),
            Field::new(col::STARTED_AT, timestamp_type(), false),
            Field::new(col::FINISHED_AT, timestamp_type(), false),
            Field::new(col::DURATION_MS, DataType::Int64, false),
            Field::new(col::ROWS_WRITTEN, DataType::Int64, true),
            Field::new(col::ROWS_ALREADY_PRESENT, DataType::Int64, true),
            // positions never delivered between the source's watermark and this run's start
            Field::new(col::POSITIONS_SKIPPED, DataType::Int64, true),
            // units at or below the source's watermark (a redelivery or a replay)
            Field::new(col::POSITIONS_REDELIVERED, DataType::Int64, true),
            // what was unusual about this run, in words (gap, redelivery, restarted sequence)
            Field::new(col::NOTE, DataType::Utf8, true),
        ]))
    })
    .clone()
}

/// What a run held.
#[derive(Debug, Clone, Default)]
pub struct RunCounts {
    pub records: u64,
    pub typed_rows: u64,
    pub dead_letters: u64,
    pub rows_by_table: BTreeMap<String, u64>,
}

/// One `_ingest_runs` row: a chunk `[start, end)` of `source` that has committed (or an
/// Event Hub batch, positions `start..=end`).
pub struct RunRow<'a> {
    pub source: &'a SourceId,
    pub start: i64,
    pub end: i64,
    /// Input bytes.
    pub bytes: u64,
    pub counts: RunCounts,
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
        counts: RunCounts,
        started_at: i64,
    ) -> Self {
        RunRow {
            source,
            start,
            end,
            bytes: (end - start).max(0) as u64,
            counts,
            started_at,
            written: None,
            already_present: None,
            skipped: None,
            redelivered: None,
            note: None,
        }
    }
}

fn batch(rows: &[RunRow<'_>]) -> Result<RecordBatch, ArrowError> {
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
    assemble(
        &schema(),
        vec![
            (
                col::SOURCE,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.source.as_str()),
                )),
            ),
            (col::START, ints(&|r| r.start)),
            (col::END, ints(&|r| r.end)),
            (col::RECORDS, ints(&|r| r.counts.records as i64)),
            (col::TYPED_ROWS, ints(&|r| r.counts.typed_rows as i64)),
            (col::DEAD_LETTERS, ints(&|r| r.counts.dead_letters as i64)),
            (
                col::ROWS_BY_TABLE,
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                    serde_json::to_string(&r.counts.rows_by_table).unwrap_or_else(|_| "{}".into())
                }))),
            ),
            (col::BYTES, ints(&|r| r.bytes as i64)),
            (col::STARTED_AT, ts(&|r| r.started_at)),
            (col::FINISHED_AT, ts(&|_| finished)),
            (
                col::DURATION_MS,
                ints(&|r| (finished - r.started_at) / 1000),
            ),
            (
                col::ROWS_WRITTEN,
                opt_ints(&|r| r.written.map(|v| v as i64)),
            ),
            (
                col::ROWS_ALREADY_PRESENT,
                opt_ints(&|r| r.already_present.map(|v| v as i64)),
            ),
            (col::POSITIONS_SKIPPED, opt_ints(&|r| r.skipped)),
            (col::POSITIONS_REDELIVERED, opt_ints(&|r| r.redelivered)),
            (
                col::NOTE,
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.note.clone()).collect::<Vec<_>>(),
                )),
            ),
        ],
    )
}

/// Appends run rows (one commit, with `txn(source, end)` per source).
pub async fn record_runs(lake: &Lake, rows: &[RunRow<'_>]) -> Result<AppendOutcome, SinkError> {
    record_runs_with(lake, rows, &[]).await
}

/// [`record_runs`] with more txns committed beside the sources' (see
/// [`super::TableHandle::append_exactly_once_with`]). A row at or below its source's watermark
/// (a redelivery that added nothing) that has a note is still recorded, as an audit row
/// without a txn, so that the run table shows every unusual delivery.
pub async fn record_runs_with(
    lake: &Lake,
    rows: &[RunRow<'_>],
    extra_txns: &[(String, i64)],
) -> Result<AppendOutcome, SinkError> {
    if rows.is_empty() {
        return Ok(AppendOutcome::default());
    }
    let batch = batch(rows)?;
    let runs = lake.ingest_runs()?;
    let o = runs
        .append_exactly_once_with(&batch, col::END, col::SOURCE, extra_txns)
        .await?;
    if o.written == 0 && rows.iter().any(|r| r.note.is_some()) {
        runs.append_unfenced(&batch).await?;
    }
    Ok(o)
}

/// Where to continue reading `source`: 0 if it was never read.
pub async fn resume_offset(lake: &Lake, source: &SourceId) -> Result<i64, SinkError> {
    Ok(resume_position(lake, source).await?.unwrap_or(0).max(0))
}

/// The `_ingest_runs` watermark of `source`, if it has one.
pub async fn resume_position(lake: &Lake, source: &SourceId) -> Result<Option<i64>, SinkError> {
    lake.ingest_runs()?.txn_version(source.as_str()).await
}

/// What `_ingest_runs` records about one source that did not simply follow on: gaps,
/// redeliveries, restarted sequences (new epochs), replays that skipped bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceAnomalies {
    pub source: String,
    /// Run rows of the source.
    pub runs: u64,
    /// Runs that started past the watermark, and the positions they skipped.
    pub gaps: u64,
    pub positions_skipped: i64,
    /// Runs (or deliveries) at or below the watermark, and their units.
    pub redeliveries: u64,
    pub positions_redelivered: i64,
    /// Restarted sequences (Event Hub epochs begun).
    pub restarts: u64,
    /// The newest note.
    pub last_note: Option<String>,
    #[serde(skip)]
    last_note_at: i64,
}

/// Sources of `_ingest_runs` with anything unusual recorded, most skipped positions first.
/// Reads only the columns it needs.
pub async fn source_anomalies(lake: &Lake) -> Result<Vec<SourceAnomalies>, SinkError> {
    let h = lake.ingest_runs()?;
    let Some(table) = h.load_existing().await? else {
        return Ok(Vec::new());
    };
    let snapshot = table.snapshot().map_err(|e| delta_err(&h, e))?;
    let store = table.object_store();
    let mut by: BTreeMap<String, SourceAnomalies> = BTreeMap::new();
    let wanted = [
        col::SOURCE,
        col::POSITIONS_SKIPPED,
        col::POSITIONS_REDELIVERED,
        col::NOTE,
        col::FINISHED_AT,
    ];
    for f in snapshot.log_data().iter() {
        let bytes = get_bytes(&h, store.as_ref(), &f.object_store_path()).await?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| delta_err(&h, e.into()))?;
        let mask = super::projection(builder.schema(), builder.parquet_schema(), &wanted);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| delta_err(&h, e.into()))?;
        for batch in reader {
            let batch = batch.map_err(|e| delta_err(&h, e.into()))?;
            let Some(src) = batch.column_by_name(col::SOURCE) else {
                continue;
            };
            let src = src.as_string::<i32>();
            let ints = |n: &str| {
                batch.column_by_name(n).map(|c| {
                    c.as_primitive::<deltalake::arrow::datatypes::Int64Type>()
                        .clone()
                })
            };
            let (skipped, redelivered) = (
                ints(col::POSITIONS_SKIPPED),
                ints(col::POSITIONS_REDELIVERED),
            );
            let note = batch
                .column_by_name(col::NOTE)
                .map(|c| c.as_string::<i32>().clone());
            let finished = batch.column_by_name(col::FINISHED_AT).map(|c| {
                c.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
                    .clone()
            });
            for i in 0..batch.num_rows() {
                let e = by
                    .entry(src.value(i).to_owned())
                    .or_insert_with(|| SourceAnomalies {
                        source: src.value(i).to_owned(),
                        ..Default::default()
                    });
                e.runs += 1;
                let get = |a: &Option<deltalake::arrow::array::Int64Array>| {
                    a.as_ref()
                        .filter(|a| a.is_valid(i))
                        .map(|a| a.value(i))
                        .unwrap_or(0)
                };
                let (s, r) = (get(&skipped), get(&redelivered));
                if s > 0 {
                    e.gaps += 1;
                    e.positions_skipped += s;
                }
                if r > 0 {
                    e.redeliveries += 1;
                    e.positions_redelivered += r;
                }
                if let Some(n) = note.as_ref().filter(|n| n.is_valid(i)).map(|n| n.value(i)) {
                    if n.contains("sequence restarted") {
                        e.restarts += 1;
                    }
                    let at = finished
                        .as_ref()
                        .filter(|f| f.is_valid(i))
                        .map(|f| f.value(i))
                        .unwrap_or(0);
                    if at >= e.last_note_at {
                        e.last_note_at = at;
                        e.last_note = Some(n.to_owned());
                    }
                }
            }
        }
    }
    let mut out: Vec<SourceAnomalies> = by
        .into_values()
        .filter(|a| a.gaps + a.redeliveries + a.restarts > 0)
        .collect();
    out.sort_by(|a, b| {
        (b.positions_skipped, b.restarts, &a.source).cmp(&(
            a.positions_skipped,
            a.restarts,
            &b.source,
        ))
    });
    Ok(out)
}
