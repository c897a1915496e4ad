//! Command line interface: `ingest` files into a lake, describe its `tables`, `generate`
//! sample data, `serve` as an Azure Functions custom handler, `maintain` the tables. The
//! commands adapt arguments to the library; the work happens in the pipeline.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::generate::{self, Form, GenerateOptions};
use crate::pipeline::{
    BatchStats, DEFAULT_MAX_RECORD_BYTES, DEFAULT_RETENTION_DAYS, PipelineConfig,
};
use crate::quality::Rules;
use crate::sink::inspect::{TableInfo, lake_info};
use crate::sink::{Lake, LakeSettings};
use crate::source::file::{
    DEFAULT_CHUNK_BYTES, FileOptions, IngestRun, collect_inputs, ingest_files,
};

#[derive(Parser)]
#[command(
    name = "xdr-ingest",
    version,
    about = "Microsoft Defender XDR logs into Delta Lake, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest Defender files (storage-export lines or Event Hub bodies, one per line) into the lake.
    Ingest(IngestArgs),
    /// Show each table: version, rows, dead letters by reason, txn watermark per source.
    Tables(TablesArgs),
    /// Write realistic sample Defender data (all 26 tables, both wire forms).
    Generate(GenerateArgs),
    /// Serve as an Azure Functions custom handler on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT
    /// (settings from the environment: see the README).
    Serve(ServeArgs),
    /// Compact small files, checkpoint, clean up logs and vacuum every table.
    Maintain(MaintainArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Port (the Functions host passes it in FUNCTIONS_CUSTOMHANDLER_PORT).
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
    port: u16,
}

#[derive(Args)]
struct MaintainArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Data files unreferenced for at least this long are removed. Below 168 (7 days) it
    /// needs --unsafe-vacuum-retention-may-lose-data.
    #[arg(long, default_value_t = crate::maintain::SAFE_VACUUM_RETENTION_HOURS,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::VACUUM_RETENTION_HOURS))]
    vacuum_retention_hours: u64,
    /// Allow a vacuum retention below 168 hours. Vacuum then deletes Parquet files that a
    /// running ingest has written but not committed yet, and those rows are lost: use it only
    /// with every writer of the lake stopped.
    #[arg(long)]
    unsafe_vacuum_retention_may_lose_data: bool,
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
    pub fn open(&self, checkpoint_on_commit: bool) -> anyhow::Result<Lake> {
        let mut settings = LakeSettings {
            checkpoint_on_commit,
            ..Default::default()
        }
        .with_env_identity();
        settings
            .storage_options
            .extend(self.storage_options.iter().cloned());
        Ok(Lake::open(&self.lake, settings)?)
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

#[derive(Args)]
struct IngestArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Data-quality rules file (TOML); the defaults of config/rules.toml otherwise.
    #[arg(long, env = "XDR_RULES_FILE")]
    rules: Option<PathBuf>,
    /// Records (lines) larger than this go to the dead letters as `oversized`.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::MAX_RECORD_BYTES))]
    max_record_bytes: u64,
    /// Bytes of input per commit.
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::CHUNK_BYTES))]
    chunk_bytes: u64,
    /// Days before today within which an event's Timestamp picks its `_date` partition.
    #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS as u64,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(crate::limits::RETENTION_DAYS))]
    retention_days: u64,
    /// Files, or directories walked for *.json and *.jsonl.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
struct TablesArgs {
    #[command(flatten)]
    lake: LakeArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Output directory.
    #[arg(long, default_value = "sample")]
    out: PathBuf,
    /// Records per form.
    #[arg(long, default_value_t = 2600)]
    records: usize,
    /// Which wire form: storage (PT1H.json lines), eventhub (bodies, one per line), or both.
    #[arg(long, value_enum, default_value_t = Form::Both)]
    form: Form,
    /// Fraction of lines to corrupt (0.0-1.0).
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    corrupt: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Timestamps are spread over the day before this date (YYYY-MM-DD); today by default.
    #[arg(long, value_parser = parse_date)]
    date: Option<chrono::NaiveDate>,
    /// Approximate record size mix.
    #[arg(long, value_enum, default_value_t = SizeMix::Realistic)]
    size: SizeMix,
}

/// Record sizes of generated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SizeMix {
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
            Command::Ingest(a) => cmd_ingest(a).await,
            Command::Tables(a) => cmd_tables(a).await,
            Command::Generate(a) => cmd_generate(a),
            Command::Serve(a) => cmd_serve(a).await,
            Command::Maintain(a) => cmd_maintain(a).await,
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

/// An error and its causes on one line, each cause once: delta-rs and object_store errors
/// repeat their source's text in their own message, which `{:#}` would print again for every
/// level of the chain.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        let msg = msg.trim();
        if msg.is_empty() || out.contains(msg) {
            continue;
        }
        // a cause that repeats the start of the message so far adds only its tail
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(msg);
    }
    out
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
    })
}

/// Panics as log events instead of the default hook's output. One panic is expected and
/// handled: when a full, read-only or permission-denied disk makes a Parquet upload fail as it
/// completes, delta-rs aborts the upload, object_store's `BufWriter` panics with "Already shut
/// down" (by design, once shutdown began), and delta-rs catches that panic and returns the
/// write error, which we report with its OS cause. That one is logged at debug; any other
/// panic is an error event with its message and location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if msg == "Already shut down" && location.contains("object_store") {
            tracing::debug!(
                location,
                "upload aborted after a failed completion (handled by delta-rs)"
            );
        } else {
            tracing::error!(panic = %msg, location, "internal error (panic)");
        }
    }));
}

/// Log filter when `XDR_LOG` is not set. delta-rs logs the commit conflicts it meets at
/// ERROR and WARN ("conflict detected, aborting transaction", "table updated during
/// transaction"); we resolve those ourselves (redo against the new snapshot) and report the
/// outcome at the right level, so its transaction module is kept out of the log. Its writer
/// warns once per file when a failed upload leaves parts behind (a full disk makes that one
/// line per table); the failure itself reaches the log once, as our error.
pub fn default_log_filter(handler: bool) -> &'static str {
    if handler {
        "warn,deltalake_core::kernel::transaction=off,deltalake_core::datafile::writer=error,xdr_ingest=info"
    } else {
        "warn,deltalake_core::kernel::transaction=off,deltalake_core::datafile::writer=error"
    }
}

/// Logs: human-readable on stderr for the CLI; JSON lines for the handler, where the
/// Functions host reads stdout as Information and stderr as Error, so warnings and errors go
/// to stderr and everything else (the per-invocation summaries) to stdout.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = EnvFilter::try_from_env("XDR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_log_filter(json)));
    let _ = if json {
        let writer = std::io::stderr
            .with_max_level(tracing::Level::WARN)
            .or_else(std::io::stdout);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .try_init()
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// What `ingest --json` prints.
#[derive(Serialize)]
pub struct IngestSummary {
    pub lake: String,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub records: u64,
    pub typed_rows: u64,
    pub dead_letters: u64,
    pub rows_written: u64,
    pub rows_already_in_lake: u64,
    pub rescued_values: u64,
    pub tables: BTreeMap<String, u64>,
    pub rescued_by_table: BTreeMap<String, u64>,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub rules: BTreeMap<String, crate::quality::RuleCount>,
    pub notes: Vec<String>,
}

async fn cmd_ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    let rules = match &a.rules {
        Some(p) => Rules::from_file(p)?,
        None => Rules::defaults(),
    };
    let lake = a.lake.open(true)?;
    let cfg = PipelineConfig {
        rules,
        max_record_bytes: a.max_record_bytes as usize,
        retention_days: a.retention_days as i32,
    };
    let opts = FileOptions {
        chunk_bytes: a.chunk_bytes as usize,
    };
    let files = collect_inputs(&a.paths)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = progress_bar(total, a.json);
    let started = Instant::now();
    let mut progress = {
        let bar = bar.clone();
        move |read: u64| {
            if let Some(b) = &bar {
                b.set_position(read)
            }
        }
    };
    let run = ingest_files(&lake, &files, &cfg, &opts, &mut progress).await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = summarize(&lake, &run, started.elapsed().as_secs_f64());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_summary(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64, quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() || total < 64 * 1024 * 1024 {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        b.set_style(style);
    }
    Some(b)
}

fn summarize(lake: &Lake, run: &IngestRun, seconds: f64) -> IngestSummary {
    let mut stats = BatchStats::default();
    let mut notes = Vec::new();
    let (written, present) = (run.written, run.already_present);
    for o in &run.files {
        stats.add(&o.stats);
        if let Some(n) = &o.note {
            notes.push(format!("{}: {n}", o.path.display()));
        }
    }
    IngestSummary {
        lake: lake.root().to_string(),
        files: run.files.len(),
        bytes: stats.bytes,
        seconds,
        records: stats.records,
        typed_rows: stats.typed_total(),
        dead_letters: stats.dead_total(),
        rows_written: written,
        rows_already_in_lake: present,
        rescued_values: stats.rescued_total(),
        tables: stats.typed_rows.clone(),
        rescued_by_table: stats.rescued_values.clone(),
        dead_letters_by_reason: stats.dead_letters.clone(),
        rules: stats.rules.clone(),
        notes,
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn render_summary(s: &IngestSummary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let rate = if s.seconds > 0.0 {
        s.records as f64 / s.seconds
    } else {
        0.0
    };
    let _ = writeln!(
        o,
        "Ingested {} file(s), {}, {} records in {:.2} s ({} records/s) into {}",
        s.files,
        human_bytes(s.bytes),
        thousands(s.records),
        s.seconds,
        thousands(rate as u64),
        s.lake
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<28} {:>12} {:>10}", "table", "rows", "rescued");
    for (t, n) in &s.tables {
        let r = s.rescued_by_table.get(t).copied().unwrap_or(0);
        let _ = writeln!(o, "{:<28} {:>12} {:>10}", t, thousands(*n), thousands(r));
    }
    let _ = writeln!(
        o,
        "{:<28} {:>12}",
        "_dead_letters",
        thousands(s.dead_letters)
    );
    for (r, n) in &s.dead_letters_by_reason {
        let _ = writeln!(o, "  {:<26} {:>12}", r, thousands(*n));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "records {} = typed rows {} + dead letters {}; rows written now {}, already in the lake {}; rescued values {}",
        thousands(s.records),
        thousands(s.typed_rows),
        thousands(s.dead_letters),
        thousands(s.rows_written),
        thousands(s.rows_already_in_lake),
        thousands(s.rescued_values)
    );
    let failing: Vec<String> = s
        .rules
        .iter()
        .filter(|(_, c)| c.failed > 0)
        .map(|(n, c)| format!("{n} ({}): {}", c.action, thousands(c.failed)))
        .collect();
    if !failing.is_empty() {
        let _ = writeln!(o, "rules failed: {}", failing.join(", "));
    }
    for n in &s.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

async fn cmd_tables(a: TablesArgs) -> anyhow::Result<ExitCode> {
    let lake = a.lake.open(true)?;
    let infos = lake_info(&lake).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        print!("{}", render_tables(&lake, &infos));
    }
    Ok(ExitCode::SUCCESS)
}

fn render_tables(lake: &Lake, infos: &[TableInfo]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "lake {}", lake.root());
    if infos.is_empty() {
        let _ = writeln!(o, "(no tables yet)");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<28} {:>8} {:>12} {:>7}",
        "table", "version", "rows", "files"
    );
    for i in infos {
        let _ = writeln!(
            o,
            "{:<28} {:>8} {:>12} {:>7}",
            i.name,
            i.version,
            thousands(i.rows),
            i.files
        );
        for (r, n) in &i.by_reason {
            let _ = writeln!(o, "  {:<26} {:>21}", r, thousands(*n));
        }
        for (s, v) in &i.sources {
            let _ = writeln!(o, "  txn {s} = {v}");
        }
    }
    o
}

fn cmd_generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let date = a.date.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let opts = GenerateOptions {
        records: a.records,
        corrupt_rate: a.corrupt,
        seed: a.seed,
        date,
        small: a.size == SizeMix::Small,
    };
    let m = generate::write_dataset(&a.out, a.form, &opts)?;
    for (form, e) in [("storage", &m.storage), ("eventhub", &m.eventhub)] {
        if let Some(e) = e {
            println!(
                "{form}: {} files, {}, {} records: {} typed rows in {} tables, {} dead letters {:?}",
                e.files.len(),
                human_bytes(e.bytes),
                e.records,
                e.typed_rows.values().sum::<u64>(),
                e.typed_rows.len(),
                e.dead_letters.values().sum::<u64>(),
                e.dead_letters
            );
        }
    }
    println!("manifest: {}", a.out.join("_manifest.json").display());
    Ok(ExitCode::SUCCESS)
}

async fn cmd_serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    // Settings first: a wrong one refuses to start, naming it (validation is quick, so the
    // host's readiness probe, which gives up after 30-60 s, is not at risk).
    let settings = crate::handler::HandlerSettings::from_env()
        .context("refusing to start: a setting is not valid")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    tracing::info!(port = a.port, lake = %settings.lake, "xdr-ingest handler listening");
    let state = crate::handler::AppState::new(settings)?;
    crate::handler::serve(listener, state).await?;
    Ok(ExitCode::SUCCESS)
}

async fn cmd_maintain(a: MaintainArgs) -> anyhow::Result<ExitCode> {
    let vacuum = crate::maintain::VacuumRetention::new(
        a.vacuum_retention_hours,
        a.unsafe_vacuum_retention_may_lose_data,
    )
    .map_err(|e| {
        UsageError(format!(
            "--vacuum-retention-hours {}: {e}. Pass --unsafe-vacuum-retention-may-lose-data to force it with every writer stopped",
            a.vacuum_retention_hours
        ))
    })?;
    let lake = a.lake.open(false)?;
    let done =
        crate::maintain::maintain(&lake, vacuum, &crate::maintain::CompactOptions::default())
            .await?;
    println!("{}", serde_json::to_string_pretty(&done)?);
    Ok(ExitCode::from(if done.iter().any(|m| m.error.is_some()) {
        1
    } else {
        0
    }))
}
