//! Input sources: splitting files and blobs into lines, the resume protocol for sources we read
//! ourselves (`_ingest_runs`), local files for the CLI, and the continuity of Event Hub
//! partitions.

pub mod blob;
pub mod eventhub;
pub mod file;
pub mod lines;
pub mod resume;
