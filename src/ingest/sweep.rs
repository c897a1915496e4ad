//! The sweep over Defender's export containers (the BlobSweep timer): it finds every blob
//! with bytes past its watermark in the recent hours and, from a cursor persisted in
//! `_ingest_runs`, in older hours not yet known to be closed and fully read, so the blob path
//! catches up after an outage of any length. Closed blobs behind their watermark are counted.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::IngestError;
use crate::model::SourceId;
use crate::sink::Lake;
use crate::sink::runs::{RunRow, record_runs, resume_position};
use crate::source::blob::{BlobError, BlobRef, BlobStores, hour_start, list_hour, tenants};

/// A blob the sweep found with bytes past its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    pub blob: BlobRef,
    pub length: i64,
    pub watermark: i64,
    /// Its hour plus the grace period is over: it will not grow any more, and everything in
    /// it should have been read by now.
    pub closed: bool,
}

/// How a sweep looks at a container.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    pub now: DateTime<Utc>,
    /// The open hour and this many closed hours are listed on every sweep.
    pub recent_hours: u32,
    /// From the persisted cursor on, at most this many hours are listed per sweep: after an
    /// outage the sweep catches up over several runs.
    pub max_catch_up_hours: u32,
    /// A blob is final this long after its hour ends.
    pub grace: Duration,
}

/// What one sweep of one container found.
#[derive(Debug, Clone, Default)]
pub struct SweepOutcome {
    /// Blobs with bytes past their watermark (to enqueue).
    pub grown: Vec<Grown>,
    /// Hours listed.
    pub hours_scanned: usize,
    /// The cursor before and after: every hour before it is closed and fully read.
    pub cursor_before: Option<DateTime<Utc>>,
    pub cursor_after: Option<DateTime<Utc>>,
    /// Hours from the new cursor to the recent window that later sweeps still have to list.
    pub catch_up_hours_left: i64,
}

impl SweepOutcome {
    /// Closed blobs behind their watermark: a blob the blob path should have finished and has
    /// not (a BlobIngest that keeps failing, or an outage being caught up).
    pub fn closed_behind(&self) -> usize {
        self.grown.iter().filter(|g| g.closed).count()
    }
}

/// The sweep cursor's source id in `_ingest_runs`: its txn is the first hour (unix seconds)
/// not yet known to be closed and fully read.
pub fn sweep_source(account: &str, container: &str) -> SourceId {
    SourceId::custom(format!("sweep://{account}/{container}"))
}

/// Lists one container's hours (per tenant folder) and returns every `*.json` blob longer
/// than its watermark. The hours are the recent window (the open hour and
/// `opts.recent_hours` closed ones) and, from the container's persisted cursor, up to
/// `opts.max_catch_up_hours` older ones, so that after an outage of any length (a stopped app,
/// failed timers) the appended bytes and final lines of older blobs are still found. The
/// cursor moves past an hour once the hour is closed and every blob in it is read to its end,
/// and is recorded as a run row of `sweep://<account>/<container>`.
pub async fn sweep_container(
    lake: &Lake,
    stores: &BlobStores,
    account: &str,
    container: &str,
    opts: SweepOptions,
) -> Result<SweepOutcome, IngestError> {
    let started_at = chrono::Utc::now().timestamp_micros();
    let store = stores.store(account, container)?;
    let err = |source| BlobError::Store {
        account: account.to_owned(),
        source,
    };
    let sweep_id = sweep_source(account, container);
    let now_hour = hour_start(opts.now);
    let recent_from = now_hour - Duration::hours(opts.recent_hours as i64);
    let cursor = resume_position_hour(lake, &sweep_id).await?;
    let mut out = SweepOutcome {
        cursor_before: cursor,
        ..Default::default()
    };
    let catch_from = cursor.unwrap_or(recent_from).min(recent_from);
    let catch_to =
        (catch_from + Duration::hours(opts.max_catch_up_hours.max(1) as i64 - 1)).min(now_hour);
    let mut hours: Vec<DateTime<Utc>> = Vec::new();
    let mut h = catch_from;
    while h <= catch_to {
        hours.push(h);
        h += Duration::hours(1);
    }
    let mut h = recent_from.max(catch_to + Duration::hours(1));
    while h <= now_hour {
        hours.push(h);
        h += Duration::hours(1);
    }
    out.hours_scanned = hours.len();
    let closed = |hour: DateTime<Utc>| opts.now >= hour + Duration::hours(1) + opts.grace;

    let top = tenants(&store).await.map_err(err)?;
    // hour -> whether everything in it is read
    let mut complete: BTreeMap<DateTime<Utc>, bool> = hours.iter().map(|h| (*h, true)).collect();
    for hour in &hours {
        let mut found = Vec::new();
        for tenant in &top {
            found.extend(list_hour(&store, tenant, *hour).await.map_err(err)?);
        }
        if found.is_empty() {
            continue;
        }
        let blobs: Vec<BlobRef> = found
            .iter()
            .map(|(path, _)| BlobRef {
                account: account.to_owned(),
                container: container.to_owned(),
                path: path.clone(),
            })
            .collect();
        let ids: Vec<SourceId> = blobs.iter().map(BlobRef::source_id).collect();
        let id_strs: Vec<&str> = ids.iter().map(SourceId::as_str).collect();
        let marks = lake.ingest_runs()?.txn_versions(&id_strs).await?;
        for ((blob, (_, size)), mark) in blobs.into_iter().zip(found).zip(marks) {
            let watermark = mark.unwrap_or(0).max(0);
            if size > watermark {
                complete.insert(*hour, false);
                out.grown.push(Grown {
                    blob,
                    length: size,
                    watermark,
                    closed: closed(*hour),
                });
            }
        }
    }
    // the cursor: the first scanned hour (from the old cursor on) that is open or not read
    let mut new_cursor = catch_to + Duration::hours(1);
    for (hour, done) in &complete {
        if *hour > catch_to {
            break;
        }
        if !*done || !closed(*hour) {
            new_cursor = *hour;
            break;
        }
    }
    let new_cursor = new_cursor.min(now_hour);
    out.cursor_after = Some(new_cursor);
    out.catch_up_hours_left = ((recent_from - new_cursor).num_hours()).max(0);
    if cursor != Some(new_cursor) {
        let mut row = RunRow::chunk(
            &sweep_id,
            cursor.unwrap_or(catch_from).timestamp(),
            new_cursor.timestamp(),
            Default::default(),
            started_at,
        );
        row.bytes = 0;
        if out.catch_up_hours_left > 0 {
            row.note = Some(format!(
                "catching up: {} hours before the recent window still to list",
                out.catch_up_hours_left
            ));
        }
        record_runs(lake, &[row]).await?;
    }
    Ok(out)
}

/// The sweep cursor of `sweep_id`, as an hour.
async fn resume_position_hour(
    lake: &Lake,
    sweep_id: &SourceId,
) -> Result<Option<DateTime<Utc>>, IngestError> {
    Ok(resume_position(lake, sweep_id)
        .await?
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single()))
}
