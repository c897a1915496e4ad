//! Local files for the CLI: finding inputs (files, or directories walked for `*.json` /
//! `*.jsonl`), and ingesting each from its `_ingest_runs` watermark in bounded chunks, so a
//! re-run is a no-op and a grown file is read only from where the last run stopped.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::lines::Chunker;
use super::resume::{ingest_chunk, resume_offset};
use crate::model::SourceId;
use crate::pipeline::{BatchStats, PipelineConfig, PipelineError};
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
/// `*.json` and `*.jsonl` (names starting with `_` or `.` skipped), in a stable order.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, IngestError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| IngestError::Io {
            path: p.display().to_string(),
            source,
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .follow_links(true)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                // `_manifest.json`, `.hidden.json`: not data (the Spark convention)
                .filter(|e| !e.file_name().to_string_lossy().starts_with(['_', '.']))
                .map(|e| e.into_path())
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json") | Some("jsonl")
                    )
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
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

/// Ingests one local file from its watermark. A local file is taken as complete: an
/// unterminated last line is a record. `progress` is told the bytes read so far.
pub async fn ingest_file(
    lake: &Lake,
    path: &Path,
    cfg: &PipelineConfig,
    opts: &FileOptions,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<FileOutcome, IngestError> {
    let io = |source: std::io::Error| IngestError::Io {
        path: path.display().to_string(),
        source,
    };
    let abs = path.canonicalize().map_err(io)?;
    let source = SourceId::file(&abs);
    let start = resume_offset(lake, &source).await?;
    let mut outcome = FileOutcome {
        path: path.to_path_buf(),
        source: source.to_string(),
        start,
        end: start,
        ..Default::default()
    };
    let mut file = std::fs::File::open(&abs).map_err(io)?;
    let len = file.metadata().map_err(io)?.len() as i64;
    if len < start {
        outcome.note = Some(format!(
            "file is {len} bytes but {start} were already ingested; it was rewritten, not appended: skipped"
        ));
        tracing::warn!(path = %path.display(), len, watermark = start, "file shrank; skipped");
        return Ok(outcome);
    }
    if len == start {
        return Ok(outcome);
    }
    file.seek(SeekFrom::Start(start as u64)).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut chunker = Chunker::new(start, cfg.max_record_bytes, opts.chunk_bytes);
    let mut read = 0u64;
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
                let report = ingest_chunk(lake, &source, &chunk, cfg).await?;
                outcome.stats.add(&report.stats);
                outcome.written += report.commit.written();
                outcome.already_present += report.commit.already_present();
                outcome.chunks += 1;
                outcome.end = chunk.end;
                progress(read);
            }
        }
        if eof {
            break;
        }
    }
    Ok(outcome)
}
