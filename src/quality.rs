//! Data-quality rules: declarative per-table checks loaded from TOML (defaults in
//! `config/rules.toml`, embedded), evaluated on each typed batch. `reject` sends a row to the
//! dead-letter table (reason `rule_failed`); `warn` lets it land and counts it.

use std::collections::BTreeMap;
use std::path::Path;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, TimestampMicrosecondType};
use deltalake::arrow::error::ArrowError;
use serde::Deserialize;

use crate::model::Category;
use crate::registry::{KustoType, meta};

/// The rules shipped with the binary.
pub const DEFAULT_RULES: &str = include_str!("../config/rules.toml");

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rules file is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("rule `{rule}`: {msg}")]
    Invalid { rule: String, msg: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Reject,
    Warn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CheckKind {
    NotNull,
    NotEmpty,
    OneOf,
    MaxLength,
    NotInFuture,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    #[serde(default = "all_tables")]
    tables: Vec<String>,
    column: String,
    check: CheckKind,
    action: Action,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    max: Option<usize>,
    #[serde(default)]
    tolerance_hours: Option<i64>,
}

fn all_tables() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Clone, Debug)]
enum Check {
    NotNull,
    NotEmpty,
    OneOf(Vec<String>),
    MaxLength(usize),
    NotInFuture { tolerance_micros: i64 },
}

#[derive(Clone, Debug)]
struct Rule {
    name: String,
    column: String,
    /// Column index in the typed batch.
    col: usize,
    check: Check,
    action: Action,
}

/// Compiled rules, per table.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    per_table: Vec<Vec<Rule>>,
}

/// Counts of one rule's failures.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleCount {
    pub action: String,
    pub failed: u64,
}

/// A row a `reject` rule sent away.
#[derive(Debug)]
pub struct Rejected {
    pub row: usize,
    pub detail: String,
}

/// The outcome of applying the rules to one batch.
pub struct Outcome {
    /// The rows that pass (all rows when nothing was rejected).
    pub kept: RecordBatch,
    /// Row numbers (in the input batch) of the rejected rows, with why.
    pub rejected: Vec<Rejected>,
    /// Failures per rule name.
    pub counts: BTreeMap<String, RuleCount>,
}

fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(name),
        Some((pre, post)) => {
            let (n, p, s) = (
                name.to_ascii_lowercase(),
                pre.to_ascii_lowercase(),
                post.to_ascii_lowercase(),
            );
            n.len() >= p.len() + s.len() && n.starts_with(&p) && n.ends_with(&s)
        }
    }
}

impl Rules {
    /// The default rules shipped in `config/rules.toml`.
    pub fn defaults() -> Rules {
        // The embedded file is covered by a unit test; failing here is a build defect.
        Rules::parse(DEFAULT_RULES).expect("embedded config/rules.toml is valid")
    }

    /// No rules at all.
    pub fn none() -> Rules {
        Rules {
            per_table: vec![Vec::new(); Category::all().count()],
        }
    }

    pub fn from_file(path: &Path) -> Result<Rules, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Rules::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text)?;
        let mut rules = Rules::none();
        for spec in file.rule {
            let invalid = |msg: String| RulesError::Invalid {
                rule: spec.name.clone(),
                msg,
            };
            let mut matched = 0;
            for cat in Category::all() {
                let table = cat.table();
                let Some(pattern) = spec.tables.iter().find(|p| glob(p, &table.name)) else {
                    continue;
                };
                let Some(col) = table.column_index(&spec.column) else {
                    if !pattern.contains('*') {
                        return Err(invalid(format!(
                            "table {} has no column {}",
                            table.name, spec.column
                        )));
                    }
                    continue;
                };
                let ty = table.columns[col].ty;
                let is_text =
                    matches!(ty, KustoType::String | KustoType::Guid | KustoType::Dynamic);
                let check = match spec.check {
                    CheckKind::NotNull => Check::NotNull,
                    CheckKind::NotEmpty if is_text => Check::NotEmpty,
                    CheckKind::OneOf if is_text && !spec.values.is_empty() => {
                        Check::OneOf(spec.values.clone())
                    }
                    CheckKind::MaxLength if is_text => Check::MaxLength(
                        spec.max
                            .ok_or_else(|| invalid("max_length needs `max`".into()))?,
                    ),
                    CheckKind::NotInFuture if ty == KustoType::Datetime => Check::NotInFuture {
                        tolerance_micros: spec.tolerance_hours.unwrap_or(0) * 3_600_000_000,
                    },
                    other => {
                        return Err(invalid(format!(
                            "check {other:?} does not apply to {}.{} ({ty:?}){}",
                            table.name,
                            spec.column,
                            if other == CheckKind::OneOf {
                                " or has no `values`"
                            } else {
                                ""
                            }
                        )));
                    }
                };
                matched += 1;
                rules.per_table[cat.index()].push(Rule {
                    name: spec.name.clone(),
                    column: table.columns[col].name.clone(),
                    col,
                    check,
                    action: spec.action,
                });
            }
            if matched == 0 {
                return Err(invalid(format!(
                    "matches no table with a column {} (tables = {:?})",
                    spec.column, spec.tables
                )));
            }
        }
        Ok(rules)
    }

    pub fn for_table(&self, cat: Category) -> impl Iterator<Item = (&str, Action)> {
        self.per_table[cat.index()]
            .iter()
            .map(|r| (r.name.as_str(), r.action))
    }

    /// Applies the table's rules to `batch` (a typed batch of `cat`).
    pub fn apply(&self, cat: Category, batch: RecordBatch) -> Result<Outcome, ArrowError> {
        let rules = &self.per_table[cat.index()];
        let mut counts = BTreeMap::new();
        if rules.is_empty() || batch.num_rows() == 0 {
            return Ok(Outcome {
                kept: batch,
                rejected: Vec::new(),
                counts,
            });
        }
        let n = batch.num_rows();
        let mut reject: Vec<Option<String>> = vec![None; n];
        let ingested = batch
            .column_by_name(meta::INGESTED_AT)
            .map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
        for rule in rules {
            let col = batch.column(rule.col);
            let mut failed = 0u64;
            for (row, slot) in reject.iter_mut().enumerate() {
                let fails = match &rule.check {
                    Check::NotNull => col.is_null(row),
                    Check::NotEmpty => {
                        col.is_null(row) || str_at(col.as_ref(), row).is_some_and(str::is_empty)
                    }
                    Check::OneOf(values) => {
                        col.is_valid(row)
                            && str_at(col.as_ref(), row)
                                .is_some_and(|v| !values.iter().any(|x| x == v))
                    }
                    Check::MaxLength(max) => {
                        str_at(col.as_ref(), row).is_some_and(|v| v.chars().count() > *max)
                    }
                    Check::NotInFuture { tolerance_micros } => {
                        let ts = col.as_primitive::<TimestampMicrosecondType>();
                        match &ingested {
                            Some(ing) if ts.is_valid(row) => {
                                ts.value(row) > ing.value(row) + tolerance_micros
                            }
                            _ => false,
                        }
                    }
                };
                if fails {
                    failed += 1;
                    if rule.action == Action::Reject && slot.is_none() {
                        *slot = Some(format!(
                            "rule {} failed: {} {}",
                            rule.name,
                            rule.column,
                            describe(&rule.check)
                        ));
                    }
                }
            }
            let entry = counts.entry(rule.name.clone()).or_insert(RuleCount {
                action: format!("{:?}", rule.action).to_lowercase(),
                failed: 0,
            });
            entry.failed += failed;
        }
        let rejected: Vec<Rejected> = reject
            .iter()
            .enumerate()
            .filter_map(|(row, d)| {
                d.as_ref().map(|d| Rejected {
                    row,
                    detail: d.clone(),
                })
            })
            .collect();
        let kept = if rejected.is_empty() {
            batch
        } else {
            let mask: BooleanArray = reject.iter().map(|r| Some(r.is_none())).collect();
            filter_record_batch(&batch, &mask)?
        };
        Ok(Outcome {
            kept,
            rejected,
            counts,
        })
    }
}

fn str_at(col: &dyn Array, row: usize) -> Option<&str> {
    match col.data_type() {
        DataType::Utf8 if col.is_valid(row) => Some(col.as_string::<i32>().value(row)),
        _ => None,
    }
}

fn describe(c: &Check) -> String {
    match c {
        Check::NotNull => "is null".into(),
        Check::NotEmpty => "is null or empty".into(),
        Check::OneOf(v) => format!("is not one of {v:?}"),
        Check::MaxLength(m) => format!("is longer than {m} characters"),
        Check::NotInFuture { tolerance_micros } => format!(
            "is more than {} hours in the future",
            tolerance_micros / 3_600_000_000
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let r = Rules::defaults();
        let cat = Category::from_table_name("DeviceProcessEvents").unwrap();
        let names: Vec<_> = r.for_table(cat).map(|(n, _)| n).collect();
        assert!(names.contains(&"timestamp_not_null"));
        assert!(names.contains(&"device_id_present"));
        let email = Category::from_table_name("EmailEvents").unwrap();
        assert!(!r.for_table(email).any(|(n, _)| n == "device_id_present"));
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let e = Rules::parse("[[rule]]\nname='x'\ntables=['EmailEvents']\ncolumn='DeviceId'\ncheck='not_null'\naction='reject'\n")
            .unwrap_err();
        assert!(e.to_string().contains("has no column DeviceId"), "{e}");
        let e = Rules::parse(
            "[[rule]]\nname='x'\ncolumn='Timestamp'\ncheck='not_empty'\naction='warn'\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not apply"), "{e}");
        assert!(Rules::parse("[[rule]]\nname='x'\n").is_err());
        assert!(glob("Identity*Events", "IdentityLogonEvents"));
        assert!(!glob("Identity*Events", "IdentityInfo"));
    }
}
