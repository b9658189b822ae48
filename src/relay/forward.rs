//! Delivery to the upstream (the local collector or a team's OTLP endpoint), with retries and
//! exponential backoff. Runs beside the receivers, so a slow or dead upstream never slows claude.
//!
//! No single request can stop delivery. Failures are classed by the OTLP specification's rules:
//! gRPC `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS`
//! are retried, `RESOURCE_EXHAUSTED` only when the status carries `google.rpc.RetryInfo`
//! (whose delay is honoured); HTTP 429, 502, 503 and 504 are retried (honouring
//! `Retry-After`), every other status is permanent. A request the upstream finds too large
//! (gRPC `RESOURCE_EXHAUSTED`/`OUT_OF_RANGE` naming the message size, HTTP 413), or larger than
//! the 4 MiB gRPC receivers accept by default, is split by resource, scope, record and (one
//! metric) data point until it fits; a single record or point that still does not fit is
//! dropped, counted and named. A request that
//! fails in a way that may pass waits in its own back-off while the requests behind it go on.

use crate::otlp::{ExportRequest, Signal};
use crate::relay::outbox::{Entry, Outbox};
use crate::relay::rpc::RawCodec;
use crate::relay::split;
use crate::relay::stats::RelayStats;
use crate::settings::{Protocol, UpstreamSettings};
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The upstream could not be set up from the settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream.endpoint `{endpoint}` is not usable: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("upstream.headers.{name}: {reason}")]
    Header { name: String, reason: String },
}

/// The largest gRPC message sent: the default receive limit of grpc-go, grpcio and tonic (so of
/// the OpenTelemetry Collector too). Larger requests are split before sending.
pub const GRPC_MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// What trying again can do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// May pass: retry after the upstream's delay when it gave one, else the back-off.
    Transient { retry_after: Option<Duration> },
    /// The upstream refuses the request's size: smaller parts may pass.
    TooLarge,
    /// Will not pass however often it is sent (the specification's non-retryable answers).
    Permanent,
}

/// Why one delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct SendError {
    pub kind: Failure,
    pub message: String,
}

/// A configured upstream client.
#[derive(Clone)]
pub enum Upstream {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        timeout: Duration,
    },
    Http {
        client: reqwest::Client,
        base: String,
        headers: reqwest::header::HeaderMap,
    },
}

impl Upstream {
    /// Builds the client; connects lazily, so a down upstream does not delay start-up.
    pub fn connect(settings: &UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let endpoint = settings.endpoint.trim().trim_end_matches('/').to_string();
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let bad = |reason: String| UpstreamError::Endpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        match settings.protocol {
            Protocol::Grpc => {
                let mut ep = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| bad(error_chain(&e)))?
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .timeout(timeout);
                if endpoint.starts_with("https://") {
                    ep = ep
                        .tls_config(ClientTlsConfig::new().with_native_roots())
                        .map_err(|e| bad(error_chain(&e)))?;
                }
                let mut metadata = MetadataMap::new();
                for (name, value) in &settings.headers {
                    let header_err = |reason: &str| UpstreamError::Header {
                        name: name.clone(),
                        reason: reason.to_string(),
                    };
                    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| header_err("not a valid header name"))?;
                    let value = MetadataValue::try_from(value.as_str())
                        .map_err(|_| header_err("not a valid header value"))?;
                    metadata.insert(key, value);
                }
                Ok(Upstream::Grpc {
                    channel: ep.connect_lazy(),
                    metadata,
                    timeout,
                })
            }
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &settings.headers {
                    let header_err = |reason: &str| UpstreamError::Header {
                        name: name.clone(),
                        reason: reason.to_string(),
                    };
                    let key = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| header_err("not a valid header name"))?;
                    let value = reqwest::header::HeaderValue::from_str(value)
                        .map_err(|_| header_err("not a valid header value"))?;
                    headers.insert(key, value);
                }
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .build()
                    .map_err(|e| bad(error_chain(&e)))?;
                Ok(Upstream::Http {
                    client,
                    base: endpoint,
                    headers,
                })
            }
        }
    }

    /// One delivery attempt of a request's protobuf `body`. `Ok(rejected)` carries the items
    /// the upstream said it rejected.
    pub async fn send(&self, signal: Signal, body: Bytes) -> Result<u64, SendError> {
        match self {
            Upstream::Grpc {
                channel,
                metadata,
                timeout,
            } => send_grpc(channel.clone(), metadata, *timeout, signal, body).await,
            Upstream::Http {
                client,
                base,
                headers,
            } => send_http(client, base, headers, signal, body).await,
        }
    }
}

/// The gRPC method of each signal's export.
fn grpc_path(signal: Signal) -> &'static str {
    match signal {
        Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    }
}

/// Items an export response says were rejected (a partial success); 0 when it does not
/// decode, as an empty response (full success) does.
fn rejected_items(signal: Signal, response: &[u8]) -> u64 {
    let rejected = match signal {
        Signal::Metrics => ExportMetricsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_data_points),
        Signal::Logs => ExportLogsServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_log_records),
        Signal::Traces => ExportTraceServiceResponse::decode(response)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| p.rejected_spans),
    };
    rejected.map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// One export over gRPC, the encoded body sent as it is (what the generated clients do, minus
/// decoding and encoding again).
async fn send_grpc(
    channel: Channel,
    metadata: &MetadataMap,
    timeout: Duration,
    signal: Signal,
    body: Bytes,
) -> Result<u64, SendError> {
    let mut grpc = tonic::client::Grpc::new(channel);
    let result = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        let mut req = tonic::Request::new(body);
        *req.metadata_mut() = metadata.clone();
        req.set_timeout(timeout);
        let path = http::uri::PathAndQuery::from_static(grpc_path(signal));
        grpc.unary(req, path, RawCodec).await
    }
    .await;
    result
        .map(|resp| rejected_items(signal, resp.get_ref()))
        .map_err(|status| SendError {
            kind: classify_grpc(
                status.code(),
                status.message(),
                retry_info(status.details()),
            ),
            message: {
                let detail = match std::error::Error::source(&status) {
                    Some(source) => format!("{}: {}", status.message(), error_chain(source)),
                    None => status.message().to_string(),
                };
                format!(
                    "gRPC {:?}: {}",
                    status.code(),
                    human_error(first_line(&detail))
                )
            },
        })
}

/// The OTLP/gRPC rules (see the module doc). Client-side transport failures (no connection,
/// a reset stream) reach us as `UNKNOWN`/`INTERNAL` with a transport message: those are the
/// upstream being away, so they are retried too.
pub fn classify_grpc(code: tonic::Code, message: &str, retry_after: Option<Duration>) -> Failure {
    use tonic::Code::*;
    let lower = message.to_ascii_lowercase();
    let about_size = lower.contains("larger than max") || lower.contains("too large");
    match code {
        ResourceExhausted if retry_after.is_some() => Failure::Transient { retry_after },
        ResourceExhausted | OutOfRange if about_size => Failure::TooLarge,
        ResourceExhausted => Failure::Permanent,
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => {
            Failure::Transient { retry_after }
        }
        Unknown | Internal
            if lower.contains("transport error")
                || lower.contains("connection")
                || lower.contains("h2 protocol error")
                || lower.contains("broken pipe") =>
        {
            Failure::Transient { retry_after }
        }
        _ => Failure::Permanent,
    }
}

/// The delay of a `google.rpc.RetryInfo` in a status's details, if there is one, capped.
fn retry_info(details: &[u8]) -> Option<Duration> {
    super::rpc::retry_delay(details).map(|d| d.min(MAX_RETRY_AFTER))
}

/// An upstream asking for more than this is waited for this long (the row keeps its place).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

async fn send_http(
    client: &reqwest::Client,
    base: &str,
    headers: &reqwest::header::HeaderMap,
    signal: Signal,
    body: Bytes,
) -> Result<u64, SendError> {
    let url = format!("{base}{}", signal.http_path());
    let response = client
        .post(&url)
        .headers(headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await
        .map_err(|e| SendError {
            kind: Failure::Transient { retry_after: None },
            message: format!("HTTP {url}: {}", human_error(&error_chain(&e))),
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(0);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    Err(SendError {
        kind: classify_http(status.as_u16(), retry_after),
        message: format!("HTTP {url}: {status}"),
    })
}

/// The delay a `Retry-After` value asks for at `now`, capped: RFC 9110 allows delta-seconds
/// or an HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime forms recipients must
/// still accept). A date already past is "now" (zero); a value that is neither is ignored, so
/// the row's own back-off applies.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds too large for u64 are still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The OTLP/HTTP rules: 429, 502, 503, 504 retryable; 413 too large; the rest permanent.
pub fn classify_http(status: u16, retry_after: Option<Duration>) -> Failure {
    match status {
        429 | 502 | 503 | 504 => Failure::Transient { retry_after },
        413 => Failure::TooLarge,
        _ => Failure::Permanent,
    }
}

/// What kind of trouble a delivery error is, for `doctor`'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The TLS handshake failed: the certificate was rejected or TLS is misconfigured.
    Tls,
    /// The host name does not resolve.
    Dns,
    /// Nothing listens, or no answer in time: the upstream is down or unreachable.
    Unreachable,
    /// Anything else.
    Other,
}

/// Classifies a delivery error message (as [`human_error`] words it, or raw).
pub fn trouble_of(message: &str) -> Trouble {
    let m = message.to_lowercase();
    if m.contains("tls") || m.contains("certificate") || m.contains("handshake") {
        Trouble::Tls
    } else if m.contains("does not resolve")
        || m.contains("dns error")
        || m.contains("failed to lookup address")
        || m.contains("name or service not known")
    {
        Trouble::Dns
    } else if m.contains("connection refused")
        || m.contains("timed out")
        || m.contains("deadline has elapsed")
        || m.contains("no answer")
        || m.contains("unreachable")
    {
        Trouble::Unreachable
    } else {
        Trouble::Other
    }
}

/// Rewords the TLS and DNS failures of hyper/rustls (whose texts end in Rust debug output such
/// as `invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`) into a sentence saying
/// what is wrong and what to do; other messages are returned unchanged.
pub fn human_error(raw: &str) -> String {
    const CERT: &[(&str, &str)] = &[
        (
            "CaUsedAsEndEntity",
            "the server presents a CA certificate as its own certificate; it needs a server \
             (leaf) certificate signed by that CA",
        ),
        (
            "UnknownIssuer",
            "the server's certificate is not signed by a CA this machine trusts; add the CA to \
             the system's roots (or point SSL_CERT_FILE at a bundle holding it)",
        ),
        (
            "NotValidForName",
            "the server's certificate is not valid for this host name",
        ),
        ("Expired", "the server's certificate has expired"),
        ("NotValidYet", "the server's certificate is not valid yet"),
        ("Revoked", "the server's certificate has been revoked"),
        (
            "BadSignature",
            "the server's certificate has a bad signature",
        ),
        (
            "UnhandledCriticalExtension",
            "the server's certificate has a critical extension this client does not know",
        ),
        ("BadEncoding", "the server's certificate cannot be decoded"),
    ];
    if raw.contains("invalid peer certificate") || raw.contains("InvalidCertificate") {
        let why = CERT
            .iter()
            .find(|(token, _)| raw.contains(token))
            .map_or("the server's certificate was rejected", |(_, why)| *why);
        return format!("TLS handshake failed: {why}");
    }
    if raw.contains("no native certs found") {
        return "TLS cannot be set up: this machine has no trusted root certificates (install \
                the system's CA bundle, or point SSL_CERT_FILE at one)"
            .to_string();
    }
    if raw.contains("received fatal alert") || raw.contains("AlertReceived") {
        return "TLS handshake failed: the server refused the connection's TLS parameters \
                (it may require a client certificate)"
            .to_string();
    }
    if raw.contains("InvalidContentType") || raw.contains("corrupt message") {
        return "TLS handshake failed: the server does not speak TLS on this port (use http://?)"
            .to_string();
    }
    if raw.contains("dns error") || raw.contains("failed to lookup address") {
        return "the host name does not resolve (DNS lookup failed)".to_string();
    }
    if raw.contains("Connection refused") || raw.contains("connection refused") {
        return "connection refused: nothing listens at that address and port".to_string();
    }
    raw.to_string()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Exponential backoff with jitter: 100 ms doubling to 10 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn step(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // Up to 20% jitter so that many launchers do not retry in lockstep.
        current + current.mul_f64(f64::from(nanos % 200) / 1000.0)
    }
}

/// A request's own back-off after `attempts` failures: 100 ms doubling to 10 s, or what the
/// upstream asked for.
fn row_delay(attempts: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| {
        Backoff::FIRST
            .saturating_mul(1u32 << attempts.min(10))
            .min(Backoff::MAX)
    })
}

/// Consecutive transient failures after which a closing drain stops trying: the upstream is
/// away and the store keeps the rows for the next launch.
const CLOSING_FAILURES: u32 = 3;

/// How one entry's delivery ended.
enum Delivery {
    /// Every part was accepted (or dropped for a counted reason).
    Done,
    /// Not everything went: `unsent` parts remain when the entry was split and some parts went
    /// (`None`: nothing of it went, the entry stays as it is).
    Retry {
        unsent: Option<Vec<ExportRequest>>,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The drain ran out of time and the in-flight send gave no answer within the grace.
    NoAnswer { unsent: Option<Vec<ExportRequest>> },
    /// Not sent: the drain stopped before its turn.
    Untried,
}

/// `first` and the entries after it that go upstream with it as one request: the same
/// signal, together no larger than [`GRPC_MAX_MESSAGE`].
fn take_group(first: Entry, entries: &mut VecDeque<Entry>) -> Vec<Entry> {
    let mut bytes = first.body.len();
    let mut group = vec![first];
    while let Some(next) = entries.front() {
        if next.signal != group[0].signal || bytes + next.body.len() > GRPC_MAX_MESSAGE {
            break;
        }
        bytes += next.body.len();
        group.extend(entries.pop_front());
    }
    group
}

/// Takes requests from the outbox and delivers them, oldest first.
pub struct Forwarder {
    outbox: Arc<Outbox>,
    upstream: Upstream,
    stats: Arc<RelayStats>,
    /// How long a send in flight when the drain runs out of time may still take to answer.
    grace: Duration,
}

impl Forwarder {
    /// A forwarder for one outbox and upstream.
    pub fn new(
        outbox: Arc<Outbox>,
        upstream: Upstream,
        stats: Arc<RelayStats>,
        grace: Duration,
    ) -> Forwarder {
        Forwarder {
            outbox,
            upstream,
            stats,
            grace,
        }
    }

    /// Delivers until the outbox is closed and empty, or `stop` is cancelled. With a durable
    /// outbox, repeated failures after close end the drain: the rows are safe in the store and
    /// the next launch delivers them, so nobody waits for a dead upstream.
    ///
    /// On `stop` nothing new is sent; a send already in flight is given [`Forwarder::grace`]
    /// to answer and is then settled (accepted) or given back (anything else), and every
    /// claimed entry not yet sent is given back at once, so the next launch sends it without
    /// waiting for a lease and nothing the upstream accepted is sent again.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        let mut failures_in_a_row = 0u32;
        loop {
            let batch = tokio::select! {
                batch = self.outbox.take() => batch,
                () = stop.cancelled() => {
                    // The take may have been cut off after the store claimed rows for it.
                    self.outbox.release_unread_claims().await;
                    return;
                }
            };
            let Some(batch) = batch else { return };
            let size = batch.len();
            let mut failed = 0usize;
            let mut longest_wait = None;
            let mut entries: VecDeque<Entry> = batch.into();
            while let Some(first) = entries.pop_front() {
                if stop.is_cancelled() {
                    self.outbox.release(first).await;
                    self.release_rest(&mut entries).await;
                    return;
                }
                let group = take_group(first, &mut entries);
                let deliveries = if group.len() == 1 {
                    vec![self.deliver(&group[0], &stop).await]
                } else {
                    self.deliver_together(&group, &stop).await
                };
                let (mut any_done, mut any_retry, mut no_answer) = (false, false, false);
                for (entry, delivery) in group.into_iter().zip(deliveries) {
                    match delivery {
                        Delivery::Done => {
                            any_done = true;
                            self.outbox.settle(&entry).await;
                            self.stats
                                .delivered_requests
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Delivery::Retry {
                            unsent,
                            retry_after,
                            message,
                        } => {
                            any_retry = true;
                            failed += 1;
                            longest_wait = longest_wait.max(retry_after);
                            match unsent {
                                Some(parts) => self.outbox.requeue_parts(entry, parts).await,
                                None => {
                                    let delay = row_delay(entry.attempts, retry_after);
                                    self.outbox.defer(entry, delay, &message).await;
                                }
                            }
                            self.stats.record_error(message);
                        }
                        Delivery::NoAnswer { unsent } => {
                            no_answer = true;
                            match unsent {
                                Some(parts) => self.outbox.requeue_parts(entry, parts).await,
                                None => self.outbox.release(entry).await,
                            }
                            self.stats.unanswered_sends.fetch_add(1, Ordering::Relaxed);
                        }
                        Delivery::Untried => self.outbox.release(entry).await,
                    }
                }
                if no_answer {
                    self.release_rest(&mut entries).await;
                    return;
                }
                if any_done {
                    failures_in_a_row = 0;
                } else if any_retry {
                    failures_in_a_row += 1;
                    if self.outbox.is_closing_and_durable() && failures_in_a_row >= CLOSING_FAILURES
                    {
                        self.release_rest(&mut entries).await;
                        return;
                    }
                }
            }
            if failed == size {
                // Everything failed: the upstream itself is away or overloaded.
                let wait = backoff.step().max(longest_wait.unwrap_or_default());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
            } else {
                backoff.reset();
            }
        }
    }

    /// Gives back every entry not yet tried.
    async fn release_rest(&self, entries: &mut VecDeque<Entry>) {
        for entry in entries.drain(..) {
            self.outbox.release(entry).await;
        }
    }

    /// Sends a group of entries of one signal as one request: the concatenation of their
    /// encodings is the encoding of one request holding all their resources (protobuf merges
    /// repeated fields), so the upstream takes one export instead of several. Accepted or
    /// failed transiently, the answer is each entry's; refused (too large, or permanently,
    /// which may be one bad entry), each is sent alone so no entry fails for another's sake.
    async fn deliver_together(&self, group: &[Entry], stop: &CancellationToken) -> Vec<Delivery> {
        let mut body = BytesMut::with_capacity(group.iter().map(|e| e.body.len()).sum());
        for entry in group {
            body.extend_from_slice(&entry.body);
        }
        let each = |d: &dyn Fn() -> Delivery| group.iter().map(|_| d()).collect();
        match self
            .send_within_grace(group[0].signal, body.freeze(), stop)
            .await
        {
            None => each(&|| Delivery::NoAnswer { unsent: None }),
            Some(Ok(rejected)) => {
                self.note_rejected(rejected);
                each(&|| Delivery::Done)
            }
            Some(Err(SendError {
                kind: Failure::Transient { retry_after },
                message,
            })) => each(&|| Delivery::Retry {
                unsent: None,
                retry_after,
                message: message.clone(),
            }),
            Some(Err(_)) => {
                let mut deliveries = Vec::with_capacity(group.len());
                let mut stopped = false;
                for entry in group {
                    if stopped || stop.is_cancelled() {
                        deliveries.push(Delivery::Untried);
                        continue;
                    }
                    let delivery = self.deliver(entry, stop).await;
                    stopped = matches!(delivery, Delivery::NoAnswer { .. });
                    deliveries.push(delivery);
                }
                deliveries
            }
        }
    }

    /// Sends one entry, splitting it while the upstream finds it too large. The entry's
    /// encoding goes as it is; only a request to split is decoded.
    async fn deliver(&self, entry: &Entry, stop: &CancellationToken) -> Delivery {
        let grpc = matches!(self.upstream, Upstream::Grpc { .. });
        if !(grpc && entry.body.len() > GRPC_MAX_MESSAGE) {
            match self
                .send_within_grace(entry.signal, entry.body.clone(), stop)
                .await
            {
                None => return Delivery::NoAnswer { unsent: None },
                Some(Ok(rejected)) => {
                    self.note_rejected(rejected);
                    return Delivery::Done;
                }
                Some(Err(e)) => match e.kind {
                    Failure::TooLarge => {} // split below
                    Failure::Permanent => {
                        self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
                        self.stats.record_error(e.message);
                        return Delivery::Done;
                    }
                    Failure::Transient { retry_after } => {
                        return Delivery::Retry {
                            unsent: None,
                            retry_after,
                            message: e.message,
                        };
                    }
                },
            }
        }
        let request = match ExportRequest::decode(entry.signal, &entry.body) {
            Ok(request) => request,
            Err(e) => {
                // Never the case for what the relay encoded or checked at claim; counted.
                self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .record_error(format!("dropped a request that does not decode: {e}"));
                return Delivery::Done;
            }
        };
        let (a, b) = match split::halve(&request) {
            Some(halves) => halves,
            None => {
                self.drop_too_large(&request, "it cannot be split");
                return Delivery::Done;
            }
        };
        self.deliver_parts(vec![b, a], stop).await
    }

    /// Sends the parts of a split request (`pending`, last first), halving them further while
    /// they are too large.
    async fn deliver_parts(
        &self,
        mut pending: Vec<ExportRequest>,
        stop: &CancellationToken,
    ) -> Delivery {
        let grpc = matches!(self.upstream, Upstream::Grpc { .. });
        let mut rejected = 0u64;
        while let Some(part) = pending.pop() {
            let body = Bytes::from(part.encode_to_vec());
            if grpc
                && body.len() > GRPC_MAX_MESSAGE
                && let Some((a, b)) = split::halve(&part)
            {
                pending.push(b);
                pending.push(a);
                continue;
            }
            let answer = self.send_within_grace(part.signal(), body, stop).await;
            let unsent = |mut pending: Vec<ExportRequest>, part: ExportRequest| {
                pending.push(part);
                pending.reverse();
                Some(pending)
            };
            match answer {
                None => {
                    return Delivery::NoAnswer {
                        unsent: unsent(pending, part),
                    };
                }
                Some(Ok(n)) => rejected += n,
                Some(Err(e)) => match e.kind {
                    Failure::TooLarge => match split::halve(&part) {
                        Some((a, b)) => {
                            pending.push(b);
                            pending.push(a);
                        }
                        None => self.drop_too_large(&part, &e.message),
                    },
                    Failure::Permanent => {
                        self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
                        self.stats.record_error(e.message);
                    }
                    Failure::Transient { retry_after } => {
                        return Delivery::Retry {
                            unsent: unsent(pending, part),
                            retry_after,
                            message: e.message,
                        };
                    }
                },
            }
        }
        self.stats.split_requests.fetch_add(1, Ordering::Relaxed);
        self.note_rejected(rejected);
        Delivery::Done
    }

    /// A part that even alone is too large for the upstream: dropped, counted and named.
    fn drop_too_large(&self, part: &ExportRequest, why: &str) {
        let items = part.item_count() as u64;
        self.stats
            .dropped_too_large_items
            .fetch_add(items, Ordering::Relaxed);
        self.stats.record_error(format!(
            "dropped {items} item(s) too large for the upstream even alone ({} bytes): {why}",
            split::encoded_len(part),
        ));
    }

    fn note_rejected(&self, rejected: u64) {
        if rejected > 0 {
            self.stats
                .record_error(format!("upstream rejected {rejected} item(s) of a request"));
        }
    }

    /// One attempt; once `stop` fires, the answer is awaited for the grace only (`None`: no
    /// answer came, the upstream may or may not have the request).
    async fn send_within_grace(
        &self,
        signal: Signal,
        body: Bytes,
        stop: &CancellationToken,
    ) -> Option<Result<u64, SendError>> {
        let send = self.upstream.send(signal, body);
        tokio::pin!(send);
        tokio::select! {
            answer = &mut send => Some(answer),
            () = stop.cancelled() => tokio::time::timeout(self.grace, send).await.ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(121));
        for _ in 0..20 {
            b.step();
        }
        assert!(b.step() <= Backoff::MAX.mul_f64(1.2));
        b.reset();
        assert!(b.step() < Duration::from_millis(121));
    }

    #[test]
    fn failures_are_classed_by_the_otlp_rules() {
        use tonic::Code;
        let t = Failure::Transient { retry_after: None };
        assert_eq!(classify_grpc(Code::Unavailable, "", None), t);
        assert_eq!(classify_grpc(Code::DataLoss, "", None), t);
        assert_eq!(
            classify_grpc(Code::ResourceExhausted, "quota", None),
            Failure::Permanent,
            "RESOURCE_EXHAUSTED without RetryInfo is not retried"
        );
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            classify_grpc(Code::ResourceExhausted, "quota", wait),
            Failure::Transient { retry_after: wait }
        );
        assert_eq!(
            classify_grpc(
                Code::ResourceExhausted,
                "grpc: received message larger than max (5000000 vs. 4194304)",
                None
            ),
            Failure::TooLarge
        );
        assert_eq!(
            classify_grpc(
                Code::OutOfRange,
                "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
                None
            ),
            Failure::TooLarge
        );
        assert_eq!(
            classify_grpc(Code::InvalidArgument, "", None),
            Failure::Permanent
        );
        assert_eq!(
            classify_grpc(Code::Unauthenticated, "", None),
            Failure::Permanent
        );
        assert_eq!(
            classify_http(503, wait),
            Failure::Transient { retry_after: wait }
        );
        assert_eq!(classify_http(413, None), Failure::TooLarge);
        assert_eq!(classify_http(400, None), Failure::Permanent);
        assert_eq!(classify_http(500, None), Failure::Permanent);
    }

    #[test]
    fn retry_info_delay_is_read_from_the_status_details_and_capped() {
        let status = crate::relay::rpc::status_with_retry(14, "", Duration::from_millis(3500));
        assert_eq!(retry_info(&status), Some(Duration::from_millis(3500)));
        let long = crate::relay::rpc::status_with_retry(14, "", Duration::from_secs(3600));
        assert_eq!(retry_info(&long), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_info(b""), None);
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_any_http_date_form() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Wed, 21 Oct 2015 07:28:00 GMT
        let date = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let now = date - Duration::from_secs(30);
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(parse_retry_after("120", now), secs(120));
        assert_eq!(parse_retry_after(" 7 ", now), secs(7));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            secs(30)
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            secs(30)
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", now), secs(30));
        assert_eq!(
            parse_retry_after(
                "Wed, 21 Oct 2015 07:28:00 GMT",
                date + Duration::from_secs(5)
            ),
            secs(0),
            "a date already past means now"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", SystemTime::UNIX_EPOCH),
            Some(MAX_RETRY_AFTER),
            "a date far ahead is capped"
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["", "soon", "-5", "1.5", "21 Oct 2015"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_http_upstream_asking_to_retry_at_a_date_is_waited_for_until_then() {
        let at = std::time::SystemTime::now() + Duration::from_secs(40);
        let app = axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move || async move {
                (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    [(http::header::RETRY_AFTER, httpdate::fmt_http_date(at))],
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let upstream = Upstream::connect(&UpstreamSettings {
            endpoint: format!("http://{addr}"),
            protocol: Protocol::HttpProtobuf,
            ..Default::default()
        })
        .unwrap();
        let err = upstream
            .send(Signal::Logs, Bytes::new())
            .await
            .expect_err("503");
        let Failure::Transient {
            retry_after: Some(wait),
        } = err.kind
        else {
            panic!("retryable with the upstream's delay: {:?}", err.kind);
        };
        // The date has whole seconds: 39 to 40 s from the request.
        assert!(
            wait >= Duration::from_secs(35) && wait <= Duration::from_secs(40),
            "{wait:?}"
        );
        assert_eq!(row_delay(3, Some(wait)), wait, "the row waits that long");
        server.abort();
    }

    #[test]
    fn row_delay_doubles_and_honours_the_upstream() {
        assert_eq!(row_delay(0, None), Duration::from_millis(100));
        assert_eq!(row_delay(3, None), Duration::from_millis(800));
        assert_eq!(row_delay(30, None), Backoff::MAX);
        assert_eq!(
            row_delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn tls_and_dns_failures_are_worded_for_people() {
        let raw = "transport error: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        let human = human_error(raw);
        assert!(!human.contains("OtherError"), "{human}");
        assert!(human.starts_with("TLS handshake failed"), "{human}");
        assert_eq!(trouble_of(&human), Trouble::Tls);
        let unknown = human_error("invalid peer certificate: UnknownIssuer");
        assert!(unknown.contains("not signed by a CA"), "{unknown}");
        let dns = human_error(
            "error trying to connect: dns error: failed to lookup address information: Name or service not known",
        );
        assert_eq!(trouble_of(&dns), Trouble::Dns, "{dns}");
        assert_eq!(human_error("HTTP 503"), "HTTP 503");
    }

    #[test]
    fn bad_header_names_the_key() {
        let mut s = UpstreamSettings::default();
        s.headers.insert("bad header".into(), "x".into());
        let err = Upstream::connect(&s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("upstream.headers.bad header"), "{err}");
    }
}
