//! The relay policy through the whole program: what the upstream receives (raw bytes) when the
//! real Claude Code runs a turn with a secret and an e-mail in the prompt and a Bash command.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::checks::MODEL;
use support::{FakeAnthropic, OtlpSink, Sandbox};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");
const SECRET: &str = "sk-ant-api03-PolicyTestFAKE0123456789abcdefXYZ";
const EMAIL: &str = "grace.hopper@example.com";
const COMMAND_MARK: &str = "policy-cmd-marker";

fn sandbox(api: &FakeAnthropic, sink: &OtlpSink, project_toml: Option<&str>) -> Sandbox {
    let mut s = Sandbox::for_launcher(api, &sink.grpc_endpoint());
    s
        // The user asked claude for everything; the policy decides what leaves.
        .set_env("OTEL_LOG_USER_PROMPTS", "1")
        .set_env("OTEL_LOG_TOOL_DETAILS", "1");
    if let Some(text) = project_toml {
        std::fs::write(s.project().join(".claude-telemetry.toml"), text).unwrap();
    }
    s
}

fn run_turn(s: &Sandbox) -> std::process::Output {
    let prompt =
        format!("Use key {SECRET} and mail {EMAIL}. RUN_BASH: echo {COMMAND_MARK}-$((6*7))");
    let out = s
        .command(LAUNCHER)
        .args(["-p", &prompt, "--allowedTools", "Bash", "--model", MODEL])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn user_id(home: &Path) -> String {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join(".claude.json")).unwrap()).unwrap();
    json["userID"]
        .as_str()
        .expect("claude stored a userID")
        .to_string()
}

fn wait_for_events(sink: &OtlpSink) {
    sink.wait_for(
        Duration::from_secs(10),
        "tool_result and user_prompt events",
        |s| !s.events("tool_result").is_empty() && !s.events("user_prompt").is_empty(),
    );
}

#[test]
fn default_policy_sends_no_prompt_command_secret_email_or_raw_user_id_upstream() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let s = sandbox(&api, &sink, None);
    run_turn(&s);
    wait_for_events(&sink);
    let raw_id = user_id(s.home());
    for needle in [SECRET, EMAIL, COMMAND_MARK, "Use key", raw_id.as_str()] {
        assert!(
            !sink.raw_bytes_contain(needle),
            "upstream received {needle:?}"
        );
    }
    // Still useful: the events and their numbers arrive, identities pseudonymous, resource tagged.
    let prompt = &sink.events("user_prompt")[0];
    assert_eq!(
        prompt.attributes.get("prompt").map(String::as_str),
        Some("<REDACTED>")
    );
    let pseudonym = prompt
        .attributes
        .get("user.id")
        .expect("user.id kept as a pseudonym");
    assert_eq!(pseudonym.len(), 32, "{pseudonym}");
    assert!(prompt.resource.contains_key("service.instance.id"));
    assert_eq!(
        prompt.resource.get("project.name").map(String::as_str),
        Some("project")
    );
    assert!(sink.sum("claude_code.token.usage", &[]) > 0.0);
    for point in sink.points("claude_code.cost.usage") {
        assert!(
            point.attributes.contains_key("session.id"),
            "session.id stays on metrics"
        );
        assert_eq!(point.attributes.get("user.id"), Some(pseudonym));
    }
}

#[test]
fn keep_policy_lets_prompt_command_and_identifiers_through_intact() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let s = sandbox(
        &api,
        &sink,
        Some(
            "[privacy]\nprompts = \"keep\"\ntool_details = \"keep\"\nidentifiers = \"keep\"\nbuiltin_redactions = false\n",
        ),
    );
    run_turn(&s);
    wait_for_events(&sink);
    for needle in [SECRET, EMAIL, COMMAND_MARK, user_id(s.home()).as_str()] {
        assert!(
            sink.raw_bytes_contain(needle),
            "upstream lacks {needle:?}; {}",
            sink.summary()
        );
    }
}

/// A stand-in claude that sends, through the relay's OTLP/HTTP endpoint, an event full of
/// private text whatever claude was told: the relay must enforce the policy on what arrives.
fn leaky_claude(dir: &Path) -> PathBuf {
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "claude-code"}},
            {"key": "user.email", "value": {"stringValue": EMAIL}}
        ]},
        "scopeLogs": [{"logRecords": [{
            "body": {"stringValue": "claude_code.tool_result"},
            "attributes": [
                {"key": "event.name", "value": {"stringValue": "tool_result"}},
                {"key": "tool_name", "value": {"stringValue": "Bash"}},
                {"key": "tool_parameters", "value": {"stringValue":
                    format!("{{\"bash_command\":\"echo {COMMAND_MARK}\",\"full_command\":\"curl -H 'x-api-key: {SECRET}'\"}}")}},
                {"key": "error", "value": {"stringValue": format!("failed for {EMAIL}")}}
            ]
        }]}]
    }]});
    let script = format!(
        "import json, os, sys, urllib.request\n\
         if '--version' in sys.argv: print('0.0.0 (leaky)'); sys.exit(0)\n\
         req = urllib.request.Request(os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/logs',\n\
             data={body}.encode(), headers={{'content-type': 'application/json'}})\n\
         print(urllib.request.urlopen(req).status)\n",
        body = serde_json::to_string(&body.to_string()).unwrap()
    );
    let path = dir.join("leaky-claude");
    std::fs::write(&path, format!("#!/usr/bin/env python3\n{script}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_relay_enforces_the_policy_whatever_arrives() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut s = sandbox(&api, &sink, None);
    let leaky = leaky_claude(&s.scratch());
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", leaky.display().to_string());
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200");
    sink.wait_for(Duration::from_secs(5), "the leaky event", |s| {
        !s.events("tool_result").is_empty()
    });
    for needle in [SECRET, EMAIL, COMMAND_MARK] {
        assert!(
            !sink.raw_bytes_contain(needle),
            "upstream received {needle:?}"
        );
    }
    let event = &sink.events("tool_result")[0];
    assert_eq!(
        event.attributes.get("tool_parameters").map(String::as_str),
        Some("<REDACTED>")
    );
    assert_eq!(
        event.attributes.get("tool_name").map(String::as_str),
        Some("Bash")
    );
}

#[test]
fn managed_drop_beats_a_user_keep_and_config_says_why() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut s = sandbox(&api, &sink, Some("[privacy]\nprompts = \"keep\"\n"));
    let policy = s.scratch().join("policy.toml");
    std::fs::write(&policy, "[privacy]\nprompts = \"drop\"\n").unwrap();
    s.set_env("CLAUDE_TELEMETRY_POLICY_FILE", policy.display().to_string());
    let out = run_turn(&s);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("privacy.prompts = keep is not applied: locked to drop"),
        "{stderr}"
    );
    wait_for_events(&sink);
    assert!(
        !sink.raw_bytes_contain("Use key"),
        "prompt text went upstream"
    );
    let config = s.command(LAUNCHER).arg("config").output().unwrap();
    let text = String::from_utf8_lossy(&config.stdout);
    assert!(
        text.contains("NOT APPLIED: privacy.prompts = keep"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("privacy.prompts"))
        .unwrap();
    assert!(
        line.contains("\"drop\"") && line.contains(&format!("locked by {}", policy.display())),
        "{line}"
    );
}

/// A policy that cannot be compiled never blocks claude (issue 10): claude runs with its
/// telemetry switched off, one line names file:line:col and key, nothing reaches the upstream,
/// and `config` still fails hard.
#[test]
fn invalid_policy_runs_claude_with_telemetry_withheld_naming_file_line_and_key() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut s = sandbox(
        &api,
        &sink,
        Some("[privacy]\nprompts = \"drop\"\nredact = [\"ok\", \"(unclosed\"]\n"),
    );
    let marker = s.scratch().join("claude-started");
    let fake = s.scratch().join("fake-claude");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"telemetry=$CLAUDE_CODE_ENABLE_TELEMETRY $*\" > {}\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    let withheld = |s: &Sandbox, location: &str| {
        let _ = std::fs::remove_file(&marker);
        let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("TELEMETRY WITHHELD"), "{stderr}");
        assert!(stderr.contains(location), "{stderr}");
        let seen = std::fs::read_to_string(&marker).expect("claude was not started");
        assert!(seen.starts_with("telemetry=0 "), "{seen}");
        assert!(
            seen.contains("CLAUDE_CODE_ENABLE_TELEMETRY\":\"0\""),
            "no --settings switching telemetry off: {seen}"
        );
        let config = s.command(LAUNCHER).arg("config").output().unwrap();
        assert_eq!(config.status.code(), Some(2), "{config:?}");
        assert!(
            String::from_utf8_lossy(&config.stderr).contains(location),
            "{config:?}"
        );
    };
    withheld(&s, ".claude-telemetry.toml:3:1: privacy.redact[1]");

    std::fs::write(
        s.project().join(".claude-telemetry.toml"),
        "[privacy]\nprompts = \"sometimes\"\n",
    )
    .unwrap();
    withheld(&s, ".claude-telemetry.toml:2:11: privacy.prompts");
    assert!(sink.requests().is_empty(), "{}", sink.summary());
}

#[test]
fn removing_session_id_from_metrics_is_refused_with_the_reason() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let s = sandbox(
        &api,
        &sink,
        Some("[cardinality]\ndrop_metric_attributes = [\"terminal.type\", \"session.id\"]\n"),
    );
    // The session runs with telemetry withheld and says why; `config` refuses the file.
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TELEMETRY WITHHELD"), "{stderr}");
    assert!(
        stderr.contains("cardinality.drop_metric_attributes"),
        "{stderr}"
    );
    assert!(stderr.contains("delta"), "the reason is given: {stderr}");
    let config = s.command(LAUNCHER).arg("config").output().unwrap();
    assert_eq!(config.status.code(), Some(2), "{config:?}");
    assert!(
        String::from_utf8_lossy(&config.stderr).contains("delta"),
        "{config:?}"
    );
}
