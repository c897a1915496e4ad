//! The valid range of every numeric setting and flag, in one place: the CLI (through clap)
//! and the handler (from app settings) refuse the same values at start-up, with a message
//! that names the setting and the range, instead of failing later on the first batch.

use std::ops::RangeInclusive;

/// `--max-record-bytes` / `XDR_MAX_RECORD_BYTES`: 1 KiB to 1 GiB.
pub const MAX_RECORD_BYTES: RangeInclusive<u64> = 1024..=(1 << 30);
/// `--retention-days` / `XDR_RETENTION_DAYS`: 0 to 10 years.
pub const RETENTION_DAYS: RangeInclusive<u64> = 0..=3650;
/// `--chunk-bytes` / `XDR_CHUNK_BYTES`: 1 KiB to 4 GiB.
pub const CHUNK_BYTES: RangeInclusive<u64> = 1024..=(4 << 30);
/// `XDR_MAX_REQUEST_BYTES`: 1 MiB to 2 GiB (a host request is held in memory whole).
pub const MAX_REQUEST_BYTES: RangeInclusive<u64> = (1 << 20)..=(2 << 30);
/// `XDR_BLOB_GRACE_MINUTES`: how long after its hour a blob is final, up to a day.
pub const BLOB_GRACE_MINUTES: RangeInclusive<u64> = 0..=1440;
/// `XDR_SWEEP_HOURS`: closed hours the sweep always looks at, 1 to 7 days.
pub const SWEEP_HOURS: RangeInclusive<u64> = 1..=168;
/// `--vacuum-retention-hours` / `XDR_VACUUM_RETENTION_HOURS`: up to a year. Values below
/// [`crate::sink::maintain::SAFE_VACUUM_RETENTION_HOURS`] need an explicit opt-in on top.
pub const VACUUM_RETENTION_HOURS: RangeInclusive<u64> = 0..=8760;
/// `--max-new-tables` / `XDR_MAX_NEW_TABLES`: new untyped tables one batch may create.
pub const MAX_NEW_TABLES: RangeInclusive<u64> = 0..=1000;
/// `--max-untyped-tables` / `XDR_MAX_UNTYPED_TABLES`: untyped tables a lake may have.
pub const MAX_UNTYPED_TABLES: RangeInclusive<u64> = 0..=10_000;
/// `XDR_SWEEP_MAX_CATCH_UP_HOURS`: hours one sweep lists at most when it catches up.
pub const SWEEP_MAX_CATCH_UP_HOURS: RangeInclusive<u64> = 1..=24 * 90;
/// `XDR_BLOB_TIME_BUDGET_SECONDS`: how long one BlobIngest invocation reads before it hands
/// the rest of the blob to a continuation.
pub const BLOB_TIME_BUDGET_SECONDS: RangeInclusive<u64> = 10..=24 * 3600;

/// `XDR_COMMIT_LINGER_MS`: how long an Event Hub append waits for others to share its
/// commit, up to 2 minutes (the latency goal).
pub const COMMIT_LINGER_MS: RangeInclusive<u64> = 0..=120_000;
/// `XDR_COMMIT_LINGER_BYTES`: queued bytes that end a linger early, 1 MiB to 4 GiB.
pub const COMMIT_LINGER_BYTES: RangeInclusive<u64> = (1 << 20)..=(4 << 30);
/// `XDR_EVENTHUB_SLICE_BYTES`: event bytes built and committed at once, 64 KiB to 2 GiB.
pub const EVENTHUB_SLICE_BYTES: RangeInclusive<u64> = (64 << 10)..=(2 << 30);
/// `XDR_MAX_INFLIGHT_BYTES`: Event Hub request bytes the handler holds at once, 1 MiB to
/// 64 GiB.
pub const MAX_INFLIGHT_BYTES: RangeInclusive<u64> = (1 << 20)..=(64 << 30);

/// A setting or flag whose value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value}: {msg}")]
pub struct InvalidSetting {
    pub name: String,
    pub value: String,
    pub msg: String,
}

impl InvalidSetting {
    pub fn new(name: &str, value: impl Into<String>, msg: impl Into<String>) -> Self {
        InvalidSetting {
            name: name.to_owned(),
            value: value.into(),
            msg: msg.into(),
        }
    }
}

/// Parses `value` as an integer within `range`, naming `name` in the error.
pub fn parse_in(
    name: &str,
    value: &str,
    range: &RangeInclusive<u64>,
) -> Result<u64, InvalidSetting> {
    let v = value.trim();
    let n: u64 = v.parse().map_err(|_| {
        InvalidSetting::new(
            name,
            value,
            format!(
                "expected a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )
    })?;
    if !range.contains(&n) {
        return Err(InvalidSetting::new(
            name,
            value,
            format!("must be from {} to {}", range.start(), range.end()),
        ));
    }
    Ok(n)
}

/// Parses a boolean setting: `true`/`false`/`1`/`0`/`yes`/`no`.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, InvalidSetting> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(InvalidSetting::new(name, value, "expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_enforced_with_the_setting_named() {
        assert_eq!(
            parse_in("XDR_RETENTION_DAYS", " 30 ", &RETENTION_DAYS),
            Ok(30)
        );
        let e = parse_in("XDR_RETENTION_DAYS", "-5", &RETENTION_DAYS).unwrap_err();
        assert_eq!(e.name, "XDR_RETENTION_DAYS");
        assert!(e.to_string().contains("from 0 to 3650"), "{e}");
        let e = parse_in("XDR_SWEEP_HOURS", "0", &SWEEP_HOURS).unwrap_err();
        assert!(e.to_string().contains("must be from 1 to 168"), "{e}");
        assert!(parse_in("X", "1e3", &CHUNK_BYTES).is_err());
        assert_eq!(parse_bool("X", "TRUE"), Ok(true));
        assert!(parse_bool("X", "maybe").is_err());
    }
}
