//! The environment and `--settings` that point claude's telemetry at the relay.
//!
//! Claude Code reads its OTEL switches from the process environment, but an `env` block in
//! `~/.claude/settings.json` or `.claude/settings.json` overrides the process environment, and the
//! `--settings` flag overrides both. So the same variables go into both places: the process env for
//! claude's children and old versions, and an injected `--settings` that wins over any settings
//! file a user once pasted telemetry variables into.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where claude must export, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryTarget {
    /// `http://127.0.0.1:<port>` of the relay's gRPC listener.
    pub grpc_endpoint: String,
    pub metrics_interval_ms: u64,
    pub logs_interval_ms: u64,
    /// Claude's own privacy switches matching the relay policy (`OTEL_LOG_USER_PROMPTS=0`, …);
    /// the relay enforces the policy whatever claude sends, these make claude not send it.
    pub policy_switches: Vec<(&'static str, &'static str)>,
}

impl TelemetryTarget {
    /// The variables that make claude export to the relay, whatever else is configured.
    pub fn variables(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            vars.insert(k.to_string(), v.to_string());
        };
        set("CLAUDE_CODE_ENABLE_TELEMETRY", "1");
        set("OTEL_METRICS_EXPORTER", "otlp");
        set("OTEL_LOGS_EXPORTER", "otlp");
        set("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        set("OTEL_EXPORTER_OTLP_ENDPOINT", &self.grpc_endpoint);
        // Per-signal variables take precedence over the generic ones in the OTel SDK; a settings
        // file that sets them would route around the relay, so they are pinned too.
        for signal in ["METRICS", "LOGS", "TRACES"] {
            set(
                &format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"),
                &self.grpc_endpoint,
            );
            set(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"), "grpc");
        }
        set(
            "OTEL_METRIC_EXPORT_INTERVAL",
            &self.metrics_interval_ms.to_string(),
        );
        set(
            "OTEL_LOGS_EXPORT_INTERVAL",
            &self.logs_interval_ms.to_string(),
        );
        for (k, v) in &self.policy_switches {
            set(k, v);
        }
        // Per-session series are what makes delta counters add up (see the README).
        set("OTEL_METRICS_INCLUDE_SESSION_ID", "true");
        vars
    }
}

/// Environment variables the child must not inherit: headers meant for the upstream, and
/// per-signal headers that would otherwise be sent to the relay.
const REMOVED_FROM_CHILD: &[&str] = &[
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

/// The environment changes for claude: variables to set (user extras first, telemetry last so
/// it wins) and variables to remove.
pub fn child_env(
    target: &TelemetryTarget,
    extra: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<&'static str>) {
    let mut vars = extra.clone();
    vars.extend(target.variables());
    (vars, REMOVED_FROM_CHILD.to_vec())
}

/// The variables that switch claude's telemetry off, whatever its settings files say: used
/// for a session whose claude-telemetry settings cannot be read, where no policy is known and
/// so nothing may leave the machine.
pub fn withheld_variables() -> BTreeMap<String, String> {
    [
        ("CLAUDE_CODE_ENABLE_TELEMETRY", "0"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_LOGS_EXPORTER", "none"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Returns claude's arguments with one `--settings` whose `env` carries the telemetry
/// variables, merged into the user's own `--settings` (JSON text or a file path) when given.
pub fn inject_settings(
    args: &[String],
    target: &TelemetryTarget,
) -> Result<Vec<String>, InjectError> {
    inject_env(args, &target.variables())
}

/// Like [`inject_settings`] with any set of variables: the injected `--settings` wins over
/// every settings file of claude's, so these values are the ones claude uses.
pub fn inject_env(
    args: &[String],
    variables: &BTreeMap<String, String>,
) -> Result<Vec<String>, InjectError> {
    let mut user_settings: Option<Map<String, Value>> = None;
    let mut rest = Vec::with_capacity(args.len() + 2);
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            rest.extend_from_slice(&args[i..]);
            break;
        }
        let value = if arg == "--settings" {
            i += 1;
            Some(args.get(i).cloned().ok_or(InjectError::MissingValue)?)
        } else {
            arg.strip_prefix("--settings=").map(str::to_string)
        };
        match value {
            Some(v) => {
                let parsed = read_settings_value(&v)?;
                let merged = user_settings.get_or_insert_with(Map::new);
                merged.extend(parsed);
            }
            None => rest.push(arg.clone()),
        }
        i += 1;
    }
    let mut settings = user_settings.unwrap_or_default();
    let env = settings
        .entry("env")
        .or_insert_with(|| Value::Object(Map::new()));
    if !env.is_object() {
        *env = Value::Object(Map::new());
    }
    if let Value::Object(env) = env {
        for (k, v) in variables {
            env.insert(k.clone(), Value::String(v.clone()));
        }
    }
    let mut out = vec![
        "--settings".to_string(),
        Value::Object(settings).to_string(),
    ];
    out.extend(rest);
    Ok(out)
}

/// Why the user's `--settings` could not be merged; claude is then not started, since starting
/// it would silently send telemetry elsewhere or drop the user's settings.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("`--settings` needs a value (a JSON object or a file path)")]
    MissingValue,
    #[error("cannot read the --settings file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("--settings {what} is not a JSON object: {detail}")]
    NotAnObject { what: String, detail: String },
}

fn read_settings_value(value: &str) -> Result<Map<String, Value>, InjectError> {
    let trimmed = value.trim_start();
    let (text, what) = if trimmed.starts_with('{') {
        (value.to_string(), "value".to_string())
    } else {
        let text = std::fs::read_to_string(value).map_err(|source| InjectError::Unreadable {
            path: value.to_string(),
            source,
        })?;
        (text, format!("file {value}"))
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(InjectError::NotAnObject {
            what,
            detail: format!("found {}", type_name(&other)),
        }),
        Err(e) => Err(InjectError::NotAnObject {
            what,
            detail: e.to_string(),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TelemetryTarget {
        TelemetryTarget {
            grpc_endpoint: "http://127.0.0.1:4242".into(),
            metrics_interval_ms: 1000,
            logs_interval_ms: 500,
            policy_switches: vec![("OTEL_LOG_USER_PROMPTS", "0")],
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn injects_settings_first_and_keeps_every_other_argument() {
        let out = inject_settings(&strings(&["-p", "hi", "--model", "x"]), &target()).unwrap();
        assert_eq!(out[0], "--settings");
        assert_eq!(&out[2..], &strings(&["-p", "hi", "--model", "x"]));
        let json: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(
            json["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://127.0.0.1:4242"
        );
        assert_eq!(
            json["env"]["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"],
            "http://127.0.0.1:4242"
        );
        assert_eq!(json["env"]["OTEL_LOG_USER_PROMPTS"], "0");
    }

    #[test]
    fn merges_the_users_settings_json_and_file_and_ours_win_for_telemetry() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), r#"{"model":"opus","env":{"FOO":"1"}}"#).unwrap();
        let user_json = r#"{"env":{"OTEL_EXPORTER_OTLP_ENDPOINT":"http://elsewhere:4317","BAR":"2"},"theme":"dark"}"#;
        let args = strings(&[
            "--settings",
            tmp.path().to_str().unwrap(),
            &format!("--settings={user_json}"),
            "-p",
            "x",
        ]);
        let out = inject_settings(&args, &target()).unwrap();
        assert_eq!(&out[2..], &strings(&["-p", "x"]));
        let json: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(json["model"], "opus");
        assert_eq!(json["theme"], "dark");
        // The later --settings replaces `env` as a whole, as claude itself would.
        assert_eq!(json["env"]["BAR"], "2");
        assert_eq!(
            json["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://127.0.0.1:4242"
        );
    }

    #[test]
    fn arguments_after_double_dash_are_untouched() {
        let args = strings(&["--", "--settings", "not-a-file"]);
        let out = inject_settings(&args, &target()).unwrap();
        assert_eq!(&out[2..], &args[..]);
    }

    #[test]
    fn unreadable_user_settings_is_an_error_naming_the_file() {
        let err = inject_settings(&strings(&["--settings", "/no/such.json"]), &target())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such.json"), "{err}");
    }
}
