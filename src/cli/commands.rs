//! The commands: each adapts its arguments to the library and hands the result to
//! [`super::render`]; the work itself happens in the pipeline.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use super::render::{self, summarize};
use super::{
    DoctorArgs, DriftArgs, GenerateArgs, IngestArgs, MaintainArgs, RedriveArgs, ServeArgs, SizeMix,
    TablesArgs, UsageError,
};
use crate::generate::{self, GenerateOptions};
use crate::ingest::{FileOptions, ingest_files};
use crate::pipeline::PipelineConfig;
use crate::quality::Rules;
use crate::sink::inspect::{lake_info, source_anomalies};
use crate::source::file::collect_inputs;

pub(super) async fn ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    // everything that can be wrong with the command line is checked before the lake is touched
    let rules = match &a.rules {
        Some(p) => Rules::from_file(p)?,
        None => Rules::defaults(),
    };
    let cfg = PipelineConfig {
        rules,
        max_record_bytes: a.max_record_bytes as usize,
        retention_days: a.retention_days as i32,
        max_new_tables_per_batch: a.max_new_tables as usize,
        max_untyped_tables: a.max_untyped_tables as usize,
        dedup: !a.no_dedup,
    };
    let opts = FileOptions {
        chunk_bytes: a.chunk_bytes as usize,
    };
    let files = collect_inputs(&a.paths)?;
    let local = (!a.lake.lake.contains("://")).then(|| Path::new(&a.lake.lake).to_path_buf());
    let created = local.as_ref().is_some_and(|p| !p.exists());
    let result = async {
        let lake = a.lake.open(true, true)?;
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
        anyhow::Ok(summarize(&lake, &run, started.elapsed().as_secs_f64()))
    }
    .await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            // a failed first ingest leaves no empty lake behind
            if created && let Some(p) = &local {
                remove_if_no_files(p);
            }
            return Err(e);
        }
    };
    if files.is_empty() {
        eprintln!(
            "warning: no input files: {} holds no *.json or *.jsonl files (names starting with _ or . are skipped)",
            a.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else if summary.records > 0 && summary.typed_rows == 0 {
        eprintln!(
            "warning: every one of the {} records went to the dead letters: is this Defender data? (xdr-ingest tables shows the reasons)",
            summary.records
        );
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render::ingest_summary(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// Removes `dir` if nothing but (empty) directories are in it.
fn remove_if_no_files(dir: &Path) {
    let has_files = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .any(|e| !e.file_type().is_dir());
    if !has_files {
        let _ = std::fs::remove_dir_all(dir);
    }
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

pub(super) async fn tables(a: TablesArgs) -> anyhow::Result<ExitCode> {
    let lake = a.lake.open(true, false)?;
    let (infos, anomalies) = tokio::try_join!(lake_info(&lake), source_anomalies(&lake))?;
    if infos.is_empty() {
        anyhow::bail!("there are no tables at {}", lake.root());
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "lake": lake.root().to_string(),
                "tables": infos,
                "source_anomalies": anomalies,
            }))?
        );
    } else {
        print!(
            "{}",
            render::tables(&lake, &infos, &anomalies, a.sources, chrono::Utc::now())
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn generate(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let date = a.date.unwrap_or_else(|| chrono::Utc::now().date_naive());
    let opts = GenerateOptions {
        records: a.records,
        corrupt_rate: a.corrupt,
        seed: a.seed,
        date,
        small: a.size == SizeMix::Small,
    };
    let m = generate::write_dataset(&a.out, a.form, &opts)
        .with_context(|| format!("writing to {}", a.out.display()))?;
    print!("{}", render::generated(&a.out, &m));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    // Settings first: a wrong one refuses to start, naming it (validation is quick, so the
    // host's readiness probe, which gives up after 30-60 s, is not at risk).
    let settings = crate::handler::HandlerSettings::from_env()
        .context("refusing to start: a setting is not valid")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", a.port))?;
    tracing::info!(port = a.port, lake = %settings.lake, "xdr-ingest handler listening");
    let state = crate::handler::AppState::new(settings)?;
    // the doctor's checks, once, beside the first invocations: a wrong deployment says so in
    // the log at once, in plain words
    tokio::spawn(async {
        let report = crate::doctor::run(&|k: &str| std::env::var(k).ok()).await;
        for c in &report.checks {
            if c.ok {
                tracing::info!(check = %c.name, detail = %c.detail, ms = c.ms, "start-up check ok");
            } else {
                tracing::error!(check = %c.name, detail = %c.detail, fix = c.fix.as_deref(), ms = c.ms, "start-up check FAILED");
            }
        }
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        tracing::info!(checks = report.checks.len(), failed, "start-up checks done");
    });
    crate::handler::serve(listener, state).await?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn doctor(a: DoctorArgs) -> anyhow::Result<ExitCode> {
    let report = crate::doctor::run(&|k: &str| std::env::var(k).ok()).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn maintain(a: MaintainArgs) -> anyhow::Result<ExitCode> {
    let vacuum = crate::sink::maintain::VacuumRetention::new(
        a.vacuum_retention_hours,
        a.unsafe_vacuum_retention_may_lose_data,
    )
    .map_err(|e| {
        UsageError(format!(
            "--vacuum-retention-hours {}: {e}. Pass --unsafe-vacuum-retention-may-lose-data to force it with every writer stopped",
            a.vacuum_retention_hours
        ))
    })?;
    let lake = a.lake.open(false, false)?;
    let opts = crate::sink::maintain::CompactOptions {
        dedup_days: (!a.no_dedup).then_some(a.dedup_days),
        ..Default::default()
    };
    let done = crate::sink::maintain::maintain(&lake, vacuum, &opts).await?;
    if done.is_empty() {
        anyhow::bail!("there are no tables at {}", lake.root());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        print!("{}", render::maintenance(&done));
    }
    Ok(ExitCode::from(if done.iter().any(|m| m.error.is_some()) {
        1
    } else {
        0
    }))
}

pub(super) async fn drift(a: DriftArgs) -> anyhow::Result<ExitCode> {
    let lake = a.lake.open(true, false)?;
    let report = crate::sink::inspect::drift(&lake, a.since).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::drift(&report));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn redrive(a: RedriveArgs) -> anyhow::Result<ExitCode> {
    if let Some(r) = &a.reason
        && crate::model::DeadLetterReason::parse(r).is_none()
    {
        return Err(UsageError(format!(
            "--reason {r}: not a dead-letter reason ({})",
            crate::model::DeadLetterReason::ALL
                .map(|r| r.as_str())
                .join(", ")
        ))
        .into());
    }
    let rules = match &a.rules {
        Some(p) => Rules::from_file(p)?,
        None => Rules::defaults(),
    };
    let cfg = PipelineConfig {
        rules,
        ..PipelineConfig::default()
    };
    let lake = a.lake.open(true, false)?;
    let filter = crate::ingest::redrive::RedriveFilter {
        reason: a.reason,
        table: a.table,
        since: a.since,
    };
    let out = crate::ingest::redrive::redrive(&lake, &cfg, filter, None).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render::redrive(&out));
    }
    Ok(ExitCode::SUCCESS)
}
