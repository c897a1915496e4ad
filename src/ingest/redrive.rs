//! Redrive: dead letters, and rows of untyped tables whose category the registry now knows,
//! re-processed with today's registry, schema overlay and rules. What now passes lands in its
//! table with its original `_source` and `_position`; what still fails stays where it is.
//! Nothing is rewritten: `_redrives` records, per record, what the redrive did.
//!
//! Exactly once: a redrive is a run with a number; its records are taken from the tables as
//! of the versions its `started` row recorded, minus those earlier runs landed, in a fixed
//! order, and each lands under the txn key `redrive://lake` at position `(run << 32) | ordinal`.
//! A run that stops (a crash, a deadline) is resumed by the next redrive with the same
//! parameters and the same ordinals, so every table filters what it already has; a new run
//! never repeats what an earlier run landed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::Int64Type;
use serde::{Deserialize, Serialize};

use super::IngestError;
use crate::decode::Unit;
use crate::model::{Category, SourceId};
use crate::pipeline::{PipelineConfig, PipelineError, build_for};
use crate::registry::{DEAD_LETTER_TABLE, dead, meta};
use crate::sink::inspect::read_columns_at;
use crate::sink::redrives::{
    self, AuditRow, FINISHED_ORDINAL, Origin, REDRIVE_SOURCE, history, last_run,
};
use crate::sink::{Lake, SinkError, TableHandle};

/// Records per commit.
const CHUNK: usize = 2000;

/// Which records a redrive takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveFilter {
    /// Only dead letters with this reason (`unknown_category`, `rule_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only records of this table (a dead letter's category; an untyped table's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Only records of `_date` partitions on or after this date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::NaiveDate>,
}

/// What a run recorded when it started: its filter and the versions it reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Started {
    filter: RedriveFilter,
    dead_letters_version: Option<u64>,
    /// Untyped tables whose category the registry now knows, and their versions.
    untyped_versions: BTreeMap<String, u64>,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveOutcome {
    pub run: i64,
    /// It continued a run that had stopped (with that run's filter).
    pub resumed: bool,
    pub filter: RedriveFilter,
    /// Records taken (after leaving out those earlier runs landed).
    pub candidates: u64,
    /// Landed now, per table.
    pub landed: BTreeMap<String, u64>,
    /// Still failing, per reason.
    pub still_failing: BTreeMap<String, u64>,
    /// The run finished (false: it stopped at the deadline; the next redrive resumes it).
    pub finished: bool,
}

/// A record to redrive.
struct Candidate {
    origin: Origin,
    raw: String,
}

/// Runs (or resumes) a redrive; stops after a commit once `deadline` has passed.
pub async fn redrive(
    lake: &Lake,
    cfg: &PipelineConfig,
    filter: RedriveFilter,
    deadline: Option<Instant>,
) -> Result<RedriveOutcome, IngestError> {
    let (run, resumed, started) = match last_run(lake).await? {
        Some((n, false)) => {
            let h = history(lake, n).await?;
            let started: Started = h
                .started_detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .ok_or_else(|| {
                    SinkError::Schema(format!("redrive run {n}: its started row is missing"))
                })?;
            (n, true, started)
        }
        last => {
            let run = last.map(|(n, _)| n + 1).unwrap_or(1);
            let dead_letters_version = lake
                .dead_letters()?
                .load_existing()
                .await?
                .and_then(|t| t.version());
            let mut untyped_versions = BTreeMap::new();
            for name in lake.untyped_tables().await?.existing {
                if Category::from_table_name(&name).is_some()
                    && filter
                        .table
                        .as_ref()
                        .is_none_or(|t| t.eq_ignore_ascii_case(&name))
                    && let Some(t) = lake.untyped(&name)?.load_existing().await?
                    && let Some(v) = t.version()
                {
                    untyped_versions.insert(name, v);
                }
            }
            let started = Started {
                filter: filter.clone(),
                dead_letters_version,
                untyped_versions,
            };
            redrives::record(
                lake,
                &[AuditRow {
                    run,
                    ordinal: 0,
                    origin: None,
                    outcome: "started",
                    target_table: None,
                    reason: None,
                    detail: Some(serde_json::to_string(&started).unwrap_or_default()),
                }],
            )
            .await?;
            (run, false, started)
        }
    };
    let mut out = RedriveOutcome {
        run,
        resumed,
        filter: started.filter.clone(),
        ..Default::default()
    };
    let landed_before = history(lake, run).await?.landed;
    let mut candidates = collect(lake, &started).await?;
    candidates.retain(|c| !landed_before.contains(&c.origin));
    candidates.sort_by(|a, b| a.origin.cmp(&b.origin));
    out.candidates = candidates.len() as u64;
    let untyped = lake.untyped_tables().await?;
    let source = SourceId::custom(REDRIVE_SOURCE);
    for (n, chunk) in candidates.chunks(CHUNK).enumerate() {
        let first_ordinal = (n * CHUNK) as i64 + 1;
        let units: Vec<Unit> = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Unit::new(
                    c.raw.as_bytes(),
                    redrives::position(run, first_ordinal + i as i64),
                )
            })
            .collect();
        let (built, _) = build_for(&source, &units, cfg, &untyped).map_err(PipelineError::from)?;
        let origin_of = |pos: i64| -> Option<&Origin> {
            let (_, ordinal) = redrives::split(pos);
            chunk
                .get((ordinal - first_ordinal) as usize)
                .map(|c| &c.origin)
        };
        // per ordinal: the table it landed in, or why it still fails
        let mut landed_in: HashMap<i64, String> = HashMap::new();
        let mut jobs: Vec<(Arc<TableHandle>, RecordBatch, StringArray, Int64Array)> = Vec::new();
        let mut targets: Vec<(String, RecordBatch)> = built
            .typed
            .into_iter()
            .map(|(c, b)| (c.table_name().to_owned(), b))
            .collect();
        targets.extend(built.untyped);
        for (table, batch) in targets {
            if batch.num_rows() == 0 {
                continue;
            }
            let keys = batch
                .column_by_name(meta::POSITION)
                .map(|c| c.as_primitive::<Int64Type>().clone())
                .ok_or_else(|| SinkError::Schema(format!("{table}: no {}", meta::POSITION)))?;
            for p in keys.iter().flatten() {
                landed_in.insert(p, table.clone());
            }
            let sources = StringArray::from(vec![REDRIVE_SOURCE; batch.num_rows()]);
            // the rows keep their original lineage
            let orig_sources: StringArray = keys
                .iter()
                .map(|p| p.and_then(origin_of).map(|o| o.source.clone()))
                .collect();
            let orig_positions: Int64Array = keys
                .iter()
                .map(|p| p.and_then(origin_of).map(|o| o.position))
                .collect();
            let batch = replace(&batch, meta::SOURCE, Arc::new(orig_sources))
                .and_then(|b| replace(&b, meta::POSITION, Arc::new(orig_positions)))
                .map_err(|e| IngestError::Pipeline(PipelineError::Arrow(e)))?;
            let handle = match Category::from_table_name(&table) {
                Some(c) => lake.typed(c)?,
                None => lake.untyped(&table)?,
            };
            jobs.push((handle, batch, sources, keys));
        }
        let results = futures::future::join_all(
            jobs.iter()
                .map(|(h, b, s, p)| h.append_exactly_once_keyed(b, s, p, &[])),
        )
        .await;
        for r in results {
            r?;
        }
        // what still fails: the reason the dead-letter batch gives, per ordinal
        let mut failed: HashMap<i64, (String, String)> = HashMap::new();
        if let (Some(pos), Some(reason), Some(detail)) = (
            built.dead.column_by_name(meta::POSITION),
            built.dead.column_by_name(dead::REASON),
            built.dead.column_by_name(dead::DETAIL),
        ) {
            let (pos, reason, detail) = (
                pos.as_primitive::<Int64Type>(),
                reason.as_string::<i32>(),
                detail.as_string::<i32>(),
            );
            for i in 0..built.dead.num_rows() {
                failed
                    .entry(pos.value(i))
                    .or_insert_with(|| (reason.value(i).to_owned(), detail.value(i).to_owned()));
            }
        }
        let mut audit = Vec::with_capacity(chunk.len());
        for (i, c) in chunk.iter().enumerate() {
            let ordinal = first_ordinal + i as i64;
            let pos = redrives::position(run, ordinal);
            let (outcome, target, reason, detail) = match landed_in.get(&pos) {
                Some(t) => {
                    *out.landed.entry(t.clone()).or_default() += 1;
                    ("landed", Some(t.clone()), None, None)
                }
                None => {
                    let (r, d) = failed
                        .get(&pos)
                        .cloned()
                        .unwrap_or_else(|| ("blank".into(), "no record in it".into()));
                    *out.still_failing.entry(r.clone()).or_default() += 1;
                    ("still_failed", None, Some(r), Some(d))
                }
            };
            audit.push(AuditRow {
                run,
                ordinal,
                origin: Some(c.origin.clone()),
                outcome,
                target_table: target,
                reason,
                detail,
            });
        }
        redrives::record(lake, &audit).await?;
        let last_chunk = (n + 1) * CHUNK >= candidates.len();
        if !last_chunk && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(out);
        }
    }
    redrives::record(
        lake,
        &[AuditRow {
            run,
            ordinal: FINISHED_ORDINAL,
            origin: None,
            outcome: "finished",
            target_table: None,
            reason: None,
            detail: Some(serde_json::to_string(&out).unwrap_or_default()),
        }],
    )
    .await?;
    out.finished = true;
    Ok(out)
}

fn replace(
    batch: &RecordBatch,
    name: &str,
    array: ArrayRef,
) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut cols = batch.columns().to_vec();
    if let Ok(i) = batch.schema().index_of(name) {
        cols[i] = array;
    }
    RecordBatch::try_new(batch.schema(), cols)
}

/// The records a run takes: dead letters as of the recorded version (filtered), and rows of
/// the recorded untyped tables.
async fn collect(lake: &Lake, started: &Started) -> Result<Vec<Candidate>, SinkError> {
    let f = &started.filter;
    let mut out = Vec::new();
    if let Some(v) = started.dead_letters_version {
        let cols = [
            meta::RAW,
            dead::REASON,
            dead::CATEGORY,
            meta::SOURCE,
            meta::POSITION,
            dead::RECORD_INDEX,
        ];
        let table_category = f.table.as_ref().map(|t| {
            Category::from_table_name(t)
                .map(|c| c.wire_name().to_owned())
                .unwrap_or_else(|| format!("AdvancedHunting-{t}"))
        });
        let dl = lake.dead_letters()?;
        let batches = read_columns_at(&dl, &cols, f.since, Some(v))
            .await?
            .unwrap_or_default();
        for b in batches {
            let s = |n: &str| b.column_by_name(n).map(|c| c.as_string::<i32>().clone());
            let i = |n: &str| {
                b.column_by_name(n)
                    .map(|c| c.as_primitive::<Int64Type>().clone())
            };
            let (Some(raw), Some(reason), Some(category), Some(src), Some(pos), Some(idx)) = (
                s(meta::RAW),
                s(dead::REASON),
                s(dead::CATEGORY),
                s(meta::SOURCE),
                i(meta::POSITION),
                i(dead::RECORD_INDEX),
            ) else {
                continue;
            };
            for r in 0..b.num_rows() {
                if f.reason.as_ref().is_some_and(|x| x != reason.value(r)) {
                    continue;
                }
                if let Some(tc) = &table_category
                    && !(category.is_valid(r) && category.value(r).eq_ignore_ascii_case(tc))
                {
                    continue;
                }
                out.push(Candidate {
                    origin: Origin {
                        table: DEAD_LETTER_TABLE.to_owned(),
                        source: src.value(r).to_owned(),
                        position: pos.value(r),
                        index: idx.value(r),
                    },
                    raw: raw.value(r).to_owned(),
                });
            }
        }
    }
    for (name, v) in &started.untyped_versions {
        let h = lake.untyped(name)?;
        let batches = read_columns_at(
            &h,
            &[meta::RAW, meta::SOURCE, meta::POSITION],
            f.since,
            Some(*v),
        )
        .await?
        .unwrap_or_default();
        for b in batches {
            let (Some(raw), Some(src), Some(pos)) = (
                b.column_by_name(meta::RAW)
                    .map(|c| c.as_string::<i32>().clone()),
                b.column_by_name(meta::SOURCE)
                    .map(|c| c.as_string::<i32>().clone()),
                b.column_by_name(meta::POSITION)
                    .map(|c| c.as_primitive::<Int64Type>().clone()),
            ) else {
                continue;
            };
            for r in 0..b.num_rows() {
                out.push(Candidate {
                    origin: Origin {
                        table: format!("{}/{name}", crate::sink::UNTYPED_DIR),
                        source: src.value(r).to_owned(),
                        position: pos.value(r),
                        index: raw_hash(raw.value(r)),
                    },
                    raw: raw.value(r).to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// A stable key for a row of an untyped table (several records of one Event Hub body share
/// a source and position): FNV-1a of its raw text.
fn raw_hash(raw: &str) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in raw.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 1) as i64
}
