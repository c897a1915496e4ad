//! Core vocabulary shared by every stage: where a record came from (`SourceId`,
//! `SourcePosition`), which table it belongs to (`Category`), and why it was dead-lettered
//! (`DeadLetterReason`).

use std::fmt;
use std::path::Path;

use crate::registry::{TableDef, registry};

/// A Defender table, identified by its streaming category (`AdvancedHunting-<Table>`).
///
/// Only categories known to the schema registry can be constructed, so holding a `Category`
/// means a schema exists for it.
#[derive(Clone, Copy)]
pub struct Category(&'static TableDef);

impl Category {
    /// Resolves a wire category (`AdvancedHunting-DeviceProcessEvents`), ignoring ASCII case.
    pub fn from_wire(category: &str) -> Option<Self> {
        registry().by_category(category).map(Category)
    }

    /// Resolves a table name (`DeviceProcessEvents`), ignoring ASCII case.
    pub fn from_table_name(name: &str) -> Option<Self> {
        registry().by_table_name(name).map(Category)
    }

    /// Every category of the registry, in registry order.
    pub fn all() -> impl Iterator<Item = Category> {
        registry().tables().iter().map(Category)
    }

    pub fn table(&self) -> &'static TableDef {
        self.0
    }

    /// The Delta table name, Defender's own (`DeviceProcessEvents`).
    pub fn table_name(&self) -> &'static str {
        &self.0.name
    }

    /// The wire category (`AdvancedHunting-DeviceProcessEvents`).
    pub fn wire_name(&self) -> &'static str {
        &self.0.category
    }

    /// Stable small index (registry order), handy for per-table arrays.
    pub fn index(&self) -> usize {
        self.0.index
    }
}

impl PartialEq for Category {
    fn eq(&self, other: &Self) -> bool {
        self.0.index == other.0.index
    }
}
impl Eq for Category {}
impl std::hash::Hash for Category {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.index.hash(state)
    }
}
impl PartialOrd for Category {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Category {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name.cmp(&other.0.name)
    }
}

impl fmt::Debug for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Category({})", self.0.name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// The owner of a sequence of positions: an Event Hub partition, a blob, or a local file.
/// It is the `_source` column and the Delta `txn` app id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(String);

impl SourceId {
    /// `eventhub://<namespace FQDN>/<hub>/<partition>`; the consumer group is deliberately
    /// not part of it (the id names the data, not the reader).
    pub fn event_hub(namespace: &str, hub: &str, partition: &str) -> Self {
        SourceId(format!(
            "eventhub://{}/{}/{}",
            namespace.trim().to_ascii_lowercase(),
            hub.trim().to_ascii_lowercase(),
            partition.trim()
        ))
    }

    /// `blob://<account>/<container>/<path>`.
    pub fn blob(account: &str, container: &str, path: &str) -> Self {
        SourceId(format!(
            "blob://{}/{}/{}",
            account.to_ascii_lowercase(),
            container,
            path.trim_start_matches('/')
        ))
    }

    /// `file://<absolute path>`.
    pub fn file(path: &Path) -> Self {
        SourceId(format!("file://{}", path.display()))
    }

    /// An id given verbatim (tests, library callers with their own sources).
    pub fn custom(id: impl Into<String>) -> Self {
        SourceId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position within a source: an Event Hub sequence number, or the byte offset just past a
/// record's line in a blob or file. Strictly increasing within a source; it is the `_position`
/// column and the Delta `txn` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePosition(pub i64);

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a record went to the dead-letter table instead of its typed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeadLetterReason {
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// Not parseable as JSON (including truncation and nesting deeper than 128 levels).
    InvalidJson,
    /// Valid JSON, but not an object (a number, an array, a string ...).
    NotAnObject,
    /// An Event Hub body whose `records` is not an array.
    InvalidEnvelope,
    /// No `category` key, or it is not a string.
    MissingCategory,
    /// A `category` the schema registry does not know.
    UnknownCategory,
    /// No `properties` object.
    MissingProperties,
    /// A data-quality rule with action `reject` failed.
    RuleFailed,
    /// The record is larger than the configured size limit.
    Oversized,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 9] = [
        DeadLetterReason::InvalidUtf8,
        DeadLetterReason::InvalidJson,
        DeadLetterReason::NotAnObject,
        DeadLetterReason::InvalidEnvelope,
        DeadLetterReason::MissingCategory,
        DeadLetterReason::UnknownCategory,
        DeadLetterReason::MissingProperties,
        DeadLetterReason::RuleFailed,
        DeadLetterReason::Oversized,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DeadLetterReason::InvalidUtf8 => "invalid_utf8",
            DeadLetterReason::InvalidJson => "invalid_json",
            DeadLetterReason::NotAnObject => "not_an_object",
            DeadLetterReason::InvalidEnvelope => "invalid_envelope",
            DeadLetterReason::MissingCategory => "missing_category",
            DeadLetterReason::UnknownCategory => "unknown_category",
            DeadLetterReason::MissingProperties => "missing_properties",
            DeadLetterReason::RuleFailed => "rule_failed",
            DeadLetterReason::Oversized => "oversized",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for r in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn categories_resolve_case_insensitively() {
        let c = Category::from_wire("advancedhunting-deviceprocessevents").unwrap();
        assert_eq!(c.table_name(), "DeviceProcessEvents");
        assert_eq!(c.wire_name(), "AdvancedHunting-DeviceProcessEvents");
        assert!(Category::from_wire("AdvancedHunting-NoSuchTable").is_none());
        assert_eq!(Category::all().count(), 26);
    }

    #[test]
    fn event_hub_ids_name_the_data_not_the_reader() {
        let a = SourceId::event_hub("NS.servicebus.windows.net", "Defender", "3");
        assert_eq!(
            a.as_str(),
            "eventhub://ns.servicebus.windows.net/defender/3"
        );
    }
}
