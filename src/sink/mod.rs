//! Delta sink: the lake (a local directory or an Azure URL), one cached [`TableHandle`] per
//! table, and the exactly-once commit of a built batch to every table it touches, in parallel.

pub mod inspect;
pub mod maintain;
pub mod redrives;
pub mod runs;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::error::ArrowError;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTableError, ObjectStore};
use url::Url;

pub(crate) use table::write_one_partition;
pub use table::{AppendOutcome, TableHandle, with_linger, writer_properties};

use crate::model::Category;
use crate::registry::{DEAD_LETTER_TABLE, dead_letter_schema, meta, untyped_schema};
use runs::INGEST_RUNS_TABLE;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("lake location `{location}` is not usable: {msg}")]
    Location { location: String, msg: String },
    #[error("Delta table {table}: {source}")]
    Delta {
        table: String,
        source: Box<DeltaTableError>,
    },
    #[error("building the batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("schema: {0}")]
    Schema(String),
    #[error(
        "table {table}: gave up after {attempts} redos against concurrent writers of the same source"
    )]
    ConflictRetries { table: String, attempts: usize },
    /// The commit that was to carry this append stopped before it said how it went (its task
    /// panicked or was dropped): the append may or may not have landed; a redelivery is exact.
    #[error("table {table}: the commit carrying this append was abandoned; deliver it again")]
    Abandoned { table: String },
    /// The error of a commit that carried several appends (group commit), given to each.
    #[error(transparent)]
    Group(std::sync::Arc<SinkError>),
    /// Several tables of one batch failed (each would say the same): the count and the first.
    #[error("{failed} of {total} tables could not commit; the first: {first}")]
    Tables {
        failed: usize,
        total: usize,
        first: Box<SinkError>,
    },
}

/// The folder of the untyped tables.
pub const UNTYPED_DIR: &str = "_untyped";

/// How the lake is reached and how its tables are written.
#[derive(Clone, Debug)]
pub struct LakeSettings {
    /// object_store options (`azure_storage_account_name`, `azure_msi_endpoint`, ...).
    pub storage_options: HashMap<String, String>,
    /// A store to use instead of the one the URL implies: the root the URL's path is taken
    /// from (`/` for a local lake, the container on Azure). Tests wrap the local file system
    /// with it to inject failures; on Azure it carries the managed-identity login.
    pub store: Option<Arc<dyn ObjectStore>>,
    /// `delta.setTransactionRetentionDuration` of new tables: how long a source's txn (and so
    /// its exactly-once guarantee) outlives its last write.
    pub txn_retention: String,
    /// Write checkpoints inline after commits (the CLI does; the handler leaves them to the
    /// maintenance timer so no batch pays for one).
    pub checkpoint_on_commit: bool,
    /// Commit attempts on version races with writers of other sources.
    pub commit_retries: usize,
    /// Group commit's linger: how long a table's committer waits for appends of other
    /// sources to join its commit (0: commit at once, as the CLI does); [`with_linger`]
    /// sets it for the appends of one task (the handler's Event Hub invocations).
    pub linger: std::time::Duration,
    /// The linger ends early once the queued appends hold this many bytes.
    pub linger_bytes: u64,
}

impl Default for LakeSettings {
    fn default() -> Self {
        LakeSettings {
            storage_options: HashMap::new(),
            store: None,
            txn_retention: "interval 90 days".into(),
            checkpoint_on_commit: true,
            commit_retries: 100,
            linger: std::time::Duration::ZERO,
            linger_bytes: 64 << 20,
        }
    }
}

/// Parses a lake location: a local path (created if missing) or a URL
/// (`abfss://container@account.dfs.core.windows.net/path`, `az://container/path`, `file://`).
pub fn parse_location(location: &str) -> Result<Url, SinkError> {
    parse_location_with(location, true)
}

/// [`parse_location`] without creating a local directory (a relative path is made absolute
/// against the working directory).
pub fn parse_location_no_create(location: &str) -> Result<Url, SinkError> {
    parse_location_with(location, false)
}

fn parse_location_with(location: &str, create: bool) -> Result<Url, SinkError> {
    let bad = |msg: String| SinkError::Location {
        location: location.to_owned(),
        msg,
    };
    let mut url = if location.contains("://") {
        let url = Url::parse(location).map_err(|e| bad(e.to_string()))?;
        match url.scheme() {
            "file" | "az" | "azure" | "abfs" | "abfss" | "adl" | "memory" => url,
            s => {
                return Err(bad(format!(
                    "unsupported scheme `{s}` (use a path, file://, az://, abfss://)"
                )));
            }
        }
    } else {
        let path = std::path::Path::new(location);
        let abs = if create {
            std::fs::create_dir_all(path).map_err(|e| bad(e.to_string()))?;
            path.canonicalize().map_err(|e| bad(e.to_string()))?
        } else {
            std::path::absolute(path).map_err(|e| bad(e.to_string()))?
        };
        Url::from_directory_path(&abs).map_err(|_| bad("not an absolute path".into()))?
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The lake: a root location and the cached handles of its tables.
pub struct Lake {
    root: Url,
    settings: Arc<LakeSettings>,
    tables: Mutex<HashMap<String, Arc<TableHandle>>>,
    /// The untyped tables (categories the registry does not know), listed once from the
    /// lake's top level, then kept current as this process creates them.
    untyped: tokio::sync::Mutex<Option<std::collections::HashSet<String>>>,
}

/// What committing one built batch did, per table.
#[derive(Clone, Debug, Default)]
pub struct CommitReport {
    /// Per table name (typed tables and `_dead_letters`).
    pub tables: BTreeMap<String, AppendOutcome>,
}

impl CommitReport {
    pub fn written(&self) -> u64 {
        self.tables.values().map(|o| o.written).sum()
    }
    pub fn already_present(&self) -> u64 {
        self.tables.values().map(|o| o.already_present).sum()
    }
}

impl Lake {
    /// Opens the lake at `location`. On Azure, unless the options (or `AZURE_*` variables)
    /// name a credential, the app's managed identity logs in, through whichever token contract
    /// the platform offers (see [`crate::azure::identity`]).
    pub fn open(location: &str, mut settings: LakeSettings) -> Result<Lake, SinkError> {
        let root = parse_location(location)?;
        let env = |k: &str| std::env::var(k).ok();
        if settings.store.is_none()
            && let Some((account, container, suffix)) =
                crate::azure::parse_lake_url(&root, &settings.storage_options, &env)
            && let Some(identity) =
                crate::azure::managed_identity_for(&settings.storage_options, &env)
        {
            let store = crate::azure::container_store(
                account.as_deref(),
                &container,
                suffix.as_deref(),
                &settings.storage_options,
                Some(identity),
                &crate::azure::Patience::normal(),
            )
            .map_err(|e| SinkError::Location {
                location: location.to_owned(),
                msg: e.to_string(),
            })?;
            settings.store = Some(store);
        }
        Ok(Lake {
            root,
            settings: Arc::new(settings),
            tables: Mutex::new(HashMap::new()),
            untyped: tokio::sync::Mutex::new(None),
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    fn handle(
        &self,
        name: &str,
        schema: impl FnOnce() -> deltalake::arrow::datatypes::SchemaRef,
        partition_by: Option<&'static str>,
    ) -> Result<Arc<TableHandle>, SinkError> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = tables.get(name) {
            return Ok(h.clone());
        }
        let url = self
            .root
            .join(&format!("{name}/"))
            .map_err(|e| SinkError::Location {
                location: self.root.to_string(),
                msg: e.to_string(),
            })?;
        let h = Arc::new_cyclic(|me| {
            TableHandle::new(
                name.to_owned(),
                url,
                schema(),
                partition_by,
                self.settings.clone(),
                me.clone(),
            )
        });
        tables.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// The typed table of a category.
    pub fn typed(&self, cat: Category) -> Result<Arc<TableHandle>, SinkError> {
        self.handle(
            cat.table_name(),
            || cat.table().arrow_schema(),
            Some(meta::DATE),
        )
    }

    pub fn dead_letters(&self) -> Result<Arc<TableHandle>, SinkError> {
        self.handle(DEAD_LETTER_TABLE, dead_letter_schema, Some(meta::DATE))
    }

    pub fn ingest_runs(&self) -> Result<Arc<TableHandle>, SinkError> {
        self.handle(INGEST_RUNS_TABLE, runs::schema, None)
    }

    /// Handle of a table by name (typed, `_dead_letters` or `_ingest_runs`).
    /// The redrive audit table.
    pub fn redrives(&self) -> Result<Arc<TableHandle>, SinkError> {
        self.handle(redrives::REDRIVES_TABLE, redrives::schema, None)
    }

    /// The table of a category the registry does not know: `<lake>/_untyped/<name>`, apart
    /// from the typed tables, so that a typed table of the same name can come later (a schema
    /// overlay) and a redrive can fill it from this one.
    pub fn untyped(&self, name: &str) -> Result<Arc<TableHandle>, SinkError> {
        self.handle(
            &format!("{UNTYPED_DIR}/{name}"),
            untyped_schema,
            Some(meta::DATE),
        )
    }

    /// Handle of a table by name (typed, untyped, `_dead_letters` or `_ingest_runs`); an
    /// untyped table only if the name is a plausible one.
    pub fn table_by_name(&self, name: &str) -> Result<Option<Arc<TableHandle>>, SinkError> {
        if name == DEAD_LETTER_TABLE {
            return self.dead_letters().map(Some);
        }
        if name == INGEST_RUNS_TABLE {
            return self.ingest_runs().map(Some);
        }
        if name == redrives::REDRIVES_TABLE {
            return self.redrives().map(Some);
        }
        match Category::from_table_name(name) {
            Some(c) => self.typed(c).map(Some),
            None if crate::registry::valid_table_name(name) => self.untyped(name).map(Some),
            None => Ok(None),
        }
    }

    /// The lake's untyped tables: the folders of `_untyped/` that hold a Delta log. Listed once
    /// per process.
    pub async fn untyped_tables(&self) -> Result<crate::pipeline::UntypedTables, SinkError> {
        let mut cache = self.untyped.lock().await;
        if cache.is_none() {
            *cache = Some(self.list_untyped().await?);
        }
        Ok(crate::pipeline::UntypedTables {
            existing: cache.clone().unwrap_or_default(),
        })
    }

    async fn list_untyped(&self) -> Result<std::collections::HashSet<String>, SinkError> {
        let err = |e: deltalake::ObjectStoreError| SinkError::Location {
            location: self.root.to_string(),
            msg: e.to_string(),
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Option<deltalake::Path>) =
            match &self.settings.store {
                Some(s) => (
                    s.clone(),
                    Some(deltalake::Path::from(self.root.path().trim_matches('/'))),
                ),
                None => {
                    let logstore = deltalake::DeltaTableBuilder::from_url(self.root.clone())
                        .and_then(|b| {
                            b.with_storage_options(self.settings.storage_options.clone())
                                .build_storage()
                        })
                        .map_err(|e| SinkError::Location {
                            location: self.root.to_string(),
                            msg: e.to_string(),
                        })?;
                    (logstore.object_store(None), None)
                }
            };
        let dir = match prefix {
            Some(p) if !p.as_ref().is_empty() => p.join(UNTYPED_DIR),
            _ => deltalake::Path::from(UNTYPED_DIR),
        };
        let top = match store.list_with_delimiter(Some(&dir)).await {
            Ok(t) => t,
            Err(e) if crate::azure::is_container_not_found(&e) => return Ok(Default::default()),
            Err(e) => return Err(err(e)),
        };
        let mut out = std::collections::HashSet::new();
        for p in top.common_prefixes {
            let Some(name) = p.filename() else { continue };
            if !crate::registry::valid_table_name(name) {
                continue;
            }
            let log = p.clone().join("_delta_log");
            let has_log = store
                .list_with_delimiter(Some(&log))
                .await
                .is_ok_and(|l| !l.objects.is_empty());
            if has_log {
                out.insert(name.to_owned());
            }
        }
        Ok(out)
    }

    /// Commits every table's rows of one batch, in parallel, each exactly once per source
    /// (the rows' `_source`). Returns when all have committed; on error some tables may have
    /// committed, which a redelivery of the same data heals (their rows are filtered by the
    /// watermarks).
    pub async fn commit(
        &self,
        typed: Vec<(Category, RecordBatch)>,
        untyped: Vec<(String, RecordBatch)>,
        dead: Option<RecordBatch>,
    ) -> Result<CommitReport, SinkError> {
        self.commit_many(
            typed.into_iter().map(|(c, b)| (c, vec![b])).collect(),
            untyped.into_iter().map(|(n, b)| (n, vec![b])).collect(),
            dead.into_iter().collect(),
        )
        .await
    }

    /// [`Self::commit`] with several batches per table (e.g. one per input file of a chunk),
    /// each table's written into one commit without being copied into one batch first.
    pub async fn commit_many(
        &self,
        typed: Vec<(Category, Vec<RecordBatch>)>,
        untyped: Vec<(String, Vec<RecordBatch>)>,
        dead: Vec<RecordBatch>,
    ) -> Result<CommitReport, SinkError> {
        let rows = |b: &[RecordBatch]| b.iter().map(RecordBatch::num_rows).sum::<usize>();
        let mut jobs = Vec::new();
        for (cat, batches) in typed {
            if rows(&batches) > 0 {
                jobs.push((self.typed(cat)?, batches));
            }
        }
        if !untyped.is_empty() {
            // the new tables count against the cap from now on
            let mut cache = self.untyped.lock().await;
            if let Some(set) = cache.as_mut() {
                set.extend(untyped.iter().map(|(n, _)| n.clone()));
            }
        }
        for (name, batches) in untyped {
            if rows(&batches) > 0 {
                jobs.push((self.untyped(&name)?, batches));
            }
        }
        if rows(&dead) > 0 {
            jobs.push((self.dead_letters()?, dead));
        }
        let results = futures::future::join_all(jobs.iter().map(|(h, b)| async move {
            (
                h.name().to_owned(),
                h.append_exactly_once_many(b, meta::POSITION, meta::SOURCE, &[])
                    .await,
            )
        }))
        .await;
        let total = results.len();
        let mut report = CommitReport::default();
        let mut errors = Vec::new();
        for (name, r) in results {
            match r {
                Ok(o) => {
                    report.tables.insert(name, o);
                }
                Err(e) => {
                    // the caller reports the failure once; each table's error for debugging
                    tracing::debug!(table = %name, error = %e, "commit failed");
                    errors.push(e);
                }
            }
        }
        let failed = errors.len();
        match errors.into_iter().next() {
            None => Ok(report),
            Some(e) if failed == 1 => Err(e),
            Some(e) => Err(SinkError::Tables {
                failed,
                total,
                first: Box::new(e),
            }),
        }
    }
}

/// A delta-rs error of table `h`.
pub(crate) fn delta_err(h: &TableHandle, e: deltalake::DeltaTableError) -> SinkError {
    SinkError::Delta {
        table: h.name().to_owned(),
        source: Box::new(e),
    }
}

/// The projection of a Parquet file onto the columns named in `names` (those it has).
pub(crate) fn projection(
    schema: &deltalake::arrow::datatypes::Schema,
    parquet: &deltalake::parquet::schema::types::SchemaDescriptor,
    names: &[&str],
) -> deltalake::parquet::arrow::ProjectionMask {
    let idx = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| names.contains(&f.name().as_str()))
        .map(|(i, _)| i);
    deltalake::parquet::arrow::ProjectionMask::roots(parquet, idx)
}

/// One object of a table, whole.
pub(crate) async fn get_bytes(
    h: &TableHandle,
    store: &dyn deltalake::ObjectStore,
    path: &deltalake::Path,
) -> Result<bytes::Bytes, SinkError> {
    store
        .get(path)
        .await
        .map_err(|e| delta_err(h, e.into()))?
        .bytes()
        .await
        .map_err(|e| delta_err(h, e.into()))
}
