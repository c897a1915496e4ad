//! Azure access shared by the lake and the export reads: object stores for Azure Storage that
//! log in with the app's managed identity (whichever token contract the platform offers, see
//! [`identity`]) unless explicit credentials are configured, in any cloud (the endpoint suffix
//! is a setting); and the few Storage Queue calls `doctor` needs ([`queue`]).

pub mod identity;
pub mod queue;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deltalake::logstore::object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use deltalake::logstore::object_store::{self, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

pub use identity::{IdentitySource, ManagedIdentity};

/// The public cloud's storage endpoint suffix.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

/// Option keys (and `AZURE_*` variables) that name a credential: with any of them set,
/// object_store uses it and no managed identity is involved.
const CREDENTIAL_KEYS: &[&str] = &[
    "azure_storage_account_key",
    "azure_storage_access_key",
    "azure_storage_master_key",
    "account_key",
    "access_key",
    "azure_storage_sas_key",
    "azure_storage_sas_token",
    "sas_key",
    "sas_token",
    "azure_storage_token",
    "bearer_token",
    "token",
    "azure_client_secret",
    "client_secret",
    "azure_federated_token_file",
    "federated_token_file",
    "azure_storage_use_emulator",
    "use_emulator",
    "azure_use_azure_cli",
    "use_azure_cli",
];

/// True when `options` (or the `AZURE_*` environment) name a credential other than a
/// managed identity.
pub fn has_explicit_credentials(
    options: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let set = |v: &str| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("false");
    options
        .iter()
        .any(|(k, v)| CREDENTIAL_KEYS.contains(&k.to_ascii_lowercase().as_str()) && set(v))
        || CREDENTIAL_KEYS
            .iter()
            .filter(|k| k.starts_with("azure_"))
            .any(|k| env(&k.to_ascii_uppercase()).is_some_and(|v| set(&v)))
}

/// The managed identity to use when nothing else is configured: the platform's contract,
/// and the user-assigned identity's client id from `XDR_MANAGED_IDENTITY_CLIENT_ID` (or the
/// `azure_client_id` option).
pub fn managed_identity_for(
    options: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Arc<ManagedIdentity>> {
    if has_explicit_credentials(options, env) {
        return None;
    }
    let client_id = env("XDR_MANAGED_IDENTITY_CLIENT_ID")
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            options
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("azure_client_id"))
                .map(|(_, v)| v.clone())
        });
    Some(Arc::new(ManagedIdentity::new(
        IdentitySource::detect(env),
        client_id,
        Duration::from_secs(15),
    )))
}

/// How long a store's requests wait and how often they are retried.
#[derive(Clone, Debug)]
pub struct Patience {
    pub request_timeout: Duration,
    pub retries: usize,
}

impl Patience {
    /// Normal work: object_store's defaults.
    pub fn normal() -> Self {
        Patience {
            request_timeout: Duration::from_secs(30),
            retries: 10,
        }
    }

    /// Checks that must answer quickly (`doctor`).
    pub fn quick() -> Self {
        Patience {
            request_timeout: Duration::from_secs(8),
            retries: 1,
        }
    }

    fn apply(&self, b: MicrosoftAzureBuilder) -> MicrosoftAzureBuilder {
        b.with_client_options(
            ClientOptions::new()
                .with_timeout(self.request_timeout)
                .with_connect_timeout(self.request_timeout.min(Duration::from_secs(10))),
        )
        .with_retry(RetryConfig {
            max_retries: self.retries,
            retry_timeout: self.request_timeout * (self.retries as u32 + 1),
            ..Default::default()
        })
    }
}

/// The account, container and path of an Azure lake URL: `abfss://<container>@<account>.dfs.<suffix>/<path>`
/// (also `.blob.`, `abfs://`), or `az://<container>/<path>` (`adl://`, `azure://`) with the account
/// from the `azure_storage_account_name` option or `AZURE_STORAGE_ACCOUNT_NAME`.
pub fn parse_lake_url(
    url: &Url,
    options: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Option<String>, String, Option<String>)> {
    match url.scheme() {
        "abfs" | "abfss" => {
            let container = url.username().to_owned();
            let host = url.host_str()?.to_ascii_lowercase();
            let (account, rest) = host.split_once('.')?;
            let suffix = rest
                .strip_prefix("dfs.")
                .or_else(|| rest.strip_prefix("blob."))
                .map(str::to_owned);
            if container.is_empty() {
                // abfs://<container>/<path> with the account in the options
                return Some((account_option(options, env), host, None));
            }
            Some((Some(account.to_owned()), container, suffix))
        }
        "az" | "adl" | "azure" => Some((
            account_option(options, env),
            url.host_str()?.to_owned(),
            None,
        )),
        _ => None,
    }
}

fn account_option(
    options: &HashMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    options
        .iter()
        .find(|(k, _)| {
            matches!(
                k.to_ascii_lowercase().as_str(),
                "azure_storage_account_name" | "account_name"
            )
        })
        .map(|(_, v)| v.clone())
        .or_else(|| env("AZURE_STORAGE_ACCOUNT_NAME"))
}

/// An object store rooted at a container, logging in with `identity` when given (otherwise as
/// the options and `AZURE_*` variables say). `endpoint_suffix` other than the public cloud's
/// sets the blob endpoint explicitly.
pub fn container_store(
    account: Option<&str>,
    container: &str,
    endpoint_suffix: Option<&str>,
    options: &HashMap<String, String>,
    identity: Option<Arc<ManagedIdentity>>,
    patience: &Patience,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    // the patience first: client options given as options (allow_http, timeouts) go on top
    let mut b = patience
        .apply(MicrosoftAzureBuilder::from_env())
        .with_container_name(container);
    if let Some(a) = account {
        b = b.with_account(a);
    }
    for (k, v) in options {
        if let Ok(key) = AzureConfigKey::from_str(k) {
            b = b.with_config(key, v);
        }
    }
    if let (Some(a), Some(suffix)) = (account, endpoint_suffix)
        && suffix != DEFAULT_ENDPOINT_SUFFIX
        && !options.keys().any(|k| {
            k.eq_ignore_ascii_case("azure_storage_endpoint") || k.eq_ignore_ascii_case("endpoint")
        })
    {
        b = b.with_endpoint(format!("https://{a}.blob.{suffix}"));
    }
    if let Some(identity) = identity {
        b = b.with_credentials(identity);
    }
    Ok(Arc::new(b.build()?))
}

/// A listing that failed because the container does not exist (object_store reports it as a
/// generic error with the service's `ContainerNotFound` code, not as `NotFound`).
pub fn is_container_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("ContainerNotFound")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn explicit_credentials_turn_the_managed_identity_off() {
        let mut o = HashMap::new();
        assert!(!has_explicit_credentials(&o, &no_env));
        assert!(managed_identity_for(&o, &no_env).is_some());
        o.insert("azure_storage_use_emulator".into(), "true".into());
        assert!(has_explicit_credentials(&o, &no_env));
        assert!(
            managed_identity_for(&HashMap::new(), &|k| (k == "AZURE_STORAGE_ACCOUNT_KEY")
                .then(|| "k".into()))
            .is_none()
        );
        let mi = managed_identity_for(&HashMap::new(), &|k| {
            (k == "XDR_MANAGED_IDENTITY_CLIENT_ID").then(|| "cid".into())
        })
        .unwrap();
        assert_eq!(mi.client_id(), Some("cid"));
    }

    #[test]
    fn lake_urls_name_account_and_container() {
        let u = Url::parse("abfss://lake@acct.dfs.core.chinacloudapi.cn/defender/").unwrap();
        assert_eq!(
            parse_lake_url(&u, &HashMap::new(), &no_env),
            Some((
                Some("acct".into()),
                "lake".into(),
                Some("core.chinacloudapi.cn".into())
            ))
        );
        let u = Url::parse("az://lake/defender/").unwrap();
        let o: HashMap<String, String> =
            [("azure_storage_account_name".to_owned(), "a2".to_owned())].into();
        assert_eq!(
            parse_lake_url(&u, &o, &no_env),
            Some((Some("a2".into()), "lake".into(), None))
        );
        assert_eq!(
            parse_lake_url(&Url::parse("file:///x/").unwrap(), &o, &no_env),
            None
        );
    }
}
