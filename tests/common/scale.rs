//! The scale scenario shared by `tests/scale.rs` (small, asserted) and `benches/scale.rs`
//! (full, reported): `writers` Event Hub partitions, each its own process (its own lake handle
//! and table caches), each delivering `batches` batches in turn, every batch holding records
//! for all 26 tables, all committing to the same lake at once through
//! [`LatencyStore`](super::latency_store::LatencyStore).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::latency_store::LatencyStore;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::local::LocalFileSystem;
use xdr_ingest::ingest::eventhub::ingest_event_batch;
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::PipelineConfig;
use xdr_ingest::registry::registry;
use xdr_ingest::sink::{Lake, LakeSettings};

pub struct Scale {
    pub writers: usize,
    pub batches: usize,
    /// Records per table per batch.
    pub per_table: usize,
    pub latency: Duration,
    /// All partitions in one process (one lake handle, one cache per table), as when one
    /// instance hosts them all; otherwise each partition is a process of its own.
    pub shared: bool,
}

#[derive(Debug)]
pub struct ScaleReport {
    pub wall_s: f64,
    /// Table appends the batches asked for (27 a batch: 26 tables and `_ingest_runs`).
    pub appends: u64,
    /// Table commits that landed (typed tables, `_ingest_runs`); fewer than `appends` when
    /// one process groups its partitions' appends.
    pub commits: u64,
    pub commits_per_s: f64,
    /// Commit attempts that found their version taken (delta-rs then retries at the next).
    pub conflicts: u64,
    /// Appends redone by us after a conflict delta-rs does not resolve itself.
    pub redone: u64,
    /// Per-batch latency (delivery to every table committed), ms.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub rows_expected: u64,
    pub rows_by_table: BTreeMap<String, u64>,
}

/// One Event Hub body: `per_table` records for every table of the registry.
pub fn body(partition: usize, seq: i64, per_table: usize) -> String {
    let mut recs = Vec::new();
    for t in registry().tables() {
        for j in 0..per_table {
            recs.push(format!(
                r#"{{"time":"2026-11-26T10:00:00Z","tenantId":"t","category":"{}","properties":{{"Timestamp":"2026-11-26T09:59:{:02}Z","DeviceId":"p{partition}","DeviceName":"host-{j}","ActionType":"X","ReportId":{seq}}}}}"#,
                t.category,
                j % 60
            ));
        }
    }
    format!(r#"{{"records":[{}]}}"#, recs.join(","))
}

pub fn lake_on(dir: &std::path::Path, store: Arc<LatencyStore>) -> Lake {
    let settings = LakeSettings {
        store: Some(store),
        // as the handler runs: checkpoints left to the maintenance timer
        checkpoint_on_commit: false,
        ..Default::default()
    };
    Lake::open(dir.to_str().expect("utf-8 path"), settings).expect("lake")
}

pub async fn run(dir: &std::path::Path, s: &Scale) -> ScaleReport {
    let store = Arc::new(LatencyStore::new(
        Arc::new(LocalFileSystem::new()),
        s.latency,
    ));
    // the tables exist before the partitions start (as after the first minutes of a deployment)
    {
        let lake = lake_on(dir, store.clone());
        let text = body(usize::MAX, 0, 1);
        let units = [Unit::new(text.as_bytes(), 0)];
        ingest_event_batch(
            &lake,
            &SourceId::event_hub("ns", "hub", "warmup"),
            &units,
            &PipelineConfig::default(),
        )
        .await
        .expect("warm-up batch");
    }
    let attempts0 = store.commit_attempts.load(Ordering::Relaxed);
    let conflicts0 = store.commit_conflicts.load(Ordering::Relaxed);
    let shared = s.shared.then(|| Arc::new(lake_on(dir, store.clone())));
    let started = Instant::now();
    let tasks: Vec<_> = (0..s.writers)
        .map(|p| {
            let store = store.clone();
            let dir = dir.to_path_buf();
            let shared = shared.clone();
            let (batches, per_table) = (s.batches, s.per_table);
            tokio::spawn(async move {
                let lake = match shared {
                    Some(l) => l,
                    None => Arc::new(lake_on(&dir, store)),
                };
                let source = SourceId::event_hub("ns", "hub", &p.to_string());
                let cfg = PipelineConfig::default();
                let mut latencies = Vec::new();
                let mut redone = 0u64;
                for b in 0..batches {
                    let seq = b as i64 + 1;
                    let text = body(p, seq, per_table);
                    let units = [Unit::new(text.as_bytes(), seq)];
                    let t = Instant::now();
                    let out = ingest_event_batch(&lake, &source, &units, &cfg)
                        .await
                        .unwrap_or_else(|e| panic!("partition {p} batch {b}: {e}"));
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    redone += out
                        .report
                        .commit
                        .tables
                        .values()
                        .map(|o| o.redone as u64)
                        .sum::<u64>();
                }
                (latencies, redone)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut redone = 0;
    for t in tasks {
        let (l, r) = t.await.expect("writer task");
        latencies.extend(l);
        redone += r;
    }
    let wall_s = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let attempts = store.commit_attempts.load(Ordering::Relaxed) - attempts0;
    let conflicts = store.commit_conflicts.load(Ordering::Relaxed) - conflicts0;
    let commits = attempts - conflicts;
    let plain =
        Lake::open(dir.to_str().expect("utf-8 path"), LakeSettings::default()).expect("lake");
    let rows_by_table = xdr_ingest::sink::inspect::lake_info(&plain)
        .await
        .expect("lake info")
        .into_iter()
        .map(|i| (i.name, i.rows))
        .collect();
    ScaleReport {
        wall_s,
        appends: (s.writers * s.batches * 27) as u64,
        commits,
        commits_per_s: commits as f64 / wall_s,
        conflicts,
        redone,
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        max_ms: pct(1.0),
        rows_expected: (s.writers * s.batches * s.per_table) as u64,
        rows_by_table,
    }
}

impl ScaleReport {
    pub fn print(&self, label: &str, s: &Scale) {
        println!(
            "{label}: {} writers ({}) x {} batches x 26 tables ({} record(s) per table per batch), {} ms per store request",
            s.writers,
            if s.shared {
                "one process"
            } else {
                "a process each"
            },
            s.batches,
            s.per_table,
            s.latency.as_millis()
        );
        println!(
            "  {:.1} s, {:.2} batches/s; {} table appends in {} commits ({:.1} appends a commit) = {:.1} commits/s ({:.2} per table per s); {} lost version races ({:.0} % of attempts), {} appends redone",
            self.wall_s,
            (s.writers * s.batches) as f64 / self.wall_s,
            self.appends,
            self.commits,
            self.appends as f64 / self.commits.max(1) as f64,
            self.commits_per_s,
            self.commits_per_s / 27.0,
            self.conflicts,
            100.0 * self.conflicts as f64 / (self.commits + self.conflicts).max(1) as f64,
            self.redone
        );
        println!(
            "  batch latency (delivery to all tables committed): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            self.p50_ms, self.p95_ms, self.max_ms
        );
    }
}
