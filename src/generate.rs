//! Sample-data generator: realistic Defender records for all 26 tables in both wire forms
//! (storage-export `PT1H.json` lines with CRLF, and Event Hub `{"records":[...]}` bodies),
//! with the wire quirks real exports show and optional corruption. It writes a manifest of
//! what the pipeline must make of it (rows per table, dead letters per reason), so tests can
//! check conservation against the generator's own counts. Values are invented; the shapes
//! follow the real samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::model::Category;
use crate::registry::KustoType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Storage,
    Eventhub,
    Both,
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Records per form (corrupted lines included).
    pub records: usize,
    /// Fraction of lines (storage) or records (Event Hub) to corrupt.
    pub corrupt_rate: f64,
    pub seed: u64,
    /// Event timestamps fall in the 24 hours before this date's midnight.
    pub date: NaiveDate,
    /// Shorter strings (records of a few hundred bytes).
    pub small: bool,
}

/// What the pipeline must produce from one form's files.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Expected {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
    /// Records the pipeline counts (a corrupt Event Hub body that is not JSON counts as one).
    pub records: u64,
    pub typed_rows: BTreeMap<String, u64>,
    pub dead_letters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Manifest {
    pub seed: u64,
    pub storage: Option<Expected>,
    pub eventhub: Option<Expected>,
}

const TENANT: &str = "0f4e2c7a-5b1d-4e8f-9a3c-6d2b7e1f0a94";

/// Relative weights: process, network, file and registry events dominate, as in real tenants.
fn weight(table: &str) -> u32 {
    match table {
        "DeviceProcessEvents" => 22,
        "DeviceNetworkEvents" => 20,
        "DeviceFileEvents" => 16,
        "DeviceRegistryEvents" => 12,
        "DeviceEvents" => 8,
        "DeviceImageLoadEvents" => 6,
        "DeviceLogonEvents" => 3,
        "DeviceNetworkInfo" | "DeviceInfo" | "EmailEvents" | "CloudAppEvents" => 2,
        _ => 1,
    }
}

/// Tables whose real records omit empty columns instead of sending null.
fn omits_nulls(table: &str) -> bool {
    matches!(
        table,
        "DeviceEvents" | "DeviceRegistryEvents" | "BehaviorEntities"
    )
}

/// Kinds of corruption, each with the dead-letter reason the pipeline must give it.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    Truncated,
    InvalidUtf8,
    NotAnObject,
    MissingCategory,
    UnknownCategory,
    NullTimestamp,
    MissingProperties,
}

impl Corruption {
    const ALL: [Corruption; 7] = [
        Corruption::Truncated,
        Corruption::InvalidUtf8,
        Corruption::NotAnObject,
        Corruption::MissingCategory,
        Corruption::UnknownCategory,
        Corruption::NullTimestamp,
        Corruption::MissingProperties,
    ];
    fn reason(self) -> &'static str {
        match self {
            Corruption::Truncated => "invalid_json",
            Corruption::InvalidUtf8 => "invalid_utf8",
            Corruption::NotAnObject => "not_an_object",
            Corruption::MissingCategory => "missing_category",
            Corruption::UnknownCategory => "unknown_category",
            Corruption::NullTimestamp => "rule_failed",
            Corruption::MissingProperties => "missing_properties",
        }
    }
}

/// The category the generator sends that the registry does not know (a real Defender table
/// that does not stream): it lands in an untyped table of this name.
pub const NEW_CATEGORY_TABLE: &str = "DeviceTvmSoftwareInventory";

pub struct Generator {
    rng: SmallRng,
    opts: GenerateOptions,
    tables: Vec<Category>,
    cumulative: Vec<u32>,
    serial: u64,
}

fn hex(rng: &mut SmallRng, n: usize) -> String {
    let mut s = String::with_capacity(n);
    for _ in 0..n {
        s.push(char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'));
    }
    s
}

fn guid(rng: &mut SmallRng) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12)
    )
}

fn pick<'a>(rng: &mut SmallRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

/// A datetime as Defender writes it in `properties`: trailing zeros of the fraction trimmed
/// (0 to 7 digits), always `Z`.
fn defender_time(t: NaiveDateTime, ticks: u32) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = format!("{ticks:07}");
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    s.push('Z');
    s
}

const HOSTS: &[&str] = &[
    "wks-0142",
    "wks-0388",
    "srv-dc01",
    "srv-sql02",
    "mbp-jdoe",
    "ubuntu-build7",
    "wks-0917",
];
const USERS: &[&str] = &[
    "jdoe",
    "asmith",
    "svc-backup",
    "system",
    "root",
    "mlopez",
    "kchen",
];
const DOMAINS: &[&str] = &["contoso", "nt authority", "contoso.com", "wks-0142"];
const PROCS: &[&str] = &[
    "powershell.exe",
    "cmd.exe",
    "svchost.exe",
    "chrome.exe",
    "python3.11",
    "msedge.exe",
    "rundll32.exe",
    "bash",
];
const FOLDERS: &[&str] = &[
    "C:\\Windows\\System32",
    "C:\\Program Files\\Google\\Chrome\\Application",
    "C:\\Users\\jdoe\\AppData\\Local\\Temp",
    "/usr/bin",
    "/Applications/Microsoft Defender.app/Contents/MacOS",
];
const ACTIONS: &[&str] = &[
    "ProcessCreated",
    "ConnectionSuccess",
    "FileCreated",
    "RegistryValueSet",
    "LogonSuccess",
    "ImageLoaded",
    "FileModified",
];

impl Generator {
    pub fn new(opts: GenerateOptions) -> Self {
        let tables: Vec<Category> = Category::all().collect();
        let mut acc = 0;
        let cumulative = tables
            .iter()
            .map(|c| {
                acc += weight(c.table_name());
                acc
            })
            .collect();
        Generator {
            rng: SmallRng::seed_from_u64(opts.seed),
            opts,
            tables,
            cumulative,
            serial: 0,
        }
    }

    fn next_table(&mut self) -> Category {
        self.serial += 1;
        // Every table appears in the first 26 records, then the weighted mix.
        if (self.serial as usize) <= self.tables.len() {
            return self.tables[self.serial as usize - 1];
        }
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = self.rng.random_range(0..total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.tables[i.min(self.tables.len() - 1)]
    }

    fn event_time(&mut self) -> NaiveDateTime {
        let midnight = self.opts.date.and_hms_opt(0, 0, 0).unwrap_or_default();
        midnight - Duration::seconds(self.rng.random_range(1..86_400))
    }

    fn long_text(&mut self, base: &str) -> String {
        if self.opts.small {
            return base.to_owned();
        }
        let mut s = base.to_owned();
        let n = self.rng.random_range(0..4);
        for _ in 0..n {
            let _ = write!(
                s,
                " --opt-{} {}",
                hex(&mut self.rng, 4),
                hex(&mut self.rng, 16)
            );
        }
        s
    }

    /// A value for one column, as JSON text, or None to send null / omit it.
    fn value(
        &mut self,
        table: &str,
        name: &str,
        ty: KustoType,
        ts: NaiveDateTime,
    ) -> Option<String> {
        let rng = &mut self.rng;
        let lname = name.to_ascii_lowercase();
        if name != "Timestamp" && rng.random_bool(0.12) {
            return None;
        }
        let s = |v: &str| serde_json::to_string(v).unwrap_or_default();
        Some(match ty {
            KustoType::Datetime => {
                let t = if name == "Timestamp" {
                    ts
                } else {
                    ts - Duration::seconds(rng.random_range(0..3600))
                };
                // real data: 0, 3, 5, 6 or 7 fractional digits, trailing zeros trimmed
                let ticks = match rng.random_range(0..5) {
                    0 => 0,
                    1 => rng.random_range(0..1000) * 10_000,
                    2 => rng.random_range(0..100_000) * 100,
                    3 => rng.random_range(0..1_000_000) * 10,
                    _ => rng.random_range(0..10_000_000),
                };
                s(&defender_time(t, ticks))
            }
            KustoType::Bool => {
                // IsAdminOperation arrives as "0" as well as false
                if name == "IsAdminOperation" && rng.random_bool(0.3) {
                    s("0")
                } else {
                    rng.random_bool(0.2).to_string()
                }
            }
            KustoType::Int => {
                if name == "IsFirstContact" {
                    // documented int, sent as a bool
                    rng.random_bool(0.1).to_string()
                } else if lname.contains("port") {
                    rng.random_range(1..65535).to_string()
                } else {
                    rng.random_range(0..100).to_string()
                }
            }
            KustoType::Long => {
                if name == "ReportId" {
                    // Device ReportIds exceed 2^53 on some tables
                    if rng.random_bool(0.3) {
                        (639_199_803_770_463_703i64 + rng.random_range(0..1_000_000)).to_string()
                    } else {
                        rng.random_range(1..90_000).to_string()
                    }
                } else if lname.contains("size") {
                    rng.random_range(1_000..50_000_000).to_string()
                } else if lname.ends_with("id") {
                    rng.random_range(4..99_999).to_string()
                } else {
                    rng.random_range(0..1_000_000).to_string()
                }
            }
            KustoType::Real | KustoType::Double => format!("{:.3}", rng.random_range(0.0..100.0)),
            KustoType::Dynamic => match rng.random_range(0..3) {
                0 => format!(
                    r#"{{"Count":"{}","Source":"{}"}}"#,
                    rng.random_range(1..9),
                    pick(rng, HOSTS)
                ),
                1 => format!(r#"["{}","{}"]"#, pick(rng, USERS), pick(rng, USERS)),
                // dynamic sent as a JSON string
                _ => s(&format!(
                    r#"{{"IsSatelliteProvider":{}}}"#,
                    rng.random_bool(0.5)
                )),
            },
            KustoType::String | KustoType::Guid => {
                if name == "ReportId" {
                    s(&format!(
                        "{}-{}-1",
                        guid(rng),
                        rng.random_range(1_000_000_000_000u64..9_999_999_999_999)
                    ))
                } else if name == "AdditionalFields" {
                    // JSON text inside a string column
                    s(&format!(
                        r#"{{"ProcessPosixEffectiveUser":{{"Name":"{}","PosixUserId":{}}},"InitiatingProcessPosixProcessGroupId":{}}}"#,
                        pick(rng, USERS),
                        rng.random_range(0..600),
                        rng.random_range(1..99_999)
                    ))
                } else if table == "EmailEvents" && (name == "To" || name == "Cc") {
                    // documented string, sent as an array
                    format!(r#"["{}@contoso.com"]"#, pick(rng, USERS))
                } else if lname.contains("sha256") {
                    s(&hex(rng, 64))
                } else if lname.contains("sha1") || name == "DeviceId" {
                    s(&hex(rng, 40))
                } else if lname.contains("md5") {
                    s(&hex(rng, 32))
                } else if lname.ends_with("commandline") {
                    let p = pick(rng, PROCS);
                    let base = format!(
                        "{p} -NoProfile -ExecutionPolicy Bypass -File \"C:\\ProgramData\\Microsoft\\Windows Defender Advanced Threat Protection\\Downloads\\script-{}.ps1\"",
                        hex(rng, 8)
                    );
                    s(&self.long_text(&base))
                } else if lname.ends_with("filename") {
                    s(pick(rng, PROCS))
                } else if lname.ends_with("folderpath") || lname.ends_with("path") {
                    s(&format!("{}\\{}", pick(rng, FOLDERS), pick(rng, PROCS)))
                } else if lname.contains("ip")
                    && !lname.contains("tip")
                    && !lname.contains("description")
                {
                    if rng.random_bool(0.2) {
                        s(&format!(
                            "2001:db8:{:x}::{:x}",
                            rng.random_range(0..0xffff),
                            rng.random_range(0..0xffff)
                        ))
                    } else {
                        s(&format!(
                            "10.{}.{}.{}",
                            rng.random_range(0..255),
                            rng.random_range(0..255),
                            rng.random_range(1..255)
                        ))
                    }
                } else if lname.contains("devicename") || lname.contains("hostname") {
                    s(pick(rng, HOSTS))
                } else if lname.contains("accountname") || lname.contains("username") {
                    s(pick(rng, USERS))
                } else if lname.contains("domain") {
                    s(pick(rng, DOMAINS))
                } else if lname.contains("sid") {
                    s(&format!(
                        "S-1-5-21-{}-{}-{}-{}",
                        rng.random_range(1_000_000_000u64..4_000_000_000),
                        rng.random_range(1_000_000_000u64..4_000_000_000),
                        rng.random_range(1_000_000_000u64..4_000_000_000),
                        rng.random_range(500..3000)
                    ))
                } else if lname.ends_with("id")
                    || lname.ends_with("objectid")
                    || matches!(ty, KustoType::Guid)
                {
                    s(&guid(rng))
                } else if name == "ActionType" {
                    s(pick(rng, ACTIONS))
                } else if lname.contains("url") {
                    s(&format!(
                        "https://{}.example.com/{}",
                        pick(rng, HOSTS),
                        hex(rng, 12)
                    ))
                } else if lname.contains("email")
                    || lname.contains("upn")
                    || lname.contains("address")
                {
                    s(&format!("{}@contoso.com", pick(rng, USERS)))
                } else {
                    s(&format!("{}-{}", name, hex(rng, 6)))
                }
            }
        })
    }

    /// One record's JSON text (an envelope with `properties`).
    fn record(&mut self, cat: Category, corruption: Option<Corruption>) -> String {
        let table = cat.table();
        let ts = self.event_time();
        let received = ts + Duration::seconds(self.rng.random_range(5..300));
        let ticks = self.rng.random_range(0..10_000_000);
        let mut props = String::from("{");
        let mut first = true;
        for c in &table.columns {
            let mut v = self.value(&table.name, &c.name, c.ty, ts);
            if c.name == "Timestamp" && matches!(corruption, Some(Corruption::NullTimestamp)) {
                v = None;
            }
            let key = match c.name.as_str() {
                // wire spellings that differ from the documented ones
                "Isp" => "ISP",
                "ThreadSubtype" => "ThreadSubType",
                n => n,
            };
            match v {
                None if omits_nulls(&table.name) && c.name != "Timestamp" => continue,
                None => {
                    if !first {
                        props.push(',');
                    }
                    let _ = write!(props, r#""{key}":null"#);
                }
                Some(v) => {
                    if !first {
                        props.push(',');
                    }
                    let _ = write!(props, r#""{key}":{v}"#);
                }
            }
            first = false;
        }
        props.push('}');
        let category = match corruption {
            Some(Corruption::UnknownCategory) => format!("AdvancedHunting-{NEW_CATEGORY_TABLE}"),
            _ => cat.wire_name().to_owned(),
        };
        // Email tables send _TimeReceivedBySvc without the Z
        let svc = format!(
            "{}.{:07}{}",
            received.format("%Y-%m-%dT%H:%M:%S"),
            self.rng.random_range(0..10_000_000),
            if table.name.starts_with("Email") {
                ""
            } else {
                "Z"
            }
        );
        let mut rec = format!(
            r#"{{"time":"{}","tenantId":"{TENANT}","operationName":"Publish""#,
            defender_time(received + Duration::seconds(30), ticks.max(1))
        );
        if !matches!(corruption, Some(Corruption::MissingCategory)) {
            let _ = write!(rec, r#","category":"{category}""#);
        }
        let _ = write!(rec, r#","_TimeReceivedBySvc":"{svc}""#);
        if !matches!(corruption, Some(Corruption::MissingProperties)) {
            let _ = write!(rec, r#","properties":{props}"#);
        }
        rec.push_str(r#","Tenant":"DefaultTenant"}"#);
        match corruption {
            Some(Corruption::Truncated) => {
                let cut = rec.len() * 2 / 3;
                let mut cut = cut.max(1);
                while !rec.is_char_boundary(cut) {
                    cut -= 1;
                }
                rec.truncate(cut);
                rec
            }
            Some(Corruption::NotAnObject) => format!("[{rec}]"),
            _ => rec,
        }
    }

    fn corruption(&mut self) -> Option<Corruption> {
        if self.opts.corrupt_rate > 0.0 && self.rng.random_bool(self.opts.corrupt_rate.min(1.0)) {
            Some(Corruption::ALL[self.rng.random_range(0..Corruption::ALL.len())])
        } else {
            None
        }
    }

    /// Storage-export form: one blob path per table and hour, CRLF lines.
    pub fn storage(&mut self, out: &Path) -> std::io::Result<Expected> {
        let mut exp = Expected::default();
        let mut blobs: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        // hours of the day with data: enough that a blob holds ~50 records, 1 to 24
        let hours = (self.opts.records / (26 * 50)).clamp(1, 24) as u32;
        for _ in 0..self.opts.records {
            let cat = self.next_table();
            let corruption = self.corruption();
            let mut line = self.record(cat, corruption).into_bytes();
            if matches!(corruption, Some(Corruption::InvalidUtf8)) {
                let at = line.len() / 2;
                line.splice(at..at, [0xff, 0xfe]);
            }
            match corruption {
                // a category the registry does not know, with a plausible name: its own table
                Some(Corruption::UnknownCategory) => {
                    *exp.typed_rows.entry(NEW_CATEGORY_TABLE.into()).or_default() += 1
                }
                Some(c) => *exp.dead_letters.entry(c.reason().into()).or_default() += 1,
                None => *exp.typed_rows.entry(cat.table_name().into()).or_default() += 1,
            }
            exp.records += 1;
            let hour = 23 - self.rng.random_range(0..hours);
            let d = self.opts.date - Duration::days(1);
            let path = out.join(&cat.table().container).join(format!(
                "tenantId={TENANT}/y={}/m={}/d={}/h={hour:02}/m=00/PT1H.json",
                d.format("%Y"),
                d.format("%m"),
                d.format("%d")
            ));
            let buf = blobs.entry(path).or_default();
            buf.extend_from_slice(&line);
            buf.extend_from_slice(b"\r\n");
        }
        for (path, bytes) in blobs {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, &bytes)?;
            exp.bytes += bytes.len() as u64;
            exp.files.push(path);
        }
        Ok(exp)
    }

    /// Event Hub form: bodies of up to 40 records, one body per line. Corruption hits single
    /// records inside a body (the body stays valid), except a truncated body, which the
    /// pipeline sees as one invalid record.
    pub fn eventhub(&mut self, out: &Path) -> std::io::Result<Expected> {
        let mut exp = Expected::default();
        std::fs::create_dir_all(out)?;
        let path = out.join("eventhub-bodies.jsonl");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut left = self.opts.records;
        while left > 0 {
            let n = self.rng.random_range(1..=40).min(left);
            left -= n;
            let truncate_body = self.opts.corrupt_rate > 0.0
                && self
                    .rng
                    .random_bool((self.opts.corrupt_rate / 4.0).min(1.0));
            let mut body = String::from(r#"{"records":["#);
            let mut body_exp: Vec<(String, bool)> = Vec::new();
            for i in 0..n {
                let cat = self.next_table();
                let corruption = match self.corruption() {
                    // bytes inside a body are UTF-8 as a whole; truncation is per body here
                    Some(Corruption::InvalidUtf8 | Corruption::Truncated) => {
                        Some(Corruption::MissingProperties)
                    }
                    c => c,
                };
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&self.record(cat, corruption));
                body_exp.push(match corruption {
                    Some(Corruption::UnknownCategory) => (NEW_CATEGORY_TABLE.into(), true),
                    Some(c) => (c.reason().into(), false),
                    None => (cat.table_name().into(), true),
                });
            }
            body.push_str("]}");
            if truncate_body {
                body.truncate(body.len() - 7);
                exp.records += 1;
                *exp.dead_letters.entry("invalid_json".into()).or_default() += 1;
            } else {
                exp.records += n as u64;
                for (k, typed) in body_exp {
                    if typed {
                        *exp.typed_rows.entry(k).or_default() += 1;
                    } else {
                        *exp.dead_letters.entry(k).or_default() += 1;
                    }
                }
            }
            file.write_all(body.as_bytes())?;
            file.write_all(b"\n")?;
            exp.bytes += body.len() as u64 + 1;
        }
        file.flush()?;
        exp.files.push(path);
        Ok(exp)
    }
}

/// Writes the dataset (and `_manifest.json`, which `ingest` skips) under `out`.
pub fn write_dataset(out: &Path, form: Form, opts: &GenerateOptions) -> std::io::Result<Manifest> {
    let mut g = Generator::new(opts.clone());
    let mut m = Manifest {
        seed: opts.seed,
        ..Default::default()
    };
    if matches!(form, Form::Storage | Form::Both) {
        m.storage = Some(g.storage(&out.join("storage"))?);
    }
    if matches!(form, Form::Eventhub | Form::Both) {
        m.eventhub = Some(g.eventhub(&out.join("eventhub"))?);
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("_manifest.json"),
        serde_json::to_string_pretty(&m).unwrap_or_default() + "\n",
    )?;
    Ok(m)
}
