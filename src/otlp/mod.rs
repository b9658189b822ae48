//! Core OTLP types shared by every stage of the relay, the store and the tests.
//!
//! The relay moves whole export requests, never single records: a request is the unit that
//! claude acknowledges, that the outbox persists and that the forwarder delivers, so keeping
//! it whole makes "exactly once in the normal case" a property of one row, not of many.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;

mod decode_logs;

/// The three OTLP signals; each has its own service, HTTP path and upstream route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    /// Lower-case name used in logs, the store and `config` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// The OTLP/HTTP path for this signal (`/v1/metrics`, …).
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
            Signal::Traces => "/v1/traces",
        }
    }
}

/// One OTLP export request of any signal, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportRequest {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

impl ExportRequest {
    /// Which signal this request carries.
    pub fn signal(&self) -> Signal {
        match self {
            ExportRequest::Metrics(_) => Signal::Metrics,
            ExportRequest::Logs(_) => Signal::Logs,
            ExportRequest::Traces(_) => Signal::Traces,
        }
    }

    /// Protobuf encoding, the form persisted in the outbox and sent upstream over HTTP.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            ExportRequest::Metrics(r) => r.encode_to_vec(),
            ExportRequest::Logs(r) => encode_logs(r),
            ExportRequest::Traces(r) => r.encode_to_vec(),
        }
    }

    /// Decodes a protobuf body of the given signal.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Metrics => ExportRequest::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            // prost decides whatever the hand-written decoder does not take on, so the
            // answer (the request, or prost's exact error) is prost's in every case.
            Signal::Logs => ExportRequest::Logs(match decode_logs::decode(bytes) {
                Ok(request) => request,
                Err(decode_logs::Reject) => ExportLogsServiceRequest::decode(bytes)?,
            }),
            Signal::Traces => ExportRequest::Traces(ExportTraceServiceRequest::decode(bytes)?),
        })
    }

    /// Number of items a person would count: metric data points, log records or spans.
    /// Used for the "nothing arrived" check and for delivery reports.
    pub fn item_count(&self) -> usize {
        match self {
            ExportRequest::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .map(|m| metric_point_count(m.data.as_ref()))
                .sum(),
            ExportRequest::Logs(r) => r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum(),
            ExportRequest::Traces(r) => r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
        }
    }
}

fn metric_point_count(data: Option<&Data>) -> usize {
    match data {
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Encodes a logs request exactly as prost's `encode_to_vec` does, computing each nested
/// message's length once. prost recomputes a message's length at every level it is nested
/// in (the buffer size, then each length prefix on the way down), so a log record's length
/// was computed four times: a third of encoding a request of claude's events.
fn encode_logs(r: &ExportLogsServiceRequest) -> Vec<u8> {
    use prost::encoding::encoded_len_varint;
    // A length-delimited field with a tag below 16: one key byte, the length, the body.
    fn field_len(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }
    // Lengths in the order they are written: per resource its body, its resource; per scope
    // its body, its scope; then each record.
    let mut lens = Vec::new();
    let mut total = 0;
    for rl in &r.resource_logs {
        let rl_at = lens.len();
        lens.push(0);
        let mut rl_len = 0;
        if let Some(resource) = &rl.resource {
            let len = resource.encoded_len();
            lens.push(len);
            rl_len += field_len(len);
        }
        for sl in &rl.scope_logs {
            let sl_at = lens.len();
            lens.push(0);
            let mut sl_len = 0;
            if let Some(scope) = &sl.scope {
                let len = scope.encoded_len();
                lens.push(len);
                sl_len += field_len(len);
            }
            for record in &sl.log_records {
                let len = record.encoded_len();
                lens.push(len);
                sl_len += field_len(len);
            }
            if !sl.schema_url.is_empty() {
                sl_len += field_len(sl.schema_url.len());
            }
            lens[sl_at] = sl_len;
            rl_len += field_len(sl_len);
        }
        if !rl.schema_url.is_empty() {
            rl_len += field_len(rl.schema_url.len());
        }
        lens[rl_at] = rl_len;
        total += field_len(rl_len);
    }
    let mut buf = Vec::with_capacity(total);
    let mut lens = lens.into_iter();
    let mut next_len = || lens.next().unwrap_or_default();
    // The key (wire type 2, length-delimited) and length of a field with a tag below 16.
    fn prefix(buf: &mut Vec<u8>, tag: u8, len: usize) {
        buf.push(tag << 3 | 2);
        prost::encoding::encode_varint(len as u64, buf);
    }
    for rl in &r.resource_logs {
        prefix(&mut buf, 1, next_len());
        if let Some(resource) = &rl.resource {
            prefix(&mut buf, 1, next_len());
            resource.encode_raw(&mut buf);
        }
        for sl in &rl.scope_logs {
            prefix(&mut buf, 2, next_len());
            if let Some(scope) = &sl.scope {
                prefix(&mut buf, 1, next_len());
                scope.encode_raw(&mut buf);
            }
            for record in &sl.log_records {
                prefix(&mut buf, 2, next_len());
                record.encode_raw(&mut buf);
            }
            if !sl.schema_url.is_empty() {
                prefix(&mut buf, 3, sl.schema_url.len());
                buf.extend_from_slice(sl.schema_url.as_bytes());
            }
        }
        if !rl.schema_url.is_empty() {
            prefix(&mut buf, 3, rl.schema_url.len());
            buf.extend_from_slice(rl.schema_url.as_bytes());
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Empty (a field prost leaves out), short, and past 127 bytes (a two-byte length).
        prop_oneof![Just(String::new()), "[a-z.]{1,12}", "[ -~]{120,300}"]
    }

    fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (text(), prop::option::of(text())).prop_map(|(key, v)| KeyValue {
                key,
                value: v.map(|s| AnyValue {
                    value: Some(Value::StringValue(s)),
                }),
                ..Default::default()
            }),
            0..4,
        )
    }

    fn record() -> impl Strategy<Value = LogRecord> {
        (any::<u64>(), prop::option::of(text()), attrs(), text()).prop_map(
            |(time, body, attributes, event_name)| LogRecord {
                time_unix_nano: time,
                body: body.map(|s| AnyValue {
                    value: Some(Value::StringValue(s)),
                }),
                attributes,
                event_name,
                ..Default::default()
            },
        )
    }

    fn scope_logs() -> impl Strategy<Value = ScopeLogs> {
        (
            prop::option::of((text(), text(), attrs())),
            prop::collection::vec(record(), 0..5),
            text(),
        )
            .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
                scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                    name,
                    version,
                    attributes,
                    ..Default::default()
                }),
                log_records,
                schema_url,
            })
    }

    fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        prop::collection::vec(
            (
                prop::option::of(attrs()),
                prop::collection::vec(scope_logs(), 0..4),
                text(),
            )
                .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
                    resource: resource.map(|attributes| Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_logs,
                    schema_url,
                }),
            0..4,
        )
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn logs_encode_to_the_same_bytes_as_prost(r in logs_request()) {
            let ours = ExportRequest::Logs(r.clone()).encode_to_vec();
            prop_assert_eq!(&ours, &r.encode_to_vec());
            prop_assert_eq!(ExportLogsServiceRequest::decode(ours.as_slice()).ok(), Some(r));
        }
    }

    #[test]
    fn a_request_past_16_kib_encodes_to_the_same_bytes_as_prost() {
        // Three-byte lengths at the outer levels.
        let record = |i: usize| LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue(format!("claude_code.api_request {i}"))),
            }),
            ..Default::default()
        };
        let r = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource::default()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope::default()),
                    log_records: (0..2000).map(record).collect(),
                    schema_url: "https://opentelemetry.io/schemas/1.0".into(),
                }],
                schema_url: String::new(),
            }],
        };
        let ours = ExportRequest::Logs(r.clone()).encode_to_vec();
        assert!(ours.len() > 16 * 1024);
        assert_eq!(ours, r.encode_to_vec());
    }
}
