//! A real OTLP receiver for tests: gRPC and HTTP (protobuf and JSON, gzip), recording every
//! request raw and decoded, with query helpers, failure injection, and stop/restart on the
//! same ports for outage tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;
use tonic::codec::CompressionEncoding;

use super::background::{Background, Serve, listen};
use super::wait_until;

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

/// How a request reached the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// A decoded export request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which service or path it came to.
    pub signal: Signal,
    /// gRPC, HTTP protobuf or HTTP JSON.
    pub transport: Transport,
    /// HTTP headers or gRPC metadata (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The body exactly as received (possibly gzip). For gRPC: the protobuf message.
    pub raw: Vec<u8>,
    /// The body after content decoding (gunzip); what was decoded.
    pub body: Vec<u8>,
    /// None when the body did not decode (the sink answered 400).
    pub decoded: Option<Decoded>,
    /// False when the sink answered with an injected failure; query helpers skip these.
    pub accepted: bool,
}

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Record and acknowledge.
    Accept,
    /// Record and answer with an error: this gRPC code / HTTP status.
    Fail { grpc: tonic::Code, http: u16 },
    /// Record, wait this long, then acknowledge.
    Delay(Duration),
}

impl Behaviour {
    /// The answer of a collector that is up but overloaded (UNAVAILABLE / 503).
    pub fn unavailable() -> Behaviour {
        Behaviour::Fail {
            grpc: tonic::Code::Unavailable,
            http: 503,
        }
    }
}

/// One metric data point with its attributes (point attributes; resource attributes apart).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Metric name.
    pub metric: String,
    /// The point's value (int points converted).
    pub value: f64,
    /// Point attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// Attributes of the resource the point came with.
    pub resource: BTreeMap<String, String>,
}

/// One log record (claude's "event").
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `event.name` attribute (`api_request`, `user_prompt`, …).
    pub name: String,
    /// The body as a string (claude sends `claude_code.<name>`).
    pub body: String,
    /// Record attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// Attributes of the resource the record came with.
    pub resource: BTreeMap<String, String>,
    /// Instrumentation scope name (`com.anthropic.claude_code.events`).
    pub scope: String,
}

impl Event {
    /// An attribute parsed as a number (claude sends some numbers as strings).
    pub fn number(&self, key: &str) -> Option<f64> {
        self.attributes.get(key)?.parse().ok()
    }
}

struct SinkState {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    /// gRPC receive limit in bytes, answered as grpc-go does past it (`None`: 64 MiB).
    grpc_limit: Mutex<Option<usize>>,
}

impl SinkState {
    /// Records a request and tells the caller whether to acknowledge it (after any delay).
    async fn record(&self, mut received: Received) -> Result<(), (tonic::Code, u16)> {
        let behaviour = *lock(&self.behaviour);
        received.accepted = !matches!(behaviour, Behaviour::Fail { .. });
        lock(&self.received).push(received);
        match behaviour {
            Behaviour::Accept => Ok(()),
            Behaviour::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Fail { grpc, http } => Err((grpc, http)),
        }
    }
}

/// The running receiver. Stop it with [`OtlpSink::stop`] and bring it back on the same ports
/// with [`OtlpSink::restart`]; what it recorded survives both.
pub struct OtlpSink {
    state: Arc<SinkState>,
    grpc: SocketAddr,
    http: SocketAddr,
    server: Mutex<Option<Background>>,
}

impl OtlpSink {
    /// Starts gRPC and HTTP receivers on 127.0.0.1 with ports chosen by the OS.
    pub fn start() -> OtlpSink {
        let state = Arc::new(SinkState {
            received: Mutex::new(Vec::new()),
            behaviour: Mutex::new(Behaviour::Accept),
            grpc_limit: Mutex::new(None),
        });
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (server, grpc, http) =
            serve(state.clone(), any, any).expect("start the OTLP sink on 127.0.0.1");
        OtlpSink {
            state,
            grpc,
            http,
            server: Mutex::new(Some(server)),
        }
    }

    /// gRPC endpoint URL (`http://127.0.0.1:PORT`), for `OTEL_EXPORTER_OTLP_ENDPOINT` with grpc.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// HTTP base URL (`http://127.0.0.1:PORT`), for `OTEL_EXPORTER_OTLP_ENDPOINT` with http/*.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The gRPC listening address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The HTTP listening address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Stops both receivers: ports closed, open connections cut. Idempotent.
    pub fn stop(&self) {
        if let Some(server) = lock(&self.server).take() {
            server.stop();
        }
    }

    /// Starts the receivers again on the same ports (retrying for a few seconds if the OS
    /// has not released them yet). No-op when running.
    pub fn restart(&self) {
        let mut server = lock(&self.server);
        if server.is_some() {
            return;
        }
        let mut last_error = None;
        for _ in 0..50 {
            match serve(self.state.clone(), self.grpc, self.http) {
                Ok((s, _, _)) => {
                    *server = Some(s);
                    return;
                }
                Err(e) => last_error = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "restart the OTLP sink on {} / {}: {last_error:?}",
            self.grpc, self.http
        );
    }

    /// Refuses gRPC messages larger than `limit` bytes the way a grpc-go server (the
    /// OpenTelemetry Collector's default 4 MiB) does: `RESOURCE_EXHAUSTED`, "grpc: received
    /// message larger than max (N vs. LIMIT)", nothing recorded.
    pub fn set_grpc_limit(&self, limit: Option<usize>) {
        *lock(&self.state.grpc_limit) = limit;
    }

    /// Sets how following requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.state.behaviour) = behaviour;
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        lock(&self.state.received).clear();
    }

    /// Every request so far, accepted or not, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// Number of accepted requests of a signal.
    pub fn request_count(&self, signal: Signal) -> usize {
        lock(&self.state.received)
            .iter()
            .filter(|r| r.accepted && r.signal == signal)
            .count()
    }

    /// Every data point of metric `name` in accepted requests (Sum and Gauge points).
    pub fn points(&self, name: &str) -> Vec<Point> {
        let received = lock(&self.state.received);
        let mut points = Vec::new();
        for r in received.iter().filter(|r| r.accepted) {
            let Some(Decoded::Metrics(request)) = &r.decoded else {
                continue;
            };
            for rm in &request.resource_metrics {
                let resource = rm
                    .resource
                    .as_ref()
                    .map(|res| attribute_map(&res.attributes))
                    .unwrap_or_default();
                for metric in rm
                    .scope_metrics
                    .iter()
                    .flat_map(|sm| &sm.metrics)
                    .filter(|m| m.name == name)
                {
                    let number_points = match &metric.data {
                        Some(Data::Sum(s)) => &s.data_points,
                        Some(Data::Gauge(g)) => &g.data_points,
                        _ => continue,
                    };
                    for p in number_points {
                        let value = match p.value {
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            None => continue,
                        };
                        points.push(Point {
                            metric: metric.name.clone(),
                            value,
                            attributes: attribute_map(&p.attributes),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        points
    }

    /// Sum of metric `name` over the points whose attributes match every `(key, value)` of
    /// `filter`, e.g. `sum("claude_code.token.usage", &[("type", "input")])`. Claude's
    /// metrics are delta sums, so this is the total over the run.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.points(name)
            .iter()
            .filter(|p| {
                filter
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|p| p.value)
            .sum()
    }

    /// Names of every metric received.
    pub fn metric_names(&self) -> BTreeSet<String> {
        let received = lock(&self.state.received);
        received
            .iter()
            .filter(|r| r.accepted)
            .filter_map(|r| match &r.decoded {
                Some(Decoded::Metrics(m)) => Some(m),
                _ => None,
            })
            .flat_map(|m| &m.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Every log record received, in order.
    pub fn all_events(&self) -> Vec<Event> {
        let received = lock(&self.state.received);
        let mut events = Vec::new();
        for r in received.iter().filter(|r| r.accepted) {
            let Some(Decoded::Logs(request)) = &r.decoded else {
                continue;
            };
            for rl in &request.resource_logs {
                let resource = rl
                    .resource
                    .as_ref()
                    .map(|res| attribute_map(&res.attributes))
                    .unwrap_or_default();
                for sl in &rl.scope_logs {
                    let scope = sl
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for record in &sl.log_records {
                        let attributes = attribute_map(&record.attributes);
                        events.push(Event {
                            name: attributes.get("event.name").cloned().unwrap_or_default(),
                            body: record.body.as_ref().map(any_to_string).unwrap_or_default(),
                            attributes,
                            resource: resource.clone(),
                            scope: scope.clone(),
                        });
                    }
                }
            }
        }
        events
    }

    /// Log records whose `event.name` is `name` (`api_request`, `user_prompt`, …).
    pub fn events(&self, name: &str) -> Vec<Event> {
        self.all_events()
            .into_iter()
            .filter(|e| e.name == name)
            .collect()
    }

    /// Whether `needle` occurs in any request as received or after decompression — the check
    /// that private text never left the machine, whatever field it hid in.
    pub fn raw_bytes_contain(&self, needle: impl AsRef<[u8]>) -> bool {
        let needle = needle.as_ref();
        lock(&self.state.received)
            .iter()
            .any(|r| contains(&r.raw, needle) || contains(&r.body, needle))
    }

    /// Waits until `condition(self)` holds; false on timeout.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&OtlpSink) -> bool,
    ) -> bool {
        wait_until(timeout, || condition(self))
    }

    /// Waits until `condition(self)` holds or panics with `what` and a summary of what arrived.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        condition: impl FnMut(&OtlpSink) -> bool,
    ) {
        if !self.wait_until(timeout, condition) {
            panic!(
                "OTLP sink: timed out after {timeout:?} waiting for {what}; {}",
                self.summary()
            );
        }
    }

    /// A one-paragraph description of what arrived, for failure messages.
    pub fn summary(&self) -> String {
        let requests = self.requests();
        let events: BTreeSet<String> = self.all_events().into_iter().map(|e| e.name).collect();
        format!(
            "{} requests ({} metrics, {} logs, {} traces accepted); metrics: {:?}; events: {:?}",
            requests.len(),
            self.request_count(Signal::Metrics),
            self.request_count(Signal::Logs),
            self.request_count(Signal::Traces),
            self.metric_names(),
            events
        )
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn any_to_string(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(any_to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::KvlistValue(kv)) => format!("{:?}", attribute_map(&kv.values)),
        Some(any_value::Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        None => String::new(),
    }
}

fn attribute_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(any_to_string).unwrap_or_default(),
            )
        })
        .collect()
}

fn metadata_pairs(metadata: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

struct Grpc(Arc<SinkState>);

impl Grpc {
    async fn handle(
        &self,
        signal: Signal,
        metadata: &tonic::metadata::MetadataMap,
        raw: Vec<u8>,
        decoded: Decoded,
    ) -> Result<(), tonic::Status> {
        if let Some(limit) = *lock(&self.0.grpc_limit)
            && raw.len() > limit
        {
            return Err(tonic::Status::resource_exhausted(format!(
                "grpc: received message larger than max ({} vs. {limit})",
                raw.len()
            )));
        }
        let received = Received {
            signal,
            transport: Transport::Grpc,
            headers: metadata_pairs(metadata),
            body: raw.clone(),
            raw,
            decoded: Some(decoded),
            accepted: true,
        };
        self.0
            .record(received)
            .await
            .map_err(|(code, _)| tonic::Status::new(code, "injected failure (test sink)"))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let raw = request.get_ref().encode_to_vec();
        let decoded = Decoded::Metrics(request.get_ref().clone());
        self.handle(Signal::Metrics, request.metadata(), raw, decoded)
            .await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let raw = request.get_ref().encode_to_vec();
        let decoded = Decoded::Logs(request.get_ref().clone());
        self.handle(Signal::Logs, request.metadata(), raw, decoded)
            .await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let raw = request.get_ref().encode_to_vec();
        let decoded = Decoded::Traces(request.get_ref().clone());
        self.handle(Signal::Traces, request.metadata(), raw, decoded)
            .await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

const MAX_MESSAGE: usize = 64 * 1024 * 1024;

fn serve(
    state: Arc<SinkState>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
) -> std::io::Result<(Background, SocketAddr, SocketAddr)> {
    let (server, addrs) = Background::spawn("otlp-sink", move || async move {
        let grpc_listener = listen(grpc_addr)?;
        let http_listener = listen(http_addr)?;
        let addrs = vec![grpc_listener.local_addr()?, http_listener.local_addr()?];
        let grpc = tonic::transport::Server::builder()
            .add_service(
                MetricsServiceServer::new(Grpc(state.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                LogsServiceServer::new(Grpc(state.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                TraceServiceServer::new(Grpc(state.clone()))
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(
                grpc_listener,
            ));
        let app = Router::new()
            .route(
                "/v1/metrics",
                post(|s: State<Arc<SinkState>>, h: HeaderMap, b: Bytes| {
                    http_export(s, Signal::Metrics, h, b)
                }),
            )
            .route(
                "/v1/logs",
                post(|s: State<Arc<SinkState>>, h: HeaderMap, b: Bytes| {
                    http_export(s, Signal::Logs, h, b)
                }),
            )
            .route(
                "/v1/traces",
                post(|s: State<Arc<SinkState>>, h: HeaderMap, b: Bytes| {
                    http_export(s, Signal::Traces, h, b)
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE))
            .with_state(state);
        let serve: Serve = Box::pin(async move {
            let http = axum::serve(http_listener, app);
            tokio::select! {
                _ = grpc => {}
                _ = http => {}
            }
        });
        Ok((addrs, serve))
    })?;
    Ok((server, addrs[0], addrs[1]))
}

fn decode_http(signal: Signal, json: bool, body: &[u8]) -> Option<Decoded> {
    if json {
        match signal {
            Signal::Metrics => serde_json::from_slice(body).ok().map(Decoded::Metrics),
            Signal::Logs => serde_json::from_slice(body).ok().map(Decoded::Logs),
            Signal::Traces => serde_json::from_slice(body).ok().map(Decoded::Traces),
        }
    } else {
        match signal {
            Signal::Metrics => ExportMetricsServiceRequest::decode(body)
                .ok()
                .map(Decoded::Metrics),
            Signal::Logs => ExportLogsServiceRequest::decode(body)
                .ok()
                .map(Decoded::Logs),
            Signal::Traces => ExportTraceServiceRequest::decode(body)
                .ok()
                .map(Decoded::Traces),
        }
    }
}

async fn http_export(
    State(state): State<Arc<SinkState>>,
    signal: Signal,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = content_type.starts_with("application/json");
    if !json && !content_type.starts_with("application/x-protobuf") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type",
        );
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .is_err()
        {
            out.clear();
        }
        out
    } else {
        raw.to_vec()
    };
    let decoded = decode_http(signal, json, &body);
    let undecodable = decoded.is_none();
    let received = Received {
        signal,
        transport: if json {
            Transport::HttpJson
        } else {
            Transport::HttpProtobuf
        },
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        raw: raw.to_vec(),
        body,
        decoded,
        accepted: true,
    };
    if undecodable {
        lock(&state.received).push(Received {
            accepted: false,
            ..received
        });
        return plain(StatusCode::BAD_REQUEST, "undecodable OTLP body");
    }
    if let Err((_, status)) = state.record(received).await {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return plain(status, "injected failure (test sink)");
    }
    // An empty Export*ServiceResponse: zero bytes in protobuf, `{}` in JSON.
    let (content_type, body) = if json {
        ("application/json", Body::from("{}"))
    } else {
        ("application/x-protobuf", Body::empty())
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}
