//! The deployment package: the zip `scripts/package.sh` writes keeps the handler a Unix file
//! with mode 0755 (Flex cannot chmod on its read-only mount) next to host.json and every
//! function.json; and, when a shipped build is there (`scripts/package.sh` was run; CI does not
//! build release binaries), that the binary is static, stripped, and runs.

mod common;

use std::process::Command;

use common::repo;

#[test]
fn the_zip_keeps_the_exec_bit_and_every_function() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pkg.zip");
    let o = Command::new("python3")
        .arg(repo().join("scripts/make_zip.py"))
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_xdr-ingest"))
        .current_dir(repo())
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist():\n    print(i.filename, i.create_system, oct(i.external_attr >> 16))",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        listing.lines().any(|l| l == "xdr-ingest 3 0o100755"),
        "{listing}"
    );
    for f in [
        "host.json",
        "config/rules.toml",
        "EventHubIngest/function.json",
        "BlobIngest/function.json",
        "BlobSweep/function.json",
        "Replay/function.json",
        "Maintenance/function.json",
    ] {
        assert!(
            listing.lines().any(|l| l == format!("{f} 3 0o100644")),
            "{f}: {listing}"
        );
    }
}

#[test]
fn the_shipped_binary_is_static_and_stripped() {
    let bin = repo().join("target/x86_64-unknown-linux-musl/dist/xdr-ingest");
    if !bin.exists() {
        eprintln!(
            "note: {} is not built (scripts/package.sh builds it): skipped",
            bin.display()
        );
        return;
    }
    let headers = Command::new("readelf")
        .arg("-lS")
        .arg(&bin)
        .output()
        .expect("readelf");
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    assert!(
        !headers.contains("INTERP"),
        "a program interpreter: not static"
    );
    assert!(
        !headers.contains(".symtab") && !headers.contains(".debug_line"),
        "not stripped"
    );
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("xdr-ingest"));
}
