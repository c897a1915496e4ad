//! Micro-benchmark of the hot stages, so a regression shows which stage moved:
//! decode + route, typed batch building (with the rules), Parquet (zstd) encoding.
//! `cargo bench --bench stages` runs it on ~40 MB; under `cargo test` it runs once on a
//! tiny input so it cannot rot.

use std::hint::black_box;
use std::time::Instant;

use xdr_ingest::decode::{Unit, decode_unit};
use xdr_ingest::deltalake::parquet::arrow::ArrowWriter;
use xdr_ingest::generate::{Form, GenerateOptions, write_dataset};
use xdr_ingest::pipeline::{PipelineConfig, build};
use xdr_ingest::sink::writer_properties;
use xdr_ingest::typed::BuildContext;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let records = if full { 15_000 } else { 300 };
    let iters = if full { 5 } else { 1 };
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = GenerateOptions {
        records,
        corrupt_rate: 0.001,
        seed: 7,
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"),
        small: false,
    };
    write_dataset(dir.path(), Form::Both, &opts).expect("generate");
    for form in ["storage", "eventhub"] {
        let mut text = Vec::new();
        for f in xdr_ingest::source::file::collect_inputs(&[dir.path().join(form)]).expect("inputs")
        {
            text.extend(std::fs::read(f).expect("read"));
        }
        let mut units = Vec::new();
        let mut pos = 0i64;
        for line in text.split(|b| *b == b'\n') {
            pos += line.len() as i64 + 1;
            units.push(Unit::new(line, pos));
        }
        let mb = text.len() as f64 / 1e6;
        let cfg = PipelineConfig::default();
        let ctx = BuildContext::new("bench://x", 1_795_651_200_000_000, 30);

        let report = |stage: &str, secs: f64, n: u64| {
            println!(
                "{form:<9} {stage:<22} {:>8.1} MB/s {:>10.0} records/s {:>8.0} ns/record",
                mb / secs,
                n as f64 / secs,
                secs * 1e9 / n as f64
            );
        };
        let mut n = 0u64;
        let t = Instant::now();
        for _ in 0..iters {
            n = 0;
            for u in &units {
                n += decode_unit(u, cfg.max_record_bytes, &mut |d| {
                    black_box(d);
                }) as u64;
            }
        }
        report("decode+route", t.elapsed().as_secs_f64() / iters as f64, n);

        let t = Instant::now();
        let mut built = None;
        for _ in 0..iters {
            built = Some(build(&units, &cfg, &ctx).expect("build"));
        }
        report(
            "decode+typed+rules",
            t.elapsed().as_secs_f64() / iters as f64,
            n,
        );

        let built = built.expect("built");
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..iters {
            bytes = 0;
            for (_, batch) in &built.typed {
                let mut buf = Vec::new();
                let mut w =
                    ArrowWriter::try_new(&mut buf, batch.schema(), Some(writer_properties()))
                        .expect("writer");
                w.write(batch).expect("write");
                w.close().expect("close");
                bytes += buf.len();
            }
        }
        report(
            "parquet (zstd)",
            t.elapsed().as_secs_f64() / iters as f64,
            n,
        );
        println!(
            "{form:<9} {:<22} {:>8.1} MB of Parquet for {mb:.1} MB of input",
            "",
            bytes as f64 / 1e6
        );
    }
}
