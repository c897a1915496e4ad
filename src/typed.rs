//! Typed-batch building: routed records into one Arrow `RecordBatch` per table, with the
//! registry's column types, lenient lossless coercion, `_rescued` for what does not fit, the
//! metadata columns and the clamped `_date`; and the dead-letter batch.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use serde_json::value::RawValue;

use crate::decode::{DeadRef, RecordRef, Unit, UntypedRef};
use crate::json;
use crate::model::{Category, DeadLetterReason};
use crate::registry::{
    KustoType, TableDef, assemble, dead, dead_letter_schema, meta, untyped, untyped_schema,
};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Per-batch facts every row shares.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// `_source`.
    pub source: String,
    /// `_ingested_at`, µs since the epoch.
    pub ingested_at: i64,
    /// Days since the epoch of `ingested_at` (the `_date` of rows without a usable Timestamp).
    pub ingest_day: i32,
    /// `_date` is clamped to `[min_day, max_day]`.
    pub min_day: i32,
    pub max_day: i32,
    /// Drop a record whose content hash an earlier record of the same batch and table had.
    pub dedup: bool,
}

impl BuildContext {
    /// `retention_days`: how far back an event's own date may set its partition (a negative
    /// value is taken as 0: settings are validated at start-up, this only keeps `clamp` sound).
    pub fn new(source: &str, ingested_at_micros: i64, retention_days: i32) -> Self {
        let day = ingested_at_micros.div_euclid(MICROS_PER_DAY) as i32;
        BuildContext {
            source: source.to_owned(),
            ingested_at: ingested_at_micros,
            ingest_day: day,
            min_day: day.saturating_sub(retention_days.max(0)),
            max_day: day.saturating_add(1),
            dedup: true,
        }
    }

    pub fn now(source: &str, retention_days: i32) -> Self {
        Self::new(
            source,
            chrono::Utc::now().timestamp_micros(),
            retention_days,
        )
    }

    #[inline]
    fn date_of(&self, ts_micros: Option<i64>) -> i32 {
        match ts_micros {
            Some(t) => (t.div_euclid(MICROS_PER_DAY) as i32).clamp(self.min_day, self.max_day),
            None => self.ingest_day,
        }
    }
}

enum Col {
    Str(StringBuilder),
    Dyn(StringBuilder),
    Long(Int64Builder),
    Int(Int32Builder),
    Bool(BooleanBuilder),
    Real(Float64Builder),
    Ts(TimestampMicrosecondBuilder),
}

/// What became of one value.
#[derive(PartialEq, Eq)]
enum Fit {
    Value,
    Null,
    /// Could not be coerced: the column got null, the value goes to `_rescued`.
    Rescue,
    /// Stored with a substitution (a lone surrogate escape became U+FFFD): the column keeps
    /// the readable value and the original text goes to `_rescued` too.
    Lossy,
}

fn ts_builder(cap: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC")
}

impl Col {
    /// A builder for `cap` rows; a string column with room for `bytes` of values.
    fn new(ty: KustoType, cap: usize, bytes: usize) -> Col {
        match ty {
            KustoType::String | KustoType::Guid => {
                Col::Str(StringBuilder::with_capacity(cap, bytes))
            }
            KustoType::Dynamic => Col::Dyn(StringBuilder::with_capacity(cap, bytes)),
            KustoType::Long => Col::Long(Int64Builder::with_capacity(cap)),
            KustoType::Int => Col::Int(Int32Builder::with_capacity(cap)),
            KustoType::Bool => Col::Bool(BooleanBuilder::with_capacity(cap)),
            KustoType::Real | KustoType::Double => Col::Real(Float64Builder::with_capacity(cap)),
            KustoType::Datetime => Col::Ts(ts_builder(cap)),
        }
    }

    /// Bytes of string values held (0 for other types).
    fn value_bytes(&self) -> usize {
        match self {
            Col::Str(b) | Col::Dyn(b) => b.values_slice().len(),
            _ => 0,
        }
    }

    fn append_null(&mut self) {
        match self {
            Col::Str(b) | Col::Dyn(b) => b.append_null(),
            Col::Long(b) => b.append_null(),
            Col::Int(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Real(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
        }
    }

    /// Appends the value of `raw` (valid JSON text) coerced to the column type. Returns the
    /// timestamp for datetime columns so the caller can derive `_date`.
    #[inline]
    fn append(&mut self, raw: &str, scratch: &mut String, ts_out: &mut Option<i64>) -> Fit {
        let first = raw.as_bytes()[0];
        if first == b'n' {
            self.append_null();
            return Fit::Null;
        }
        match self {
            Col::Str(b) => {
                match first {
                    b'"' => match json::as_str_lossy(raw) {
                        Some((v, lossy)) => {
                            b.append_value(v);
                            if lossy {
                                return Fit::Lossy;
                            }
                        }
                        // not reachable for a token serde_json validated; kept lossless anyway
                        None => {
                            b.append_null();
                            return Fit::Rescue;
                        }
                    },
                    b'{' | b'[' => {
                        scratch.clear();
                        json::write_compact(raw, scratch);
                        b.append_value(&*scratch);
                    }
                    // a number or a bool into a string column is its text
                    _ => b.append_value(raw),
                }
                Fit::Value
            }
            Col::Dyn(b) => {
                scratch.clear();
                if first == b'"' {
                    match json::as_str(raw) {
                        // JSON sent as a string: store the same text as if it came nested
                        Some(s) if json::is_json(&s) => json::write_compact(&s, scratch),
                        _ => scratch.push_str(raw),
                    }
                } else {
                    json::write_compact(raw, scratch);
                }
                b.append_value(&*scratch);
                Fit::Value
            }
            Col::Long(b) => match to_i64(raw, first) {
                Some(Some(v)) => {
                    b.append_value(v);
                    Fit::Value
                }
                Some(None) => {
                    b.append_null();
                    Fit::Null
                }
                None => self.rescue(),
            },
            Col::Int(b) => match to_i64(raw, first) {
                Some(Some(v)) => match i32::try_from(v) {
                    Ok(v) => {
                        b.append_value(v);
                        Fit::Value
                    }
                    Err(_) => self.rescue(),
                },
                Some(None) => {
                    b.append_null();
                    Fit::Null
                }
                None => self.rescue(),
            },
            Col::Bool(b) => match to_bool(raw, first) {
                Some(Some(v)) => {
                    b.append_value(v);
                    Fit::Value
                }
                Some(None) => {
                    b.append_null();
                    Fit::Null
                }
                None => self.rescue(),
            },
            Col::Real(b) => match to_f64(raw, first) {
                Some(Some(v)) => {
                    b.append_value(v);
                    Fit::Value
                }
                Some(None) => {
                    b.append_null();
                    Fit::Null
                }
                None => self.rescue(),
            },
            Col::Ts(b) => {
                if first != b'"' {
                    return self.rescue();
                }
                match json::as_str(raw) {
                    Some(s) if s.trim().is_empty() => {
                        b.append_null();
                        Fit::Null
                    }
                    Some(s) => match json::parse_timestamp_micros(&s) {
                        Some(t) => {
                            *ts_out = Some(t);
                            b.append_value(t);
                            Fit::Value
                        }
                        None => self.rescue(),
                    },
                    None => self.rescue(),
                }
            }
        }
    }

    fn rescue(&mut self) -> Fit {
        self.append_null();
        Fit::Rescue
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) | Col::Dyn(b) => Arc::new(b.finish()),
            Col::Long(b) => Arc::new(b.finish()),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Real(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// `Some(Some(v))` a value, `Some(None)` null (empty string), `None` does not fit.
/// Integers are parsed from their text, never through `f64` (ReportId exceeds 2^53).
fn to_i64(raw: &str, first: u8) -> Option<Option<i64>> {
    match first {
        b't' => Some(Some(1)),
        b'f' => Some(Some(0)),
        b'"' => {
            let s = json::as_str(raw)?;
            let s = s.trim();
            if s.is_empty() {
                return Some(None);
            }
            num_text_to_i64(s).map(Some)
        }
        _ => num_text_to_i64(raw).map(Some),
    }
}

fn num_text_to_i64(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    // 1.0 or 1e3 are integers written as floats; anything with a fraction or beyond 2^53
    // cannot be represented exactly and is rescued instead.
    if s.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        let f = s.parse::<f64>().ok()?;
        if f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
            return Some(f as i64);
        }
    }
    None
}

fn to_bool(raw: &str, first: u8) -> Option<Option<bool>> {
    match first {
        b't' => Some(Some(true)),
        b'f' => Some(Some(false)),
        b'"' => {
            let s = json::as_str(raw)?;
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else if s.eq_ignore_ascii_case("true") || s == "1" {
                Some(Some(true))
            } else if s.eq_ignore_ascii_case("false") || s == "0" {
                Some(Some(false))
            } else {
                None
            }
        }
        _ => match raw {
            "1" => Some(Some(true)),
            "0" => Some(Some(false)),
            _ => None,
        },
    }
}

fn to_f64(raw: &str, first: u8) -> Option<Option<f64>> {
    match first {
        b't' => Some(Some(1.0)),
        b'f' => Some(Some(0.0)),
        b'"' => {
            let s = json::as_str(raw)?;
            let s = s.trim();
            if s.is_empty() {
                return Some(None);
            }
            s.parse::<f64>().ok().map(Some)
        }
        b'{' | b'[' => None,
        _ => raw.parse::<f64>().ok().map(Some),
    }
}

/// The rows of one typed table built from one batch.
/// The lineage columns every typed and untyped row carries, `_raw` to `_ingested_at`.
struct Lineage {
    raw: StringBuilder,
    tenant: StringBuilder,
    time: TimestampMicrosecondBuilder,
    source: StringBuilder,
    position: Int64Builder,
    enqueued: TimestampMicrosecondBuilder,
    ingested: TimestampMicrosecondBuilder,
}

impl Lineage {
    fn with_capacity(cap: usize, raw_bytes: usize) -> Self {
        Lineage {
            raw: StringBuilder::with_capacity(cap, raw_bytes),
            tenant: StringBuilder::with_capacity(cap, cap * 36),
            time: ts_builder(cap),
            source: StringBuilder::with_capacity(cap, cap * 48),
            position: Int64Builder::with_capacity(cap),
            enqueued: ts_builder(cap),
            ingested: ts_builder(cap),
        }
    }

    /// One row: the record's text, its envelope's `tenantId` and `time`, where it came from.
    fn append(
        &mut self,
        raw: &str,
        tenant_id: Option<&RawValue>,
        time: Option<&RawValue>,
        unit: &Unit<'_>,
        ctx: &BuildContext,
    ) {
        self.raw.append_value(raw);
        match tenant_id.map(|t| t.get()) {
            None | Some("null") => self.tenant.append_null(),
            Some(t) => match json::as_str(t) {
                Some(s) => self.tenant.append_value(s),
                None => self.tenant.append_value(t),
            },
        }
        self.time.append_option(
            time.and_then(|t| json::as_str(t.get()))
                .and_then(|s| json::parse_timestamp_micros(&s)),
        );
        self.source.append_value(&ctx.source);
        self.position.append_value(unit.position);
        self.enqueued.append_option(unit.enqueued_at);
        self.ingested.append_value(ctx.ingested_at);
    }

    fn finish_into(&mut self, columns: &mut Vec<(&str, ArrayRef)>) {
        columns.extend([
            (meta::RAW, Arc::new(self.raw.finish()) as ArrayRef),
            (meta::TENANT_ID, Arc::new(self.tenant.finish())),
            (meta::TIME, Arc::new(self.time.finish())),
            (meta::SOURCE, Arc::new(self.source.finish())),
            (meta::POSITION, Arc::new(self.position.finish())),
            (meta::ENQUEUED_AT, Arc::new(self.enqueued.finish())),
            (meta::INGESTED_AT, Arc::new(self.ingested.finish())),
        ]);
    }
}

pub struct TypedRows {
    pub category: Category,
    pub batch: RecordBatch,
    /// `record_index` of each row (dead-lettering a row that fails a rule needs it).
    pub record_index: Vec<u32>,
    /// Values that went to `_rescued` (unknown keys and values that did not fit).
    pub rescued_values: u64,
}

/// Builds the typed batch of one table, row by row.
pub struct TableBatchBuilder<'a> {
    category: Category,
    table: &'static TableDef,
    schema: SchemaRef,
    cols: Vec<Col>,
    ts_col: Option<usize>,
    slots: Vec<Option<&'a RawValue>>,
    /// Indexes (into the record's properties) of keys the registry does not know.
    extras: Vec<usize>,
    lineage: Lineage,
    rescued: StringBuilder,
    date: Date32Builder,
    record_index: Vec<u32>,
    /// `_record_hash`, and the hashes seen in this batch.
    hash: Int64Builder,
    seen: std::collections::HashSet<i64, foldhash::fast::FixedState>,
    rescue_buf: String,
    scratch: String,
    rescued_values: u64,
}

/// The sizes of each table's last batch, to size the next one's buffers: a builder that
/// starts small grows by doubling, and every doubling copies what it holds (on the
/// benchmark's data, `_raw` alone was copied about twice over). Reserving twice the last
/// batch costs no memory that is not written: untouched pages are never faulted in.
#[derive(Clone, Default)]
struct SizeHint {
    rows: usize,
    raw_bytes: usize,
    col_bytes: Vec<usize>,
}

static SIZE_HINTS: std::sync::Mutex<Vec<SizeHint>> = std::sync::Mutex::new(Vec::new());

fn size_hint(category: Category) -> SizeHint {
    SIZE_HINTS
        .lock()
        .ok()
        .and_then(|h| h.get(category.index()).cloned())
        .unwrap_or_default()
}

fn record_size_hint(category: Category, hint: SizeHint) {
    if let Ok(mut h) = SIZE_HINTS.lock() {
        let i = category.index();
        if h.len() <= i {
            h.resize(i + 1, SizeHint::default());
        }
        h[i] = hint;
    }
}

impl<'a> TableBatchBuilder<'a> {
    pub fn new(category: Category, cap: usize) -> Self {
        let table = category.table();
        let hint = size_hint(category);
        let (cap, raw_bytes) = if hint.rows > 0 {
            (cap.max(hint.rows * 2), hint.raw_bytes * 2)
        } else {
            (cap, cap * 1024)
        };
        TableBatchBuilder {
            category,
            table,
            schema: table.arrow_schema(),
            cols: table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let bytes = match hint.col_bytes.get(i) {
                        Some(b) if hint.rows > 0 => b * 2,
                        _ => cap * 16,
                    };
                    Col::new(c.ty, cap, bytes)
                })
                .collect(),
            ts_col: table.column_index("Timestamp"),
            slots: vec![None; table.columns.len()],
            extras: Vec::new(),
            lineage: Lineage::with_capacity(cap, raw_bytes),
            rescued: StringBuilder::with_capacity(cap, 0),
            date: Date32Builder::with_capacity(cap),
            record_index: Vec::with_capacity(cap),
            hash: Int64Builder::with_capacity(cap),
            seen: Default::default(),
            rescue_buf: String::new(),
            scratch: String::new(),
            rescued_values: 0,
        }
    }

    /// Adds one record (its properties were split and validated by the decoder).
    /// Adds one record; false (nothing added) when it is a duplicate, by content, of one
    /// already in this batch (and `ctx.dedup`).
    pub fn push(&mut self, rec: &RecordRef<'a>, unit: &Unit<'_>, ctx: &BuildContext) -> bool {
        let hash = content_hash(self.table.name.as_str(), &rec.properties, &mut self.scratch);
        if ctx.dedup && !self.seen.insert(hash) {
            return false;
        }
        self.hash.append_value(hash);
        self.extras.clear();
        for (n, (k, v)) in rec.properties.iter().enumerate() {
            match self.table.column_index(k) {
                Some(i) if self.slots[i].is_none() => self.slots[i] = Some(*v),
                // unknown keys, and second occurrences of a key
                _ => self.extras.push(n),
            }
        }

        self.rescue_buf.clear();
        let mut ts = None;
        for (i, col) in self.cols.iter_mut().enumerate() {
            let Some(v) = self.slots[i].take() else {
                col.append_null();
                continue;
            };
            let mut t = None;
            if matches!(
                col.append(v.get(), &mut self.scratch, &mut t),
                Fit::Rescue | Fit::Lossy
            ) {
                rescue_into(&mut self.rescue_buf, &self.table.columns[i].name, v.get());
                self.rescued_values += 1;
            }
            if Some(i) == self.ts_col {
                ts = t;
            }
        }
        for &n in &self.extras {
            let (k, v) = &rec.properties[n];
            rescue_into(&mut self.rescue_buf, k, v.get());
            self.rescued_values += 1;
        }

        self.lineage
            .append(rec.raw, rec.tenant_id, rec.time, unit, ctx);
        if self.rescue_buf.is_empty() {
            self.rescued.append_null();
        } else {
            self.rescue_buf.push('}');
            self.rescued.append_value(&self.rescue_buf);
        }
        self.date.append_value(ctx.date_of(ts));
        self.record_index.push(rec.record_index);
        true
    }

    pub fn finish(mut self) -> Result<TypedRows, ArrowError> {
        record_size_hint(
            self.category,
            SizeHint {
                rows: self.record_index.len(),
                raw_bytes: self.lineage.raw.values_slice().len(),
                col_bytes: self.cols.iter().map(Col::value_bytes).collect(),
            },
        );
        let mut columns: Vec<(&str, ArrayRef)> = self
            .table
            .columns
            .iter()
            .zip(self.cols.iter_mut())
            .map(|(c, b)| (c.name.as_str(), b.finish()))
            .collect();
        self.lineage.finish_into(&mut columns);
        columns.extend([
            (meta::RESCUED, Arc::new(self.rescued.finish()) as ArrayRef),
            (meta::DATE, Arc::new(self.date.finish())),
            (meta::RECORD_HASH, Arc::new(self.hash.finish())),
        ]);
        Ok(TypedRows {
            category: self.category,
            batch: assemble(&self.schema, columns)?,
            record_index: self.record_index,
            rescued_values: self.rescued_values,
        })
    }
}

/// The rows of one untyped table (a category the registry does not know) built from one batch.
pub struct UntypedRows {
    pub table: String,
    pub batch: RecordBatch,
}

/// Builds the batch of one untyped table: `Timestamp` from `properties.Timestamp`, the
/// properties as compact JSON, the metadata columns. A record without a usable `Timestamp`
/// is not added (the caller dead-letters it, as it does for typed tables).
pub struct UntypedBatchBuilder {
    table: String,
    ts: TimestampMicrosecondBuilder,
    properties: StringBuilder,
    lineage: Lineage,
    rescued: StringBuilder,
    date: Date32Builder,
    hash: Int64Builder,
    seen: std::collections::HashSet<i64, foldhash::fast::FixedState>,
    buf: String,
}

impl UntypedBatchBuilder {
    pub fn new(table: &str) -> Self {
        UntypedBatchBuilder {
            table: table.to_owned(),
            ts: ts_builder(16),
            properties: StringBuilder::new(),
            lineage: Lineage::with_capacity(16, 0),
            rescued: StringBuilder::new(),
            date: Date32Builder::new(),
            hash: Int64Builder::new(),
            seen: Default::default(),
            buf: String::new(),
        }
    }

    /// Adds a record: `Ok(false)` when it is a duplicate of one in this batch (not added),
    /// `Err(())` when it has no usable `Timestamp` (not added; the caller dead-letters it).
    #[allow(clippy::result_unit_err)]
    pub fn push(
        &mut self,
        rec: &UntypedRef<'_>,
        unit: &Unit<'_>,
        ctx: &BuildContext,
    ) -> Result<bool, ()> {
        let ts = rec
            .properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Timestamp"))
            .and_then(|(_, v)| json::as_str(v.get()))
            .and_then(|s| json::parse_timestamp_micros(&s));
        let Some(ts) = ts else {
            return Err(());
        };
        let hash = content_hash(&self.table, &rec.properties, &mut self.buf);
        if ctx.dedup && !self.seen.insert(hash) {
            return Ok(false);
        }
        self.hash.append_value(hash);
        self.buf.clear();
        self.buf.push('{');
        for (n, (k, v)) in rec.properties.iter().enumerate() {
            if n > 0 {
                self.buf.push(',');
            }
            json::write_str_token(k, &mut self.buf);
            self.buf.push(':');
            json::write_compact(v.get(), &mut self.buf);
        }
        self.buf.push('}');
        self.ts.append_value(ts);
        self.properties.append_value(&self.buf);
        self.lineage
            .append(rec.raw, rec.tenant_id, rec.time, unit, ctx);
        self.rescued.append_null();
        self.date.append_value(ctx.date_of(Some(ts)));
        Ok(true)
    }

    pub fn finish(mut self) -> Result<UntypedRows, ArrowError> {
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            (untyped::TIMESTAMP, Arc::new(self.ts.finish())),
            (untyped::PROPERTIES, Arc::new(self.properties.finish())),
        ];
        self.lineage.finish_into(&mut columns);
        columns.extend([
            (meta::RESCUED, Arc::new(self.rescued.finish()) as ArrayRef),
            (meta::DATE, Arc::new(self.date.finish())),
            (meta::RECORD_HASH, Arc::new(self.hash.finish())),
        ]);
        Ok(UntypedRows {
            batch: assemble(&untyped_schema(), columns)?,
            table: self.table,
        })
    }
}

/// A record's identity by content (see [`meta::RECORD_HASH`]): XXH3-64 of the table name and
/// each property's key and compact value, in order.
pub fn content_hash(
    table: &str,
    props: &[(std::borrow::Cow<'_, str>, &RawValue)],
    scratch: &mut String,
) -> i64 {
    // the bytes hashed, gathered first: XXH3 over one buffer gives the same value as its
    // streaming form over the pieces, at a fraction of the cost (the streaming hasher copies
    // every piece into its own buffer)
    scratch.clear();
    scratch.push_str(table);
    scratch.push('\0');
    for (k, v) in props {
        scratch.push_str(k);
        scratch.push('\0');
        let raw = v.get();
        if raw
            .bytes()
            .any(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t'))
        {
            json::write_compact(raw, scratch);
        } else {
            scratch.push_str(raw);
        }
        scratch.push('\0');
    }
    twox_hash::XxHash3_64::oneshot(scratch.as_bytes()) as i64
}

fn rescue_into(buf: &mut String, key: &str, raw: &str) {
    buf.push(if buf.is_empty() { '{' } else { ',' });
    json::write_str_token(key, buf);
    buf.push(':');
    json::write_compact(raw, buf);
}

/// Builds the dead-letter batch.
pub struct DeadLetterBuilder {
    raw: StringBuilder,
    reason: StringBuilder,
    detail: StringBuilder,
    category: StringBuilder,
    source: StringBuilder,
    position: Int64Builder,
    record_index: Int64Builder,
    ingested: TimestampMicrosecondBuilder,
    date: Date32Builder,
    rows: usize,
}

impl Default for DeadLetterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DeadLetterBuilder {
    pub fn new() -> Self {
        DeadLetterBuilder {
            raw: StringBuilder::new(),
            reason: StringBuilder::new(),
            detail: StringBuilder::new(),
            category: StringBuilder::new(),
            source: StringBuilder::new(),
            position: Int64Builder::new(),
            record_index: Int64Builder::new(),
            ingested: ts_builder(0),
            date: Date32Builder::new(),
            rows: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        raw: &str,
        reason: DeadLetterReason,
        detail: &str,
        category: Option<&str>,
        position: i64,
        record_index: u32,
        ctx: &BuildContext,
    ) {
        self.raw.append_value(raw);
        self.reason.append_value(reason.as_str());
        self.detail.append_value(detail);
        self.category.append_option(category);
        self.source.append_value(&ctx.source);
        self.position.append_value(position);
        self.record_index.append_value(record_index as i64);
        self.ingested.append_value(ctx.ingested_at);
        self.date.append_value(ctx.ingest_day);
        self.rows += 1;
    }

    pub fn push_ref(&mut self, d: &DeadRef<'_>, unit: &Unit<'_>, ctx: &BuildContext) {
        self.push(
            &d.raw,
            d.reason,
            &d.detail,
            d.category.as_deref(),
            unit.position,
            d.record_index,
            ctx,
        );
    }

    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        assemble(
            &dead_letter_schema(),
            vec![
                (meta::RAW, Arc::new(self.raw.finish()) as ArrayRef),
                (dead::REASON, Arc::new(self.reason.finish())),
                (dead::DETAIL, Arc::new(self.detail.finish())),
                (dead::CATEGORY, Arc::new(self.category.finish())),
                (meta::SOURCE, Arc::new(self.source.finish())),
                (meta::POSITION, Arc::new(self.position.finish())),
                (dead::RECORD_INDEX, Arc::new(self.record_index.finish())),
                (meta::INGESTED_AT, Arc::new(self.ingested.finish())),
                (meta::DATE, Arc::new(self.date.finish())),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, decode_unit};
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};

    fn build(line: &str) -> TypedRows {
        let unit = Unit::new(line.as_bytes(), 42);
        let ctx = BuildContext::new("test://x", 1_784_383_736_000_000, 30);
        let mut recs = vec![];
        decode_unit(&unit, 1 << 20, &mut |d| match d {
            Decoded::Record(r) => recs.push(r),
            Decoded::Dead(d) => panic!("dead: {d:?}"),
            Decoded::Untyped(u) => panic!("untyped: {u:?}"),
        });
        let mut b = TableBatchBuilder::new(recs[0].category, 4);
        for r in &recs {
            b.push(r, &unit, &ctx);
        }
        b.finish().unwrap()
    }

    fn col<'b>(rows: &'b TypedRows, name: &str) -> &'b dyn Array {
        rows.batch.column_by_name(name).unwrap().as_ref()
    }

    #[test]
    fn coerces_leniently_and_rescues_the_rest() {
        let rows = build(concat!(
            r#"{"time":"2026-07-18T14:08:57.1234567Z","tenantId":"t-1","category":"AdvancedHunting-DeviceInfo","#,
            r#""properties":{"Timestamp":"2026-07-18T14:08:56.2914446Z","ReportId":639199803770463703,"#,
            r#""OSBuild":"22631","IsAzureADJoined":"true","DeviceName":12,"#,
            r#""LoggedOnUsers":"[{\"UserName\":\"a\"}]","AdditionalFields":{ "x" : [1, 2] },"#,
            r#""ExposureLevel":null,"Brand":"x","OSVersion":99999999999999999999,"#,
            r#""IsInternetFacing":"maybe"}}"#
        ));
        let b = &rows.batch;
        assert_eq!(b.num_rows(), 1);
        let ts = col(&rows, "Timestamp").as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_784_383_736_291_444);
        assert_eq!(
            col(&rows, "ReportId").as_primitive::<Int64Type>().value(0),
            639199803770463703
        );
        assert_eq!(
            col(&rows, "OSBuild").as_primitive::<Int64Type>().value(0),
            22631
        );
        assert!(col(&rows, "IsAzureADJoined").as_boolean().value(0));
        assert_eq!(col(&rows, "DeviceName").as_string::<i32>().value(0), "12");
        assert_eq!(
            col(&rows, "LoggedOnUsers").as_string::<i32>().value(0),
            r#"[{"UserName":"a"}]"#
        );
        assert_eq!(
            col(&rows, "AdditionalFields").as_string::<i32>().value(0),
            r#"{"x":[1,2]}"#
        );
        assert!(col(&rows, "ExposureLevel").is_null(0));
        assert!(col(&rows, "IsInternetFacing").is_null(0));
        let rescued = col(&rows, "_rescued").as_string::<i32>().value(0);
        let v: serde_json::Value = serde_json::from_str(rescued).unwrap();
        assert_eq!(v["IsInternetFacing"], "maybe");
        assert_eq!(v["Brand"], "x");
        assert_eq!(rows.rescued_values, 2, "{rescued}");
        assert_eq!(col(&rows, "_tenant_id").as_string::<i32>().value(0), "t-1");
        assert_eq!(
            col(&rows, "_position").as_primitive::<Int64Type>().value(0),
            42
        );
        assert_eq!(
            col(&rows, "_time")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_784_383_737_123_456
        );
    }

    #[test]
    fn out_of_range_integers_are_rescued_not_truncated() {
        let rows = build(concat!(
            r#"{"category":"AdvancedHunting-IdentityLogonEvents","properties":{"Timestamp":"2026-07-18T14:08:56Z","#,
            r#""Port":99999999999,"DestinationPort":"443","ISP":"Contoso"}}"#
        ));
        assert!(col(&rows, "Port").is_null(0));
        assert_eq!(
            col(&rows, "DestinationPort")
                .as_primitive::<Int32Type>()
                .value(0),
            443
        );
        assert_eq!(col(&rows, "Isp").as_string::<i32>().value(0), "Contoso");
        assert_eq!(
            col(&rows, "_rescued").as_string::<i32>().value(0),
            r#"{"Port":99999999999}"#
        );
    }

    #[test]
    fn lone_surrogates_stay_readable_and_are_rescued() {
        let rows = build(concat!(
            r#"{"category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-07-18T14:08:56Z","#,
            r#""DeviceName":"host-\ud800-1","OSPlatform":"ok \u00e9"}}"#
        ));
        assert_eq!(
            col(&rows, "DeviceName").as_string::<i32>().value(0),
            "host-\u{FFFD}-1"
        );
        assert_eq!(col(&rows, "OSPlatform").as_string::<i32>().value(0), "ok é");
        assert_eq!(
            col(&rows, "_rescued").as_string::<i32>().value(0),
            r#"{"DeviceName":"host-\ud800-1"}"#
        );
        assert_eq!(rows.rescued_values, 1);
    }

    #[test]
    fn date_is_clamped() {
        let ctx = BuildContext::new("s", 100 * MICROS_PER_DAY, 30);
        assert_eq!(ctx.date_of(Some(99 * MICROS_PER_DAY + 5)), 99);
        assert_eq!(ctx.date_of(Some(3 * MICROS_PER_DAY)), 70);
        assert_eq!(ctx.date_of(Some(500 * MICROS_PER_DAY)), 101);
        assert_eq!(ctx.date_of(None), 100);
        // a negative window cannot make `clamp` panic (min > max)
        let ctx = BuildContext::new("s", 100 * MICROS_PER_DAY, -5);
        assert_eq!(ctx.date_of(Some(3 * MICROS_PER_DAY)), 100);
    }
}
