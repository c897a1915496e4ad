//! The Azure Functions custom-handler wire protocol: the host's invocation request
//! (`{"Data":…, "Metadata":…}` with arrays and strings JSON-encoded inside strings) and the
//! response (`{"Outputs":…, "Logs":…, "ReturnValue":…}`, always a JSON object).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::json::parse_timestamp_micros;
use crate::model::SourceId;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invocation body is not a JSON object: {0}")]
    Body(String),
    #[error("`{0}` is missing")]
    Missing(String),
    #[error("`{field}` is malformed: {msg}")]
    Malformed { field: String, msg: String },
}

fn malformed(field: &str, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed {
        field: field.to_owned(),
        msg: msg.into(),
    }
}

/// The host's request for one invocation.
#[derive(Debug, Default, Deserialize)]
pub struct Invocation {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

impl Invocation {
    pub fn parse(body: &[u8]) -> Result<Invocation, ProtocolError> {
        serde_json::from_slice(body).map_err(|e| ProtocolError::Body(e.to_string()))
    }

    fn get<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        map.get(key).or_else(|| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }

    pub fn data(&self, key: &str) -> Option<&Value> {
        Self::get(&self.data, key).filter(|v| !v.is_null())
    }

    pub fn meta(&self, key: &str) -> Option<&Value> {
        Self::get(&self.metadata, key).filter(|v| !v.is_null())
    }
}

/// A structured value (array or object) that may arrive JSON-encoded inside a string.
pub fn structured(field: &str, v: &Value) -> Result<Value, ProtocolError> {
    match v {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| malformed(field, format!("not JSON text: {e}")))
        }
        other => Ok(other.clone()),
    }
}

/// A string value, which the host sends double-encoded (`"\"text\""`) or plain.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => inner,
            _ => s.clone(),
        },
        other => other.to_string(),
    }
}

fn field_str(obj: &Value, key: &str) -> Option<String> {
    let o = obj.as_object()?;
    let v = Invocation::get(o, key)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// How the Event Hub trigger hands over event bodies: its function.json `dataType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventDataType {
    /// Each body as a JSON string (the host decoded it as UTF-8).
    #[default]
    String,
    /// Each body as a base64 string of its bytes: no escaping of the JSON inside, so cheaper
    /// to decode (see README, Performance).
    Binary,
}

impl std::str::FromStr for EventDataType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "string" => Ok(EventDataType::String),
            "binary" => Ok(EventDataType::Binary),
            other => Err(format!("expected `string` or `binary`, got `{other}`")),
        }
    }
}

/// One Event Hub event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The body's bytes (invalid UTF-8 is the decoder's to dead-letter, not ours to refuse).
    pub body: Vec<u8>,
    pub sequence_number: i64,
    pub enqueued_at: Option<i64>,
}

/// An Event Hub trigger batch (`cardinality: many`, `dataType: string`).
#[derive(Debug, Clone)]
pub struct EventHubBatch {
    pub source: SourceId,
    pub partition: String,
    pub events: Vec<Event>,
}

/// Decodes the Event Hub trigger's `Data.<binding>` and its metadata arrays (aligned by
/// index), with the partition from `PartitionContext`.
pub fn decode_event_hub(
    inv: &Invocation,
    binding: &str,
    data_type: EventDataType,
) -> Result<EventHubBatch, ProtocolError> {
    let raw = inv
        .data(binding)
        .ok_or_else(|| ProtocolError::Missing(format!("Data.{binding}")))?;
    let bodies = events_array(binding, structured(&format!("Data.{binding}"), raw)?)?;
    decode_bodies(inv, bodies, binding, data_type)
}

/// [`decode_event_hub`] that takes the invocation apart: the events' text is freed as soon as
/// it is parsed, so a large batch is held twice at most while it is decoded, not three times
/// (the request body should be dropped once [`Invocation::parse`] returned).
pub fn decode_event_hub_owned(
    mut inv: Invocation,
    binding: &str,
    data_type: EventDataType,
) -> Result<EventHubBatch, ProtocolError> {
    let key = inv
        .data
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(binding) && !v.is_null())
        .map(|(k, _)| k.clone())
        .ok_or_else(|| ProtocolError::Missing(format!("Data.{binding}")))?;
    let raw = inv.data.remove(&key).unwrap_or_default();
    let parsed = match raw {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| malformed(&format!("Data.{binding}"), format!("not JSON text: {e}")))?,
        other => other,
    };
    let bodies = events_array(binding, parsed)?;
    decode_bodies(&inv, bodies, binding, data_type)
}

fn events_array(binding: &str, v: Value) -> Result<Vec<Value>, ProtocolError> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(malformed(
            &format!("Data.{binding}"),
            "expected an array of events",
        )),
    }
}

fn decode_bodies(
    inv: &Invocation,
    bodies: Vec<Value>,
    binding: &str,
    data_type: EventDataType,
) -> Result<EventHubBatch, ProtocolError> {
    let ctx_raw = inv
        .meta("PartitionContext")
        .ok_or_else(|| ProtocolError::Missing("Metadata.PartitionContext".into()))?;
    let ctx = structured("Metadata.PartitionContext", ctx_raw)?;
    let ns = field_str(&ctx, "FullyQualifiedNamespace")
        .ok_or_else(|| ProtocolError::Missing("PartitionContext.FullyQualifiedNamespace".into()))?;
    let hub = field_str(&ctx, "EventHubName")
        .ok_or_else(|| ProtocolError::Missing("PartitionContext.EventHubName".into()))?;
    let partition = field_str(&ctx, "PartitionId")
        .ok_or_else(|| ProtocolError::Missing("PartitionContext.PartitionId".into()))?;

    let seqs: Vec<i64> = match inv.meta("SequenceNumberArray") {
        Some(v) => match structured("Metadata.SequenceNumberArray", v)? {
            Value::Array(a) => a
                .iter()
                .map(|x| match x {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| malformed("Metadata.SequenceNumberArray", "expected integers"))?,
            _ => {
                return Err(malformed(
                    "Metadata.SequenceNumberArray",
                    "expected an array",
                ));
            }
        },
        None => {
            // fall back to the system properties, which carry SequenceNumber per event
            let v = inv
                .meta("SystemPropertiesArray")
                .ok_or_else(|| ProtocolError::Missing("Metadata.SequenceNumberArray".into()))?;
            match structured("Metadata.SystemPropertiesArray", v)? {
                Value::Array(a) => a
                    .iter()
                    .map(|o| field_str(o, "SequenceNumber").and_then(|s| s.parse().ok()))
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| {
                        malformed("Metadata.SystemPropertiesArray", "no SequenceNumber")
                    })?,
                _ => {
                    return Err(malformed(
                        "Metadata.SystemPropertiesArray",
                        "expected an array",
                    ));
                }
            }
        }
    };
    if seqs.len() != bodies.len() {
        return Err(malformed(
            "Metadata.SequenceNumberArray",
            format!(
                "{} sequence numbers for {} events",
                seqs.len(),
                bodies.len()
            ),
        ));
    }
    let enqueued: Vec<Option<i64>> = match inv.meta("EnqueuedTimeUtcArray") {
        Some(v) => match structured("Metadata.EnqueuedTimeUtcArray", v)? {
            // times without a zone are UTC; an unparseable one is just unknown
            Value::Array(a) if a.len() == bodies.len() => a
                .iter()
                .map(|t| t.as_str().and_then(parse_timestamp_micros))
                .collect(),
            _ => vec![None; bodies.len()],
        },
        None => vec![None; bodies.len()],
    };
    let mut events = Vec::with_capacity(bodies.len());
    for (i, ((b, seq), enq)) in bodies.into_iter().zip(seqs).zip(enqueued).enumerate() {
        let body = match (data_type, b) {
            (EventDataType::String, Value::String(s)) => s.into_bytes(),
            // dataType omitted: the host parsed the body; its text is the body again
            (EventDataType::String, other) => other.to_string().into_bytes(),
            (EventDataType::Binary, Value::String(s)) => {
                BASE64_STANDARD.decode(s.trim()).map_err(|e| {
                    malformed(&format!("Data.{binding}[{i}]"), format!("not base64: {e}"))
                })?
            }
            (EventDataType::Binary, other) => {
                return Err(malformed(
                    &format!("Data.{binding}[{i}]"),
                    format!("expected a base64 string, found {other}"),
                ));
            }
        };
        events.push(Event {
            body,
            sequence_number: seq,
            enqueued_at: enq,
        });
    }
    Ok(EventHubBatch {
        source: SourceId::event_hub(&ns, &hub, &partition),
        partition,
        events,
    })
}

/// The handler's answer to the host: always a JSON object.
#[derive(Debug, Default, Serialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvocationResponse {
    pub fn log(line: impl Into<String>) -> Self {
        InvocationResponse {
            logs: vec![line.into()],
            ..Default::default()
        }
    }

    /// The `http` output binding `res`: status, a JSON body, and its content type.
    pub fn with_http(mut self, name: &str, status: u16, body: &Value) -> Self {
        self.outputs.insert(
            name.to_owned(),
            serde_json::json!({
                "statusCode": status,
                "body": body.to_string(),
                "headers": {"Content-Type": "application/json"}
            }),
        );
        self
    }

    pub fn with_output(mut self, name: &str, value: Value) -> Self {
        self.outputs.insert(name.to_owned(), value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constructed from the host's encoding rules (azure-functions.md §1.5, §2.4).
    pub const EVENTHUB_REQUEST: &str = r#"{
      "Data": {"events": "[\"{\\\"records\\\":[{\\\"time\\\":\\\"2025-03-01T10:00:00.1234567Z\\\",\\\"category\\\":\\\"AdvancedHunting-DeviceInfo\\\",\\\"properties\\\":{\\\"Timestamp\\\":\\\"2025-03-01T09:59:00Z\\\"}}]}\",\"not json at all\"]"},
      "Metadata": {
        "PartitionContext": {"FullyQualifiedNamespace": "MyNs.servicebus.windows.net", "EventHubName": "defender",
                             "ConsumerGroup": "delta-ingest", "PartitionId": "3", "IsCheckpointingAfterInvocation": true},
        "PartitionKeyArray": "[null,null]",
        "OffsetArray": "[\"120259084288\",\"120259088384\"]",
        "SequenceNumberArray": "[88123,88124]",
        "EnqueuedTimeUtcArray": "[\"2025-03-01T10:00:01.31\",\"2025-03-01T10:00:01.4\"]",
        "PropertiesArray": "[{},{}]",
        "SystemPropertiesArray": "[{\"SequenceNumber\":88123},{\"SequenceNumber\":88124}]",
        "sys": {"MethodName": "EventHubIngest", "UtcNow": "2025-03-01T10:00:02.12Z", "RandGuid": "x"}
      }
    }"#;

    #[test]
    fn decodes_the_hosts_event_hub_encoding() {
        let inv = Invocation::parse(EVENTHUB_REQUEST.as_bytes()).unwrap();
        let b = decode_event_hub(&inv, "events", EventDataType::String).unwrap();
        assert_eq!(
            b.source.as_str(),
            "eventhub://myns.servicebus.windows.net/defender/3"
        );
        assert_eq!(b.events.len(), 2);
        assert!(b.events[0].body.starts_with(br#"{"records":[{"time""#));
        assert_eq!(b.events[1].body, b"not json at all");
        assert_eq!(b.events[0].sequence_number, 88123);
        assert_eq!(b.events[1].sequence_number, 88124);
        // no zone: UTC
        assert_eq!(
            b.events[0].enqueued_at,
            parse_timestamp_micros("2025-03-01T10:00:01.31Z")
        );
    }

    #[test]
    fn binary_bodies_are_base64_and_may_be_any_bytes() {
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let events =
            serde_json::to_string(&vec![b64(br#"{"records":[]}"#), b64(b"\xff\xfe not utf-8")])
                .unwrap();
        let req = serde_json::json!({"Data": {"events": events}, "Metadata": {
            "PartitionContext": {"FullyQualifiedNamespace": "n", "EventHubName": "h", "PartitionId": "0"},
            "SequenceNumberArray": "[1,2]"}});
        let inv = Invocation::parse(req.to_string().as_bytes()).unwrap();
        let b = decode_event_hub(&inv, "events", EventDataType::Binary).unwrap();
        assert_eq!(b.events[0].body, br#"{"records":[]}"#);
        assert_eq!(b.events[1].body, b"\xff\xfe not utf-8");
        // the same request taken as `string`: the base64 text itself is the body
        let s = decode_event_hub(&inv, "events", EventDataType::String).unwrap();
        assert_eq!(s.events[0].body, b64(br#"{"records":[]}"#).into_bytes());

        let bad = r#"{"Data":{"events":"[\"not base64!\"]"},"Metadata":{"PartitionContext":{"FullyQualifiedNamespace":"n","EventHubName":"h","PartitionId":"0"},"SequenceNumberArray":"[1]"}}"#;
        let inv = Invocation::parse(bad.as_bytes()).unwrap();
        let err = decode_event_hub(&inv, "events", EventDataType::Binary).unwrap_err();
        assert!(err.to_string().contains("Data.events[0]"), "{err}");
        assert!("BINARY".parse::<EventDataType>().is_ok());
        assert!("text".parse::<EventDataType>().is_err());
    }

    #[test]
    fn accepts_already_structured_values() {
        let inv = Invocation::parse(
            br#"{"Data":{"events":["{\"records\":[]}"]},"Metadata":{"PartitionContext":"{\"FullyQualifiedNamespace\":\"n\",\"EventHubName\":\"h\",\"PartitionId\":\"0\"}","SequenceNumberArray":[7]}}"#,
        )
        .unwrap();
        let b = decode_event_hub(&inv, "events", EventDataType::String).unwrap();
        assert_eq!(b.events[0].sequence_number, 7);
        assert_eq!(b.events[0].enqueued_at, None);
    }

    #[test]
    fn malformed_envelopes_are_clear_errors() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not a JSON object"),
            (r#"{"Data":{}}"#, "Data.events"),
            (r#"{"Data":{"events":"[\"a\"]"}}"#, "PartitionContext"),
            (
                r#"{"Data":{"events":"{}"},"Metadata":{}}"#,
                "array of events",
            ),
            (
                r#"{"Data":{"events":"[\"a\"]"},"Metadata":{"PartitionContext":{"FullyQualifiedNamespace":"n","EventHubName":"h","PartitionId":"0"},"SequenceNumberArray":"[1,2]"}}"#,
                "2 sequence numbers for 1 events",
            ),
            (
                r#"{"Data":{"events":"[\"a\"]"},"Metadata":{"PartitionContext":{"FullyQualifiedNamespace":"n","EventHubName":"h","PartitionId":"0"},"SequenceNumberArray":"[\"x\"]"}}"#,
                "expected integers",
            ),
            (
                r#"{"Data":{"events":"[\"a\""},"Metadata":{}}"#,
                "not JSON text",
            ),
        ];
        for (body, want) in cases {
            let err = Invocation::parse(body.as_bytes())
                .and_then(|i| decode_event_hub(&i, "events", EventDataType::String));
            let msg = err.unwrap_err().to_string();
            assert!(msg.contains(want), "{body}: {msg}");
        }
    }

    #[test]
    fn text_undoes_double_encoding() {
        assert_eq!(text(&Value::String("\"hello\"".into())), "hello");
        assert_eq!(text(&Value::String("{\"a\":1}".into())), "{\"a\":1}");
        assert_eq!(text(&serde_json::json!({"a":1})), "{\"a\":1}");
    }
}
