//! xdr-ingest: Microsoft Defender XDR streaming logs into Delta Lake, exactly once.
//!
//! Data flow, one module per stage:
//! [`source`] (reading files and blobs, splitting them into lines; Event Hub continuity) ->
//! [`decode`] (envelopes, routing by [`model::Category`], dead letters) -> [`typed`] (Arrow
//! batches from the [`registry`]) -> [`quality`] (rules) -> [`sink`] (exactly-once Delta
//! commits, the `_ingest_runs` table, maintenance). [`pipeline`] runs decode -> typed ->
//! quality -> sink for one batch; [`ingest`] drives the sources through it (files and blobs
//! from their watermarks, Event Hub batches, the blob sweep). The entry points are the CLI
//! ([`cli`]) and the Azure Functions handler ([`handler`]); [`azure`] logs in to Azure
//! Storage, [`doctor`] checks a deployment, [`observe`] is what the process tells its operator,
//! [`limits`] the valid range of every setting.

pub mod azure;
pub mod cli;
pub mod decode;
pub mod doctor;
pub mod generate;
pub mod handler;
pub mod ingest;
mod json;
pub mod limits;
mod mem;
pub mod model;
pub mod observe;
pub mod pipeline;
pub mod quality;
pub mod registry;
pub mod sink;
pub mod source;
pub mod typed;

/// The deltalake crate (and through it arrow and parquet) in the version this crate uses.
pub use deltalake;
