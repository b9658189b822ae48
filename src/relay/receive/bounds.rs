//! What a hostile or broken client can cost the launcher: both receivers accept connections
//! through [`serve`], which caps concurrent connections, closes connections that send no
//! complete request in time (slowloris) or sit idle, and sets `TCP_NODELAY` on every accepted
//! socket. A connection that never sends a byte (a port probe, a client that opened one it did
//! not need) is closed the same way but is not a sender turned away: a probe that closes is not
//! counted at all, one left open past the header timeout only as unused; request bodies are read through [`Bounds::read_body`], which draws on one byte budget
//! shared by every request in flight and enforces a body read timeout. Past a bound the client
//! gets the protocol's back-pressure answer and the relay keeps serving everyone else.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::relay::stats::ShedCounts;
use crate::settings::RelaySettings;

/// Seconds a client is told to wait (Retry-After, gRPC RetryInfo) when the relay sheds load.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The limits shared by both receivers of one relay.
#[derive(Clone)]
pub struct Bounds {
    connections: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    /// Largest body accepted (wire bytes, before inflation).
    pub max_request_bytes: usize,
    /// A new connection must deliver a complete request head within this.
    pub header_timeout: Duration,
    /// A request's body must be read completely within this once its head is in.
    pub body_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// What the bounds turned away, by reason (the relay's stats, for the exit line and
    /// `doctor`).
    pub shed: Arc<ShedCounts>,
}

/// Why a body could not be read; each maps to a protocol answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("request body not received within {0:?}")]
    TooSlow(Duration),
    #[error("the relay is buffering too many requests; retry in {RETRY_AFTER_SECS} s")]
    Busy,
    #[error("reading the request body failed: {0}")]
    Broken(String),
}

/// A body read under the budget; the bytes stay counted until this is dropped.
pub struct BudgetedBody {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

impl BudgetedBody {
    /// Counts `extra` more bytes (e.g. an inflated copy) against the budget, waiting at most
    /// the body timeout for room.
    pub async fn reserve_more(&mut self, bounds: &Bounds, extra: usize) -> Result<(), BodyError> {
        let permit = bounds
            .acquire(extra, bounds.body_timeout)
            .await
            .inspect_err(|e| {
                if matches!(e, BodyError::TooLarge(_)) {
                    ShedCounts::add(&bounds.shed.too_large);
                }
            })?;
        match (&mut self._permit, permit) {
            (Some(held), Some(more)) => held.merge(more),
            (slot @ None, more) => *slot = more,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

impl Bounds {
    /// The bounds a relay runs with, from `[relay]` settings.
    pub fn from_settings(relay: &RelaySettings) -> Self {
        let max_request_bytes = relay.max_request_bytes as usize;
        // The budget must hold at least one largest request (plus gRPC framing), or such a
        // request could never be accepted.
        let budget_bytes = (relay.max_buffered_bytes as usize)
            .max(max_request_bytes + 16)
            .min(Semaphore::MAX_PERMITS);
        Bounds {
            connections: Arc::new(Semaphore::new(relay.max_connections.max(1) as usize)),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            max_request_bytes,
            header_timeout: Duration::from_millis(relay.header_timeout_ms.max(1)),
            body_timeout: Duration::from_millis(relay.body_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(relay.idle_timeout_ms.max(1)),
            shed: Arc::default(),
        }
    }

    /// These bounds count what they turn away into `shed` (the relay's stats).
    pub fn counting_into(mut self, shed: Arc<ShedCounts>) -> Self {
        self.shed = shed;
        self
    }

    /// Bytes currently buffered by requests in flight.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.budget_bytes - self.budget.available_permits()
    }

    async fn acquire(
        &self,
        bytes: usize,
        wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, BodyError> {
        if bytes == 0 {
            return Ok(None);
        }
        let n = u32::try_from(bytes).map_err(|_| BodyError::TooLarge(self.max_request_bytes))?;
        if bytes > self.budget_bytes {
            return Err(BodyError::TooLarge(self.max_request_bytes));
        }
        match tokio::time::timeout(wait, self.budget.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed; treat it as busy all the same.
            Ok(Err(_)) | Err(_) => {
                ShedCounts::add(&self.shed.busy);
                Err(BodyError::Busy)
            }
        }
    }

    /// Reads a whole body of at most `limit` bytes within the body timeout, counting every
    /// frame against the shared budget as it arrives (waiting for room, within the same
    /// deadline, when other requests hold it).
    pub async fn read_body<B>(&self, body: B, limit: usize) -> Result<BudgetedBody, BodyError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let read = self.read_body_within(body, limit).await;
        if matches!(read, Err(BodyError::TooLarge(_))) {
            // Not retried by the sender: this request is gone, so it is said at exit.
            ShedCounts::add(&self.shed.too_large);
        }
        read
    }

    async fn read_body_within<B>(&self, body: B, limit: usize) -> Result<BudgetedBody, BodyError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        let mut permit: Option<OwnedSemaphorePermit> = None;
        // A declared length (Content-Length) is reserved whole before anything is read, and
        // allocated once: what the budget counts is then exactly what the buffer holds, with
        // no growth by doubling.
        let mut reserved = 0;
        if let Some(declared) = body.size_hint().exact() {
            let declared = declared as usize;
            if declared > limit {
                return Err(BodyError::TooLarge(limit));
            }
            permit = self.acquire(declared, self.body_timeout).await?;
            buf = BytesMut::with_capacity(declared);
            reserved = declared;
        }
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    ShedCounts::add(&self.shed.slow_bodies);
                    return Err(BodyError::TooSlow(self.body_timeout));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if buf.len() + data.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            let unreserved = (buf.len() + data.len()).saturating_sub(reserved.max(buf.len()));
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(more) = self.acquire(unreserved, wait).await? {
                match &mut permit {
                    Some(held) => held.merge(more),
                    None => permit = Some(more),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(BudgetedBody {
            bytes: buf.freeze(),
            _permit: permit,
        })
    }
}

/// Which protocol a listener speaks; decides the answer to a connection over the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 and h2c, answered `503` with `Retry-After` past the connection cap.
    Http,
    /// gRPC (HTTP/2 only); past the cap the connection is closed, which gRPC clients treat as
    /// `UNAVAILABLE` and retry with back-off.
    Grpc,
}

/// Prepares an accepted socket: `TCP_NODELAY`, so small responses are not held back by Nagle's
/// algorithm waiting on the client's delayed ACK (what made a gRPC export take ~4× longer).
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
}

/// Tracks whether a connection has a request in progress, and since when it has not.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    idle_since_ms: AtomicU64,
    /// The client sent at least one byte: a connection that ends without one was never a
    /// request, however long it stayed open.
    received: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            received: AtomicBool::new(false),
        }
    }

    /// Counts a connection closed without a complete request: a slowloris (or stalled) client
    /// if it sent anything, an unused connection (not a sender turned away) if it sent nothing.
    fn count_unfinished(&self, shed: &ShedCounts) {
        if self.received.load(Ordering::Relaxed) {
            ShedCounts::add(&shed.stalled_connections);
        } else {
            ShedCounts::add(&shed.unused_connections);
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// When this connection must be closed unless a request starts first.
    fn idle_deadline(&self, bounds: &Bounds) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        let limit = if self.served.load(Ordering::SeqCst) == 0 {
            bounds.header_timeout
        } else {
            bounds.idle_timeout
        };
        Some(since + limit)
    }
}

struct InFlight(Arc<Activity>);

/// An accepted socket that notes in its [`Activity`] when the client first sends a byte, so a
/// connection that never did is told apart from a slow request.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && !this.activity.received.load(Ordering::Relaxed) {
            this.activity.received.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.served.fetch_add(1, Ordering::SeqCst);
        a.idle_since_ms
            .store(a.started.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections on `listener` and serves each with `service` under `bounds` until `stop`
/// is cancelled; then open connections are shut down gracefully (bounded wait).
pub async fn serve<S, RB>(
    listener: TcpListener,
    service: S,
    bounds: Bounds,
    wire: Wire,
    stop: CancellationToken,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<RB>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or a transient error: back off briefly instead of
                // spinning, and keep accepting (connections closing free descriptors).
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tune(&stream);
        let Ok(permit) = bounds.connections.clone().try_acquire_owned() else {
            ShedCounts::add(&bounds.shed.connections);
            if wire == Wire::Http {
                connections.spawn(refuse_http(stream));
            }
            continue;
        };
        connections.spawn(connection(
            stream,
            service.clone(),
            bounds.clone(),
            wire,
            stop.clone(),
            permit,
        ));
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Answers a connection over the cap with `503` and `Retry-After`, then closes it.
async fn refuse_http(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {RETRY_AFTER_SECS}\r\n\
         content-length: 0\r\nconnection: close\r\n\r\n"
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn connection<S, RB>(
    stream: TcpStream,
    service: S,
    bounds: Bounds,
    wire: Wire,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) where
    S: tower_service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<RB>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: http_body::Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let tracked = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let guard = activity.begin();
            let mut service = service.clone();
            async move {
                let response = service.call(req).await;
                drop(guard);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout);
    builder.http2().timer(TokioTimer::new());
    if wire == Wire::Grpc {
        builder = builder.http2_only();
    }
    let watched = Watched {
        stream,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(watched), tracked);
    let mut conn = std::pin::pin!(conn);
    let poll_every = bounds
        .header_timeout
        .min(bounds.idle_timeout)
        .min(Duration::from_secs(1));
    loop {
        let wake = match activity.idle_deadline(&bounds) {
            Some(at) => tokio::time::Instant::from_std(at),
            None => tokio::time::Instant::now() + poll_every,
        };
        tokio::select! {
            _ = conn.as_mut() => {
                // hyper's own header timeout may end it first: still a stalled client. One
                // that closed sooner (a port probe: connect, close) turned nothing away.
                if activity.served.load(Ordering::SeqCst) == 0
                    && activity.in_flight.load(Ordering::SeqCst) == 0
                    && activity.started.elapsed() >= bounds.header_timeout
                {
                    activity.count_unfinished(&bounds.shed);
                }
                return;
            }
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {
                if activity
                    .idle_deadline(&bounds)
                    .is_some_and(|at| Instant::now() >= at)
                {
                    // Idle after serving requests is a keep-alive ending; never getting a
                    // whole request in is a stalled (or slowloris) client turned away, or,
                    // without a byte sent, a connection its client never used.
                    if activity.served.load(Ordering::SeqCst) == 0 {
                        activity.count_unfinished(&bounds.shed);
                    }
                    break;
                }
            }
        }
    }
    // Idle, too slow, or the relay is stopping: GOAWAY / close after the response in progress,
    // and drop the connection outright if the client does not let go.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(budget: u64, body_ms: u64) -> Bounds {
        Bounds::from_settings(&RelaySettings {
            max_buffered_bytes: budget,
            max_request_bytes: 100,
            body_timeout_ms: body_ms,
            ..RelaySettings::default()
        })
    }

    /// The TCP_NODELAY option of this process's socket whose peer is `peer`, found among our
    /// own file descriptors (the accepted socket lives inside `serve`).
    fn nodelay_of_socket_with_peer(peer: std::net::SocketAddr) -> Option<bool> {
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // SAFETY: getpeername/getsockopt only read into the buffers given; a non-socket
            // fd makes them fail, which is skipped.
            unsafe {
                let mut addr: libc::sockaddr_in = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                if libc::getpeername(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) != 0
                    || addr.sin_family as i32 != libc::AF_INET
                    || u16::from_be(addr.sin_port) != peer.port()
                {
                    continue;
                }
                let mut on: libc::c_int = 0;
                let mut olen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &mut on as *mut _ as *mut libc::c_void,
                    &mut olen,
                );
                return Some(on != 0);
            }
        }
        None
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay_set_on_both_wires() {
        for wire in [Wire::Http, Wire::Grpc] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = CancellationToken::new();
            let service = tower_service_fn();
            let server = tokio::spawn(serve(
                listener,
                service,
                bounds(0, 1000),
                wire,
                stop.clone(),
            ));
            let client = TcpStream::connect(addr).await.unwrap();
            let me = client.local_addr().unwrap();
            let mut found = None;
            for _ in 0..100 {
                found = nodelay_of_socket_with_peer(me);
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                found,
                Some(true),
                "{wire:?}: accepted socket without TCP_NODELAY"
            );
            stop.cancel();
            drop(client);
            server.await.unwrap();
        }
    }

    /// A service that answers every request with an empty 200.
    fn tower_service_fn() -> axum::Router {
        axum::Router::new().fallback(|| async { "" })
    }

    #[tokio::test]
    async fn body_bytes_are_counted_until_the_body_is_dropped() {
        let b = bounds(0, 1000);
        let body = http_body_util::Full::new(Bytes::from(vec![7u8; 60]));
        let read = b.read_body(body, 100).await.unwrap();
        assert_eq!(read.bytes.len(), 60);
        assert_eq!(b.buffered_bytes(), 60);
        drop(read);
        assert_eq!(b.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn a_full_budget_answers_busy_within_the_body_timeout() {
        // The budget is raised to one largest request (100 + 16 bytes).
        let b = bounds(0, 50);
        let held = b
            .read_body(http_body_util::Full::new(Bytes::from(vec![0u8; 100])), 100)
            .await
            .unwrap();
        let second = b
            .read_body(http_body_util::Full::new(Bytes::from(vec![0u8; 50])), 100)
            .await;
        assert_eq!(second.err(), Some(BodyError::Busy));
        assert_eq!(b.shed.snapshot().busy, 1, "counted for the exit line");
        drop(held);
        let third = b
            .read_body(http_body_util::Full::new(Bytes::from(vec![0u8; 50])), 100)
            .await;
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn a_body_not_received_in_time_is_counted_as_slow() {
        let b = bounds(0, 50);
        let never = http_body_util::StreamBody::new(tokio_stream::pending::<
            Result<http_body::Frame<Bytes>, std::io::Error>,
        >());
        let r = b.read_body(never, 100).await;
        assert_eq!(r.err(), Some(BodyError::TooSlow(Duration::from_millis(50))));
        assert_eq!(b.shed.snapshot().slow_bodies, 1);
    }

    #[tokio::test]
    async fn connections_over_the_cap_and_silent_ones_are_counted_by_reason() {
        let b = Bounds::from_settings(&RelaySettings {
            max_connections: 1,
            header_timeout_ms: 200,
            ..RelaySettings::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            tower_service_fn(),
            b.clone(),
            Wire::Http,
            stop.clone(),
        ));
        use tokio::io::AsyncReadExt;
        // Holds the only connection without ever sending a request.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let mut answer = String::new();
        refused.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
            .await
            .expect("the silent connection is closed after the header timeout");
        assert!(closed.is_ok());
        let shed = b.shed.snapshot();
        assert_eq!(
            (shed.connections, shed.unused_connections),
            (1, 1),
            "{shed:?}"
        );
        stop.cancel();
        server.await.unwrap();
    }

    /// A relay serving HTTP under a 200 ms header timeout, with its bounds (for their counts).
    async fn short_header_timeout_server() -> (
        std::net::SocketAddr,
        Bounds,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let b = Bounds::from_settings(&RelaySettings {
            header_timeout_ms: 200,
            ..RelaySettings::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            tower_service_fn(),
            b.clone(),
            Wire::Http,
            stop.clone(),
        ));
        (addr, b, stop, server)
    }

    /// Reads until the server closes `stream`; panics if it stays open for 5 s.
    async fn closed_by_server(stream: &mut TcpStream) {
        use tokio::io::AsyncReadExt;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed by the server after the header timeout");
    }

    #[tokio::test]
    async fn a_probe_that_connects_and_closes_without_a_byte_is_not_counted() {
        let (addr, b, stop, server) = short_header_timeout_server().await;
        for _ in 0..3 {
            drop(TcpStream::connect(addr).await.unwrap());
        }
        // Past the header timeout, so a probe still counted as stalled would show.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(b.shed.snapshot(), Default::default(), "nothing counted");
        assert_eq!(b.shed.snapshot().sentence(&RelaySettings::default()), None);
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_and_counted_as_unused_not_shed() {
        let (addr, b, stop, server) = short_header_timeout_server().await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_by_server(&mut silent).await;
        let shed = b.shed.snapshot();
        assert_eq!(
            (shed.unused_connections, shed.stalled_connections),
            (1, 0),
            "{shed:?}"
        );
        assert_eq!(
            shed.sentence(&RelaySettings::default()),
            None,
            "no warning for a connection its client never used"
        );
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_slowloris_that_sent_part_of_a_head_is_closed_and_counted_as_stalled() {
        let (addr, b, stop, server) = short_header_timeout_server().await;
        for partial in [
            &b"POST /v1/logs HTTP/1.1\r\nhost: x"[..],
            b"P",
            b"PRI * HTTP/2.0\r\n",
        ] {
            let mut slow = TcpStream::connect(addr).await.unwrap();
            slow.write_all(partial).await.unwrap();
            closed_by_server(&mut slow).await;
        }
        let shed = b.shed.snapshot();
        assert_eq!(
            (shed.stalled_connections, shed.unused_connections),
            (3, 0),
            "{shed:?}"
        );
        assert!(
            shed.sentence(&RelaySettings::default())
                .is_some_and(|s| s.contains("3 connection(s) closed for sending no complete")),
            "{shed:?}"
        );
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_grpc_connection_that_sends_nothing_is_unused_and_a_partial_preface_is_stalled() {
        let b = Bounds::from_settings(&RelaySettings {
            header_timeout_ms: 200,
            ..RelaySettings::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            tower_service_fn(),
            b.clone(),
            Wire::Grpc,
            stop.clone(),
        ));
        drop(TcpStream::connect(addr).await.unwrap());
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closed_by_server(&mut silent).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        closed_by_server(&mut slow).await;
        let shed = b.shed.snapshot();
        assert_eq!(
            (shed.unused_connections, shed.stalled_connections),
            (1, 1),
            "{shed:?}"
        );
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_before_it_is_all_read() {
        let b = bounds(0, 1000);
        let r = b
            .read_body(http_body_util::Full::new(Bytes::from(vec![0u8; 101])), 100)
            .await;
        assert_eq!(r.err(), Some(BodyError::TooLarge(100)));
        assert_eq!(
            b.shed.snapshot().too_large,
            1,
            "counted: the sender does not retry it"
        );
        assert_eq!(b.buffered_bytes(), 0);
    }

    #[test]
    fn default_bounds_are_sane() {
        let d = RelaySettings::default();
        let b = Bounds::from_settings(&d);
        assert!(b.header_timeout <= Duration::from_secs(30));
        assert!(b.idle_timeout <= Duration::from_secs(60));
        assert!(
            b.body_timeout >= Duration::from_secs(10) && b.body_timeout <= Duration::from_secs(120)
        );
        // A few largest requests fit, and all of them together stay far below 150 MiB.
        assert!(b.budget_bytes >= 2 * d.max_request_bytes as usize);
        assert!(b.budget_bytes <= 96 * 1024 * 1024);
        assert!(d.max_connections >= 16 && d.max_connections <= 512);
    }
}
