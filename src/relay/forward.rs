//! Delivery to the upstream (the local collector or a team's OTLP endpoint), with retries and
//! exponential backoff. Runs beside the receivers, so a slow or dead upstream never slows claude.

use crate::otlp::ExportRequest;
use crate::relay::outbox::Outbox;
use crate::relay::stats::RelayStats;
use crate::settings::{Protocol, UpstreamSettings};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
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

/// Why one delivery attempt failed, and whether trying again can help.
#[derive(Debug)]
pub struct SendError {
    pub retryable: bool,
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

    /// One delivery attempt. `Ok(rejected)` carries the items the upstream said it rejected.
    pub async fn send(&self, request: &ExportRequest) -> Result<u64, SendError> {
        match self {
            Upstream::Grpc {
                channel,
                metadata,
                timeout,
            } => send_grpc(channel.clone(), metadata, *timeout, request).await,
            Upstream::Http {
                client,
                base,
                headers,
            } => send_http(client, base, headers, request).await,
        }
    }
}

async fn send_grpc(
    channel: Channel,
    metadata: &MetadataMap,
    timeout: Duration,
    request: &ExportRequest,
) -> Result<u64, SendError> {
    fn with_meta<T>(body: T, metadata: &MetadataMap, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        *req.metadata_mut() = metadata.clone();
        req.set_timeout(timeout);
        req
    }
    let result = match request {
        ExportRequest::Metrics(r) => MetricsServiceClient::new(channel)
            .export(with_meta(r.clone(), metadata, timeout))
            .await
            .map(|resp| {
                resp.into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_data_points as u64)
            }),
        ExportRequest::Logs(r) => LogsServiceClient::new(channel)
            .export(with_meta(r.clone(), metadata, timeout))
            .await
            .map(|resp| {
                resp.into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_log_records as u64)
            }),
        ExportRequest::Traces(r) => TraceServiceClient::new(channel)
            .export(with_meta(r.clone(), metadata, timeout))
            .await
            .map(|resp| {
                resp.into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_spans as u64)
            }),
    };
    result.map_err(|status| {
        use tonic::Code::*;
        let retryable = matches!(
            status.code(),
            Unavailable
                | DeadlineExceeded
                | ResourceExhausted
                | Aborted
                | Internal
                | Unknown
                | Cancelled
        );
        let detail = match std::error::Error::source(&status) {
            Some(source) => format!("{}: {}", status.message(), error_chain(source)),
            None => status.message().to_string(),
        };
        SendError {
            retryable,
            message: format!(
                "gRPC {:?}: {}",
                status.code(),
                human_error(first_line(&detail))
            ),
        }
    })
}

async fn send_http(
    client: &reqwest::Client,
    base: &str,
    headers: &reqwest::header::HeaderMap,
    request: &ExportRequest,
) -> Result<u64, SendError> {
    let url = format!("{base}{}", request.signal().http_path());
    let response = client
        .post(&url)
        .headers(headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .map_err(|e| SendError {
            retryable: true,
            message: format!("HTTP {url}: {}", human_error(&error_chain(&e))),
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(0);
    }
    let retryable = matches!(status.as_u16(), 408 | 429 | 500..=599);
    Err(SendError {
        retryable,
        message: format!("HTTP {url}: {status}"),
    })
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

/// Takes requests from the outbox and delivers them, oldest first.
pub struct Forwarder {
    outbox: Arc<Outbox>,
    upstream: Upstream,
    stats: Arc<RelayStats>,
}

impl Forwarder {
    /// A forwarder for one outbox and upstream.
    pub fn new(outbox: Arc<Outbox>, upstream: Upstream, stats: Arc<RelayStats>) -> Forwarder {
        Forwarder {
            outbox,
            upstream,
            stats,
        }
    }

    /// Delivers until the outbox is closed and empty, or `stop` is cancelled. With a durable
    /// outbox, a failure after close ends the drain at once: the rows are safe in the store and
    /// the next launch delivers them, so nobody waits for a dead upstream.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let batch = tokio::select! {
                batch = self.outbox.take() => batch,
                () = stop.cancelled() => return,
            };
            let Some(batch) = batch else { return };
            let mut entries = batch.into_iter();
            while let Some(entry) = entries.next() {
                let attempt = tokio::select! {
                    result = self.upstream.send(&entry.request) => result,
                    () = stop.cancelled() => return,
                };
                match attempt {
                    Ok(rejected) => {
                        self.outbox.settle(&entry).await;
                        backoff.reset();
                        self.stats
                            .delivered_requests
                            .fetch_add(1, Ordering::Relaxed);
                        if rejected > 0 {
                            self.stats.record_error(format!(
                                "upstream rejected {rejected} item(s) of a request"
                            ));
                        }
                    }
                    Err(e) if e.retryable => {
                        self.outbox.retry_later(entry).await;
                        for rest in entries.by_ref() {
                            self.outbox.retry_later(rest).await;
                        }
                        self.stats.record_error(e.message);
                        if self.outbox.is_closing_and_durable() {
                            return;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff.step()) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        self.outbox.settle(&entry).await;
                        self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
                        self.stats.record_error(e.message);
                    }
                }
            }
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
