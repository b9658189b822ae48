//! `[stack]` settings: whether and how `claude-telemetry` manages the local observability stack.
//!
//! Every field has a default, so an absent `[stack]` table means "manage the stack when Docker is
//! available, with the pinned images on the usual loopback ports". Unknown keys are errors so a
//! typo (`[stack] prot = …`) is reported instead of silently ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[stack]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackSettings {
    /// Start the stack on the run path when it is down. `None` (unset) means "yes when Docker is
    /// available"; `false` never touches Docker on the run path.
    pub manage: Option<bool>,
    /// The compose project name (container and volume name prefix).
    pub project_name: String,
    /// Where the compose and config files are written; defaults to the user data dir + `stack`.
    pub data_dir: Option<PathBuf>,
    /// Host ports, all bound to 127.0.0.1.
    pub ports: StackPorts,
    /// Image overrides (full `name:tag`); unset entries use the compose file's pinned images.
    pub images: StackImages,
    /// Seconds `up` waits for every service to answer its readiness endpoint.
    pub ready_timeout_secs: u64,
}

impl Default for StackSettings {
    fn default() -> Self {
        Self {
            manage: None,
            project_name: "claude-telemetry".to_string(),
            data_dir: None,
            ports: StackPorts::default(),
            images: StackImages::default(),
            ready_timeout_secs: 180,
        }
    }
}

impl StackSettings {
    /// These settings with `data_dir` defaulting to `<data_dir>/stack` (the launcher's data dir,
    /// which `CLAUDE_TELEMETRY_DATA_DIR` moves) when the user set none.
    pub fn with_default_data_dir(&self, data_dir: &std::path::Path) -> Self {
        let mut out = self.clone();
        if out.data_dir.is_none() {
            out.data_dir = Some(data_dir.join("stack"));
        }
        out
    }

    /// The directory holding `compose/` and `config/` for this user.
    ///
    /// `None` only when no home directory can be determined and no override is set.
    pub fn resolved_data_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Some(dir.clone());
        }
        directories::ProjectDirs::from("", "", "claude-telemetry")
            .map(|dirs| dirs.data_dir().join("stack"))
    }
}

/// Host ports of the stack (always bound to 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackPorts {
    /// Collector OTLP/gRPC.
    pub otlp_grpc: u16,
    /// Collector OTLP/HTTP.
    pub otlp_http: u16,
    /// Collector `health_check` extension.
    pub collector_health: u16,
    /// Prometheus web UI and API.
    pub prometheus: u16,
    /// Loki API.
    pub loki: u16,
    /// Grafana.
    pub grafana: u16,
}

impl Default for StackPorts {
    fn default() -> Self {
        Self {
            otlp_grpc: 4317,
            otlp_http: 4318,
            collector_health: 13133,
            prometheus: 9090,
            loki: 3100,
            grafana: 3000,
        }
    }
}

/// Image overrides; tests use them to substitute locally built stand-in images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackImages {
    /// Replaces `otel/opentelemetry-collector-contrib:<pinned>`.
    pub collector: Option<String>,
    /// Replaces `prom/prometheus:<pinned>`.
    pub prometheus: Option<String>,
    /// Replaces `grafana/loki:<pinned>`.
    pub loki: Option<String>,
    /// Replaces `grafana/grafana:<pinned>`.
    pub grafana: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Root {
        #[serde(default)]
        stack: StackSettings,
    }

    #[test]
    fn absent_table_gives_defaults() {
        let root: Root = toml::from_str("").expect("empty toml parses");
        assert_eq!(root.stack, StackSettings::default());
        assert_eq!(root.stack.manage, None);
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let root: Root = toml::from_str(
            "[stack]\nmanage = false\n[stack.ports]\ngrafana = 3300\n[stack.images]\nloki = \"local/loki:test\"\n",
        )
        .expect("valid stack table");
        assert_eq!(root.stack.manage, Some(false));
        assert_eq!(root.stack.ports.grafana, 3300);
        assert_eq!(root.stack.ports.prometheus, 9090);
        assert_eq!(root.stack.images.loki.as_deref(), Some("local/loki:test"));
        assert_eq!(root.stack.images.grafana, None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Root>("[stack.ports]\ngrafna = 1\n").err();
        assert!(err.is_some_and(|e| e.to_string().contains("grafna")));
    }
}
