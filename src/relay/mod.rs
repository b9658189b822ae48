//! The in-process OTLP relay, read as its pipeline: receive → policy → outbox → forward.
//!
//! Claude exports to [`receive`]; each request passes the policy (where the relay-policy rules
//! slot in) and lands in the [`outbox`] before claude gets its acknowledgement, so claude never
//! waits on the upstream; [`forward`] delivers from the outbox with retries and backoff.

pub mod forward;
pub mod outbox;
pub mod policy;
pub mod receive;
mod rpc;
pub mod split;
pub mod stats;

use crate::otlp::ExportRequest;
use crate::settings::{RelaySettings, UpstreamSettings};
use forward::{Forwarder, Upstream};
use outbox::Outbox;
use stats::RelayStats;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The single entry of the pipeline after decoding: both receivers hand every request here.
#[derive(Clone)]
pub struct Intake {
    policy: Arc<policy::Policy>,
    outbox: Arc<Outbox>,
    stats: Arc<RelayStats>,
}

impl Intake {
    /// Accepts one decoded request: applies policy and queues it for delivery. Returns once the
    /// request is safe in the outbox, which is when claude is acknowledged; an error means it
    /// was kept nowhere, and the receiver answers with the protocol's retryable error.
    pub async fn accept(&self, mut request: ExportRequest) -> Result<(), outbox::OutboxError> {
        self.stats.record_received(&request);
        let withheld = self.policy.apply(&mut request);
        if !withheld.is_empty() {
            self.stats.record_withheld(withheld);
        }
        self.outbox.push(request).await.inspect_err(|_| {
            self.stats
                .refused_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }
}

/// Seconds claude is told to wait before sending again a request nothing could keep (the
/// store failed): longer than the load-shedding delay, as a full disk does not pass at once.
pub const REFUSED_RETRY_AFTER_SECS: u64 = 5;

/// Failure to start the relay; claude is still started without it (telemetry degrades, the
/// session does not).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// A running relay: where it listens, and how to stop it.
pub struct RelayHandle {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Why the upstream could not be set up, when it could not (nothing is forwarded then).
    pub upstream_problem: Option<String>,
    pub stats: Arc<RelayStats>,
    /// The pipeline's entry, for telemetry the launcher itself produces (budget gauges).
    pub intake: Intake,
    outbox: Arc<Outbox>,
    stop_receiving: CancellationToken,
    stop_forwarding: CancellationToken,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// How long a send in flight at the drain deadline may still take to answer.
    grace: Duration,
}

/// The longest a send in flight at the drain deadline is waited for (or `upstream.timeout_ms`
/// when shorter): its answer decides whether the row is settled or given back, so a run that
/// does not crash never leaves a row both delivered and waiting.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(2);

/// What happened to the telemetry of a run, for the exit summary and `doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Requests still undelivered when the drain ended.
    pub undelivered_requests: u64,
    /// Their items (known for the memory outbox only).
    pub undelivered_items: u64,
    /// The undelivered requests are safe in the local store for a later launch.
    pub kept: bool,
    /// Requests dropped while the run went on because the in-memory bound was reached.
    pub dropped_for_space: u64,
    /// Of the undelivered requests, those held only in memory (lost with this process).
    pub undelivered_in_memory: u64,
    /// The store failed during the run: what happened and where the requests went.
    pub store_failure: Option<outbox::StoreFailure>,
}

/// Binds both listeners (so "address in use" fails before claude starts), then serves.
pub async fn start(
    relay: &RelaySettings,
    upstream: &UpstreamSettings,
    policy: Arc<policy::Policy>,
    outbox: Outbox,
) -> Result<RelayHandle, RelayError> {
    let grpc_listener = bind(&relay.grpc_listen, "OTLP/gRPC").await?;
    let http_listener = bind(&relay.http_listen, "OTLP/HTTP").await?;
    let grpc_addr = local_addr(&grpc_listener, &relay.grpc_listen, "OTLP/gRPC")?;
    let http_addr = local_addr(&http_listener, &relay.http_listen, "OTLP/HTTP")?;

    let stats = Arc::new(RelayStats::default());
    let outbox = Arc::new(outbox);
    let intake = Intake {
        policy,
        outbox: outbox.clone(),
        stats: stats.clone(),
    };
    let stop_receiving = CancellationToken::new();
    let stop_forwarding = CancellationToken::new();
    // One set of bounds for both receivers: the connection cap and the byte budget are the
    // launcher's, not each port's.
    let bounds = receive::bounds::Bounds::from_settings(relay).counting_into(stats.shed.clone());
    let receivers = vec![
        tokio::spawn(receive::grpc::serve(
            grpc_listener,
            intake.clone(),
            bounds.clone(),
            stop_receiving.clone(),
        )),
        tokio::spawn(receive::http::serve(
            http_listener,
            intake.clone(),
            bounds,
            stop_receiving.clone(),
        )),
    ];
    // An upstream that cannot even be set up (bad URL, no usable root certificates) does not
    // stop the relay: requests still reach the outbox, and a later run with a working upstream
    // delivers what the store kept.
    let mut upstream_problem = None;
    let grace = IN_FLIGHT_GRACE.min(Duration::from_millis(upstream.timeout_ms.max(1)));
    let forwarder = if upstream.is_active() {
        match Upstream::connect(upstream) {
            Ok(upstream) => {
                let forwarder = Forwarder::new(outbox.clone(), upstream, stats.clone(), grace);
                Some(tokio::spawn(forwarder.run(stop_forwarding.clone())))
            }
            Err(e) => {
                stats.record_error(e.to_string());
                upstream_problem = Some(e.to_string());
                outbox.without_forwarder();
                None
            }
        }
    } else {
        None
    };
    Ok(RelayHandle {
        grpc_addr,
        http_addr,
        upstream_problem,
        stats,
        intake,
        outbox,
        stop_receiving,
        stop_forwarding,
        receivers,
        forwarder,
        grace,
    })
}

impl RelayHandle {
    /// Nothing can keep what claude would send: no store (a memory outbox) and nothing that
    /// delivers from it (local-only, or the upstream could not be set up). Acknowledging claude
    /// then would be a success for data that is gone, so the launcher does not run such a
    /// relay.
    pub fn keeps_nothing(&self) -> bool {
        self.forwarder.is_none() && !self.outbox.is_durable()
    }

    /// Ordered shutdown: stop receiving, deliver what is queued until `deadline`, then stop.
    pub async fn shutdown(mut self, deadline: Duration) -> DrainReport {
        self.stop_receiving.cancel();
        for receiver in self.receivers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(500), receiver).await;
        }
        self.outbox.close();
        if let Some(mut forwarder) = self.forwarder.take()
            && tokio::time::timeout(deadline, &mut forwarder)
                .await
                .is_err()
        {
            // Out of time: nothing new is sent, the send in flight gets the grace to answer,
            // and claimed rows are given back (see `Forwarder::run`).
            self.stop_forwarding.cancel();
            let _ = tokio::time::timeout(self.grace + Duration::from_secs(1), forwarder).await;
        }
        let remaining = self.outbox.remaining().await;
        let report = DrainReport {
            undelivered_requests: remaining.requests,
            undelivered_items: remaining.items,
            kept: remaining.kept,
            dropped_for_space: self.outbox.dropped().await,
            undelivered_in_memory: remaining.in_memory,
            store_failure: self.outbox.store_failure(),
        };
        self.outbox.shut().await;
        report
    }
}

async fn bind(addr: &str, what: &'static str) -> Result<tokio::net::TcpListener, RelayError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })
}

fn local_addr(
    listener: &tokio::net::TcpListener,
    addr: &str,
    what: &'static str,
) -> Result<SocketAddr, RelayError> {
    listener.local_addr().map_err(|source| RelayError::Bind {
        what,
        addr: addr.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
