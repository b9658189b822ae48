//! Checks beyond types (addresses, URLs, policy rules) and the administrator's managed policy
//! file, each error located in the layer that set the key.

use super::error::{key_at, line_col, unknown_field_suggestion};
use super::{Settings, SettingsError, Source, policy};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the administrator's policy lives unless `CLAUDE_TELEMETRY_POLICY_FILE` says otherwise.
pub const MANAGED_POLICY_FILE: &str = "/etc/claude-telemetry/policy.toml";

/// The managed policy file, validated; `None` when there is none.
pub(super) fn load_managed(
    env: &BTreeMap<String, String>,
) -> Result<Option<(PathBuf, policy::ManagedPolicy)>, SettingsError> {
    let path = env
        .get("CLAUDE_TELEMETRY_POLICY_FILE")
        .map_or_else(|| PathBuf::from(MANAGED_POLICY_FILE), PathBuf::from);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SettingsError {
                location: path.display().to_string(),
                key: String::new(),
                message: format!("cannot read the managed policy: {e}"),
                suggestion: None,
            });
        }
    };
    let origin = path.display().to_string();
    let managed: policy::ManagedPolicy = toml::from_str(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, col) = line_col(&text, offset);
        let message = e.message().trim().to_string();
        SettingsError {
            location: format!("{origin}:{line}:{col}"),
            key: key_at(&text, offset),
            suggestion: unknown_field_suggestion(&message),
            message,
        }
    })?;
    if let Some(issue) = managed.validate().into_iter().next() {
        return Err(locate_issue(&issue, &text, &origin));
    }
    Ok(Some((path, managed)))
}

/// Policy checks beyond types (regexes, refused keys), located in the layer that set the key.
pub(super) fn validate_policy(
    policy: &policy::PolicySettings,
    provenance: &BTreeMap<String, Source>,
) -> Result<(), SettingsError> {
    match policy.validate().into_iter().next() {
        Some(issue) => Err(locate_in_layer(&issue, provenance)),
        None => Ok(()),
    }
}

/// `[budget]` amounts (above zero, finite), located like the policy checks.
pub(super) fn validate_budget(
    budget: &super::budget::BudgetSettings,
    provenance: &BTreeMap<String, Source>,
) -> Result<(), SettingsError> {
    match budget.validate().into_iter().next() {
        Some(issue) => Err(locate_in_layer(&issue, provenance)),
        None => Ok(()),
    }
}

/// The error for `issue` at `file:line:col` of the file that set its key, else naming the
/// variable or flag.
fn locate_in_layer(
    issue: &policy::PolicyIssue,
    provenance: &BTreeMap<String, Source>,
) -> SettingsError {
    let base = base_key(&issue.key);
    let source = provenance.get(&base).cloned().unwrap_or(Source::Default);
    let file = match &source {
        Source::UserFile(p) | Source::ProjectFile(p) => Some(p.clone()),
        _ => None,
    };
    if let Some(path) = file
        && let Ok(text) = std::fs::read_to_string(&path)
    {
        return locate_issue(issue, &text, &path.display().to_string());
    }
    SettingsError {
        location: source.to_string(),
        key: issue.key.clone(),
        message: issue.message.clone(),
        suggestion: None,
    }
}

/// `privacy.redact[2]` → `privacy.redact`; `resource.attributes."team.id"` → the table key.
fn base_key(key: &str) -> String {
    let without_index = key.split('[').next().unwrap_or(key);
    match without_index.split_once(".\"") {
        Some((table, _)) => table.to_string(),
        None => without_index.to_string(),
    }
}

/// Finds the line of `issue.key` in a TOML text (its `[section]` and the key's line).
fn locate_issue(issue: &policy::PolicyIssue, text: &str, origin: &str) -> SettingsError {
    let base = base_key(&issue.key);
    let (section, key) = base.rsplit_once('.').unwrap_or(("", base.as_str()));
    let mut current = String::new();
    let mut offset = 0;
    let mut found = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            current = trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        } else if current == section && trimmed.split('=').next().map(str::trim) == Some(key) {
            found = Some(offset + (line.len() - line.trim_start().len()));
            break;
        }
        offset += line.len();
    }
    let location = match found {
        Some(at) => {
            let (line, col) = line_col(text, at);
            format!("{origin}:{line}:{col}")
        }
        None => origin.to_string(),
    };
    SettingsError {
        location,
        key: issue.key.clone(),
        message: issue.message.clone(),
        suggestion: None,
    }
}

/// Checks that go beyond types: addresses, URLs and combinations.
pub(super) fn validate(
    settings: &Settings,
    provenance: &BTreeMap<String, Source>,
) -> Result<(), SettingsError> {
    let located = |key: &str, message: String| SettingsError {
        location: provenance
            .get(key)
            .map_or_else(|| "settings".to_string(), ToString::to_string),
        key: key.to_string(),
        message,
        suggestion: None,
    };
    for (key, addr) in [
        ("relay.grpc_listen", &settings.relay.grpc_listen),
        ("relay.http_listen", &settings.relay.http_listen),
    ] {
        let parsed: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| located(key, format!("`{addr}` is not an address like 127.0.0.1:0")))?;
        if !parsed.ip().is_loopback() && !settings.relay.allow_non_loopback {
            return Err(located(
                key,
                format!(
                    "`{addr}` is not a loopback address; telemetry would be exposed to the network \
                     (set relay.allow_non_loopback = true if you really want that)"
                ),
            ));
        }
    }
    if settings.upstream.is_active() {
        let endpoint = &settings.upstream.endpoint;
        let ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !ok {
            return Err(located(
                "upstream.endpoint",
                format!("`{endpoint}` must start with http:// or https://"),
            ));
        }
    }
    if settings.export.metrics_interval_ms < 100 || settings.export.logs_interval_ms < 100 {
        return Err(located(
            "export.metrics_interval_ms",
            "export intervals must be at least 100 ms".into(),
        ));
    }
    Ok(())
}
