//! Table maintenance (the timer function and `xdr-ingest maintain`): compaction of small
//! files, a checkpoint per table (kept off the hot path, so no batch pays for one), expired log
//! cleanup, and a full vacuum that also removes the orphaned Parquet files of commits that were
//! lost or redone, and the files compaction replaced once they are past the retention.
//!
//! Compaction is our own (delta-rs's `optimize` needs DataFusion, which this build leaves out):
//! per `_date` partition with enough small files, their rows are streamed into new files and
//! one commit removes the old files and adds the new, with `dataChange: false`. Rows, their
//! lineage columns and the txns are untouched, so exactly-once holds across it. It matters
//! because every append adds a file and delta-rs re-reads the list of active files after every
//! commit: without it, commits slow down as tables age.
//!
//! Maintenance is a writer too, and two compactions may run at once (the CLI beside the timer,
//! two timer invocations). delta-rs's conflict checker ignores removes with `dataChange: false`
//! when it looks for files deleted twice (`check_for_deleted_files_against_current_txn_deleted_files`
//! in deltalake-core 1.1 filters the winner's removes on `data_change`), so a second
//! compaction of the same files would commit a second copy of their rows. Compaction therefore
//! commits with no delta-rs retries, at exactly the version after the snapshot it checked:
//! before each attempt it checks that every file it removes is still active in that snapshot,
//! and gives up (deleting its own new files) if one is not.
//!
//! Vacuum deletes files no commit references once they are older than the retention. A file a
//! running writer has written but not yet committed is such a file, so a retention shorter
//! than the longest write would delete data about to be committed: [`VacuumRetention`] refuses
//! anything below [`SAFE_VACUUM_RETENTION_HOURS`] unless the caller opts in explicitly.

use std::collections::{BTreeMap, HashMap, HashSet};

use deltalake::arrow::array::{Array, Date32Array};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Remove};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::object_store::path::Path;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use serde::Serialize;

use super::{Lake, SinkError, write_one_partition, writer_properties};

/// Delta's own default `deletedFileRetentionDuration` (7 days): vacuum never removes a file
/// younger than this unless told to with [`VacuumRetention::new`]'s `allow_unsafe`.
pub const SAFE_VACUUM_RETENTION_HOURS: u64 = 168;

/// How long vacuum keeps files that no commit references: at least
/// [`SAFE_VACUUM_RETENTION_HOURS`] unless the caller accepts the risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VacuumRetention {
    hours: u64,
}

/// A vacuum retention below the safe floor without the explicit opt-in.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "a vacuum retention of {hours} hours is below the safe floor of {SAFE_VACUUM_RETENTION_HOURS} hours: \
     vacuum deletes every file no commit references that is older than the retention, and that \
     includes the Parquet files a running ingest has written but not committed yet; its commit \
     then points at missing files, the table cannot be read, and the watermarks say the rows landed"
)]
pub struct UnsafeRetention {
    pub hours: u64,
}

impl VacuumRetention {
    /// `allow_unsafe` lets a retention below the floor through (only with every writer of the
    /// lake stopped).
    pub fn new(hours: u64, allow_unsafe: bool) -> Result<Self, UnsafeRetention> {
        if hours < SAFE_VACUUM_RETENTION_HOURS && !allow_unsafe {
            return Err(UnsafeRetention { hours });
        }
        Ok(VacuumRetention { hours })
    }

    pub fn hours(&self) -> u64 {
        self.hours
    }
}

impl Default for VacuumRetention {
    fn default() -> Self {
        VacuumRetention {
            hours: SAFE_VACUUM_RETENTION_HOURS,
        }
    }
}

/// How often a compaction re-checks and re-commits after other commits landed first.
const MAX_COMPACTION_COMMIT_ATTEMPTS: usize = 30;

/// A partition as the log writes it: (column, value) pairs, sorted.
type PartitionKey = Vec<(String, Option<String>)>;
/// One row seen by [`dedup`]: (ingested at, source, position, file index, row index).
type RowRef = (i64, String, i64, usize, usize);

/// When and how files are compacted.
#[derive(Debug, Clone, Copy)]
pub struct CompactOptions {
    /// Files smaller than this are candidates.
    pub small_file_bytes: i64,
    /// A partition is compacted once it has this many small files.
    pub min_files: usize,
    /// Size of the files compaction writes (Parquet bytes).
    pub target_file_bytes: u64,
    /// Parquet bytes one maintenance run compacts at most, over all tables (a timer
    /// invocation has a time limit; what is left waits for the next run).
    pub max_input_bytes_per_run: u64,
    /// Remove Defender's re-sends (rows with the same `_record_hash`) from the `_date`
    /// partitions of this many recent days; `None`: keep them.
    pub dedup_days: Option<u32>,
}

/// Default of [`CompactOptions::dedup_days`]: re-sends come within hours.
pub const DEFAULT_DEDUP_DAYS: u32 = 2;

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            small_file_bytes: 32 * 1024 * 1024,
            min_files: 8,
            target_file_bytes: 128 * 1024 * 1024,
            max_input_bytes_per_run: 2 * 1024 * 1024 * 1024,
            dedup_days: Some(DEFAULT_DEDUP_DAYS),
        }
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Compaction {
    pub partitions: usize,
    pub files_removed: usize,
    pub files_added: usize,
    /// Parquet bytes read (the small files compacted).
    pub input_bytes: u64,
    /// The table version of the compaction commit.
    pub version: Option<u64>,
    /// Commit attempts redone because other commits (appends) landed first.
    pub redone: u32,
    /// Set when the compaction did not commit because another commit (a concurrent
    /// compaction) had removed one of its input files: committing would have duplicated rows.
    pub gave_up: Option<String>,
}

/// Compacts the small files of the partitions of `table` that have at least `opts.min_files`
/// of them, in one commit, oldest partitions first, stopping once `budget` bytes of input are
/// taken (a partition is taken whole). Files are read one at a time, so memory is bounded by
/// one small file and the writer's open file, not by the partition.
pub async fn compact(
    table: &DeltaTable,
    opts: &CompactOptions,
    budget: u64,
) -> Result<Compaction, DeltaTableError> {
    // small files per partition (no key for an unpartitioned table)
    let mut by_partition: BTreeMap<PartitionKey, Vec<(String, i64, Remove)>> = BTreeMap::new();
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await?;
    for f in &files {
        if f.size() >= opts.small_file_bytes {
            continue;
        }
        let mut key: Vec<(String, Option<String>)> = f.partition_values_map().into_iter().collect();
        key.sort();
        by_partition.entry(key).or_default().push((
            f.path().into_owned(),
            f.size(),
            f.remove_action(false),
        ));
    }
    by_partition.retain(|_, fs| fs.len() >= opts.min_files);
    let mut taken = 0u64;
    by_partition.retain(|_, fs| {
        let bytes: u64 = fs.iter().map(|(_, size, _)| *size as u64).sum();
        let take = taken + bytes <= budget;
        if take {
            taken += bytes;
        }
        take
    });
    let mut out = Compaction {
        input_bytes: taken,
        ..Default::default()
    };
    if by_partition.is_empty() {
        return Ok(out);
    }

    let store = table.log_store().object_store(None);
    let mut actions = Vec::new();
    for (key, files) in &by_partition {
        let mut writer = RecordBatchWriter::for_table(table)?
            .with_writer_properties(writer_properties())
            .with_target_file_size(opts.target_file_bytes);
        let days = partition_days(key)?;
        let values: Vec<(&str, &dyn Array)> = days
            .iter()
            .map(|(name, a)| (name.as_str(), a as &dyn Array))
            .collect();
        for (path, _, _) in files {
            let path = Path::from_url_path(path)
                .map_err(|e| DeltaTableError::Generic(format!("file path {path}: {e}")))?;
            // a small file (below `small_file_bytes`) read whole, then decoded batch by batch
            let bytes = store.get(&path).await?.bytes().await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            for batch in reader {
                write_one_partition(&mut writer, batch?, &values).await?;
            }
        }
        for mut add in writer.flush().await? {
            add.data_change = false;
            out.files_added += 1;
            actions.push(Action::Add(add));
        }
        for (_, _, remove) in files {
            actions.push(Action::Remove(remove.clone()));
            out.files_removed += 1;
        }
        out.partitions += 1;
    }
    let removed: Vec<String> = by_partition
        .values()
        .flatten()
        .map(|(path, _, _)| path.clone())
        .collect();
    let added: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(add) => Some(add.path.clone()),
            _ => None,
        })
        .collect();
    let op = DeltaOperation::Optimize {
        predicate: None,
        target_size: opts.target_file_bytes as i64,
    };
    match commit_fenced_with(table, actions, &removed, op, HashMap::new()).await {
        Ok(Fenced::Committed { version, redone }) => {
            out.version = Some(version);
            out.redone = redone;
        }
        Ok(Fenced::InputGone { path, redone }) => {
            out.redone = redone;
            out.gave_up = Some(format!(
                "input file {path} was removed by another commit (a concurrent compaction); \
                 not committed, so its rows are not written twice"
            ));
            tracing::info!(table = %table.table_url(), path, "compaction gave up: its input was compacted by another writer");
            delete_files(table, &added).await;
        }
        // not known to have failed cleanly: the commit may have landed (a timeout after the
        // write), so its files stay; vacuum removes them once no commit references them
        Err(e) => return Err(e),
    }
    Ok(out)
}

enum Fenced {
    Committed { version: u64, redone: u32 },
    InputGone { path: String, redone: u32 },
}

/// Commits a compaction exactly at the version after a snapshot in which every file it removes
/// is still active: delta-rs is given no retries (it would check the newer commits with a
/// conflict checker that lets a second remove of the same file through), and after a lost race
/// the snapshot is refreshed and checked again.
async fn commit_fenced_with(
    table: &DeltaTable,
    actions: Vec<Action>,
    removed: &[String],
    operation: DeltaOperation,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Fenced, DeltaTableError> {
    let mut snapshot = table.clone();
    let mut redone = 0u32;
    for _ in 0..MAX_COMPACTION_COMMIT_ATTEMPTS {
        let active: HashSet<String> = snapshot
            .snapshot()?
            .log_data()
            .iter()
            .map(|f| f.path().into_owned())
            .collect();
        if let Some(gone) = removed.iter().find(|p| !active.contains(*p)) {
            return Ok(Fenced::InputGone {
                path: gone.clone(),
                redone,
            });
        }
        let result = CommitBuilder::from(
            CommitProperties::default()
                .with_max_retries(0)
                .with_metadata(metadata.clone()),
        )
        .with_actions(actions.clone())
        .build(
            Some(snapshot.snapshot()?),
            snapshot.log_store(),
            operation.clone(),
        )
        .await;
        match result {
            Ok(done) => {
                return Ok(Fenced::Committed {
                    version: done.version,
                    redone,
                });
            }
            Err(e) if lost_race(&e) => {
                redone += 1;
                snapshot.update_incremental(None).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(DeltaTableError::Generic(format!(
        "compaction could not commit in {MAX_COMPACTION_COMMIT_ATTEMPTS} attempts: other commits kept landing first"
    )))
}

/// Another commit took the version this one was to have.
fn lost_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// Deletes files this compaction wrote when it knows it did not commit them (it gave up before
/// writing a commit); after an error the commit may have landed, and the files are left to
/// vacuum (best effort; a full vacuum removes what is left once it is past the retention).
async fn delete_files(table: &DeltaTable, paths: &[String]) {
    let store = table.object_store();
    for p in paths {
        if let Ok(path) = Path::from_url_path(p)
            && let Err(e) = store.delete(&path).await
        {
            tracing::debug!(path = p, error = %e, "could not delete an uncommitted compaction file");
        }
    }
}

/// Each partition value of a log partition key (`_date` is written as `YYYY-MM-DD`) as a
/// one-row array of days since the epoch, as the writer's `write_partition` takes it.
fn partition_days(
    key: &[(String, Option<String>)],
) -> Result<Vec<(String, Date32Array)>, DeltaTableError> {
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    key.iter()
        .map(|(name, value)| {
            value
                .as_deref()
                .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .map(|d| {
                    let days = (d - epoch).num_days() as i32;
                    (name.clone(), Date32Array::from(vec![days]))
                })
                .ok_or_else(|| {
                    DeltaTableError::Generic(format!("partition {name}={value:?} is not a date"))
                })
        })
        .collect()
}

/// What removing re-sends did in one table.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Dedup {
    pub partitions_checked: usize,
    pub rows_removed: u64,
    pub files_rewritten: usize,
    pub version: Option<u64>,
    /// Set when it did not commit because another commit removed one of its input files.
    pub gave_up: Option<String>,
}

/// The name of the commit metadata that says how many re-sends a commit removed.
pub const DUPLICATES_REMOVED_KEY: &str = "xdr.duplicatesRemoved";

/// Removes Defender's re-sends from the `_date` partitions of the last `days` days: within a
/// partition, of rows with the same `_record_hash` the first ingested (then the lowest source
/// and position) stays and the others go. Only files holding a row to remove are rewritten;
/// the commit is fenced as compaction's is (every file it removes still active), and carries
/// the count in its metadata ([`DUPLICATES_REMOVED_KEY`]). Reads only the four columns it needs.
// parquet 59 deprecated its object_store reader in favour of one written by hand; it still
// reads only the column chunks asked for, which is all this needs.
#[allow(deprecated)]
pub async fn dedup(table: &DeltaTable, days: u32) -> Result<Dedup, DeltaTableError> {
    use crate::registry::meta;
    use deltalake::arrow::array::{AsArray, BooleanArray};
    use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use deltalake::parquet::arrow::ParquetRecordBatchStreamBuilder;
    use deltalake::parquet::arrow::async_reader::ParquetObjectReader;

    let mut out = Dedup::default();
    let has_hash = table
        .snapshot()?
        .schema()
        .fields()
        .any(|f| f.name() == meta::RECORD_HASH);
    if !has_hash {
        return Ok(out);
    }
    let since = chrono::Utc::now().date_naive() - chrono::Duration::days(days as i64);
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await?;
    let mut by_partition: BTreeMap<PartitionKey, Vec<(String, i64, Remove)>> = BTreeMap::new();
    for f in &files {
        let mut key: PartitionKey = f.partition_values_map().into_iter().collect();
        key.sort();
        let recent = key.iter().any(|(n, v)| {
            n == meta::DATE
                && v.as_deref()
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .is_some_and(|d| d >= since)
        });
        if recent {
            by_partition.entry(key).or_default().push((
                f.path().into_owned(),
                f.size(),
                f.remove_action(true),
            ));
        }
    }
    let store = table.log_store().object_store(None);
    let wanted = [
        meta::RECORD_HASH,
        meta::INGESTED_AT,
        meta::SOURCE,
        meta::POSITION,
    ];
    let mut actions = Vec::new();
    let mut removed_paths = Vec::new();
    let mut added_paths = Vec::new();
    for (key, files) in &by_partition {
        out.partitions_checked += 1;
        // (hash) -> the row that stays: (ingested, source, position, file, row)
        let mut keep: HashMap<i64, RowRef> = HashMap::new();
        let mut all: Vec<(i64, RowRef)> = Vec::new();
        for (fi, (path, size, _)) in files.iter().enumerate() {
            let path = Path::from_url_path(path)
                .map_err(|e| DeltaTableError::Generic(format!("file path {path}: {e}")))?;
            let reader = ParquetObjectReader::new(store.clone(), path).with_file_size(*size as u64);
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
            let mask = super::projection(builder.schema(), builder.parquet_schema(), &wanted);
            let batches: Vec<_> = builder.with_projection(mask).build()?.try_collect().await?;
            let mut row = 0usize;
            for b in batches {
                let (Some(h), Some(at), Some(src), Some(pos)) = (
                    b.column_by_name(meta::RECORD_HASH),
                    b.column_by_name(meta::INGESTED_AT),
                    b.column_by_name(meta::SOURCE),
                    b.column_by_name(meta::POSITION),
                ) else {
                    row += b.num_rows();
                    continue;
                };
                let (h, at, src, pos) = (
                    h.as_primitive::<Int64Type>(),
                    at.as_primitive::<TimestampMicrosecondType>(),
                    src.as_string::<i32>(),
                    pos.as_primitive::<Int64Type>(),
                );
                for i in 0..b.num_rows() {
                    if h.is_valid(i) {
                        let entry = (
                            at.value(i),
                            src.value(i).to_owned(),
                            pos.value(i),
                            fi,
                            row + i,
                        );
                        let k = h.value(i);
                        match keep.get(&k) {
                            Some(best)
                                if (best.0, &best.1, best.2) <= (entry.0, &entry.1, entry.2) => {}
                            _ => {
                                keep.insert(k, entry.clone());
                            }
                        }
                        all.push((k, entry));
                    }
                }
                row += b.num_rows();
            }
        }
        // rows to drop, per file
        let mut drop: HashMap<usize, std::collections::HashSet<usize>> = HashMap::new();
        for (k, e) in all {
            let best = &keep[&k];
            if (best.3, best.4) != (e.3, e.4) {
                drop.entry(e.3).or_default().insert(e.4);
            }
        }
        if drop.is_empty() {
            continue;
        }
        let days = partition_days(key)?;
        let values: Vec<(&str, &dyn Array)> = days
            .iter()
            .map(|(name, a)| (name.as_str(), a as &dyn Array))
            .collect();
        for (fi, rows) in &drop {
            let (path_s, _, remove) = &files[*fi];
            let path = Path::from_url_path(path_s)
                .map_err(|e| DeltaTableError::Generic(format!("file path {path_s}: {e}")))?;
            let bytes = store.get(&path).await?.bytes().await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            let mut writer =
                RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
            let mut row = 0usize;
            let mut any = false;
            for batch in reader {
                let batch = batch?;
                let mask: BooleanArray = (0..batch.num_rows())
                    .map(|i| Some(!rows.contains(&(row + i))))
                    .collect();
                row += batch.num_rows();
                let kept = deltalake::arrow::compute::filter_record_batch(&batch, &mask)?;
                if kept.num_rows() > 0 {
                    any = true;
                    write_one_partition(&mut writer, kept, &values).await?;
                }
            }
            if any {
                for add in writer.flush().await? {
                    added_paths.push(add.path.clone());
                    actions.push(Action::Add(add));
                }
            }
            actions.push(Action::Remove(remove.clone()));
            removed_paths.push(path_s.clone());
            out.rows_removed += rows.len() as u64;
            out.files_rewritten += 1;
        }
    }
    if actions.is_empty() {
        return Ok(out);
    }
    let metadata = [(
        DUPLICATES_REMOVED_KEY.to_owned(),
        serde_json::json!(out.rows_removed),
    )];
    match commit_fenced_with(
        table,
        actions,
        &removed_paths,
        DeltaOperation::Delete {
            predicate: Some(format!(
                "{} duplicates a row ingested earlier",
                meta::RECORD_HASH
            )),
        },
        metadata.into_iter().collect(),
    )
    .await
    {
        Ok(Fenced::Committed { version, .. }) => out.version = Some(version),
        Ok(Fenced::InputGone { path, .. }) => {
            out.gave_up = Some(format!(
                "input file {path} was removed by another commit meanwhile; the next run retries"
            ));
            out.rows_removed = 0;
            delete_files(table, &added_paths).await;
        }
        // not known to have failed cleanly: the commit may have landed (a timeout after the
        // write), so its files stay; vacuum removes them once no commit references them
        Err(e) => return Err(e),
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct TableMaintenance {
    pub table: String,
    pub version: u64,
    /// Re-sends removed.
    pub dedup: Dedup,
    pub compaction: Compaction,
    pub checkpoint: bool,
    pub logs_removed: usize,
    pub files_vacuumed: usize,
    pub error: Option<String>,
}

/// Maintains every existing table; an error on one table is reported, not fatal.
pub async fn maintain(
    lake: &Lake,
    vacuum: VacuumRetention,
    compact_opts: &CompactOptions,
) -> Result<Vec<TableMaintenance>, SinkError> {
    let mut out = Vec::new();
    let mut budget = compact_opts.max_input_bytes_per_run;
    let mut handles = Vec::new();
    for c in crate::model::Category::all() {
        handles.push(lake.typed(c)?);
    }
    for name in lake.untyped_tables().await?.existing {
        handles.push(lake.untyped(&name)?);
    }
    handles.push(lake.dead_letters()?);
    handles.push(lake.ingest_runs()?);
    handles.push(lake.redrives()?);
    for h in handles {
        let Some(table) = h.load_existing().await? else {
            continue;
        };
        let mut m = TableMaintenance {
            table: h.name().to_owned(),
            version: table.version().unwrap_or(0),
            dedup: Dedup::default(),
            compaction: Compaction::default(),
            checkpoint: false,
            logs_removed: 0,
            files_vacuumed: 0,
            error: None,
        };
        let result: Result<(), deltalake::DeltaTableError> = async {
            let mut table = table;
            if let Some(days) = compact_opts.dedup_days {
                m.dedup = dedup(&table, days).await?;
                if m.dedup.version.is_some() {
                    table.update_incremental(None).await?;
                }
            }
            m.compaction = compact(&table, compact_opts, budget).await?;
            budget = budget.saturating_sub(m.compaction.input_bytes);
            // vacuum and the checkpoint see every commit, ours and any made meanwhile
            table.update_incremental(None).await?;
            m.version = table.version().unwrap_or(m.version);
            deltalake::checkpoints::create_checkpoint(&table, None).await?;
            m.checkpoint = true;
            m.logs_removed = deltalake::checkpoints::cleanup_metadata(&table, None).await?;
            let (_, metrics) = table
                .clone()
                .vacuum()
                .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
                .with_retention_period(chrono::Duration::hours(vacuum.hours() as i64))
                .with_enforce_retention_duration(false)
                .await?;
            m.files_vacuumed = metrics.files_deleted.len();
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(table = %m.table, error = %e, "maintenance failed");
            m.error = Some(e.to_string());
        }
        out.push(m);
    }
    Ok(out)
}
