//! The ingest drivers: where the sources meet the pipeline and the sink. One driver for the
//! sources we read ourselves (local files and Defender's export blobs): each source from its
//! `_ingest_runs` watermark, split into chunks of lines, built, and committed with one commit
//! per table for many chunks, then the run rows that move the watermarks. Event Hub batches
//! ([`eventhub`]) and the sweep over the export containers ([`sweep`]) have their own.

pub mod eventhub;
pub mod redrive;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use deltalake::arrow::array::RecordBatch;

use crate::model::{Category, SourceId, SourcePosition};
use crate::pipeline::{BatchStats, PipelineConfig, PipelineError, UntypedTables, build_for};
use crate::sink::Lake;
use crate::sink::runs::{RunRow, record_runs, resume_offset};
use crate::source::blob::{BlobError, BlobReader, BlobRef, BlobStores};
use crate::source::file::{FileReader, InputError};
use crate::source::lines::{Chunk, Chunker};

/// Default chunk size: one commit per table per this many input bytes.
pub const DEFAULT_CHUNK_BYTES: usize = 32 * 1024 * 1024;

/// Free heap is handed back to the OS after every this many commits (see [`crate::mem`]).
const TRIM_EVERY: usize = 4;
/// At most this many chunks (and so txns) in one commit.
const MAX_CHUNKS_PER_COMMIT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::sink::SinkError> for IngestError {
    fn from(e: crate::sink::SinkError) -> Self {
        IngestError::Pipeline(PipelineError::Sink(e))
    }
}

/// Reads byte ranges of one source (a file, a blob).
#[async_trait::async_trait]
pub trait ByteReader: Send {
    /// Bytes `[from, to)`; fewer only at the end of the source.
    async fn read(&mut self, from: i64, to: i64) -> Result<Bytes, IngestError>;
}

#[async_trait::async_trait]
impl ByteReader for FileReader {
    async fn read(&mut self, from: i64, to: i64) -> Result<Bytes, IngestError> {
        self.read_range(from, to)
            .map(Bytes::from)
            .map_err(|source| IngestError::Io {
                path: self.path().display().to_string(),
                source,
            })
    }
}

#[async_trait::async_trait]
impl ByteReader for BlobReader {
    async fn read(&mut self, from: i64, to: i64) -> Result<Bytes, IngestError> {
        Ok(self.read_range(from, to).await?)
    }
}

/// What a pass's first run row records about where it started.
#[derive(Debug, Default, Clone)]
pub struct Annotation {
    pub skipped: Option<i64>,
    pub redelivered: Option<i64>,
    pub note: Option<String>,
}

/// Where and how to read a source.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: SourceId,
    pub start: SourcePosition,
    /// The source's current length.
    pub length: i64,
    /// An unterminated last line is a record (a complete file, a closed blob); otherwise it
    /// is left for a later pass.
    pub final_tail: bool,
    pub annotation: Annotation,
}

/// What reading one source did.
#[derive(Debug, Default, Clone)]
pub struct SourceOutcome {
    pub source: String,
    pub start: i64,
    /// The watermark after this pass (the end of the last chunk read).
    pub end: i64,
    pub length: i64,
    pub chunks: u64,
    pub stats: BatchStats,
    /// Bytes of an unterminated last line left for a later pass.
    pub pending_tail: u64,
    /// The deadline passed: the rest, from `end`, is for a later pass.
    pub stopped_early: bool,
    /// What was unusual, in words (a replay that skips or repeats bytes, a source shorter than
    /// its watermark, which is then not read).
    pub note: Option<String>,
}

/// Built chunks waiting for one commit per table.
#[derive(Default)]
struct Pending {
    /// (outcome index, source, chunk start, end, stats, started at, annotation)
    runs: Vec<(usize, SourceId, i64, i64, BatchStats, i64, Annotation)>,
    typed: BTreeMap<Category, Vec<RecordBatch>>,
    untyped: BTreeMap<String, Vec<RecordBatch>>,
    dead: Vec<RecordBatch>,
    bytes: usize,
}

/// Drives sources through the pipeline with commit batching (see the module doc).
pub struct Driver<'a> {
    lake: &'a Lake,
    cfg: &'a PipelineConfig,
    chunk_bytes: usize,
    pending: Pending,
    /// Per source read, in order.
    pub outcomes: Vec<SourceOutcome>,
    /// Rows written, and rows the lake already had, over every commit.
    pub written: u64,
    pub already_present: u64,
    flushes: usize,
    /// The lake's untyped tables (for the caps on new ones), kept current as we create them.
    untyped_tables: Option<UntypedTables>,
    /// Watermarks read ahead for the sources about to be planned (see [`Self::prefetch`]).
    prefetched: HashMap<SourceId, i64>,
}

impl<'a> Driver<'a> {
    pub fn new(lake: &'a Lake, cfg: &'a PipelineConfig, chunk_bytes: usize) -> Self {
        Driver {
            lake,
            cfg,
            chunk_bytes: chunk_bytes.max(1),
            pending: Pending::default(),
            outcomes: Vec::new(),
            written: 0,
            already_present: 0,
            flushes: 0,
            untyped_tables: None,
            prefetched: HashMap::new(),
        }
    }

    /// Reads the watermarks of `sources` from one refresh of `_ingest_runs`, for [`Self::plan`]
    /// to use instead of a refresh per source (a run over many small files spent a quarter of
    /// its time refreshing the table once per file). A watermark read early is still safe: the
    /// commits filter rows against the watermarks of the snapshot they commit on.
    pub async fn prefetch(&mut self, sources: &[SourceId]) -> Result<(), IngestError> {
        let ids: Vec<&str> = sources.iter().map(SourceId::as_str).collect();
        let versions = self.lake.ingest_runs()?.txn_versions(&ids).await?;
        for (s, v) in sources.iter().zip(versions) {
            self.prefetched.insert(s.clone(), v.unwrap_or(0).max(0));
        }
        Ok(())
    }

    /// Where `source` (now `length` bytes) is read from: its watermark, or `start` for a
    /// replay, with what that means for the run table. `None` (and a note) when the source is
    /// shorter than its watermark: rewritten, not appended, and not read.
    pub async fn plan(
        &mut self,
        source: &SourceId,
        length: i64,
        start: Option<i64>,
        final_tail: bool,
    ) -> Result<Option<Plan>, IngestError> {
        if self.untyped_tables.is_none() {
            self.untyped_tables = Some(self.lake.untyped_tables().await?);
        }
        let watermark = match self.prefetched.remove(source) {
            Some(w) => w,
            None => resume_offset(self.lake, source).await?,
        };
        let start = start.unwrap_or(watermark);
        let mut a = Annotation::default();
        if length < watermark {
            let note = format!(
                "{length} bytes, shorter than the {watermark} bytes already ingested: rewritten or recreated, not appended; not read"
            );
            tracing::warn!(source = %source, length, watermark, "source shorter than its watermark; not read");
            self.outcomes.push(SourceOutcome {
                source: source.to_string(),
                start,
                end: watermark,
                length,
                note: Some(note),
                ..Default::default()
            });
            return Ok(None);
        }
        if start > watermark {
            a.skipped = Some(start - watermark);
            a.note = Some(format!(
                "replay started at byte {start}, past the watermark {watermark}: bytes {watermark}-{start} not read"
            ));
            tracing::warn!(source = %source, start, watermark, "replay starts past the watermark: bytes skipped");
        } else if start < watermark {
            a.redelivered = Some(watermark - start);
            a.note = Some(format!(
                "replay from byte {start}: bytes {start}-{watermark} were already ingested and are not written again"
            ));
        }
        Ok(Some(Plan {
            source: source.clone(),
            start: SourcePosition(start),
            length,
            final_tail,
            annotation: a,
        }))
    }

    /// Reads `plan`'s source from its start to its length in chunks of lines; commits when
    /// the pending chunks reach the chunk size; after a commit, stops once `deadline` has
    /// passed. `progress` is told the bytes read so far in this driver.
    pub async fn read(
        &mut self,
        plan: Plan,
        reader: &mut dyn ByteReader,
        deadline: Option<Instant>,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<u64, IngestError> {
        let idx = self.outcomes.len();
        let start = plan.start.0;
        self.outcomes.push(SourceOutcome {
            source: plan.source.to_string(),
            start,
            end: start,
            length: plan.length,
            note: plan.annotation.note.clone(),
            ..Default::default()
        });
        if plan.length <= start {
            return Ok(0);
        }
        let mut annotation = Some(plan.annotation);
        let mut chunker = Chunker::new(start, self.cfg.max_record_bytes, self.chunk_bytes);
        let read_size = self.chunk_bytes.clamp(64 * 1024, 16 * 1024 * 1024) as i64;
        let mut pos = start;
        let mut read_total = 0u64;
        while pos < plan.length {
            let to = (pos + read_size).min(plan.length);
            let bytes = reader.read(pos, to).await?;
            if bytes.is_empty() {
                break; // shorter than it said (truncated meanwhile): what is there is read
            }
            pos += bytes.len() as i64;
            read_total += bytes.len() as u64;
            let mut fed = 0;
            while fed < bytes.len() {
                chunker.reserve_for((plan.length - pos) as usize + (bytes.len() - fed));
                fed += chunker.feed(&bytes[fed..]);
                if chunker.is_full() {
                    let chunk = chunker.take();
                    if self.add(idx, &plan.source, chunk, &mut annotation)? {
                        self.flush().await?;
                        progress(read_total);
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            self.outcomes[idx].stopped_early = true;
                            return Ok(read_total);
                        }
                    }
                }
            }
        }
        chunker.end_of_input(plan.final_tail);
        let chunk = chunker.take();
        if chunk.end > chunk.start && self.add(idx, &plan.source, chunk, &mut annotation)? {
            self.flush().await?;
        }
        self.outcomes[idx].pending_tail = chunker.pending_tail() as u64;
        progress(read_total);
        Ok(read_total)
    }

    /// Builds a chunk into the pending commit; true when the pending commit is full.
    fn add(
        &mut self,
        idx: usize,
        source: &SourceId,
        chunk: Chunk,
        annotation: &mut Option<Annotation>,
    ) -> Result<bool, IngestError> {
        let started_at = chrono::Utc::now().timestamp_micros();
        let mut known = self.untyped_tables.clone().unwrap_or_default();
        // tables made by chunks not committed yet count as existing for the caps
        known.existing.extend(self.pending.untyped.keys().cloned());
        let (built, _) =
            build_for(source, &chunk.units(), self.cfg, &known).map_err(PipelineError::from)?;
        for (cat, b) in built.typed {
            if b.num_rows() > 0 {
                self.pending.typed.entry(cat).or_default().push(b);
            }
        }
        for (name, b) in built.untyped {
            self.pending.untyped.entry(name).or_default().push(b);
        }
        self.pending.dead.push(built.dead);
        self.pending.bytes += chunk.bytes() as usize;
        self.pending.runs.push((
            idx,
            source.clone(),
            chunk.start,
            chunk.end,
            built.stats,
            started_at,
            annotation.take().unwrap_or_default(),
        ));
        // the batches own their data: the input is freed before the commit
        drop(chunk);
        Ok(self.pending.bytes >= self.chunk_bytes
            || self.pending.runs.len() >= MAX_CHUNKS_PER_COMMIT)
    }

    /// Commits what is pending: every table once (rows of several sources, a txn per source),
    /// then the run rows of all its chunks in one `_ingest_runs` commit.
    pub async fn flush(&mut self) -> Result<(), IngestError> {
        if self.pending.runs.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let typed: Vec<_> = pending.typed.into_iter().collect();
        let untyped: Vec<_> = pending.untyped.into_iter().collect();
        let dead = pending.dead;
        let report = self.lake.commit_many(typed, untyped, dead).await?;
        self.untyped_tables = Some(self.lake.untyped_tables().await?);
        self.written += report.written();
        self.already_present += report.already_present();
        let single_source = pending.runs.len() == 1;
        let rows: Vec<RunRow> = pending
            .runs
            .iter()
            .map(|(_, source, start, end, stats, started_at, a)| {
                let mut row = RunRow::chunk(source, *start, *end, stats.into(), *started_at);
                if single_source {
                    row.written = Some(report.written());
                    row.already_present = Some(report.already_present());
                }
                row.skipped = a.skipped;
                row.redelivered = a.redelivered;
                row.note = a.note.clone();
                row
            })
            .collect();
        record_runs(self.lake, &rows).await?;
        for (idx, _, _, end, stats, _, _) in &pending.runs {
            let o = &mut self.outcomes[*idx];
            o.stats.add(stats);
            o.chunks += 1;
            o.end = o.end.max(*end);
        }
        self.flushes += 1;
        if self.flushes.is_multiple_of(TRIM_EVERY) {
            crate::mem::release_free_memory();
        }
        Ok(())
    }
}

// ---- local files --------------------------------------------------------------------------

/// How files are read.
#[derive(Clone, Debug)]
pub struct FileOptions {
    pub chunk_bytes: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// What ingesting one file did.
#[derive(Debug, Default, Clone)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub source: String,
    /// Where this run started reading (the previous watermark) and stopped.
    pub start: i64,
    pub end: i64,
    pub chunks: u64,
    pub stats: BatchStats,
    /// Rows written now, and rows dropped because the lake already had them (filled for a
    /// single file by [`ingest_file`]; a run of many files has the totals in [`IngestRun`]).
    pub written: u64,
    pub already_present: u64,
    /// Set when the file was not read (e.g. it is shorter than its watermark).
    pub note: Option<String>,
}

/// What ingesting a set of files did.
#[derive(Debug, Default)]
pub struct IngestRun {
    pub files: Vec<FileOutcome>,
    /// Rows written now, and rows dropped because the lake already had them.
    pub written: u64,
    pub already_present: u64,
}

/// Ingests files, each from its own watermark. A local file is taken as complete: an
/// unterminated last line is a record. Chunks of consecutive files are committed together (up
/// to `chunk_bytes` of input per commit), so many small files cost a few commits, not two per
/// file. A file listed twice is read once. `progress` is told the bytes read so far.
pub async fn ingest_files(
    lake: &Lake,
    paths: &[PathBuf],
    cfg: &PipelineConfig,
    opts: &FileOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<IngestRun, IngestError> {
    let mut driver = Driver::new(lake, cfg, opts.chunk_bytes);
    let mut seen = std::collections::HashSet::new();
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    let mut read_so_far = 0u64;
    let mut inputs = Vec::with_capacity(paths.len());
    for path in paths {
        let abs = path.canonicalize().map_err(|source| IngestError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let source = SourceId::file(&abs);
        // the same file twice would put its positions into one commit twice, past the filter
        if seen.insert(source.clone()) {
            inputs.push((path, abs, source));
        }
    }
    let sources: Vec<SourceId> = inputs.iter().map(|(_, _, s)| s.clone()).collect();
    driver.prefetch(&sources).await?;
    for (path, abs, source) in inputs {
        let io = |source: std::io::Error| IngestError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut reader = FileReader::open(&abs).map_err(io)?;
        let length = reader.len();
        files.push((path.clone(), driver.outcomes.len()));
        let Some(plan) = driver.plan(&source, length, None, true).await? else {
            continue;
        };
        let base = read_so_far;
        read_so_far += driver
            .read(plan, &mut reader, None, &mut |n| progress(base + n))
            .await?;
    }
    driver.flush().await?;
    progress(read_so_far);
    let mut run = IngestRun {
        written: driver.written,
        already_present: driver.already_present,
        ..Default::default()
    };
    for (path, idx) in files {
        let o = &driver.outcomes[idx];
        run.files.push(FileOutcome {
            path,
            source: o.source.clone(),
            start: o.start,
            end: o.end,
            chunks: o.chunks,
            stats: o.stats.clone(),
            note: o.note.clone(),
            ..Default::default()
        });
    }
    Ok(run)
}

/// Ingests one local file from its watermark (see [`ingest_files`]).
pub async fn ingest_file(
    lake: &Lake,
    path: &Path,
    cfg: &PipelineConfig,
    opts: &FileOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<FileOutcome, IngestError> {
    let mut run = ingest_files(lake, &[path.to_path_buf()], cfg, opts, progress).await?;
    let mut o = run.files.pop().unwrap_or_default();
    o.written = run.written;
    o.already_present = run.already_present;
    Ok(o)
}

// ---- export blobs -------------------------------------------------------------------------

/// How a blob is read.
#[derive(Clone, Copy, Debug)]
pub struct BlobReadOptions {
    /// Bytes per commit.
    pub chunk_bytes: usize,
    /// A blob is final (its unterminated last line is a record) this long after its hour.
    pub grace: chrono::Duration,
    pub now: chrono::DateTime<chrono::Utc>,
    /// Stop reading (after the chunk in hand is committed) once this instant has passed.
    pub deadline: Option<Instant>,
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

/// Ingests a blob from its watermark (or from `start`, for a replay) to its current length.
pub async fn ingest_blob(
    lake: &Lake,
    stores: &BlobStores,
    blob: &BlobRef,
    start: Option<i64>,
    cfg: &PipelineConfig,
    opts: BlobReadOptions,
) -> Result<BlobOutcome, IngestError> {
    let mut reader = stores.reader(blob)?;
    let length = reader.head().await?;
    let final_ = blob
        .hour_end()
        .is_some_and(|end| opts.now >= end + opts.grace);
    let source = blob.source_id();
    let mut driver = Driver::new(lake, cfg, opts.chunk_bytes);
    if let Some(plan) = driver.plan(&source, length, start, final_).await? {
        driver
            .read(plan, &mut reader, opts.deadline, &mut |_| {})
            .await?;
        driver.flush().await?;
    }
    let o = driver.outcomes.pop().unwrap_or_default();
    Ok(BlobOutcome {
        source: o.source,
        start: o.start,
        end: o.end,
        length: o.length,
        chunks: o.chunks,
        stats: o.stats,
        written: driver.written,
        already_present: driver.already_present,
        pending_tail: o.pending_tail,
        final_,
        continue_at: o.stopped_early.then_some(o.end),
        note: o.note,
    })
}
