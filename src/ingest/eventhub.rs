//! Event Hub batches: each batch of one partition is checked against the partition's committed
//! state ([`crate::source::eventhub`]: gap, redelivery, restarted sequence), runs through the
//! pipeline under its epoch's source id, and is recorded in `_ingest_runs` with what was found.
//!
//! State per partition, in `_ingest_runs` (committed with each batch's run row):
//! - txn `<source>` (the epoch's source id): the highest sequence number recorded;
//! - txn `xdr:enqueued:<source>`: the newest enqueued time recorded (µs), which tells a
//!   redelivery (enqueued no later than that) from a restarted sequence (enqueued after it);
//! - txn `xdr:epoch:<partition id>`: the partition's current epoch (absent: 0).

use std::time::Instant;

use crate::decode::Unit;
use crate::model::SourceId;
use crate::pipeline::{BatchReport, PipelineConfig, PipelineError, build_for, commit_built};
use crate::sink::Lake;
use crate::sink::runs::{RunRow, record_runs_with};
use crate::source::eventhub::{
    Continuity, check_positions, classify, enqueued_txn, epoch_source, epoch_txn,
};

/// A batch the protocol does not allow.
#[derive(Debug, thiserror::Error)]
pub enum EventBatchError {
    /// Sequence numbers that are negative or not strictly increasing within the batch: not
    /// what an Event Hub partition delivers.
    #[error("sequence numbers: {0}")]
    Positions(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::sink::SinkError> for EventBatchError {
    fn from(e: crate::sink::SinkError) -> Self {
        EventBatchError::Pipeline(PipelineError::Sink(e))
    }
}

/// What ingesting one batch did.
#[derive(Debug, Clone)]
pub struct EventBatchOutcome {
    /// The source id the rows carry (`_source`): the partition's, with `#epoch<n>` after a
    /// restart.
    pub source: SourceId,
    pub continuity: Continuity,
    pub report: BatchReport,
}

/// Ingests one batch of one partition (`partition` is its epoch-0 source id): checks it,
/// picks the epoch, runs the pipeline, and commits every table and the batch's run row.
/// Succeeds only when all have committed.
pub async fn ingest_event_batch(
    lake: &Lake,
    partition: &SourceId,
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
) -> Result<EventBatchOutcome, EventBatchError> {
    check_positions(units).map_err(EventBatchError::Positions)?;
    let started_at = chrono::Utc::now().timestamp_micros();
    let runs = lake.ingest_runs()?;
    // The partition's epoch and the first epoch's state in one read of `_ingest_runs` (a
    // refresh under its lock, shared by every partition of the instance); a later epoch,
    // which only a recreated hub makes, takes a second read.
    let first = epoch_source(partition, 0);
    let read = runs
        .txn_versions(&[&epoch_txn(partition), first.as_str(), &enqueued_txn(&first)])
        .await?;
    let epoch = u32::try_from(read[0].unwrap_or(0)).unwrap_or(0);
    let state = if epoch == 0 {
        read[1..].to_vec()
    } else {
        let current = epoch_source(partition, epoch);
        runs.txn_versions(&[current.as_str(), &enqueued_txn(&current)])
            .await?
    };
    let continuity = classify(units, epoch, state[0], state[1]);
    let source = epoch_source(partition, continuity.epoch);
    if let Some(w) = continuity.restarted_after {
        tracing::warn!(
            source = %partition, epoch = continuity.epoch, watermark = w,
            first = units.first().map(|u| u.position), "Event Hub sequence restarted: new epoch"
        );
    }
    if let Some((a, b)) = continuity.gap {
        tracing::warn!(source = %source, from = a, to = b, events = b - a + 1, "Event Hub gap: sequence numbers never arrived");
    }
    if let Some((a, b, n)) = continuity.redelivered {
        tracing::warn!(source = %source, from = a, to = b, events = n, watermark = continuity.watermark, "Event Hub redelivery: events at or below the watermark");
    }

    let untyped = lake.untyped_tables().await?;
    let (built, build_ms) =
        build_for(&source, units, cfg, &untyped).map_err(PipelineError::from)?;
    let stats = built.stats.clone();
    let (Some(first), Some(last)) = (units.first(), units.last()) else {
        let report = commit_built(lake, built, build_ms).await?;
        return Ok(EventBatchOutcome {
            source,
            continuity,
            report,
        });
    };
    let mut extra = Vec::new();
    if let Some(t) = units.iter().filter_map(|u| u.enqueued_at).max() {
        extra.push((enqueued_txn(&source), t));
    }
    if continuity.restarted_after.is_some() {
        extra.push((epoch_txn(partition), continuity.epoch as i64));
    }
    let t0 = Instant::now();
    // The tables and the run row are committed side by side: the run row's watermark only
    // feeds these checks, never a resume, so it need not wait for the tables.
    let tables = commit_built(lake, built, build_ms);
    let run_row = async {
        let row = RunRow {
            bytes: units.iter().map(|u| u.full_len as u64).sum(),
            skipped: continuity.gap.map(|(a, b)| b - a + 1),
            redelivered: continuity.redelivered.map(|(_, _, n)| n as i64),
            note: continuity.note(),
            ..RunRow::chunk(
                &source,
                first.position,
                last.position,
                (&stats).into(),
                started_at,
            )
        };
        record_runs_with(lake, &[row], &extra).await
    };
    let (report, recorded) = tokio::join!(tables, run_row);
    let mut report = report?;
    recorded?;
    report.commit_ms = t0.elapsed().as_millis() as u64;
    Ok(EventBatchOutcome {
        source,
        continuity,
        report,
    })
}

/// [`ingest_event_batch`] for a batch of any size: one larger than `slice_bytes` (event
/// bytes) is ingested in slices of consecutive events, one after another, each checked,
/// built and committed on its own (each slice's positions follow the last, so the watermark
/// protocol keeps it exact), so memory follows the slice, not the batch. The outcome is the
/// whole batch's: counts added up, the first slice's gap, redeliveries over all slices.
pub async fn ingest_event_batch_sliced(
    lake: &Lake,
    partition: &SourceId,
    units: &[Unit<'_>],
    cfg: &PipelineConfig,
    slice_bytes: usize,
) -> Result<EventBatchOutcome, EventBatchError> {
    let mut slices = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, u) in units.iter().enumerate() {
        if i > start && bytes + u.full_len > slice_bytes {
            slices.push(&units[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += u.full_len;
    }
    slices.push(&units[start..]);
    if slices.len() > 1 {
        tracing::info!(
            source = %partition, events = units.len(), slices = slices.len(), slice_bytes,
            "Event Hub batch larger than XDR_EVENTHUB_SLICE_BYTES: ingested in slices"
        );
    }
    let large = units.iter().map(|u| u.full_len).sum::<usize>() >= (16 << 20);
    let mut total: Option<EventBatchOutcome> = None;
    let n = slices.len();
    for (i, slice) in slices.into_iter().enumerate() {
        // a slice carries enough rows to be worth its own commits: only the last lingers
        let o = if i + 1 < n {
            crate::sink::with_linger(
                std::time::Duration::ZERO,
                ingest_event_batch(lake, partition, slice, cfg),
            )
            .await
        } else {
            ingest_event_batch(lake, partition, slice, cfg).await
        };
        if large {
            // a large batch's buffers are free now: hand them back before the next request
            // (the allocator would keep them, and the next large request would add to them)
            crate::mem::release_free_memory();
        }
        let o = o?;
        total = Some(match total {
            None => o,
            Some(mut t) => {
                t.report.stats.add(&o.report.stats);
                for (name, a) in o.report.commit.tables {
                    let e = t.report.commit.tables.entry(name).or_default();
                    e.written += a.written;
                    e.already_present += a.already_present;
                    e.redone += a.redone;
                    e.version = a.version.or(e.version);
                }
                t.report.build_ms += o.report.build_ms;
                t.report.commit_ms += o.report.commit_ms;
                let c = &mut t.continuity;
                c.redelivered = match (c.redelivered, o.continuity.redelivered) {
                    (Some((a, _, n)), Some((_, b, m))) => Some((a, b, n + m)),
                    (x, y) => x.or(y),
                };
                c.restarted_after = c.restarted_after.or(o.continuity.restarted_after);
                c.epoch = o.continuity.epoch;
                t.source = o.source;
                t
            }
        });
    }
    total.ok_or_else(|| EventBatchError::Positions("no slices".into()))
}
