//! Input sources: splitting files and blobs into lines, the resume protocol for sources we read
//! ourselves (`_ingest_runs`), and local files for the CLI.

pub mod blob;
pub mod file;
pub mod lines;
pub mod resume;
