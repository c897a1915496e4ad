//! The side-by-side benchmark (bench/compare.sh) on a tiny dataset, so it cannot rot: the three
//! jobs run on both forms and must agree with each other and the generator on rows per table. The
//! numbers of this run mean nothing (debug binary, 1 MB); the README has the full run's.

use std::process::Command;

#[test]
fn compare_script_runs_on_a_tiny_dataset() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("bash")
        .arg(format!("{root}/bench/compare.sh"))
        .args([
            "--bin",
            env!("CARGO_BIN_EXE_xdr-ingest"),
            "--mb",
            "1",
            "--runs",
            "1",
            // the floor is a release build of its own: not in the test build
            "--no-floor",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("run bench/compare.sh");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("rows per table: identical"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    for form in ["storage", "eventhub"] {
        for tool in ["xdr-ingest", "duckdb", "duckdb-fast"] {
            assert!(report[form][tool]["records_per_cpu_s"].as_f64().unwrap() > 0.0);
        }
    }
}
