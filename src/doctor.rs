//! `xdr-ingest doctor`, and the same checks at handler start-up: does this deployment work?
//! Every setting, the managed identity (a token comes back; it is never printed), the lake
//! (list, write, read and delete a probe object), each export container (list), the work queue
//! (send an invisible probe, delete it, peek) and the rules file, each reported as ok or
//! failed with the cause and the fix. Checks run side by side and each gives up after a
//! deadline, so a deployment that does not answer fails within a minute, naming what did not
//! answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use futures::TryStreamExt;
use serde::Serialize;

use crate::azure::queue::QueueService;
use crate::azure::{self, ManagedIdentity, Patience};
use crate::handler::HandlerSettings;

/// One check's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found (ok) or what went wrong (failed).
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub ms: u64,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: true,
            detail: detail.into(),
            fix: None,
            ms: 0,
        }
    }

    fn failed(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.to_owned(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            ms: 0,
        }
    }
}

/// All checks of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// One line per check.
    pub fn render(&self) -> String {
        let mut o = String::new();
        for c in &self.checks {
            o.push_str(&format!(
                "{:<6} {:<44} {}{}\n",
                if c.ok { "ok" } else { "FAILED" },
                c.name,
                c.detail,
                c.fix
                    .as_ref()
                    .map(|f| format!("\n       fix: {f}"))
                    .unwrap_or_default()
            ));
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        o.push_str(&if failed == 0 {
            format!("all {} checks passed\n", self.checks.len())
        } else {
            format!("{failed} of {} checks failed\n", self.checks.len())
        });
        o
    }
}

/// How long one check may take before it is reported as not answering.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(25);

async fn timed(name: String, deadline: Duration, f: impl Future<Output = Check>) -> Check {
    let t0 = Instant::now();
    let mut c = match tokio::time::timeout(deadline, f).await {
        Ok(c) => c,
        Err(_) => Check::failed(
            &name,
            format!("no answer within {} s", deadline.as_secs()),
            "check that the endpoint is reachable from the app (network rules, private endpoints, DNS)",
        ),
    };
    c.ms = t0.elapsed().as_millis() as u64;
    c
}

/// Runs every check against the settings in `get` (the process environment for the CLI and
/// the handler).
pub async fn run(get: &(dyn Fn(&str) -> Option<String> + Sync)) -> Report {
    let settings = match HandlerSettings::from_vars(get) {
        Ok(s) => s,
        Err(e) => {
            return Report {
                checks: vec![Check::failed(
                    "settings",
                    e.to_string(),
                    "correct the setting named (app settings on Azure, the environment locally)",
                )],
            };
        }
    };
    let mut checks = vec![Check::ok(
        "settings",
        format!(
            "valid (lake {}, {} export container(s), Event Hub bodies as {:?})",
            settings.lake,
            if settings.defender_account.is_some() {
                settings.containers.len()
            } else {
                0
            },
            settings.eventhub_data_type
        ),
    )];
    checks.push(Check::ok(
        "rules",
        match get("XDR_RULES_FILE").filter(|v| !v.trim().is_empty()) {
            Some(p) => format!("{p}: valid"),
            None => "the embedded defaults".into(),
        },
    ));

    let lake_url = crate::sink::parse_location_no_create(&settings.lake);
    let lake_options = settings.lake_options.clone();
    let lake_is_azure = lake_url
        .as_ref()
        .is_ok_and(|u| azure::parse_lake_url(u, &lake_options, get).is_some());
    let lake_identity = lake_is_azure
        .then(|| azure::managed_identity_for(&lake_options, get))
        .flatten();
    let blob_identity = settings
        .defender_account
        .as_ref()
        .and_then(|_| azure::managed_identity_for(&settings.blob_options, get));
    let queue_uses_identity =
        get("XdrQueue__queueServiceUri").is_some_and(|v| !v.trim().is_empty());
    let identity: Option<Arc<ManagedIdentity>> = lake_identity
        .clone()
        .or_else(|| blob_identity.clone())
        .or_else(|| {
            queue_uses_identity
                .then(|| azure::managed_identity_for(&HashMap::new(), get))
                .flatten()
        });

    let mut futures: Vec<std::pin::Pin<Box<dyn Future<Output = Check> + Send + '_>>> = Vec::new();
    futures.push(Box::pin(timed(
        "managed identity".into(),
        CHECK_DEADLINE,
        identity_check(identity.clone()),
    )));
    futures.push(Box::pin(timed(
        "lake".into(),
        CHECK_DEADLINE,
        lake_check(
            &settings,
            lake_url.map_err(|e| e.to_string()),
            lake_options,
            lake_identity,
            get,
        ),
    )));
    match &settings.defender_account {
        None => checks.push(Check::ok(
            "export account",
            "XDR_DEFENDER_STORAGE_ACCOUNT is not set: the blob path is off",
        )),
        Some(account) => {
            for c in &settings.containers {
                let name = format!("export {account}/{c}");
                futures.push(Box::pin(timed(
                    name.clone(),
                    CHECK_DEADLINE,
                    container_check(
                        name,
                        account.clone(),
                        c.clone(),
                        &settings,
                        blob_identity.clone(),
                    ),
                )));
            }
        }
    }
    futures.push(Box::pin(timed(
        "work queue".into(),
        CHECK_DEADLINE,
        queue_check(get, identity),
    )));
    checks.extend(futures::future::join_all(futures).await);
    Report { checks }
}

async fn identity_check(identity: Option<Arc<ManagedIdentity>>) -> Check {
    let Some(mi) = identity else {
        return Check::ok(
            "managed identity",
            "not used (the lake, the export account and the queue use explicit credentials or a local path)",
        );
    };
    match mi.fetch().await {
        Ok(t) => Check::ok(
            "managed identity",
            format!(
                "{}{}: a token came back, valid for {} more minutes",
                mi.source().describe(),
                mi.client_id()
                    .map(|c| format!(", user-assigned client id {c}"))
                    .unwrap_or_else(|| ", system-assigned".into()),
                (t.expires_on - chrono::Utc::now().timestamp()).max(0) / 60
            ),
        ),
        Err(e) => Check::failed(
            "managed identity",
            e.to_string(),
            "turn on the Function App's system-assigned identity (the templates do), or set XDR_MANAGED_IDENTITY_CLIENT_ID to a user-assigned identity attached to the app",
        ),
    }
}

async fn lake_check(
    settings: &HandlerSettings,
    url: Result<url::Url, String>,
    options: HashMap<String, String>,
    identity: Option<Arc<ManagedIdentity>>,
    get: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Check {
    const NAME: &str = "lake";
    let url = match url {
        Ok(u) => u,
        Err(e) => return Check::failed(NAME, e, "set XDR_LAKE to a directory or an abfss:// URL"),
    };
    let store: Arc<dyn ObjectStore> = if url.scheme() == "file" {
        let Ok(path) = url.to_file_path() else {
            return Check::failed(NAME, "not a local path", "set XDR_LAKE");
        };
        if let Err(e) = std::fs::create_dir_all(&path) {
            return Check::failed(
                NAME,
                format!("{}: {e}", path.display()),
                "give the app a writable directory in XDR_LAKE",
            );
        }
        match deltalake::logstore::object_store::local::LocalFileSystem::new_with_prefix(&path) {
            Ok(s) => Arc::new(s),
            Err(e) => return Check::failed(NAME, e.to_string(), "set XDR_LAKE"),
        }
    } else {
        let Some((account, container, suffix)) = azure::parse_lake_url(&url, &options, get) else {
            return Check::failed(
                NAME,
                format!("{url}: not a lake location this app can use"),
                "set XDR_LAKE to abfss://<container>@<account>.dfs.<suffix>/<path>",
            );
        };
        let suffix = suffix.or_else(|| Some(settings.endpoint_suffix.clone()));
        match azure::container_store(
            account.as_deref(),
            &container,
            suffix.as_deref(),
            &options,
            identity,
            &Patience::quick(),
        ) {
            Ok(s) => s,
            Err(e) => {
                return Check::failed(NAME, e.to_string(), "check XDR_LAKE and XDR_LAKE_OPTIONS");
            }
        }
    };
    let prefix = if url.scheme() == "file" {
        String::new()
    } else {
        url.path().trim_matches('/').to_owned()
    };
    let probe = Path::from(
        format!("{prefix}/_xdr_doctor/probe-{}", uuid::Uuid::new_v4())
            .trim_start_matches('/')
            .to_owned(),
    );
    let fix = "grant the app's identity Storage Blob Data Contributor on the lake container, and check XDR_LAKE";
    let steps = async {
        store
            .put(&probe, PutPayload::from_static(b"xdr-ingest doctor probe"))
            .await
            .map_err(|e| format!("write {probe}: {e}"))?;
        let back = store
            .get(&probe)
            .await
            .map_err(|e| format!("read {probe}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("read {probe}: {e}"))?;
        if back.as_ref() != b"xdr-ingest doctor probe" {
            return Err(format!("read {probe}: the bytes differ"));
        }
        let folder = Path::from(
            format!("{prefix}/_xdr_doctor")
                .trim_start_matches('/')
                .to_owned(),
        );
        let listed: Vec<_> = store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| format!("list: {e}"))?;
        if !listed.iter().any(|m| m.location == probe) {
            return Err(format!("list: {probe} is not listed after it was written"));
        }
        store
            .delete(&probe)
            .await
            .map_err(|e| format!("delete {probe}: {e}"))?;
        Ok::<usize, String>(listed.len())
    };
    match steps.await {
        Ok(_) => Check::ok(NAME, format!("{url}: list, write, read and delete work")),
        Err(e) => Check::failed(NAME, format!("{url}: {e}"), fix),
    }
}

async fn container_check(
    name: String,
    account: String,
    container: String,
    settings: &HandlerSettings,
    identity: Option<Arc<ManagedIdentity>>,
) -> Check {
    let store = match azure::container_store(
        Some(&account),
        &container,
        Some(&settings.endpoint_suffix),
        &settings.blob_options,
        identity,
        &Patience::quick(),
    ) {
        Ok(s) => s,
        Err(e) => return Check::failed(&name, e.to_string(), "check XDR_BLOB_OPTIONS"),
    };
    match store.list_with_delimiter(None).await {
        Ok(l) => Check::ok(
            &name,
            format!("listed: {} tenant folder(s)", l.common_prefixes.len()),
        ),
        Err(e) if azure::is_container_not_found(&e) => Check::ok(
            &name,
            "the container does not exist yet (Defender has not exported this table)",
        ),
        Err(e) => Check::failed(
            &name,
            e.to_string(),
            "grant the app's identity Storage Blob Data Reader on the export account, and check XDR_DEFENDER_STORAGE_ACCOUNT",
        ),
    }
}

async fn queue_check(
    get: &(dyn Fn(&str) -> Option<String> + Sync),
    identity: Option<Arc<ManagedIdentity>>,
) -> Check {
    const NAME: &str = "work queue";
    let Some(queue) = get("XDR_WORK_QUEUE").filter(|q| !q.trim().is_empty()) else {
        return Check::ok(NAME, "XDR_WORK_QUEUE is not set: the blob path is off");
    };
    let service = match QueueService::from_settings(
        "XdrQueue",
        get,
        identity,
        Duration::from_secs(10),
    ) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Check::failed(
                NAME,
                "XDR_WORK_QUEUE is set but neither XdrQueue__queueServiceUri nor XdrQueue is",
                "set XdrQueue__queueServiceUri=https://<export account>.queue.<suffix> (and XdrQueue__credential=managedidentity)",
            );
        }
        Err(e) => return Check::failed(NAME, e.to_string(), "correct the XdrQueue settings"),
    };
    let fix = "grant the app's identity Storage Queue Data Contributor on the work queue, and check XDR_WORK_QUEUE";
    // the probe stays invisible and is deleted at once: BlobIngest never sees it
    let r = async {
        let (id, receipt) = service
            .put_invisible(&queue, "xdr-ingest doctor probe", Duration::from_secs(120))
            .await?;
        service.delete_message(&queue, &id, &receipt).await?;
        service.peek(&queue).await
    }
    .await;
    match r {
        Ok(n) => Check::ok(
            NAME,
            format!(
                "{}/{queue}: send, delete and peek work ({n} message(s) waiting)",
                service.endpoint()
            ),
        ),
        Err(e) => Check::failed(NAME, format!("{}/{queue}: {e}", service.endpoint()), fix),
    }
}
