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

crate::on_each_release!(
    default_policy_sends_no_prompt_command_secret_email_or_raw_user_id_upstream,
    keep_policy_lets_prompt_command_and_identifiers_through_intact,
    managed_drop_beats_a_user_keep_and_config_says_why,
);

const PROMPT_MARK: &str = "prompt-text-marker fix the billing bug";
const FREE_TEXT_MARK: &str = "never-seen-free-text about the merger";
const UNKNOWN_KEY: &str = "future_release.summary";

/// A stand-in claude 2.1.332 that sends, straight to the relay's OTLP/HTTP endpoint, a
/// `user_prompt` event carrying `prompt_text` and a free-text attribute no release has sent,
/// one token metric point and one span with the same unknown key, then exits.
fn newer_claude(dir: &Path) -> PathBuf {
    let s = |k: &str, v: &str| serde_json::json!({"key": k, "value": {"stringValue": v}});
    let i = |k: &str, v: i64| serde_json::json!({"key": k, "value": {"intValue": v}});
    let b = |k: &str, v: bool| serde_json::json!({"key": k, "value": {"boolValue": v}});
    let resource = serde_json::json!({"attributes": [
        s("service.name", "claude-code"), s("service.version", "2.1.332"),
        s(UNKNOWN_KEY, FREE_TEXT_MARK)
    ]});
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": resource,
        "scopeLogs": [{"logRecords": [{
            "body": {"stringValue": "claude_code.user_prompt"},
            "attributes": [
                s("event.name", "user_prompt"), s("session.id", "s-1"),
                s("prompt_text", PROMPT_MARK), s("prompt_length", "38"),
                s(UNKNOWN_KEY, FREE_TEXT_MARK), s("future_release.ratio", "0.25"),
                i("future_release.count", 7), b("anthropic.custom_base_url", true),
                s("anthropic.provider", "firstParty"), s("model", "claude-sonnet-4-6")
            ]
        }, {
            "body": {"stringValue": format!("free body: {FREE_TEXT_MARK}")},
            "attributes": [s("event.name", "hook_note")]
        }]}]
    }]});
    let metrics = serde_json::json!({"resourceMetrics": [{
        "resource": resource,
        "scopeMetrics": [{"metrics": [{
            "name": "claude_code.token.usage", "unit": "tokens",
            "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{
                "asDouble": 1234.0, "timeUnixNano": "1764083101123000000",
                "attributes": [
                    s("session.id", "s-1"), s("type", "input"), s("model", "claude-sonnet-4-6"),
                    s(UNKNOWN_KEY, FREE_TEXT_MARK), i("future_release.count", 7)
                ]
            }]}
        }]}]
    }]});
    let traces = serde_json::json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "claude_code.llm_request", "kind": 1,
            "startTimeUnixNano": "1764083101123000000", "endTimeUnixNano": "1764083101223000000",
            "attributes": [s("model", "claude-sonnet-4-6"), s(UNKNOWN_KEY, FREE_TEXT_MARK),
                           i("input_tokens", 1234)]
        }]}]
    }]});
    let post = |path: &str, body: &serde_json::Value| {
        format!(
            "req = urllib.request.Request(base + '{path}', data={}.encode(), \
             headers={{'content-type': 'application/json'}})\n\
             print(urllib.request.urlopen(req).status)\n",
            serde_json::to_string(&body.to_string()).unwrap()
        )
    };
    let script = format!(
        "#!/usr/bin/env python3\nimport os, sys, urllib.request\n\
         if '--version' in sys.argv: print('2.1.332 (Claude Code)'); sys.exit(0)\n\
         base = os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT']\n{}{}{}",
        post("/v1/logs", &logs),
        post("/v1/metrics", &metrics),
        post("/v1/traces", &traces)
    );
    let path = dir.join("newer-claude");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn run_newer_claude(s: &Sandbox, sink: &OtlpSink) {
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200\n200\n200",
        "{out:?}"
    );
    sink.wait_for(Duration::from_secs(10), "the event, point and span", |s| {
        !s.events("user_prompt").is_empty()
            && !s.points("claude_code.token.usage").is_empty()
            && s.request_count(support::Signal::Traces) > 0
    });
}

#[test]
fn default_policy_withholds_prompt_text_and_unknown_text_but_sends_events_model_and_numbers() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut s = sandbox(&api, &sink, None);
    let newer = newer_claude(&s.scratch());
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", newer.display().to_string());
    run_newer_claude(&s, &sink);

    for needle in [PROMPT_MARK, FREE_TEXT_MARK, "prompt-text-marker", "merger"] {
        assert!(
            !sink.raw_bytes_contain(needle),
            "upstream received {needle:?}"
        );
    }
    let events = sink.all_events();
    let prompt = &sink.events("user_prompt")[0];
    let attr = |k: &str| prompt.attributes.get(k).map(String::as_str);
    assert_eq!(attr("prompt_text"), Some("<REDACTED>"));
    assert_eq!(attr(UNKNOWN_KEY), Some("<REDACTED>"), "marked, not hidden");
    assert_eq!(attr("model"), Some("claude-sonnet-4-6"));
    assert_eq!(attr("prompt_length"), Some("38"));
    assert_eq!(attr("future_release.ratio"), Some("0.25"));
    assert_eq!(attr("future_release.count"), Some("7"));
    assert_eq!(attr("anthropic.custom_base_url"), Some("true"));
    assert_eq!(attr("anthropic.provider"), Some("firstParty"));
    assert_eq!(
        prompt.resource.get(UNKNOWN_KEY).map(String::as_str),
        Some("<REDACTED>")
    );
    assert_eq!(prompt.body, "claude_code.user_prompt");
    let note = events.iter().find(|e| e.name == "hook_note").expect("kept");
    assert_eq!(note.body, "<REDACTED>", "a free-text body is withheld");
    let point = &sink.points("claude_code.token.usage")[0];
    assert_eq!(point.value, 1234.0);
    assert_eq!(
        point.attributes.get("model").map(String::as_str),
        Some("claude-sonnet-4-6")
    );
    assert_eq!(
        point
            .attributes
            .get("future_release.count")
            .map(String::as_str),
        Some("7")
    );
    assert!(
        sink.raw_bytes_contain("claude_code.llm_request"),
        "span sent"
    );

    // doctor names the withheld keys (never their values) and how to allow them.
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("withheld attributes"))
        .unwrap_or_else(|| panic!("no withheld line: {text}"));
    assert!(line.contains(&format!("\"{UNKNOWN_KEY}\"")), "{line}");
    assert!(line.contains("\"log.body\""), "{line}");
    assert!(line.contains("allow_attributes"), "{line}");
    assert!(
        !line.contains("prompt_text"),
        "known keys are not listed: {line}"
    );
    assert!(!text.contains("merger") && !text.contains("prompt-text-marker"));

    // Allowing the key lets its text through; prompt_text stays conversation text.
    sink.clear();
    std::fs::write(
        s.project().join(".claude-telemetry.toml"),
        format!("[privacy]\nallow_attributes = [\"{UNKNOWN_KEY}\"]\n"),
    )
    .unwrap();
    run_newer_claude(&s, &sink);
    assert!(sink.raw_bytes_contain(FREE_TEXT_MARK));
    assert!(!sink.raw_bytes_contain(PROMPT_MARK));
}

/// Every release the tests install: 2.1.197 and, when installed, the newest checked.
fn every_claude() -> Vec<PathBuf> {
    vec![
        support::claude_bin(),
        support::tool_from_env("CLAUDE_TELEMETRY_TEST_CLAUDE_LATEST", "Claude Code 2.1.332"),
    ]
}

#[test]
fn every_key_real_claude_sends_is_known_so_fail_closed_withholds_nothing_of_it() {
    for claude in every_claude() {
        let api = FakeAnthropic::start();
        let sink = OtlpSink::start();
        let mut s = sandbox(&api, &sink, None);
        s.set_env(
            "CLAUDE_TELEMETRY_CLAUDE__PATH",
            claude.display().to_string(),
        )
        .set_env("OTEL_TRACES_EXPORTER", "otlp")
        .set_env("CLAUDE_CODE_ENHANCED_TELEMETRY_BETA", "1")
        .set_env("OTEL_TRACES_EXPORT_INTERVAL", "1000");
        run_turn(&s);
        wait_for_events(&sink);
        let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
        let text = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            text.contains("last session"),
            "{}: doctor read the last session: {text}",
            claude.display()
        );
        assert!(
            !text.contains("withheld attributes"),
            "{}: a key claude sends is not in the relay's table (add it to KEYS in \
             src/relay/policy/privacy.rs after checking what it holds): {text}",
            claude.display()
        );
    }
}
