//! The Functions custom handler through real HTTP, with requests shaped exactly as the host
//! sends them (azure-functions.md): Event Hub batches, blobs growing on a real Azurite,
//! the sweep, replay, and the readiness probe of the real binary.

#[path = "common/azurite.rs"]
mod azurite;
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use xdr_ingest::handler::{AppState, HandlerSettings, serve};
use xdr_ingest::sink::LakeSettings;

async fn start_server(settings: HandlerSettings) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(settings).unwrap();
    tokio::spawn(serve(listener, state));
    format!("http://{addr}")
}

fn settings(lake: &std::path::Path) -> HandlerSettings {
    let mut s = HandlerSettings::from_env().unwrap();
    s.lake = lake.to_str().unwrap().to_owned();
    // commit at once (the linger's own test sets one)
    s.commit_linger = Duration::ZERO;
    s
}

/// The host's request for an Event Hub batch: arrays JSON-encoded inside strings, enqueued
/// times without a zone.
fn eventhub_request(partition: &str, events: &[(i64, String)]) -> Value {
    let bodies: Vec<&str> = events.iter().map(|(_, b)| b.as_str()).collect();
    let seqs: Vec<i64> = events.iter().map(|(s, _)| *s).collect();
    let times: Vec<String> = events
        .iter()
        .map(|_| "2026-11-26T10:00:01.31".to_owned())
        .collect();
    json!({
        "Data": {"events": serde_json::to_string(&bodies).unwrap()},
        "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": "xdr-test.servicebus.windows.net", "EventHubName": "defender",
                                 "ConsumerGroup": "xdr-ingest", "PartitionId": partition, "IsCheckpointingAfterInvocation": true},
            "PartitionKeyArray": serde_json::to_string(&vec![Value::Null; events.len()]).unwrap(),
            "OffsetArray": serde_json::to_string(&seqs.iter().map(|s| (s * 4096).to_string()).collect::<Vec<_>>()).unwrap(),
            "SequenceNumberArray": serde_json::to_string(&seqs).unwrap(),
            "EnqueuedTimeUtcArray": serde_json::to_string(&times).unwrap(),
            "PropertiesArray": serde_json::to_string(&vec![json!({}); events.len()]).unwrap(),
            "sys": {"MethodName": "EventHubIngest", "UtcNow": "2026-11-26T10:00:02.12Z", "RandGuid": "00000000-0000-0000-0000-000000000000"}
        }
    })
}

fn events(n: i64) -> Vec<(i64, String)> {
    (0..n)
        .map(|i| {
            let recs: Vec<String> = (0..2)
                .map(|j| {
                    let t = ["DeviceProcessEvents", "DeviceNetworkEvents"][((i + j) % 2) as usize];
                    format!(r#"{{"time":"2026-11-26T09:59:00Z","category":"AdvancedHunting-{t}","properties":{{"Timestamp":"2026-11-26T09:58:00Z","DeviceName":"d{i}-{j}"}}}}"#)
                })
                .collect();
            (1000 + i, format!(r#"{{"records":[{}]}}"#, recs.join(",")))
        })
        .collect()
}

async fn post(base: &str, function: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/{function}"))
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "X-Azure-Functions-InvocationId",
            "6d3bfa2c-0000-0000-0000-000000000001",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(v.is_object(), "always a JSON object: {text}");
    (status, v)
}

async fn typed_total(lake: &std::path::Path) -> u64 {
    non_meta(&lake_rows(&local_lake(lake)).await).values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hub_batches_land_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let base = start_server(settings(dir.path())).await;
    let evs = events(60);

    let (status, resp) = post(&base, "EventHubIngest", &eventhub_request("3", &evs[0..30])).await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp["Logs"][0].as_str().unwrap().contains("60 records"),
        "{resp}"
    );
    assert_eq!(typed_total(dir.path()).await, 60);

    // redelivery with shifted boundaries
    for (a, b) in [(10, 40), (0, 60), (59, 60)] {
        let (status, _) = post(&base, "EventHubIngest", &eventhub_request("3", &evs[a..b])).await;
        assert_eq!(status, 200);
    }
    assert_eq!(typed_total(dir.path()).await, 120);
    let lake = local_lake(dir.path());
    assert_no_duplicates(&lake).await;
    // positions are the sequence numbers, enqueued times are UTC
    let keys = row_keys(&lake, "DeviceProcessEvents").await;
    assert!(keys.iter().all(|(src, pos, _)| src
        == "eventhub://xdr-test.servicebus.windows.net/defender/3"
        && (1000..1060).contains(pos)));

    // a batch far above axum's default 2 MB body limit (100 ordinary Defender events are
    // several MB) lands instead of being refused with 413 and redelivered forever
    let big: Vec<(i64, String)> = (0..40)
        .map(|i| {
            let pad = "x".repeat(100_000);
            (3000 + i, format!(r#"{{"records":[{{"time":"2026-11-26T09:59:00Z","category":"AdvancedHunting-DeviceProcessEvents","properties":{{"Timestamp":"2026-11-26T09:58:00Z","DeviceName":"big{i}","ProcessCommandLine":"{pad}"}}}}]}}"#))
        })
        .collect();
    let req = eventhub_request("3", &big);
    assert!(req.to_string().len() > 4_000_000);
    let (status, resp) = post(&base, "EventHubIngest", &req).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(typed_total(dir.path()).await, 160);

    // bad data is a dead letter and a 200, never a 500
    let bad = vec![
        (2000, "not json".to_owned()),
        (
            2001,
            r#"{"records":[{"category":"AdvancedHunting-Nope","properties":{}}]}"#.to_owned(),
        ),
    ];
    let (status, resp) = post(&base, "EventHubIngest", &eventhub_request("3", &bad)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(dead_by_reason(&lake).await.values().sum::<u64>(), 2);

    // a malformed envelope is a clear 4xx error, not a panic
    let (status, resp) = post(
        &base,
        "EventHubIngest",
        &json!({"Data": {"events": "[\"x\"]"}, "Metadata": {}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        resp["error"].as_str().unwrap().contains("PartitionContext"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_taking_over_one_partition_add_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_server(settings(dir.path())).await;
    let b = start_server(settings(dir.path())).await;
    let evs = events(80);
    tokio::join!(
        async {
            for w in evs.chunks(20) {
                assert_eq!(
                    post(&a, "EventHubIngest", &eventhub_request("5", w))
                        .await
                        .0,
                    200
                );
            }
        },
        // the new owner starts from the last checkpoint, as Event Hubs does: everything
        // before it was committed (here: nothing), then reads with other boundaries
        async {
            for w in evs.chunks(25) {
                assert_eq!(
                    post(&b, "EventHubIngest", &eventhub_request("5", w))
                        .await
                        .0,
                    200
                );
            }
        }
    );
    assert_eq!(typed_total(dir.path()).await, 160);
    assert_no_duplicates(&local_lake(dir.path())).await;
}

const CONTAINER: &str = "insights-logs-advancedhunting-deviceinfo";

fn line(name: &str) -> String {
    format!(
        r#"{{"time":"2026-11-26T10:00:00.0000000Z","tenantId":"t","category":"AdvancedHunting-DeviceInfo","properties":{{"Timestamp":"2026-11-26T09:59:00Z","DeviceName":"{name}"}}}}"#
    )
}

fn queue_message(url: &str) -> Value {
    // a queue trigger's string value arrives JSON-encoded inside the string
    json!({"Data": {"work": serde_json::to_string(&json!({"url": url}).to_string()).unwrap()}, "Metadata": {"DequeueCount": "1"}})
}

async fn device_names(lake: &std::path::Path) -> Vec<String> {
    use xdr_ingest::deltalake::arrow::array::AsArray;
    let mut names = vec![];
    for b in read(&local_lake(lake), "DeviceInfo").await {
        let c = b
            .column_by_name("DeviceName")
            .unwrap()
            .as_string::<i32>()
            .clone();
        names.extend(c.iter().flatten().map(str::to_owned));
    }
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_blob_sweep_and_replay_on_azurite() {
    let az = azurite::Azurite::start().await;
    az.create_container(CONTAINER).await;
    let now = chrono::Utc::now();
    let path = format!(
        "tenantId=t/{}m=00/PT1H.json",
        now.format("y=%Y/m=%m/d=%d/h=%H/")
    );
    az.create_append_blob(CONTAINER, &path).await;
    let url = format!("{}/{CONTAINER}/{path}", az.endpoint());

    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.defender_account = Some(azurite::ACCOUNT.into());
    s.containers = vec![CONTAINER.into()];
    s.blob_options = az.storage_options();
    s.blob_url_base = Some(az.endpoint());
    s.replay_allowlist = vec![(azurite::ACCOUNT.into(), CONTAINER.into())];
    s.lake_options = LakeSettings::default().storage_options;
    let base = start_server(s).await;

    // append 1: two lines and the start of a third
    let l3 = line("three");
    let (l3a, l3b) = l3.split_at(40);
    az.append(
        CONTAINER,
        &path,
        format!("{}\r\n{}\r\n{l3a}", line("one"), line("two")).as_bytes(),
    )
    .await;
    let (status, resp) = post(&base, "BlobIngest", &queue_message(&url)).await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp["Logs"][0]
            .as_str()
            .unwrap()
            .contains("partial line left"),
        "{resp}"
    );
    assert_eq!(device_names(dir.path()).await, vec!["one", "two"]);

    // append 2: the rest of the split line and a fourth
    az.append(
        CONTAINER,
        &path,
        format!("{l3b}\r\n{}\r\n", line("four")).as_bytes(),
    )
    .await;
    assert_eq!(post(&base, "BlobIngest", &queue_message(&url)).await.0, 200);
    assert_eq!(
        device_names(dir.path()).await,
        vec!["four", "one", "three", "two"]
    );

    // message 3 with no growth: nothing
    assert_eq!(post(&base, "BlobIngest", &queue_message(&url)).await.0, 200);
    assert_eq!(device_names(dir.path()).await.len(), 4);

    // append 3, found by the sweep, enqueued, ingested
    az.append(CONTAINER, &path, format!("{}\r\n", line("five")).as_bytes())
        .await;
    let (status, resp) = post(
        &base,
        "BlobSweep",
        &json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let work = resp["Outputs"]["outwork"].as_array().unwrap().clone();
    assert_eq!(work.len(), 1, "{resp}");
    assert_eq!(
        percent_encoding::percent_decode_str(work[0]["url"].as_str().unwrap()).decode_utf8_lossy(),
        url
    );
    let msg = json!({"Data": {"work": serde_json::to_string(&work[0].to_string()).unwrap()}, "Metadata": {}});
    assert_eq!(post(&base, "BlobIngest", &msg).await.0, 200);
    assert_eq!(device_names(dir.path()).await.len(), 5);
    // the sweep now finds nothing
    let (_, resp) = post(&base, "BlobSweep", &json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(resp["Outputs"]["outwork"].as_array().unwrap().len(), 0);

    // replay: an allow-listed blob is accepted (202) and enqueued; ingesting it again is a no-op
    let replay_req = |body: Value| json!({"Data": {"req": {"Url": "https://app/api/replay", "Method": "POST", "Query": {}, "Headers": {}, "Body": body.to_string()}}, "Metadata": {}});
    let (status, resp) = post(
        &base,
        "Replay",
        &replay_req(json!({"url": url, "start_offset": 0})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 202, "{resp}");
    let work = resp["Outputs"]["outwork"][0].clone();
    assert_eq!(work["start_offset"], 0);
    let msg = json!({"Data": {"work": serde_json::to_string(&work.to_string()).unwrap()}, "Metadata": {}});
    let (status, resp) = post(&base, "BlobIngest", &msg).await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp["Logs"][0]
            .as_str()
            .unwrap()
            .contains("0 rows written, 5 already in the lake"),
        "{resp}"
    );
    assert_eq!(device_names(dir.path()).await.len(), 5);
    assert_no_duplicates(&local_lake(dir.path())).await;

    // anything outside the allow list, or not a blob URL, is refused with a JSON error
    for (body, code) in [
        (
            json!({"url": format!("{}/other-container/x/PT1H.json", az.endpoint())}),
            403,
        ),
        (json!({"url": "https://evil.example.com/c/p.json"}), 400),
        (json!({"nourl": 1}), 400),
    ] {
        let (status, resp) = post(&base, "Replay", &replay_req(body)).await;
        assert_eq!(status, 200);
        assert_eq!(resp["Outputs"]["res"]["statusCode"], code, "{resp}");
        assert!(resp["Outputs"].get("outwork").is_none());
        let inner: Value =
            serde_json::from_str(resp["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
        assert!(inner["error"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_the_readiness_probe_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("XDR_LAKE", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ok = loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/")).send().await {
            break r.status().is_success();
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let elapsed = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "no answer on GET /");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_event_bodies_land_the_same() {
    // dataType binary: the host sends each body base64-encoded (no JSON escaping inside)
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.eventhub_data_type = xdr_ingest::handler::protocol::EventDataType::Binary;
    let base = start_server(s).await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut evs: Vec<(i64, String)> = events(20)
        .into_iter()
        .map(|(seq, body)| (seq, b64(body.as_bytes())))
        .collect();
    evs.push((2000, b64(b"\xff\xfe{\"records\":[]}")));
    let (status, resp) = post(&base, "EventHubIngest", &eventhub_request("3", &evs)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(typed_total(dir.path()).await, 40);
    let lake = local_lake(dir.path());
    assert_eq!(dead_by_reason(&lake).await["invalid_utf8"], 1);
    // redelivered: nothing twice
    let (status, _) = post(&base, "EventHubIngest", &eventhub_request("3", &evs[5..])).await;
    assert_eq!(status, 200);
    assert_eq!(typed_total(dir.path()).await, 40);
    assert_no_duplicates(&lake).await;
}

/// Settings for a server that reads blobs from `az` (the emulator base allowed, one
/// container in the allow-list).
fn blob_settings(lake: &std::path::Path, az: &azurite::Azurite) -> HandlerSettings {
    let mut s = settings(lake);
    s.defender_account = Some(azurite::ACCOUNT.into());
    s.containers = vec![CONTAINER.into()];
    s.blob_options = az.storage_options();
    s.blob_url_base = Some(az.endpoint());
    s.replay_allowlist = vec![(azurite::ACCOUNT.into(), CONTAINER.into())];
    s.lake_options = LakeSettings::default().storage_options;
    s
}

fn replay_request(body: &str) -> Value {
    json!({"Data": {"req": {"Url": "https://app/api/replay", "Method": "POST", "Query": {}, "Headers": {}, "Body": body}}, "Metadata": {}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_blob_read_goes_through_the_allow_list() {
    let az = azurite::Azurite::start().await;
    az.create_container(CONTAINER).await;
    let other = "insights-logs-advancedhunting-other";
    az.create_container(other).await;
    let path = "tenantId=t/y=2026/m=11/d=26/h=10/m=00/PT1H.json";
    for c in [CONTAINER, other] {
        az.create_append_blob(c, path).await;
        az.append(c, path, format!("{}\n", line(c)).as_bytes())
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = start_server(blob_settings(dir.path(), &az)).await;

    // a queue message naming a blob outside the allow-list is refused, not read
    let (status, resp) = post(
        &base,
        "BlobIngest",
        &queue_message(&format!("{}/{other}/{path}", az.endpoint())),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("XDR_REPLAY_ALLOWLIST"),
        "{resp}"
    );
    // nor one of another account, nor a loopback URL that is not the configured emulator
    for url in [
        format!("https://someoneelse.blob.core.windows.net/{CONTAINER}/{path}"),
        format!("http://127.0.0.1:1/{}/{CONTAINER}/{path}", azurite::ACCOUNT),
    ] {
        let (status, resp) = post(&base, "BlobIngest", &queue_message(&url)).await;
        assert_eq!(status, 400, "{url}: {resp}");
    }
    assert!(device_names(dir.path()).await.is_empty());
    // the allowed one is read
    let (status, _) = post(
        &base,
        "BlobIngest",
        &queue_message(&format!("{}/{CONTAINER}/{path}", az.endpoint())),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(device_names(dir.path()).await, vec![CONTAINER.to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_refuses_what_it_should_and_never_echoes_a_secret() {
    let az = azurite::Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = start_server(blob_settings(dir.path(), &az)).await;
    let ep = az.endpoint();
    let p = "tenantId=t/y=2026/m=11/d=26/h=10/m=00/PT1H.json";
    let huge = format!("{ep}/{CONTAINER}/{}", "a".repeat(3_000_000));
    let cases = [
        format!(
            "https://devstoreaccount1.blob.core.windows.net/{CONTAINER}/{p}?sv=2024-01-01&sig=TOPSECRETSIG"
        ),
        format!("{ep}/{CONTAINER}/{p}?sig=TOPSECRETSIG"),
        format!("https://user:TOPSECRETPW@devstoreaccount1.blob.core.windows.net/{CONTAINER}/{p}"),
        format!("{ep}/{CONTAINER}/x%2F..%2F..%2Fother/{p}"),
        format!("{ep}/{CONTAINER}/../other/{p}"),
        format!("http://localhost:10000/devstoreaccount1/{CONTAINER}/{p}"),
        format!("http://127.0.0.1:9/devstoreaccount1/{CONTAINER}/{p}"),
        huge,
    ];
    for url in &cases {
        let (status, resp) = post(
            &base,
            "Replay",
            &replay_request(&json!({"url": url}).to_string()),
        )
        .await;
        assert_eq!(status, 200);
        let res = &resp["Outputs"]["res"];
        assert_eq!(
            res["statusCode"],
            400,
            "{}: {resp}",
            &url[..url.len().min(200)]
        );
        assert!(resp["Outputs"].get("outwork").is_none(), "nothing enqueued");
        let text = resp.to_string();
        assert!(!text.contains("TOPSECRET"), "a secret was echoed: {text}");
        assert!(text.len() < 4096, "the answer does not echo megabytes");
    }
    // a call whose body the host dropped (chunked transfer encoding) is told so
    let no_body = json!({"Data": {"req": {"Url": "https://app/api/replay", "Method": "POST", "Query": {}, "Headers": {}}}, "Metadata": {}});
    let (_, resp) = post(&base, "Replay", &no_body).await;
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 400);
    assert!(
        resp["Outputs"]["res"]["body"]
            .as_str()
            .unwrap()
            .contains("chunked"),
        "{resp}"
    );
    // an accepted replay enqueues the canonical URL, nothing of the caller's text
    let (_, resp) = post(
        &base,
        "Replay",
        &replay_request(
            &json!({"url": format!("{ep}/{CONTAINER}/{p}"), "start_offset": 0}).to_string(),
        ),
    )
    .await;
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 202, "{resp}");
    assert_eq!(resp["Outputs"]["outwork"][0]["start_offset"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_hub_sequence_numbers_that_cannot_be_real_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = start_server(settings(dir.path())).await;
    let evs: Vec<(i64, String)> = events(3)
        .into_iter()
        .enumerate()
        .map(|(i, (_, b))| (i as i64 - 2, b))
        .collect();
    let (status, resp) = post(&base, "EventHubIngest", &eventhub_request("1", &evs)).await;
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"].as_str().unwrap().contains("never negative"),
        "{resp}"
    );
    assert_eq!(typed_total(dir.path()).await, 0);
    // a gap is reported in the invocation's log line (and the run table)
    let evs = events(20);
    assert_eq!(
        post(&base, "EventHubIngest", &eventhub_request("1", &evs[0..5]))
            .await
            .0,
        200
    );
    let (status, resp) = post(
        &base,
        "EventHubIngest",
        &eventhub_request("1", &evs[10..20]),
    )
    .await;
    assert_eq!(status, 200);
    let log = resp["Logs"][0].as_str().unwrap();
    assert!(log.contains("gap: sequence numbers 1005-1009"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_catches_up_after_an_outage() {
    use xdr_ingest::ingest::sweep::{SweepOptions, sweep_container};
    use xdr_ingest::source::blob::BlobStores;
    let az = azurite::Azurite::start().await;
    az.create_container(CONTAINER).await;
    let now = chrono::Utc::now();
    // an hour five hours ago: outside the sweep's recent window of two hours
    let hour = now - chrono::Duration::hours(5);
    let path = format!(
        "tenantId=t/{}m=00/PT1H.json",
        hour.format("y=%Y/m=%m/d=%d/h=%H/")
    );
    az.create_append_blob(CONTAINER, &path).await;
    az.append(CONTAINER, &path, format!("{}\n", line("early")).as_bytes())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let s = blob_settings(dir.path(), &az);
    let lake =
        xdr_ingest::sink::Lake::open(dir.path().to_str().unwrap(), s.lake_settings()).unwrap();
    let stores = BlobStores::new(s.blob_options.clone(), &s.endpoint_suffix);
    let opts = |now| SweepOptions {
        now,
        recent_hours: 2,
        max_catch_up_hours: 24,
        grace: chrono::Duration::minutes(30),
    };

    // while that hour was open, the sweep ran, found the blob, and it was read
    let during = hour + chrono::Duration::minutes(20);
    let o = sweep_container(&lake, &stores, azurite::ACCOUNT, CONTAINER, opts(during))
        .await
        .unwrap();
    assert_eq!(o.grown.len(), 1);
    let base = start_server(s.clone()).await;
    let url = format!("{}/{CONTAINER}/{path}", az.endpoint());
    assert_eq!(post(&base, "BlobIngest", &queue_message(&url)).await.0, 200);
    assert_eq!(device_names(dir.path()).await, vec!["early"]);

    // then the app stopped for five hours, and Defender appended the rest of the hour
    az.append(
        CONTAINER,
        &path,
        format!("{}\n{}", line("late"), line("last-no-newline")).as_bytes(),
    )
    .await;
    // the sweep resumes from its cursor, not from "two hours ago": the closed blob is found,
    // counted as behind its watermark, and enqueued
    let (status, resp) = post(&base, "BlobSweep", &json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(status, 200, "{resp}");
    let log = resp["Logs"][0].as_str().unwrap();
    assert!(log.contains("1 of them closed and behind"), "{log}");
    let work = resp["Outputs"]["outwork"].as_array().unwrap().clone();
    assert_eq!(work.len(), 1, "{resp}");
    let msg = json!({"Data": {"work": serde_json::to_string(&work[0].to_string()).unwrap()}, "Metadata": {}});
    assert_eq!(post(&base, "BlobIngest", &msg).await.0, 200);
    // the closed blob is final: its unterminated last line is a record too
    assert_eq!(
        device_names(dir.path()).await,
        vec!["early", "last-no-newline", "late"]
    );
    // nothing behind any more; the cursor moved past the hour
    let (_, resp) = post(&base, "BlobSweep", &json!({"Data": {}, "Metadata": {}})).await;
    assert!(
        resp["Logs"][0]
            .as_str()
            .unwrap()
            .contains("0 grown blob(s)"),
        "{resp}"
    );
    let o = sweep_container(
        &lake,
        &stores,
        azurite::ACCOUNT,
        CONTAINER,
        opts(chrono::Utc::now()),
    )
    .await
    .unwrap();
    assert!(o.cursor_after.unwrap() > hour, "{o:?}");
    assert_no_duplicates(&local_lake(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_commit_conflicts_are_not_logged_as_errors() {
    // two handler processes on one lake, delivering the same partition at once: delta-rs
    // meets commit conflicts (which we redo) and must not put ERROR lines in the host's log
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
            .arg("serve")
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("XDR_LAKE", dir.path())
            .env("XDR_COMMIT_LINGER_MS", "200")
            .env_remove("XDR_LOG")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        procs.push(child);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    let client = reqwest::Client::new();
    for b in &bases {
        let started = Instant::now();
        while client.get(format!("{b}/")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let evs = events(60);
    for round in 0..6 {
        let req = eventhub_request("9", &evs[round * 10..round * 10 + 10]);
        let (a, b) = tokio::join!(
            post(&bases[0], "EventHubIngest", &req),
            post(&bases[1], "EventHubIngest", &req)
        );
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    }
    let mut stderr_all = String::new();
    for mut p in procs {
        let _ = p.kill();
        let out = p.wait_with_output().unwrap();
        stderr_all.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(!stderr_all.contains("\"ERROR\""), "{stderr_all}");
    assert!(!stderr_all.contains("panicked"), "{stderr_all}");
    assert_eq!(typed_total(dir.path()).await, 120);
    assert_no_duplicates(&local_lake(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_is_reachable_through_replay_and_the_work_queue() {
    let dir = tempfile::tempdir().unwrap();
    // dead letters a strict rules file made
    let rules = dir.path().join("strict.toml");
    std::fs::write(&rules, "[[rule]]\nname='strict'\ntables=['Device*']\ncolumn='DeviceId'\ncheck='not_null'\naction='reject'\n").unwrap();
    let mut strict = settings(dir.path());
    strict.pipeline.rules = xdr_ingest::quality::Rules::from_file(&rules).unwrap();
    let base = start_server(strict).await;
    let evs = events(10);
    assert_eq!(
        post(&base, "EventHubIngest", &eventhub_request("2", &evs))
            .await
            .0,
        200
    );
    assert_eq!(typed_total(dir.path()).await, 0);
    // the rules are fixed (a handler with the default rules), and a redrive is asked for
    let base = start_server(settings(dir.path())).await;
    let req = json!({"Data": {"req": {"Url": "https://app/api/replay", "Method": "POST", "Query": {}, "Headers": {},
        "Body": json!({"redrive": {"reason": "rule_failed"}}).to_string()}}, "Metadata": {}});
    let (status, resp) = post(&base, "Replay", &req).await;
    assert_eq!(status, 200);
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 202, "{resp}");
    let work = resp["Outputs"]["outwork"][0].clone();
    assert_eq!(work["redrive"]["reason"], "rule_failed");
    let msg = json!({"Data": {"work": serde_json::to_string(&work.to_string()).unwrap()}, "Metadata": {}});
    let (status, resp) = post(&base, "BlobIngest", &msg).await;
    assert_eq!(status, 200, "{resp}");
    assert!(
        resp["Logs"][0].as_str().unwrap().contains("20 landed"),
        "{resp}"
    );
    assert_eq!(typed_total(dir.path()).await, 20);
    // the same message again (a queue redelivery): nothing twice
    assert_eq!(post(&base, "BlobIngest", &msg).await.0, 200);
    assert_eq!(typed_total(dir.path()).await, 20);
    // a bad reason is refused
    let bad = json!({"Data": {"req": {"Url": "https://app/api/replay", "Method": "POST", "Query": {}, "Headers": {},
        "Body": json!({"redrive": {"reason": "nonsense"}}).to_string()}}, "Metadata": {}});
    let (_, resp) = post(&base, "Replay", &bad).await;
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 400, "{resp}");
}

/// The data contract on the handler path: a new category lands untyped, a new key is reported
/// by `{"drift": {}}` through Replay, in-batch re-sends are dropped and counted, and the
/// Maintenance timer removes the re-sends of another batch and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_contract_holds_on_the_handler_path() {
    let dir = tempfile::tempdir().unwrap();
    let base = start_server(settings(dir.path())).await;
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let rec = |cat: &str, props: &str| {
        format!(
            r#"{{"records":[{{"time":"{now}","category":"AdvancedHunting-{cat}","properties":{{"Timestamp":"{now}",{props}}}}}]}}"#
        )
    };
    let batch = vec![
        (1, rec("CloudAuditEvents", r#""ActionType":"Login""#)),
        (
            2,
            rec(
                "DeviceProcessEvents",
                r#""DeviceName":"a","BrandNewKey":"v1""#,
            ),
        ),
        (
            3,
            rec(
                "DeviceProcessEvents",
                r#""DeviceName":"a","BrandNewKey":"v1""#,
            ),
        ),
        (4, rec("DeviceProcessEvents", r#""DeviceName":"b""#)),
    ];
    let (status, resp) = post(&base, "EventHubIngest", &eventhub_request("1", &batch)).await;
    assert_eq!(status, 200, "{resp}");
    let log = resp["Logs"][0].as_str().unwrap();
    assert!(log.contains("4 records"), "{log}");
    assert!(log.contains("1 duplicates dropped"), "{log}");
    assert!(
        log.contains("untyped tables {\"CloudAuditEvents\"}"),
        "{log}"
    );
    let lake = local_lake(dir.path());
    let rows = lake_rows(&lake).await;
    assert_eq!(rows["DeviceProcessEvents"], 2, "{rows:?}");
    assert_eq!(
        rows.get("_dead_letters").copied().unwrap_or(0),
        0,
        "{rows:?}"
    );
    assert!(
        lake.untyped_tables()
            .await
            .unwrap()
            .existing
            .contains("CloudAuditEvents")
    );

    // drift through Replay, answered at once
    let (status, resp) = post(&base, "Replay", &replay_request(r#"{"drift": {}}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 200, "{resp}");
    let body: Value =
        serde_json::from_str(resp["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    let dpe = body["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "DeviceProcessEvents")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(dpe["items"][0]["key"], "BrandNewKey", "{body}");
    assert_eq!(dpe["items"][0]["count"], 1, "{body}");
    let (_, resp) = post(
        &base,
        "Replay",
        &replay_request(r#"{"drift": {"since": "yesterday"}}"#),
    )
    .await;
    assert_eq!(resp["Outputs"]["res"]["statusCode"], 400, "{resp}");

    // the same record re-sent in another batch: kept at ingest, removed by Maintenance
    let again = vec![(5, rec("DeviceProcessEvents", r#""DeviceName":"b""#))];
    assert_eq!(
        post(&base, "EventHubIngest", &eventhub_request("1", &again))
            .await
            .0,
        200
    );
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 3);
    let timer = json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "IsPastDue": false}}, "Metadata": {}});
    let (status, resp) = post(&base, "Maintenance", &timer).await;
    assert_eq!(status, 200, "{resp}");
    let log = resp["Logs"][0].as_str().unwrap();
    assert!(log.contains("1 duplicates removed"), "{log}");
    assert_eq!(lake_rows(&lake).await["DeviceProcessEvents"], 2);
}

/// A batch larger than anything the handler would hold at once still lands, exactly, and
/// never as a 413 (which the host would redeliver forever): Event Hub requests have no size
/// limit, wait for room in `XDR_MAX_INFLIGHT_BYTES`, and are built and committed in slices of
/// `XDR_EVENTHUB_SLICE_BYTES`. Three partitions at once, with the linger on, and one of them
/// redelivered with other boundaries: every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_the_handler_takes_land_in_slices_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_request_bytes = 1 << 20;
    s.max_inflight_bytes = 1 << 20;
    s.eventhub_slice_bytes = 256 << 10;
    s.commit_linger = Duration::from_millis(200);
    let base = start_server(s).await;
    let big = |p: i64| -> Vec<(i64, String)> {
        (0..30)
            .map(|i| {
                let pad = "x".repeat(100_000);
                (5000 + i, format!(r#"{{"records":[{{"time":"2026-11-26T09:59:00Z","category":"AdvancedHunting-DeviceProcessEvents","properties":{{"Timestamp":"2026-11-26T09:58:00Z","DeviceName":"p{p}-{i}","ProcessCommandLine":"{pad}"}}}}]}}"#))
            })
            .collect()
    };
    let mut tasks = Vec::new();
    for p in 0..3 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let req = eventhub_request(&p.to_string(), &big(p));
            assert!(req.to_string().len() > 3_000_000);
            post(&base, "EventHubIngest", &req).await
        }));
    }
    // partition 0 again, in two batches of other boundaries
    {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let evs = big(0);
            let a = post(&base, "EventHubIngest", &eventhub_request("0", &evs[..11])).await;
            let b = post(&base, "EventHubIngest", &eventhub_request("0", &evs[11..])).await;
            assert_eq!(a.0, 200, "{}", a.1);
            b
        }));
    }
    for t in tasks {
        let (status, resp) = t.await.unwrap();
        assert_eq!(status, 200, "{resp}");
    }
    assert_eq!(typed_total(dir.path()).await, 90);
    let lake = local_lake(dir.path());
    assert_no_duplicates(&lake).await;
    // sliced: a 3 MB batch in 256 KiB slices is many commits, not one
    let info = xdr_ingest::sink::inspect::lake_info(&lake).await.unwrap();
    let dpe = info
        .iter()
        .find(|t| t.name == "DeviceProcessEvents")
        .unwrap();
    assert!(dpe.version >= 10, "version {}", dpe.version);
}
