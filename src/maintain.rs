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

use std::collections::BTreeMap;

use deltalake::arrow::array::{Array, Date32Array};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Remove};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::object_store::path::Path;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use serde::Serialize;

use crate::sink::{Lake, SinkError, write_one_partition, writer_properties};

/// A partition as the log writes it: (column, value) pairs, sorted.
type PartitionKey = Vec<(String, Option<String>)>;

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
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            small_file_bytes: 32 * 1024 * 1024,
            min_files: 8,
            target_file_bytes: 128 * 1024 * 1024,
            max_input_bytes_per_run: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Compaction {
    pub partitions: usize,
    pub files_removed: usize,
    pub files_added: usize,
    /// Parquet bytes read (the small files compacted).
    pub input_bytes: u64,
    /// The table version of the compaction commit.
    pub version: Option<u64>,
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
        let days: Vec<(String, Date32Array)> = partition_days(key)?
            .into_iter()
            .map(|(name, d)| (name, Date32Array::from(vec![d])))
            .collect();
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
    let done = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(
            Some(table.snapshot()?),
            table.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: opts.target_file_bytes as i64,
            },
        )
        .await?;
    out.version = Some(done.version);
    Ok(out)
}

/// Days since the epoch of each partition value of a log partition key (`_date` is written
/// as `YYYY-MM-DD`).
fn partition_days(key: &[(String, Option<String>)]) -> Result<Vec<(String, i32)>, DeltaTableError> {
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    key.iter()
        .map(|(name, value)| {
            value
                .as_deref()
                .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .map(|d| (name.clone(), (d - epoch).num_days() as i32))
                .ok_or_else(|| {
                    DeltaTableError::Generic(format!("partition {name}={value:?} is not a date"))
                })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct TableMaintenance {
    pub table: String,
    pub version: u64,
    pub compaction: Compaction,
    pub checkpoint: bool,
    pub logs_removed: usize,
    pub files_vacuumed: usize,
    pub error: Option<String>,
}

/// Maintains every existing table; an error on one table is reported, not fatal.
pub async fn maintain(
    lake: &Lake,
    vacuum_retention_hours: u64,
    compact_opts: &CompactOptions,
) -> Result<Vec<TableMaintenance>, SinkError> {
    let mut out = Vec::new();
    let mut budget = compact_opts.max_input_bytes_per_run;
    let mut handles = Vec::new();
    for c in crate::model::Category::all() {
        handles.push(lake.typed(c)?);
    }
    handles.push(lake.dead_letters()?);
    handles.push(lake.ingest_runs()?);
    for h in handles {
        let Some(table) = h.load_existing().await? else {
            continue;
        };
        let mut m = TableMaintenance {
            table: h.name().to_owned(),
            version: table.version().unwrap_or(0),
            compaction: Compaction::default(),
            checkpoint: false,
            logs_removed: 0,
            files_vacuumed: 0,
            error: None,
        };
        let result: Result<(), deltalake::DeltaTableError> = async {
            let mut table = table;
            m.compaction = compact(&table, compact_opts, budget).await?;
            budget = budget.saturating_sub(m.compaction.input_bytes);
            if let Some(v) = m.compaction.version {
                table.load_version(v).await?;
                m.version = v;
            }
            deltalake::checkpoints::create_checkpoint(&table, None).await?;
            m.checkpoint = true;
            m.logs_removed = deltalake::checkpoints::cleanup_metadata(&table, None).await?;
            let (_, metrics) = table
                .clone()
                .vacuum()
                .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
                .with_retention_period(chrono::Duration::hours(vacuum_retention_hours as i64))
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
