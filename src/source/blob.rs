//! Defender's hourly append blobs: which URLs name one (and which are refused), the object
//! stores of the export account(s), reading a blob's byte ranges, and listing its hour
//! folders. [`crate::ingest`] reads blobs from their watermarks and runs the sweep.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use futures::TryStreamExt;
use url::Url;

use crate::model::SourceId;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The URL is not one this app reads. The URL itself is never part of the message: it may
    /// carry a SAS token or a password.
    #[error("not an accepted blob URL: {msg}")]
    Url { msg: String },
    #[error("blob storage {account}: {source}")]
    Store {
        account: String,
        source: deltalake::ObjectStoreError,
    },
}

/// Longest blob URL accepted (Azure's own limits: a 1,024-character blob name, a 63-character
/// container, a 24-character account).
pub const MAX_BLOB_URL_CHARS: usize = 2048;
/// Longest blob name (Azure's limit).
const MAX_BLOB_NAME_CHARS: usize = 1024;

/// A storage account name: 3-24 lowercase letters and digits.
pub fn valid_account(a: &str) -> bool {
    (3..=24).contains(&a.len())
        && a.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// A container name: 3-63 lowercase letters, digits and single dashes, starting and ending
/// with a letter or digit.
pub fn valid_container(c: &str) -> bool {
    (3..=63).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--")
}

/// Which blob URLs are accepted: the account-style URLs of the configured cloud
/// (`https://<account>.blob.<suffix>/…`, also `.dfs.`), and path-style URLs
/// (`http://127.0.0.1:10000/<account>/…`, the storage emulator) only under the configured
/// `XDR_BLOB_URL_BASE`.
#[derive(Clone, Debug)]
pub struct UrlPolicy {
    /// `core.windows.net` (public cloud), `core.chinacloudapi.cn`, `core.usgovcloudapi.net`.
    pub endpoint_suffix: String,
    /// A path-style base accepted besides (scheme, host, port, account).
    pub path_style_base: Option<(String, String, Option<u16>, String)>,
}

impl Default for UrlPolicy {
    fn default() -> Self {
        UrlPolicy {
            endpoint_suffix: DEFAULT_ENDPOINT_SUFFIX.into(),
            path_style_base: None,
        }
    }
}

/// The public cloud's storage endpoint suffix.
pub const DEFAULT_ENDPOINT_SUFFIX: &str = "core.windows.net";

impl UrlPolicy {
    /// `base` is `XDR_BLOB_URL_BASE`: an account-style base needs nothing more; a path-style
    /// one (`http://127.0.0.1:10000/devstoreaccount1`) is the only path-style origin accepted.
    pub fn new(endpoint_suffix: &str, base: Option<&str>) -> UrlPolicy {
        let mut p = UrlPolicy {
            endpoint_suffix: endpoint_suffix
                .trim()
                .trim_matches('.')
                .to_ascii_lowercase(),
            path_style_base: None,
        };
        if let Some(u) = base.and_then(|b| Url::parse(b).ok())
            && let Some(host) = u.host_str()
        {
            let host = host.to_ascii_lowercase();
            if account_of_host(&host, &p.endpoint_suffix).is_none()
                && let Some(acct) = u.path_segments().and_then(|mut s| s.next())
                && valid_account(acct)
            {
                p.path_style_base = Some((u.scheme().to_owned(), host, u.port(), acct.to_owned()));
            }
        }
        p
    }
}

fn account_of_host<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let rest = host.strip_suffix(suffix)?.strip_suffix('.')?;
    rest.strip_suffix(".blob")
        .or_else(|| rest.strip_suffix(".dfs"))
        .filter(|a| valid_account(a))
}

/// A blob by account, container and path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlobRef {
    pub account: String,
    pub container: String,
    pub path: String,
}

impl BlobRef {
    /// `https://<account>.blob.<suffix>/<container>/<path>` (also `.dfs.`), or a path-style
    /// URL under the policy's emulator base. Refused: user info, a query (a SAS: the app reads
    /// with its own identity) or a fragment, encoded `/`, `\` or dot segments in the path,
    /// control characters, names Azure does not allow, and anything longer than Azure's limits.
    pub fn parse_url(url: &str, policy: &UrlPolicy) -> Result<BlobRef, BlobError> {
        let bad = |msg: &str| BlobError::Url {
            msg: msg.to_owned(),
        };
        if url.len() > MAX_BLOB_URL_CHARS {
            return Err(bad(&format!("longer than {MAX_BLOB_URL_CHARS} characters")));
        }
        // The URL parser resolves dot segments (`/../`, `/%2E%2E/`) itself; a path that has
        // any is refused rather than silently rewritten (a `.` never needs encoding).
        let lower = url.trim().to_ascii_lowercase();
        let raw_path = lower
            .split_once("://")
            .map(|(_, rest)| rest.split(['?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        if raw_path.contains("%2e")
            || raw_path.contains("/./")
            || raw_path.contains("/../")
            || raw_path.ends_with("/.")
            || raw_path.ends_with("/..")
        {
            return Err(bad("the path has a `.` or `..` segment"));
        }
        let u = Url::parse(url.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(bad("expected an https URL"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(bad("a user name or password in the URL is not accepted"));
        }
        if u.query().is_some() {
            return Err(bad(
                "a query string (a SAS token?) is not accepted: send the plain blob URL; the app reads with its own identity",
            ));
        }
        if u.fragment().is_some() {
            return Err(bad("a fragment (#...) is not accepted"));
        }
        let host = u
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        let raw_segments: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
        let mut segments = Vec::with_capacity(raw_segments.len());
        for raw in raw_segments {
            let seg = percent_encoding::percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("the path is not UTF-8"))?;
            if seg.is_empty()
                || seg == "."
                || seg == ".."
                || seg.contains(['/', '\\'])
                || seg.chars().any(char::is_control)
            {
                return Err(bad(
                    "the path has an empty, `.` or `..` segment, an encoded `/` or `\\`, or a control character",
                ));
            }
            segments.push(seg.into_owned());
        }
        let (account, rest) = if let Some(acct) = account_of_host(&host, &policy.endpoint_suffix) {
            if u.scheme() != "https" {
                return Err(bad("expected an https URL"));
            }
            (acct.to_owned(), &segments[..])
        } else {
            let allowed = policy
                .path_style_base
                .as_ref()
                .is_some_and(|(scheme, h, port, acct)| {
                    scheme == u.scheme()
                        && *h == host
                        && *port == u.port()
                        && segments.first().is_some_and(|a| a == acct)
                });
            if !allowed {
                return Err(bad(&format!(
                    "host {host} is not a storage endpoint of this cloud (<account>.blob.{}) nor the configured XDR_BLOB_URL_BASE",
                    policy.endpoint_suffix
                )));
            }
            let (a, r) = segments
                .split_first()
                .ok_or_else(|| bad("no account in the path"))?;
            (a.clone(), r)
        };
        let (container, path) = rest.split_first().ok_or_else(|| bad("no container"))?;
        if !valid_container(container) {
            return Err(bad("not a valid container name"));
        }
        if path.is_empty() {
            return Err(bad("no blob path"));
        }
        let path = path.join("/");
        if path.chars().count() > MAX_BLOB_NAME_CHARS {
            return Err(bad(&format!(
                "a blob name longer than {MAX_BLOB_NAME_CHARS} characters"
            )));
        }
        Ok(BlobRef {
            account,
            container: container.clone(),
            path,
        })
    }

    pub fn source_id(&self) -> SourceId {
        SourceId::blob(&self.account, &self.container, &self.path)
    }

    /// End of the hour the blob belongs to, from its `y=/m=/d=/h=` path segments.
    pub fn hour_end(&self) -> Option<DateTime<Utc>> {
        let mut y = None;
        let mut mo = None;
        let mut d = None;
        let mut h = None;
        for seg in self.path.split('/') {
            if let Some((k, v)) = seg.split_once('=') {
                let n: Option<u32> = v.parse().ok();
                match k {
                    "y" => y = n,
                    "m" if mo.is_none() => mo = n,
                    "d" => d = n,
                    "h" => h = n,
                    _ => {}
                }
            }
        }
        let date = NaiveDate::from_ymd_opt(y? as i32, mo?, d?)?;
        let start = Utc.from_utc_datetime(&date.and_hms_opt(h?, 0, 0)?);
        Some(start + Duration::hours(1))
    }
}

/// Opens (and caches) an object store per storage account and container.
pub struct BlobStores {
    /// object_store Azure options for the Defender account(s): an endpoint and key for
    /// Azurite; nothing on Azure, where the managed identity logs in.
    options: HashMap<String, String>,
    /// The cloud's storage endpoint suffix.
    endpoint_suffix: String,
    /// The managed identity, when no explicit credential is configured.
    identity: Option<Arc<crate::azure::ManagedIdentity>>,
    cache: Mutex<HashMap<(String, String), Arc<dyn ObjectStore>>>,
}

impl BlobStores {
    /// Stores for the export account(s): `options` as `XDR_BLOB_OPTIONS` gives them; without
    /// a credential among them (or in `AZURE_*`), the app's managed identity (a user-assigned
    /// one by `XDR_MANAGED_IDENTITY_CLIENT_ID`), as for the lake.
    pub fn new(options: HashMap<String, String>, endpoint_suffix: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok();
        BlobStores {
            identity: crate::azure::managed_identity_for(&options, &env),
            options,
            endpoint_suffix: endpoint_suffix.to_owned(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self, account: &str, container: &str) -> Result<Arc<dyn ObjectStore>, BlobError> {
        let key = (account.to_owned(), container.to_owned());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let store = crate::azure::container_store(
            Some(account),
            container,
            Some(&self.endpoint_suffix),
            &self.options,
            self.identity.clone(),
            &crate::azure::Patience::normal(),
        )
        .map_err(|source| BlobError::Store {
            account: account.to_owned(),
            source,
        })?;
        cache.insert(key, store.clone());
        Ok(store)
    }

    /// A reader of one blob.
    pub fn reader(&self, blob: &BlobRef) -> Result<BlobReader, BlobError> {
        Ok(BlobReader {
            store: self.store(&blob.account, &blob.container)?,
            path: Path::from(blob.path.as_str()),
            account: blob.account.clone(),
        })
    }
}

/// The start of the hour `t` is in.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(3600) * 3600;
    Utc.timestamp_opt(secs, 0).single().unwrap_or(t)
}

/// The hour folder (`y=/m=/d=/h=/`) of an hour.
pub fn hour_prefix(hour: DateTime<Utc>) -> String {
    hour.format("y=%Y/m=%m/d=%d/h=%H/").to_string()
}

/// The hour folders from `hours` hours ago to now, newest first.
pub fn hour_prefixes(now: DateTime<Utc>, hours: u32) -> Vec<String> {
    (0..=hours as i64)
        .map(|i| hour_prefix(now - Duration::hours(i)))
        .collect()
}

/// The tenant folders at the top of a container (none when it does not exist yet).
pub async fn tenants(
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<Path>, deltalake::ObjectStoreError> {
    match store.list_with_delimiter(None).await {
        Ok(t) => Ok(t.common_prefixes),
        // a container Defender has not written yet
        Err(e) if crate::azure::is_container_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The `*.json` blobs (path, length) of one tenant folder's hour.
pub async fn list_hour(
    store: &Arc<dyn ObjectStore>,
    tenant: &Path,
    hour: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, deltalake::ObjectStoreError> {
    let prefix = Path::from(format!(
        "{}/{}",
        tenant.as_ref(),
        hour_prefix(hour).trim_end_matches('/')
    ));
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    Ok(metas
        .into_iter()
        .filter(|m| m.location.as_ref().ends_with(".json"))
        .map(|m| (m.location.to_string(), m.size as i64))
        .collect())
}

/// One blob, read in byte ranges.
pub struct BlobReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    account: String,
}

impl BlobReader {
    /// The blob's current length.
    pub async fn head(&self) -> Result<i64, BlobError> {
        Ok(self
            .store
            .head(&self.path)
            .await
            .map_err(|e| self.err(e))?
            .size as i64)
    }

    /// Bytes `[from, to)`.
    pub async fn read_range(&self, from: i64, to: i64) -> Result<Bytes, BlobError> {
        self.store
            .get_range(&self.path, from.max(0) as u64..to.max(0) as u64)
            .await
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: deltalake::ObjectStoreError) -> BlobError {
        BlobError::Store {
            account: self.account.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emulator() -> UrlPolicy {
        UrlPolicy::new(
            DEFAULT_ENDPOINT_SUFFIX,
            Some("http://127.0.0.1:10000/devstoreaccount1"),
        )
    }

    #[test]
    fn parses_blob_urls() {
        let p = UrlPolicy::default();
        let b = BlobRef::parse_url("https://Acct.blob.core.windows.net/insights-logs-advancedhunting-deviceinfo/tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json", &p).unwrap();
        assert_eq!(b.account, "acct");
        assert_eq!(b.container, "insights-logs-advancedhunting-deviceinfo");
        assert_eq!(b.path, "tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json");
        assert_eq!(
            b.hour_end().unwrap(),
            Utc.with_ymd_and_hms(2026, 7, 18, 15, 0, 0).unwrap()
        );
        assert_eq!(
            b.source_id().as_str(),
            "blob://acct/insights-logs-advancedhunting-deviceinfo/tenantId=t/y=2026/m=07/d=18/h=14/m=00/PT1H.json"
        );
        let e = BlobRef::parse_url(
            "http://127.0.0.1:10000/devstoreaccount1/ccc/a%3Db/PT1H.json",
            &emulator(),
        )
        .unwrap();
        assert_eq!(
            (e.account.as_str(), e.container.as_str(), e.path.as_str()),
            ("devstoreaccount1", "ccc", "a=b/PT1H.json")
        );
        // sovereign clouds: the suffix is a setting
        let cn = UrlPolicy::new("core.chinacloudapi.cn", None);
        assert!(
            BlobRef::parse_url("https://acct.blob.core.chinacloudapi.cn/ccc/x.json", &cn).is_ok()
        );
        assert!(BlobRef::parse_url("https://acct.blob.core.windows.net/ccc/x.json", &cn).is_err());
    }

    #[test]
    fn refuses_what_it_should_without_echoing_secrets() {
        let p = UrlPolicy::default();
        let long = format!(
            "https://acct.blob.core.windows.net/ccc/{}",
            "a".repeat(3000)
        );
        let long_name = format!(
            "https://acct.blob.core.windows.net/ccc/{}",
            "a/".repeat(600)
        );
        for bad in [
            "ftp://x/y",
            "nope",
            "https://evil.example.com/ccc/p",
            "https://a.blob.core.windows.net/ccc",
            "https://acct.blob.core.windows.net/ccc",
            "https://acct.blob.core.windows.net/ccc/../x",
            "https://acct.blob.core.windows.net/ccc/a/%2E%2E/x",
            "https://acct.blob.core.windows.net/ccc/a%2F..%2Fb/x.json",
            "https://acct.blob.core.windows.net/ccc/a%5Cb/x.json",
            "https://acct.blob.core.windows.net/ccc/a%00b/x.json",
            "https://acct.blob.core.windows.net/ccc//x.json",
            "https://acct.blob.core.windows.net/Bad_Container/x.json",
            "http://acct.blob.core.windows.net/ccc/x.json",
            "https://user:secretpw@acct.blob.core.windows.net/ccc/x.json",
            "https://acct.blob.core.windows.net/ccc/x.json?sv=2020&sig=SECRETSIG",
            "https://acct.blob.core.windows.net/ccc/x.json#frag",
            // loopback and the emulator only under the configured base
            "http://127.0.0.1:10000/devstoreaccount1/ccc/x.json",
            "http://localhost:10000/devstoreaccount1/ccc/x.json",
            "http://[::1]:10000/devstoreaccount1/ccc/x.json",
            long.as_str(),
            long_name.as_str(),
        ] {
            let e = BlobRef::parse_url(bad, &p).expect_err(bad).to_string();
            assert!(!e.contains("SECRET") && !e.contains("secretpw"), "{e}");
        }
        // under the emulator base: only its own host, port and account
        let em = emulator();
        assert!(
            BlobRef::parse_url("http://127.0.0.1:10000/devstoreaccount1/ccc/x.json", &em).is_ok()
        );
        assert!(
            BlobRef::parse_url("http://127.0.0.1:10001/devstoreaccount1/ccc/x.json", &em).is_err()
        );
        assert!(BlobRef::parse_url("http://127.0.0.1:10000/otheraccount/ccc/x.json", &em).is_err());
        assert!(valid_account("abc123") && !valid_account("ab") && !valid_account("Abc"));
        assert!(valid_container("insights-logs-advancedhunting-deviceinfo"));
        assert!(!valid_container("a--b") && !valid_container("-ab") && !valid_container("ab"));
    }

    #[test]
    fn hour_prefixes_cover_the_window() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 1, 30, 0).unwrap();
        assert_eq!(
            hour_prefixes(now, 2),
            vec![
                "y=2026/m=01/d=01/h=01/",
                "y=2026/m=01/d=01/h=00/",
                "y=2025/m=12/d=31/h=23/"
            ]
        );
    }
}
