//! The local observability stack (OTel collector, Prometheus, Loki, Grafana) run by Docker.
//!
//! The compose file is the single source of truth for what runs; this module writes it (and
//! the configs it mounts) to the data dir, drives `docker compose` to start and stop it, and
//! asks the Docker API (bollard) and each service's HTTP readiness endpoint how it is doing.

pub mod background;
pub mod commands;
pub mod compose;
pub mod docker;
pub mod files;
pub mod readiness;
pub mod validate;

// Re-exported for src/cli.rs and the launcher (`StackNotice` is used on the run path).
#[allow(unused_imports)]
pub use commands::{
    CleanArgs, CompletionsArgs, DownArgs, LogsArgs, RestartArgs, SetupArgs, StackNotice,
    StatusArgs, UpArgs, ValidateArgs, ensure_started_in_background, run_clean, run_completions,
    run_down, run_logs, run_restart, run_setup, run_status, run_up, run_validate,
};

use crate::settings::stack::StackPorts;

/// One service of the compose file, with what `status` and `up` need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The compose service name.
    pub name: &'static str,
    /// Path answering 2xx once the service is ready.
    pub ready_path: &'static str,
    /// Path a person opens in a browser (or the endpoint clients use).
    pub url_path: &'static str,
    /// The host port (from settings) that maps to the readiness endpoint.
    pub host_port: fn(&StackPorts) -> u16,
}

impl Service {
    /// The readiness URL on the host.
    pub fn ready_url(&self, ports: &StackPorts) -> String {
        format!(
            "http://127.0.0.1:{}{}",
            (self.host_port)(ports),
            self.ready_path
        )
    }

    /// The URL shown to the user.
    pub fn url(&self, ports: &StackPorts) -> String {
        match self.name {
            "otel-collector" => format!(
                "http://127.0.0.1:{} (OTLP/HTTP), 127.0.0.1:{} (OTLP/gRPC)",
                ports.otlp_http, ports.otlp_grpc
            ),
            _ => format!(
                "http://127.0.0.1:{}{}",
                (self.host_port)(ports),
                self.url_path
            ),
        }
    }
}

/// The four services, in start-up order.
pub const SERVICES: [Service; 4] = [
    Service {
        name: "otel-collector",
        ready_path: "/",
        url_path: "",
        host_port: |p| p.collector_health,
    },
    Service {
        name: "prometheus",
        ready_path: "/-/ready",
        url_path: "",
        host_port: |p| p.prometheus,
    },
    Service {
        name: "loki",
        ready_path: "/ready",
        url_path: "",
        host_port: |p| p.loki,
    },
    Service {
        name: "grafana",
        ready_path: "/api/health",
        url_path: "/d/claude-code-overview",
        host_port: |p| p.grafana,
    },
];

/// Whether `endpoint` (the relay's upstream) is this stack's collector: a loopback host on one
/// of the stack's OTLP ports. Only then does the run path start the stack; a team collector
/// elsewhere is none of its business.
pub fn is_local_collector(endpoint: &str, ports: &StackPorts) -> bool {
    let rest = endpoint
        .trim()
        .strip_prefix("http://")
        .or_else(|| endpoint.trim().strip_prefix("https://"))
        .unwrap_or(endpoint.trim());
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    let port: Option<u16> = port.parse().ok();
    loopback && (port == Some(ports.otlp_grpc) || port == Some(ports.otlp_http))
}

/// Looks a service up by its compose name.
pub fn service(name: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_collector_is_a_loopback_host_on_a_stack_port() {
        let ports = StackPorts::default();
        assert!(is_local_collector("http://localhost:4317", &ports));
        assert!(is_local_collector("http://127.0.0.1:4318/", &ports));
        assert!(is_local_collector("[::1]:4317", &ports));
        assert!(!is_local_collector("https://otel.example.com:4317", &ports));
        assert!(!is_local_collector("http://localhost:9999", &ports));
        assert!(!is_local_collector("http://localhost", &ports));
    }
}
