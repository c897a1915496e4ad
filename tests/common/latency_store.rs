//! An object store with a cloud's latency, for benchmarks and tests: every request (get,
//! put, head, list, each multipart part) first waits `latency`, and it counts requests,
//! commit attempts (puts of `_delta_log/*.json`) and lost commit races (such a put finding
//! the version taken: optimistic concurrency's conflicts).
//!
//! The store waits on a plain thread, not a tokio timer: delta-rs runs some store calls on
//! the delta kernel's own executor, where object_store's `ThrottledStore` (tokio `sleep`)
//! panics for want of a timer driver.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use xdr_ingest::deltalake::logstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart, path::Path,
};

/// Resolves after `d` on any executor (a thread sleeps, then completes a oneshot).
pub async fn wait(d: Duration) {
    if d.is_zero() {
        return;
    }
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[derive(Debug)]
pub struct LatencyStore {
    inner: Arc<dyn ObjectStore>,
    latency: Duration,
    pub requests: Arc<AtomicU64>,
    /// Puts of `_delta_log/<version>.json`, and those that found the version taken.
    pub commit_attempts: AtomicU64,
    pub commit_conflicts: AtomicU64,
    /// Requests by billing class, as Azure Storage prices them: [`PUT`] (puts, multipart
    /// parts and completions, copies, renames), [`GET`] (gets, ranged gets), [`LIST`]
    /// (each list call), [`DELETE`] (each delete stream).
    pub by_class: Arc<[AtomicU64; 4]>,
}

pub const PUT: usize = 0;
pub const GET: usize = 1;
pub const LIST: usize = 2;
pub const DELETE: usize = 3;

/// Counts of [`LatencyStore::by_class`] at a moment, to subtract.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Classes {
    pub put: u64,
    pub get: u64,
    pub list: u64,
    pub delete: u64,
}

impl std::ops::Sub for Classes {
    type Output = Classes;
    fn sub(self, o: Classes) -> Classes {
        Classes {
            put: self.put - o.put,
            get: self.get - o.get,
            list: self.list - o.list,
            delete: self.delete - o.delete,
        }
    }
}

impl LatencyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, latency: Duration) -> Self {
        LatencyStore {
            inner,
            latency,
            requests: Arc::new(AtomicU64::new(0)),
            commit_attempts: AtomicU64::new(0),
            commit_conflicts: AtomicU64::new(0),
            by_class: Arc::new(Default::default()),
        }
    }

    /// The requests so far, by class.
    pub fn classes(&self) -> Classes {
        let c = |i: usize| self.by_class[i].load(Ordering::Relaxed);
        Classes {
            put: c(PUT),
            get: c(GET),
            list: c(LIST),
            delete: c(DELETE),
        }
    }

    async fn delay(&self, class: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        wait(self.latency).await;
    }
    fn delayed<T: Send + 'static>(
        &self,
        class: usize,
        s: BoxStream<'static, T>,
    ) -> BoxStream<'static, T> {
        let (latency, requests) = (self.latency, self.requests.clone());
        let by_class = self.by_class.clone();
        futures::stream::once(async move {
            requests.fetch_add(1, Ordering::Relaxed);
            by_class[class].fetch_add(1, Ordering::Relaxed);
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
    by_class: Arc<[AtomicU64; 4]>,
}

#[async_trait]
impl MultipartUpload for LatencyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let (latency, requests) = (self.latency, self.requests.clone());
        let by_class = self.by_class.clone();
        Box::pin(async move {
            requests.fetch_add(1, Ordering::Relaxed);
            by_class[PUT].fetch_add(1, Ordering::Relaxed);
            wait(latency).await;
            part.await
        })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_class[PUT].fetch_add(1, Ordering::Relaxed);
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
        self.delay(PUT).await;
        let s = location.as_ref();
        let commit =
            s.contains("_delta_log/") && s.ends_with(".json") && !s.contains("_last_checkpoint");
        if commit {
            self.commit_attempts.fetch_add(1, Ordering::Relaxed);
        }
        let r = self.inner.put_opts(location, payload, opts).await;
        if commit && matches!(r, Err(object_store::Error::AlreadyExists { .. })) {
            self.commit_conflicts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.delay(PUT).await;
        Ok(Box::new(LatencyUpload {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            latency: self.latency,
            requests: self.requests.clone(),
            by_class: self.by_class.clone(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.delay(GET).await;
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.delay(GET).await;
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.delayed(DELETE, self.inner.delete_stream(locations))
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.delayed(LIST, self.inner.list(prefix))
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.delayed(LIST, self.inner.list_with_offset(prefix, offset))
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.delay(LIST).await;
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.delay(PUT).await;
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.delay(PUT).await;
        self.inner.rename_opts(from, to, options).await
    }
}
