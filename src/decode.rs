//! Source decoding: one input unit (a storage-export line or an Event Hub body) into Defender
//! records routed by category, or dead letters with a reason. Both wire forms are detected per
//! unit. Records borrow the input; the one allocation per record on the happy path is the list
//! of its `properties` (key, raw value) pairs, split in the same pass that parses the record so
//! that typed building does not parse them again.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::model::{Category, DeadLetterReason};

/// At most this much of an oversized record is kept as its `_raw` in the dead-letter table;
/// the source coordinates (`_source`, `_position`) point at the whole record.
pub const OVERSIZED_RAW_PREFIX: usize = 64 * 1024;

/// One unit of input: a line of a file or blob, or one Event Hub event body.
#[derive(Clone, Copy, Debug)]
pub struct Unit<'a> {
    /// The bytes, without the line terminator. For an oversized line only a prefix is here.
    pub bytes: &'a [u8],
    /// The full length of the unit (larger than `bytes.len()` when the reader truncated it).
    pub full_len: usize,
    /// Position of every record in this unit (sequence number or offset past the line).
    pub position: i64,
    /// Event Hub enqueued time (µs since the epoch, UTC), if any.
    pub enqueued_at: Option<i64>,
}

impl<'a> Unit<'a> {
    pub fn new(bytes: &'a [u8], position: i64) -> Self {
        Unit {
            bytes,
            full_len: bytes.len(),
            position,
            enqueued_at: None,
        }
    }
}

/// A record that decoded and routed: its table, envelope fields, and its `properties` as
/// (key, raw value) pairs.
#[derive(Debug)]
pub struct RecordRef<'a> {
    pub raw: &'a str,
    pub category: Category,
    pub tenant_id: Option<&'a RawValue>,
    pub time: Option<&'a RawValue>,
    /// The `properties` object, split while the record was parsed (typed building does not
    /// parse it again): keys borrowed from the input unless they had escapes.
    pub properties: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Index of the record within its unit (0 for a storage line).
    pub record_index: u32,
}

/// A record (or unit) that could not be routed to a typed table.
#[derive(Debug)]
pub struct DeadRef<'a> {
    pub raw: Cow<'a, str>,
    pub reason: DeadLetterReason,
    pub detail: String,
    pub category: Option<String>,
    pub record_index: u32,
}

/// A record of a category the registry does not know whose name is a plausible table name:
/// it goes to a table of its own, untyped (its `properties` kept as JSON), unless the
/// pipeline's cap on new tables says otherwise.
#[derive(Debug)]
pub struct UntypedRef<'a> {
    pub raw: &'a str,
    /// The table: the category without `AdvancedHunting-`.
    pub table: String,
    /// The category as it arrived.
    pub category: String,
    pub tenant_id: Option<&'a RawValue>,
    pub time: Option<&'a RawValue>,
    pub properties: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub record_index: u32,
}

#[derive(Debug)]
pub enum Decoded<'a> {
    Record(RecordRef<'a>),
    Untyped(UntypedRef<'a>),
    Dead(DeadRef<'a>),
}

/// The table a category the registry does not know would get: the category without
/// `AdvancedHunting-` (any case), if that is a plausible table name (a letter, then letters
/// and digits, 2-64 characters). Anything else is not a table (a flood of garbage categories
/// stays in the dead letters).
pub fn untyped_table_name(category: &str) -> Option<String> {
    const PREFIX: &str = "advancedhunting-";
    let name = match category.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => &category[PREFIX.len()..],
        _ => category,
    };
    crate::registry::valid_table_name(name).then(|| name.to_owned())
}

/// Visitor methods for the JSON scalars, each giving `$variant(kind)` (a container field that
/// holds something else; the kind names it in the dead letter's detail).
macro_rules! scalar_kinds {
    ($variant:path) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($variant("a string"))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($variant("a boolean"))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($variant("a number"))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($variant("a number"))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($variant("a number"))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($variant("null"))
        }
    };
}

/// Envelope keys, all taken as raw JSON so that a wrong type is a clear dead letter, not a
/// parse failure of the whole unit. Unknown keys (`operationName`, `_TimeReceivedBySvc`,
/// `Tenant`) are skipped; they stay in `_raw`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    records: Option<Records<'a>>,
    #[serde(borrow, default)]
    category: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "tenantId")]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    time: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<Props<'a>>,
}

/// A record's `properties`: split into (key, raw value) pairs in the same pass that parses
/// the record, or the kind of JSON found if it is not an object.
enum Props<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    NotObject(&'static str),
}

/// A key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Props<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the properties object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(a.size_hint().unwrap_or(32));
                while let Some(Key(k)) = a.next_key::<Key<'a>>()? {
                    let v: &'de RawValue = a.next_value()?;
                    pairs.push((k, v));
                }
                Ok(Props::Object(pairs))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Props::NotObject("an array"))
            }
            scalar_kinds!(Props::NotObject);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An Event Hub body's `records`, split into the records' texts while the body is parsed
/// (one pass over the body, not a second one over the array).
enum Records<'a> {
    List(Vec<&'a RawValue>),
    /// Not an array: the kind of JSON found instead.
    NotArray(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Records<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Records<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(a.size_hint().unwrap_or(16));
                while let Some(r) = a.next_element::<&'de RawValue>()? {
                    list.push(r);
                }
                Ok(Records::List(list))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Records::NotArray("an object"))
            }
            scalar_kinds!(Records::NotArray);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

const BOM: &str = "\u{feff}";

/// Decodes one unit, calling `out` for every record or dead letter in it. Returns the number
/// of records the unit held (0 for a blank line, which is not a record).
pub fn decode_unit<'a>(
    unit: &Unit<'a>,
    max_record_bytes: usize,
    out: &mut impl FnMut(Decoded<'a>),
) -> usize {
    if unit.full_len > max_record_bytes || unit.bytes.len() > max_record_bytes {
        let keep = unit.bytes.len().min(OVERSIZED_RAW_PREFIX);
        out(Decoded::Dead(DeadRef {
            raw: Cow::Owned(utf8_prefix_lossy(&unit.bytes[..keep])),
            reason: DeadLetterReason::Oversized,
            detail: format!(
                "record of {} bytes exceeds the limit of {} bytes; _raw holds its first {} bytes",
                unit.full_len, max_record_bytes, keep
            ),
            category: None,
            record_index: 0,
        }));
        return 1;
    }
    let text = match std::str::from_utf8(unit.bytes) {
        Ok(t) => t,
        Err(e) => {
            if is_blank(unit.bytes) {
                return 0;
            }
            out(Decoded::Dead(DeadRef {
                raw: Cow::Owned(String::from_utf8_lossy(unit.bytes).into_owned()),
                reason: DeadLetterReason::InvalidUtf8,
                detail: format!(
                    "invalid UTF-8 at byte {} of the record; _raw has U+FFFD in its place",
                    e.valid_up_to()
                ),
                category: None,
                record_index: 0,
            }));
            return 1;
        }
    };
    let text = text.strip_prefix(BOM).unwrap_or(text).trim();
    if text.is_empty() {
        return 0;
    }
    decode_text(text, max_record_bytes, out)
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.is_ascii_whitespace())
}

/// Cuts at a character boundary (an oversized prefix may end mid-character).
fn utf8_prefix_lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn decode_text<'a>(
    text: &'a str,
    max_record_bytes: usize,
    out: &mut impl FnMut(Decoded<'a>),
) -> usize {
    let env = match parse_envelope(text) {
        Ok(env) => env,
        Err((reason, detail)) => {
            out(dead(text, reason, detail, None, 0));
            return 1;
        }
    };
    let Some(records) = env.records else {
        route(text, env, 0, out);
        return 1;
    };
    // An Event Hub body: {"records":[...]}.
    let list = match records {
        Records::List(list) => list,
        Records::NotArray(kind) => {
            out(dead(
                text,
                DeadLetterReason::InvalidEnvelope,
                format!("`records` must be an array, found {kind}"),
                None,
                0,
            ));
            return 1;
        }
    };
    let n = list.len();
    for (i, rec) in list.into_iter().enumerate() {
        let raw = rec.get();
        let idx = i as u32;
        if raw.len() > max_record_bytes {
            let mut cut = OVERSIZED_RAW_PREFIX.min(raw.len());
            while !raw.is_char_boundary(cut) {
                cut -= 1;
            }
            out(Decoded::Dead(DeadRef {
                raw: Cow::Borrowed(&raw[..cut]),
                reason: DeadLetterReason::Oversized,
                detail: format!(
                    "record of {} bytes exceeds the limit of {} bytes; _raw holds its first {} bytes",
                    raw.len(),
                    max_record_bytes,
                    cut
                ),
                category: None,
                record_index: idx,
            }));
            continue;
        }
        match parse_envelope(raw) {
            Ok(env) if env.records.is_none() => route(raw, env, idx, out),
            Ok(env) => route(
                raw,
                Envelope {
                    records: None,
                    ..env
                },
                idx,
                out,
            ),
            Err((reason, detail)) => out(dead(raw, reason, detail, None, idx)),
        }
    }
    n
}

fn dead<'a>(
    raw: &'a str,
    reason: DeadLetterReason,
    detail: String,
    category: Option<String>,
    record_index: u32,
) -> Decoded<'a> {
    Decoded::Dead(DeadRef {
        raw: Cow::Borrowed(raw),
        reason,
        detail,
        category,
        record_index,
    })
}

fn parse_envelope(text: &str) -> Result<Envelope<'_>, (DeadLetterReason, String)> {
    if !text.starts_with('{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => (
                DeadLetterReason::NotAnObject,
                format!("expected a JSON object, found {}", json_kind(text)),
            ),
            Err(e) => (DeadLetterReason::InvalidJson, e.to_string()),
        });
    }
    serde_json::from_str::<Envelope>(text)
        .map_err(|e| (DeadLetterReason::InvalidJson, e.to_string()))
}

fn route<'a>(raw: &'a str, env: Envelope<'a>, idx: u32, out: &mut impl FnMut(Decoded<'a>)) {
    let category = match env.category {
        None => {
            out(dead(
                raw,
                DeadLetterReason::MissingCategory,
                "no `category` key".into(),
                None,
                idx,
            ));
            return;
        }
        // borrowed, not allocated per record (serde's Cow<str> always owns)
        Some(c) => match crate::json::as_str_lossy(c.get()) {
            Some((c, _)) => c,
            None => {
                out(dead(
                    raw,
                    DeadLetterReason::MissingCategory,
                    format!("`category` must be a string, found {}", json_kind(c.get())),
                    None,
                    idx,
                ));
                return;
            }
        },
    };
    let cat = Category::from_wire(&category);
    let untyped = match cat {
        Some(_) => None,
        None => match untyped_table_name(&category) {
            Some(t) => Some(t),
            None => {
                out(dead(
                    raw,
                    DeadLetterReason::UnknownCategory,
                    format!(
                        "category `{category}` is not in the schema registry, nor a plausible name for a new table"
                    ),
                    Some(category.into_owned()),
                    idx,
                ));
                return;
            }
        },
    };
    let properties = match env.properties {
        Some(Props::Object(pairs)) => pairs,
        other => {
            out(dead(
                raw,
                DeadLetterReason::MissingProperties,
                match other {
                    Some(Props::NotObject(kind)) => {
                        format!("`properties` must be an object, found {kind}")
                    }
                    _ => "no `properties` object".into(),
                },
                Some(match cat {
                    Some(c) => c.wire_name().to_owned(),
                    None => category.into_owned(),
                }),
                idx,
            ));
            return;
        }
    };
    let Some(cat) = cat else {
        out(Decoded::Untyped(UntypedRef {
            raw,
            table: untyped.unwrap_or_default(),
            category: category.into_owned(),
            tenant_id: env.tenant_id,
            time: env.time,
            properties,
            record_index: idx,
        }));
        return;
    };
    out(Decoded::Record(RecordRef {
        raw,
        category: cat,
        tenant_id: env.tenant_id,
        time: env.time,
        properties,
        record_index: idx,
    }))
}

/// A short name for the kind of a JSON text, for error details.
pub fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Vec<String> {
        let unit = Unit::new(line.as_bytes(), 1);
        let mut got = vec![];
        decode_unit(&unit, 1 << 20, &mut |d| {
            got.push(match d {
                Decoded::Record(r) => format!("ok:{}:{}", r.category, r.record_index),
                Decoded::Untyped(u) => format!("new:{}:{}", u.table, u.record_index),
                Decoded::Dead(d) => format!("dead:{}:{}", d.reason, d.record_index),
            })
        });
        got
    }

    #[test]
    fn routes_both_forms() {
        let rec = r#"{"time":"2026-01-01T00:00:00Z","category":"AdvancedHunting-DeviceInfo","properties":{"Timestamp":"2026-01-01T00:00:00Z"}}"#;
        assert_eq!(run(rec), vec!["ok:DeviceInfo:0"]);
        let body = format!(r#"{{"records":[{rec},{rec}, 5]}}"#);
        assert_eq!(
            run(&body),
            vec!["ok:DeviceInfo:0", "ok:DeviceInfo:1", "dead:not_an_object:2"]
        );
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(run("   "), Vec::<String>::new());
        assert_eq!(run("{\"category\":"), vec!["dead:invalid_json:0"]);
        assert_eq!(run("[1,2]"), vec!["dead:not_an_object:0"]);
        assert_eq!(run("nope"), vec!["dead:invalid_json:0"]);
        assert_eq!(run(r#"{"properties":{}}"#), vec!["dead:missing_category:0"]);
        assert_eq!(
            run(r#"{"category":7,"properties":{}}"#),
            vec!["dead:missing_category:0"]
        );
        assert_eq!(
            run(r#"{"category":"AdvancedHunting-Nope","properties":{}}"#),
            vec!["new:Nope:0"]
        );
        assert_eq!(
            run(r#"{"category":"AdvancedHunting-no such/table","properties":{}}"#),
            vec!["dead:unknown_category:0"]
        );
        assert_eq!(
            run(r#"{"category":"AdvancedHunting-Nope"}"#),
            vec!["dead:missing_properties:0"]
        );
        assert_eq!(
            run(r#"{"category":"AdvancedHunting-DeviceInfo"}"#),
            vec!["dead:missing_properties:0"]
        );
        assert_eq!(run(r#"{"records":{}}"#), vec!["dead:invalid_envelope:0"]);
        assert_eq!(
            run("\u{feff}{\"category\":\"AdvancedHunting-DeviceInfo\",\"properties\":{}}"),
            vec!["ok:DeviceInfo:0"]
        );
    }

    #[test]
    fn deep_nesting_is_not_a_crash() {
        // Raw values are captured without recursion, so deep nesting inside a property lands
        // (its column keeps the text); deep nesting where we need a value is a clear error.
        let deep = format!(
            r#"{{"category":"AdvancedHunting-DeviceInfo","properties":{{"AdditionalFields":{}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(run(&deep), vec!["ok:DeviceInfo:0"]);
        let deep_cat = format!(
            r#"{{"category":{}{},"properties":{{}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(run(&deep_cat), vec!["dead:missing_category:0"]);
    }

    #[test]
    fn invalid_utf8_and_oversized() {
        let unit = Unit::new(b"{\"a\":\"\xff\"}", 1);
        let mut reasons = vec![];
        decode_unit(&unit, 100, &mut |d| {
            if let Decoded::Dead(d) = d {
                reasons.push(d.reason)
            }
        });
        assert_eq!(reasons, vec![DeadLetterReason::InvalidUtf8]);
        let big = "x".repeat(200);
        let unit = Unit::new(big.as_bytes(), 1);
        reasons.clear();
        decode_unit(&unit, 100, &mut |d| {
            if let Decoded::Dead(d) = d {
                reasons.push(d.reason)
            }
        });
        assert_eq!(reasons, vec![DeadLetterReason::Oversized]);
    }
}
