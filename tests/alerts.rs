//! The stack's alert rules (`config/prometheus-rules.yml`) on the real Prometheus 3 promtool:
//! every alert fires on its scenario and stays silent on its control
//! (`tests/alerts/rules_test.yml`), the Prometheus config that loads them is valid, and no
//! alert lacks either kind of scenario.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{in_ci, repo_root};
use yaml_rust2::{Yaml, YamlLoader};

fn promtool() -> Option<PathBuf> {
    let var = "CLAUDE_TELEMETRY_TEST_PROMTOOL3";
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{var} is required by this test and missing (CI=true: failing, not skipping); run tests/install-tools.sh"
        );
        eprintln!("SKIPPED: {var} not set (source the env file of tests/install-tools.sh)");
    }
    found
}

fn run(promtool: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

fn yaml(rel: &str) -> Yaml {
    let text = std::fs::read_to_string(repo_root().join(rel)).expect("read YAML");
    YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .into_iter()
        .next()
        .expect("one document")
}

#[test]
fn every_alert_fires_on_its_scenario_and_stays_silent_on_its_control_on_prometheus_3() {
    let Some(promtool) = promtool() else { return };
    let out = run(&promtool, &["test", "rules", "tests/alerts/rules_test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_rules_file_and_the_config_loading_it_pass_promtool_3() {
    let Some(promtool) = promtool() else { return };
    let rules = run(
        &promtool,
        &["check", "rules", "config/prometheus-rules.yml"],
    );
    assert!(rules.contains("SUCCESS: 8 rules found"), "{rules}");
    let config = run(&promtool, &["check", "config", "config/prometheus.yml"]);
    assert!(
        config.contains("SUCCESS: 8 rules found"),
        "prometheus.yml loads the rules file: {config}"
    );
}

/// A new alert without a firing scenario and a silent control would pass the promtool run.
#[test]
fn every_alert_has_a_firing_scenario_and_a_silent_control() {
    let rules = yaml("config/prometheus-rules.yml");
    let tests = yaml("tests/alerts/rules_test.yml");
    let mut alerts: Vec<String> = rules["groups"]
        .as_vec()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_vec().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    alerts.dedup();
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    let evals: Vec<(String, usize)> = tests["tests"]
        .as_vec()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["alertname"].as_str().unwrap_or_default().to_owned(),
                e["exp_alerts"].as_vec().map_or(0, Vec::len),
            )
        })
        .collect();
    for alert in &alerts {
        assert!(
            evals.iter().any(|(a, n)| a == alert && *n > 0),
            "{alert}: no scenario that must fire it"
        );
        assert!(
            evals.iter().any(|(a, n)| a == alert && *n == 0),
            "{alert}: no control that must stay silent"
        );
    }
    // Each budget period is tested, not only the first rule of the name.
    let periods: Vec<&str> = tests["tests"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().cloned().unwrap_or_default())
        .flat_map(|e| e["exp_alerts"].as_vec().cloned().unwrap_or_default())
        .filter_map(|a| a["exp_labels"]["period"].as_str().map(str::to_owned))
        .map(|p| match p.as_str() {
            "day" => "day",
            "week" => "week",
            "month" => "month",
            _ => "other",
        })
        .collect();
    for p in ["day", "week", "month"] {
        assert!(periods.contains(&p), "no firing scenario for period {p}");
    }
}
