//! OTLP/HTTP receiver: `/v1/metrics`, `/v1/logs`, `/v1/traces`, protobuf or JSON bodies,
//! optionally gzip-compressed, answered in the request's own encoding as the spec requires.

use crate::otlp::{ExportRequest, Signal};
use crate::relay::Intake;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use std::io::Read;
use tokio_util::sync::CancellationToken;

/// Serves OTLP/HTTP until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    max_request_bytes: usize,
    stop: CancellationToken,
) {
    let app = router(intake, max_request_bytes);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        eprintln!("claude-telemetry: OTLP/HTTP receiver stopped: {e}");
    }
}

#[derive(Clone)]
struct Receiver {
    intake: Intake,
    max_request_bytes: usize,
}

/// The OTLP/HTTP routes, also used by tests without a socket.
pub fn router(intake: Intake, max_request_bytes: usize) -> Router {
    let state = Receiver {
        intake,
        max_request_bytes,
    };
    Router::new()
        .route(
            "/v1/metrics",
            post(|s, h, b| export(Signal::Metrics, s, h, b)),
        )
        .route("/v1/logs", post(|s, h, b| export(Signal::Logs, s, h, b)))
        .route(
            "/v1/traces",
            post(|s, h, b| export(Signal::Traces, s, h, b)),
        )
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the error body OTLP/HTTP prescribes.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn export(
    signal: Signal,
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            let shown = if other.is_empty() { "none" } else { other };
            return error(
                Encoding::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type {shown} is not supported; use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let body = match content_encoding(&headers) {
        ContentEncoding::Identity => body.to_vec(),
        ContentEncoding::Gzip => match gunzip(&body, rx.max_request_bytes) {
            Ok(inflated) => inflated,
            Err(GunzipError::TooLarge) => {
                return error(
                    encoding,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("inflated body exceeds {} bytes", rx.max_request_bytes),
                );
            }
            Err(GunzipError::Corrupt(e)) => {
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    format!("bad gzip body: {e}"),
                );
            }
        },
        ContentEncoding::Other(name) => {
            return error(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding {name} is not supported; use gzip or none"),
            );
        }
    };
    let decoded = match encoding {
        Encoding::Protobuf => ExportRequest::decode(signal, &body).map_err(|e| e.to_string()),
        Encoding::Json => decode_json(signal, &body),
    };
    match decoded {
        Ok(request) => {
            rx.intake.accept(request).await;
            success(encoding)
        }
        Err(message) => error(
            encoding,
            StatusCode::BAD_REQUEST,
            format!("not a valid OTLP {} request: {message}", signal.as_str()),
        ),
    }
}

enum ContentEncoding {
    Identity,
    Gzip,
    Other(String),
}

fn content_encoding(headers: &HeaderMap) -> ContentEncoding {
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => ContentEncoding::Identity,
        Some(v) if v.is_empty() || v == "identity" => ContentEncoding::Identity,
        Some(v) if v == "gzip" || v == "x-gzip" => ContentEncoding::Gzip,
        Some(other) => ContentEncoding::Other(other),
    }
}

enum GunzipError {
    TooLarge,
    Corrupt(std::io::Error),
}

/// Inflates at most `limit` bytes, so a small "zip bomb" cannot exhaust memory.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(body);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(GunzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(out)
}

/// OTLP/JSON. serde silently turns a malformed oneof into `None`, so a request that decodes but
/// lost its data is rejected rather than forwarded half-empty.
fn decode_json(signal: Signal, body: &[u8]) -> Result<ExportRequest, String> {
    use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
    let request = match signal {
        Signal::Metrics => ExportRequest::Metrics(
            serde_json::from_slice::<metrics::v1::ExportMetricsServiceRequest>(body)
                .map_err(|e| e.to_string())?,
        ),
        Signal::Logs => ExportRequest::Logs(
            serde_json::from_slice::<logs::v1::ExportLogsServiceRequest>(body)
                .map_err(|e| e.to_string())?,
        ),
        Signal::Traces => ExportRequest::Traces(
            serde_json::from_slice::<trace::v1::ExportTraceServiceRequest>(body)
                .map_err(|e| e.to_string())?,
        ),
    };
    if let ExportRequest::Metrics(m) = &request {
        let lost = m
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|metric| metric.data.is_none())
            .count();
        if lost > 0 {
            return Err(format!(
                "{lost} metric(s) have no recognisable data (enum values must be integers, ids hex)"
            ));
        }
    }
    let expected_key = match signal {
        Signal::Metrics => "resourceMetrics",
        Signal::Logs => "resourceLogs",
        Signal::Traces => "resourceSpans",
    };
    if let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(body)
        && !top.is_empty()
        && !top.contains_key(expected_key)
    {
        return Err(format!(
            "no `{expected_key}` found (OTLP/JSON field names are lowerCamelCase)"
        ));
    }
    Ok(request)
}

fn success(encoding: Encoding) -> Response {
    match encoding {
        // An empty Export…ServiceResponse: full success.
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::new(),
        )
            .into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
    }
}

fn error(encoding: Encoding, status: StatusCode, message: String) -> Response {
    // gRPC codes: INVALID_ARGUMENT = 3, RESOURCE_EXHAUSTED = 8, UNIMPLEMENTED = 12.
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 12,
        _ => 3,
    };
    let rpc = RpcStatus { code, message };
    match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            rpc.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": rpc.code, "message": rpc.message}).to_string(),
        )
            .into_response(),
    }
}
