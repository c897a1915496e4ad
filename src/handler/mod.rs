//! The Azure Functions custom handler: an HTTP server on
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT` that adapts each trigger invocation to the same
//! pipeline the CLI uses. The process is long-lived; the lake (and its cached table states)
//! lives across invocations.
//!
//! Functions: `EventHubIngest` (Event Hub batch), `BlobIngest` (a queue message naming a
//! blob), `BlobSweep` (timer: enqueue grown blobs), `Replay` (HTTP: enqueue an allow-listed
//! blob), `Maintenance` (timer: checkpoints and vacuum).

pub mod protocol;
pub mod settings;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::decode::Unit;
use crate::pipeline::{BatchReport, BatchStats, PipelineError, ingest_units};
use crate::sink::Lake;
use crate::source::blob::{
    BlobError, BlobReadOptions, BlobRef, BlobStores, ingest_blob, sweep_container,
};
use protocol::{Invocation, InvocationResponse, ProtocolError, decode_event_hub, structured, text};
pub use settings::HandlerSettings;

/// Shared across invocations.
pub struct AppState {
    pub lake: Lake,
    pub blobs: BlobStores,
    pub settings: HandlerSettings,
}

impl AppState {
    pub fn new(settings: HandlerSettings) -> anyhow::Result<Arc<AppState>> {
        let lake = Lake::open(&settings.lake, settings.lake_settings())?;
        let blobs = BlobStores::new(settings.blob_options.clone());
        Ok(Arc::new(AppState {
            lake,
            blobs,
            settings,
        }))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = DefaultBodyLimit::max(state.settings.max_request_bytes);
    Router::new()
        // the host's readiness probe and pings: any answer will do, at once
        .route("/", get(|| async { "xdr-ingest ready" }))
        .route("/EventHubIngest", post(event_hub))
        .route("/BlobIngest", post(blob_ingest))
        .route("/BlobSweep", post(blob_sweep))
        .route("/Replay", post(replay))
        .route("/Maintenance", post(maintenance))
        .layer(body_limit)
        .with_state(state)
}

/// Serves until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}

/// Errors of one invocation, by what the host should do about them.
#[derive(Debug, thiserror::Error)]
enum InvocationError {
    /// The host's request itself is not what the protocol says: 400 (the host retries; the
    /// batch is not checkpointed away, and the error is loud in the logs).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The lake or a blob could not be read or written: 500, retried.
    #[error(transparent)]
    Transient(anyhow::Error),
}

impl From<PipelineError> for InvocationError {
    fn from(e: PipelineError) -> Self {
        InvocationError::Transient(e.into())
    }
}

impl From<BlobError> for InvocationError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Url { .. } => InvocationError::Protocol(ProtocolError::Malformed {
                field: "blob url".into(),
                msg: e.to_string(),
            }),
            other => InvocationError::Transient(other.into()),
        }
    }
}

fn respond(function: &str, id: &str, r: Result<InvocationResponse, InvocationError>) -> Response {
    match r {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => {
            let status = match e {
                InvocationError::Protocol(_) => StatusCode::BAD_REQUEST,
                InvocationError::Transient(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            // the host ignores a failed invocation's body and Logs: log it ourselves
            tracing::error!(function, invocation_id = id, error = %format!("{e:#}"), status = status.as_u16(), "invocation failed");
            (status, axum::Json(json!({"error": format!("{e:#}")}))).into_response()
        }
    }
}

fn invocation_id(h: &HeaderMap) -> String {
    h.get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// One log line and one structured event per invocation, with the metrics.
/// What an invocation did, for its summary: one batch, or every chunk of a blob.
struct Counts<'a> {
    stats: &'a BatchStats,
    written: u64,
    already_present: u64,
    build_ms: u64,
    commit_ms: u64,
}

impl<'a> From<&'a BatchReport> for Counts<'a> {
    fn from(r: &'a BatchReport) -> Self {
        Counts {
            stats: &r.stats,
            written: r.commit.written(),
            already_present: r.commit.already_present(),
            build_ms: r.build_ms,
            commit_ms: r.commit_ms,
        }
    }
}

fn summarize(function: &str, id: &str, what: &str, r: Counts<'_>, started: Instant) -> String {
    let s = r.stats;
    let lag_s = s
        .max_event_time
        .map(|t| (chrono::Utc::now().timestamp_micros() - t) as f64 / 1e6);
    tracing::info!(
        function,
        invocation_id = id,
        what,
        records = s.records,
        typed_rows = s.typed_total(),
        dead_letters = s.dead_total(),
        rescued_values = s.rescued_total(),
        rows_written = r.written,
        rows_already_present = r.already_present,
        bytes = s.bytes,
        build_ms = r.build_ms,
        commit_ms = r.commit_ms,
        total_ms = started.elapsed().as_millis() as u64,
        event_lag_s = lag_s,
        rows_by_table = %serde_json::to_string(&s.typed_rows).unwrap_or_default(),
        dead_letters_by_reason = %serde_json::to_string(&s.dead_letters).unwrap_or_default(),
        "invocation"
    );
    format!(
        "{function} {what}: {} records, {} typed rows, {} dead letters {:?}, {} rescued values; {} rows written, {} already in the lake; {} bytes; {} ms",
        s.records,
        s.typed_total(),
        s.dead_total(),
        s.dead_letters,
        s.rescued_total(),
        r.written,
        r.already_present,
        s.bytes,
        started.elapsed().as_millis()
    )
}

async fn event_hub(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = invocation_id(&headers);
    let started = Instant::now();
    let r = async {
        let inv = Invocation::parse(&body)?;
        let batch = decode_event_hub(
            &inv,
            &st.settings.eventhub_binding,
            st.settings.eventhub_data_type,
        )?;
        let units: Vec<Unit> = batch
            .events
            .iter()
            .map(|e| Unit {
                bytes: &e.body,
                full_len: e.body.len(),
                position: e.sequence_number,
                enqueued_at: e.enqueued_at,
            })
            .collect();
        let report = ingest_units(&st.lake, &batch.source, &units, &st.settings.pipeline).await?;
        let what = match (batch.events.first(), batch.events.last()) {
            (Some(a), Some(b)) => format!(
                "p{} seq {}-{} ({} events)",
                batch.partition,
                a.sequence_number,
                b.sequence_number,
                batch.events.len()
            ),
            _ => format!("p{} (no events)", batch.partition),
        };
        Ok(InvocationResponse::log(summarize(
            "EventHubIngest",
            &id,
            &what,
            (&report).into(),
            started,
        )))
    }
    .await;
    respond("EventHubIngest", &id, r)
}

/// A unit of blob work: our own `{"url": …, "start_offset": …}` item, or an Event Grid
/// `BlobCreated` event (as Event Grid writes it to a queue: `data.url`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub url: String,
    pub start_offset: Option<i64>,
}

impl WorkItem {
    pub fn parse(v: &Value) -> Result<WorkItem, ProtocolError> {
        let v = match v {
            Value::String(_) => structured("work item", &Value::String(text(v)))?,
            other => other.clone(),
        };
        let url = v
            .get("url")
            .or_else(|| v.get("data").and_then(|d| d.get("url")))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProtocolError::Missing("work item `url` (or Event Grid `data.url`)".into())
            })?;
        let start_offset =
            match v.get("start_offset") {
                None | Some(Value::Null) => None,
                Some(x) => Some(x.as_i64().filter(|o| *o >= 0).ok_or_else(|| {
                    ProtocolError::Malformed {
                        field: "start_offset".into(),
                        msg: "expected a non-negative integer".into(),
                    }
                })?),
            };
        Ok(WorkItem {
            url: url.to_owned(),
            start_offset,
        })
    }

    pub fn to_message(&self) -> Value {
        match self.start_offset {
            Some(o) => json!({"url": self.url, "start_offset": o}),
            None => json!({"url": self.url}),
        }
    }
}

async fn blob_ingest(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = invocation_id(&headers);
    let started = Instant::now();
    let r = async {
        let inv = Invocation::parse(&body)?;
        let raw = inv
            .data(&st.settings.queue_binding)
            .ok_or_else(|| ProtocolError::Missing(format!("Data.{}", st.settings.queue_binding)))?;
        let item = WorkItem::parse(raw)?;
        let blob = BlobRef::parse_url(&item.url)?;
        let s = &st.settings;
        let opts = BlobReadOptions {
            chunk_bytes: s.chunk_bytes,
            grace: s.grace,
            now: chrono::Utc::now(),
        };
        let o = ingest_blob(
            &st.lake,
            &st.blobs,
            &blob,
            item.start_offset,
            &s.pipeline,
            opts,
        )
        .await?;
        let what = format!(
            "{} [{}, {}) of {} bytes{}{}",
            o.source,
            o.start,
            o.end,
            o.length,
            if o.pending_tail > 0 {
                format!(", {} bytes of a partial line left", o.pending_tail)
            } else {
                String::new()
            },
            if o.final_ { ", final" } else { "" }
        );
        let counts = Counts {
            stats: &o.stats,
            written: o.written,
            already_present: o.already_present,
            build_ms: 0,
            commit_ms: 0,
        };
        Ok(InvocationResponse::log(summarize(
            "BlobIngest",
            &id,
            &what,
            counts,
            started,
        )))
    }
    .await;
    respond("BlobIngest", &id, r)
}

async fn blob_sweep(State(st): State<Arc<AppState>>, headers: HeaderMap, _body: Bytes) -> Response {
    let id = invocation_id(&headers);
    let r = async {
        let s = &st.settings;
        let Some(account) = &s.defender_account else {
            return Ok(InvocationResponse::log("BlobSweep: XDR_DEFENDER_STORAGE_ACCOUNT is not set; nothing to sweep"));
        };
        let now = chrono::Utc::now();
        let mut messages = Vec::new();
        for container in &s.containers {
            for g in sweep_container(&st.lake, &st.blobs, account, container, now, s.sweep_hours).await? {
                messages.push(
                    WorkItem {
                        url: s.blob_url(&g.blob),
                        start_offset: None,
                    }
                    .to_message(),
                );
            }
        }
        tracing::info!(function = "BlobSweep", invocation_id = %id, enqueued = messages.len(), "sweep");
        let line = format!("BlobSweep: {} grown blob(s) enqueued", messages.len());
        Ok(InvocationResponse::log(line).with_output(&s.queue_output_binding, Value::Array(messages)))
    }
    .await;
    respond("BlobSweep", &id, r)
}

async fn replay(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let id = invocation_id(&headers);
    let r = async {
        let inv = Invocation::parse(&body)?;
        let s = &st.settings;
        let req = inv
            .data(&s.http_binding)
            .map(|v| structured("Data.req", v))
            .transpose()?
            .ok_or_else(|| ProtocolError::Missing(format!("Data.{}", s.http_binding)))?;
        let caller_body = req.get("Body").map(text).unwrap_or_default();
        let answer = |status: u16, body: Value| {
            tracing::info!(function = "Replay", invocation_id = %id, status, body = %body, "replay");
            InvocationResponse::log(format!("Replay: {status} {body}")).with_http(&s.http_output_binding, status, &body)
        };
        let item = match serde_json::from_str::<Value>(&caller_body)
            .map_err(|e| ProtocolError::Body(e.to_string()))
            .and_then(|v| WorkItem::parse(&v))
        {
            Ok(i) => i,
            Err(e) => {
                return Ok(answer(400, json!({"error": format!("expected {{\"url\": \"https://<account>.blob.core.windows.net/<container>/<path>\", \"start_offset\": N?}}: {e}")})));
            }
        };
        let blob = match BlobRef::parse_url(&item.url) {
            Ok(b) => b,
            Err(e) => return Ok(answer(400, json!({"error": e.to_string()}))),
        };
        if !s.replay_allowed(&blob) {
            return Ok(answer(
                403,
                json!({"error": format!("{}/{} is not in XDR_REPLAY_ALLOWLIST", blob.account, blob.container)}),
            ));
        }
        let msg = item.to_message();
        Ok(answer(202, json!({"accepted": true, "source": blob.source_id().to_string(), "work": msg}))
            .with_output(&s.queue_output_binding, Value::Array(vec![msg])))
    }
    .await;
    respond("Replay", &id, r)
}

async fn maintenance(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    _body: Bytes,
) -> Response {
    let id = invocation_id(&headers);
    let r = async {
        let started = Instant::now();
        let done = crate::maintain::maintain(
            &st.lake,
            st.settings.vacuum_retention_hours,
            &crate::maintain::CompactOptions::default(),
        )
            .await
            .map_err(|e| InvocationError::Transient(e.into()))?;
        let failed = done.iter().filter(|m| m.error.is_some()).count();
        tracing::info!(function = "Maintenance", invocation_id = %id, tables = done.len(), failed, ms = started.elapsed().as_millis() as u64, "maintenance");
        Ok(InvocationResponse::log(format!(
            "Maintenance: {} tables compacted where needed, checkpointed and vacuumed, {} failed: {}",
            done.len() - failed,
            failed,
            serde_json::to_string(&done).unwrap_or_default()
        )))
    }
    .await;
    respond("Maintenance", &id, r)
}
