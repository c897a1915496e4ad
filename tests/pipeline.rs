//! The pipeline end to end on local lakes: conservation on generated data, our own fixtures
//! and every quirk, the real Defender samples, re-runs and grown files, hostile input.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::*;
use xdr_ingest::deltalake::arrow::array::{Array, AsArray};
use xdr_ingest::deltalake::arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use xdr_ingest::generate::{Form, GenerateOptions, Manifest, write_dataset};
use xdr_ingest::ingest::FileOptions;
use xdr_ingest::pipeline::PipelineConfig;

fn gen_opts(records: usize, corrupt: f64, seed: u64) -> GenerateOptions {
    GenerateOptions {
        records,
        corrupt_rate: corrupt,
        seed,
        date: chrono::Utc::now().date_naive(),
        small: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conservation_on_generated_data_with_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m: Manifest = write_dataset(&data, Form::Both, &gen_opts(1200, 0.03, 7)).unwrap();
    let lake = local_lake(&dir.path().join("lake"));
    let cfg = PipelineConfig::default();

    let mut expected_typed: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_dead: BTreeMap<String, u64> = BTreeMap::new();
    for (form, e) in [
        ("storage", m.storage.unwrap()),
        ("eventhub", m.eventhub.unwrap()),
    ] {
        // per form: the run's own counts match the generator's, record for record
        let (stats, _) =
            ingest_paths(&lake, &[data.join(form)], &cfg, &FileOptions::default()).await;
        assert_eq!(stats.records, e.records, "{form}: records");
        assert!(stats.conserved(), "{form}: {stats:?}");
        assert_eq!(
            stats.typed_rows, e.typed_rows,
            "{form}: typed rows per table"
        );
        assert_eq!(
            stats.dead_letters, e.dead_letters,
            "{form}: dead letters per reason"
        );
        assert!(
            e.dead_letters.values().sum::<u64>() > 10,
            "{form}: corruption was injected"
        );
        for (k, v) in e.typed_rows {
            *expected_typed.entry(k).or_default() += v;
        }
        for (k, v) in e.dead_letters {
            *expected_dead.entry(k).or_default() += v;
        }
    }
    // and the lake holds exactly that: all 26 tables, and the generator's category the
    // registry does not know in a table of its own
    let rows = lake_rows(&lake).await;
    assert_eq!(non_meta(&rows), expected_typed);
    assert_eq!(expected_typed.len(), 27);
    assert!(expected_typed.contains_key(xdr_ingest::generate::NEW_CATEGORY_TABLE));
    assert_eq!(rows["_dead_letters"], expected_dead.values().sum::<u64>());
    assert_eq!(dead_by_reason(&lake).await, expected_dead);
    assert_no_duplicates(&lake).await;

    // file statistics are kept for event time and lineage only (every column's made each
    // commit slower as the table grew), and readers get them for every file
    let log = dir.path().join("lake/DeviceProcessEvents/_delta_log");
    let mut adds = 0;
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(cols) =
                action["metaData"]["configuration"]["delta.dataSkippingStatsColumns"].as_str()
            {
                assert_eq!(cols, "Timestamp,_time,_source,_position,_ingested_at");
            }
            if let Some(stats) = action["add"]["stats"].as_str() {
                let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
                let mut with_min: Vec<&str> = stats["minValues"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                with_min.sort();
                assert_eq!(
                    with_min,
                    ["Timestamp", "_ingested_at", "_position", "_source", "_time"]
                );
                adds += 1;
            }
        }
    }
    assert!(adds >= 2, "{adds} files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_fixtures_cover_every_table_and_quirk() {
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let (stats, _) = ingest_paths(
        &lake,
        &[repo().join("tests/fixtures")],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    assert_eq!(stats.dead_total(), 0, "{:?}", stats.dead_letters);
    assert_eq!(stats.typed_rows.len(), 26, "every table has a fixture");
    assert_eq!(stats.rescued_total(), 0, "{:?}", stats.rescued_values);

    // Quirks, value by value (tests/fixtures/quirks.jsonl).
    let info = &read(&lake, "DeviceInfo").await;
    let row = |name: &str| -> Vec<(String, String)> {
        let mut out = vec![];
        for b in info {
            let names = b.column_by_name("DeviceName").unwrap().as_string::<i32>();
            for i in 0..b.num_rows() {
                if names.value(i) == name {
                    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                        let v = match f.name().as_str() {
                            _ if c.is_null(i) => "null".to_string(),
                            "ReportId" => c.as_primitive::<Int64Type>().value(i).to_string(),
                            "Timestamp" => c
                                .as_primitive::<TimestampMicrosecondType>()
                                .value(i)
                                .to_string(),
                            _ => match c.data_type() {
                                xdr_ingest::deltalake::arrow::datatypes::DataType::Utf8 => {
                                    c.as_string::<i32>().value(i).to_string()
                                }
                                _ => "?".into(),
                            },
                        };
                        out.push((f.name().clone(), v));
                    }
                }
            }
        }
        out
    };
    let q = row("quirk-host");
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // ReportId above 2^53, exact
    assert_eq!(get("ReportId"), "639199803770463703");
    // 7 fractional digits, truncated to µs: 2026-07-18T14:05:55.5105137Z
    assert_eq!(get("Timestamp"), "1784383555510513");
    // JSON text inside a string column stays the text
    assert_eq!(
        get("LoggedOnUsers"),
        r#"[{"UserName":"admin","DomainName":"CONTOSO","Sid":"S-1-5-21-1"}]"#
    );
    // omitted keys are null
    assert_eq!(get("Vendor"), "null");

    // ISP on the wire fills the documented Isp; native JSON in dynamic is kept compact
    let cae = &read(&lake, "CloudAppEvents").await;
    let mut found = false;
    for b in cae {
        let isp = b.column_by_name("Isp").unwrap().as_string::<i32>();
        let objs = b
            .column_by_name("ActivityObjects")
            .unwrap()
            .as_string::<i32>();
        let raw_data = b.column_by_name("RawEventData").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if !isp.is_null(i) && isp.value(i) == "Quirk ISP" {
                found = true;
                assert_eq!(
                    objs.value(i),
                    r#"[{"Type":"User","Role":"Actor","Name":"A B"}]"#
                );
                // a dynamic column sent as a JSON string is stored as the same compact text
                assert_eq!(raw_data.value(i), r#"{"a":[1,2],"b":"x y"}"#);
            }
        }
    }
    assert!(found, "the CloudAppEvents quirk row is there");

    // every precision from 0 to 7 digits parses (tests/fixtures/quirks.jsonl, UrlClickEvents)
    let clicks = &read(&lake, "UrlClickEvents").await;
    let mut micros = vec![];
    for b in clicks {
        let ts = b
            .column_by_name("Timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let url = b.column_by_name("Url").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if url.value(i).starts_with("https://precision.example/") {
                micros.push(ts.value(i) % 1_000_000);
            }
        }
    }
    micros.sort();
    assert_eq!(
        micros,
        vec![
            0, 100_000, 120_000, 123_000, 123_400, 123_450, 123_456, 123_456
        ]
    );

    // EmailEvents: To/Cc arrays into string columns are their JSON text; IsFirstContact bool into int
    let email = &read(&lake, "EmailEvents").await;
    let mut checked = false;
    for b in email {
        let to = b.column_by_name("To").unwrap().as_string::<i32>();
        let first = b
            .column_by_name("IsFirstContact")
            .unwrap()
            .as_primitive::<Int32Type>();
        let subject = b.column_by_name("Subject").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            if !subject.is_null(i) && subject.value(i) == "quirk mail" {
                assert_eq!(to.value(i), r#"["a@contoso.com","b@contoso.com"]"#);
                assert_eq!(first.value(i), 1);
                checked = true;
            }
        }
    }
    assert!(checked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_defender_samples_all_land_typed() {
    let Some(samples) = real_samples() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = local_lake(dir.path());
    let (stats, outs) = ingest_paths(
        &lake,
        &[samples],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    assert_eq!(outs.len(), 26);
    assert_eq!(stats.records, 31);
    assert_eq!(stats.dead_total(), 0, "{:?}", stats.dead_letters);
    assert_eq!(stats.typed_total(), 31);
    assert_eq!(stats.typed_rows.len(), 26);
    let rows = lake_rows(&lake).await;
    assert_eq!(non_meta(&rows).values().sum::<u64>(), 31);
    assert!(!rows.contains_key("_dead_letters"));
    for table in non_meta(&rows).keys() {
        for b in read(&lake, table).await {
            let ts = b.column_by_name("Timestamp").unwrap();
            assert_eq!(ts.null_count(), 0, "{table}: every Timestamp parsed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_is_a_noop_and_appended_lines_are_added_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_dataset(&data, Form::Storage, &gen_opts(300, 0.0, 3)).unwrap();
    let lake = local_lake(&dir.path().join("lake"));
    let cfg = PipelineConfig::default();
    // small chunks: several commits per file
    let opts = FileOptions {
        chunk_bytes: 16 * 1024,
    };
    let (first, _) = ingest_paths(&lake, std::slice::from_ref(&data), &cfg, &opts).await;
    let before = lake_rows(&lake).await;
    assert_eq!(non_meta(&before).values().sum::<u64>(), first.typed_total());

    let (again, outs) = ingest_paths(&lake, std::slice::from_ref(&data), &cfg, &opts).await;
    assert_eq!(again.records, 0, "nothing is read twice");
    assert!(outs.iter().all(|o| o.start == o.end));
    assert_eq!(lake_rows(&lake).await, before);

    // append three lines (one without a final newline) to one file
    let files = xdr_ingest::source::file::collect_inputs(std::slice::from_ref(&data)).unwrap();
    let file = files[0].clone();
    // three different records (identical ones would be held once: in-batch dedup)
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let lines: Vec<&str> = texts.iter().flat_map(|t| t.lines()).take(3).collect();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    write!(f, "{}\r\n{}\r\n{}", lines[0], lines[1], lines[2]).unwrap();
    drop(f);
    let (grown, outs) = ingest_paths(&lake, std::slice::from_ref(&data), &cfg, &opts).await;
    assert_eq!(grown.records, 3);
    assert_eq!(outs.iter().filter(|o| o.end > o.start).count(), 1);
    assert_eq!(grown.duplicates_total(), 0);
    let after = lake_rows(&lake).await;
    assert_eq!(
        non_meta(&after).values().sum::<u64>(),
        non_meta(&before).values().sum::<u64>() + 3
    );
    assert_no_duplicates(&lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_lands_where_design_says() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"time":"2026-07-18T14:08:10.0236840Z","tenantId":"t","category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-07-18T14:05:55.510513Z","DeviceName":"h"}}"#;
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice("\u{feff}".as_bytes()); // BOM on the first line
    input.extend_from_slice(good.as_bytes());
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"{\"category\":\"AdvancedHunting-DeviceInfo\",\"properties\":{\"DeviceName\":\"\xff\xfe\"}}\n"); // invalid UTF-8
    input.extend_from_slice(&good.as_bytes()[..good.len() - 9]); // truncated
    input.extend_from_slice(b"\n");
    // a 50 MB line
    input.extend_from_slice(
        b"{\"category\":\"AdvancedHunting-DeviceInfo\",\"properties\":{\"AdditionalFields\":\"",
    );
    input.extend(std::iter::repeat_n(b'a', 50 * 1024 * 1024));
    input.extend_from_slice(b"\"}}\n");
    // deep nesting inside a property: kept as text, no crash
    let deep = format!(
        r#"{{"category":"AdvancedHunting-DeviceInfo","properties":{{"Timestamp":"2026-07-18T14:05:55Z","DeviceName":"deep","AdditionalFields":{}1{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    input.extend_from_slice(deep.as_bytes());
    input.extend_from_slice(b"\n");
    // integers beyond i64: rescued from a long column, kept exact in a string column
    input.extend_from_slice(br#"{"category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-07-18T14:05:55Z","DeviceName":"bigint","ReportId":123456789012345678901234567890,"OSVersion":98765432109876543210}}"#);
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"[1,2,3]\n42\n\"text\"\n"); // not objects
    input.extend_from_slice(br#"{"properties":{"Timestamp":"2026-07-18T14:05:55Z"}}"#); // no category
    input.extend_from_slice(b"\n");
    // a new category without a Timestamp (no `_date` for its table): a dead letter
    input.extend_from_slice(br#"{"category":"AdvancedHunting-Nope","properties":{}}"#);
    input.extend_from_slice(b"\n");
    // a category that is not a plausible table name: a dead letter
    input.extend_from_slice(br#"{"category":"AdvancedHunting-../../etc","properties":{"Timestamp":"2026-07-18T14:05:55Z"}}"#);
    input.extend_from_slice(b"\n\n   \n"); // blank lines are not records
    input.extend_from_slice(
        br#"{"category":"AdvancedHunting-DeviceInfo","properties":{"DeviceName":"no timestamp"}}"#,
    );
    input.extend_from_slice(b"\n");
    let path = dir.path().join("hostile.json");
    std::fs::write(&path, &input).unwrap();
    drop(input);

    let lake = local_lake(&dir.path().join("lake"));
    let (stats, _) = ingest_paths(
        &lake,
        &[path],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    assert_eq!(stats.records, 13);
    assert!(stats.conserved());
    assert_eq!(
        stats.typed_rows["DeviceInfo"], 3,
        "BOM line, deep nesting, big integers"
    );
    let dead: BTreeMap<&str, u64> = [
        ("invalid_utf8", 1),
        ("invalid_json", 1),
        ("oversized", 1),
        ("not_an_object", 3),
        ("missing_category", 1),
        ("unknown_category", 1),
        ("rule_failed", 2),
    ]
    .into();
    let dead: BTreeMap<String, u64> = dead.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(stats.dead_letters, dead);
    assert_eq!(dead_by_reason(&lake).await, dead);
    assert_eq!(stats.rescued_values["DeviceInfo"], 1);

    let mut seen = 0;
    for b in read(&lake, "DeviceInfo").await {
        let names = b.column_by_name("DeviceName").unwrap().as_string::<i32>();
        let rescued = b.column_by_name("_rescued").unwrap().as_string::<i32>();
        let osv = b.column_by_name("OSVersion").unwrap().as_string::<i32>();
        let report = b.column_by_name("ReportId").unwrap();
        for i in 0..b.num_rows() {
            if names.value(i) == "bigint" {
                seen += 1;
                assert!(report.is_null(i));
                assert_eq!(
                    rescued.value(i),
                    r#"{"ReportId":123456789012345678901234567890}"#
                );
                assert_eq!(osv.value(i), "98765432109876543210");
            }
        }
    }
    assert_eq!(seen, 1);
    // the oversized record's dead letter keeps a bounded prefix, not 50 MB
    for b in read(&lake, "_dead_letters").await {
        let raw = b.column_by_name("_raw").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(raw.value(i).len() <= 64 * 1024);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spanning_several_dates_lands_in_each_partition() {
    // one batch, one table, three event dates (today, yesterday, three days ago): the sink's
    // one-partition fast path must not apply; delta-rs splits the batch by `_date`
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let mut text = String::new();
    for (i, days) in [0i64, 1, 3, 1, 0].iter().enumerate() {
        let ts = (now - chrono::Duration::days(*days)).format("%Y-%m-%dT%H:%M:%S%.3fZ");
        text.push_str(&format!(
            r#"{{"time":"{ts}","tenantId":"t","category":"AdvancedHunting-DeviceEvents","properties":{{"Timestamp":"{ts}","DeviceId":"d","ActionType":"X","DeviceName":"h{i}"}}}}"#
        ));
        text.push('\n');
    }
    let input = dir.path().join("in.json");
    std::fs::write(&input, text).unwrap();
    let lake = local_lake(&dir.path().join("lake"));
    let (stats, _) = ingest_paths(
        &lake,
        &[input],
        &PipelineConfig::default(),
        &FileOptions::default(),
    )
    .await;
    assert_eq!(stats.typed_total(), 5);
    assert_eq!(non_meta(&lake_rows(&lake).await)["DeviceEvents"], 5);
    let mut partitions: Vec<String> = std::fs::read_dir(dir.path().join("lake/DeviceEvents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("_date="))
        .collect();
    partitions.sort();
    let day = |d: i64| {
        format!(
            "_date={}",
            (now - chrono::Duration::days(d)).format("%Y-%m-%d")
        )
    };
    assert_eq!(partitions, [day(3), day(1), day(0)]);
}
