//! Defender's hourly append blobs: reading a blob through object_store with range requests
//! from its `_ingest_runs` watermark in bounded chunks (a commit per chunk), leaving a trailing
//! partial line for later until the blob's hour plus a grace period has passed, and listing
//! the open and recently closed hours for the sweep.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use deltalake::logstore::object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use futures::TryStreamExt;
use url::Url;

use super::lines::Chunker;
use super::resume::{ingest_chunk, resume_offset};
use crate::model::SourceId;
use crate::pipeline::{BatchStats, PipelineConfig, PipelineError};
use crate::sink::Lake;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("`{url}` is not a blob URL: {msg}")]
    Url { url: String, msg: String },
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

/// A blob by account, container and path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub account: String,
    pub container: String,
    pub path: String,
}

impl BlobRef {
    /// `https://<account>.blob.core.windows.net/<container>/<path>` (also `.dfs.`), or the
    /// path-style URL of the emulator, `http://127.0.0.1:10000/<account>/<container>/<path>`.
    pub fn parse_url(url: &str) -> Result<BlobRef, BlobError> {
        let bad = |msg: &str| BlobError::Url {
            url: url.to_owned(),
            msg: msg.to_owned(),
        };
        let u = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(bad("expected an http(s) URL"));
        }
        let host = u
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        let segments: Vec<String> = u
            .path_segments()
            .map(|s| {
                s.map(|x| {
                    percent_encoding::percent_decode_str(x)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect()
            })
            .unwrap_or_default();
        let (account, rest) = if let Some(acct) = host
            .strip_suffix(".blob.core.windows.net")
            .or_else(|| host.strip_suffix(".dfs.core.windows.net"))
        {
            (acct.to_owned(), &segments[..])
        } else if host == "127.0.0.1" || host == "localhost" {
            let (a, r) = segments
                .split_first()
                .ok_or_else(|| bad("no account in the path"))?;
            (a.clone(), r)
        } else {
            return Err(bad("not an Azure blob endpoint"));
        };
        let (container, path) = rest.split_first().ok_or_else(|| bad("no container"))?;
        if container.is_empty() || path.is_empty() || path.iter().any(|p| p.is_empty() || p == "..")
        {
            return Err(bad("no blob path"));
        }
        Ok(BlobRef {
            account,
            container: container.clone(),
            path: path.join("/"),
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
    /// object_store Azure options for the Defender account(s): managed identity on Azure,
    /// an endpoint and key for Azurite.
    options: HashMap<String, String>,
    cache: Mutex<HashMap<(String, String), Arc<dyn ObjectStore>>>,
}

impl BlobStores {
    pub fn new(options: HashMap<String, String>) -> Self {
        BlobStores {
            options,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self, account: &str, container: &str) -> Result<Arc<dyn ObjectStore>, BlobError> {
        let key = (account.to_owned(), container.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let mut b = MicrosoftAzureBuilder::from_env()
            .with_account(account)
            .with_container_name(container);
        for (k, v) in &self.options {
            if let Ok(key) = AzureConfigKey::from_str(k) {
                b = b.with_config(key, v);
            }
        }
        let store: Arc<dyn ObjectStore> =
            Arc::new(b.build().map_err(|source| BlobError::Store {
                account: account.to_owned(),
                source,
            })?);
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
}

/// How a blob is read.
#[derive(Clone, Copy, Debug)]
pub struct BlobReadOptions {
    /// Bytes per commit.
    pub chunk_bytes: usize,
    /// A blob is final (its unterminated last line is a record) this long after its hour.
    pub grace: Duration,
    pub now: DateTime<Utc>,
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
    if length <= start {
        return Ok(out);
    }
    let mut chunker = Chunker::new(start, cfg.max_record_bytes, chunk_bytes);
    let mut pos = start;
    let read_size = chunk_bytes.clamp(64 * 1024, 16 * 1024 * 1024) as i64;
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
                    commit_chunk(lake, &source, chunk, cfg, &mut out).await?;
                }
            }
            pos = to;
            continue;
        }
        let chunk = chunker.take();
        if chunk.end > chunk.start {
            commit_chunk(lake, &source, chunk, cfg, &mut out).await?;
        }
        out.pending_tail = chunker.pending_tail() as u64;
        break;
    }
    Ok(out)
}

async fn commit_chunk(
    lake: &Lake,
    source: &SourceId,
    chunk: super::lines::Chunk,
    cfg: &PipelineConfig,
    out: &mut BlobOutcome,
) -> Result<(), BlobError> {
    let end = chunk.end;
    let report = ingest_chunk(lake, source, chunk, cfg).await?;
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
}

/// The hour folders (`y=/m=/d=/h=/`) from `hours` hours ago to now.
pub fn hour_prefixes(now: DateTime<Utc>, hours: u32) -> Vec<String> {
    (0..=hours as i64)
        .map(|i| {
            let t = now - Duration::hours(i);
            t.format("y=%Y/m=%m/d=%d/h=%H/").to_string()
        })
        .collect()
}

/// Lists the open and recently closed hours of one container (per tenant folder) and returns
/// every `*.json` blob longer than its watermark. Listing is bounded by the hour prefixes.
pub async fn sweep_container(
    lake: &Lake,
    stores: &BlobStores,
    account: &str,
    container: &str,
    now: DateTime<Utc>,
    hours: u32,
) -> Result<Vec<Grown>, BlobError> {
    let store = stores.store(account, container)?;
    let err = |source| BlobError::Store {
        account: account.to_owned(),
        source,
    };
    let top = match store.list_with_delimiter(None).await {
        Ok(t) => t,
        // a container Defender has not written yet
        Err(deltalake::ObjectStoreError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut grown = Vec::new();
    for tenant in top.common_prefixes {
        for hour in hour_prefixes(now, hours) {
            let prefix = Path::from(format!(
                "{}/{}",
                tenant.as_ref(),
                hour.trim_end_matches('/')
            ));
            let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(err)?;
            for meta in metas {
                if !meta.location.as_ref().ends_with(".json") {
                    continue;
                }
                let blob = BlobRef {
                    account: account.to_owned(),
                    container: container.to_owned(),
                    path: meta.location.to_string(),
                };
                let watermark = resume_offset(lake, &blob.source_id()).await?;
                if (meta.size as i64) > watermark {
                    grown.push(Grown {
                        blob,
                        length: meta.size as i64,
                        watermark,
                    });
                }
            }
        }
    }
    Ok(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_blob_urls() {
        let b = BlobRef::parse_url("https://Acct.blob.core.windows.net/insights-logs-advancedhunting-deviceinfo/tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json").unwrap();
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
        let e = BlobRef::parse_url("http://127.0.0.1:10000/devstoreaccount1/c/a%3Db/PT1H.json")
            .unwrap();
        assert_eq!(
            (e.account.as_str(), e.container.as_str(), e.path.as_str()),
            ("devstoreaccount1", "c", "a=b/PT1H.json")
        );
        for bad in [
            "ftp://x/y",
            "https://evil.example.com/c/p",
            "https://a.blob.core.windows.net/c",
            "https://a.blob.core.windows.net/c/../x",
            "nope",
        ] {
            assert!(BlobRef::parse_url(bad).is_err(), "{bad}");
        }
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
