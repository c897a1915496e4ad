//! The shipped binary as a user runs it: exit codes (2 for every usage error, 1 for I/O and
//! lake failures, never 101), settings refused at start-up, and clean errors on a full or
//! read-only disk (the OS cause once, no panic output).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn xdr(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
        .args(args)
        .current_dir(dir)
        .env_remove("XDR_LAKE")
        .env_remove("XDR_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run xdr-ingest")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn line() -> String {
    r#"{"time":"2026-07-18T14:08:10Z","category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-07-18T14:05:00Z","DeviceName":"d"}}"#.to_owned() + "\n"
}

#[test]
fn usage_errors_exit_2_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    std::fs::write(&input, line()).unwrap();
    let bad_rules = dir.path().join("rules.toml");
    std::fs::write(&bad_rules, "[[rule]]\nname = 'x'\n").unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let input = input.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["ingest", "--lake", lake, "--retention-days", "-5", input],
            "--retention-days",
        ),
        (
            &["ingest", "--lake", lake, "--retention-days", "99999", input],
            "--retention-days",
        ),
        (
            &["ingest", "--lake", lake, "--max-record-bytes", "0", input],
            "--max-record-bytes",
        ),
        (
            &["ingest", "--lake", lake, "--chunk-bytes", "abc", input],
            "--chunk-bytes",
        ),
        (
            &[
                "ingest",
                "--lake",
                lake,
                "--rules",
                bad_rules.to_str().unwrap(),
                input,
            ],
            "rules",
        ),
        (&["generate", "--out", "g", "--corrupt", "2"], "--corrupt"),
        (
            &["generate", "--out", "g", "--date", "2026-13-01"],
            "--date",
        ),
        (&["generate", "--out", "g", "--size", "bogus"], "--size"),
        (
            &["maintain", "--lake", lake, "--vacuum-retention-hours", "0"],
            "vacuum-retention-hours",
        ),
        (
            &["maintain", "--lake", lake, "--vacuum-retention-hours", "-1"],
            "--vacuum-retention-hours",
        ),
    ];
    for (args, flag) in cases {
        let o = xdr(args, dir.path());
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?} should name {flag}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // the unsafe vacuum explains what it risks
    let o = xdr(
        &["maintain", "--lake", lake, "--vacuum-retention-hours", "0"],
        dir.path(),
    );
    assert!(stderr(&o).contains("not committed yet"), "{}", stderr(&o));
    // and runs when forced on purpose
    let o = xdr(&["ingest", "--lake", lake, input], dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = xdr(
        &[
            "maintain",
            "--lake",
            lake,
            "--vacuum-retention-hours",
            "0",
            "--unsafe-vacuum-retention-may-lose-data",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn the_handler_refuses_to_start_on_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in [
        ("XDR_RETENTION_DAYS", "-5"),
        ("XDR_CHUNK_BYTES", "12"),
        ("XDR_SWEEP_HOURS", "0"),
        ("XDR_VACUUM_RETENTION_HOURS", "1"),
        ("XDR_REPLAY_ALLOWLIST", "not-an-entry"),
        ("XDR_LAKE_OPTIONS", "novalue"),
        ("XDR_EVENTHUB_DATA_TYPE", "text"),
        ("XDR_COMMIT_LINGER_MS", "200000"),
        ("XDR_COMMIT_LINGER_BYTES", "12"),
        ("XDR_EVENTHUB_SLICE_BYTES", "1k"),
        ("XDR_MAX_INFLIGHT_BYTES", "0"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
            .arg("serve")
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "1")
            .env("XDR_LAKE", dir.path())
            .env(k, v)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{k}={v}: {err}");
        assert!(err.contains(k), "{k}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A tiny file system (tmpfs), if this machine lets us mount one (root in a sandbox usually
/// may; elsewhere the test says so and skips).
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(dir: &Path, size: &str) -> Option<TinyFs> {
        let at = dir.join("fs");
        std::fs::create_dir_all(&at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("note: cannot mount a tmpfs here (not root?): full-disk case skipped");
            return None;
        }
        Some(TinyFs(at))
    }

    fn read_only(&self) -> bool {
        Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_or_read_only_disk_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let sample = repo().join("sample");
    let Some(fs) = TinyFs::mount(dir.path(), "300k") else {
        return;
    };
    let lake = fs.0.join("lake");
    let o = xdr(
        &[
            "ingest",
            "--lake",
            lake.to_str().unwrap(),
            sample.to_str().unwrap(),
        ],
        dir.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Already shut down"),
        "{err}"
    );
    assert!(
        err.lines().count() <= 2,
        "one error, not a line per table: {err}"
    );

    drop(fs);
    let Some(fs) = TinyFs::mount(dir.path(), "3m") else {
        return;
    };
    let lake = fs.0.join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    if !fs.read_only() {
        eprintln!("note: cannot remount read-only: read-only case skipped");
        return;
    }
    let o = xdr(
        &[
            "ingest",
            "--lake",
            lake.to_str().unwrap(),
            sample.to_str().unwrap(),
        ],
        dir.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
