//! Handler settings from app settings (environment variables); each is documented in the
//! README ("Run on Azure Functions") with its default.

use std::collections::HashMap;

use chrono::Duration;

use crate::handler::protocol::EventDataType;
use crate::ingest::DEFAULT_CHUNK_BYTES;
use crate::limits::{self, InvalidSetting};
use crate::model::Category;
use crate::pipeline::{DEFAULT_MAX_RECORD_BYTES, DEFAULT_RETENTION_DAYS, PipelineConfig};
use crate::quality::Rules;
use crate::sink::LakeSettings;
use crate::source::blob::{BlobRef, DEFAULT_ENDPOINT_SUFFIX, UrlPolicy};

/// Default of `XDR_MAX_REQUEST_BYTES`: 256 MiB (axum's own default, 2 MB, refused a batch of
/// 100 ordinary Defender events).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

/// Default of `XDR_COMMIT_LINGER_MS`: 5 s. The host does the long wait (`host.json`:
/// `minEventBatchSize`, `maxWaitTime`), which is not billed; the linger, which is (an
/// execution waiting is an execution), only has to gather the partitions' batches that the
/// host dispatches at about the same time. Partitions that shared a commit return together,
/// so their next batches fill and arrive together: they stay aligned (docs/cost-and-scale.md).
pub const DEFAULT_COMMIT_LINGER_MS: u64 = 5_000;

/// Characters escaped in a blob URL's path segment (`=` and `.` stay as Defender writes them).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/');

/// The opt-in that lets `XDR_VACUUM_RETENTION_HOURS` go below the safe floor.
pub const UNSAFE_VACUUM_SETTING: &str = "XDR_UNSAFE_VACUUM_RETENTION_MAY_LOSE_DATA";

/// Why the settings are not usable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
    #[error("XDR_RULES_FILE: {0}")]
    Rules(#[from] crate::quality::RulesError),
    #[error("XDR_SCHEMA_FILE: {0}")]
    Schema(#[from] crate::registry::RegistryError),
}

#[derive(Clone, Debug)]
pub struct HandlerSettings {
    /// `XDR_LAKE`: where the Delta tables go.
    pub lake: String,
    /// `XDR_LAKE_OPTIONS`: extra object_store options for the lake, `k=v;k=v`.
    pub lake_options: HashMap<String, String>,
    /// `XDR_DEFENDER_STORAGE_ACCOUNT`: the account Defender exports to.
    pub defender_account: Option<String>,
    /// `XDR_DEFENDER_CONTAINERS`: containers the sweep lists (default: all 26 tables').
    pub containers: Vec<String>,
    /// `XDR_BLOB_OPTIONS`: object_store options for reading the export account, `k=v;k=v`
    /// (on Azure the managed identity is used and nothing is needed).
    pub blob_options: HashMap<String, String>,
    /// `XDR_BLOB_URL_BASE`: how blob URLs of the export account are written in work items
    /// (default `https://<account>.blob.core.windows.net`).
    pub blob_url_base: Option<String>,
    /// `XDR_CHUNK_BYTES`: bytes of a blob per commit.
    pub chunk_bytes: usize,
    /// `XDR_MAX_REQUEST_BYTES`: the largest invocation the handler accepts. An Event Hub
    /// batch of 100 events of up to 1 MB each, JSON-escaped inside the host's request, must
    /// fit, or the host would redeliver a batch that can never land.
    pub max_request_bytes: usize,
    /// `XDR_BLOB_GRACE_MINUTES`: a blob is final this long after its hour ends.
    pub grace: Duration,
    /// `XDR_BLOB_TIME_BUDGET_SECONDS`: one BlobIngest invocation reads for this long at most,
    /// then commits what it has and enqueues a continuation (default 300 s, well inside
    /// host.json's `functionTimeout` of 10 minutes: a timeout restarts the whole worker).
    pub blob_time_budget: std::time::Duration,
    /// `XDR_SWEEP_HOURS`: how many closed hours the sweep always looks at.
    pub sweep_hours: u32,
    /// `XDR_SWEEP_MAX_CATCH_UP_HOURS`: how many hours before the recent window one sweep
    /// lists at most, from its persisted cursor, to catch up after an outage.
    pub sweep_max_catch_up_hours: u32,
    /// `XDR_REPLAY_ALLOWLIST`: `account/container` entries (`account/*` for all containers,
    /// `account/prefix*` for a prefix): the only blobs the app reads, whatever the trigger.
    /// Default: the export account's `insights-logs-advancedhunting-*` containers.
    pub replay_allowlist: Vec<(String, String)>,
    /// `XDR_STORAGE_ENDPOINT_SUFFIX`: the cloud's storage endpoint suffix (`core.windows.net`;
    /// `core.chinacloudapi.cn`, `core.usgovcloudapi.net` in sovereign clouds).
    pub endpoint_suffix: String,
    /// `XDR_VACUUM_RETENTION_HOURS` (and `XDR_UNSAFE_VACUUM_RETENTION_MAY_LOSE_DATA` for a
    /// value below the safe floor).
    pub vacuum: crate::sink::maintain::VacuumRetention,
    pub pipeline: PipelineConfig,
    /// `XDR_COMMIT_LINGER_MS`: how long an Event Hub invocation's appends wait for the other
    /// partitions' to share each table's commit (group commit). The main lever on the Event
    /// Hub path's storage requests: an instance commits each table about once per linger,
    /// whatever the host's batch sizes (docs/cost-and-scale.md).
    pub commit_linger: std::time::Duration,
    /// `XDR_COMMIT_LINGER_BYTES`: queued bytes (Arrow memory) that end a linger early.
    pub commit_linger_bytes: u64,
    /// `XDR_EVENTHUB_SLICE_BYTES`: an Event Hub batch larger than this is built and committed
    /// in slices of about this many event bytes, one after another, so that its memory stays
    /// bounded whatever the host sends.
    pub eventhub_slice_bytes: usize,
    /// `XDR_MAX_INFLIGHT_BYTES`: Event Hub request bytes held at once; a request waits for
    /// room before its body is read (one larger than this runs alone). Event Hub requests
    /// have no size limit: a 413 would be redelivered by the host forever.
    pub max_inflight_bytes: u64,
    /// `XDR_EVENTHUB_DATA_TYPE`: `string` (default) or `binary`, as the Event Hub trigger's
    /// `dataType` in EventHubIngest/function.json (the two must agree).
    pub eventhub_data_type: EventDataType,
    /// Binding names, as in the function.json files.
    pub eventhub_binding: String,
    pub queue_binding: String,
    pub queue_output_binding: String,
    pub http_binding: String,
    pub http_output_binding: String,
}

/// `k=v;k=v` (object_store options). An entry without `=` or with an empty key is an error,
/// not silently dropped.
fn kv_list(name: &str, s: &str) -> Result<HashMap<String, String>, InvalidSetting> {
    let mut out = HashMap::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => {
                // never echo the value: it may hold a key or a SAS
                return Err(InvalidSetting::new(
                    name,
                    "<hidden>",
                    "expected key=value entries separated by `;`",
                ));
            }
        }
    }
    Ok(out)
}

/// A container name, `*`, or a prefix of one followed by `*`.
fn valid_container_pattern(c: &str) -> bool {
    match c.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        None => crate::source::blob::valid_container(c),
    }
}

/// `account/container` entries (`account/*` for every container), comma-separated.
fn allowlist(s: &str) -> Result<Vec<(String, String)>, InvalidSetting> {
    let mut out = Vec::new();
    for e in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match e.split_once('/') {
            Some((a, c))
                if crate::source::blob::valid_account(a.trim())
                    && valid_container_pattern(c.trim()) =>
            {
                out.push((a.trim().to_ascii_lowercase(), c.trim().to_owned()));
            }
            _ => {
                return Err(InvalidSetting::new(
                    "XDR_REPLAY_ALLOWLIST",
                    e,
                    "expected `account/container` or `account/*` (Azure account and container names)",
                ));
            }
        }
    }
    Ok(out)
}

impl HandlerSettings {
    /// Reads and validates the settings from the environment; a malformed or out-of-range
    /// value is an error naming the setting (the handler refuses to start on it).
    pub fn from_env() -> anyhow::Result<HandlerSettings> {
        Ok(Self::from_vars(|k| std::env::var(k).ok())?)
    }

    /// [`Self::from_env`] over any source of settings (tests pass a map).
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<HandlerSettings, SettingsError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let num = |k: &str, range: &std::ops::RangeInclusive<u64>, default: u64| match var(k) {
            None => Ok(default),
            Some(v) => limits::parse_in(k, &v, range),
        };
        // the schema overlay first: the rules and everything after depend on the registry
        if let Some(p) = var("XDR_SCHEMA_FILE") {
            crate::registry::install_overlay(std::path::Path::new(p.trim()))?;
        }
        let rules = match var("XDR_RULES_FILE") {
            Some(p) => Rules::from_file(std::path::Path::new(&p))?,
            None => Rules::defaults(),
        };
        let defender_account = match var("XDR_DEFENDER_STORAGE_ACCOUNT") {
            Some(a) if crate::source::blob::valid_account(a.trim()) => {
                Some(a.trim().to_ascii_lowercase())
            }
            Some(a) => {
                return Err(InvalidSetting::new(
                    "XDR_DEFENDER_STORAGE_ACCOUNT",
                    a,
                    "not a storage account name (3-24 lowercase letters and digits)",
                )
                .into());
            }
            None => None,
        };
        let containers: Vec<String> = match var("XDR_DEFENDER_CONTAINERS") {
            Some(c) => {
                let list: Vec<String> = c
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = list
                    .iter()
                    .find(|c| !crate::source::blob::valid_container(c))
                {
                    return Err(InvalidSetting::new(
                        "XDR_DEFENDER_CONTAINERS",
                        bad.clone(),
                        "not a container name (3-63 lowercase letters, digits and dashes)",
                    )
                    .into());
                }
                list
            }
            None => Category::all()
                .map(|c| c.table().container.clone())
                .collect(),
        };
        let replay_allowlist = match var("XDR_REPLAY_ALLOWLIST") {
            Some(l) => allowlist(&l)?,
            None => defender_account
                .iter()
                .map(|a| (a.clone(), "insights-logs-advancedhunting-*".to_owned()))
                .collect(),
        };
        let endpoint_suffix = match var("XDR_STORAGE_ENDPOINT_SUFFIX") {
            Some(s) => {
                let s = s.trim().trim_matches('.').to_ascii_lowercase();
                if s.split('.').count() < 2
                    || !s.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
                    })
                {
                    return Err(InvalidSetting::new(
                        "XDR_STORAGE_ENDPOINT_SUFFIX",
                        s,
                        "expected a DNS suffix such as core.windows.net",
                    )
                    .into());
                }
                s
            }
            None => DEFAULT_ENDPOINT_SUFFIX.to_owned(),
        };
        let lake = var("XDR_LAKE").unwrap_or_else(|| "./lake".into());
        if lake.contains("://") {
            crate::sink::parse_location(&lake)
                .map_err(|e| InvalidSetting::new("XDR_LAKE", lake.clone(), e.to_string()))?;
        }
        let blob_url_base = match var("XDR_BLOB_URL_BASE") {
            Some(b) => {
                let u = url::Url::parse(b.trim()).map_err(|e| {
                    InvalidSetting::new("XDR_BLOB_URL_BASE", b.clone(), e.to_string())
                })?;
                if !matches!(u.scheme(), "http" | "https") || u.query().is_some() {
                    return Err(InvalidSetting::new(
                        "XDR_BLOB_URL_BASE",
                        b,
                        "expected an http(s) URL without a query, e.g. https://<account>.blob.core.windows.net",
                    )
                    .into());
                }
                Some(b.trim().trim_end_matches('/').to_owned())
            }
            None => None,
        };
        let vacuum_retention_hours = num(
            "XDR_VACUUM_RETENTION_HOURS",
            &limits::VACUUM_RETENTION_HOURS,
            crate::sink::maintain::SAFE_VACUUM_RETENTION_HOURS,
        )?;
        let unsafe_vacuum = match var(UNSAFE_VACUUM_SETTING) {
            Some(v) => limits::parse_bool(UNSAFE_VACUUM_SETTING, &v)?,
            None => false,
        };
        let vacuum =
            crate::sink::maintain::VacuumRetention::new(vacuum_retention_hours, unsafe_vacuum)
                .map_err(|e| {
                    InvalidSetting::new(
                        "XDR_VACUUM_RETENTION_HOURS",
                        vacuum_retention_hours.to_string(),
                        format!("{e}; set {UNSAFE_VACUUM_SETTING}=true to force it"),
                    )
                })?;
        Ok(HandlerSettings {
            lake,
            lake_options: match var("XDR_LAKE_OPTIONS") {
                Some(s) => kv_list("XDR_LAKE_OPTIONS", &s)?,
                None => HashMap::new(),
            },
            defender_account,
            containers,
            blob_options: match var("XDR_BLOB_OPTIONS") {
                Some(s) => kv_list("XDR_BLOB_OPTIONS", &s)?,
                None => HashMap::new(),
            },
            blob_url_base,
            chunk_bytes: num(
                "XDR_CHUNK_BYTES",
                &limits::CHUNK_BYTES,
                DEFAULT_CHUNK_BYTES as u64,
            )? as usize,
            max_request_bytes: num(
                "XDR_MAX_REQUEST_BYTES",
                &limits::MAX_REQUEST_BYTES,
                DEFAULT_MAX_REQUEST_BYTES as u64,
            )? as usize,
            grace: Duration::minutes(
                num("XDR_BLOB_GRACE_MINUTES", &limits::BLOB_GRACE_MINUTES, 30)? as i64,
            ),
            sweep_hours: num("XDR_SWEEP_HOURS", &limits::SWEEP_HOURS, 2)? as u32,
            sweep_max_catch_up_hours: num(
                "XDR_SWEEP_MAX_CATCH_UP_HOURS",
                &limits::SWEEP_MAX_CATCH_UP_HOURS,
                24,
            )? as u32,
            blob_time_budget: std::time::Duration::from_secs(num(
                "XDR_BLOB_TIME_BUDGET_SECONDS",
                &limits::BLOB_TIME_BUDGET_SECONDS,
                300,
            )?),
            replay_allowlist,
            endpoint_suffix,
            vacuum,
            pipeline: PipelineConfig {
                rules,
                max_record_bytes: num(
                    "XDR_MAX_RECORD_BYTES",
                    &limits::MAX_RECORD_BYTES,
                    DEFAULT_MAX_RECORD_BYTES as u64,
                )? as usize,
                retention_days: num(
                    "XDR_RETENTION_DAYS",
                    &limits::RETENTION_DAYS,
                    DEFAULT_RETENTION_DAYS as u64,
                )? as i32,
                max_new_tables_per_batch: num(
                    "XDR_MAX_NEW_TABLES",
                    &limits::MAX_NEW_TABLES,
                    crate::pipeline::DEFAULT_MAX_NEW_TABLES_PER_BATCH as u64,
                )? as usize,
                max_untyped_tables: num(
                    "XDR_MAX_UNTYPED_TABLES",
                    &limits::MAX_UNTYPED_TABLES,
                    crate::pipeline::DEFAULT_MAX_UNTYPED_TABLES as u64,
                )? as usize,
                dedup: match var("XDR_DEDUP") {
                    Some(v) => limits::parse_bool("XDR_DEDUP", &v)?,
                    None => true,
                },
            },
            commit_linger: std::time::Duration::from_millis(num(
                "XDR_COMMIT_LINGER_MS",
                &limits::COMMIT_LINGER_MS,
                DEFAULT_COMMIT_LINGER_MS,
            )?),
            commit_linger_bytes: num(
                "XDR_COMMIT_LINGER_BYTES",
                &limits::COMMIT_LINGER_BYTES,
                256 << 20,
            )?,
            eventhub_slice_bytes: num(
                "XDR_EVENTHUB_SLICE_BYTES",
                &limits::EVENTHUB_SLICE_BYTES,
                64 << 20,
            )? as usize,
            max_inflight_bytes: num(
                "XDR_MAX_INFLIGHT_BYTES",
                &limits::MAX_INFLIGHT_BYTES,
                768 << 20,
            )?,
            eventhub_data_type: match var("XDR_EVENTHUB_DATA_TYPE") {
                None => EventDataType::default(),
                Some(v) => v.parse().map_err(|e: String| {
                    InvalidSetting::new("XDR_EVENTHUB_DATA_TYPE", v.clone(), e)
                })?,
            },
            eventhub_binding: "events".into(),
            queue_binding: "work".into(),
            queue_output_binding: "outwork".into(),
            http_binding: "req".into(),
            http_output_binding: "res".into(),
        })
    }

    /// Lake settings: identity from the environment, no inline checkpoints (the Maintenance
    /// timer writes them).
    pub fn lake_settings(&self) -> LakeSettings {
        LakeSettings {
            checkpoint_on_commit: false,
            storage_options: self.lake_options.clone(),
            linger_bytes: self.commit_linger_bytes,
            ..Default::default()
        }
    }

    /// Whether the app may read `b`: every blob read, whatever the trigger (Replay, a queue
    /// message, the sweep), goes through this allow-list. A container entry may end in `*`.
    pub fn blob_allowed(&self, b: &BlobRef) -> bool {
        self.replay_allowlist.iter().any(|(a, c)| {
            *a == b.account
                && match c.strip_suffix('*') {
                    Some(prefix) => b.container.starts_with(prefix),
                    None => *c == b.container,
                }
        })
    }

    /// Which blob URLs parse at all (see [`UrlPolicy`]).
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy::new(&self.endpoint_suffix, self.blob_url_base.as_deref())
    }

    /// The URL a work item names a blob of the export account by.
    pub fn blob_url(&self, b: &BlobRef) -> String {
        let path: Vec<String> = b
            .path
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
            .collect();
        match &self.blob_url_base {
            Some(base) => format!(
                "{}/{}/{}",
                base.trim_end_matches('/'),
                b.container,
                path.join("/")
            ),
            None => format!(
                "https://{}.blob.{}/{}/{}",
                b.account,
                self.endpoint_suffix,
                b.container,
                path.join("/")
            ),
        }
    }
}
