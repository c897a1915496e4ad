//! Schema registry: the 26 Defender tables and their columns, embedded at build time from
//! `registry/tables.json`, with the Kusto-to-Arrow type mapping and the metadata columns every
//! typed table carries.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;
use serde::Deserialize;

/// Lookups on the record path (a few per record): a fast, fixed-seed hash instead of SipHash.
type FastMap<V> = HashMap<String, V, foldhash::fast::FixedState>;

/// The embedded registry document (derived from Defender's schema pages by
/// `tools/build_registry.py`).
const TABLES_JSON: &str = include_str!("../registry/tables.json");

/// A Kusto column type as documented on the advanced-hunting schema pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KustoType {
    String,
    Guid,
    Long,
    Int,
    Bool,
    Real,
    Double,
    Datetime,
    Dynamic,
}

impl KustoType {
    /// The Arrow type a column of this Kusto type is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            // Plain Utf8 only: delta-rs's writer rejects LargeUtf8/Utf8View.
            KustoType::String | KustoType::Guid | KustoType::Dynamic => DataType::Utf8,
            KustoType::Long => DataType::Int64,
            KustoType::Int => DataType::Int32,
            KustoType::Bool => DataType::Boolean,
            KustoType::Real | KustoType::Double => DataType::Float64,
            KustoType::Datetime => timestamp_type(),
        }
    }
}

/// `Timestamp(us, "UTC")`, Delta's `timestamp`.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[derive(Debug, Clone, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: KustoType,
    /// Seen on the wire but not documented by Microsoft.
    #[serde(default)]
    pub observed: bool,
}

#[derive(Debug, Deserialize)]
pub struct TableDef {
    pub name: String,
    pub category: String,
    /// The storage-export container (`insights-logs-advancedhunting-<table>`).
    pub container: String,
    pub columns: Vec<ColumnDef>,
    #[serde(skip)]
    pub index: usize,
    #[serde(skip)]
    exact: FastMap<usize>,
    #[serde(skip)]
    folded: FastMap<usize>,
    #[serde(skip)]
    schema: Option<SchemaRef>,
}

impl TableDef {
    /// Column index for a wire key: exact match first, then ASCII-case-insensitive
    /// (`ISP` on the wire for the documented `Isp`).
    #[inline]
    pub fn column_index(&self, key: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(key) {
            return Some(i);
        }
        self.folded.get(&key.to_ascii_lowercase()).copied()
    }

    /// The Arrow schema of the typed table: registry columns, then [`META_COLUMNS`].
    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone().expect("schema built at registry load")
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.column_index(name).is_some()
    }
}

/// Metadata columns appended to every typed table, in order.
pub mod meta {
    pub const RAW: &str = "_raw";
    pub const TENANT_ID: &str = "_tenant_id";
    pub const TIME: &str = "_time";
    pub const SOURCE: &str = "_source";
    pub const POSITION: &str = "_position";
    pub const ENQUEUED_AT: &str = "_enqueued_at";
    pub const INGESTED_AT: &str = "_ingested_at";
    pub const RESCUED: &str = "_rescued";
    /// The partition column: UTC date of `Timestamp`, clamped.
    pub const DATE: &str = "_date";
    /// The record's identity by content: XXH3-64 of its table and its `properties` (keys and
    /// values in order, insignificant whitespace aside), not of the envelope's `time`, which
    /// Defender renews when it sends a record again.
    pub const RECORD_HASH: &str = "_record_hash";
}

/// The metadata fields every typed table ends with.
pub fn meta_fields() -> Vec<Field> {
    vec![
        Field::new(meta::RAW, DataType::Utf8, false),
        Field::new(meta::TENANT_ID, DataType::Utf8, true),
        Field::new(meta::TIME, timestamp_type(), true),
        Field::new(meta::SOURCE, DataType::Utf8, false),
        Field::new(meta::POSITION, DataType::Int64, false),
        Field::new(meta::ENQUEUED_AT, timestamp_type(), true),
        Field::new(meta::INGESTED_AT, timestamp_type(), false),
        Field::new(meta::RESCUED, DataType::Utf8, true),
        Field::new(meta::DATE, DataType::Date32, false),
        // added later: nullable, so tables written before read it as null
        Field::new(meta::RECORD_HASH, DataType::Int64, true),
    ]
}

/// The columns of a table of a category the registry does not know (besides [`meta`]'s).
pub mod untyped {
    /// The event time, when `properties.Timestamp` is one (it sets `_date`).
    pub const TIMESTAMP: &str = "Timestamp";
    /// The record's `properties`, as compact JSON.
    pub const PROPERTIES: &str = "properties";
}

/// Schema of an untyped table: `Timestamp`, `properties` (JSON text), then the metadata columns.
pub fn untyped_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut fields = vec![
            Field::new(untyped::TIMESTAMP, timestamp_type(), true),
            Field::new(untyped::PROPERTIES, DataType::Utf8, false),
        ];
        fields.extend(meta_fields());
        Arc::new(Schema::new(fields))
    })
    .clone()
}

/// Name of the dead-letter Delta table.
pub const DEAD_LETTER_TABLE: &str = "_dead_letters";

/// The dead-letter table's own columns (besides [`meta`]'s `_raw`, `_source`, `_position`,
/// `_ingested_at` and `_date`).
pub mod dead {
    pub const REASON: &str = "reason";
    pub const DETAIL: &str = "detail";
    pub const CATEGORY: &str = "category";
    pub const RECORD_INDEX: &str = "_record_index";
}

/// Schema of the dead-letter table.
pub fn dead_letter_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(meta::RAW, DataType::Utf8, false),
            Field::new(dead::REASON, DataType::Utf8, false),
            Field::new(dead::DETAIL, DataType::Utf8, true),
            Field::new(dead::CATEGORY, DataType::Utf8, true),
            Field::new(meta::SOURCE, DataType::Utf8, false),
            Field::new(meta::POSITION, DataType::Int64, false),
            Field::new(dead::RECORD_INDEX, DataType::Int64, false),
            Field::new(meta::INGESTED_AT, timestamp_type(), false),
            Field::new(meta::DATE, DataType::Date32, false),
        ]))
    })
    .clone()
}

/// Builds a batch of `schema` from named columns, in the schema's order: each builder names
/// its columns, the schema alone says where they go. A missing or unknown name is an error.
pub fn assemble(
    schema: &SchemaRef,
    columns: Vec<(&str, ArrayRef)>,
) -> Result<RecordBatch, ArrowError> {
    let mut by_name: HashMap<&str, ArrayRef> = columns.into_iter().collect();
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        arrays.push(
            by_name.remove(f.name().as_str()).ok_or_else(|| {
                ArrowError::SchemaError(format!("no column {} was built", f.name()))
            })?,
        );
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(ArrowError::SchemaError(format!(
            "column {extra} is not in the schema"
        )));
    }
    RecordBatch::try_new(schema.clone(), arrays)
}

pub struct Registry {
    tables: Vec<TableDef>,
    by_category: FastMap<usize>,
    by_name: FastMap<usize>,
}

#[derive(Deserialize)]
struct Doc {
    tables: Vec<TableDef>,
}

/// A schema overlay (`--schema FILE`, `XDR_SCHEMA_FILE`): columns to add to registry tables,
/// and tables the registry does not have, in the registry document's own shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayDoc {
    tables: Vec<OverlayTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayTable {
    name: String,
    /// Default: `AdvancedHunting-<name>`.
    #[serde(default)]
    category: Option<String>,
    /// Default: `insights-logs-advancedhunting-<name, lower case>`.
    #[serde(default)]
    container: Option<String>,
    columns: Vec<OverlayColumn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayColumn {
    name: String,
    #[serde(rename = "type")]
    ty: KustoType,
}

/// Why a schema overlay cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the schema overlay {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the schema overlay is not valid: {0}")]
    Parse(String),
    #[error(
        "the schema overlay changes {table}.{column} from {from:?} to {to:?}: refused, a type change would break readers of the existing table (add a new column instead)"
    )]
    TypeChange {
        table: String,
        column: String,
        from: KustoType,
        to: KustoType,
    },
    #[error("the schema overlay came too late: the registry is already in use")]
    TooLate,
}

/// A plausible Defender table name: a letter, then letters and digits, up to 64 characters.
pub fn valid_table_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=64).contains(&b.len())
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric())
}

impl Registry {
    fn embedded() -> Vec<TableDef> {
        // The document is part of the binary; a malformed one is a build defect, caught by
        // the unit tests below, not an input error.
        let doc: Doc = serde_json::from_str(TABLES_JSON).expect("embedded registry/tables.json");
        doc.tables
    }

    fn from_tables(mut tables: Vec<TableDef>) -> Registry {
        let mut by_category = FastMap::default();
        let mut by_name = FastMap::default();
        for (i, t) in tables.iter_mut().enumerate() {
            t.index = i;
            t.exact.clear();
            t.folded.clear();
            let mut fields = Vec::with_capacity(t.columns.len() + 9);
            for (ci, c) in t.columns.iter().enumerate() {
                t.exact.insert(c.name.clone(), ci);
                t.folded.insert(c.name.to_ascii_lowercase(), ci);
                fields.push(Field::new(&c.name, c.ty.arrow_type(), true));
            }
            fields.extend(meta_fields());
            t.schema = Some(Arc::new(Schema::new(fields)));
            // the documented spelling (what Defender sends) and a case-folded fallback
            by_category.insert(t.category.clone(), i);
            by_category.insert(t.category.to_ascii_lowercase(), i);
            by_name.insert(t.name.to_ascii_lowercase(), i);
        }
        Registry {
            tables,
            by_category,
            by_name,
        }
    }

    /// The embedded registry with `overlay` (a JSON document) applied: new columns are
    /// appended to their table, new tables added; a column whose type differs from the
    /// registry's is refused.
    pub fn with_overlay(overlay: &str) -> Result<Registry, RegistryError> {
        let doc: OverlayDoc =
            serde_json::from_str(overlay).map_err(|e| RegistryError::Parse(e.to_string()))?;
        let mut tables = Self::embedded();
        for ot in doc.tables {
            if !valid_table_name(&ot.name) {
                return Err(RegistryError::Parse(format!(
                    "table name `{}`: letters and digits, starting with a letter",
                    ot.name
                )));
            }
            let pos = tables
                .iter()
                .position(|t| t.name.eq_ignore_ascii_case(&ot.name));
            let t = match pos {
                Some(i) => &mut tables[i],
                None => {
                    tables.push(TableDef {
                        name: ot.name.clone(),
                        category: ot
                            .category
                            .clone()
                            .unwrap_or_else(|| format!("AdvancedHunting-{}", ot.name)),
                        container: ot.container.clone().unwrap_or_else(|| {
                            format!(
                                "insights-logs-advancedhunting-{}",
                                ot.name.to_ascii_lowercase()
                            )
                        }),
                        columns: Vec::new(),
                        index: 0,
                        exact: FastMap::default(),
                        folded: FastMap::default(),
                        schema: None,
                    });
                    tables.last_mut().expect("just pushed")
                }
            };
            for c in ot.columns {
                if meta_fields()
                    .iter()
                    .any(|f| f.name().eq_ignore_ascii_case(&c.name))
                {
                    return Err(RegistryError::Parse(format!(
                        "{}.{} collides with a metadata column",
                        t.name, c.name
                    )));
                }
                match t
                    .columns
                    .iter()
                    .find(|x| x.name.eq_ignore_ascii_case(&c.name))
                {
                    Some(existing) if existing.ty == c.ty => {}
                    Some(existing) => {
                        return Err(RegistryError::TypeChange {
                            table: t.name.clone(),
                            column: existing.name.clone(),
                            from: existing.ty,
                            to: c.ty,
                        });
                    }
                    None => t.columns.push(ColumnDef {
                        name: c.name,
                        ty: c.ty,
                        observed: false,
                    }),
                }
            }
        }
        Ok(Self::from_tables(tables))
    }

    pub fn tables(&self) -> &[TableDef] {
        &self.tables
    }

    pub fn by_category(&self, category: &str) -> Option<&TableDef> {
        let i = match self.by_category.get(category) {
            Some(i) => *i,
            None => *self.by_category.get(&category.to_ascii_lowercase())?,
        };
        Some(&self.tables[i])
    }

    pub fn by_table_name(&self, name: &str) -> Option<&TableDef> {
        let i = *self.by_name.get(&name.to_ascii_lowercase())?;
        Some(&self.tables[i])
    }
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The process-wide registry: the embedded one, or the one [`install_overlay`] made.
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::from_tables(Registry::embedded()))
}

/// Installs a schema overlay file for the whole process. It must come before anything uses
/// the registry (the CLI and the handler do it while they check their settings).
/// Installing the same file again is a no-op.
pub fn install_overlay(path: &std::path::Path) -> Result<(), RegistryError> {
    static INSTALLED: OnceLock<std::path::PathBuf> = OnceLock::new();
    if INSTALLED.get().is_some_and(|p| p == path) {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let r = Registry::with_overlay(&text)?;
    REGISTRY.set(r).map_err(|_| RegistryError::TooLate)?;
    let _ = INSTALLED.set(path.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_all_tables_and_no_case_duplicates() {
        let r = registry();
        assert_eq!(r.tables().len(), 26);
        for t in r.tables() {
            assert_eq!(
                t.folded.len(),
                t.columns.len(),
                "{} has case duplicates",
                t.name
            );
            assert!(t.category.starts_with("AdvancedHunting-"));
            assert!(t.has_column("Timestamp"), "{} lacks Timestamp", t.name);
            for f in meta_fields() {
                assert!(
                    !t.has_column(f.name()),
                    "{} collides with {}",
                    t.name,
                    f.name()
                );
            }
        }
        let total: usize = r.tables().iter().map(|t| t.columns.len()).sum();
        assert!(total >= 856, "{total}");
    }

    #[test]
    fn overlays_add_columns_and_tables_and_refuse_type_changes() {
        let r = Registry::with_overlay(
            r#"{"tables":[
                {"name":"DeviceInfo","columns":[{"name":"NewColumn","type":"string"},{"name":"osbuild","type":"long"}]},
                {"name":"CloudAuditEvents","columns":[{"name":"Timestamp","type":"datetime"},{"name":"OperationName","type":"string"}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(r.tables().len(), 27);
        let d = r.by_table_name("DeviceInfo").unwrap();
        assert_eq!(d.columns.last().unwrap().name, "NewColumn");
        assert!(d.arrow_schema().field_with_name("NewColumn").is_ok());
        let c = r.by_category("AdvancedHunting-CloudAuditEvents").unwrap();
        assert_eq!(
            c.container,
            "insights-logs-advancedhunting-cloudauditevents"
        );
        assert_eq!(c.index, 26);
        let e = Registry::with_overlay(
            r#"{"tables":[{"name":"DeviceInfo","columns":[{"name":"OSBuild","type":"string"}]}]}"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("OSBuild") && e.contains("refused"), "{e}");
        assert!(Registry::with_overlay(r#"{"tables":[{"name":"x y","columns":[]}]}"#).is_err());
        assert!(
            Registry::with_overlay(
                r#"{"tables":[{"name":"T1","columns":[{"name":"_raw","type":"string"}]}]}"#
            )
            .is_err()
        );
        assert!(Registry::with_overlay("nope").is_err());
    }

    #[test]
    fn keys_match_case_insensitively() {
        let t = registry().by_table_name("CloudAppEvents").unwrap();
        assert_eq!(t.column_index("ISP"), t.column_index("Isp"));
        assert!(t.column_index("ISP").is_some());
        let d = registry().by_table_name("DeviceInfo").unwrap();
        assert_eq!(
            d.columns[d.column_index("Timestamp").unwrap()].ty,
            KustoType::Datetime
        );
        // ReportId differs per table
        assert_eq!(
            d.columns[d.column_index("ReportId").unwrap()].ty,
            KustoType::Long
        );
        let e = registry().by_table_name("EmailEvents").unwrap();
        assert_eq!(
            e.columns[e.column_index("ReportId").unwrap()].ty,
            KustoType::String
        );
    }
}
