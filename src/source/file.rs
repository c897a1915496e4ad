//! Local files for the CLI: finding inputs (files, or directories walked for `*.json` /
//! `*.jsonl`), and ingesting each from its `_ingest_runs` watermark in bounded chunks, so a
//! re-run is a no-op and a grown file is read only from where the last run stopped.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::concat_batches;

use super::lines::Chunker;
use super::resume::{RunRow, record_runs, resume_offset};
use crate::model::{Category, SourceId};
use crate::pipeline::{BatchStats, PipelineConfig, PipelineError, build_for};
use crate::registry::dead_letter_schema;
use crate::sink::Lake;

/// Default chunk size: one commit per table per this many input bytes.
pub const DEFAULT_CHUNK_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<crate::sink::SinkError> for IngestError {
    fn from(e: crate::sink::SinkError) -> Self {
        IngestError::Pipeline(PipelineError::Sink(e))
    }
}

/// The input files named by `paths`: files as given, directories walked recursively for
/// `*.json` and `*.jsonl` (names starting with `_` or `.` skipped), in a stable order, each
/// file once: paths are canonicalized (symlinks resolved), so a file named twice, reached
/// through a directory and its subdirectory, or through a symlink, is read once.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IngestError> {
    let io = |p: &Path, source| IngestError::Io {
        path: p.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io(p, e))?;
        let found: Vec<PathBuf> = if meta.is_dir() {
            let mut found = Vec::new();
            for entry in walkdir::WalkDir::new(p).follow_links(true) {
                // an unreadable directory or a symlink loop is an error, not a silent skip
                let entry = entry.map_err(|e| {
                    let path = e.path().unwrap_or(p).to_path_buf();
                    io(&path, e.into())
                })?;
                let name = entry.file_name().to_string_lossy();
                // `_manifest.json`, `.hidden.json`: not data (the Spark convention)
                if !entry.file_type().is_file() || name.starts_with(['_', '.']) {
                    continue;
                }
                if matches!(
                    entry.path().extension().and_then(|e| e.to_str()),
                    Some("json") | Some("jsonl")
                ) {
                    found.push(entry.into_path());
                }
            }
            found.sort();
            found
        } else {
            vec![p.clone()]
        };
        for f in found {
            let canonical = f.canonicalize().map_err(|e| io(&f, e))?;
            if seen.insert(canonical.clone()) {
                out.push(canonical);
            }
        }
    }
    Ok(out)
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
    /// Rows written now, and rows dropped because the lake already had them.
    pub written: u64,
    pub already_present: u64,
    /// Set when the file was not read (e.g. it is shorter than its watermark).
    pub note: Option<String>,
}

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

/// What ingesting a set of files did.
#[derive(Debug, Default)]
pub struct IngestRun {
    pub files: Vec<FileOutcome>,
    /// Rows written now, and rows dropped because the lake already had them.
    pub written: u64,
    pub already_present: u64,
}

/// Built chunks of one or more files waiting for one commit per table.
#[derive(Default)]
struct Pending {
    /// (file index, source, chunk start, end, stats, started at)
    runs: Vec<(usize, SourceId, i64, i64, BatchStats, i64)>,
    typed: BTreeMap<Category, Vec<RecordBatch>>,
    dead: Vec<RecordBatch>,
    bytes: usize,
}

/// Commits what is pending: every table once (rows of several files, a txn per file), then
/// the run rows of all its chunks in one `_ingest_runs` commit.
async fn flush(lake: &Lake, p: &mut Pending, run: &mut IngestRun) -> Result<(), IngestError> {
    if p.runs.is_empty() {
        return Ok(());
    }
    let pending = std::mem::take(p);
    let mut typed = Vec::new();
    for (cat, batches) in pending.typed {
        let batch = concat_batches(&cat.table().arrow_schema(), &batches)
            .map_err(|e| IngestError::Pipeline(PipelineError::Arrow(e)))?;
        typed.push((cat, batch));
    }
    let dead = concat_batches(&dead_letter_schema(), &pending.dead)
        .map_err(|e| IngestError::Pipeline(PipelineError::Arrow(e)))?;
    let report = lake.commit(typed, Some(dead)).await?;
    run.written += report.written();
    run.already_present += report.already_present();
    let rows: Vec<RunRow> = pending
        .runs
        .iter()
        .map(|(_, source, start, end, stats, started_at)| {
            RunRow::chunk(source, *start, *end, stats, *started_at)
        })
        .collect();
    record_runs(lake, &rows).await?;
    for (idx, _, _, end, stats, _) in &pending.runs {
        let o = &mut run.files[*idx];
        o.stats.add(stats);
        o.chunks += 1;
        o.end = o.end.max(*end);
    }
    Ok(())
}

/// Ingests files, each from its own watermark. A local file is taken as complete: an
/// unterminated last line is a record. Chunks of consecutive files are committed together
/// (up to `chunk_bytes` of input per commit), so many small files (hourly blobs per table)
/// cost a few commits, not two per file. `progress` is told the bytes read so far.
pub async fn ingest_files(
    lake: &Lake,
    paths: &[PathBuf],
    cfg: &PipelineConfig,
    opts: &FileOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<IngestRun, IngestError> {
    let mut run = IngestRun::default();
    let mut pending = Pending::default();
    let mut read = 0u64;
    let mut flushes = 0usize;
    let mut sources = std::collections::HashSet::new();
    for path in paths {
        let io = |source: std::io::Error| IngestError::Io {
            path: path.display().to_string(),
            source,
        };
        let abs = path.canonicalize().map_err(io)?;
        let source = SourceId::file(&abs);
        // The same file twice in one run would put the same positions of one source into one
        // commit twice, past the watermark filter: read each file once.
        if !sources.insert(source.clone()) {
            continue;
        }
        let idx = run.files.len();
        let start = resume_offset(lake, &source).await?;
        run.files.push(FileOutcome {
            path: path.to_path_buf(),
            source: source.to_string(),
            start,
            end: start,
            ..Default::default()
        });
        let mut file = std::fs::File::open(&abs).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as i64;
        if len < start {
            run.files[idx].note = Some(format!(
                "file is {len} bytes but {start} were already ingested; it was rewritten, not appended: skipped"
            ));
            tracing::warn!(path = %path.display(), len, watermark = start, "file shrank; skipped");
            continue;
        }
        if len == start {
            continue;
        }
        file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut chunker = Chunker::new(start, cfg.max_record_bytes, opts.chunk_bytes);
        loop {
            let buf = reader.fill_buf().map_err(io)?;
            let eof = buf.is_empty();
            if eof {
                chunker.end_of_input(true);
            } else {
                let n = chunker.feed(buf);
                reader.consume(n);
                read += n as u64;
            }
            if eof || chunker.is_full() {
                let chunk = chunker.take();
                if chunk.end > chunk.start {
                    let started_at = chrono::Utc::now().timestamp_micros();
                    let (built, _) = build_for(&source, &chunk.units(), cfg)
                        .map_err(|e| IngestError::Pipeline(PipelineError::Arrow(e)))?;
                    for (cat, b) in built.typed {
                        if b.num_rows() > 0 {
                            pending.typed.entry(cat).or_default().push(b);
                        }
                    }
                    pending.dead.push(built.dead);
                    pending.bytes += chunk.bytes() as usize;
                    pending.runs.push((
                        idx,
                        source.clone(),
                        chunk.start,
                        chunk.end,
                        built.stats,
                        started_at,
                    ));
                    // the batches own their data: free the input before the commit
                    drop(chunk);
                    if pending.bytes >= opts.chunk_bytes
                        || pending.runs.len() >= MAX_SOURCES_PER_COMMIT
                    {
                        flush(lake, &mut pending, &mut run).await?;
                        progress(read);
                        flushes += 1;
                        if flushes.is_multiple_of(TRIM_EVERY) {
                            crate::mem::release_free_memory();
                        }
                    }
                }
            }
            if eof {
                break;
            }
        }
    }
    flush(lake, &mut pending, &mut run).await?;
    progress(read);
    Ok(run)
}

/// Free heap is handed back to the OS after every this many commits (see [`crate::mem`]).
const TRIM_EVERY: usize = 4;

/// At most this many chunks (and so txns) in one commit.
const MAX_SOURCES_PER_COMMIT: usize = 512;
