//! The `_redrives` table: the audit trail of redrives (re-processing dead letters, or rows of
//! untyped tables, with today's registry, overlay and rules). The dead-letter table is never
//! rewritten; this table says which of its records a redrive landed, and which still fail.
//!
//! Every row carries the txn key `redrive://lake` with the position `(run << 32) | ordinal`:
//! ordinal 0 is the run's `started` row (with its parameters), 1.. its records in a fixed
//! order, [`FINISHED_ORDINAL`] its `finished` row. So the table's watermark alone says whether
//! the newest run finished, and a crashed run is resumed with the same ordinals (the same
//! txn positions in every table it lands in: nothing twice).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::{Lake, SinkError};
use crate::registry::{assemble, timestamp_type};

/// Name of the table.
pub const REDRIVES_TABLE: &str = "_redrives";
/// The txn source of every redrive, in `_redrives` and in the tables records land in.
pub const REDRIVE_SOURCE: &str = "redrive://lake";
/// The ordinal of a run's `finished` row.
pub const FINISHED_ORDINAL: i64 = 0xFFFF_FFFF;

/// Column names.
pub mod col {
    pub const RUN: &str = "run";
    pub const POSITION: &str = "redrive_position";
    pub const SOURCE: &str = "redrive_source";
    pub const ORIGIN_TABLE: &str = "origin_table";
    pub const ORIGIN_SOURCE: &str = "origin_source";
    pub const ORIGIN_POSITION: &str = "origin_position";
    pub const ORIGIN_INDEX: &str = "origin_index";
    pub const OUTCOME: &str = "outcome";
    pub const TARGET_TABLE: &str = "target_table";
    pub const REASON: &str = "reason";
    pub const DETAIL: &str = "detail";
    pub const AT: &str = "at";
}

pub fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(col::RUN, DataType::Int64, false),
            Field::new(col::POSITION, DataType::Int64, false),
            Field::new(col::SOURCE, DataType::Utf8, false),
            Field::new(col::ORIGIN_TABLE, DataType::Utf8, true),
            Field::new(col::ORIGIN_SOURCE, DataType::Utf8, true),
            Field::new(col::ORIGIN_POSITION, DataType::Int64, true),
            Field::new(col::ORIGIN_INDEX, DataType::Int64, true),
            Field::new(col::OUTCOME, DataType::Utf8, false),
            Field::new(col::TARGET_TABLE, DataType::Utf8, true),
            Field::new(col::REASON, DataType::Utf8, true),
            Field::new(col::DETAIL, DataType::Utf8, true),
            Field::new(col::AT, timestamp_type(), false),
        ]))
    })
    .clone()
}

/// The txn position of ordinal `ordinal` of run `run`.
pub fn position(run: i64, ordinal: i64) -> i64 {
    (run << 32) | ordinal
}

/// The run and ordinal of a txn position.
pub fn split(position: i64) -> (i64, i64) {
    (position >> 32, position & FINISHED_ORDINAL)
}

/// Where a record came from: its table, and its key there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub table: String,
    pub source: String,
    pub position: i64,
    /// `_record_index` of a dead letter; a hash of `_raw` for a row of an untyped table.
    pub index: i64,
}

/// One audit row.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub run: i64,
    pub ordinal: i64,
    pub origin: Option<Origin>,
    /// `started`, `landed`, `still_failed`, `finished`.
    pub outcome: &'static str,
    pub target_table: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

/// Appends audit rows exactly once (their positions are their txn positions).
pub async fn record(lake: &Lake, rows: &[AuditRow]) -> Result<u64, SinkError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let now = chrono::Utc::now().timestamp_micros();
    let s = |f: &dyn Fn(&AuditRow) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let i = |f: &dyn Fn(&AuditRow) -> Option<i64>| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = assemble(
        &schema(),
        vec![
            (col::RUN, i(&|r| Some(r.run))),
            (col::POSITION, i(&|r| Some(position(r.run, r.ordinal)))),
            (col::SOURCE, s(&|_| Some(REDRIVE_SOURCE.to_owned()))),
            (
                col::ORIGIN_TABLE,
                s(&|r| r.origin.as_ref().map(|o| o.table.clone())),
            ),
            (
                col::ORIGIN_SOURCE,
                s(&|r| r.origin.as_ref().map(|o| o.source.clone())),
            ),
            (
                col::ORIGIN_POSITION,
                i(&|r| r.origin.as_ref().map(|o| o.position)),
            ),
            (
                col::ORIGIN_INDEX,
                i(&|r| r.origin.as_ref().map(|o| o.index)),
            ),
            (col::OUTCOME, s(&|r| Some(r.outcome.to_owned()))),
            (col::TARGET_TABLE, s(&|r| r.target_table.clone())),
            (col::REASON, s(&|r| r.reason.clone())),
            (col::DETAIL, s(&|r| r.detail.clone())),
            (
                col::AT,
                Arc::new(
                    TimestampMicrosecondArray::from(vec![now; rows.len()]).with_timezone("UTC"),
                ),
            ),
        ],
    )?;
    let o = lake
        .redrives()?
        .append_exactly_once(&batch, col::POSITION, col::SOURCE)
        .await?;
    Ok(o.written)
}

/// The newest run's number and whether it finished (`None`: no redrive yet).
pub async fn last_run(lake: &Lake) -> Result<Option<(i64, bool)>, SinkError> {
    Ok(lake
        .redrives()?
        .txn_version(REDRIVE_SOURCE)
        .await?
        .map(|p| {
            let (run, ordinal) = split(p);
            (run, ordinal == FINISHED_ORDINAL)
        }))
}

/// What the audit says: the origins runs before `before_run` landed, and run `run`'s
/// `started` detail (its parameters).
pub struct History {
    pub landed: HashSet<Origin>,
    pub started_detail: Option<String>,
    /// Records resolved (landed) over all runs.
    pub landed_total: u64,
}

/// Reads the audit table.
pub async fn history(lake: &Lake, run: i64) -> Result<History, SinkError> {
    let mut h = History {
        landed: HashSet::new(),
        started_detail: None,
        landed_total: 0,
    };
    let handle = lake.redrives()?;
    let Some(batches) = super::inspect::read_table(&handle).await? else {
        return Ok(h);
    };
    for b in batches {
        let run_col = b
            .column_by_name(col::RUN)
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let outcome = b
            .column_by_name(col::OUTCOME)
            .map(|c| c.as_string::<i32>().clone());
        let (Some(run_col), Some(outcome)) = (run_col, outcome) else {
            continue;
        };
        let strs = |n: &str| b.column_by_name(n).map(|c| c.as_string::<i32>().clone());
        let ints = |n: &str| {
            b.column_by_name(n)
                .map(|c| c.as_primitive::<Int64Type>().clone())
        };
        let (table, source, pos, idx, detail) = (
            strs(col::ORIGIN_TABLE),
            strs(col::ORIGIN_SOURCE),
            ints(col::ORIGIN_POSITION),
            ints(col::ORIGIN_INDEX),
            strs(col::DETAIL),
        );
        for i in 0..b.num_rows() {
            let r = run_col.value(i);
            match outcome.value(i) {
                "landed" => {
                    h.landed_total += 1;
                    if r < run
                        && let (Some(t), Some(s), Some(p), Some(x)) = (&table, &source, &pos, &idx)
                    {
                        h.landed.insert(Origin {
                            table: t.value(i).to_owned(),
                            source: s.value(i).to_owned(),
                            position: p.value(i),
                            index: x.value(i),
                        });
                    }
                }
                "started" if r == run => {
                    h.started_detail = detail
                        .as_ref()
                        .filter(|d| d.is_valid(i))
                        .map(|d| d.value(i).to_owned());
                }
                _ => {}
            }
        }
    }
    Ok(h)
}
