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
use crate::ingest::eventhub::{EventBatchError, ingest_event_batch_sliced};
use crate::ingest::redrive::{RedriveFilter, redrive};
use crate::ingest::sweep::{SweepOptions, sweep_container};
use crate::ingest::{BlobReadOptions, IngestError, ingest_blob};
use crate::pipeline::{BatchReport, BatchStats, PipelineError};
use crate::sink::{Lake, with_linger};
use crate::source::blob::{BlobError, BlobRef, BlobStores};
use protocol::{
    Invocation, InvocationResponse, ProtocolError, decode_event_hub_owned, structured, text,
};
pub use settings::HandlerSettings;

/// Shared across invocations.
pub struct AppState {
    pub lake: Lake,
    pub blobs: BlobStores,
    pub settings: HandlerSettings,
    /// Room for Event Hub request bodies, in KiB (`XDR_MAX_INFLIGHT_BYTES`).
    inflight: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(settings: HandlerSettings) -> anyhow::Result<Arc<AppState>> {
        let lake = Lake::open(&settings.lake, settings.lake_settings())?;
        let blobs = BlobStores::new(settings.blob_options.clone(), &settings.endpoint_suffix);
        let kib = (settings.max_inflight_bytes / 1024) as usize;
        Ok(Arc::new(AppState {
            lake,
            blobs,
            inflight: tokio::sync::Semaphore::new(kib),
            settings,
        }))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = DefaultBodyLimit::max(state.settings.max_request_bytes);
    Router::new()
        // the host's readiness probe and pings: any answer will do, at once
        .route("/", get(|| async { "xdr-ingest ready" }))
        // No size limit here: a 413 would be redelivered by the host forever. Memory is
        // bounded by the in-flight gate and by building large batches in slices instead.
        .route(
            "/EventHubIngest",
            post(event_hub).layer(DefaultBodyLimit::disable()).layer(
                axum::middleware::from_fn_with_state(state.clone(), inflight_gate),
            ),
        )
        .route("/BlobIngest", post(blob_ingest))
        .route("/BlobSweep", post(blob_sweep))
        .route("/Replay", post(replay))
        .route("/Maintenance", post(maintenance))
        .layer(body_limit)
        .with_state(state)
}

/// Holds an Event Hub request until its body fits in `XDR_MAX_INFLIGHT_BYTES` beside the
/// others in flight (by its Content-Length; a quarter of the room without one; all of it for
/// one larger than the room), so that several partitions' large batches at once queue here
/// instead of exhausting the instance's memory. The host waits; nothing is refused.
async fn inflight_gate(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let room = (st.settings.max_inflight_bytes / 1024) as u32;
    let want = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|len| len.div_ceil(1024).min(room as u64) as u32)
        .unwrap_or(room / 4)
        .max(1);
    let waited = Instant::now();
    let Ok(_permit) = st.inflight.acquire_many(want).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    if waited.elapsed().as_secs() >= 1 {
        tracing::info!(
            kib = want,
            waited_ms = waited.elapsed().as_millis() as u64,
            "Event Hub request waited for room (XDR_MAX_INFLIGHT_BYTES)"
        );
    }
    next.run(req).await
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

impl From<IngestError> for InvocationError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Blob(b) => b.into(),
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
            let msg = crate::observe::render_error(&anyhow::Error::new(e));
            tracing::error!(function, invocation_id = id, error = %msg, status = status.as_u16(), "invocation failed");
            (status, axum::Json(json!({"error": msg}))).into_response()
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
    /// What was unusual (a gap, a redelivery, a restarted sequence, blobs behind).
    note: Option<String>,
}

impl<'a> From<&'a BatchReport> for Counts<'a> {
    fn from(r: &'a BatchReport) -> Self {
        Counts {
            stats: &r.stats,
            written: r.commit.written(),
            already_present: r.commit.already_present(),
            build_ms: r.build_ms,
            commit_ms: r.commit_ms,
            note: None,
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
        duplicates_dropped = s.duplicates_total(),
        untyped_tables = s.untyped_tables.len(),
        rows_written = r.written,
        rows_already_present = r.already_present,
        bytes = s.bytes,
        build_ms = r.build_ms,
        commit_ms = r.commit_ms,
        total_ms = started.elapsed().as_millis() as u64,
        event_lag_s = lag_s,
        rows_by_table = %serde_json::to_string(&s.typed_rows).unwrap_or_default(),
        dead_letters_by_reason = %serde_json::to_string(&s.dead_letters).unwrap_or_default(),
        note = r.note.as_deref(),
        "invocation"
    );
    format!(
        "{function} {what}: {} records, {} typed rows, {} dead letters {:?}, {} rescued values, {} duplicates dropped{}; {} rows written, {} already in the lake; {} bytes; {} ms{}",
        s.records,
        s.typed_total(),
        s.dead_total(),
        s.dead_letters,
        s.rescued_total(),
        s.duplicates_total(),
        if s.untyped_tables.is_empty() {
            String::new()
        } else {
            format!(", untyped tables {:?}", s.untyped_tables)
        },
        r.written,
        r.already_present,
        s.bytes,
        started.elapsed().as_millis(),
        r.note.map(|n| format!("; {n}")).unwrap_or_default()
    )
}

fn content_length(headers: &HeaderMap) -> usize {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
}

/// The request body in one buffer sized from its Content-Length (collecting it in chunks and
/// then joining them would hold it twice).
async fn read_body(body: axum::body::Body, headers: &HeaderMap) -> Result<Vec<u8>, axum::Error> {
    use futures::StreamExt;
    let hint = content_length(headers).min(4 << 30);
    let mut out = Vec::with_capacity(hint);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn event_hub(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let id = invocation_id(&headers);
    let started = Instant::now();
    let r = async {
        // A batch of 500 events of 1 MB is a ~0.5 GB request: its bytes go once parsed, the
        // events' text once decoded (bench/eventhub_largest_batch.py measures the peak).
        let body = read_body(body, &headers)
            .await
            .map_err(|e| InvocationError::Transient(anyhow::anyhow!("reading the request: {e}")))?;
        let inv = Invocation::parse(&body)?;
        drop(body);
        let batch = decode_event_hub_owned(
            inv,
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
        let o = with_linger(
            st.settings.commit_linger,
            ingest_event_batch_sliced(
                &st.lake,
                &batch.source,
                &units,
                &st.settings.pipeline,
                st.settings.eventhub_slice_bytes,
            ),
        )
        .await
        .map_err(|e| match e {
            EventBatchError::Positions(msg) => {
                InvocationError::Protocol(ProtocolError::Malformed {
                    field: "Metadata.SequenceNumberArray".into(),
                    msg,
                })
            }
            EventBatchError::Pipeline(p) => p.into(),
        })?;
        let what = match (batch.events.first(), batch.events.last()) {
            (Some(a), Some(b)) => format!(
                "{} seq {}-{} ({} events)",
                o.source,
                a.sequence_number,
                b.sequence_number,
                batch.events.len()
            ),
            _ => format!("{} (no events)", o.source),
        };
        let mut counts = Counts::from(&o.report);
        counts.note = o.continuity.note();
        Ok(InvocationResponse::log(summarize(
            "EventHubIngest",
            &id,
            &what,
            counts,
            started,
        )))
    }
    .await;
    // a large request's buffers are free now: hand them back before the next one is read
    // (the allocator would keep them, and the next large request would come on top)
    if content_length(&headers) >= (16 << 20) {
        crate::mem::release_free_memory();
    }
    respond("EventHubIngest", &id, r)
}

/// A redrive work item (`{"redrive": {...}}`), if `v` is one.
fn redrive_item(v: &Value) -> Result<Option<RedriveFilter>, ProtocolError> {
    let v = match v {
        Value::String(_) => match structured("work item", &Value::String(text(v))) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        other => other.clone(),
    };
    let Some(r) = v.get("redrive") else {
        return Ok(None);
    };
    let f: RedriveFilter =
        serde_json::from_value(r.clone()).map_err(|e| ProtocolError::Malformed {
            field: "redrive".into(),
            msg: e.to_string(),
        })?;
    if let Some(reason) = &f.reason
        && crate::model::DeadLetterReason::parse(reason).is_none()
    {
        return Err(ProtocolError::Malformed {
            field: "redrive.reason".into(),
            msg: format!("`{reason}` is not a dead-letter reason"),
        });
    }
    Ok(Some(f))
}

/// Runs (or resumes) a redrive within the blob time budget; what is left is enqueued.
async fn run_redrive(
    st: &AppState,
    filter: RedriveFilter,
    id: &str,
    started: Instant,
) -> Result<InvocationResponse, InvocationError> {
    let s = &st.settings;
    let out = redrive(
        &st.lake,
        &s.pipeline,
        filter,
        Some(started + s.blob_time_budget),
    )
    .await?;
    let landed: u64 = out.landed.values().sum();
    let failing: u64 = out.still_failing.values().sum();
    tracing::info!(
        function = "BlobIngest",
        invocation_id = id,
        run = out.run,
        candidates = out.candidates,
        landed,
        still_failing = failing,
        finished = out.finished,
        "redrive"
    );
    let line = format!(
        "BlobIngest redrive run {}: {} records, {landed} landed, {failing} still failing{}",
        out.run,
        out.candidates,
        if out.finished {
            ""
        } else {
            "; continuation enqueued"
        }
    );
    let mut resp = InvocationResponse::log(line);
    if !out.finished {
        resp = resp.with_output(
            &s.queue_output_binding,
            Value::Array(vec![json!({"redrive": {}})]),
        );
    }
    Ok(resp)
}

/// A Replay body is a URL and an offset; anything larger is refused.
const MAX_REPLAY_BODY_BYTES: usize = 16 * 1024;

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
        // Event Grid may deliver its schema's array of one event
        let v = match v {
            Value::Array(mut a) if a.len() == 1 => a.remove(0),
            Value::Array(a) => {
                return Err(ProtocolError::Malformed {
                    field: "work item".into(),
                    msg: format!("expected one event, found an array of {}", a.len()),
                });
            }
            other => other,
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
        let s = &st.settings;
        if let Some(filter) = redrive_item(raw)? {
            return run_redrive(&st, filter, &id, started).await;
        }
        let item = WorkItem::parse(raw)?;
        let blob = BlobRef::parse_url(&item.url, &s.url_policy())?;
        // the same allow-list as Replay: a queue message naming any other blob is refused
        // (failed, so that after the queue's retries it lands in the poison queue, where the
        // alert sees it), never read with the app's identity
        if !s.blob_allowed(&blob) {
            return Err(InvocationError::Protocol(ProtocolError::Malformed {
                field: "work item url".into(),
                msg: format!(
                    "{}/{} is not in XDR_REPLAY_ALLOWLIST: refused, not read",
                    blob.account, blob.container
                ),
            }));
        }
        let opts = BlobReadOptions {
            chunk_bytes: s.chunk_bytes,
            grace: s.grace,
            now: chrono::Utc::now(),
            deadline: Some(started + s.blob_time_budget),
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
        let mut note = o.note.clone();
        let mut response = InvocationResponse::default();
        if let Some(at) = o.continue_at {
            // out of time: what is done is committed; the rest goes to a new work item, which
            // resumes from the watermark (`at`, or further if another pass got there first)
            let cont = WorkItem {
                url: s.blob_url(&blob),
                start_offset: None,
            };
            response = response.with_output(
                &s.queue_output_binding,
                Value::Array(vec![cont.to_message()]),
            );
            let msg = format!(
                "time budget of {} s used up: continuation enqueued from byte {at}",
                s.blob_time_budget.as_secs()
            );
            note = Some(match note {
                Some(n) => format!("{n}; {msg}"),
                None => msg,
            });
        }
        let counts = Counts {
            stats: &o.stats,
            written: o.written,
            already_present: o.already_present,
            build_ms: 0,
            commit_ms: 0,
            note,
        };
        response
            .logs
            .push(summarize("BlobIngest", &id, &what, counts, started));
        Ok(response)
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
        let opts = SweepOptions {
            now: chrono::Utc::now(),
            recent_hours: s.sweep_hours,
            max_catch_up_hours: s.sweep_max_catch_up_hours,
            grace: s.grace,
        };
        let mut messages = Vec::new();
        let (mut closed_behind, mut catch_up_left, mut hours) = (0usize, 0i64, 0usize);
        let mut behind_examples = Vec::new();
        for container in &s.containers {
            let o = sweep_container(&st.lake, &st.blobs, account, container, opts).await?;
            closed_behind += o.closed_behind();
            catch_up_left = catch_up_left.max(o.catch_up_hours_left);
            hours += o.hours_scanned;
            for g in &o.grown {
                if g.closed && behind_examples.len() < 5 {
                    behind_examples.push(format!("{} ({} of {} bytes)", g.blob.source_id(), g.watermark, g.length));
                }
                messages.push(
                    WorkItem {
                        url: s.blob_url(&g.blob),
                        start_offset: None,
                    }
                    .to_message(),
                );
            }
        }
        if closed_behind > 0 {
            // a closed blob should have been read to its end by now: an outage being caught
            // up, or a BlobIngest that keeps failing (see the poison queue)
            tracing::warn!(function = "BlobSweep", invocation_id = %id, closed_behind, examples = ?behind_examples, "closed blobs behind their watermark");
        }
        tracing::info!(function = "BlobSweep", invocation_id = %id, enqueued = messages.len(), closed_behind, catch_up_hours_left = catch_up_left, hours_listed = hours, "sweep");
        let line = format!(
            "BlobSweep: {} grown blob(s) enqueued, {closed_behind} of them closed and behind their watermark; {hours} hour folders listed{}",
            messages.len(),
            if catch_up_left > 0 { format!("; catching up, {catch_up_left} hours still to list") } else { String::new() }
        );
        Ok(InvocationResponse::log(line).with_output(&s.queue_output_binding, Value::Array(messages)))
    }
    .await;
    respond("BlobSweep", &id, r)
}

/// How far back `{"drift": {}}` looks by default (drift reads `_rescued` of every file since).
const DRIFT_DEFAULT_DAYS: u64 = 7;

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
        let answer = |status: u16, body: Value| {
            tracing::info!(function = "Replay", invocation_id = %id, status, body = %body, "replay");
            InvocationResponse::log(format!("Replay: {status} {body}")).with_http(&s.http_output_binding, status, &body)
        };
        // The host leaves `Body` out when the request had no Content-Length (chunked transfer
        // encoding) as well as when it was empty.
        let Some(caller_body) = req.get("Body").filter(|b| !b.is_null()).map(text) else {
            return Ok(answer(400, json!({"error": "the request reached the app without a body: send {\"url\": ...} as JSON with a Content-Length header (the Functions host drops bodies sent with chunked transfer encoding)"})));
        };
        if caller_body.len() > MAX_REPLAY_BODY_BYTES {
            return Ok(answer(400, json!({"error": format!("the body is larger than {MAX_REPLAY_BODY_BYTES} bytes; send {{\"url\": ..., \"start_offset\": N?}} only")})));
        }
        // {"drift": {"since": "YYYY-MM-DD"?}}: the drift report, answered at once
        if let Ok(v) = serde_json::from_str::<Value>(&caller_body)
            && let Some(d) = v.get("drift")
        {
            let since = match d.get("since") {
                None | Some(Value::Null) => Some(chrono::Utc::now().date_naive() - chrono::Days::new(DRIFT_DEFAULT_DAYS)),
                Some(Value::String(t)) => match chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                    Ok(d) => Some(d),
                    Err(_) => return Ok(answer(400, json!({"error": "expected {\"drift\": {\"since\": \"YYYY-MM-DD\"?}}"}))),
                },
                Some(_) => return Ok(answer(400, json!({"error": "expected {\"drift\": {\"since\": \"YYYY-MM-DD\"?}}"}))),
            };
            let report = crate::sink::inspect::drift(&st.lake, since)
                .await
                .map_err(|e| InvocationError::Transient(e.into()))?;
            return Ok(answer(200, json!({"since": since.map(|d| d.to_string()), "tables": report})));
        }
        // {"redrive": {"reason": .., "table": .., "since": ..}}: a redrive, run by BlobIngest
        if let Ok(v) = serde_json::from_str::<Value>(&caller_body)
            && v.get("redrive").is_some()
        {
            return Ok(match redrive_item(&v) {
                Ok(Some(f)) => {
                    let msg = json!({"redrive": f});
                    answer(202, json!({"accepted": true, "work": msg}))
                        .with_output(&s.queue_output_binding, Value::Array(vec![msg]))
                }
                Ok(None) | Err(_) => answer(400, json!({"error": "expected {\"redrive\": {\"reason\": R?, \"table\": T?, \"since\": \"YYYY-MM-DD\"?}}"})),
            });
        }
        let item = match serde_json::from_str::<Value>(&caller_body)
            .map_err(|e| ProtocolError::Body(e.to_string()))
            .and_then(|v| WorkItem::parse(&v))
        {
            Ok(i) => i,
            Err(e) => {
                return Ok(answer(400, json!({"error": format!("expected {{\"url\": \"https://<account>.blob.core.windows.net/<container>/<path>\", \"start_offset\": N?}}: {e}")})));
            }
        };
        let blob = match BlobRef::parse_url(&item.url, &s.url_policy()) {
            Ok(b) => b,
            Err(e) => return Ok(answer(400, json!({"error": e.to_string()}))),
        };
        if !s.blob_allowed(&blob) {
            return Ok(answer(
                403,
                json!({"error": format!("{}/{} is not in XDR_REPLAY_ALLOWLIST", blob.account, blob.container)}),
            ));
        }
        // the work item names the blob canonically: nothing of the caller's text is echoed
        let msg = WorkItem {
            url: s.blob_url(&blob),
            start_offset: item.start_offset,
        }
        .to_message();
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
        let done = crate::sink::maintain::maintain(
            &st.lake,
            st.settings.vacuum,
            &crate::sink::maintain::CompactOptions {
                dedup_days: st
                    .settings
                    .pipeline
                    .dedup
                    .then_some(crate::sink::maintain::DEFAULT_DEDUP_DAYS),
                ..Default::default()
            },
        )
            .await
            .map_err(|e| InvocationError::Transient(e.into()))?;
        let failed = done.iter().filter(|m| m.error.is_some()).count();
        // drift of the last day, where an operator's alert can see it
        let since = chrono::Utc::now().date_naive() - chrono::Days::new(1);
        let drift = match crate::sink::inspect::drift(&st.lake, Some(since)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(function = "Maintenance", invocation_id = %id, error = %e, "drift report failed");
                Vec::new()
            }
        };
        for t in &drift {
            let keys: Vec<String> = t.items.iter().map(|i| format!("{} {} x{}", i.kind, i.key, i.count)).collect();
            tracing::warn!(function = "Maintenance", invocation_id = %id, table = %t.table, rows = t.rows_with_rescued, items = %keys.join(", "), "drift: values kept in _rescued (promote keys with a schema overlay)");
        }
        tracing::info!(function = "Maintenance", invocation_id = %id, tables = done.len(), failed, ms = started.elapsed().as_millis() as u64, "maintenance");
        let removed: u64 = done.iter().map(|m| m.dedup.rows_removed).sum();
        Ok(InvocationResponse::log(format!(
            "Maintenance: {} tables compacted where needed, checkpointed and vacuumed, {} failed, {} duplicates removed, {} tables with drift since {since}: {}",
            done.len() - failed,
            failed,
            removed,
            drift.len(),
            serde_json::to_string(&done).unwrap_or_default()
        )))
    }
    .await;
    respond("Maintenance", &id, r)
}
