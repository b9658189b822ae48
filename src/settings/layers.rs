//! The settings layers before merging: files (checked against the model, errors located to
//! `file:line:col`), environment variables (`CLAUDE_TELEMETRY_<SECTION>__<KEY>` and the
//! standard OTLP exporter variables) and `run` flags.

use super::error::{key_at, line_col, unknown_field_suggestion};
use super::{FlagOverride, Layer, MAP_KEYS, Settings, SettingsError, Source};
use std::collections::BTreeMap;
use std::path::Path;
use toml::{Table, Value};

/// Prefix of the environment variables that set settings (`CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT`).
const ENV_PREFIX: &str = "CLAUDE_TELEMETRY_";

/// Variables under [`ENV_PREFIX`] that are not settings keys.
const RESERVED_ENV: &[&str] = &[
    "CONFIG_DIR",
    "DATA_DIR",
    "CACHE_DIR",
    "LEARN_CLAUDE",
    "LEARN_CACHE_DIR",
    "POLICY_FILE",
    "LAUNCHER_PID",
    "OTLP_HTTP_ENDPOINT",
    // The background history import (src/history/background.rs).
    "AUTO_IMPORT",
    "IMPORT_LOCK",
];

pub(super) fn file_layer(path: &Path, source: Source) -> Result<Layer, SettingsError> {
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
fn parse_layer_text(text: &str, origin: &str) -> Result<Table, SettingsError> {
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

pub(super) fn env_layers(env: &BTreeMap<String, String>) -> Result<Vec<Layer>, SettingsError> {
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

pub(super) fn flag_layer(flag: &FlagOverride) -> Result<Layer, SettingsError> {
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
fn parse_otel_headers(raw: &str) -> Vec<(String, String)> {
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
