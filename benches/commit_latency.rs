//! Commit latency on a store with realistic latency: a batch touching all 26 tables against a
//! batch touching one. Every request to the store (get, put, head, list, each multipart
//! part) first waits `--latency-ms` (default 30 ms), as a cloud object store would. Tables
//! are created and cached before the measurement; each measured batch is a new position of
//! one Event Hub partition, so every table of the batch makes a real commit with its txn.
//!
//! `cargo bench --bench commit_latency` (full: 30 ms, 7 batches per case, medians);
//! under `cargo test` it runs once with 2 ms so it cannot rot.
//!
//! The store waits on a plain thread, not a tokio timer: delta-rs runs some store calls on
//! the delta kernel's own executor, where object_store's `ThrottledStore` (tokio `sleep`)
//! panics for want of a timer driver.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use xdr_ingest::decode::Unit;
use xdr_ingest::deltalake::logstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
    local::LocalFileSystem, path::Path,
};
use xdr_ingest::model::SourceId;
use xdr_ingest::pipeline::{PipelineConfig, ingest_units};
use xdr_ingest::registry::registry;
use xdr_ingest::sink::{Lake, LakeSettings};

/// Resolves after `d` on any executor (a thread sleeps, then completes a oneshot).
async fn wait(d: Duration) {
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[derive(Debug)]
struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    latency: Duration,
    requests: Arc<AtomicU64>,
}

impl LatencyStore {
    async fn delay(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        wait(self.latency).await;
    }
    fn delayed<T: Send + 'static>(&self, s: BoxStream<'static, T>) -> BoxStream<'static, T> {
        let (latency, requests) = (self.latency, self.requests.clone());
        futures::stream::once(async move {
            requests.fetch_add(1, Ordering::Relaxed);
            wait(latency).await;
        })
        .flat_map(move |_| futures::stream::empty())
        .chain(s)
        .boxed()
    }
}

impl fmt::Display for LatencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatencyStore({:?}, {})", self.latency, self.inner)
    }
}

#[derive(Debug)]
struct LatencyUpload {
    inner: Box<dyn MultipartUpload>,
    latency: Duration,
    requests: Arc<AtomicU64>,
}

#[async_trait]
impl MultipartUpload for LatencyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let (latency, requests) = (self.latency, self.requests.clone());
        Box::pin(async move {
            requests.fetch_add(1, Ordering::Relaxed);
            wait(latency).await;
            part.await
        })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        wait(self.latency).await;
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for LatencyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.delay().await;
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.delay().await;
        Ok(Box::new(LatencyUpload {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            latency: self.latency,
            requests: self.requests.clone(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.delay().await;
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.delay().await;
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.delayed(self.inner.delete_stream(locations))
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.delayed(self.inner.list(prefix))
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.delayed(self.inner.list_with_offset(prefix, offset))
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.delay().await;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.delay().await;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.delay().await;
        self.inner.rename_opts(from, to, options).await
    }
}

/// One Event Hub body with `per_table` records for each of `categories`.
fn body(categories: &[&str], per_table: usize, seq: i64) -> String {
    let mut recs = Vec::new();
    for (i, c) in categories.iter().enumerate() {
        for j in 0..per_table {
            recs.push(format!(
                r#"{{"time":"2026-11-26T10:00:00Z","tenantId":"t","category":"{c}","properties":{{"Timestamp":"2026-11-26T09:59:{:02}Z","DeviceId":"d{i}","DeviceName":"host-{j}","ActionType":"X","ReportId":{seq}}}}}"#,
                j % 60
            ));
        }
    }
    format!(r#"{{"records":[{}]}}"#, recs.join(","))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let latency_ms: u64 = std::env::args()
        .skip_while(|a| a != "--latency-ms")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 30 } else { 2 });
    let batches = if full { 7 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let requests = Arc::new(AtomicU64::new(0));
        let store = Arc::new(LatencyStore {
            inner: Arc::new(LocalFileSystem::new()),
            latency: Duration::from_millis(latency_ms),
            requests: requests.clone(),
        });
        // as the handler runs: checkpoints left to the maintenance timer
        let settings = LakeSettings {
            store: Some(store),
            checkpoint_on_commit: false,
            ..Default::default()
        };
        let lake = Lake::open(dir.path().to_str().expect("utf-8 path"), settings).expect("lake");
        let all: Vec<&str> = registry()
            .tables()
            .iter()
            .map(|t| t.category.as_str())
            .collect();
        let cfg = PipelineConfig::default();
        let source = SourceId::event_hub("ns", "hub", "0");
        let mut seq = 0i64;
        let mut run = async |cats: &[&str]| -> (f64, u64) {
            seq += 1;
            let text = body(cats, 20, seq);
            let units = [Unit::new(text.as_bytes(), seq)];
            let before = requests.load(Ordering::Relaxed);
            let t = Instant::now();
            let r = ingest_units(&lake, &source, &units, &cfg)
                .await
                .expect("ingest");
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(r.stats.typed_total(), (cats.len() * 20) as u64);
            (secs, requests.load(Ordering::Relaxed) - before)
        };
        // create and cache every table first
        run(&all).await;
        run(&all).await;
        let mut one = Vec::new();
        let mut many = Vec::new();
        let (mut one_req, mut many_req) = (0, 0);
        for _ in 0..batches {
            let (s, r) = run(&all[..1]).await;
            one.push(s);
            one_req = r;
            let (s, r) = run(&all).await;
            many.push(s);
            many_req = r;
        }
        let (one, many) = (median(one), median(many));
        println!(
            "commit latency, {latency_ms} ms per store request, median of {batches} batch(es):"
        );
        println!(
            "  1 table  : {:>7.0} ms per batch ({one_req} store requests)",
            one * 1e3
        );
        println!(
            "  {} tables: {:>7.0} ms per batch ({many_req} store requests) = {:.2}x one table",
            all.len(),
            many * 1e3,
            many / one
        );
    });
}
