//! Managed-identity tokens for Azure Storage, from whichever of the three contracts the
//! platform offers: the App Service one (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`,
//! api-version 2019-08-01), the older one the Functions host's own Linux code uses
//! (`MSI_ENDPOINT` + `MSI_SECRET`, api-version 2017-09-01), or the VM instance metadata
//! service (IMDS). A user-assigned identity is picked by its client id on all three. Tokens are
//! cached until five minutes before they expire, and handed to object_store as its credential.

use std::sync::Arc;
use std::time::Duration;

use deltalake::logstore::object_store::azure::AzureCredential;
use deltalake::logstore::object_store::{self, CredentialProvider};
use tokio::sync::Mutex;

/// The token audience for Azure Storage (blobs, ADLS Gen2 and queues), the same in every cloud.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";
/// The instance metadata service's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Where managed-identity tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// App Service and Functions: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`.
    AppService { endpoint: String, header: String },
    /// The older App Service contract: `MSI_ENDPOINT` + `MSI_SECRET`.
    Msi { endpoint: String, secret: String },
    /// The instance metadata service (VMs; also what object_store falls back to).
    Imds { endpoint: String },
}

impl std::fmt::Debug for IdentitySource {
    // never the header or secret
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl IdentitySource {
    /// The contract the environment offers, in this order: `IDENTITY_*`, `MSI_*`, IMDS.
    pub fn detect(get: impl Fn(&str) -> Option<String>) -> IdentitySource {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let (Some(endpoint), Some(header)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            return IdentitySource::AppService { endpoint, header };
        }
        if let (Some(endpoint), Some(secret)) = (var("MSI_ENDPOINT"), var("MSI_SECRET")) {
            return IdentitySource::Msi { endpoint, secret };
        }
        IdentitySource::Imds {
            endpoint: var("XDR_IMDS_ENDPOINT").unwrap_or_else(|| IMDS_ENDPOINT.to_owned()),
        }
    }

    /// [`Self::detect`] from the process environment.
    pub fn from_env() -> IdentitySource {
        Self::detect(|k| std::env::var(k).ok())
    }

    /// Which contract, and its endpoint (no secret).
    pub fn describe(&self) -> String {
        match self {
            IdentitySource::AppService { endpoint, .. } => {
                format!("App Service identity endpoint (IDENTITY_ENDPOINT={endpoint})")
            }
            IdentitySource::Msi { endpoint, .. } => {
                format!("MSI endpoint (MSI_ENDPOINT={endpoint})")
            }
            IdentitySource::Imds { endpoint } => {
                format!(
                    "instance metadata service ({endpoint}; no IDENTITY_* or MSI_* variables set)"
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("managed identity token from the {source_desc}: {msg}")]
    Token { source_desc: String, msg: String },
}

/// A token and when it stops being valid.
#[derive(Clone)]
pub struct Token {
    pub access_token: String,
    /// Seconds since the epoch.
    pub expires_on: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Token(<{} bytes>, expires_on {})",
            self.access_token.len(),
            self.expires_on
        )
    }
}

/// Managed-identity credentials for Azure Storage.
pub struct ManagedIdentity {
    source: IdentitySource,
    client_id: Option<String>,
    http: reqwest::Client,
    cached: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ManagedIdentity({:?}, client_id {:?})",
            self.source, self.client_id
        )
    }
}

impl ManagedIdentity {
    /// `client_id`: a user-assigned identity (none: the system-assigned one). Each token
    /// request gives up after `timeout`.
    pub fn new(source: IdentitySource, client_id: Option<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        ManagedIdentity {
            source,
            client_id: client_id.filter(|c| !c.trim().is_empty()),
            http,
            cached: Mutex::new(None),
        }
    }

    pub fn source(&self) -> &IdentitySource {
        &self.source
    }

    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Asks the endpoint for a token (no cache).
    pub async fn fetch(&self) -> Result<Token, IdentityError> {
        let err = |msg: String| IdentityError::Token {
            source_desc: self.source.describe(),
            msg,
        };
        let mut query: Vec<(&str, &str)> = vec![("resource", STORAGE_RESOURCE)];
        let request = match &self.source {
            IdentitySource::AppService { endpoint, header } => {
                query.push(("api-version", "2019-08-01"));
                if let Some(c) = &self.client_id {
                    query.push(("client_id", c));
                }
                self.http
                    .get(endpoint)
                    .header("X-IDENTITY-HEADER", header)
                    .query(&query)
            }
            IdentitySource::Msi { endpoint, secret } => {
                query.push(("api-version", "2017-09-01"));
                if let Some(c) = &self.client_id {
                    query.push(("clientid", c));
                }
                self.http
                    .get(endpoint)
                    .header("Secret", secret)
                    .query(&query)
            }
            IdentitySource::Imds { endpoint } => {
                query.push(("api-version", "2018-02-01"));
                if let Some(c) = &self.client_id {
                    query.push(("client_id", c));
                }
                self.http
                    .get(endpoint)
                    .header("Metadata", "true")
                    .query(&query)
            }
        };
        let response = request.send().await.map_err(|e| {
            err(if e.is_timeout() {
                "no answer (timed out)".into()
            } else if e.is_connect() {
                "cannot connect (is this running on Azure with a managed identity?)".into()
            } else {
                format!("request failed: {e}")
            })
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| err(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            // the body explains (identity not assigned, wrong client id); it holds no token
            let mut body = body;
            body.truncate(300);
            return Err(err(format!("HTTP {status}: {body}")));
        }
        parse_token(&body, chrono::Utc::now().timestamp()).map_err(err)
    }
}

/// The token in an endpoint's answer. `expires_on` comes as seconds (a number or a string)
/// from the newer contracts, and as a date (`11/29/2026 5:00:00 PM +00:00`) from the 2017 one;
/// without it, `expires_in` seconds from `now`.
pub fn parse_token(body: &str, now: i64) -> Result<Token, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let access_token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no access_token")?
        .to_owned();
    let secs = |x: &serde_json::Value| {
        x.as_i64()
            .or_else(|| x.as_str().and_then(|s| s.trim().parse::<i64>().ok()))
    };
    let expires_on = secs(&v["expires_on"])
        .or_else(|| {
            v["expires_on"].as_str().and_then(|s| {
                chrono::DateTime::parse_from_str(s.trim(), "%m/%d/%Y %I:%M:%S %p %:z")
                    .ok()
                    .map(|d| d.timestamp())
            })
        })
        .or_else(|| secs(&v["expires_in"]).map(|n| now + n))
        // unknown: take it as short-lived, so it is fetched again soon
        .unwrap_or(now + 300);
    Ok(Token {
        access_token,
        expires_on,
    })
}

impl ManagedIdentity {
    /// A token, from the cache while it has more than five minutes left.
    pub async fn fetch_cached(&self) -> Result<String, IdentityError> {
        let now = chrono::Utc::now().timestamp();
        let mut cached = self.cached.lock().await;
        if let Some((t, expires_on)) = cached.as_ref()
            && *expires_on - now > 300
        {
            return Ok(t.clone());
        }
        let t = self.fetch().await?;
        *cached = Some((t.access_token.clone(), t.expires_on));
        Ok(t.access_token)
    }
}

#[async_trait::async_trait]
impl CredentialProvider for ManagedIdentity {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let t = self
            .fetch_cached()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "MicrosoftAzure",
                source: Box::new(e),
            })?;
        Ok(Arc::new(AzureCredential::BearerToken(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_contract_in_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(matches!(
            IdentitySource::detect(env(&[
                ("IDENTITY_ENDPOINT", "http://a"),
                ("IDENTITY_HEADER", "h"),
                ("MSI_ENDPOINT", "http://b"),
                ("MSI_SECRET", "s")
            ])),
            IdentitySource::AppService { .. }
        ));
        assert!(matches!(
            IdentitySource::detect(env(&[
                ("IDENTITY_ENDPOINT", "http://a"),
                ("MSI_ENDPOINT", "http://b"),
                ("MSI_SECRET", "s")
            ])),
            IdentitySource::Msi { .. }
        ));
        assert_eq!(
            IdentitySource::detect(env(&[])),
            IdentitySource::Imds {
                endpoint: IMDS_ENDPOINT.into()
            }
        );
        let d = format!(
            "{:?}",
            IdentitySource::detect(env(&[
                ("MSI_ENDPOINT", "http://b"),
                ("MSI_SECRET", "topsecret")
            ]))
        );
        assert!(!d.contains("topsecret"), "{d}");
    }

    #[test]
    fn parses_each_contracts_expiry() {
        let now = 1_800_000_000;
        assert_eq!(
            parse_token(r#"{"access_token":"t","expires_on":"1800003600"}"#, now)
                .unwrap()
                .expires_on,
            1_800_003_600
        );
        assert_eq!(
            parse_token(r#"{"access_token":"t","expires_on":1800003600}"#, now)
                .unwrap()
                .expires_on,
            1_800_003_600
        );
        let d = parse_token(
            r#"{"access_token":"t","expires_on":"11/29/2026 5:00:00 PM +00:00"}"#,
            now,
        )
        .unwrap();
        assert_eq!(
            d.expires_on,
            chrono::DateTime::parse_from_rfc3339("2026-11-29T17:00:00Z")
                .unwrap()
                .timestamp()
        );
        assert_eq!(
            parse_token(r#"{"access_token":"t","expires_in":"3599"}"#, now)
                .unwrap()
                .expires_on,
            now + 3599
        );
        assert!(parse_token(r#"{"error":"invalid_request"}"#, now).is_err());
        assert!(parse_token("<html>", now).is_err());
        assert!(
            !format!(
                "{:?}",
                parse_token(r#"{"access_token":"SECRET"}"#, now).unwrap()
            )
            .contains("SECRET")
        );
    }
}
