use super::*;
use std::collections::BTreeMap;

fn env(pairs: &[(&str, &str)], config_dir: &Path) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert(
        "CLAUDE_TELEMETRY_CONFIG_DIR".into(),
        config_dir.display().to_string(),
    );
    map
}

struct Fixture {
    _tmp: tempfile::TempDir,
    config_dir: PathBuf,
    project: PathBuf,
}

fn fixture(user: Option<&str>, project: Option<&str>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let config_dir = tmp.path().join("config");
    let project_dir = tmp.path().join("repo");
    let nested = project_dir.join("src/deep");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&nested).unwrap();
    if let Some(text) = user {
        std::fs::write(config_dir.join("config.toml"), text).unwrap();
    }
    if let Some(text) = project {
        std::fs::write(project_dir.join(".claude-telemetry.toml"), text).unwrap();
    }
    Fixture {
        _tmp: tmp,
        config_dir,
        project: nested,
    }
}

#[test]
fn layers_apply_in_order_defaults_user_project_env_flags() {
    let f = fixture(
        Some(
            "[upstream]\nendpoint = \"http://user:1\"\ntimeout_ms = 111\n[export]\nlogs_interval_ms = 700\n",
        ),
        Some("[upstream]\nendpoint = \"http://project:2\"\ntimeout_ms = 222\n"),
    );
    let env = env(
        &[("CLAUDE_TELEMETRY_UPSTREAM__TIMEOUT_MS", "333")],
        &f.config_dir,
    );
    let flags = vec![FlagOverride {
        flag: "--upstream".into(),
        key: "upstream.endpoint".into(),
        value: "http://flag:4".into(),
    }];
    let loaded = load(&f.project, &env, &flags).unwrap();
    let s = &loaded.settings;
    assert_eq!(s.upstream.endpoint, "http://flag:4");
    assert_eq!(s.upstream.timeout_ms, 333);
    assert_eq!(s.export.logs_interval_ms, 700);
    assert_eq!(s.export.metrics_interval_ms, 60_000);
    assert_eq!(
        loaded.provenance["upstream.endpoint"],
        Source::Flag("--upstream".into())
    );
    assert_eq!(
        loaded.provenance["upstream.timeout_ms"],
        Source::Env("CLAUDE_TELEMETRY_UPSTREAM__TIMEOUT_MS".into())
    );
    assert!(matches!(
        loaded.provenance["export.logs_interval_ms"],
        Source::UserFile(_)
    ));
    assert_eq!(loaded.provenance["relay.grpc_listen"], Source::Default);
}

#[test]
fn project_file_is_found_walking_up() {
    let f = fixture(None, Some("[export]\nmetrics_interval_ms = 1234\n"));
    let loaded = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap();
    assert_eq!(loaded.settings.export.metrics_interval_ms, 1234);
    assert!(
        matches!(&loaded.provenance["export.metrics_interval_ms"], Source::ProjectFile(p) if p.ends_with("repo/.claude-telemetry.toml"))
    );
}

#[test]
fn unknown_key_names_file_line_column_and_suggests() {
    let f = fixture(
        Some("[relay]\ndrain_timeout_ms = 5\n\n[upstream]\nendpont = \"http://x:1\"\n"),
        None,
    );
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert!(err.location.ends_with("config.toml:5:1"), "{err}");
    assert_eq!(err.key, "upstream.endpont");
    assert_eq!(err.suggestion.as_deref(), Some("endpoint"));
}

#[test]
fn wrong_type_names_file_line_column_and_key() {
    let f = fixture(None, Some("[upstream]\ntimeout_ms = \"fast\"\n"));
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert!(
        err.location.ends_with(".claude-telemetry.toml:2:14"),
        "{err}"
    );
    assert_eq!(err.key, "upstream.timeout_ms");
    assert!(err.message.contains("invalid type"), "{err}");
}

#[test]
fn unknown_section_is_an_error_with_suggestion() {
    let f = fixture(Some("[upstrem]\nendpoint = \"http://x:1\"\n"), None);
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert_eq!(err.suggestion.as_deref(), Some("upstream"), "{err}");
}

#[test]
fn bad_environment_variable_is_named() {
    let f = fixture(None, None);
    let err = load(
        &f.project,
        &env(
            &[("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "soon")],
            &f.config_dir,
        ),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.location, "env CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS");
    let err = load(
        &f.project,
        &env(
            &[("CLAUDE_TELEMETRY_UPSTREAM_ENDPOINT", "http://x:1")],
            &f.config_dir,
        ),
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.suggestion.as_deref(),
        Some("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT")
    );
}

#[test]
fn otel_environment_names_the_upstream() {
    let f = fixture(None, None);
    let loaded = load(
        &f.project,
        &env(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20abc,x-team=platform",
                ),
            ],
            &f.config_dir,
        ),
        &[],
    )
    .unwrap();
    let up = &loaded.settings.upstream;
    assert_eq!(up.endpoint, "https://otel.example.com");
    assert_eq!(up.protocol, Protocol::HttpProtobuf);
    assert_eq!(up.headers["authorization"], "Bearer abc");
    assert_eq!(up.headers["x-team"], "platform");
    // Header values are never printed.
    let shown = flatten_for_display(&loaded.settings);
    assert_eq!(
        shown["upstream.headers.authorization"],
        Value::String("<set, hidden>".into())
    );
}

#[test]
fn non_loopback_listen_address_is_refused_unless_allowed() {
    let f = fixture(Some("[relay]\ngrpc_listen = \"0.0.0.0:4317\"\n"), None);
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert_eq!(err.key, "relay.grpc_listen");
    assert!(err.location.contains("config.toml"), "{err}");
    let f = fixture(
        Some("[relay]\ngrpc_listen = \"0.0.0.0:4317\"\nallow_non_loopback = true\n"),
        None,
    );
    assert!(load(&f.project, &env(&[], &f.config_dir), &[]).is_ok());
}

#[test]
fn claude_env_entries_are_user_data() {
    let f = fixture(
        Some("[claude.env]\nANTHROPIC_BASE_URL = \"http://127.0.0.1:9\"\n"),
        None,
    );
    let loaded = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap();
    assert_eq!(
        loaded.settings.claude.env["ANTHROPIC_BASE_URL"],
        "http://127.0.0.1:9"
    );
}

#[test]
fn nested_keys_from_the_environment_use_double_underscores() {
    let f = fixture(None, None);
    let loaded = load(
        &f.project,
        &env(
            &[("CLAUDE_TELEMETRY_STACK__PORTS__GRAFANA", "3999")],
            &f.config_dir,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(loaded.settings.stack.ports.grafana, 3999);
    let loaded = load(
        &f.project,
        &env(
            &[("CLAUDE_TELEMETRY_CLAUDE__ENV__MY_VAR", "x")],
            &f.config_dir,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(loaded.settings.claude.env["MY_VAR"], "x");
}

#[test]
fn budgets_layer_user_project_env_and_name_their_source() {
    let f = fixture(
        Some("[budget]\ndaily = 10\nweekly = 50.5\n"),
        Some("[budget]\ndaily = 4\n"),
    );
    let env = env(
        &[("CLAUDE_TELEMETRY_BUDGET__MONTHLY", "200")],
        &f.config_dir,
    );
    let loaded = load(&f.project, &env, &[]).unwrap();
    let b = loaded.settings.budget;
    assert_eq!(
        (b.daily, b.weekly, b.monthly),
        (Some(4.0), Some(50.5), Some(200.0))
    );
    assert!(matches!(
        loaded.provenance.get("budget.daily"),
        Some(Source::ProjectFile(_))
    ));
    assert!(matches!(
        loaded.provenance.get("budget.weekly"),
        Some(Source::UserFile(_))
    ));
    assert_eq!(
        loaded.provenance.get("budget.monthly"),
        Some(&Source::Env("CLAUDE_TELEMETRY_BUDGET__MONTHLY".into()))
    );
}

#[test]
fn a_bad_budget_names_file_line_and_key() {
    let f = fixture(
        None,
        Some("[resource]\nproject_name = true\n[budget]\nweekly = -5\n"),
    );
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert!(
        err.location.ends_with(".claude-telemetry.toml:4:1"),
        "{err}"
    );
    assert_eq!(err.key, "budget.weekly");
    assert!(err.message.contains("above 0"), "{err}");
    let f = fixture(Some("[budget]\ndaily = \"ten\"\n"), None);
    let err = load(&f.project, &env(&[], &f.config_dir), &[]).unwrap_err();
    assert!(err.location.ends_with("config.toml:2:9"), "{err}");
    assert_eq!(err.key, "budget.daily");
    let f = fixture(None, None);
    let env = env(&[("CLAUDE_TELEMETRY_BUDGET__DAILY", "0")], &f.config_dir);
    let err = load(&f.project, &env, &[]).unwrap_err();
    assert_eq!(err.location, "env CLAUDE_TELEMETRY_BUDGET__DAILY");
    assert_eq!(err.key, "budget.daily");
}

#[test]
fn a_team_budget_in_the_managed_policy_caps_the_user_budget() {
    let f = fixture(Some("[budget]\ndaily = 50\nweekly = 20\n"), None);
    let policy = f.config_dir.join("policy.toml");
    std::fs::write(&policy, "[budget]\ndaily = 25\nmonthly = 300\n").unwrap();
    let env = env(
        &[("CLAUDE_TELEMETRY_POLICY_FILE", policy.to_str().unwrap())],
        &f.config_dir,
    );
    let loaded = load(&f.project, &env, &[]).unwrap();
    let b = loaded.settings.budget;
    assert_eq!(
        (b.daily, b.weekly, b.monthly),
        (Some(25.0), Some(20.0), Some(300.0))
    );
    assert_eq!(
        loaded.provenance.get("budget.daily"),
        Some(&Source::Managed(policy.clone()))
    );
    assert!(matches!(
        loaded.provenance.get("budget.weekly"),
        Some(Source::UserFile(_))
    ));
    let managed = loaded.managed.unwrap();
    assert!(managed.locked.contains(&"budget.daily".to_string()));
    assert_eq!(managed.loosening.len(), 1, "{:?}", managed.loosening);
    assert_eq!(managed.loosening[0].key, "budget.daily");
    std::fs::write(&policy, "[budget]\ndaily = 0\n").unwrap();
    let err = load(&f.project, &env, &[]).unwrap_err();
    assert!(err.location.ends_with("policy.toml:2:1"), "{err}");
}
