#![allow(dead_code)]
//! A real Azurite blob service on a free loopback port for one test, stopped with SIGKILL on
//! drop (it does not exit on SIGTERM reliably). Installed by `scripts/test.sh` (npm ci).

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Azurite {
    pub async fn start() -> Azurite {
        let bin = std::env::var("XDR_AZURITE_BIN").unwrap_or_else(|_| {
            format!(
                "{}/node_modules/.bin/azurite-blob",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run scripts/test.sh (it installs Azurite with npm ci)"
        );
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--silent",
                "--location",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        let az = Azurite {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        az
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// object_store options for this Azurite (the explicit form production also uses).
    pub fn storage_options(&self) -> HashMap<String, String> {
        [
            ("azure_storage_account_name", ACCOUNT.to_owned()),
            ("azure_storage_account_key", KEY.to_owned()),
            ("azure_storage_endpoint", self.endpoint()),
            ("allow_http", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A SharedKey-signed PUT (Azurite refuses anonymous writes). `resource` is
    /// `container[/blob]`, `query` the canonical query pairs, `extra` more x-ms-* headers.
    async fn signed_put(
        &self,
        resource: &str,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> reqwest::StatusCode {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut headers: Vec<(String, String)> = vec![
            ("x-ms-date".into(), date.clone()),
            ("x-ms-version".into(), "2021-08-06".into()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        headers.sort();
        let mut canon = String::new();
        for (k, v) in &headers {
            canon.push_str(&format!("{k}:{v}\n"));
        }
        canon.push_str(&format!("/{ACCOUNT}/{ACCOUNT}/{resource}"));
        for (k, v) in query {
            canon.push_str(&format!("\n{k}:{v}"));
        }
        let len = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let sts = format!("PUT\n\n\n{len}\n\n\n\n\n\n\n\n\n{canon}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &STANDARD.decode(KEY).unwrap());
        let sig = STANDARD.encode(ring::hmac::sign(&key, sts.as_bytes()).as_ref());
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut req = reqwest::Client::new()
            .put(format!("{}/{resource}?{}", self.endpoint(), qs.join("&")))
            .header("Content-Length", body.len().to_string())
            .header("Authorization", format!("SharedKey {ACCOUNT}:{sig}"));
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(body)
            .send()
            .await
            .expect("azurite request")
            .status()
    }

    /// Creates a container.
    pub async fn create_container(&self, container: &str) {
        let s = self
            .signed_put(container, &[("restype", "container")], &[], vec![])
            .await;
        assert!(s.is_success() || s.as_u16() == 409, "{s}");
    }

    /// Creates an empty append blob (what Defender's export does at the start of an hour).
    pub async fn create_append_blob(&self, container: &str, path: &str) {
        let s = self
            .signed_put(
                &format!("{container}/{path}"),
                &[],
                &[("x-ms-blob-type", "AppendBlob")],
                vec![],
            )
            .await;
        assert!(s.is_success(), "{s}");
    }

    /// Appends a block to an append blob.
    pub async fn append(&self, container: &str, path: &str, bytes: &[u8]) {
        let s = self
            .signed_put(
                &format!("{container}/{path}"),
                &[("comp", "appendblock")],
                &[],
                bytes.to_vec(),
            )
            .await;
        assert!(s.is_success(), "{s}");
    }
}

/// A real Azurite queue service on a free loopback port, stopped with SIGKILL on drop.
pub struct AzuriteQueue {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for AzuriteQueue {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AzuriteQueue {
    pub async fn start() -> AzuriteQueue {
        let bin = format!(
            "{}/node_modules/.bin/azurite-queue",
            env!("CARGO_MANIFEST_DIR")
        );
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: run scripts/test.sh (it installs Azurite with npm ci)"
        );
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(&bin)
            .args([
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                &port.to_string(),
                "--silent",
                "--location",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-queue");
        let q = AzuriteQueue {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite-queue did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        q
    }

    /// The `XdrQueue` connection string for it.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};QueueEndpoint=http://127.0.0.1:{}/{ACCOUNT}",
            self.port
        )
    }
}
