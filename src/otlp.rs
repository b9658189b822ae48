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
            ExportRequest::Logs(r) => r.encode_to_vec(),
            ExportRequest::Traces(r) => r.encode_to_vec(),
        }
    }

    /// Decodes a protobuf body of the given signal.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Metrics => ExportRequest::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Logs => ExportRequest::Logs(ExportLogsServiceRequest::decode(bytes)?),
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
