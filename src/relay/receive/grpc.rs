//! OTLP/gRPC receiver. The three `…Service/Export` methods share one raw-bytes service so that
//! a body that does not decode is answered with `InvalidArgument` (the generated servers answer
//! `Internal`, which clients treat as a server fault rather than a bad request).

use crate::otlp::{ExportRequest, Signal};
use crate::relay::Intake;
use bytes::{Buf, BufMut, Bytes};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// Serves the three OTLP gRPC services until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    intake: Intake,
    max_request_bytes: usize,
    stop: CancellationToken,
) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(ExportService::<MetricsName>::new(
            intake.clone(),
            max_request_bytes,
        ))
        .add_service(ExportService::<LogsName>::new(
            intake.clone(),
            max_request_bytes,
        ))
        .add_service(ExportService::<TracesName>::new(intake, max_request_bytes))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    if let Err(e) = result {
        eprintln!("claude-telemetry: OTLP/gRPC receiver stopped: {e}");
    }
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
    max_request_bytes: usize,
    name: PhantomData<N>,
}

impl<N> Clone for ExportService<N> {
    fn clone(&self) -> Self {
        ExportService {
            intake: self.intake.clone(),
            max_request_bytes: self.max_request_bytes,
            name: PhantomData,
        }
    }
}

impl<N: ServiceName> ExportService<N> {
    fn new(intake: Intake, max_request_bytes: usize) -> Self {
        ExportService {
            intake,
            max_request_bytes,
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
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
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
            let mut accept = tonic::codec::EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accept, Default::default())
                .apply_max_message_size_config(Some(this.max_request_bytes), None);
            let method = ExportMethod {
                intake: this.intake,
                signal: N::SIGNAL,
            };
            Ok(grpc.unary(method, req).await)
        })
    }
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
            intake.accept(decoded).await;
            // An empty Export…ServiceResponse encodes to zero bytes: full success.
            Ok(Response::new(Bytes::new()))
        })
    }
}

/// Passes message bytes through untouched; decoding happens in [`ExportMethod`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
