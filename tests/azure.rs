//! Azure login and `doctor`, with stand-ins where no emulator exists: a local token endpoint
//! that checks each managed-identity contract's request shape (App Service `IDENTITY_*`, the
//! older `MSI_*`, IMDS) and a local storage endpoint that checks the bearer token arrives, for
//! the lake and for export-blob reads; then `doctor` against Azurite (blob and queue) and
//! against a closed port.
//!
//! One test function changes process environment variables (as the platform sets them); it
//! is the only test in this binary that does.

#[path = "common/azurite.rs"]
mod azurite;
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use xdr_ingest::azure::{IdentitySource, ManagedIdentity, Patience, container_store};
use xdr_ingest::deltalake::logstore::object_store::ObjectStore;
use xdr_ingest::doctor;
use xdr_ingest::sink::{Lake, LakeSettings};
use xdr_ingest::source::blob::BlobStores;

/// What the stand-ins saw.
#[derive(Default)]
struct Seen {
    token_requests: Vec<String>,
    storage_auth: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// The three token contracts, each refusing a request of the wrong shape with 400.
async fn token(
    State(seen): State<Shared>,
    axum::extract::Path(kind): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> (StatusCode, String) {
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let resource_ok = q.get("resource").map(String::as_str) == Some("https://storage.azure.com");
    let now = chrono::Utc::now().timestamp();
    let (ok, body) = match kind.as_str() {
        "appservice" => (
            resource_ok
                && q.get("api-version").map(String::as_str) == Some("2019-08-01")
                && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && header("x-identity-header") == "the-identity-header",
            format!(
                r#"{{"access_token":"tok-appservice","expires_on":"{}","token_type":"Bearer"}}"#,
                now + 3600
            ),
        ),
        "msi" => (
            resource_ok
                && q.get("api-version").map(String::as_str) == Some("2017-09-01")
                && q.get("clientid").map(String::as_str) == Some(CLIENT_ID)
                && header("secret") == "the-msi-secret",
            format!(
                r#"{{"access_token":"tok-msi","expires_on":"{}","token_type":"Bearer"}}"#,
                (chrono::Utc::now() + chrono::Duration::hours(1))
                    .format("%m/%d/%Y %I:%M:%S %p +00:00")
            ),
        ),
        "imds" => (
            resource_ok
                && q.get("api-version").map(String::as_str) == Some("2018-02-01")
                && q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && header("metadata") == "true",
            r#"{"access_token":"tok-imds","expires_in":"3599","token_type":"Bearer"}"#.to_owned(),
        ),
        _ => (false, String::new()),
    };
    seen.lock().unwrap().token_requests.push(kind.clone());
    if ok {
        (StatusCode::OK, body)
    } else {
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request"}"#.into(),
        )
    }
}

/// Any storage request: records the Authorization header, answers an empty container listing.
async fn storage(
    State(seen): State<Shared>,
    h: HeaderMap,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    let auth = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let ok = auth.starts_with("Bearer tok-");
    seen.lock().unwrap().storage_auth.push(auth);
    if !ok {
        return (
            StatusCode::FORBIDDEN,
            [("content-type", "application/xml")],
            "<Error><Code>AuthenticationFailed</Code></Error>",
        );
    }
    (
        StatusCode::OK,
        [("content-type", "application/xml")],
        r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1/acct/" ContainerName="c"><Prefix></Prefix><Blobs></Blobs><NextMarker /></EnumerationResults>"#,
    )
}

async fn stand_ins() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/token/{kind}", get(token))
        .fallback(storage)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// Variables to set (`Some`) or remove (`None`).
type EnvChange = Vec<(&'static str, Option<String>)>;

fn set_env(vars: &[(&str, Option<&str>)]) {
    for (k, v) in vars {
        // SAFETY: the only test in this binary that touches the environment, and it runs
        // before any thread of ours reads these variables for this step.
        unsafe {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_contract_logs_in_the_lake_and_the_blob_reads() {
    let (base, seen) = stand_ins().await;
    let storage_opts: HashMap<String, String> = [
        ("azure_storage_account_name", "acct"),
        ("azure_storage_endpoint", &format!("{base}/acct")[..]),
        ("azure_allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    let contracts: [(&str, EnvChange); 3] = [
        (
            "appservice",
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    Some(format!("{base}/token/appservice")),
                ),
                ("IDENTITY_HEADER", Some("the-identity-header".into())),
                ("MSI_ENDPOINT", Some(format!("{base}/token/msi"))),
                ("MSI_SECRET", Some("the-msi-secret".into())),
            ],
        ),
        (
            "msi",
            vec![
                ("IDENTITY_ENDPOINT", None),
                ("IDENTITY_HEADER", None),
                ("MSI_ENDPOINT", Some(format!("{base}/token/msi"))),
                ("MSI_SECRET", Some("the-msi-secret".into())),
            ],
        ),
        (
            "imds",
            vec![
                ("MSI_ENDPOINT", None),
                ("MSI_SECRET", None),
                ("XDR_IMDS_ENDPOINT", Some(format!("{base}/token/imds"))),
            ],
        ),
    ];
    for (kind, vars) in contracts {
        let vars: Vec<(&str, Option<&str>)> =
            vars.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        set_env(&vars);
        set_env(&[("XDR_MANAGED_IDENTITY_CLIENT_ID", Some(CLIENT_ID))]);
        let source = IdentitySource::from_env();
        assert!(
            format!("{source:?}").to_lowercase().contains(&kind[..3]),
            "{kind}: {source:?}"
        );

        // the token itself (never printed)
        let mi = ManagedIdentity::new(source, Some(CLIENT_ID.into()), Duration::from_secs(5));
        let t = mi.fetch().await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(t.access_token, format!("tok-{kind}"));
        assert!(
            t.expires_on > chrono::Utc::now().timestamp() + 3000,
            "{kind}: {t:?}"
        );

        // export-blob reads: the client id reaches them too
        seen.lock().unwrap().storage_auth.clear();
        let stores = BlobStores::new(storage_opts.clone(), "core.windows.net");
        let store = stores
            .store("acct", "insights-logs-advancedhunting-deviceinfo")
            .unwrap();
        store
            .list_with_delimiter(None)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        // the lake
        let lake = Lake::open(
            "az://lake/defender",
            LakeSettings {
                storage_options: storage_opts.clone(),
                ..Default::default()
            },
        )
        .unwrap();
        let runs = lake.ingest_runs().unwrap().load_existing().await;
        assert!(matches!(runs, Ok(None)), "{kind}: {runs:?}");
        let auth = seen.lock().unwrap().storage_auth.clone();
        assert!(auth.len() >= 2, "{kind}: {auth:?}");
        assert!(
            auth.iter().all(|a| a == &format!("Bearer tok-{kind}")),
            "{kind}: {auth:?}"
        );
    }
    // the token endpoint saw each contract, and only well-formed requests got a token
    let kinds = seen.lock().unwrap().token_requests.clone();
    for k in ["appservice", "msi", "imds"] {
        assert!(kinds.iter().any(|x| x == k), "{kinds:?}");
    }
    // a wrong client id is refused by the endpoint, and the error says where it came from
    let mi = ManagedIdentity::new(
        IdentitySource::Imds {
            endpoint: format!("{base}/token/imds"),
        },
        Some("other".into()),
        Duration::from_secs(5),
    );
    let e = mi.fetch().await.unwrap_err().to_string();
    assert!(
        e.contains("instance metadata service") && e.contains("400"),
        "{e}"
    );
    // and explicit credentials turn the managed identity off: no bearer token at all
    let store = container_store(
        Some("acct"),
        "c",
        None,
        &storage_opts,
        None,
        &Patience::quick(),
    )
    .unwrap();
    seen.lock().unwrap().storage_auth.clear();
    let _ = store.list_with_delimiter(None).await;
    assert!(
        seen.lock()
            .unwrap()
            .storage_auth
            .iter()
            .all(|a| !a.starts_with("Bearer"))
    );

    // ---- doctor against Azurite (blob and queue): every check passes ----
    set_env(&[
        ("IDENTITY_ENDPOINT", None),
        ("IDENTITY_HEADER", None),
        ("XDR_IMDS_ENDPOINT", None),
        ("XDR_MANAGED_IDENTITY_CLIENT_ID", None),
    ]);
    let az = azurite::Azurite::start().await;
    let q = azurite::AzuriteQueue::start().await;
    let container = "insights-logs-advancedhunting-deviceinfo";
    az.create_container("lake").await;
    az.create_container(container).await;
    let creds = format!(
        "azure_storage_account_name={};azure_storage_account_key={};azure_storage_endpoint={};azure_allow_http=true",
        azurite::ACCOUNT,
        azurite::KEY,
        az.endpoint()
    );
    let mut vars: HashMap<&str, String> = [
        ("XDR_LAKE", "az://lake/defender".to_owned()),
        ("XDR_LAKE_OPTIONS", creds.clone()),
        ("XDR_DEFENDER_STORAGE_ACCOUNT", azurite::ACCOUNT.to_owned()),
        (
            "XDR_DEFENDER_CONTAINERS",
            format!("{container},insights-logs-advancedhunting-emailevents"),
        ),
        ("XDR_BLOB_OPTIONS", creds.clone()),
        ("XDR_BLOB_URL_BASE", az.endpoint()),
        ("XDR_WORK_QUEUE", "xdr-blob-work".to_owned()),
        ("XdrQueue", q.connection_string()),
    ]
    .into_iter()
    .collect();
    let conn = q.connection_string();
    let svc = xdr_ingest::azure::queue::QueueService::from_settings(
        "XdrQueue",
        &|k: &str| (k == "XdrQueue").then(|| conn.clone()),
        None,
        Duration::from_secs(5),
    )
    .unwrap()
    .unwrap();
    svc.create_queue("xdr-blob-work").await.unwrap();
    let getter = |vars: HashMap<&'static str, String>| move |k: &str| vars.get(k).cloned();
    let started = Instant::now();
    let report = doctor::run(&getter(vars.clone())).await;
    assert!(report.passed(), "{}", report.render());
    assert!(started.elapsed() < Duration::from_secs(60));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "settings",
        "rules",
        "managed identity",
        "lake",
        "work queue",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    assert!(names.iter().any(|n| n.contains(container)), "{names:?}");
    // the probe message was deleted, not left for BlobIngest
    assert_eq!(svc.peek("xdr-blob-work").await.unwrap(), 0);
    // the same through the binary
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
        .arg("doctor")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // ---- doctor against a closed port (the queue) and an endpoint that accepts connections
    // but never answers (the lake): fails within a minute, naming what did not answer ----
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let closed = format!("http://{silent_addr}/devstoreaccount1");
    vars.insert("XDR_LAKE_OPTIONS", creds.replace(&az.endpoint(), &closed));
    vars.insert(
        "XdrQueue",
        q.connection_string()
            .replace(&format!("127.0.0.1:{}", q.port), "127.0.0.1:1"),
    );
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xdr-ingest"))
        .arg("doctor")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert!(failed.iter().any(|l| l.contains("lake")), "{text}");
    assert!(
        text.contains(&silent_addr.to_string()) || text.contains("no answer"),
        "{text}"
    );
    assert!(failed.iter().any(|l| l.contains("work queue")), "{text}");
    assert!(text.contains("fix:"), "{text}");
    // the export containers still answer
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains(container)),
        "{text}"
    );

    // ---- a managed identity that does not answer (no identity on this machine) ----
    let mut vars2 = vars.clone();
    vars2.insert(
        "XDR_LAKE_OPTIONS",
        format!(
            "azure_storage_account_name={};azure_storage_endpoint={};azure_allow_http=true",
            azurite::ACCOUNT,
            az.endpoint()
        ),
    );
    vars2.insert(
        "XDR_IMDS_ENDPOINT",
        "http://127.0.0.1:1/metadata/identity/oauth2/token".into(),
    );
    let report = doctor::run(&getter(vars2)).await;
    let id = report
        .checks
        .iter()
        .find(|c| c.name == "managed identity")
        .unwrap();
    assert!(
        !id.ok && id.detail.contains("instance metadata service"),
        "{}",
        report.render()
    );
    assert!(
        !report.render().contains("tok-"),
        "no token is ever printed"
    );
}
