//! Defender's hourly append blobs: reading a blob through object_store with range requests
//! from its `_ingest_runs` watermark in bounded chunks (a commit per chunk), leaving a trailing
//! partial line for later until the blob's hour plus a grace period has passed, and listing
//! the open and recently closed hours for the sweep.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use futures::TryStreamExt;
use url::Url;

use super::lines::Chunker;
use super::resume::{RunRow, ingest_chunk, record_runs, resume_offset};
use crate::model::SourceId;
use crate::pipeline::{BatchStats, PipelineConfig, PipelineError};
use crate::sink::Lake;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The URL is not one this app reads. The URL itself is never part of the message: it may
    /// carry a SAS token or a password.
    #[error("not an accepted blob URL: {msg}")]
    Url { msg: String },
    #[error("blob storage {account}: {source}")]
    Store {
        account: String,
        source: deltalake::ObjectStoreError,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::sink::SinkError> for BlobError {
    fn from(e: crate::sink::SinkError) -> Self {
        BlobError::Pipeline(PipelineError::Sink(e))
    }
}

/// Longest blob URL accepted (Azure's own limits: a 1,024-character blob name, a 63-character
/// container, a 24-character account).
pub const MAX_BLOB_URL_CHARS: usize = 2048;
/// Longest blob name (Azure's limit).
const MAX_BLOB_NAME_CHARS: usize = 1024;

/// A storage account name: 3-24 lowercase letters and digits.
pub fn valid_account(a: &str) -> bool {
    (3..=24).contains(&a.len())
        && a.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A container name: 3-63 lowercase letters, digits and single dashes, starting and ending
/// with a letter or digit.
pub fn valid_container(c: &str) -> bool {
    (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--")
}

/// Which blob URLs are accepted: the account-style URLs of the configured cloud
/// (`https://<account>.blob.<suffix>/…`, also `.dfs.`), and path-style URLs
/// (`http://127.0.0.1:10000/<account>/…`, the storage emulator) only under the configured
/// `XDR_BLOB_URL_BASE`.
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    /// `core.windows.net` (public cloud), `core.chinacloudapi.cn`, `core.usgovcloudapi.net`.
    pub endpoint_suffix: String,
    /// A path-style base accepted besides (scheme, host, port, account).
    pub path_style_base: Option<(String, String, Option<u16>, String)>,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        UrlPolicy {
            endpoint_suffix: DEFAULT_ENDPOINT_SUFFIX.into(),
            path_style_base: None,
        }
    }
}

/// The public cloud's storage endpoint suffix.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

impl UrlPolicy {
    /// `base` is `XDR_BLOB_URL_BASE`: an account-style base needs nothing more; a path-style
    /// one (`http://127.0.0.1:10000/devstoreaccount1`) is the only path-style origin accepted.
    pub fn new(endpoint_suffix: &str, base: Option<&str>) -> UrlPolicy {
        let mut p = UrlPolicy {
            endpoint_suffix: endpoint_suffix
                .trim()
                .trim_matches('.')
                .to_ascii_lowercase(),
            path_style_base: None,
        };
        if let Some(u) = base.and_then(|b| Url::parse(b).ok())
            && let Some(host) = u.host_str()
        {
            let host = host.to_ascii_lowercase();
            if account_of_host(&host, &p.endpoint_suffix).is_none()
                && let Some(acct) = u.path_segments().and_then(|mut s| s.next())
                && valid_account(acct)
            {
                p.path_style_base = Some((u.scheme().to_owned(), host, u.port(), acct.to_owned()));
            }
        }
        p
    }
}

fn account_of_host<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let rest = host.strip_suffix(suffix)?.strip_suffix('.')?;
    rest.strip_suffix(".blob")
        .or_else(|| rest.strip_suffix(".dfs"))
        .filter(|a| valid_account(a))
}

/// A blob by account, container and path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub account: String,
    pub container: String,
    pub path: String,
}

impl BlobRef {
    /// `https://<account>.blob.<suffix>/<container>/<path>` (also `.dfs.`), or a path-style
    /// URL under the policy's emulator base. Refused: user info, a query (a SAS: the app reads
    /// with its own identity) or a fragment, encoded `/`, `\` or dot segments in the path,
    /// control characters, names Azure does not allow, and anything longer than Azure's limits.
    pub fn parse_url(url: &str, policy: &UrlPolicy) -> Result<BlobRef, BlobError> {
        let bad = |msg: &str| BlobError::Url {
            msg: msg.to_owned(),
        };
        if url.len() > MAX_BLOB_URL_CHARS {
            return Err(bad(&format!("longer than {MAX_BLOB_URL_CHARS} characters")));
        }
        // The URL parser resolves dot segments (`/../`, `/%2E%2E/`) itself; a path that has
        // any is refused rather than silently rewritten (a `.` never needs encoding).
        let lower = url.trim().to_ascii_lowercase();
        let raw_path = lower
            .split_once("://")
            .map(|(_, rest)| rest.split(['?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        if raw_path.contains("%2e")
            || raw_path.contains("/./")
            || raw_path.contains("/../")
            || raw_path.ends_with("/.")
            || raw_path.ends_with("/..")
        {
            return Err(bad("the path has a `.` or `..` segment"));
        }
        let u = Url::parse(url.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(bad("expected an https URL"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("a user name or password in the URL is not accepted"));
        }
        if u.query().is_some() {
            return Err(bad(
                "a query string (a SAS token?) is not accepted: send the plain blob URL; the app reads with its own identity",
            ));
        }
        if u.fragment().is_some() {
            return Err(bad("a fragment (#...) is not accepted"));
        }
        let host = u
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        let raw_segments: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
        let mut segments = Vec::with_capacity(raw_segments.len());
        for raw in raw_segments {
            let seg = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("the path is not UTF-8"))?;
            if seg.is_empty()
                || seg == "."
                || seg == ".."
                || seg.contains(['/', '\\'])
                || seg.chars().any(char::is_control)
            {
                return Err(bad(
                    "the path has an empty, `.` or `..` segment, an encoded `/` or `\\`, or a control character",
                ));
            }
            segments.push(seg.into_owned());
        }
        let (account, rest) = if let Some(acct) = account_of_host(&host, &policy.endpoint_suffix) {
            if u.scheme() != "https" {
                return Err(bad("expected an https URL"));
            }
            (acct.to_owned(), &segments[..])
        } else {
            let allowed = policy
                .path_style_base
                .as_ref()
                .is_some_and(|(scheme, h, port, acct)| {
                    scheme == u.scheme()
                        && *h == host
                        && *port == u.port()
                        && segments.first().is_some_and(|a| a == acct)
                });
            if !allowed {
                return Err(bad(&format!(
                    "host {host} is not a storage endpoint of this cloud (<account>.blob.{}) nor the configured XDR_BLOB_URL_BASE",
                    policy.endpoint_suffix
                )));
            }
            let (a, r) = segments
                .split_first()
                .ok_or_else(|| bad("no account in the path"))?;
            (a.clone(), r)
        };
        let (container, path) = rest.split_first().ok_or_else(|| bad("no container"))?;
        if !valid_container(container) {
            return Err(bad("not a valid container name"));
        }
        if path.is_empty() {
            return Err(bad("no blob path"));
        }
        let path = path.join("/");
        if path.chars().count() > MAX_BLOB_NAME_CHARS {
            return Err(bad(&format!(
                "a blob name longer than {MAX_BLOB_NAME_CHARS} characters"
            )));
        }
        Ok(BlobRef {
            account,
            container: container.clone(),
            path,
        })
    }

    pub fn source_id(&self) -> SourceId {
        SourceId::blob(&self.account, &self.container, &self.path)
    }

    /// End of the hour the blob belongs to, from its `y=/m=/d=/h=` path segments.
    pub fn hour_end(&self) -> Option<DateTime<Utc>> {
        let mut y = None;
        let mut mo = None;
        let mut d = None;
        let mut h = None;
        for seg in self.path.split('/') {
            if let Some((k, v)) = seg.split_once('=') {
                let n: Option<u32> = v.parse().ok();
                match k {
                    "y" => y = n,
                    "m" if mo.is_none() => mo = n,
                    "d" => d = n,
                    "h" => h = n,
                    _ => {}
                }
            }
        }
        let date = NaiveDate::from_ymd_opt(y? as i32, mo?, d?)?;
        let start = Utc.from_utc_datetime(&date.and_hms_opt(h?, 0, 0)?);
        Some(start + Duration::hours(1))
    }
}

/// Opens (and caches) an object store per storage account and container.
pub struct BlobStores {
    /// object_store Azure options for the Defender account(s): an endpoint and key for
    /// Azurite; nothing on Azure, where the managed identity logs in.
    options: HashMap<String, String>,
    /// The cloud's storage endpoint suffix.
    endpoint_suffix: String,
    /// The managed identity, when no explicit credential is configured.
    identity: Option<Arc<crate::azure::ManagedIdentity>>,
    cache: Mutex<HashMap<(String, String), Arc<dyn ObjectStore>>>,
}

impl BlobStores {
    /// Stores for the export account(s): `options` as `XDR_BLOB_OPTIONS` gives them; without
    /// a credential among them (or in `AZURE_*`), the app's managed identity (a user-assigned
    /// one by `XDR_MANAGED_IDENTITY_CLIENT_ID`), as for the lake.
    pub fn new(options: HashMap<String, String>, endpoint_suffix: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok();
        BlobStores {
            identity: crate::azure::managed_identity_for(&options, &env),
            options,
            endpoint_suffix: endpoint_suffix.to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self, account: &str, container: &str) -> Result<Arc<dyn ObjectStore>, BlobError> {
        let key = (account.to_owned(), container.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let store = crate::azure::container_store(
            Some(account),
            container,
            Some(&self.endpoint_suffix),
            &self.options,
            self.identity.clone(),
            &crate::azure::Patience::normal(),
        )
        .map_err(|source| BlobError::Store {
            account: account.to_owned(),
            source,
        })?;
        cache.insert(key, store.clone());
        Ok(store)
    }
}

/// What one pass over a blob did.
#[derive(Debug, Default, Clone)]
pub struct BlobOutcome {
    pub source: String,
    pub start: i64,
    pub end: i64,
    pub length: i64,
    pub chunks: u64,
    pub stats: BatchStats,
    pub written: u64,
    pub already_present: u64,
    /// Bytes of an unterminated last line left for a later pass.
    pub pending_tail: u64,
    /// The blob's hour (plus grace) is over: its last line was taken even without a newline.
    pub final_: bool,
    /// The time budget ran out: the rest of the blob, from this offset, is left to a
    /// continuation (the watermark keeps it exact).
    pub continue_at: Option<i64>,
    /// What was unusual (a replay that skips or repeats bytes, a blob shorter than its
    /// watermark), in words.
    pub note: Option<String>,
}

/// How a blob is read.
#[derive(Clone, Copy, Debug)]
pub struct BlobReadOptions {
    /// Bytes per commit.
    pub chunk_bytes: usize,
    /// A blob is final (its unterminated last line is a record) this long after its hour.
    pub grace: Duration,
    pub now: DateTime<Utc>,
    /// Stop reading (after the chunk in hand is committed) once this instant has passed.
    pub deadline: Option<std::time::Instant>,
}

/// Ingests a blob from its watermark (or from `start`, for a replay) to its current length.
pub async fn ingest_blob(
    lake: &Lake,
    stores: &BlobStores,
    blob: &BlobRef,
    start: Option<i64>,
    cfg: &PipelineConfig,
    opts: BlobReadOptions,
) -> Result<BlobOutcome, BlobError> {
    let BlobReadOptions {
        chunk_bytes,
        grace,
        now,
        deadline,
    } = opts;
    let store = stores.store(&blob.account, &blob.container)?;
    let err = |source| BlobError::Store {
        account: blob.account.clone(),
        source,
    };
    let source = blob.source_id();
    let watermark = resume_offset(lake, &source).await?;
    let start = start.unwrap_or(watermark);
    let path = Path::from(blob.path.as_str());
    let length = store.head(&path).await.map_err(err)?.size as i64;
    let final_ = blob.hour_end().is_some_and(|end| now >= end + grace);
    let mut out = BlobOutcome {
        source: source.to_string(),
        start,
        end: start,
        length,
        final_,
        ..Default::default()
    };
    // what the first chunk's run row says about where this pass started
    let mut first = Annotation::default();
    if length < watermark {
        out.note = Some(format!(
            "the blob is {length} bytes, shorter than the {watermark} bytes already ingested: it was rewritten or recreated, not appended; not read"
        ));
        tracing::warn!(source = %source, length, watermark, "blob shorter than its watermark; not read");
        return Ok(out);
    }
    if start > watermark {
        first.skipped = Some(start - watermark);
        first.note = Some(format!(
            "replay started at byte {start}, past the watermark {watermark}: bytes {watermark}-{start} not read"
        ));
        tracing::warn!(source = %source, start, watermark, "blob replay starts past the watermark: bytes skipped");
    } else if start < watermark {
        first.redelivered = Some(watermark - start);
        first.note = Some(format!(
            "replay from byte {start}: bytes {start}-{watermark} were already ingested and are not written again"
        ));
    }
    out.note = first.note.clone();
    if length <= start {
        return Ok(out);
    }
    let mut chunker = Chunker::new(start, cfg.max_record_bytes, chunk_bytes);
    let mut pos = start;
    let read_size = chunk_bytes.clamp(64 * 1024, 16 * 1024 * 1024) as i64;
    let out_of_time = || deadline.is_some_and(|d| std::time::Instant::now() >= d);
    loop {
        let eof = pos >= length;
        if eof {
            chunker.end_of_input(final_);
        } else {
            let to = (pos + read_size).min(length);
            let bytes = store
                .get_range(&path, pos as u64..to as u64)
                .await
                .map_err(err)?;
            let mut fed = 0;
            while fed < bytes.len() {
                fed += chunker.feed(&bytes[fed..]);
                if chunker.is_full() {
                    let chunk = chunker.take();
                    commit_chunk(
                        lake,
                        &source,
                        chunk,
                        cfg,
                        &mut out,
                        std::mem::take(&mut first),
                    )
                    .await?;
                    if out_of_time() {
                        // what was read past this chunk is read again by the continuation
                        out.continue_at = Some(out.end);
                        return Ok(out);
                    }
                }
            }
            pos = to;
            continue;
        }
        let chunk = chunker.take();
        if chunk.end > chunk.start {
            commit_chunk(lake, &source, chunk, cfg, &mut out, first).await?;
        }
        out.pending_tail = chunker.pending_tail() as u64;
        break;
    }
    Ok(out)
}

/// What a pass's first run row records about where it started.
#[derive(Default)]
struct Annotation {
    skipped: Option<i64>,
    redelivered: Option<i64>,
    note: Option<String>,
}

async fn commit_chunk(
    lake: &Lake,
    source: &SourceId,
    chunk: super::lines::Chunk,
    cfg: &PipelineConfig,
    out: &mut BlobOutcome,
    note: Annotation,
) -> Result<(), BlobError> {
    let end = chunk.end;
    let report = ingest_chunk(lake, source, chunk, cfg, |row| {
        row.skipped = note.skipped;
        row.redelivered = note.redelivered;
        row.note = note.note;
    })
    .await?;
    out.stats.add(&report.stats);
    out.written += report.commit.written();
    out.already_present += report.commit.already_present();
    out.chunks += 1;
    out.end = end;
    Ok(())
}

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

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(3600) * 3600;
    Utc.timestamp_opt(secs, 0).single().unwrap_or(t)
}

/// The hour folder (`y=/m=/d=/h=/`) of an hour.
pub fn hour_prefix(hour: DateTime<Utc>) -> String {
    hour.format("y=%Y/m=%m/d=%d/h=%H/").to_string()
}

/// The hour folders from `hours` hours ago to now, newest first.
pub fn hour_prefixes(now: DateTime<Utc>, hours: u32) -> Vec<String> {
    (0..=hours as i64)
        .map(|i| hour_prefix(now - Duration::hours(i)))
        .collect()
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
) -> Result<SweepOutcome, BlobError> {
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

    let top = match store.list_with_delimiter(None).await {
        Ok(t) => t.common_prefixes,
        // a container Defender has not written yet
        Err(e) if crate::azure::is_container_not_found(&e) => Vec::new(),
        Err(e) => return Err(err(e)),
    };
    // hour -> whether everything in it is read
    let mut complete: BTreeMap<DateTime<Utc>, bool> = hours.iter().map(|h| (*h, true)).collect();
    for hour in &hours {
        let mut found = Vec::new();
        for tenant in &top {
            let prefix = Path::from(format!(
                "{}/{}",
                tenant.as_ref(),
                hour_prefix(*hour).trim_end_matches('/')
            ));
            let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(err)?;
            for meta in metas {
                if meta.location.as_ref().ends_with(".json") {
                    found.push((meta.location.to_string(), meta.size as i64));
                }
            }
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
        let stats = crate::pipeline::BatchStats::default();
        let mut row = RunRow::chunk(
            &sweep_id,
            cursor.unwrap_or(catch_from).timestamp(),
            new_cursor.timestamp(),
            &stats,
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
) -> Result<Option<DateTime<Utc>>, BlobError> {
    Ok(lake
        .resume_position(sweep_id)
        .await?
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator() -> UrlPolicy {
        UrlPolicy::new(
            DEFAULT_ENDPOINT_SUFFIX,
            Some("http://127.0.0.1:10000/devstoreaccount1"),
        )
    }

    #[test]
    fn parses_blob_urls() {
        let p = UrlPolicy::default();
        let b = BlobRef::parse_url("https://Acct.blob.core.windows.net/insights-logs-advancedhunting-deviceinfo/tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json", &p).unwrap();
        assert_eq!(b.account, "acct");
        assert_eq!(b.container, "insights-logs-advancedhunting-deviceinfo");
        assert_eq!(b.path, "tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json");
        assert_eq!(
            b.hour_end().unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 18, 15, 0, 0).unwrap()
        );
        assert_eq!(
            b.source_id().as_str(),
            "blob://acct/insights-logs-advancedhunting-deviceinfo/tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json"
        );
        let e = BlobRef::parse_url(
            "http://127.0.0.1:10000/devstoreaccount1/ccc/a%3Db/PT1H.json",
            &emulator(),
        )
        .unwrap();
        assert_eq!(
            (e.account.as_str(), e.container.as_str(), e.path.as_str()),
            ("devstoreaccount1", "ccc", "a=b/PT1H.json")
        );
        // sovereign clouds: the suffix is a setting
        let cn = UrlPolicy::new("core.chinacloudapi.cn", None);
        assert!(
            BlobRef::parse_url("https://acct.blob.core.chinacloudapi.cn/ccc/x.json", &cn).is_ok()
        );
        assert!(BlobRef::parse_url("https://acct.blob.core.windows.net/ccc/x.json", &cn).is_err());
    }

    #[test]
    fn refuses_what_it_should_without_echoing_secrets() {
        let p = UrlPolicy::default();
        let long = format!(
            "https://acct.blob.core.windows.net/ccc/{}",
            "a".repeat(3000)
        );
        let long_name = format!(
            "https://acct.blob.core.windows.net/ccc/{}",
            "a/".repeat(600)
        );
        for bad in [
            "ftp://x/y",
            "nope",
            "https://evil.example.com/ccc/p",
            "https://a.blob.core.windows.net/ccc",
            "https://acct.blob.core.windows.net/ccc",
            "https://acct.blob.core.windows.net/ccc/../x",
            "https://acct.blob.core.windows.net/ccc/a/%2E%2E/x",
            "https://acct.blob.core.windows.net/ccc/a%2F..%2Fb/x.json",
            "https://acct.blob.core.windows.net/ccc/a%5Cb/x.json",
            "https://acct.blob.core.windows.net/ccc/a%00b/x.json",
            "https://acct.blob.core.windows.net/ccc//x.json",
            "https://acct.blob.core.windows.net/Bad_Container/x.json",
            "http://acct.blob.core.windows.net/ccc/x.json",
            "https://user:secretpw@acct.blob.core.windows.net/ccc/x.json",
            "https://acct.blob.core.windows.net/ccc/x.json?sv=2020&sig=SECRETSIG",
            "https://acct.blob.core.windows.net/ccc/x.json#frag",
            // loopback and the emulator only under the configured base
            "http://127.0.0.1:10000/devstoreaccount1/ccc/x.json",
            "http://localhost:10000/devstoreaccount1/ccc/x.json",
            "http://[::1]:10000/devstoreaccount1/ccc/x.json",
            long.as_str(),
            long_name.as_str(),
        ] {
            let e = BlobRef::parse_url(bad, &p).expect_err(bad).to_string();
            assert!(!e.contains("SECRET") && !e.contains("secretpw"), "{e}");
        }
        // under the emulator base: only its own host, port and account
        let em = emulator();
        assert!(
            BlobRef::parse_url("http://127.0.0.1:10000/devstoreaccount1/ccc/x.json", &em).is_ok()
        );
        assert!(
            BlobRef::parse_url("http://127.0.0.1:10001/devstoreaccount1/ccc/x.json", &em).is_err()
        );
        assert!(BlobRef::parse_url("http://127.0.0.1:10000/otheraccount/ccc/x.json", &em).is_err());
        assert!(valid_account("abc123") && !valid_account("ab") && !valid_account("Abc"));
        assert!(valid_container("insights-logs-advancedhunting-deviceinfo"));
        assert!(!valid_container("a--b") && !valid_container("-ab") && !valid_container("ab"));
    }

    #[test]
    fn hour_prefixes_cover_the_window() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 1, 30, 0).unwrap();
        assert_eq!(
            hour_prefixes(now, 2),
            vec![
                "y=2026/m=01/d=01/h=01/",
                "y=2026/m=01/d=01/h=00/",
                "y=2025/m=12/d=31/h=23/"
            ]
        );
    }
}
