//! One Delta table of the lake: opened or created on first use, its state cached and refreshed
//! incrementally, and the exactly-once append of DESIGN.md section 4 (txn watermark, filter,
//! commit against the same snapshot, redo on `ConcurrentTransaction`), with concurrent appends
//! of different sources grouped into one commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Date32Type, Int64Type, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::logstore::CommitOrBytes;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use indexmap::IndexMap;
use tokio::sync::Mutex;
use url::Url;

use super::{LakeSettings, SinkError, runs};
use crate::registry::meta;

/// Columns with file statistics (min/max/nulls) in the Delta log. Event time and the lineage
/// columns are what queries and audits filter on; statistics of every column (the Delta
/// default: the first 32) made each commit re-read a wide stats struct of every file of the
/// table (delta-rs rebuilds its file list after each commit), which came to a quarter of the
/// CPU of a 2 GB run. The last three are `_ingest_runs`'. Only the ones a table has are listed
/// in its property (the kernel warns on every snapshot about a listed column it lacks).
const STATS_COLUMNS: [&str; 9] = [
    "Timestamp",
    meta::TIME,
    meta::SOURCE,
    meta::POSITION,
    meta::INGESTED_AT,
    runs::col::SOURCE,
    runs::col::END,
    runs::col::FINISHED_AT,
    super::redrives::col::POSITION,
];

/// How often an append is redone after another writer committed the same source first.
const MAX_CONFLICT_REDOS: usize = 50;

/// Appends in flight in this process at once, over all tables. delta-rs runs the delta
/// kernel's blocking log reads on tokio's blocking pool, and those wait in turn for work of
/// their own on the same pool: with enough appends at once (32 Event Hub partitions on one
/// instance, 27 tables each: 864) every pool thread waited on work no thread was left to
/// run, and the process hung (found by `tests/scale.rs`). A bound far below the pool's 512
/// threads keeps a thread free; the appends queue for a slot instead.
static APPEND_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(64);

/// Appends of different sources that one commit may carry at most (group commit).
const MAX_GROUP: usize = 64;

/// How long the newest version we know of may be taken as the base of the next commit
/// without listing the log. Far below the log retention (30 days): a version we saw as the
/// newest this recently cannot have a successor old enough for log cleanup to have removed
/// it, so a put-if-absent of the next version can never recreate a cleaned-up commit. Past
/// it (an idle table), the next refresh lists the log once.
const HEAD_TRUST: Duration = Duration::from_secs(15 * 60);

tokio::task_local! {
    static LINGER: Duration;
}

/// Runs `f` with the appends it makes lingering up to `linger` for others to join their
/// commits (the Event Hub path of the handler); elsewhere appends take
/// [`LakeSettings::linger`].
pub async fn with_linger<F: std::future::Future>(linger: Duration, f: F) -> F::Output {
    LINGER.scope(linger, f).await
}

async fn append_slot() -> Result<tokio::sync::SemaphorePermit<'static>, SinkError> {
    APPEND_SLOTS
        .acquire()
        .await
        .map_err(|_| SinkError::Schema("the append slots were closed".into()))
}

/// What an exactly-once append did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Rows written by this call.
    pub written: u64,
    /// Rows dropped because the table already had them (position <= watermark).
    pub already_present: u64,
    /// The table version committed, if a commit was made.
    pub version: Option<u64>,
    /// Commit attempts redone after a concurrent writer of the same source.
    pub redone: u32,
}

/// An exactly-once append waiting for the table's committer (see
/// [`TableHandle::append_keyed_many`]).
struct Pending {
    batches: Vec<RecordBatch>,
    keys: Vec<(StringArray, Int64Array)>,
    extra_txns: Vec<(String, i64)>,
    /// The highest position of each source with rows.
    max_by_source: HashMap<String, i64>,
    rows: u64,
    /// Memory its batches hold, for the linger's size bound.
    bytes: u64,
    queued_at: Instant,
    /// How long it may wait for others to join its commit.
    linger: Duration,
    reply: tokio::sync::oneshot::Sender<Result<AppendOutcome, SinkError>>,
}

impl Pending {
    /// Every txn app id this append may commit.
    fn app_ids(&self) -> impl Iterator<Item = &str> {
        self.max_by_source
            .keys()
            .map(String::as_str)
            .chain(self.extra_txns.iter().map(|(s, _)| s.as_str()))
    }
}

struct State {
    /// The table as last loaded (the base): its metadata, protocol and configuration, which
    /// the writer and the commit's protocol check need. Its version may lag `head`: commits
    /// are added to the log without rebuilding the snapshot (delta-rs would re-list the log,
    /// re-read the commit and rebuild the file list after each one).
    table: DeltaTable,
    /// The newest version known to exist. Every commit in (base, head] has been read (or
    /// written) by this process: its txns are in `txns`, and a metadata or protocol change
    /// in one of them set `reload`.
    head: u64,
    /// When `head` was last seen to be the newest version (a commit of ours landed on it, or
    /// the version after it was found absent). See [`HEAD_TRUST`].
    confirmed: Instant,
    /// A commit after the base changed the metadata or protocol: load before the next write.
    reload: bool,
    /// Txn version per app id, exact as of `head`. Ids not in the map have no txn in
    /// (base, head], so one kernel lookup on the base snapshot answers for them; it is kept.
    txns: HashMap<String, Option<i64>>,
    /// The map holds every app id of the table (we have seen its log from version 0), so an
    /// id not in it has no txn and needs no kernel lookup.
    complete: bool,
}

impl State {
    fn new(table: DeltaTable) -> State {
        let head = table.version().unwrap_or(0);
        State {
            // version 0 is the create commit, which carries no txn
            complete: head == 0,
            table,
            head,
            confirmed: Instant::now(),
            reload: false,
            txns: HashMap::new(),
        }
    }

    /// Takes in commit `version` (the one after `head`): its txns, and whether it changed
    /// the metadata or protocol.
    fn apply(&mut self, version: u64, commit: &[u8]) {
        let scan = scan_commit(commit);
        for (id, v) in scan.txns {
            self.txns.insert(id, Some(v));
        }
        self.reload |= scan.metadata;
        self.head = version;
    }
}

/// What a commit file says that the append protocol needs.
struct CommitScan {
    txns: Vec<(String, i64)>,
    /// It carries a `metaData` or `protocol` action.
    metadata: bool,
}

fn scan_commit(commit: &[u8]) -> CommitScan {
    let mut scan = CommitScan {
        txns: Vec::new(),
        metadata: false,
    };
    for line in commit.split(|b| *b == b'\n') {
        if line.starts_with(b"{\"txn\"") {
            if let Ok(TxnLine { txn }) = serde_json::from_slice::<TxnLine>(line) {
                scan.txns.push((txn.app_id, txn.version));
            }
        } else if line.starts_with(b"{\"metaData\"") || line.starts_with(b"{\"protocol\"") {
            scan.metadata = true;
        }
    }
    scan
}

/// A commit of ours that landed, and the commits of others it had to step over.
struct Landed {
    version: u64,
    /// (version, bytes) of every commit read on the way, then ours, in version order.
    commits: Vec<(u64, Bytes)>,
}

/// A lazily opened, cached Delta table.
pub struct TableHandle {
    name: String,
    url: Url,
    schema: SchemaRef,
    partition_by: Option<&'static str>,
    settings: Arc<LakeSettings>,
    state: Mutex<Option<State>>,
    /// Appends waiting to be committed, oldest first.
    queue: std::sync::Mutex<VecDeque<Pending>>,
    /// Held by the one caller that commits for everyone queued (the group's leader).
    committer: Arc<Mutex<()>>,
    /// Told when an append is queued (the lingering leader waits on it).
    arrived: tokio::sync::Notify,
    /// This handle, for the task a group's commit runs in.
    me: Weak<TableHandle>,
}

impl TableHandle {
    pub(super) fn new(
        name: String,
        url: Url,
        schema: SchemaRef,
        partition_by: Option<&'static str>,
        settings: Arc<LakeSettings>,
        me: Weak<TableHandle>,
    ) -> Self {
        TableHandle {
            name,
            url,
            schema,
            partition_by,
            settings,
            state: Mutex::new(None),
            queue: std::sync::Mutex::new(VecDeque::new()),
            committer: Arc::new(Mutex::new(())),
            arrived: tokio::sync::Notify::new(),
            me,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, source: DeltaTableError) -> SinkError {
        SinkError::Delta {
            table: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// `delta.dataSkippingStatsColumns` of this table: [`STATS_COLUMNS`] that it has.
    fn stats_columns(&self) -> String {
        STATS_COLUMNS
            .iter()
            .filter(|c| self.schema.field_with_name(c).is_ok())
            .copied()
            .collect::<Vec<_>>()
            .join(",")
    }

    fn builder(&self) -> Result<DeltaTableBuilder, SinkError> {
        let mut b = DeltaTableBuilder::from_url(self.url.clone())
            .map_err(|e| self.err(e))?
            .with_storage_options(self.settings.storage_options.clone());
        if let Some(store) = &self.settings.store {
            b = b.with_storage_backend(store.clone(), self.url.clone());
        }
        Ok(b)
    }

    /// Loads the table if it exists (None otherwise), without creating it.
    pub async fn load_existing(&self) -> Result<Option<DeltaTable>, SinkError> {
        let mut table = self.builder()?.build().map_err(|e| self.err(e))?;
        if !table
            .verify_deltatable_existence()
            .await
            .map_err(|e| self.err(e))?
        {
            return Ok(None);
        }
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn open_or_create(&self) -> Result<DeltaTable, SinkError> {
        if let Some(t) = self.load_existing().await? {
            return self.evolve(t).await;
        }
        let st: StructType = self
            .schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.err(DeltaTableError::from(e)))?;
        let table = self.builder()?.build().map_err(|e| self.err(e))?;
        let mut create = table
            .create()
            .with_table_name(self.name.clone())
            .with_columns(st.fields().cloned())
            .with_configuration_property(
                TableProperty::SetTransactionRetentionDuration,
                Some(self.settings.txn_retention.clone()),
            )
            .with_configuration_property(
                TableProperty::DataSkippingStatsColumns,
                // (an empty list is not a valid value)
                Some(self.stats_columns()).filter(|c| !c.is_empty()),
            )
            .with_save_mode(SaveMode::Ignore)
            // Without a read snapshot delta-rs would retry a lost create race as version 1, a
            // second metadata commit that breaks every writer of version 0. Fail instead, and
            // load the winner's table below.
            .with_commit_properties(CommitProperties::default().with_max_retries(0));
        if let Some(p) = self.partition_by {
            create = create.with_partition_columns([p]);
        }
        match create.await {
            Ok(t) => Ok(t),
            // Another writer created it at the same moment: use theirs.
            Err(e) => match self.load_existing().await? {
                Some(t) => Ok(t),
                None => Err(self.err(e)),
            },
        }
    }

    /// Adds the columns this handle writes that an existing table lacks (a table written by an
    /// older release): new nullable columns only, in one metadata commit; old rows read them as
    /// null. A concurrent writer doing the same wins or loses the race harmlessly.
    async fn evolve(&self, table: DeltaTable) -> Result<DeltaTable, SinkError> {
        let current: std::collections::HashSet<String> = table
            .snapshot()
            .map_err(|e| self.err(e))?
            .schema()
            .fields()
            .map(|f| f.name().to_owned())
            .collect();
        let missing: Vec<_> = self
            .schema
            .fields()
            .iter()
            .filter(|f| !current.contains(f.name()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(table);
        }
        if let Some(f) = missing.iter().find(|f| !f.is_nullable()) {
            return Err(SinkError::Schema(format!(
                "{}: the table lacks the non-nullable column {}; it cannot be added to existing rows",
                self.name,
                f.name()
            )));
        }
        let st: StructType = (&deltalake::arrow::datatypes::Schema::new(missing.clone()))
            .try_into_kernel()
            .map_err(|e| self.err(DeltaTableError::from(e)))?;
        tracing::info!(table = %self.name, columns = ?missing.iter().map(|f| f.name()).collect::<Vec<_>>(), "adding columns to an existing table");
        let added = table
            .clone()
            .add_columns()
            .with_fields(st.fields().cloned().collect::<Vec<_>>())
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match added {
            Ok(t) => Ok(t),
            // another writer evolved it (or committed) first: take the newest table as it is
            Err(_) => match self.load_existing().await? {
                Some(t) => Ok(t),
                None => Err(SinkError::Schema(format!("{}: table vanished", self.name))),
            },
        }
    }

    /// Brings the cached state to the newest version (loading or creating the table the
    /// first time), keeping the txn cache exact. Normally that is one read: of the version
    /// after the newest known, which is absent unless another process committed (then its
    /// commits are read one by one). The log is listed and the snapshot rebuilt only when a
    /// commit changed the metadata or protocol, or the newest known version is older than
    /// [`HEAD_TRUST`].
    async fn refresh(&self, slot: &mut Option<State>) -> Result<(), SinkError> {
        let Some(st) = slot else {
            *slot = Some(State::new(self.open_or_create().await?));
            return Ok(());
        };
        if st.confirmed.elapsed() > HEAD_TRUST {
            return self.reload(st).await;
        }
        self.catch_up(st, None).await?;
        st.confirmed = Instant::now();
        if st.reload {
            self.reload(st).await?;
        }
        Ok(())
    }

    /// Reads the commits after `head`, up to `until` (inclusive) or, without it, until the
    /// next version is absent.
    async fn catch_up(&self, st: &mut State, until: Option<u64>) -> Result<(), SinkError> {
        let log = st.table.log_store();
        while until.is_none_or(|u| st.head < u) {
            let next = st.head + 1;
            match log.read_commit_entry(next).await.map_err(|e| self.err(e))? {
                Some(bytes) => st.apply(next, &bytes),
                None if until.is_none() => break,
                None => {
                    return Err(SinkError::Schema(format!(
                        "{}: commit {next} is not in the log",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Loads the newest snapshot (a listing of the log), reading the commits after `head`
    /// for their txns. If one of them is gone (log cleanup), the txn cache is dropped: the
    /// kernel answers from the new snapshot.
    async fn reload(&self, st: &mut State) -> Result<(), SinkError> {
        let old = st.head;
        st.table
            .update_incremental(None)
            .await
            .map_err(|e| self.err(e))?;
        let new = st.table.version().unwrap_or(0);
        if new < old {
            st.txns.clear();
            st.complete = false;
        } else if st.complete || !st.txns.is_empty() {
            let log = st.table.log_store();
            for v in old + 1..=new {
                match log.read_commit_entry(v).await {
                    Ok(Some(bytes)) => {
                        for (id, version) in scan_commit(&bytes).txns {
                            st.txns.insert(id, Some(version));
                        }
                    }
                    _ => {
                        st.txns.clear();
                        st.complete = false;
                        break;
                    }
                }
            }
        }
        st.head = new;
        st.reload = false;
        st.confirmed = Instant::now();
        Ok(())
    }

    async fn watermark(&self, st: &mut State, source: &str) -> Result<Option<i64>, SinkError> {
        if let Some(v) = st.txns.get(source) {
            return Ok(*v);
        }
        if st.complete {
            return Ok(None);
        }
        let t0 = Instant::now();
        let snapshot = st.table.snapshot().map_err(|e| self.err(e))?;
        let v = snapshot
            .transaction_version(st.table.log_store().as_ref(), source)
            .await
            .map_err(|e| self.err(e))?;
        tracing::debug!(table = %self.name, source, ms = t0.elapsed().as_millis() as u64, "txn lookup");
        st.txns.insert(source.to_owned(), v);
        Ok(v)
    }

    /// The txn version of `source` in the newest version of the table (None: never written).
    pub async fn txn_version(&self, source: &str) -> Result<Option<i64>, SinkError> {
        let mut guard = self.state.lock().await;
        self.refresh(&mut guard).await?;
        let st = guard.as_mut().expect("refreshed");
        self.watermark(st, source).await
    }

    /// The txn versions of several app ids, read from one refresh of the table.
    pub async fn txn_versions(&self, ids: &[&str]) -> Result<Vec<Option<i64>>, SinkError> {
        let mut guard = self.state.lock().await;
        self.refresh(&mut guard).await?;
        let st = guard.as_mut().expect("refreshed");
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.watermark(st, id).await?);
        }
        Ok(out)
    }

    /// Appends `batch` with no txn and no filter: audit rows that record an occurrence (a
    /// redelivery that added nothing), which no watermark governs.
    pub async fn append_unfenced(&self, batch: &RecordBatch) -> Result<u64, SinkError> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let _slot = append_slot().await?;
        for attempt in 0..MAX_CONFLICT_REDOS {
            let (table, head) = {
                let mut guard = self.state.lock().await;
                self.refresh(&mut guard).await?;
                let st = guard.as_ref().expect("refreshed");
                (st.table.clone(), st.head)
            };
            match self.commit(&table, head, vec![batch.clone()], &[]).await {
                Ok(landed) => {
                    let version = landed.version;
                    self.install(landed).await?;
                    return Ok(version);
                }
                Err(e) if is_conflict(&e) => {
                    tracing::info!(table = %self.name, attempt, error = %e, "commit conflict; redoing against the new snapshot");
                    continue;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(SinkError::ConflictRetries {
            table: self.name.clone(),
            attempts: MAX_CONFLICT_REDOS,
        })
    }

    /// Appends `batch` exactly once: rows may come from several sources (`source_column`);
    /// a row whose position is at or below its source's txn watermark in this table is
    /// dropped, the rest is committed with one `txn(source, max position)` per source that has
    /// rows, against the snapshot the watermarks were read from.
    pub async fn append_exactly_once(
        &self,
        batch: &RecordBatch,
        position_column: &str,
        source_column: &str,
    ) -> Result<AppendOutcome, SinkError> {
        self.append_exactly_once_with(batch, position_column, source_column, &[])
            .await
    }

    /// [`Self::append_exactly_once`], with `extra_txns` committed beside the sources' own
    /// when (and only when) rows are committed: state that must move with them, such as the
    /// newest enqueued time of an Event Hub partition.
    pub async fn append_exactly_once_with(
        &self,
        batch: &RecordBatch,
        position_column: &str,
        source_column: &str,
        extra_txns: &[(String, i64)],
    ) -> Result<AppendOutcome, SinkError> {
        self.append_exactly_once_many(
            std::slice::from_ref(batch),
            position_column,
            source_column,
            extra_txns,
        )
        .await
    }

    /// [`Self::append_exactly_once_with`] for several batches of this table, written into
    /// the same files of one commit without first being copied into one batch.
    pub async fn append_exactly_once_many(
        &self,
        batches: &[RecordBatch],
        position_column: &str,
        source_column: &str,
        extra_txns: &[(String, i64)],
    ) -> Result<AppendOutcome, SinkError> {
        let mut keys = Vec::with_capacity(batches.len());
        for batch in batches {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| SinkError::Schema(format!("{}: batch has no {name}", self.name)))
            };
            let positions = col(position_column)?.as_primitive::<Int64Type>().clone();
            let sources = col(source_column)?.as_string::<i32>().clone();
            keys.push((sources, positions));
        }
        self.append_keyed_many(batches, &keys, extra_txns).await
    }

    /// The exactly-once append with each row's txn key (source, position) given beside the
    /// batch instead of taken from its columns: a redrive lands records under its own keys
    /// while the rows keep their original `_source` and `_position`.
    pub async fn append_exactly_once_keyed(
        &self,
        batch: &RecordBatch,
        sources: &StringArray,
        positions: &Int64Array,
        extra_txns: &[(String, i64)],
    ) -> Result<AppendOutcome, SinkError> {
        self.append_keyed_many(
            std::slice::from_ref(batch),
            &[(sources.clone(), positions.clone())],
            extra_txns,
        )
        .await
    }

    /// The exactly-once append, grouped: the call queues its rows, and whichever caller holds
    /// the table's committer takes every queued append of other sources (up to [`MAX_GROUP`])
    /// into one commit, with each source's own txn. Concurrent Event Hub partitions served by
    /// one instance thus share one commit per table instead of racing for versions. A caller
    /// alone commits at once, as before; one that finds a commit in flight waits at most for
    /// it and its own. Appends of the same source (or sharing any txn app id) never share a
    /// commit: they are committed in the order they came, each filtered by the watermark the
    /// one before it left.
    async fn append_keyed_many(
        &self,
        batches: &[RecordBatch],
        keys: &[(StringArray, Int64Array)],
        extra_txns: &[(String, i64)],
    ) -> Result<AppendOutcome, SinkError> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if batches.len() != keys.len() {
            return Err(SinkError::Schema(format!(
                "{}: txn keys for {} batches, {} given",
                self.name,
                batches.len(),
                keys.len()
            )));
        }
        for (batch, (sources, positions)) in batches.iter().zip(keys) {
            if sources.len() != batch.num_rows() || positions.len() != batch.num_rows() {
                return Err(SinkError::Schema(format!(
                    "{}: {} txn keys for {} rows",
                    self.name,
                    sources.len(),
                    batch.num_rows()
                )));
            }
        }
        // highest position per source
        let mut max_by_source: HashMap<String, i64> = HashMap::new();
        for (sources, positions) in keys {
            for (s, p) in sources.iter().zip(positions.iter()) {
                if let (Some(s), Some(p)) = (s, p) {
                    match max_by_source.get_mut(s) {
                        Some(m) => *m = (*m).max(p),
                        None => {
                            max_by_source.insert(s.to_owned(), p);
                        }
                    }
                }
            }
        }
        if max_by_source.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        self.queue_lock().push_back(Pending {
            batches: batches.to_vec(),
            keys: keys.to_vec(),
            extra_txns: extra_txns.to_vec(),
            max_by_source,
            rows,
            bytes: batches
                .iter()
                .map(|b| b.get_array_memory_size() as u64)
                .sum(),
            queued_at: Instant::now(),
            linger: LINGER.try_with(|l| *l).unwrap_or(self.settings.linger),
            reply,
        });
        self.arrived.notify_one();
        loop {
            tokio::select! {
                biased;
                r = &mut answer => {
                    return r.unwrap_or_else(|_| {
                        Err(SinkError::Abandoned {
                            table: self.name.clone(),
                        })
                    });
                }
                leader = self.committer.clone().lock_owned() => {
                    self.linger().await;
                    let group = self.take_group();
                    if group.is_empty() {
                        continue; // a previous leader committed ours: its answer is waiting
                    }
                    // The group's commit runs in a task of its own: a caller dropped
                    // mid-commit (an invocation the host gave up on) must not fail the
                    // appends of other callers it carries. It holds the committer until done.
                    let Some(me) = self.me.upgrade() else {
                        let result = self.commit_group_in_slot(&group).await;
                        answer_group(group, result);
                        continue;
                    };
                    let task = tokio::spawn(async move {
                        let _leader = leader;
                        let result = me.commit_group_in_slot(&group).await;
                        answer_group(group, result);
                    });
                    // (a panic in the task drops the group's answers: they read as abandoned)
                    let _ = task.await;
                }
            }
        }
    }

    /// The group commit's linger: the leader waits for more appends to join the commit,
    /// until the linger of a queued append (its [`with_linger`], else
    /// [`LakeSettings::linger`]) has passed since it arrived, or until the queue holds
    /// [`LakeSettings::linger_bytes`] or [`MAX_GROUP`] appends. An instance serving several
    /// Event Hub partitions thus commits each table about once per linger, whatever the
    /// host's batch sizes; every caller still returns only once its rows are committed.
    async fn linger(&self) {
        loop {
            let (deadline, bytes, n) = {
                let q = self.queue_lock();
                (
                    q.iter().map(|p| p.queued_at + p.linger).min(),
                    q.iter().map(|p| p.bytes).sum::<u64>(),
                    q.len(),
                )
            };
            let Some(deadline) = deadline else { return };
            if bytes >= self.settings.linger_bytes || n >= MAX_GROUP || Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline.into(), self.arrived.notified()).await;
        }
    }

    fn queue_lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest queued appends with no txn app id in common, up to [`MAX_GROUP`]; the rest
    /// stay queued in their order.
    fn take_group(&self) -> Vec<Pending> {
        let mut queue = self.queue_lock();
        let mut ids: HashSet<String> = HashSet::new();
        let mut group = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(p) = queue.pop_front() {
            if group.len() < MAX_GROUP && p.app_ids().all(|id| !ids.contains(id)) {
                ids.extend(p.app_ids().map(str::to_owned));
                group.push(p);
            } else {
                // a later append of the same source stays behind this one
                ids.extend(p.app_ids().map(str::to_owned));
                rest.push_back(p);
            }
        }
        *queue = rest;
        group
    }

    /// [`Self::commit_group`] in one of the process's append slots.
    async fn commit_group_in_slot(
        &self,
        group: &[Pending],
    ) -> Result<Vec<AppendOutcome>, SinkError> {
        let _slot = append_slot().await?;
        self.commit_group(group).await
    }

    /// Commits `group` (appends of disjoint sources) as one exactly-once commit and says
    /// what each append did.
    async fn commit_group(&self, group: &[Pending]) -> Result<Vec<AppendOutcome>, SinkError> {
        let mut outcomes = vec![AppendOutcome::default(); group.len()];
        for attempt in 0..MAX_CONFLICT_REDOS {
            // Read the watermarks and take the snapshot under the lock; write without it.
            let (table, head, watermarks) = {
                let mut guard = self.state.lock().await;
                self.refresh(&mut guard).await?;
                let st = guard.as_mut().expect("refreshed");
                let mut w: HashMap<&str, Option<i64>> = HashMap::new();
                for s in group.iter().flat_map(|p| p.max_by_source.keys()) {
                    w.insert(s, self.watermark(st, s).await?);
                }
                (st.table.clone(), st.head, w)
            };
            let mut rows = Vec::new();
            let mut written = vec![0u64; group.len()];
            let mut txns: Vec<(String, i64)> = Vec::new();
            for (i, p) in group.iter().enumerate() {
                // a txn for every source that has rows here
                let mut seen: HashSet<&str> = HashSet::new();
                for (batch, (sources, positions)) in p.batches.iter().zip(&p.keys) {
                    // a source with no txn yet takes every row (whatever its position's sign)
                    let keep: BooleanArray = sources
                        .iter()
                        .zip(positions.iter())
                        .map(|(s, p)| match (s, p) {
                            (Some(s), Some(p)) => {
                                Some(match watermarks.get(s).copied().flatten() {
                                    Some(w) => p > w,
                                    None => true,
                                })
                            }
                            _ => Some(false),
                        })
                        .collect();
                    let n = keep.true_count();
                    if n == 0 {
                        continue;
                    }
                    written[i] += n as u64;
                    rows.push(if n == batch.num_rows() {
                        batch.clone()
                    } else {
                        filter_record_batch(batch, &keep)?
                    });
                    for (s, k) in sources.iter().zip(keep.iter()) {
                        if let (Some(s), Some(true)) = (s, k)
                            && seen.insert(s)
                        {
                            txns.push((s.to_owned(), p.max_by_source[s]));
                        }
                    }
                }
                // state that moves with the rows, only when rows move
                if written[i] > 0 {
                    txns.extend(p.extra_txns.iter().cloned());
                }
            }
            if rows.is_empty() {
                for (o, p) in outcomes.iter_mut().zip(group) {
                    o.already_present = p.rows;
                }
                return Ok(outcomes);
            }
            let started = Instant::now();
            let total_written: u64 = written.iter().sum();
            match self.commit(&table, head, rows, &txns).await {
                Ok(landed) => {
                    let version = landed.version;
                    tracing::debug!(
                        table = %self.name, appends = group.len(), sources = txns.len(), version,
                        rows = total_written, ms = started.elapsed().as_millis() as u64, "committed"
                    );
                    self.install(landed).await?;
                    for ((o, p), w) in outcomes.iter_mut().zip(group).zip(written) {
                        o.written = w;
                        o.already_present = p.rows - w;
                        o.version = (w > 0).then_some(version);
                    }
                    return Ok(outcomes);
                }
                Err(e) if is_conflict(&e) => {
                    // Another writer committed one of these sources meanwhile (it may have
                    // written these rows), or changed the table: reload, re-read, redo.
                    tracing::info!(table = %self.name, attempt, error = %e, "commit conflict; redoing against the new snapshot");
                    for o in &mut outcomes {
                        o.redone += 1;
                    }
                    continue;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(SinkError::ConflictRetries {
            table: self.name.clone(),
            attempts: MAX_CONFLICT_REDOS,
        })
    }

    /// Writes `batches` as new files and commits them with `txns` at the version after
    /// `head`, `table` being the base they were filtered against. The commit is a
    /// put-if-absent of the next log entry, which delta-rs serialises and protocol-checks for
    /// us; we run the attempts ourselves instead of delta-rs's loop and post-commit hook,
    /// which list the log, re-read the commit, probe `_last_checkpoint`, rebuild the file
    /// list and clean up expired logs (a listing of the whole log) on every commit. A lost
    /// race reads the winner: one that carries a txn of ours or changes the metadata or
    /// protocol is a conflict (the caller reloads and redoes, as DESIGN.md section 4 has it);
    /// any other (another source's append, a compaction) is stepped over, as delta-rs's
    /// conflict checker does for a blind append.
    async fn commit(
        &self,
        table: &DeltaTable,
        head: u64,
        batches: Vec<RecordBatch>,
        txns: &[(String, i64)],
    ) -> Result<Landed, DeltaTableError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut writer =
            RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
        let schema = writer.arrow_schema();
        for rows in batches {
            let rows = conform(rows, &schema)?;
            match single_partition(&rows, self.partition_by) {
                // The usual case: every row has the same `_date`. Handing the batch over as
                // one partition skips delta-rs's split, which copies every column (`take`).
                Some((name, col)) => {
                    write_one_partition(&mut writer, rows, &[(name, col.as_ref())]).await?
                }
                None => writer.write(rows).await?,
            }
        }
        let adds: Vec<Action> = writer.flush().await?.into_iter().map(Action::Add).collect();
        let props = CommitProperties::default().with_application_transactions(
            txns.iter()
                .map(|(s, v)| Transaction::new_with_last_update(s, *v, Some(now_ms)))
                .collect(),
        );
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: self.partition_by.map(|p| vec![p.to_owned()]),
            predicate: None,
        };
        let log = table.log_store();
        let operation_id = uuid::Uuid::new_v4();
        let prepared = CommitBuilder::from(props)
            .with_actions(adds)
            .with_operation_id(operation_id)
            .build(Some(table.snapshot()?), log.clone(), operation)
            .into_prepared_commit_future()
            .await?;
        let CommitOrBytes::LogBytes(bytes) = prepared.commit_or_bytes().clone() else {
            return Err(DeltaTableError::Generic(format!(
                "{}: the log store {} commits through temporary files, which this writer does not support",
                self.name,
                log.name()
            )));
        };
        let ours: HashSet<&str> = txns.iter().map(|(s, _)| s.as_str()).collect();
        let mut commits = Vec::new();
        let mut version = head + 1;
        for _ in 0..=self.settings.commit_retries {
            match log
                .write_commit_entry(
                    version,
                    CommitOrBytes::LogBytes(bytes.clone()),
                    operation_id,
                )
                .await
            {
                Ok(()) => {
                    commits.push((version, bytes));
                    return Ok(Landed { version, commits });
                }
                Err(TransactionError::VersionAlreadyExists(_)) => {
                    let Some(winner) = log.read_commit_entry(version).await? else {
                        continue; // (not there after all: try the same version again)
                    };
                    let scan = scan_commit(&winner);
                    let conflict = if scan.metadata {
                        Some(CommitConflictError::MetadataChanged)
                    } else if scan.txns.iter().any(|(id, _)| ours.contains(id.as_str())) {
                        Some(CommitConflictError::ConcurrentTransaction)
                    } else {
                        None
                    };
                    if let Some(c) = conflict {
                        return Err(DeltaTableError::Transaction {
                            source: TransactionError::CommitConflict(c),
                        });
                    }
                    commits.push((version, winner));
                    version += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(self.settings.commit_retries as i32),
        })
    }

    /// Takes a landed commit (and the commits it stepped over) into the cached state, and
    /// writes a checkpoint when one is due and the lake wants them inline (the CLI).
    async fn install(&self, landed: Landed) -> Result<(), SinkError> {
        let mut guard = self.state.lock().await;
        let Some(st) = guard.as_mut() else {
            return Ok(());
        };
        for (v, bytes) in &landed.commits {
            if *v <= st.head {
                continue; // already read (a refresh by another caller)
            }
            // (commits between the newest known and these were made by others: read them;
            // if that fails, the next refresh loads the table instead: ours has landed)
            if let Err(e) = self.catch_up(st, Some(v - 1)).await {
                tracing::warn!(table = %self.name, error = %e, "reading the log after a commit; reloading next time");
                st.reload = true;
                return Ok(());
            }
            st.apply(*v, bytes);
        }
        if st.head == landed.version {
            // a put-if-absent of it succeeded: it was the newest then
            st.confirmed = Instant::now();
        }
        if self.settings.checkpoint_on_commit {
            let interval = st
                .table
                .snapshot()
                .map(|s| s.table_config().checkpoint_interval().get())
                .unwrap_or(100);
            if (landed.version + 1).is_multiple_of(interval) {
                // (the commit has landed: a checkpoint that fails is only logged)
                let written = match st.table.update_incremental(Some(landed.version)).await {
                    Ok(()) => {
                        st.reload = false;
                        deltalake::checkpoints::create_checkpoint(&st.table, None).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::warn!(table = %self.name, version = landed.version, error = %e, "checkpoint not written");
                }
            }
        }
        Ok(())
    }
}

/// Hands each append of a group its outcome, or the group's error (shared when several
/// appends carried it).
fn answer_group(group: Vec<Pending>, result: Result<Vec<AppendOutcome>, SinkError>) {
    match result {
        Ok(outcomes) => {
            for (p, o) in group.into_iter().zip(outcomes) {
                let _ = p.reply.send(Ok(o));
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(p) = group.into_iter().next() {
                let _ = p.reply.send(Err(e));
            }
        }
        Err(e) => {
            let shared = Arc::new(e);
            for p in group {
                let _ = p.reply.send(Err(SinkError::Group(shared.clone())));
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct TxnLine {
    txn: TxnAction,
}

#[derive(serde::Deserialize)]
struct TxnAction {
    #[serde(rename = "appId")]
    app_id: String,
    version: i64,
}

/// `rows` in the table's column order, with a null column for each nullable column the table
/// has and the batch lacks (a table evolved by a newer release or a schema overlay).
fn conform(rows: RecordBatch, table: &SchemaRef) -> Result<RecordBatch, DeltaTableError> {
    if rows.schema().fields() == table.fields() {
        return Ok(rows);
    }
    let mut cols = Vec::with_capacity(table.fields().len());
    for f in table.fields() {
        match rows.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => cols.push(c.clone()),
            None if f.is_nullable() => cols.push(deltalake::arrow::array::new_null_array(
                f.data_type(),
                rows.num_rows(),
            )),
            Some(c) => {
                return Err(DeltaTableError::Generic(format!(
                    "column {} is {} in the table but {} in the batch",
                    f.name(),
                    f.data_type(),
                    c.data_type()
                )));
            }
            None => {
                return Err(DeltaTableError::Generic(format!(
                    "the table has a non-nullable column {} the batch lacks",
                    f.name()
                )));
            }
        }
    }
    if let Some(extra) = rows
        .schema()
        .fields()
        .iter()
        .find(|f| table.field_with_name(f.name()).is_err())
    {
        return Err(DeltaTableError::Generic(format!(
            "the batch has a column {} the table lacks",
            extra.name()
        )));
    }
    RecordBatch::try_new(table.clone(), cols).map_err(|e| DeltaTableError::Generic(e.to_string()))
}

/// The partition column of `rows` when all rows share one non-null value of it, for
/// [`RecordBatchWriter::write_partition`].
fn single_partition<'n>(
    rows: &RecordBatch,
    partition_by: Option<&'n str>,
) -> Option<(&'n str, ArrayRef)> {
    let name = partition_by?;
    let col = rows.column_by_name(name)?;
    if rows.num_rows() == 0 || col.null_count() > 0 {
        return None;
    }
    let dates = col.as_primitive_opt::<Date32Type>()?;
    let first = dates.value(0);
    if dates.values().iter().any(|d| *d != first) {
        return None;
    }
    Some((name, col.clone()))
}

/// Writes `rows`, all of one partition, with [`RecordBatchWriter::write_partition`] (no split,
/// no copy); `values` names each partition column with an array whose first row is its value.
pub(crate) async fn write_one_partition(
    writer: &mut RecordBatchWriter,
    rows: RecordBatch,
    values: &[(&str, &dyn Array)],
) -> Result<(), DeltaTableError> {
    let mut map = IndexMap::new();
    for (name, array) in values {
        // (the kernel's `Scalar` type is not re-exported; inferred from `write_partition`)
        let value = ScalarExt::from_array(*array, 0).ok_or_else(|| {
            DeltaTableError::Generic(format!("partition {name}: no value in row 0"))
        })?;
        map.insert((*name).to_owned(), value);
    }
    writer
        .write_partition(rows, &map, WriteMode::Default)
        .await?;
    Ok(())
}

/// zstd Parquet at level 1, no dictionaries, statistics only where the Delta log wants them.
///
/// Measured on the benchmark's data (57.7 MB of storage-export input, 20,000 rows, one thread):
/// Parquet encoding took 0.277 CPU-s and 18.5 MB with parquet-rs's defaults; 0.192 CPU-s and
/// 17.7 MB like this. Dictionaries were tried and abandoned on the high-cardinality columns
/// (`_raw`, ids, command lines, hashes) and zstd finds the repeats of the low-cardinality
/// ones itself; page statistics (min/max of every page of every column, 3 KB `_raw` strings
/// included) fed nothing, since only [`STATS_COLUMNS`] go into the log and those need only
/// column-chunk statistics. Level 1 costs ~10 % fewer instructions in total than level 3 and
/// its files came out no larger.
pub fn writer_properties() -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None);
    for c in STATS_COLUMNS {
        b = b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::Chunk);
    }
    b.build()
}

/// `ConcurrentTransaction` (same source) and the other conflicts delta-rs does not retry
/// itself (e.g. `MetadataChanged`): all are redone against a fresh snapshot.
fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(_)
        }
    )
}
