//! Command line interface: `ingest` files into a lake, describe its `tables`, `generate`
//! sample data, `serve` as an Azure Functions custom handler, `maintain` the tables, `doctor`
//! a deployment. This module holds the arguments (each flag validated by clap, so a bad value
//! is a usage error, exit code 2); [`commands`] runs them and [`render`] prints the results.

mod commands;
pub mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::generate::Form;
use crate::ingest::DEFAULT_CHUNK_BYTES;
use crate::observe::{init_logging, install_panic_hook, render_error};
use crate::pipeline::{DEFAULT_MAX_RECORD_BYTES, DEFAULT_RETENTION_DAYS};
use crate::sink::{Lake, LakeSettings};

#[derive(Parser)]
#[command(
    name = "xdr-ingest",
    version,
    about = "Microsoft Defender XDR logs into Delta Lake, exactly once"
)]
struct Cli {
    /// Schema overlay (JSON): columns to add to Defender tables, and tables to add, in the
    /// shape of registry/tables.json. Columns are added to existing Delta tables on their next
    /// commit; a changed column type is refused.
    #[arg(long, global = true, env = "XDR_SCHEMA_FILE")]
    schema: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest Defender files (storage-export lines or Event Hub bodies, one per line) into the lake.
    Ingest(IngestArgs),
    /// Show each table on one line (version, rows, files, dead letters, sources, last commit)
    /// and the sources with gaps, redeliveries or restarts.
    Tables(TablesArgs),
    /// Write realistic sample Defender data (all 26 tables, both wire forms).
    Generate(GenerateArgs),
    /// Serve as an Azure Functions custom handler on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT
    /// (settings from the environment: see the README).
    Serve(ServeArgs),
    /// Compact small files, checkpoint, clean up logs and vacuum every table.
    Maintain(MaintainArgs),
    /// Re-process dead letters (and rows of untyped tables whose category the registry now
    /// knows) with today's registry, schema overlay and rules: what passes lands in its table,
    /// exactly once; what still fails stays a dead letter; `_redrives` records each.
    Redrive(RedriveArgs),
    /// What arrives that the schema does not hold, per table: keys with no column and values
    /// that did not fit their column's type (from `_rescued`), with counts and first/last seen.
    Drift(DriftArgs),
    /// Check a deployment: every setting (from the environment, as the handler reads them),
    /// the managed identity, the lake, the export containers and the work queue. Exit code 0
    /// only when every check passes.
    Doctor(DoctorArgs),
}

#[derive(Args)]
pub(crate) struct RedriveArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Only dead letters with this reason (unknown_category, rule_failed, invalid_json, ...).
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Only records of this table (a dead letter's category, or an untyped table).
    #[arg(long)]
    pub(crate) table: Option<String>,
    /// Only records of `_date` partitions on or after this date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub(crate) since: Option<chrono::NaiveDate>,
    /// Data-quality rules file (TOML); the defaults of config/rules.toml otherwise.
    #[arg(long, env = "XDR_RULES_FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct DriftArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Only rows of `_date` partitions on or after this date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub(crate) since: Option<chrono::NaiveDate>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Port (the Functions host passes it in FUNCTIONS_CUSTOMHANDLER_PORT).
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
    pub(crate) port: u16,
}

#[derive(Args)]
pub(crate) struct MaintainArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Data files unreferenced for at least this long are removed. Below 168 (7 days) it
    /// needs --unsafe-vacuum-retention-may-lose-data.
    #[arg(long, default_value_t = crate::sink::maintain::SAFE_VACUUM_RETENTION_HOURS,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::VACUUM_RETENTION_HOURS))]
    pub(crate) vacuum_retention_hours: u64,
    /// Allow a vacuum retention below 168 hours. Vacuum then deletes Parquet files that a
    /// running ingest has written but not committed yet, and those rows are lost: use it only
    /// with every writer of the lake stopped.
    #[arg(long)]
    pub(crate) unsafe_vacuum_retention_may_lose_data: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not remove Defender's re-sends (duplicates by content) from recent partitions.
    #[arg(long)]
    pub(crate) no_dedup: bool,
    /// Partitions (`_date`) of this many recent days are searched for re-sends.
    #[arg(long, default_value_t = crate::sink::maintain::DEFAULT_DEDUP_DAYS,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub(crate) dedup_days: u32,
}

#[derive(Args, Clone)]
pub struct LakeArgs {
    /// Lake location: a local directory, or abfss://container@account.dfs.core.windows.net/path, az://container/path.
    #[arg(long, env = "XDR_LAKE", default_value = "./lake")]
    pub lake: String,
    /// object_store option for the lake, `key=value` (repeatable), e.g. azure_storage_account_name=acct.
    #[arg(long = "storage-option", value_parser = parse_kv)]
    pub storage_options: Vec<(String, String)>,
}

impl LakeArgs {
    /// Opens the lake; `create`: a local lake directory that does not exist is created
    /// (`ingest`), otherwise it is an error (`tables`, `maintain` never create an empty lake).
    pub fn open(&self, checkpoint_on_commit: bool, create: bool) -> anyhow::Result<Lake> {
        let settings = LakeSettings {
            checkpoint_on_commit,
            storage_options: self.storage_options.iter().cloned().collect(),
            ..Default::default()
        };
        if !create && !self.lake.contains("://") && !std::path::Path::new(&self.lake).is_dir() {
            anyhow::bail!(
                "there is no lake at {} (nothing has been ingested there; give --lake or XDR_LAKE)",
                self.lake
            );
        }
        Ok(Lake::open(&self.lake, settings)?)
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

#[derive(Args)]
pub(crate) struct IngestArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Data-quality rules file (TOML); the defaults of config/rules.toml otherwise.
    #[arg(long, env = "XDR_RULES_FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Records (lines) larger than this go to the dead letters as `oversized`.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::MAX_RECORD_BYTES))]
    pub(crate) max_record_bytes: u64,
    /// Bytes of input per commit.
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::CHUNK_BYTES))]
    pub(crate) chunk_bytes: u64,
    /// New tables (categories the registry does not know) one batch may create; 0 keeps such
    /// records in the dead letters.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_MAX_NEW_TABLES_PER_BATCH as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::MAX_NEW_TABLES))]
    pub(crate) max_new_tables: u64,
    /// Keep Defender's re-sends: do not drop a record whose table and properties equal
    /// another's of the same run (see docs/data-contract.md).
    #[arg(long)]
    pub(crate) no_dedup: bool,
    /// Untyped tables the lake may have in all.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_MAX_UNTYPED_TABLES as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::MAX_UNTYPED_TABLES))]
    pub(crate) max_untyped_tables: u64,
    /// Days before today within which an event's Timestamp picks its `_date` partition.
    #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::RETENTION_DAYS))]
    pub(crate) retention_days: u64,
    /// Files, or directories walked for *.json and *.jsonl.
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TablesArgs {
    #[command(flatten)]
    pub(crate) lake: LakeArgs,
    /// Print everything as JSON (per-source detail included).
    #[arg(long)]
    pub(crate) json: bool,
    /// Also list every source's txn watermark per table.
    #[arg(long)]
    pub(crate) sources: bool,
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// Output directory (never the committed `sample/` unless named).
    #[arg(long, default_value = "generated")]
    pub(crate) out: PathBuf,
    /// Records per form.
    #[arg(long, default_value_t = 2600)]
    pub(crate) records: usize,
    /// Which wire form: storage (PT1H.json lines), eventhub (bodies, one per line), or both.
    #[arg(long, value_enum, default_value_t = Form::Both)]
    pub(crate) form: Form,
    /// Fraction of lines to corrupt (0.0-1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub(crate) corrupt: f64,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Timestamps are spread over the day before this date (YYYY-MM-DD); today by default.
    #[arg(long, value_parser = parse_date)]
    pub(crate) date: Option<chrono::NaiveDate>,
    /// Approximate record size mix.
    #[arg(long, value_enum, default_value_t = SizeMix::Realistic)]
    pub(crate) size: SizeMix,
}

/// Record sizes of generated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SizeMix {
    /// 1-3 KB records, as Defender's
    Realistic,
    /// short records
    Small,
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: expected a number from 0 to 1")),
    }
}

fn parse_date(s: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|e| format!("`{s}`: expected a date YYYY-MM-DD ({e})"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.cmd, Command::Serve(_)));
    install_panic_hook();
    if let Some(p) = &cli.schema
        && let Err(e) = crate::registry::install_overlay(p)
    {
        eprintln!("xdr-ingest: error: --schema: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xdr-ingest: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Command::Ingest(a) => commands::ingest(a).await,
            Command::Tables(a) => commands::tables(a).await,
            Command::Generate(a) => commands::generate(a),
            Command::Serve(a) => commands::serve(a).await,
            Command::Maintain(a) => commands::maintain(a).await,
            Command::Doctor(a) => commands::doctor(a).await,
            Command::Drift(a) => commands::drift(a).await,
            Command::Redrive(a) => commands::redrive(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xdr-ingest: error: {}", render_error(&e));
            ExitCode::from(if is_usage_error(&e) { 2 } else { 1 })
        }
    }
}

/// A command line or setting that cannot work (exit code 2, like clap's own usage errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Usage errors exit with 2; I/O and lake failures with 1.
fn is_usage_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<crate::limits::InvalidSetting>()
            || c.is::<crate::quality::RulesError>()
            || c.is::<crate::handler::settings::SettingsError>()
            || c.is::<crate::registry::RegistryError>()
    })
}
