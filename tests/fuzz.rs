//! Fuzz-style test of decoding and typing: real-shaped lines (our fixtures and the generator's
//! output) mutated at random (truncation, byte flips, deep nesting, huge strings, invalid
//! UTF-8, surrogate escapes, odd numbers and timestamps), in both wire forms. Every batch must
//! build without a panic and conserve its records: records in = typed rows + dead letters.
//! A share of the batches goes through a real lake too, whose tables must hold exactly that.
//!
//! Seeded and bounded: `XDR_FUZZ_CASES` (default 4000 mutated lines) and `XDR_FUZZ_SEED`
//! reproduce a run.

mod common;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use common::*;
use xdr_ingest::decode::Unit;
use xdr_ingest::generate::{Form, GenerateOptions, write_dataset};
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, build, ingest_units};
use xdr_ingest::typed::BuildContext;

fn env_num(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Real-shaped lines: the quirk fixtures, the per-table fixtures and generated records.
fn corpus() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let fixtures = repo().join("tests/fixtures");
    let mut files = vec![fixtures.join("quirks.jsonl")];
    for e in std::fs::read_dir(fixtures.join("streaming")).unwrap() {
        files.push(e.unwrap().path());
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = GenerateOptions {
        records: 300,
        corrupt_rate: 0.0,
        seed: 3,
        date: chrono::Utc::now().date_naive(),
        small: false,
    };
    write_dataset(dir.path(), Form::Both, &opts).unwrap();
    for e in walk(dir.path()) {
        files.push(e);
    }
    for f in files {
        for l in std::fs::read(&f).unwrap().split(|b| *b == b'\n') {
            if !l.is_empty() {
                lines.push(l.to_vec());
            }
        }
    }
    assert!(lines.len() > 300, "{}", lines.len());
    lines
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
    out
}

const ODD_VALUES: &[&str] = &[
    "1e999",
    "-0",
    "1.5e-400",
    "99999999999999999999999999",
    "-9223372036854775809",
    "0.1e1",
    "\"2026-02-30T00:00:00Z\"",
    "\"9999-12-31T23:59:59.9999999Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"2026-07-18T14:08:56.123456789+14:00\"",
    "\"2026-07-18T24:00:00Z\"",
    "\"\\ud800\"",
    "\"\\udfff\\ud800x\"",
    "\"\\u0000\"",
    "true",
    "null",
    "[]",
    "{}",
    "\"\"",
];

/// One random mutation of `line`.
fn mutate(rng: &mut SmallRng, line: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    match rng.random_range(0..9) {
        // truncation
        0 => {
            let cut = rng.random_range(0..=l.len());
            l.truncate(cut);
        }
        // byte flips, invalid UTF-8 included
        1 => {
            for _ in 0..rng.random_range(1..6) {
                if l.is_empty() {
                    break;
                }
                let i = rng.random_range(0..l.len());
                l[i] = rng.random();
            }
        }
        // deep nesting in a value, or in the envelope
        2 => {
            let depth = rng.random_range(100..20_000);
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            replace_a_value(rng, &mut l, deep.as_bytes());
        }
        // a huge string
        3 => {
            let n = rng.random_range(10_000..400_000);
            let huge = format!("\"{}\"", "x".repeat(n));
            replace_a_value(rng, &mut l, huge.as_bytes());
        }
        // odd numbers, timestamps and escapes
        4..=6 => {
            let v = ODD_VALUES[rng.random_range(0..ODD_VALUES.len())];
            replace_a_value(rng, &mut l, v.as_bytes());
        }
        // a record wrapped as an Event Hub body, with a bad sibling
        7 => {
            let mut b = b"{\"records\":[".to_vec();
            b.extend_from_slice(&l);
            b.extend_from_slice(b",7,{\"category\":null}]}");
            l = b;
        }
        // an unknown key with a surrogate in its value
        _ => {
            if let Some(i) = find(&l, b"\"properties\":{") {
                let at = i + b"\"properties\":{".len();
                l.splice(at..at, b"\"Zz\\ud83d\":\"\\ud83d\",".iter().copied());
            }
        }
    }
    l
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Replaces the value after a random `":` in the line.
fn replace_a_value(rng: &mut SmallRng, l: &mut Vec<u8>, v: &[u8]) {
    let colons: Vec<usize> = l
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"\":")
        .map(|(i, _)| i + 2)
        .collect();
    if colons.is_empty() {
        return;
    }
    let at = colons[rng.random_range(0..colons.len())];
    // the old value ends at the next , or } outside a string (roughly: good enough to mutate)
    let mut end = at;
    let mut in_str = false;
    let mut esc = false;
    while end < l.len() {
        let c = l[end];
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b',' || c == b'}' {
            break;
        }
        end += 1;
    }
    l.splice(at..end, v.iter().copied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_input_never_panics_and_is_conserved() {
    let seed = env_num("XDR_FUZZ_SEED", 20261129);
    let cases = env_num("XDR_FUZZ_CASES", 4000) as usize;
    let mut rng = SmallRng::seed_from_u64(seed);
    let corpus = corpus();
    let cfg = PipelineConfig {
        // small enough that some huge strings are oversized records
        max_record_bytes: 256 * 1024,
        ..PipelineConfig::default()
    };
    let ctx = BuildContext::now("fuzz://x", cfg.retention_days);
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let mut done = 0usize;
    let (mut total_records, mut total_typed, mut total_dead) = (0u64, 0u64, 0u64);
    let mut batch_no = 0i64;
    while done < cases {
        let n = rng.random_range(1..40).min(cases - done);
        let lines: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let base = &corpus[rng.random_range(0..corpus.len())];
                let mut l = mutate(&mut rng, base);
                if rng.random_bool(0.3) {
                    l = mutate(&mut rng, &l);
                }
                l
            })
            .collect();
        let units: Vec<Unit> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Unit::new(l, batch_no * 1000 + i as i64 + 1))
            .collect();
        let built = build(&units, &cfg, &ctx).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            built.stats.conserved(),
            "seed {seed}, batch {batch_no}: {:?}",
            built.stats
        );
        // typed rows include those of new categories' untyped tables
        assert_eq!(
            built.stats.typed_total() as usize,
            built.typed.iter().map(|(_, b)| b.num_rows()).sum::<usize>()
                + built
                    .untyped
                    .iter()
                    .map(|(_, b)| b.num_rows())
                    .sum::<usize>()
        );
        assert_eq!(built.stats.dead_total() as usize, built.dead.num_rows());
        // every fourth batch through a real lake as well
        if batch_no % 4 == 0 {
            let source = SourceId::custom(format!("fuzz://{batch_no}"));
            let r = ingest_units(&lake, &source, &units, &cfg)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}, batch {batch_no}: {e}"));
            total_records += r.stats.records;
            total_typed += r.stats.typed_total();
            total_dead += r.stats.dead_total();
        }
        done += n;
        batch_no += 1;
    }
    assert_eq!(total_records, total_typed + total_dead);
    let rows = lake_rows(&lake).await;
    assert_eq!(
        non_meta(&rows).values().sum::<u64>(),
        total_typed,
        "seed {seed}"
    );
    assert_eq!(
        rows.get("_dead_letters").copied().unwrap_or(0),
        total_dead,
        "seed {seed}"
    );
    assert!(total_dead > 0 && total_typed > 0);
}
