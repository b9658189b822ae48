//! OTLP/gRPC receiver. The three `…Service/Export` methods share one raw-bytes service so that
//! a body that does not decode is answered with `InvalidArgument` (the generated servers answer
//! `Internal`, which clients treat as a server fault rather than a bad request).

use super::bounds::{BodyError, Bounds, RETRY_AFTER_SECS, Wire};
use crate::otlp::{ExportRequest, Signal};
use crate::relay::Intake;
use crate::relay::rpc::RawCodec;
use bytes::Bytes;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// Serves the three OTLP gRPC services under `bounds` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    bounds: Bounds,
    stop: CancellationToken,
) {
    let routes = tonic::service::Routes::new(ExportService::<MetricsName>::new(
        intake.clone(),
        bounds.clone(),
    ))
    .add_service(ExportService::<LogsName>::new(
        intake.clone(),
        bounds.clone(),
    ))
    .add_service(ExportService::<TracesName>::new(intake, bounds.clone()))
    .prepare();
    super::bounds::serve(listener, routes, bounds, Wire::Grpc, stop).await;
}

/// Names one OTLP gRPC service at the type level (tonic routes by `NamedService::NAME`).
pub trait ServiceName: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}

/// `opentelemetry.proto.collector.metrics.v1.MetricsService`.
pub struct MetricsName;
/// `opentelemetry.proto.collector.logs.v1.LogsService`.
pub struct LogsName;
/// `opentelemetry.proto.collector.trace.v1.TraceService`.
pub struct TracesName;

impl ServiceName for MetricsName {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}
impl ServiceName for LogsName {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}
impl ServiceName for TracesName {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}

/// One OTLP export service over raw protobuf bytes.
pub struct ExportService<N> {
    intake: Intake,
    bounds: Bounds,
    name: PhantomData<N>,
}

impl<N> Clone for ExportService<N> {
    fn clone(&self) -> Self {
        ExportService {
            intake: self.intake.clone(),
            bounds: self.bounds.clone(),
            name: PhantomData,
        }
    }
}

impl<N: ServiceName> ExportService<N> {
    fn new(intake: Intake, bounds: Bounds) -> Self {
        ExportService {
            intake,
            bounds,
            name: PhantomData,
        }
    }
}

impl<N: ServiceName> NamedService for ExportService<N> {
    const NAME: &'static str = N::NAME;
}

impl<N, B> Service<http::Request<B>> for ExportService<N>
where
    N: ServiceName,
    B: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + std::fmt::Display + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let expected = format!("/{}/Export", N::NAME);
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != expected {
                return Ok(Status::unimplemented("only Export is served").into_http());
            }
            let max = this.bounds.max_request_bytes;
            // Read the whole body under the shared budget and the body timeout first (5 bytes
            // of gRPC framing on top of the message); the bytes stay counted until answered.
            let (parts, body) = req.into_parts();
            let read = match this.bounds.read_body(body, max + 5).await {
                Ok(read) => read,
                Err(e) => return Ok(body_status(e).into_http()),
            };
            let req =
                http::Request::from_parts(parts, http_body_util::Full::new(read.bytes.clone()));
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(max), None);
            let method = ExportMethod {
                intake: this.intake,
                signal: N::SIGNAL,
            };
            let response = grpc.unary(method, req).await;
            drop(read);
            Ok(response)
        })
    }
}

/// The status for a body that could not be read. Load shedding is `UNAVAILABLE` with a
/// `google.rpc.RetryInfo`, which OTLP exporters retry after the given delay.
fn body_status(e: BodyError) -> Status {
    match e {
        // Worded as grpc-go words it, which senders (our own forwarder among them: a relay
        // whose upstream is a team relay) read as "split it", not as a quota.
        BodyError::TooLarge(limit) => Status::resource_exhausted(format!(
            "received message larger than max ({limit} bytes): {e}"
        )),
        BodyError::TooSlow(_) => Status::deadline_exceeded(e.to_string()),
        BodyError::Broken(_) => Status::cancelled(e.to_string()),
        BodyError::Busy => unavailable(e.to_string(), Duration::from_secs(RETRY_AFTER_SECS)),
    }
}

/// `UNAVAILABLE` carrying a `google.rpc.RetryInfo` of `delay`: retried after it.
fn unavailable(message: String, delay: Duration) -> Status {
    let details =
        crate::relay::rpc::status_with_retry(tonic::Code::Unavailable as i32, &message, delay);
    Status::with_details(tonic::Code::Unavailable, message, details.into())
}

struct ExportMethod {
    intake: Intake,
    signal: Signal,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let intake = self.intake.clone();
        let signal = self.signal;
        Box::pin(async move {
            let body = request.into_inner();
            let decoded = ExportRequest::decode(signal, &body).map_err(|e| {
                Status::invalid_argument(format!(
                    "not a valid OTLP {} request: {e}",
                    signal.as_str()
                ))
            })?;
            if let Err(e) = intake.accept(decoded).await {
                // Kept nowhere: `UNAVAILABLE` with a `RetryInfo`, which OTLP exporters retry,
                // so claude sends it again instead of believing it kept.
                return Err(unavailable(
                    format!("{e}; retry later"),
                    Duration::from_secs(crate::relay::REFUSED_RETRY_AFTER_SECS),
                ));
            }
            // An empty Export…ServiceResponse encodes to zero bytes: full success.
            Ok(Response::new(Bytes::new()))
        })
    }
}
