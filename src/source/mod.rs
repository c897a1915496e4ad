//! Input sources, read only: local files (finding them, reading byte ranges), Defender's export
//! blobs (URLs, stores, byte ranges, hour folders), splitting bytes into lines, and the
//! continuity of Event Hub partitions. [`crate::ingest`] drives them through the pipeline.

pub mod blob;
pub mod eventhub;
pub mod file;
pub mod lines;
