//! A logs request decoded straight from the wire into prost's structs, without prost.
//!
//! Every logs request claude sends is decoded once on receipt, and prost's generated decoder
//! was 23 % of the launcher's instructions: it grows each repeated field one element at a
//! time (a `Vec` doubling, realloc and copy, for every attribute list and record list) and
//! goes through its generic `Buf` machinery for every field. This decoder counts each
//! repeated field's elements first, so every `Vec` is allocated once at its final size, and
//! reads fields off a byte slice.
//!
//! It accepts a strict subset of what prost accepts and, on what it accepts, builds the very
//! structs prost builds (the same merge rules: a repeated singular message is merged, a
//! repeated scalar or string replaces, unknown fields are skipped). Whatever it does not
//! accept (malformed input, but also groups, which prost skips, and values nested deeper
//! than [`MAX_DEPTH`]) it rejects without saying why, and the caller decodes the request
//! again with prost, whose answer (the request, or its exact error) is then the answer. So a
//! rejection here can never change what the relay accepts or what error it reports.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The input is not one this decoder takes on; prost decides (see the module comment).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Reject;

type Result<T> = std::result::Result<T, Reject>;

/// Deepest message nesting accepted (the request is depth 0). prost allows 100 levels; a
/// request deeper than this is left to prost, so prost's limit is never the one that applies
/// to a request accepted here. claude's events nest 5 deep.
const MAX_DEPTH: u32 = 32;

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Decodes a protobuf `ExportLogsServiceRequest`, or rejects it (prost then decides).
pub(super) fn decode(buf: &[u8]) -> Result<ExportLogsServiceRequest> {
    let mut r = ExportLogsServiceRequest {
        resource_logs: Vec::with_capacity(count(buf, 1)),
    };
    let mut buf = buf;
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => r
                .resource_logs
                .push(message(wire, &mut buf, 1, resource_logs)?),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(r)
}

/// A LEB128 varint, with prost's limits: at most 10 bytes, and the tenth at most 1.
#[inline(always)]
fn varint(buf: &mut &[u8]) -> Result<u64> {
    match buf.first() {
        Some(&b) if b < 0x80 => {
            *buf = &buf[1..];
            Ok(u64::from(b))
        }
        _ => varint_long(buf),
    }
}

#[inline(never)]
fn varint_long(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b >= 2 {
                return Err(Reject);
            }
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(Reject)
}

/// A field's key: its tag and wire type, rejected where prost's `decode_key` fails.
#[inline(always)]
fn key(buf: &mut &[u8]) -> Result<(u32, u8)> {
    let key = varint(buf)?;
    if key > u64::from(u32::MAX) {
        return Err(Reject);
    }
    let wire = (key & 7) as u8;
    let tag = key as u32 >> 3;
    if wire > 5 || tag == 0 {
        return Err(Reject);
    }
    Ok((tag, wire))
}

#[inline(always)]
fn expect(wire: u8, wanted: u8) -> Result<()> {
    if wire == wanted { Ok(()) } else { Err(Reject) }
}

/// The body of a length-delimited field.
#[inline(always)]
fn delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = varint(buf)?;
    if len > buf.len() as u64 {
        return Err(Reject);
    }
    let (body, rest) = buf.split_at(len as usize);
    *buf = rest;
    Ok(body)
}

fn fixed<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N]> {
    let (head, rest) = buf.split_first_chunk::<N>().ok_or(Reject)?;
    *buf = rest;
    Ok(*head)
}

/// Skips an unknown field as prost does; groups (which prost also skips) are left to prost.
#[inline]
fn skip(wire: u8, buf: &mut &[u8]) -> Result<()> {
    match wire {
        VARINT => varint(buf).map(drop),
        FIXED64 => fixed::<8>(buf).map(drop),
        LEN => delimited(buf).map(drop),
        FIXED32 => fixed::<4>(buf).map(drop),
        _ => Err(Reject),
    }
}

/// How many fields with `tag` a message body holds: the capacity its repeated field needs.
/// Malformed input stops the count; the decode that follows rejects it.
fn count(mut buf: &[u8], tag: u32) -> usize {
    let mut n = 0;
    while !buf.is_empty() {
        let Ok((t, wire)) = key(&mut buf) else { break };
        n += usize::from(t == tag);
        if skip(wire, &mut buf).is_err() {
            break;
        }
    }
    n
}

/// Counts of two repeated fields in one pass over a message body.
fn count2(mut buf: &[u8], a: u32, b: u32) -> (usize, usize) {
    let (mut na, mut nb) = (0, 0);
    while !buf.is_empty() {
        let Ok((t, wire)) = key(&mut buf) else { break };
        na += usize::from(t == a);
        nb += usize::from(t == b);
        if skip(wire, &mut buf).is_err() {
            break;
        }
    }
    (na, nb)
}

fn string(wire: u8, buf: &mut &[u8]) -> Result<String> {
    expect(wire, LEN)?;
    owned_text(delimited(buf)?)
}

/// A string field's bytes as a `String`, rejected unless UTF-8 (as prost rejects them).
#[inline(always)]
fn owned_text(bytes: &[u8]) -> Result<String> {
    if is_ascii(bytes) {
        // SAFETY: ASCII bytes are valid UTF-8.
        return Ok(unsafe { String::from_utf8_unchecked(bytes.to_vec()) });
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Reject)
}

/// Whether every byte is below 0x80, 8 bytes per step without a branch per byte: nearly every
/// string of claude's requests is short and ASCII, and `str::from_utf8` spent ~100
/// instructions on each (a quarter of decoding).
#[inline(always)]
fn is_ascii(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    let high = words
        .iter()
        .fold(0u64, |acc, w| acc | u64::from_le_bytes(*w));
    let tail = tail.iter().fold(0u8, |acc, b| acc | b);
    high & 0x8080_8080_8080_8080 == 0 && tail < 0x80
}

fn bytes(wire: u8, buf: &mut &[u8]) -> Result<Vec<u8>> {
    expect(wire, LEN)?;
    delimited(buf).map(<[u8]>::to_vec)
}

fn uint64(wire: u8, buf: &mut &[u8]) -> Result<u64> {
    expect(wire, VARINT)?;
    varint(buf)
}

fn fixed64(wire: u8, buf: &mut &[u8]) -> Result<u64> {
    expect(wire, FIXED64)?;
    fixed::<8>(buf).map(u64::from_le_bytes)
}

fn fixed32(wire: u8, buf: &mut &[u8]) -> Result<u32> {
    expect(wire, FIXED32)?;
    fixed::<4>(buf).map(u32::from_le_bytes)
}

/// A new message from a length-delimited field, built by `merge` at nesting `depth`.
#[inline(always)]
fn message<T: Default>(
    wire: u8,
    buf: &mut &[u8],
    depth: u32,
    merge: fn(&mut T, &[u8], u32) -> Result<()>,
) -> Result<T> {
    let mut value = T::default();
    merge_into(&mut value, wire, buf, depth, merge)?;
    Ok(value)
}

/// Merges a length-delimited field into an existing message, as prost does for a singular
/// message field seen more than once.
#[inline(always)]
fn merge_into<T>(
    value: &mut T,
    wire: u8,
    buf: &mut &[u8],
    depth: u32,
    merge: fn(&mut T, &[u8], u32) -> Result<()>,
) -> Result<()> {
    expect(wire, LEN)?;
    if depth > MAX_DEPTH {
        return Err(Reject);
    }
    let body = delimited(buf)?;
    merge(value, body, depth)
}

fn resource_logs(rl: &mut ResourceLogs, mut buf: &[u8], depth: u32) -> Result<()> {
    rl.scope_logs.reserve_exact(count(buf, 2));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => merge_into(
                rl.resource.get_or_insert_with(Default::default),
                wire,
                &mut buf,
                depth + 1,
                resource,
            )?,
            2 => rl
                .scope_logs
                .push(message(wire, &mut buf, depth + 1, scope_logs)?),
            3 => rl.schema_url = string(wire, &mut buf)?,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn resource(r: &mut Resource, mut buf: &[u8], depth: u32) -> Result<()> {
    let (attributes, entity_refs) = count2(buf, 1, 3);
    r.attributes.reserve_exact(attributes);
    r.entity_refs.reserve_exact(entity_refs);
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => r
                .attributes
                .push(message(wire, &mut buf, depth + 1, key_value)?),
            2 => r.dropped_attributes_count = uint64(wire, &mut buf)? as u32,
            3 => r
                .entity_refs
                .push(message(wire, &mut buf, depth + 1, entity_ref)?),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn entity_ref(e: &mut EntityRef, mut buf: &[u8], _depth: u32) -> Result<()> {
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => e.schema_url = string(wire, &mut buf)?,
            2 => e.r#type = string(wire, &mut buf)?,
            3 => e.id_keys.push(string(wire, &mut buf)?),
            4 => e.description_keys.push(string(wire, &mut buf)?),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn scope_logs(sl: &mut ScopeLogs, mut buf: &[u8], depth: u32) -> Result<()> {
    sl.log_records.reserve_exact(count(buf, 2));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => merge_into(
                sl.scope.get_or_insert_with(Default::default),
                wire,
                &mut buf,
                depth + 1,
                scope,
            )?,
            2 => sl
                .log_records
                .push(message(wire, &mut buf, depth + 1, log_record)?),
            3 => sl.schema_url = string(wire, &mut buf)?,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn scope(s: &mut InstrumentationScope, mut buf: &[u8], depth: u32) -> Result<()> {
    s.attributes.reserve_exact(count(buf, 3));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => s.name = string(wire, &mut buf)?,
            2 => s.version = string(wire, &mut buf)?,
            3 => s
                .attributes
                .push(message(wire, &mut buf, depth + 1, key_value)?),
            4 => s.dropped_attributes_count = uint64(wire, &mut buf)? as u32,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn log_record(r: &mut LogRecord, mut buf: &[u8], depth: u32) -> Result<()> {
    r.attributes.reserve_exact(count(buf, 6));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => r.time_unix_nano = fixed64(wire, &mut buf)?,
            2 => r.severity_number = uint64(wire, &mut buf)? as i32,
            3 => r.severity_text = string(wire, &mut buf)?,
            5 => merge_into(
                r.body.get_or_insert_with(Default::default),
                wire,
                &mut buf,
                depth + 1,
                any_value,
            )?,
            6 => r
                .attributes
                .push(message(wire, &mut buf, depth + 1, key_value)?),
            7 => r.dropped_attributes_count = uint64(wire, &mut buf)? as u32,
            8 => r.flags = fixed32(wire, &mut buf)?,
            9 => r.trace_id = bytes(wire, &mut buf)?,
            10 => r.span_id = bytes(wire, &mut buf)?,
            11 => r.observed_time_unix_nano = fixed64(wire, &mut buf)?,
            12 => r.event_name = string(wire, &mut buf)?,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn key_value(kv: &mut KeyValue, mut buf: &[u8], depth: u32) -> Result<()> {
    // Nearly every attribute: a fresh one holding its key, then its value, and nothing else.
    if kv.value.is_none()
        && let Some((&0x0a, mut rest)) = buf.split_first()
        && let Ok(key) = delimited(&mut rest)
        && let Some((&0x12, mut rest)) = rest.split_first()
        && let Ok(body) = delimited(&mut rest)
        && rest.is_empty()
    {
        if depth + 1 > MAX_DEPTH {
            return Err(Reject);
        }
        kv.key = owned_text(key)?;
        let mut value = AnyValue::default();
        any_value(&mut value, body, depth + 1)?;
        kv.value = Some(value);
        return Ok(());
    }
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => kv.key = string(wire, &mut buf)?,
            2 => merge_into(
                kv.value.get_or_insert_with(Default::default),
                wire,
                &mut buf,
                depth + 1,
                any_value,
            )?,
            3 => kv.key_strindex = uint64(wire, &mut buf)? as i32,
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn any_value(v: &mut AnyValue, mut buf: &[u8], depth: u32) -> Result<()> {
    // Nearly every value claude sends: a fresh value holding one string field and nothing else.
    if v.value.is_none()
        && let Some((&0x0a, mut rest)) = buf.split_first()
        && let Ok(text) = delimited(&mut rest)
        && rest.is_empty()
    {
        v.value = Some(Value::StringValue(owned_text(text)?));
        return Ok(());
    }
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        // A oneof: a message variant seen again is merged into, anything else replaces.
        match tag {
            1 => v.value = Some(Value::StringValue(string(wire, &mut buf)?)),
            2 => v.value = Some(Value::BoolValue(uint64(wire, &mut buf)? != 0)),
            3 => v.value = Some(Value::IntValue(uint64(wire, &mut buf)? as i64)),
            4 => {
                let bits = fixed64(wire, &mut buf)?;
                v.value = Some(Value::DoubleValue(f64::from_bits(bits)));
            }
            5 => {
                if !matches!(v.value, Some(Value::ArrayValue(_))) {
                    v.value = Some(Value::ArrayValue(ArrayValue::default()));
                }
                if let Some(Value::ArrayValue(a)) = &mut v.value {
                    merge_into(a, wire, &mut buf, depth + 1, array_value)?;
                }
            }
            6 => {
                if !matches!(v.value, Some(Value::KvlistValue(_))) {
                    v.value = Some(Value::KvlistValue(KeyValueList::default()));
                }
                if let Some(Value::KvlistValue(l)) = &mut v.value {
                    merge_into(l, wire, &mut buf, depth + 1, key_value_list)?;
                }
            }
            7 => v.value = Some(Value::BytesValue(bytes(wire, &mut buf)?)),
            8 => v.value = Some(Value::StringValueStrindex(uint64(wire, &mut buf)? as i32)),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn array_value(a: &mut ArrayValue, mut buf: &[u8], depth: u32) -> Result<()> {
    a.values.reserve_exact(count(buf, 1));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => a
                .values
                .push(message(wire, &mut buf, depth + 1, any_value)?),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

fn key_value_list(l: &mut KeyValueList, mut buf: &[u8], depth: u32) -> Result<()> {
    l.values.reserve_exact(count(buf, 1));
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match tag {
            1 => l
                .values
                .push(message(wire, &mut buf, depth + 1, key_value)?),
            _ => skip(wire, &mut buf)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn text() -> impl Strategy<Value = String> {
        // Empty (a field prost leaves out), short, non-ASCII, and past 127 bytes.
        prop_oneof![
            Just(String::new()),
            "[a-z._]{1,12}",
            "[a-zé€😀]{1,6}",
            "[ -~]{120,300}"
        ]
    }

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            text().prop_map(Value::StringValue),
            any::<bool>().prop_map(Value::BoolValue),
            any::<i64>().prop_map(Value::IntValue),
            // Not NaN: the structs are compared with ==.
            (-1e300f64..1e300).prop_map(Value::DoubleValue),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Value::BytesValue),
            any::<i32>().prop_map(Value::StringValueStrindex),
        ];
        let leaf = prop::option::of(leaf).prop_map(|value| AnyValue { value });
        leaf.prop_recursive(3, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values })),
                }),
                prop::collection::vec((text(), prop::option::of(inner)), 0..4).prop_map(|kvs| {
                    AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: kvs
                                .into_iter()
                                .map(|(key, value)| KeyValue {
                                    key,
                                    value,
                                    key_strindex: 0,
                                })
                                .collect(),
                        })),
                    }
                }),
            ]
        })
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (text(), prop::option::of(any_value()), any::<i32>()).prop_map(
                |(key, value, key_strindex)| KeyValue {
                    key,
                    value,
                    key_strindex,
                },
            ),
            0..5,
        )
    }

    fn record() -> impl Strategy<Value = LogRecord> {
        (
            (any::<u64>(), any::<u64>(), any::<i32>(), text()),
            (prop::option::of(any_value()), attrs(), any::<u32>()),
            (
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..17),
                prop::collection::vec(any::<u8>(), 0..9),
                text(),
            ),
        )
            .prop_map(
                |(
                    (time_unix_nano, observed_time_unix_nano, severity_number, severity_text),
                    (body, attributes, dropped_attributes_count),
                    (flags, trace_id, span_id, event_name),
                )| LogRecord {
                    time_unix_nano,
                    observed_time_unix_nano,
                    severity_number,
                    severity_text,
                    body,
                    attributes,
                    dropped_attributes_count,
                    flags,
                    trace_id,
                    span_id,
                    event_name,
                },
            )
    }

    fn entity_ref() -> impl Strategy<Value = EntityRef> {
        (
            text(),
            text(),
            prop::collection::vec(text(), 0..3),
            prop::collection::vec(text(), 0..3),
        )
            .prop_map(
                |(schema_url, r#type, id_keys, description_keys)| EntityRef {
                    schema_url,
                    r#type,
                    id_keys,
                    description_keys,
                },
            )
    }

    fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope = (text(), text(), attrs(), any::<u32>()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            },
        );
        let scope_logs = (
            prop::option::of(scope),
            prop::collection::vec(record(), 0..4),
            text(),
        )
            .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
                scope,
                log_records,
                schema_url,
            });
        let resource = (
            attrs(),
            any::<u32>(),
            prop::collection::vec(entity_ref(), 0..2),
        )
            .prop_map(
                |(attributes, dropped_attributes_count, entity_refs)| Resource {
                    attributes,
                    dropped_attributes_count,
                    entity_refs,
                },
            );
        prop::collection::vec(
            (
                prop::option::of(resource),
                prop::collection::vec(scope_logs, 0..3),
                text(),
            )
                .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                    resource,
                    scope_logs,
                    schema_url,
                }),
            0..3,
        )
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    /// What the relay answers for a body: the request, or prost's error text.
    fn answer(bytes: &[u8]) -> std::result::Result<String, String> {
        crate::otlp::ExportRequest::decode(crate::otlp::Signal::Logs, bytes)
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string())
    }

    fn prost_answer(bytes: &[u8]) -> std::result::Result<String, String> {
        ExportLogsServiceRequest::decode(bytes)
            .map(|r| format!("{:?}", crate::otlp::ExportRequest::Logs(r)))
            .map_err(|e| e.to_string())
    }

    /// A key as prost writes it.
    fn key_bytes(tag: u32, wire: u8) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut out);
        out
    }

    fn field(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = key_bytes(tag, LEN);
        prost::encoding::encode_varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn a_prost_encoded_request_decodes_to_the_struct_prost_decodes(r in logs_request()) {
            let bytes = r.encode_to_vec();
            prop_assert_eq!(decode(&bytes), Ok(r));
        }

        #[test]
        fn a_truncated_request_gets_prost_s_answer(r in logs_request(), cut in any::<prop::sample::Index>()) {
            let bytes = r.encode_to_vec();
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            if let Ok(ours) = decode(bytes) {
                // Accepted here only where prost accepts, with the same struct.
                prop_assert_eq!(Ok(format!("{:?}", crate::otlp::ExportRequest::Logs(ours))), prost_answer(bytes));
            }
            prop_assert_eq!(answer(bytes), prost_answer(bytes));
        }

        #[test]
        fn a_corrupted_request_gets_prost_s_answer(
            r in logs_request(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut bytes = r.encode_to_vec();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.insert(i, byte),
                }
            }
            if let Ok(ours) = decode(&bytes) {
                prop_assert_eq!(Ok(format!("{:?}", crate::otlp::ExportRequest::Logs(ours))), prost_answer(&bytes));
            }
            prop_assert_eq!(answer(&bytes), prost_answer(&bytes));
        }
    }

    proptest! {
        #[test]
        fn the_ascii_check_agrees_with_the_standard_library(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
            let mut ascii: Vec<u8> = bytes.iter().map(|b| b & 0x7f).collect();
            prop_assert!(is_ascii(&ascii));
            if let Some(last) = ascii.last_mut() {
                *last |= 0x80;
                prop_assert!(!is_ascii(&ascii));
            }
        }
    }

    #[test]
    fn unknown_fields_are_skipped_as_prost_skips_them() {
        // A record with one unknown field of each wire type prost skips, then its body.
        let mut record = Vec::new();
        record.extend(key_bytes(100, VARINT));
        record.push(0x96);
        record.push(0x01);
        record.extend(key_bytes(101, FIXED64));
        record.extend([1; 8]);
        record.extend(key_bytes(102, FIXED32));
        record.extend([2; 4]);
        record.extend(field(103, b"ignored"));
        record.extend(field(12, b"api_request"));
        let bytes = field(1, &field(2, &field(2, &record)));
        let ours = decode(&bytes).expect("accepted");
        assert_eq!(
            ours.resource_logs[0].scope_logs[0].log_records[0].event_name,
            "api_request"
        );
        assert_eq!(Ok(ours), ExportLogsServiceRequest::decode(bytes.as_slice()));
    }

    #[test]
    fn a_repeated_singular_message_is_merged_and_a_repeated_string_replaced_as_by_prost() {
        let kv = |k: &[u8], v: &[u8]| field(1, &[field(1, k), field(2, &field(1, v))].concat());
        // Resource twice (attributes concatenated), schema_url twice (the last wins).
        let rl = [
            field(1, &kv(b"a", b"1")),
            field(3, b"first"),
            field(1, &kv(b"b", b"2")),
            field(3, b"second"),
        ]
        .concat();
        let bytes = field(1, &rl);
        let ours = decode(&bytes).expect("accepted");
        let rl = &ours.resource_logs[0];
        assert_eq!(rl.resource.as_ref().map(|r| r.attributes.len()), Some(2));
        assert_eq!(rl.schema_url, "second");
        assert_eq!(Ok(ours), ExportLogsServiceRequest::decode(bytes.as_slice()));
    }

    #[test]
    fn a_group_is_left_to_prost_which_skips_it() {
        // An unknown group field (start, a varint inside, end) then a record.
        let mut rl = key_bytes(50, 3);
        rl.extend(key_bytes(1, VARINT));
        rl.push(7);
        rl.extend(key_bytes(50, 4));
        rl.extend(field(2, &field(2, &field(12, b"x"))));
        let bytes = field(1, &rl);
        assert_eq!(decode(&bytes), Err(Reject));
        let prost = ExportLogsServiceRequest::decode(bytes.as_slice()).expect("prost skips groups");
        assert_eq!(
            crate::otlp::ExportRequest::decode(crate::otlp::Signal::Logs, &bytes),
            Ok(crate::otlp::ExportRequest::Logs(prost))
        );
    }

    /// A record whose body nests `levels` array values.
    fn nested(levels: usize) -> Vec<u8> {
        let mut value = field(1, b"leaf"); // AnyValue { string_value }
        for _ in 0..levels {
            value = field(5, &field(1, &value)); // AnyValue { array_value { values: [value] } }
        }
        field(1, &field(2, &field(2, &field(5, &value))))
    }

    #[test]
    fn nesting_past_the_depth_limit_gets_prost_s_answer_accepted_or_refused() {
        for levels in [10, 40, 120] {
            let bytes = nested(levels);
            assert_eq!(answer(&bytes), prost_answer(&bytes), "{levels} levels");
        }
        assert!(decode(&nested(10)).is_ok());
        assert_eq!(decode(&nested(40)), Err(Reject));
        assert!(prost_answer(&nested(40)).is_ok(), "prost takes 40 levels");
        let refused = prost_answer(&nested(120)).expect_err("prost refuses 120 levels");
        assert!(refused.contains("recursion limit"), "{refused}");
    }

    #[test]
    fn invalid_utf8_and_an_oversized_tenth_varint_byte_get_prost_s_errors() {
        let bad_text = field(1, &field(3, b"\xff\xfe"));
        assert_eq!(decode(&bad_text), Err(Reject));
        assert!(answer(&bad_text).expect_err("refused").contains("UTF-8"));
        assert_eq!(answer(&bad_text), prost_answer(&bad_text));
        // An unknown varint field whose tenth byte is 2: past u64.
        let mut overflow = key_bytes(9, VARINT);
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        assert_eq!(decode(&overflow), Err(Reject));
        assert_eq!(answer(&overflow), prost_answer(&overflow));
        assert!(answer(&overflow).is_err());
        // The largest ten-byte varint prost accepts.
        let mut max = key_bytes(9, VARINT);
        max.extend([0xff; 9]);
        max.push(0x01);
        assert!(decode(&max).is_ok());
        assert!(prost_answer(&max).is_ok());
    }
}
