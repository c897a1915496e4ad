//! The pipeline every entry point shares (CLI, handler, library): units of one source ->
//! decode and route -> typed batches -> data-quality rules -> exactly-once commit to every
//! table, with the counts that prove conservation (`records == typed rows + dead letters`).

use std::collections::BTreeMap;
use std::time::Instant;

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::arrow::error::ArrowError;
use serde::Serialize;

use crate::decode::{Decoded, Unit, decode_unit};
use crate::model::{Category, DeadLetterReason, SourceId};
use crate::quality::{RuleCount, Rules};
use crate::registry::meta;
use crate::sink::{CommitReport, Lake, SinkError};
use crate::typed::{BuildContext, DeadLetterBuilder, TableBatchBuilder, UntypedBatchBuilder};

/// Default size limit of one record (or one line).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
/// Default window (days before the ingest date) within which `Timestamp` sets `_date`.
pub const DEFAULT_RETENTION_DAYS: i32 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("building batches: {0}")]
    Arrow(#[from] ArrowError),
}

/// Default cap on new (untyped) tables one batch may create.
pub const DEFAULT_MAX_NEW_TABLES_PER_BATCH: usize = 10;
/// Default cap on untyped tables in a lake.
pub const DEFAULT_MAX_UNTYPED_TABLES: usize = 100;

/// Settings of the decode/build/rules stages.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub rules: Rules,
    pub max_record_bytes: usize,
    pub retention_days: i32,
    /// Categories the registry does not know get untyped tables of their own, at most this
    /// many new ones per batch (0: they stay dead letters, `unknown_category`)...
    pub max_new_tables_per_batch: usize,
    /// ...and at most this many untyped tables in the lake.
    pub max_untyped_tables: usize,
    /// Drop Defender's re-sends: a record whose table and `properties` equal an earlier one's
    /// (see [`crate::registry::meta::RECORD_HASH`]), within a batch here and across batches in
    /// maintenance.
    pub dedup: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            rules: Rules::defaults(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            retention_days: DEFAULT_RETENTION_DAYS,
            max_new_tables_per_batch: DEFAULT_MAX_NEW_TABLES_PER_BATCH,
            max_untyped_tables: DEFAULT_MAX_UNTYPED_TABLES,
            dedup: true,
        }
    }
}

/// The untyped tables a lake already has, and how many more it may get (see
/// [`PipelineConfig::max_untyped_tables`]).
#[derive(Clone, Debug, Default)]
pub struct UntypedTables {
    pub existing: std::collections::HashSet<String>,
}

impl UntypedTables {
    /// New tables one batch may create now.
    pub fn room(&self, cfg: &PipelineConfig) -> usize {
        cfg.max_new_tables_per_batch
            .min(cfg.max_untyped_tables.saturating_sub(self.existing.len()))
    }
}

/// Counts of one batch (or, summed, of a run).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BatchStats {
    /// Input units (lines or events), blank lines excluded.
    pub units: u64,
    /// Records found in them.
    pub records: u64,
    pub bytes: u64,
    /// Typed rows per table (after the rules), untyped tables' rows included.
    pub typed_rows: BTreeMap<String, u64>,
    /// The untyped tables among them (categories the registry does not know).
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub untyped_tables: std::collections::BTreeSet<String>,
    /// Dead letters per reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Records dropped as duplicates (by content) of one in the same batch, per table.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub duplicates: BTreeMap<String, u64>,
    /// Values kept in `_rescued`, per table.
    pub rescued_values: BTreeMap<String, u64>,
    /// Failures per data-quality rule.
    pub rules: BTreeMap<String, RuleCount>,
    /// Newest event `Timestamp` seen (µs), for event-time lag.
    #[serde(skip)]
    pub max_event_time: Option<i64>,
}

impl BatchStats {
    pub fn typed_total(&self) -> u64 {
        self.typed_rows.values().sum()
    }
    pub fn dead_total(&self) -> u64 {
        self.dead_letters.values().sum()
    }
    pub fn rescued_total(&self) -> u64 {
        self.rescued_values.values().sum()
    }
    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.values().sum()
    }
    /// Every record ends in one place: a typed (or untyped) row, a dead letter, or dropped as
    /// a duplicate, by content, of a record of the same batch.
    pub fn conserved(&self) -> bool {
        self.records == self.typed_total() + self.dead_total() + self.duplicates_total()
    }

    pub fn add(&mut self, o: &BatchStats) {
        self.units += o.units;
        self.records += o.records;
        self.bytes += o.bytes;
        for (k, v) in &o.typed_rows {
            *self.typed_rows.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.dead_letters {
            *self.dead_letters.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.rescued_values {
            *self.rescued_values.entry(k.clone()).or_default() += v;
        }
        self.untyped_tables.extend(o.untyped_tables.iter().cloned());
        for (k, v) in &o.duplicates {
            *self.duplicates.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.rules {
            let e = self.rules.entry(k.clone()).or_insert_with(|| RuleCount {
                action: v.action.clone(),
                failed: 0,
            });
            e.failed += v.failed;
        }
        self.max_event_time = self.max_event_time.max(o.max_event_time);
    }
}

impl From<&BatchStats> for crate::sink::runs::RunCounts {
    fn from(s: &BatchStats) -> Self {
        crate::sink::runs::RunCounts {
            records: s.records,
            typed_rows: s.typed_total(),
            dead_letters: s.dead_total(),
            rows_by_table: s.typed_rows.clone(),
        }
    }
}

/// The batches built from one set of units, ready to commit.
pub struct Built {
    pub typed: Vec<(Category, RecordBatch)>,
    /// Rows of categories the registry does not know, per untyped table.
    pub untyped: Vec<(String, RecordBatch)>,
    pub dead: RecordBatch,
    pub stats: BatchStats,
}

/// Decodes, routes, builds and checks `units` (all of one source). Pure CPU work, no I/O.
/// Untyped tables beyond what `ctx` allows stay dead letters.
pub fn build(
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
    ctx: &BuildContext,
) -> Result<Built, ArrowError> {
    build_with(units, cfg, ctx, &UntypedTables::default())
}

/// [`build`], knowing the lake's untyped tables (for the caps on new ones).
pub fn build_with(
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
    ctx: &BuildContext,
    untyped_tables: &UntypedTables,
) -> Result<Built, ArrowError> {
    let room = untyped_tables.room(cfg);
    let mut duplicates: BTreeMap<String, u64> = BTreeMap::new();
    let mut ctx = ctx.clone();
    ctx.dedup = cfg.dedup;
    let ctx = &ctx;
    let mut untyped: BTreeMap<String, UntypedBatchBuilder> = BTreeMap::new();
    let mut new_tables = 0usize;
    let mut stats = BatchStats::default();
    let mut builders: Vec<Option<TableBatchBuilder<'_>>> =
        (0..Category::all().count()).map(|_| None).collect();
    let mut dead = DeadLetterBuilder::new();
    let mut dead_counts: BTreeMap<DeadLetterReason, u64> = BTreeMap::new();
    for unit in units {
        stats.bytes += unit.full_len as u64;
        let n = decode_unit(unit, cfg.max_record_bytes, &mut |d| match d {
            Decoded::Record(rec) => {
                let b = builders[rec.category.index()]
                    .get_or_insert_with(|| TableBatchBuilder::new(rec.category, 256));
                if !b.push(&rec, unit, ctx) {
                    *duplicates
                        .entry(rec.category.table_name().to_owned())
                        .or_default() += 1;
                }
            }
            Decoded::Untyped(u) => {
                let known =
                    untyped_tables.existing.contains(&u.table) || untyped.contains_key(&u.table);
                if !known && new_tables >= room {
                    dead.push(
                        u.raw,
                        DeadLetterReason::UnknownCategory,
                        &format!(
                            "category `{}` is not in the schema registry, and no new table may be made for it now (at most {} new per batch, {} untyped tables in a lake)",
                            u.category, cfg.max_new_tables_per_batch, cfg.max_untyped_tables
                        ),
                        Some(&u.category),
                        unit.position,
                        u.record_index,
                        ctx,
                    );
                    *dead_counts
                        .entry(DeadLetterReason::UnknownCategory)
                        .or_default() += 1;
                    return;
                }
                if !known {
                    new_tables += 1;
                }
                let b = untyped
                    .entry(u.table.clone())
                    .or_insert_with(|| UntypedBatchBuilder::new(&u.table));
                let pushed = b.push(&u, unit, ctx);
                if pushed == Ok(false) {
                    *duplicates.entry(u.table.clone()).or_default() += 1;
                }
                if pushed.is_err() {
                    dead.push(
                        u.raw,
                        DeadLetterReason::RuleFailed,
                        &format!(
                            "new category `{}`: no usable Timestamp in properties",
                            u.category
                        ),
                        Some(&u.category),
                        unit.position,
                        u.record_index,
                        ctx,
                    );
                    *dead_counts.entry(DeadLetterReason::RuleFailed).or_default() += 1;
                }
            }
            Decoded::Dead(d) => {
                dead.push_ref(&d, unit, ctx);
                *dead_counts.entry(d.reason).or_default() += 1;
            }
        });
        if n > 0 {
            stats.units += 1;
            stats.records += n as u64;
        }
    }

    let mut typed = Vec::new();
    for b in builders.into_iter().flatten() {
        let rows = b.finish()?;
        let cat = rows.category;
        if rows.rescued_values > 0 {
            stats
                .rescued_values
                .insert(cat.table_name().to_owned(), rows.rescued_values);
        }
        let outcome = cfg.rules.apply(cat, rows.batch.clone())?;
        for (name, c) in outcome.counts {
            let e = stats.rules.entry(name).or_insert_with(|| RuleCount {
                action: c.action.clone(),
                failed: 0,
            });
            e.failed += c.failed;
        }
        if !outcome.rejected.is_empty() {
            let raw = rows
                .batch
                .column_by_name(meta::RAW)
                .map(|c| c.as_string::<i32>().clone());
            let pos = rows
                .batch
                .column_by_name(meta::POSITION)
                .map(|c| c.as_primitive::<Int64Type>().clone());
            if let (Some(raw), Some(pos)) = (raw, pos) {
                for r in &outcome.rejected {
                    dead.push(
                        raw.value(r.row),
                        DeadLetterReason::RuleFailed,
                        &r.detail,
                        Some(cat.wire_name()),
                        pos.value(r.row),
                        rows.record_index[r.row],
                        ctx,
                    );
                }
                *dead_counts.entry(DeadLetterReason::RuleFailed).or_default() +=
                    outcome.rejected.len() as u64;
            }
        }
        if let Some(ts) = outcome
            .kept
            .column_by_name("Timestamp")
            .map(|c| c.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>())
            .and_then(deltalake::arrow::compute::max)
        {
            stats.max_event_time = stats.max_event_time.max(Some(ts));
        }
        stats
            .typed_rows
            .insert(cat.table_name().to_owned(), outcome.kept.num_rows() as u64);
        typed.push((cat, outcome.kept));
    }
    let mut untyped_out = Vec::new();
    for (name, b) in untyped {
        let rows = b.finish()?;
        let n = rows.batch.num_rows() as u64;
        if n == 0 {
            continue;
        }
        if let Some(ts) = rows
            .batch
            .column_by_name(crate::registry::untyped::TIMESTAMP)
            .map(|c| c.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>())
            .and_then(deltalake::arrow::compute::max)
        {
            stats.max_event_time = stats.max_event_time.max(Some(ts));
        }
        stats.typed_rows.insert(name.clone(), n);
        stats.untyped_tables.insert(name.clone());
        untyped_out.push((name, rows.batch));
    }
    stats.duplicates = duplicates;
    stats.dead_letters = dead_counts
        .into_iter()
        .map(|(r, n)| (r.as_str().to_owned(), n))
        .collect();
    debug_assert!(stats.conserved(), "{stats:?}");
    Ok(Built {
        typed,
        untyped: untyped_out,
        dead: dead.finish()?,
        stats,
    })
}

/// What one batch did: what it held, and what each table got.
#[derive(Clone, Debug, Default)]
pub struct BatchReport {
    pub stats: BatchStats,
    pub commit: CommitReport,
    pub build_ms: u64,
    pub commit_ms: u64,
}

/// Runs one batch of one source through the whole pipeline and commits it exactly once.
/// Success means every table it touches has committed (or already had the rows).
pub async fn ingest_units(
    lake: &Lake,
    source: &SourceId,
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
) -> Result<BatchReport, PipelineError> {
    let untyped = lake.untyped_tables().await?;
    let (built, build_ms) = build_for(source, units, cfg, &untyped)?;
    commit_built(lake, built, build_ms).await
}

/// [`build`] for `source` as of now, with how long it took (ms).
pub fn build_for(
    source: &SourceId,
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
    untyped: &UntypedTables,
) -> Result<(Built, u64), ArrowError> {
    let ctx = BuildContext::now(source.as_str(), cfg.retention_days);
    let t0 = Instant::now();
    let built = build_with(units, cfg, &ctx, untyped)?;
    Ok((built, t0.elapsed().as_millis() as u64))
}

/// Commits what [`build`] produced.
pub async fn commit_built(
    lake: &Lake,
    built: Built,
    build_ms: u64,
) -> Result<BatchReport, PipelineError> {
    let t1 = Instant::now();
    let commit = lake
        .commit(built.typed, built.untyped, Some(built.dead))
        .await?;
    Ok(BatchReport {
        stats: built.stats,
        commit,
        build_ms,
        commit_ms: t1.elapsed().as_millis() as u64,
    })
}
