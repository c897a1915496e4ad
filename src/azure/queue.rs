//! The Storage Queue calls `doctor` makes on the work queue: put a probe message (kept
//! invisible), delete it, and peek. The connection is read the way the Functions host reads
//! the queue bindings' `XdrQueue` connection: `XdrQueue__queueServiceUri` with the managed
//! identity, or an `XdrQueue` connection string (an account key, or
//! `UseDevelopmentStorage=true` for the emulator).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use url::Url;

use super::identity::ManagedIdentity;

const VERSION: &str = "2021-08-06";
/// The storage emulator's well-known account and key.
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone)]
enum Auth {
    Key(Vec<u8>),
    Identity(Arc<ManagedIdentity>),
}

/// A Storage Queue service endpoint and how to sign requests to it.
#[derive(Clone)]
pub struct QueueService {
    /// `https://<account>.queue.<suffix>` or a path-style emulator URL (with the account).
    base: Url,
    account: String,
    auth: Auth,
    http: reqwest::Client,
}

impl std::fmt::Debug for QueueService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueService({})", self.base)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Config(String),
    #[error("{what}: {msg}")]
    Request { what: String, msg: String },
}

impl QueueService {
    /// From the `XdrQueue` connection settings (`prefix` = `XdrQueue`); `None` when neither is
    /// set. `identity` is used with `<prefix>__queueServiceUri`.
    pub fn from_settings(
        prefix: &str,
        get: &dyn Fn(&str) -> Option<String>,
        identity: Option<Arc<ManagedIdentity>>,
        timeout: Duration,
    ) -> Result<Option<QueueService>, QueueError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| QueueError::Config(e.to_string()))?;
        if let Some(uri) = var(&format!("{prefix}__queueServiceUri")) {
            let base = Url::parse(uri.trim()).map_err(|e| {
                QueueError::Config(format!("{prefix}__queueServiceUri is not a URL: {e}"))
            })?;
            let account = base
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or_default()
                .to_owned();
            let identity = identity.ok_or_else(|| {
                QueueError::Config(format!(
                    "{prefix}__queueServiceUri needs the managed identity, but explicit storage credentials are configured"
                ))
            })?;
            return Ok(Some(QueueService {
                base,
                account,
                auth: Auth::Identity(identity),
                http,
            }));
        }
        let Some(conn) = var(prefix) else {
            return Ok(None);
        };
        let parts: std::collections::HashMap<String, String> = conn
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        if parts
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let base = Url::parse(&format!("http://127.0.0.1:10001/{DEV_ACCOUNT}"))
                .map_err(|e| QueueError::Config(e.to_string()))?;
            return Ok(Some(QueueService {
                base,
                account: DEV_ACCOUNT.into(),
                auth: Auth::Key(BASE64.decode(DEV_KEY).unwrap_or_default()),
                http,
            }));
        }
        let account = parts
            .get("accountname")
            .cloned()
            .ok_or_else(|| QueueError::Config(format!("{prefix}: no AccountName")))?;
        let key = parts
            .get("accountkey")
            .and_then(|k| BASE64.decode(k).ok())
            .ok_or_else(|| QueueError::Config(format!("{prefix}: no valid AccountKey")))?;
        let base = match parts.get("queueendpoint") {
            Some(e) => e.clone(),
            None => format!(
                "{}://{account}.queue.{}",
                parts
                    .get("defaultendpointsprotocol")
                    .map(String::as_str)
                    .unwrap_or("https"),
                parts
                    .get("endpointsuffix")
                    .map(String::as_str)
                    .unwrap_or(super::DEFAULT_ENDPOINT_SUFFIX)
            ),
        };
        let base = Url::parse(&base)
            .map_err(|e| QueueError::Config(format!("{prefix}: QueueEndpoint: {e}")))?;
        Ok(Some(QueueService {
            base,
            account,
            auth: Auth::Key(key),
            http,
        }))
    }

    /// The service URL (no secret in it).
    pub fn endpoint(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        let p = format!("{}/{}", u.path().trim_end_matches('/'), path);
        u.set_path(&p);
        u
    }

    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<String, QueueError> {
        let err = |msg: String| QueueError::Request {
            what: what.to_owned(),
            msg,
        };
        let mut url = self.url(path);
        for (k, v) in query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let len = body.as_ref().map(|b| b.len()).unwrap_or(0);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", VERSION);
        match &self.auth {
            Auth::Key(key) => {
                let sig = shared_key(
                    key,
                    &self.account,
                    &method,
                    &url,
                    &date,
                    len,
                    body.is_some(),
                );
                req = req.header("Authorization", format!("SharedKey {}:{sig}", self.account));
            }
            Auth::Identity(mi) => {
                let t = mi.fetch_cached().await.map_err(|e| err(e.to_string()))?;
                req = req.header("Authorization", format!("Bearer {t}"));
            }
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/xml")
                .header("Content-Length", len.to_string())
                .body(b);
        } else if method == reqwest::Method::PUT || method == reqwest::Method::POST {
            req = req.header("Content-Length", "0");
        }
        let resp = req.send().await.map_err(|e| {
            err(if e.is_timeout() {
                format!("no answer from {}", self.base)
            } else {
                format!("cannot reach {}: {e}", self.base)
            })
        })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let code = between(&text, "<Code>", "</Code>").unwrap_or_default();
            return Err(err(format!("HTTP {status} {code}")));
        }
        Ok(text)
    }

    /// Creates a queue (the emulator in tests; deployments create theirs in the templates).
    pub async fn create_queue(&self, queue: &str) -> Result<(), QueueError> {
        match self
            .send("create queue", reqwest::Method::PUT, queue, &[], None)
            .await
        {
            Err(QueueError::Request { msg, .. }) if msg.contains("QueueAlreadyExists") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Puts a message that stays invisible for `hidden` and returns its id and pop receipt.
    pub async fn put_invisible(
        &self,
        queue: &str,
        text: &str,
        hidden: Duration,
    ) -> Result<(String, String), QueueError> {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            BASE64.encode(text)
        );
        let vis = hidden.as_secs().max(1).to_string();
        let answer = self
            .send(
                "send a message",
                reqwest::Method::POST,
                &format!("{queue}/messages"),
                &[("visibilitytimeout", vis.as_str())],
                Some(body),
            )
            .await?;
        let id = between(&answer, "<MessageId>", "</MessageId>");
        let receipt = between(&answer, "<PopReceipt>", "</PopReceipt>");
        match (id, receipt) {
            (Some(i), Some(r)) => Ok((i, r)),
            _ => Err(QueueError::Request {
                what: "send a message".into(),
                msg: "the answer has no MessageId/PopReceipt".into(),
            }),
        }
    }

    pub async fn delete_message(
        &self,
        queue: &str,
        id: &str,
        receipt: &str,
    ) -> Result<(), QueueError> {
        self.send(
            "delete the message",
            reqwest::Method::DELETE,
            &format!("{queue}/messages/{id}"),
            &[("popreceipt", receipt)],
            None,
        )
        .await
        .map(|_| ())
    }

    /// Peeks at up to 32 visible messages and returns how many there are.
    pub async fn peek(&self, queue: &str) -> Result<usize, QueueError> {
        let answer = self
            .send(
                "peek",
                reqwest::Method::GET,
                &format!("{queue}/messages"),
                &[("peekonly", "true"), ("numofmessages", "32")],
                None,
            )
            .await?;
        Ok(answer.matches("<QueueMessage>").count())
    }
}

fn between(text: &str, a: &str, b: &str) -> Option<String> {
    let start = text.find(a)? + a.len();
    let end = text[start..].find(b)? + start;
    Some(text[start..end].to_owned())
}

/// The SharedKey signature of a request (Storage services, version 2015-02-21 and later).
fn shared_key(
    key: &[u8],
    account: &str,
    method: &reqwest::Method,
    url: &Url,
    date: &str,
    content_length: usize,
    has_body: bool,
) -> String {
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    let mut resource = format!("/{account}{}", url.path());
    for (k, v) in params {
        resource.push_str(&format!("\n{k}:{v}"));
    }
    let length = if content_length > 0 {
        content_length.to_string()
    } else {
        String::new()
    };
    let content_type = if has_body { "application/xml" } else { "" };
    let to_sign = format!(
        "{method}\n\n\n{length}\n\n{content_type}\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n{resource}"
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    BASE64.encode(ring::hmac::sign(&k, to_sign.as_bytes()).as_ref())
}
