//! xdr-ingest: Microsoft Defender XDR streaming logs into Delta Lake, exactly once.
//!
//! Data flow, one module per stage:
//! [`source`] (files, blobs, Event Hub batches into units) -> [`decode`] (envelopes, routing
//! by [`model::Category`], dead letters) -> [`typed`] (Arrow batches from the [`registry`]) ->
//! [`quality`] (rules) -> [`sink`] (exactly-once Delta commits). [`pipeline`] ties the stages
//! together for every entry point: the CLI ([`cli`]) and the Azure Functions handler
//! ([`handler`]); [`maintain`] keeps the tables healthy.

pub mod azure;
pub mod cli;
pub mod decode;
pub mod doctor;
pub mod generate;
pub mod handler;
pub mod json;
pub mod limits;
pub mod maintain;
pub mod mem;
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
