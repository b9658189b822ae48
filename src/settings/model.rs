//! The settings model: every key a user can set, its type and its built-in default.
//!
//! Every struct denies unknown keys, so a typo in a file is an error naming the key rather than a
//! setting that silently does nothing.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// All settings, after layering. Sections mirror the TOML tables of the configuration files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub claude: ClaudeSettings,
    pub relay: RelaySettings,
    pub upstream: UpstreamSettings,
    pub export: ExportSettings,
    pub privacy: super::policy::PrivacySettings,
    pub cardinality: super::policy::CardinalitySettings,
    pub resource: super::policy::ResourceSettings,
    pub store: StoreSettings,
    /// `[stack]`: the local observability stack (compose, images, ports, run-path start).
    pub stack: super::stack::StackSettings,
    /// `[budget]`: daily / weekly / monthly spending limits (USD, local calendar periods).
    pub budget: super::budget::BudgetSettings,
}

impl Settings {
    /// The three policy sections as one value, the form the relay's policy compiles from.
    pub fn policy(&self) -> super::policy::PolicySettings {
        super::policy::PolicySettings {
            privacy: self.privacy.clone(),
            cardinality: self.cardinality.clone(),
            resource: self.resource.clone(),
        }
    }

    pub(super) fn set_policy(&mut self, policy: super::policy::PolicySettings) {
        self.privacy = policy.privacy;
        self.cardinality = policy.cardinality;
        self.resource = policy.resource;
    }
}

/// How to find and start the real `claude`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaudeSettings {
    /// Path of the real claude executable; empty means "search PATH, then the usual places".
    pub path: String,
    /// Extra environment variables for claude (not for the launcher itself).
    pub env: BTreeMap<String, String>,
}

/// The in-process OTLP relay that claude exports to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// OTLP/gRPC listen address; port 0 lets the OS choose a free port.
    pub grpc_listen: String,
    /// OTLP/HTTP listen address; port 0 lets the OS choose a free port.
    pub http_listen: String,
    /// Listening on a non-loopback address exposes telemetry to the network: opt-in only.
    pub allow_non_loopback: bool,
    /// Largest accepted request body, after decompression.
    pub max_request_bytes: u64,
    /// How long to keep delivering queued telemetry after claude exits.
    pub drain_timeout_ms: u64,
    /// Most requests held in memory waiting for the upstream; the oldest go first past it.
    pub max_queued_requests: u64,
    /// Most client connections open at once across both receivers; more are turned away
    /// (HTTP 503 + Retry-After, gRPC: closed, which clients retry as UNAVAILABLE).
    pub max_connections: u64,
    /// Bytes of request bodies buffered at once across all requests in flight; a request that
    /// finds no room waits for it within the body timeout, then gets 503 / UNAVAILABLE.
    pub max_buffered_bytes: u64,
    /// A new connection must send a complete request head within this (slowloris bound).
    pub header_timeout_ms: u64,
    /// A request body must arrive completely within this once its head is in.
    pub body_timeout_ms: u64,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            grpc_listen: "127.0.0.1:0".into(),
            http_listen: "127.0.0.1:0".into(),
            allow_non_loopback: false,
            max_request_bytes: 8 * 1024 * 1024,
            drain_timeout_ms: 3000,
            max_queued_requests: 10_000,
            max_connections: 256,
            max_buffered_bytes: 64 * 1024 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 30_000,
        }
    }
}

/// The OTLP wire protocol used towards the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Where the relay forwards telemetry: the local collector or any OTLP endpoint a team runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `false` (or an empty endpoint) keeps telemetry local only.
    pub enabled: bool,
    /// Base URL; `https://` uses TLS with the system's root certificates.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Sent with every export (e.g. an authorization header for a hosted gateway).
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout of one export to the upstream.
    pub timeout_ms: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            enabled: true,
            endpoint: "http://localhost:4317".into(),
            protocol: Protocol::Grpc,
            headers: BTreeMap::new(),
            timeout_ms: 10_000,
        }
    }
}

impl UpstreamSettings {
    /// Whether anything should be forwarded at all.
    pub fn is_active(&self) -> bool {
        self.enabled && !self.endpoint.trim().is_empty()
    }
}

/// How often claude exports; handed to claude as `OTEL_METRIC_EXPORT_INTERVAL` and friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSettings {
    pub metrics_interval_ms: u64,
    pub logs_interval_ms: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            metrics_interval_ms: 60_000,
            logs_interval_ms: 5_000,
        }
    }
}

/// The durable local store: the outbox that survives an upstream outage or a crash, and the
/// usage rows `report` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `false` keeps the outbox in memory only (lost with the process) and `report` empty.
    pub enabled: bool,
    /// SQLite file; empty means `store.db` in the data directory.
    pub path: String,
    /// Stored (compressed) bytes the outbox may hold; past it the oldest rows go, counted.
    pub max_bytes: u64,
    /// Undelivered rows older than this are dropped, counted.
    pub max_age_days: u64,
    /// How long a launcher owns the rows it is delivering; another launcher takes them over
    /// after a crash once this passes. Longer than `upstream.timeout_ms`.
    pub delivery_lease_ms: u64,
    /// Batches waiting for another upstream than this run's: `keep` leaves them for it,
    /// `follow` delivers them to this run's upstream (said at start).
    pub retarget: Retarget,
}

/// What a run does with waiting batches that were accepted for a different upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retarget {
    /// Leave them for the upstream they were meant for (a later run with it delivers them).
    #[default]
    Keep,
    /// Deliver them to this run's upstream.
    Follow,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            enabled: true,
            path: String::new(),
            max_bytes: 256 * 1024 * 1024,
            max_age_days: 30,
            delivery_lease_ms: 30_000,
            retarget: Retarget::Keep,
        }
    }
}
