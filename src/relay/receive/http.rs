//! OTLP/HTTP receiver: `/v1/metrics`, `/v1/logs`, `/v1/traces`, protobuf or JSON bodies,
//! optionally gzip-compressed, answered in the request's own encoding as the spec requires.

use super::bounds::{BodyError, Bounds, RETRY_AFTER_SECS, Wire};
use crate::otlp::{ExportRequest, Signal};
use crate::relay::Intake;
use crate::relay::rpc::RpcStatus;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use std::io::Read;
use tokio_util::sync::CancellationToken;

/// Serves OTLP/HTTP under `bounds` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    bounds: Bounds,
    stop: CancellationToken,
) {
    let app = router(intake, bounds.clone());
    super::bounds::serve(listener, app, bounds, Wire::Http, stop).await;
}

#[derive(Clone)]
struct Receiver {
    intake: Intake,
    bounds: Bounds,
}

/// The OTLP/HTTP routes, also used by tests without a socket.
pub fn router(intake: Intake, bounds: Bounds) -> Router {
    let state = Receiver { intake, bounds };
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
        // Bodies are read (and limited) by `Bounds::read_body`.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

async fn export(
    signal: Signal,
    State(rx): State<Receiver>,
    headers: HeaderMap,
    body: Body,
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
    let limit = rx.bounds.max_request_bytes;
    let mut wire = match rx.bounds.read_body(body, limit).await {
        Ok(read) => read,
        Err(e) => return body_error(encoding, e),
    };
    let inflated;
    let body: &[u8] = match content_encoding(&headers) {
        ContentEncoding::Identity => &wire.bytes,
        ContentEncoding::Gzip => match gunzip(&wire.bytes, limit) {
            Ok(out) => {
                // The inflated copy counts against the shared budget too.
                if let Err(e) = wire.reserve_more(&rx.bounds, out.len()).await {
                    return body_error(encoding, e);
                }
                inflated = out;
                &inflated
            }
            Err(GunzipError::TooLarge) => {
                crate::relay::stats::ShedCounts::add(&rx.bounds.shed.too_large);
                return error(
                    encoding,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("inflated body exceeds {limit} bytes"),
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
        Encoding::Protobuf => ExportRequest::decode(signal, body).map_err(|e| e.to_string()),
        Encoding::Json => super::otlp_json::decode(signal, body),
    };
    match decoded {
        Ok(request) => {
            drop(wire);
            match rx.intake.accept(request).await {
                Ok(()) => success(encoding),
                Err(e) => refused(encoding, &e),
            }
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

/// The answer to a body that could not be read: 413, 408 (and the connection closes), or the
/// retryable 503 with `Retry-After` that OTLP/HTTP clients back off on.
fn body_error(encoding: Encoding, e: BodyError) -> Response {
    let status = match e {
        BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
        BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        BodyError::Broken(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = error(encoding, status, e.to_string());
    let headers = response.headers_mut();
    if e == BodyError::Busy {
        headers.insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(RETRY_AFTER_SECS),
        );
    }
    // The rest of an unread body would be taken for the next request: close instead.
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A request nothing could keep: `503` with `Retry-After`, which OTLP/HTTP exporters retry,
/// so claude sends it again instead of believing it kept.
fn refused(encoding: Encoding, e: &crate::relay::outbox::OutboxError) -> Response {
    let mut response = error(
        encoding,
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{e}; retry later"),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(crate::relay::REFUSED_RETRY_AFTER_SECS),
    );
    response
}

fn error(encoding: Encoding, status: StatusCode, message: String) -> Response {
    // gRPC codes: INVALID_ARGUMENT = 3, DEADLINE_EXCEEDED = 4, RESOURCE_EXHAUSTED = 8,
    // UNIMPLEMENTED = 12, UNAVAILABLE = 14.
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::REQUEST_TIMEOUT => 4,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 12,
        _ => 3,
    };
    let rpc = RpcStatus {
        code,
        message,
        details: Vec::new(),
    };
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
