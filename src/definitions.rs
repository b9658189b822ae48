//! Metric names, label names and derived figures, in one place.
//!
//! The Grafana dashboards are JSON and cannot import Rust, so their tests (and `validate`)
//! read the names from here and reject any query that uses a name not listed: renaming a
//! metric here without updating the dashboards (or the other way round) fails a test instead
//! of silently showing an empty panel. `report` uses the same names and formulas, so the
//! terminal and the dashboards agree on what "cache efficiency" means.

// Not every name is used by the binary yet: the dashboards' tests and `report` read them.
#![allow(dead_code)]

/// Prometheus metric names exactly as the collector's `prometheusremotewrite` exporter writes
/// Claude Code's DELTA sums after `convert_sum_to_gauge` (config/otel-collector.yaml): each
/// sample is the increment of one export, so totals are `sum_over_time(x[$__range])`. Gauges
/// get the unit suffix but no `_total` (prometheus/otlptranslator `normalizeName`), which is
/// why `claude_code.active_time.total` keeps its `total` token before `seconds`.
pub mod metric {
    /// `claude_code.session.count`: 1 per session start (label `start_type`).
    pub const SESSION_COUNT: &str = "claude_code_session_count";
    /// `claude_code.cost.usage` in USD (label `model`).
    pub const COST_USAGE: &str = "claude_code_cost_usage_USD";
    /// `claude_code.token.usage` (labels `type`, `model`).
    pub const TOKEN_USAGE: &str = "claude_code_token_usage_tokens";
    /// `claude_code.lines_of_code.count` (label `type`: added/removed).
    pub const LINES_OF_CODE: &str = "claude_code_lines_of_code_count";
    /// `claude_code.commit.count`.
    pub const COMMIT_COUNT: &str = "claude_code_commit_count";
    /// `claude_code.pull_request.count`.
    pub const PULL_REQUEST_COUNT: &str = "claude_code_pull_request_count";
    /// `claude_code.code_edit_tool.decision` (labels `tool_name`, `decision`, `source`, `language`).
    pub const CODE_EDIT_TOOL_DECISION: &str = "claude_code_code_edit_tool_decision";
    /// `claude_code.active_time.total` in seconds (label `type`: cli/user).
    pub const ACTIVE_TIME: &str = "claude_code_active_time_total_seconds";
    /// `claude_code.rate_limit.used_percent` (0-100, label `window`): a true gauge, one sample
    /// per status-line refresh (`claude-telemetry statusline`), so the latest value counts,
    /// never a sum. No unit, hence no suffix.
    pub const RATE_LIMIT_USED_PERCENT: &str = "claude_code_rate_limit_used_percent";
    /// `claude_code.rate_limit.resets_at` (unit `s`, so `_seconds`): when the sampled window
    /// resets, Unix seconds; a sample whose reset is past describes a window that is over.
    pub const RATE_LIMIT_RESETS_AT: &str = "claude_code_rate_limit_resets_at_seconds";

    /// Every metric the dashboards may query.
    pub const ALL: &[&str] = &[
        SESSION_COUNT,
        COST_USAGE,
        TOKEN_USAGE,
        LINES_OF_CODE,
        COMMIT_COUNT,
        PULL_REQUEST_COUNT,
        CODE_EDIT_TOOL_DECISION,
        ACTIVE_TIME,
        RATE_LIMIT_USED_PERCENT,
        RATE_LIMIT_RESETS_AT,
    ];
}

/// Prometheus label names (OTel attribute names with dots turned into underscores).
pub mod label {
    /// `session.id`: one fresh UUID per claude process; every series is per session.
    pub const SESSION_ID: &str = "session_id";
    /// `user.id`: stable per HOME (pseudonymised by the relay when configured).
    pub const USER_ID: &str = "user_id";
    /// `model`, with a context suffix on metrics (`claude-opus-4-8[1m]`).
    pub const MODEL: &str = "model";
    /// `type`: token type, lines added/removed, or active-time cli/user.
    pub const TYPE: &str = "type";
    /// `team.id` resource attribute added by the relay.
    pub const TEAM_ID: &str = "team_id";
    /// `department` resource attribute added by the relay.
    pub const DEPARTMENT: &str = "department";
    /// `project.name` resource attribute stamped by the relay.
    pub const PROJECT: &str = "project_name";
    /// Edit tool name on decisions and tool results.
    pub const TOOL_NAME: &str = "tool_name";
    /// `accept` / `reject` on edit-tool decisions.
    pub const DECISION: &str = "decision";
    /// File language on edit-tool decisions.
    pub const LANGUAGE: &str = "language";
    /// Where a decision came from (config, user, …).
    pub const SOURCE: &str = "source";
    /// `start_type` on session counts (fresh, resume, …).
    pub const START_TYPE: &str = "start_type";
    /// `terminal.type`.
    pub const TERMINAL_TYPE: &str = "terminal_type";
    /// `query_source`: main or auxiliary model calls.
    pub const QUERY_SOURCE: &str = "query_source";
    /// Prometheus `job` (from `service.name`, set by the remote-write exporter).
    pub const JOB: &str = "job";
    /// The plan's usage-limit window on the rate-limit gauges (`five_hour`, `seven_day`, …).
    pub const WINDOW: &str = "window";

    /// Every label the dashboards may group or filter by.
    pub const ALL: &[&str] = &[
        SESSION_ID,
        USER_ID,
        MODEL,
        TYPE,
        TEAM_ID,
        DEPARTMENT,
        PROJECT,
        TOOL_NAME,
        DECISION,
        LANGUAGE,
        SOURCE,
        START_TYPE,
        TERMINAL_TYPE,
        QUERY_SOURCE,
        JOB,
        WINDOW,
    ];
}

/// Values of the `type` label on [`metric::TOKEN_USAGE`].
pub mod token_type {
    /// Fresh input tokens.
    pub const INPUT: &str = "input";
    /// Output tokens.
    pub const OUTPUT: &str = "output";
    /// Input tokens served from the prompt cache.
    pub const CACHE_READ: &str = "cacheRead";
    /// Input tokens written to the prompt cache.
    pub const CACHE_CREATION: &str = "cacheCreation";
    /// All token types.
    pub const ALL: &[&str] = &[INPUT, OUTPUT, CACHE_READ, CACHE_CREATION];
}

/// Values of the `type` label on [`metric::ACTIVE_TIME`].
pub mod active_time_type {
    /// Time Claude Code itself was working.
    pub const CLI: &str = "cli";
    /// Time the user was interacting.
    pub const USER: &str = "user";
}

/// Values of the `type` label on [`metric::LINES_OF_CODE`].
pub mod lines_type {
    /// Lines added.
    pub const ADDED: &str = "added";
    /// Lines removed.
    pub const REMOVED: &str = "removed";
}

/// Loki: how Claude Code's events look after native OTLP ingestion.
pub mod loki {
    /// The only index label: `service_name` from the resource's `service.name`
    /// (config/loki.yaml `otlp_config` ignores Loki's default index labels).
    pub const SERVICE_LABEL: &str = "service_name";
    /// Claude Code's `service.name`.
    pub const SERVICE_NAME: &str = "claude-code";
    /// Structured-metadata field carrying the event name (`event.name`).
    pub const EVENT_NAME_FIELD: &str = "event_name";
    /// Event names (the part after `claude_code.`) the dashboards may select.
    pub const EVENTS: &[&str] = &[
        "user_prompt",
        "api_request",
        "assistant_response",
        "api_error",
        "api_retries_exhausted",
        "tool_decision",
        "tool_result",
    ];
    /// Structured-metadata fields the dashboards may filter, group or unwrap by.
    pub const FIELDS: &[&str] = &[
        "event_name",
        "session_id",
        "user_id",
        "model",
        "team_id",
        "department",
        "project_name",
        "tool_name",
        "success",
        "status_code",
        "decision",
        "duration_ms",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "prompt_length",
        "error",
        "attempt",
        "service_instance_id",
    ];
    /// Resource attributes that Loki 3.7 makes index labels unless told otherwise
    /// (`distributor.otlp.default_resource_attributes_as_index_labels`, grafana/loki
    /// pkg/loghttp/push/otlp_config.go); the launch id `service.instance.id` is one of them.
    pub const DEFAULT_INDEX_RESOURCE_ATTRIBUTES: &[&str] = &[
        "service.name",
        "service.namespace",
        "service.instance.id",
        "deployment.environment",
        "deployment.environment.name",
        "cloud.region",
        "cloud.availability_zone",
        "k8s.cluster.name",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.container.name",
        "container.name",
        "k8s.replicaset.name",
        "k8s.deployment.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.cronjob.name",
        "k8s.job.name",
    ];
}

/// Grafana datasource uids provisioned by `config/grafana/provisioning/datasources`.
pub mod datasource {
    /// The Prometheus datasource.
    pub const PROMETHEUS_UID: &str = "prometheus";
    /// The Loki datasource.
    pub const LOKI_UID: &str = "loki";
    /// Every uid a dashboard may reference.
    pub const ALL: &[&str] = &[PROMETHEUS_UID, LOKI_UID];
}

/// Share of prompt input served from the cache:
/// `cacheRead / (cacheRead + input + cacheCreation)`; `None` when there was no input at all.
///
/// Output tokens are not input and do not count. The dashboards' cache-efficiency gauge uses
/// exactly this ratio of token totals.
pub fn cache_efficiency(input: f64, cache_read: f64, cache_creation: f64) -> Option<f64> {
    let denominator = cache_read + input + cache_creation;
    (denominator > 0.0).then(|| cache_read / denominator)
}

/// Cost per 1,000 output tokens; `None` without output tokens.
pub fn cost_per_1k_output_tokens(cost_usd: f64, output_tokens: f64) -> Option<f64> {
    (output_tokens > 0.0).then(|| cost_usd / (output_tokens / 1000.0))
}

/// Productivity ratio: seconds Claude Code worked per second of user interaction
/// (`cli / user` active time); `None` without user time.
pub fn productivity_ratio(cli_seconds: f64, user_seconds: f64) -> Option<f64> {
    (user_seconds > 0.0).then(|| cli_seconds / user_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_efficiency_ignores_output_and_handles_no_input() {
        assert_eq!(cache_efficiency(0.0, 0.0, 0.0), None);
        let e = cache_efficiency(100.0, 800.0, 100.0).expect("some input");
        assert!((e - 0.8).abs() < 1e-12);
    }

    #[test]
    fn derived_ratios_are_none_without_a_denominator() {
        assert_eq!(cost_per_1k_output_tokens(1.0, 0.0), None);
        assert_eq!(productivity_ratio(10.0, 0.0), None);
        assert_eq!(cost_per_1k_output_tokens(3.0, 2000.0), Some(1.5));
        assert_eq!(productivity_ratio(30.0, 10.0), Some(3.0));
    }

    #[test]
    fn metric_and_label_lists_have_no_duplicates() {
        for list in [metric::ALL, label::ALL, token_type::ALL, loki::FIELDS] {
            let mut sorted = list.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), list.len());
        }
    }
}
