//! The physical floor of the job on a dataset: what the least work any ingester must do
//! costs on this machine, so our own cost is a multiple of a limit rather than of a peer.
//!
//! - `parse`: serde_json over every line into `IgnoredAny` (validates and walks every byte of
//!   every record, builds nothing), the cheapest full JSON parse there is in Rust;
//! - `compress`: zstd at our level (1) over the bytes we write: each table's rows as our
//!   pipeline builds them (typed columns, `_raw`, the metadata), encoded to uncompressed
//!   Parquet (untimed), then compressed in 1 MiB pieces, about a Parquet page each.
//!
//! The floor is `parse + compress`. CPU seconds of this thread (user + system), the input
//! already in memory. `cargo bench --bench floor -- --dir <generated form dir>` (the
//! `storage` or `eventhub` folder `xdr-ingest generate` writes); under `cargo test` it runs
//! once on a tiny generated input so it cannot rot.

use serde::de::IgnoredAny;
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::parquet::arrow::ArrowWriter;
use xdr_ingest::deltalake::parquet::basic::Compression;
use xdr_ingest::deltalake::parquet::file::properties::WriterProperties;
use xdr_ingest::generate::{Form, GenerateOptions, write_dataset};
use xdr_ingest::pipeline::{PipelineConfig, build};
use xdr_ingest::typed::BuildContext;

fn thread_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_THREAD is valid on Linux.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir_arg = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<std::path::PathBuf> = match dir_arg {
        Some(d) => vec![d.into()],
        None => {
            let opts = GenerateOptions {
                records: 200,
                corrupt_rate: 0.001,
                seed: 7,
                date: chrono::NaiveDate::from_ymd_opt(2026, 11, 26).expect("date"),
                small: false,
            };
            write_dataset(tmp.path(), Form::Both, &opts).expect("generate");
            vec![tmp.path().join("storage"), tmp.path().join("eventhub")]
        }
    };
    for dir in dirs {
        let mut text = Vec::new();
        for f in
            xdr_ingest::source::file::collect_inputs(std::slice::from_ref(&dir)).expect("inputs")
        {
            text.extend(std::fs::read(f).expect("read"));
            if text.last() != Some(&b'\n') {
                text.push(b'\n');
            }
        }
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();

        // parse
        let t = thread_cpu();
        let mut ok = 0u64;
        for l in &lines {
            ok += serde_json::from_slice::<IgnoredAny>(l).is_ok() as u64;
        }
        let parse = thread_cpu() - t;

        // the bytes we write, uncompressed (untimed)
        let mut pos = 0i64;
        let units: Vec<Unit> = lines
            .iter()
            .map(|l| {
                pos += l.len() as i64 + 1;
                Unit::new(l, pos)
            })
            .collect();
        let cfg = PipelineConfig::default();
        let ctx = BuildContext::new("floor://x", 1_795_651_200_000_000, 30);
        let built = build(&units, &cfg, &ctx).expect("build");
        let records = built.stats.records;
        let mut plain = Vec::new();
        for (_, batch) in &built.typed {
            let props = WriterProperties::builder()
                .set_compression(Compression::UNCOMPRESSED)
                .set_dictionary_enabled(false)
                .build();
            let mut w =
                ArrowWriter::try_new(&mut plain, batch.schema(), Some(props)).expect("writer");
            w.write(batch).expect("write");
            w.close().expect("close");
        }

        // compress
        let t = thread_cpu();
        let mut out = 0usize;
        let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
        for piece in plain.chunks(1 << 20) {
            out += c.compress(piece).expect("compress").len();
        }
        let compress = thread_cpu() - t;

        let floor = parse + compress;
        println!(
            "floor {}: {} records ({ok} lines parse), {:.1} MB in, {:.1} MB to compress -> {:.1} MB",
            dir.display(),
            records,
            text.len() as f64 / 1e6,
            plain.len() as f64 / 1e6,
            out as f64 / 1e6
        );
        println!(
            "floor {}: parse {parse:.3} CPU-s, compress {compress:.3} CPU-s, floor {floor:.3} CPU-s = {:.0} records/CPU-s",
            dir.display(),
            records as f64 / floor.max(1e-9)
        );
    }
}
