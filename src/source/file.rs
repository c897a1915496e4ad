//! Local files for the CLI: finding the inputs (files, or directories walked for `*.json` /
//! `*.jsonl`, each file once) and reading byte ranges of one. [`crate::ingest`] reads each
//! from its watermark.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// An input that cannot be found or read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct InputError {
    pub path: String,
    pub source: std::io::Error,
}

/// The input files named by `paths`: files as given, directories walked recursively for
/// `*.json` and `*.jsonl` (names starting with `_` or `.` skipped), in a stable order, each
/// file once: paths are canonicalized (symlinks resolved), so a file named twice, reached
/// through a directory and its subdirectory, or through a symlink, is read once.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let io = |p: &Path, source| InputError {
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

/// An open local file, read in byte ranges.
pub struct FileReader {
    file: std::fs::File,
    len: i64,
    path: PathBuf,
}

impl FileReader {
    pub fn open(path: &Path) -> std::io::Result<FileReader> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len() as i64;
        Ok(FileReader {
            file,
            len,
            path: path.to_path_buf(),
        })
    }

    /// The length when it was opened.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes `[from, to)`; fewer at the end of the file.
    pub fn read_range(&mut self, from: i64, to: i64) -> std::io::Result<Vec<u8>> {
        self.file.seek(SeekFrom::Start(from.max(0) as u64))?;
        let want = (to - from).max(0) as u64;
        let mut buf = Vec::with_capacity(want as usize);
        (&mut self.file).take(want).read_to_end(&mut buf)?;
        Ok(buf)
    }
}
