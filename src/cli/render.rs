//! What the commands print: the ingest summary, the tables overview, the maintenance
//! summary, in words for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::generate::Manifest;
use crate::ingest::IngestRun;
use crate::pipeline::BatchStats;
use crate::sink::Lake;
use crate::sink::inspect::{SourceAnomalies, TableDrift, TableInfo};
use crate::sink::maintain::TableMaintenance;

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
    /// Records dropped as re-sends (by content) of another in the same run's batches.
    pub duplicates: u64,
    pub tables: BTreeMap<String, u64>,
    pub rescued_by_table: BTreeMap<String, u64>,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub rules: BTreeMap<String, crate::quality::RuleCount>,
    /// Tables of categories the registry does not know (untyped).
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub untyped_tables: std::collections::BTreeSet<String>,
    pub notes: Vec<String>,
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

/// The summary of an ingest run, from what each file did.
pub fn summarize(lake: &Lake, run: &IngestRun, seconds: f64) -> IngestSummary {
    let mut stats = BatchStats::default();
    let mut notes = Vec::new();
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
        rows_written: run.written,
        rows_already_in_lake: run.already_present,
        rescued_values: stats.rescued_total(),
        duplicates: stats.duplicates_total(),
        tables: stats.typed_rows.clone(),
        rescued_by_table: stats.rescued_values.clone(),
        dead_letters_by_reason: stats.dead_letters.clone(),
        rules: stats.rules.clone(),
        untyped_tables: stats.untyped_tables.clone(),
        notes,
    }
}

pub fn ingest_summary(s: &IngestSummary) -> String {
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
    let names: Vec<String> = s
        .tables
        .keys()
        .map(|t| {
            if s.untyped_tables.contains(t) {
                format!("{t} (untyped)")
            } else {
                t.clone()
            }
        })
        .collect();
    let w = names.iter().map(String::len).max().unwrap_or(0).max(28);
    let _ = writeln!(o, "{:<w$} {:>12} {:>10}", "table", "rows", "rescued");
    for (name, (t, n)) in names.iter().zip(&s.tables) {
        let r = s.rescued_by_table.get(t).copied().unwrap_or(0);
        let _ = writeln!(o, "{:<w$} {:>12} {:>10}", name, thousands(*n), thousands(r));
    }
    let _ = writeln!(
        o,
        "{:<w$} {:>12}",
        "_dead_letters",
        thousands(s.dead_letters)
    );
    for (r, n) in &s.dead_letters_by_reason {
        let _ = writeln!(o, "  {:<w2$} {:>12}", r, thousands(*n), w2 = w - 2);
    }
    let _ = writeln!(o);
    let dups = if s.duplicates > 0 {
        format!(" + re-sends dropped {}", thousands(s.duplicates))
    } else {
        String::new()
    };
    let _ = writeln!(
        o,
        "records {} = typed rows {} + dead letters {}{dups}; rows written now {}, already in the lake {}; rescued values {}",
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

/// How long ago `ms` was, in the largest sensible unit.
fn age(now: chrono::DateTime<chrono::Utc>, ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let secs = (now.timestamp_millis() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// One line per table; the sources with anomalies; per-source watermarks with `sources`.
pub fn tables(
    lake: &Lake,
    infos: &[TableInfo],
    anomalies: &[SourceAnomalies],
    sources: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "lake {}", lake.root());
    let names: Vec<String> = infos
        .iter()
        .map(|i| {
            if i.untyped {
                format!("{} (untyped)", i.name)
            } else {
                i.name.clone()
            }
        })
        .collect();
    let w = names.iter().map(String::len).max().unwrap_or(0).max(26);
    let _ = writeln!(
        o,
        "{:<w$} {:>7} {:>11} {:>6} {:>11} {:>7}  last commit",
        "table", "version", "rows", "files", "dead", "sources"
    );
    for (name, i) in names.iter().zip(infos) {
        let dead: u64 = i.by_reason.values().sum();
        let _ = writeln!(
            o,
            "{:<w$} {:>7} {:>11} {:>6} {:>11} {:>7}  {}",
            name,
            i.version,
            thousands(i.rows),
            i.files,
            if i.by_reason.is_empty() {
                "-".into()
            } else {
                thousands(dead)
            },
            i.sources.len(),
            age(now, i.last_commit_ms)
        );
    }
    let dups: Vec<String> = infos
        .iter()
        .filter(|i| i.duplicates_removed > 0)
        .map(|i| format!("{} {}", i.name, thousands(i.duplicates_removed)))
        .collect();
    if !dups.is_empty() {
        let _ = writeln!(o, "re-sends removed by maintenance: {}", dups.join(", "));
    }
    let reasons: BTreeMap<&str, u64> = infos
        .iter()
        .flat_map(|i| i.by_reason.iter().map(|(r, n)| (r.as_str(), *n)))
        .collect();
    if !reasons.is_empty() {
        let list: Vec<String> = reasons
            .iter()
            .map(|(r, n)| format!("{r} {}", thousands(*n)))
            .collect();
        let _ = writeln!(o, "dead letters by reason: {}", list.join(", "));
    }
    if anomalies.is_empty() {
        let _ = writeln!(
            o,
            "sources: no gaps, redeliveries or restarted sequences recorded"
        );
    } else {
        let _ = writeln!(
            o,
            "sources with gaps, redeliveries or restarts (from _ingest_runs):"
        );
        for a in anomalies {
            let mut parts = Vec::new();
            if a.gaps > 0 {
                parts.push(format!(
                    "{} gap(s), {} positions skipped",
                    a.gaps,
                    thousands(a.positions_skipped as u64)
                ));
            }
            if a.redeliveries > 0 {
                parts.push(format!(
                    "{} redelivery(ies), {} positions",
                    a.redeliveries,
                    thousands(a.positions_redelivered as u64)
                ));
            }
            if a.restarts > 0 {
                parts.push(format!("{} restarted sequence(s)", a.restarts));
            }
            let _ = writeln!(o, "  {}: {}", a.source, parts.join("; "));
            if let Some(n) = &a.last_note {
                let _ = writeln!(o, "    last: {n}");
            }
        }
    }
    if sources {
        for i in infos {
            if i.sources.is_empty() {
                continue;
            }
            let _ = writeln!(o, "{}:", i.name);
            for (s, v) in &i.sources {
                let _ = writeln!(o, "  txn {s} = {v}");
            }
        }
    } else if infos.iter().any(|i| !i.sources.is_empty()) {
        let _ = writeln!(o, "(--sources lists every source's watermark per table)");
    }
    o
}

/// What `generate` wrote.
pub fn generated(out: &Path, m: &Manifest) -> String {
    let mut o = String::new();
    for (form, e) in [("storage", &m.storage), ("eventhub", &m.eventhub)] {
        if let Some(e) = e {
            let _ = writeln!(
                o,
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
    let _ = writeln!(o, "manifest: {}", out.join("_manifest.json").display());
    o
}

/// What `maintain` did, a line per table that had something done or failed.
pub fn maintenance(done: &[TableMaintenance]) -> String {
    let mut o = String::new();
    let (mut removed, mut added, mut vacuumed, mut logs) = (0usize, 0usize, 0usize, 0usize);
    for m in done {
        removed += m.compaction.files_removed;
        added += m.compaction.files_added;
        vacuumed += m.files_vacuumed;
        logs += m.logs_removed;
        let mut what = Vec::new();
        if m.compaction.files_removed > 0 {
            what.push(format!(
                "compacted {} files into {} ({})",
                m.compaction.files_removed,
                m.compaction.files_added,
                human_bytes(m.compaction.input_bytes)
            ));
        }
        if m.dedup.rows_removed > 0 {
            what.push(format!(
                "removed {} re-sent rows ({} files rewritten)",
                m.dedup.rows_removed, m.dedup.files_rewritten
            ));
        }
        if let Some(g) = &m.dedup.gave_up {
            what.push(format!("dedup skipped: {g}"));
        }
        if let Some(g) = &m.compaction.gave_up {
            what.push(format!("compaction skipped: {g}"));
        }
        if m.files_vacuumed > 0 {
            what.push(format!("vacuumed {} files", m.files_vacuumed));
        }
        if m.logs_removed > 0 {
            what.push(format!("removed {} expired log files", m.logs_removed));
        }
        if let Some(e) = &m.error {
            what.push(format!("FAILED: {e}"));
        }
        if !what.is_empty() {
            let _ = writeln!(o, "{:<26} v{:<6} {}", m.table, m.version, what.join("; "));
        }
    }
    let failed = done.iter().filter(|m| m.error.is_some()).count();
    let _ = writeln!(
        o,
        "{} tables checkpointed; {added} files written for {removed} compacted; {vacuumed} files vacuumed; {logs} log files removed; {failed} failed",
        done.iter().filter(|m| m.checkpoint).count()
    );
    o
}

/// What `drift` found, a block per table.
pub fn drift(report: &[TableDrift]) -> String {
    let mut o = String::new();
    if report.is_empty() {
        let _ = writeln!(
            o,
            "no drift: every key has a column and every value fit its type"
        );
        return o;
    }
    for t in report {
        let _ = writeln!(
            o,
            "{} ({} rows with _rescued)",
            t.table,
            thousands(t.rows_with_rescued)
        );
        for i in &t.items {
            let what = match &i.column_type {
                Some(ty) => format!("values not {ty}"),
                None => "no column".into(),
            };
            let _ = writeln!(
                o,
                "  {:<32} {:<18} {:>9}  {} .. {}  e.g. {}",
                i.key,
                what,
                thousands(i.count),
                &i.first_seen.get(..19).unwrap_or(&i.first_seen),
                &i.last_seen.get(..19).unwrap_or(&i.last_seen),
                i.example
            );
        }
    }
    let _ = writeln!(
        o,
        "(a column can be added with a schema overlay: --schema FILE, see docs/data-contract.md)"
    );
    o
}

/// What a redrive did.
pub fn redrive(o: &crate::ingest::redrive::RedriveOutcome) -> String {
    let mut s = String::new();
    let landed: u64 = o.landed.values().sum();
    let failing: u64 = o.still_failing.values().sum();
    let _ = writeln!(
        s,
        "redrive run {}{}: {} records taken, {} landed, {} still failing{}",
        o.run,
        if o.resumed {
            " (resumed, with its own filter)"
        } else {
            ""
        },
        thousands(o.candidates),
        thousands(landed),
        thousands(failing),
        if o.finished {
            ""
        } else {
            "; not finished: run redrive again to resume it"
        }
    );
    for (t, n) in &o.landed {
        let _ = writeln!(s, "  landed in {t:<28} {:>9}", thousands(*n));
    }
    for (r, n) in &o.still_failing {
        let _ = writeln!(s, "  still failing: {r:<22} {:>9}", thousands(*n));
    }
    let _ = writeln!(
        s,
        "(_redrives records each record; the dead letters stay as they were)"
    );
    s
}
