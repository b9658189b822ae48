//! Layered settings: built-in defaults < user file < project file < environment < flags.
//!
//! Each layer is validated on its own, so an error names the file, line and column (or the
//! variable, or the flag) it came from. The merged result remembers which layer set each value,
//! which `claude-telemetry config` prints.

mod error;
mod model;
mod paths;
pub mod policy;
pub mod stack;

pub use error::SettingsError;
pub use model::*;
pub use paths::Paths;

use error::{key_at, line_col, unknown_field_suggestion};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Prefix of the environment variables that set settings (`CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT`).
pub const ENV_PREFIX: &str = "CLAUDE_TELEMETRY_";

/// Variables under [`ENV_PREFIX`] that are not settings keys.
const RESERVED_ENV: &[&str] = &[
    "CONFIG_DIR",
    "DATA_DIR",
    "POLICY_FILE",
    "LAUNCHER_PID",
    "OTLP_HTTP_ENDPOINT",
];

/// Where a value came from, in increasing precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    UserFile(PathBuf),
    ProjectFile(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::UserFile(p) => write!(f, "user file {}", p.display()),
            Source::ProjectFile(p) => write!(f, "project file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// One settings layer before merging: a TOML table and where it came from.
#[derive(Debug, Clone)]
pub struct Layer {
    pub source: Source,
    pub table: Table,
}

/// The administrator's policy file and what it changed.
#[derive(Debug, Clone)]
pub struct Managed {
    pub path: PathBuf,
    /// Dotted keys the file locks.
    pub locked: Vec<String>,
    /// User or project values that tried to loosen a locked key (the locked value applies).
    pub loosening: Vec<policy::LooseningAttempt>,
}

/// The effective settings and the provenance of every leaf value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    /// The managed policy, when the administrator installed one.
    pub managed: Option<Managed>,
    /// Dotted key → the layer that set it last.
    pub provenance: BTreeMap<String, Source>,
    /// Files consulted, in precedence order, with whether they exist.
    pub files: Vec<(Source, bool)>,
    pub paths: Paths,
}

/// A `key=value` override from the command line (`run --set upstream.timeout_ms=500`).
#[derive(Debug, Clone, PartialEq)]
pub struct FlagOverride {
    /// How the user spelled it, for messages.
    pub flag: String,
    pub key: String,
    pub value: String,
}

/// Loads every layer for the given working directory, environment and flags.
pub fn load(
    cwd: &Path,
    env: &BTreeMap<String, String>,
    flags: &[FlagOverride],
) -> Result<Loaded, SettingsError> {
    let paths = Paths::resolve(env);
    let mut layers = Vec::new();
    let mut files = Vec::new();

    let user_file = paths.user_config_file();
    files.push((Source::UserFile(user_file.clone()), user_file.is_file()));
    if user_file.is_file() {
        layers.push(file_layer(&user_file, Source::UserFile(user_file.clone()))?);
    }
    if let Some(project_file) = find_project_file(cwd) {
        files.push((Source::ProjectFile(project_file.clone()), true));
        layers.push(file_layer(
            &project_file,
            Source::ProjectFile(project_file.clone()),
        )?);
    }
    layers.extend(env_layers(env)?);
    for flag in flags {
        layers.push(flag_layer(flag)?);
    }
    let (mut settings, provenance) = merge(&layers)?;
    validate(&settings, &provenance)?;
    validate_policy(&settings.policy(), &provenance)?;
    let managed = match load_managed(env)? {
        Some((path, policy_file)) => {
            let user_set = |key: &str| {
                provenance
                    .get(key)
                    .is_some_and(|source| *source != Source::Default)
            };
            let merged = policy::merge_managed(&policy_file, &settings.policy(), &user_set);
            settings.set_policy(merged.effective);
            Some(Managed {
                path,
                locked: policy_file.locked_keys(),
                loosening: merged.loosening,
            })
        }
        None => None,
    };
    Ok(Loaded {
        settings,
        managed,
        provenance,
        files,
        paths,
    })
}

/// Where the administrator's policy lives unless `CLAUDE_TELEMETRY_POLICY_FILE` says otherwise.
pub const MANAGED_POLICY_FILE: &str = "/etc/claude-telemetry/policy.toml";

/// The managed policy file, validated; `None` when there is none.
fn load_managed(
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
fn validate_policy(
    policy: &policy::PolicySettings,
    provenance: &BTreeMap<String, Source>,
) -> Result<(), SettingsError> {
    let Some(issue) = policy.validate().into_iter().next() else {
        return Ok(());
    };
    let base = base_key(&issue.key);
    let source = provenance.get(&base).cloned().unwrap_or(Source::Default);
    let file = match &source {
        Source::UserFile(p) | Source::ProjectFile(p) => Some(p.clone()),
        _ => None,
    };
    if let Some(path) = file
        && let Ok(text) = std::fs::read_to_string(&path)
    {
        return Err(locate_issue(&issue, &text, &path.display().to_string()));
    }
    Err(SettingsError {
        location: source.to_string(),
        key: issue.key.clone(),
        message: issue.message.clone(),
        suggestion: None,
    })
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

/// `.claude-telemetry.toml` in `cwd` or the nearest parent directory.
pub fn find_project_file(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors()
        .map(|dir| dir.join(".claude-telemetry.toml"))
        .find(|p| p.is_file())
}

fn file_layer(path: &Path, source: Source) -> Result<Layer, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
        location: path.display().to_string(),
        key: String::new(),
        message: format!("cannot read: {e}"),
        suggestion: None,
    })?;
    let table = parse_layer_text(&text, &path.display().to_string())?;
    Ok(Layer { source, table })
}

/// Parses one TOML document and checks it against the model, reporting `file:line:col: key`.
pub fn parse_layer_text(text: &str, origin: &str) -> Result<Table, SettingsError> {
    let located = |e: &toml::de::Error| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, col) = line_col(text, offset);
        let message = e.message().trim().to_string();
        SettingsError {
            location: format!("{origin}:{line}:{col}"),
            key: key_at(text, offset),
            suggestion: unknown_field_suggestion(&message),
            message,
        }
    };
    let table: Table = toml::from_str(text).map_err(|e| located(&e))?;
    toml::from_str::<Settings>(text).map_err(|e| located(&e))?;
    Ok(table)
}

fn env_layers(env: &BTreeMap<String, String>) -> Result<Vec<Layer>, SettingsError> {
    let mut layers = Vec::new();
    // Standard OpenTelemetry variables name where the user wants data to go.
    if let Some(endpoint) = env
        .get("OTEL_EXPORTER_OTLP_ENDPOINT")
        .filter(|v| !v.is_empty())
    {
        layers.push(single(
            "upstream.endpoint",
            Value::String(endpoint.clone()),
            Source::Env("OTEL_EXPORTER_OTLP_ENDPOINT".into()),
        ));
    }
    if let Some(protocol) = env
        .get("OTEL_EXPORTER_OTLP_PROTOCOL")
        .filter(|v| !v.is_empty())
    {
        let mapped = if protocol.starts_with("http/") {
            "http/protobuf"
        } else {
            protocol.as_str()
        };
        layers.push(single(
            "upstream.protocol",
            Value::String(mapped.into()),
            Source::Env("OTEL_EXPORTER_OTLP_PROTOCOL".into()),
        ));
    }
    if let Some(headers) = env
        .get("OTEL_EXPORTER_OTLP_HEADERS")
        .filter(|v| !v.is_empty())
    {
        let mut table = Table::new();
        for (k, v) in parse_otel_headers(headers) {
            table.insert(k, Value::String(v));
        }
        layers.push(single(
            "upstream.headers",
            Value::Table(table),
            Source::Env("OTEL_EXPORTER_OTLP_HEADERS".into()),
        ));
    }
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if RESERVED_ENV.contains(&rest) || rest.starts_with("TEST_") {
            continue;
        }
        let Some((section, key)) = rest.split_once("__") else {
            return Err(SettingsError {
                location: format!("env {name}"),
                key: String::new(),
                message: "not a settings variable: use CLAUDE_TELEMETRY_<SECTION>__<KEY>".into(),
                suggestion: rest
                    .split_once('_')
                    .map(|(s, k)| format!("{ENV_PREFIX}{s}__{k}")),
            });
        };
        let dotted = env_key_path(section, key);
        let layer = single(&dotted, env_value(raw), Source::Env(name.clone()));
        check_against_model(&layer.table, &format!("env {name}"), &dotted)?;
        layers.push(layer);
    }
    Ok(layers)
}

/// `__` separates every level (`CLAUDE_TELEMETRY_STACK__PORTS__GRAFANA` → `stack.ports.grafana`);
/// keys are lower-cased except inside user-data tables, where the rest is one key kept as written
/// (`CLAUDE_TELEMETRY_CLAUDE__ENV__MY_VAR` → `claude.env.MY_VAR`).
fn env_key_path(section: &str, key: &str) -> String {
    let mut parts: Vec<String> = vec![section.to_lowercase()];
    let mut rest = key.split("__");
    while let Some(part) = rest.next() {
        let so_far = parts.join(".");
        if MAP_KEYS.contains(&so_far.as_str()) {
            let remainder: Vec<&str> = std::iter::once(part).chain(rest.by_ref()).collect();
            parts.push(remainder.join("__"));
            break;
        }
        parts.push(part.to_lowercase());
    }
    parts.join(".")
}

fn flag_layer(flag: &FlagOverride) -> Result<Layer, SettingsError> {
    let layer = single(
        &flag.key,
        env_value(&flag.value),
        Source::Flag(flag.flag.clone()),
    );
    check_against_model(&layer.table, &format!("flag {}", flag.flag), &flag.key)?;
    Ok(layer)
}

/// A value from the environment or a flag: TOML syntax when it parses (numbers, booleans,
/// arrays, inline tables), otherwise the raw text as a string.
fn env_value(raw: &str) -> Value {
    toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn check_against_model(table: &Table, location: &str, key: &str) -> Result<(), SettingsError> {
    let text = toml::to_string(table).unwrap_or_default();
    toml::from_str::<Settings>(&text).map_err(|e| {
        let message = e.message().trim().to_string();
        SettingsError {
            location: location.to_string(),
            key: key.to_string(),
            suggestion: unknown_field_suggestion(&message),
            message,
        }
    })?;
    Ok(())
}

fn single(dotted: &str, value: Value, source: Source) -> Layer {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut table = Table::new();
    table.insert(last.to_string(), value);
    for part in parts.into_iter().rev() {
        let mut outer = Table::new();
        outer.insert(part.to_string(), Value::Table(table));
        table = outer;
    }
    Layer { source, table }
}

/// `key1=value1,key2=value2` with percent-encoded values, as the OTLP exporter spec defines.
pub fn parse_otel_headers(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k.trim()), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Tables whose entries are user data (each entry its own leaf), not fixed keys.
const MAP_KEYS: &[&str] = &[
    "claude.env",
    "upstream.headers",
    "resource.attributes",
    "stack.images",
];

fn merge(layers: &[Layer]) -> Result<(Settings, BTreeMap<String, Source>), SettingsError> {
    let defaults = Table::try_from(Settings::default()).map_err(|e| SettingsError {
        location: "built-in defaults".into(),
        key: String::new(),
        message: e.to_string(),
        suggestion: None,
    })?;
    let mut merged = Table::new();
    let mut provenance = BTreeMap::new();
    merge_into(
        &mut merged,
        &defaults,
        "",
        &Source::Default,
        &mut provenance,
    );
    for layer in layers {
        merge_into(
            &mut merged,
            &layer.table,
            "",
            &layer.source,
            &mut provenance,
        );
    }
    let settings = Settings::deserialize(Value::Table(merged)).map_err(|e| SettingsError {
        location: "merged settings".into(),
        key: String::new(),
        message: e.to_string(),
        suggestion: None,
    })?;
    Ok((settings, provenance))
}

use serde::Deserialize;

fn merge_into(
    target: &mut Table,
    layer: &Table,
    prefix: &str,
    source: &Source,
    provenance: &mut BTreeMap<String, Source>,
) {
    for (key, value) in layer {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (value, target.get_mut(key)) {
            (Value::Table(inner), Some(Value::Table(existing))) => {
                merge_into(existing, inner, &dotted, source, provenance);
            }
            (Value::Table(inner), _) => {
                let mut fresh = Table::new();
                merge_into(&mut fresh, inner, &dotted, source, provenance);
                if inner.is_empty() || MAP_KEYS.contains(&dotted.as_str()) {
                    provenance.insert(dotted.clone(), source.clone());
                }
                target.insert(key.clone(), Value::Table(fresh));
            }
            (other, _) => {
                provenance.insert(dotted, source.clone());
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Checks that go beyond types: addresses, URLs and combinations.
fn validate(
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

/// Every leaf value as a dotted key and a display string, secrets masked.
pub fn flatten_for_display(settings: &Settings) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Ok(table) = Table::try_from(settings) {
        flatten(&table, "", &mut out);
    }
    for (key, value) in out.iter_mut() {
        if key.starts_with("upstream.headers.") || key == "privacy.team_key" {
            *value = Value::String("<set, hidden>".into());
        }
    }
    out
}

fn flatten(table: &Table, prefix: &str, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(inner) if !inner.is_empty() => flatten(inner, &dotted, out),
            other => {
                out.insert(dotted, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;
