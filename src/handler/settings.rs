//! Handler settings from app settings (environment variables); each is documented in the
//! README ("Run on Azure Functions") with its default.

use std::collections::HashMap;

use chrono::Duration;

use crate::handler::protocol::EventDataType;
use crate::model::Category;
use crate::pipeline::{DEFAULT_MAX_RECORD_BYTES, DEFAULT_RETENTION_DAYS, PipelineConfig};
use crate::quality::Rules;
use crate::sink::LakeSettings;
use crate::source::blob::BlobRef;
use crate::source::file::DEFAULT_CHUNK_BYTES;

/// Default of `XDR_MAX_REQUEST_BYTES`: 256 MiB (axum's own default, 2 MB, refused a batch of
/// 100 ordinary Defender events).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024 * 1024;

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
    /// `XDR_SWEEP_HOURS`: how many closed hours the sweep looks back.
    pub sweep_hours: u32,
    /// `XDR_REPLAY_ALLOWLIST`: `account/container` entries (`account/*` for all containers).
    pub replay_allowlist: Vec<(String, String)>,
    /// `XDR_VACUUM_RETENTION_HOURS`.
    pub vacuum_retention_hours: u64,
    pub pipeline: PipelineConfig,
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

fn kv_list(s: &str) -> HashMap<String, String> {
    s.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl HandlerSettings {
    /// Reads the settings; a malformed value is an error naming the setting.
    pub fn from_env() -> anyhow::Result<HandlerSettings> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        fn num<T: std::str::FromStr>(k: &str, v: Option<String>, default: T) -> anyhow::Result<T> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("setting {k}={v} is not a valid number")),
            }
        }
        let rules = match var("XDR_RULES_FILE") {
            Some(p) => Rules::from_file(std::path::Path::new(&p))?,
            None => Rules::defaults(),
        };
        let defender_account = var("XDR_DEFENDER_STORAGE_ACCOUNT").map(|a| a.to_ascii_lowercase());
        let containers: Vec<String> = match var("XDR_DEFENDER_CONTAINERS") {
            Some(c) => c
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => Category::all()
                .map(|c| c.table().container.clone())
                .collect(),
        };
        let replay_allowlist = match var("XDR_REPLAY_ALLOWLIST") {
            Some(l) => l
                .split(',')
                .filter_map(|e| e.trim().split_once('/'))
                .map(|(a, c)| (a.trim().to_ascii_lowercase(), c.trim().to_owned()))
                .collect(),
            None => defender_account
                .iter()
                .flat_map(|a| containers.iter().map(move |c| (a.clone(), c.clone())))
                .collect(),
        };
        Ok(HandlerSettings {
            lake: var("XDR_LAKE").unwrap_or_else(|| "./lake".into()),
            lake_options: var("XDR_LAKE_OPTIONS")
                .map(|s| kv_list(&s))
                .unwrap_or_default(),
            defender_account,
            containers,
            blob_options: var("XDR_BLOB_OPTIONS")
                .map(|s| kv_list(&s))
                .unwrap_or_default(),
            blob_url_base: var("XDR_BLOB_URL_BASE"),
            chunk_bytes: num(
                "XDR_CHUNK_BYTES",
                var("XDR_CHUNK_BYTES"),
                DEFAULT_CHUNK_BYTES,
            )?,
            max_request_bytes: num(
                "XDR_MAX_REQUEST_BYTES",
                var("XDR_MAX_REQUEST_BYTES"),
                DEFAULT_MAX_REQUEST_BYTES,
            )?,
            grace: Duration::minutes(num(
                "XDR_BLOB_GRACE_MINUTES",
                var("XDR_BLOB_GRACE_MINUTES"),
                30,
            )?),
            sweep_hours: num("XDR_SWEEP_HOURS", var("XDR_SWEEP_HOURS"), 2)?,
            replay_allowlist,
            vacuum_retention_hours: num(
                "XDR_VACUUM_RETENTION_HOURS",
                var("XDR_VACUUM_RETENTION_HOURS"),
                168,
            )?,
            pipeline: PipelineConfig {
                rules,
                max_record_bytes: num(
                    "XDR_MAX_RECORD_BYTES",
                    var("XDR_MAX_RECORD_BYTES"),
                    DEFAULT_MAX_RECORD_BYTES,
                )?,
                retention_days: num(
                    "XDR_RETENTION_DAYS",
                    var("XDR_RETENTION_DAYS"),
                    DEFAULT_RETENTION_DAYS,
                )?,
            },
            eventhub_data_type: match var("XDR_EVENTHUB_DATA_TYPE") {
                None => EventDataType::default(),
                Some(v) => v
                    .parse()
                    .map_err(|e| anyhow::anyhow!("XDR_EVENTHUB_DATA_TYPE: {e}"))?,
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
        let mut s = LakeSettings {
            checkpoint_on_commit: false,
            ..Default::default()
        }
        .with_env_identity();
        s.storage_options.extend(self.lake_options.clone());
        s
    }

    pub fn replay_allowed(&self, b: &BlobRef) -> bool {
        self.replay_allowlist
            .iter()
            .any(|(a, c)| *a == b.account && (c == "*" || *c == b.container))
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
                "https://{}.blob.core.windows.net/{}/{}",
                b.account,
                b.container,
                path.join("/")
            ),
        }
    }
}
