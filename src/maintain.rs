//! Table maintenance (the timer function and `xdr-ingest maintain`): a checkpoint per table
//! (kept off the hot path, so no batch pays for one), expired log cleanup, and a full vacuum
//! that also removes the orphaned Parquet files of commits that were lost or redone.
//! Compaction of small files is not done here: delta-rs's `optimize` needs DataFusion, which
//! this build leaves out.

use serde::Serialize;

use crate::sink::{Lake, SinkError};

#[derive(Debug, Clone, Serialize)]
pub struct TableMaintenance {
    pub table: String,
    pub version: u64,
    pub checkpoint: bool,
    pub logs_removed: usize,
    pub files_vacuumed: usize,
    pub error: Option<String>,
}

/// Maintains every existing table; an error on one table is reported, not fatal.
pub async fn maintain(
    lake: &Lake,
    vacuum_retention_hours: u64,
) -> Result<Vec<TableMaintenance>, SinkError> {
    let mut out = Vec::new();
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
            checkpoint: false,
            logs_removed: 0,
            files_vacuumed: 0,
            error: None,
        };
        let result: Result<(), deltalake::DeltaTableError> = async {
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
