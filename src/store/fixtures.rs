//! Builders of Claude-Code-shaped OTLP requests for tests and the store benchmark.
//!
//! They mirror what Claude Code 2.1.197 sends (see the shared telemetry notes): delta sums
//! with `session.id`/`user.id` on every point, events as log records whose body is
//! `claude_code.<name>` and whose numbers sometimes arrive as strings.

use crate::store::PROJECT_ATTRIBUTE;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::otlp::ExportRequest;

/// A user id shaped like claude's (64 hex digits when not logged in).
pub const USER_ID: &str = "3f1c9a7e5b2d4c6a8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d";

/// A string attribute.
pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A double attribute.
pub fn kv_f64(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

/// The resource claude sends, plus `project` when given.
pub fn resource(project: Option<&str>) -> Vec<KeyValue> {
    let mut attrs = vec![
        kv("service.name", "claude-code"),
        kv("service.version", "2.1.197"),
        kv("os.type", "linux"),
        kv("host.arch", "amd64"),
    ];
    if let Some(p) = project {
        attrs.push(kv(PROJECT_ATTRIBUTE, p));
    }
    attrs
}

/// One delta data point at `time_ns` with the common attributes of `session`.
pub fn point(session: &str, time_ns: u64, value: f64, mut attrs: Vec<KeyValue>) -> NumberDataPoint {
    attrs.push(kv("session.id", session));
    attrs.push(kv("user.id", USER_ID));
    attrs.push(kv("terminal.type", "tmux"));
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: time_ns.saturating_sub(60_000_000_000),
        time_unix_nano: time_ns,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A monotonic delta sum named `name`.
pub fn sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: 1,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// A metrics request under one resource.
pub fn metrics(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportRequest {
    ExportRequest::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "com.anthropic.claude_code".to_owned(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// An event record as claude builds it (body and `event.name`, no proto `event_name`).
pub fn event(name: &str, session: &str, time_ns: u64, mut attrs: Vec<KeyValue>) -> LogRecord {
    attrs.push(kv("event.name", name));
    attrs.push(kv("session.id", session));
    attrs.push(kv("user.id", USER_ID));
    attrs.push(kv("terminal.type", "tmux"));
    attrs.push(kv("prompt.id", "p-1"));
    LogRecord {
        time_unix_nano: time_ns,
        observed_time_unix_nano: time_ns,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!("claude_code.{name}"))),
        }),
        attributes: attrs,
        ..Default::default()
    }
}

/// A logs request under one resource.
pub fn logs(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportRequest {
    ExportRequest::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "com.anthropic.claude_code.events".to_owned(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// What one model call used, as the fake Messages API would report it.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub cost_usd: f64,
}

/// An `api_request` event; numbers are sent as strings on purpose, as claude sometimes does.
pub fn api_request(session: &str, time_ns: u64, model: &str, u: Usage) -> LogRecord {
    event(
        "api_request",
        session,
        time_ns,
        vec![
            kv("model", model),
            kv("cost_usd", &u.cost_usd.to_string()),
            kv("input_tokens", &u.input.to_string()),
            kv_int("output_tokens", u.output as i64),
            kv("cache_read_tokens", &u.cache_read.to_string()),
            kv_int("cache_creation_tokens", u.cache_creation as i64),
            kv_f64("duration_ms", 1500.0),
            kv("query_source", "main"),
        ],
    )
}

/// The cost and token points matching one [`Usage`], with the metric `model` suffix.
pub fn usage_points(session: &str, time_ns: u64, model: &str, u: Usage) -> Vec<Metric> {
    let m = format!("{model}[1m]");
    let tok = |t: &str, v: u64| {
        point(
            session,
            time_ns,
            v as f64,
            vec![kv("model", &m), kv("type", t), kv("query_source", "main")],
        )
    };
    vec![
        sum(
            "claude_code.cost.usage",
            vec![point(
                session,
                time_ns,
                u.cost_usd,
                vec![kv("model", &m), kv("query_source", "main")],
            )],
        ),
        sum(
            "claude_code.token.usage",
            vec![
                tok("input", u.input),
                tok("output", u.output),
                tok("cacheRead", u.cache_read),
                tok("cacheCreation", u.cache_creation),
            ],
        ),
    ]
}
