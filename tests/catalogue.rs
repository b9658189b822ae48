//! What the real Claude Code exports, checked against the harness: claude talks to the fake
//! Anthropic API and exports straight to the OTLP sink (no launcher involved). These pin the
//! catalogue in `claude-code-telemetry.md` that the relay and dashboards rely on, and prove
//! the harness measures what it claims.

mod support;

use std::time::Duration;

use support::anthropic::{AFTER_TOOL_TEXT, ANSWER_TEXT};
use support::checks::assert_telemetry_matches_api;
use support::{FakeAnthropic, OtlpSink, QueryKind, Reply, Rotel, Sandbox, Transport, claude_bin};

use support::checks::MODEL;

#[test]
fn print_mode_bash_turn_exports_tokens_cost_and_events_matching_the_api() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");

    let output = sandbox
        .command(&claude)
        .args(["-p", "RUN_BASH: echo harness-marker-$((6*7))"])
        .args(["--allowedTools", "Bash", "--model", MODEL])
        .output()
        .expect("run claude -p");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "claude -p failed: {:?}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(AFTER_TOOL_TEXT), "stdout: {stdout}");

    // The fake's script ran: a Bash call, then a text answer to its result.
    let calls = api.calls();
    let bash = calls
        .iter()
        .position(|c| matches!(c.reply, Reply::Bash { .. }))
        .expect("a Bash tool_use answer");
    let follow_up = calls
        .iter()
        .skip(bash + 1)
        .find(|c| c.query == QueryKind::Main)
        .expect("a main call after the tool ran");
    assert!(
        follow_up.body.to_string().contains("harness-marker-42"),
        "the Bash command ran and its output went back to the API"
    );
    assert_eq!(api.unknown_requests(), Vec::<String>::new());

    assert_telemetry_matches_api(&api, &sink, 1);
    let decisions = sink.events("tool_decision");
    assert!(
        decisions
            .iter()
            .any(|e| e.attributes.get("tool_name").map(String::as_str) == Some("Bash")),
        "tool_decision for Bash; {}",
        sink.summary()
    );
    let results = sink.events("tool_result");
    assert!(
        results.iter().any(|e| {
            e.attributes.get("tool_name").map(String::as_str) == Some("Bash")
                && e.attributes.get("success").map(String::as_str) == Some("true")
        }),
        "successful tool_result for Bash; {}",
        sink.summary()
    );
    // Default privacy: the prompt and the command never leave claude.
    assert!(!sink.raw_bytes_contain("harness-marker"));
}

#[test]
fn interactive_session_exports_tokens_cost_and_events_matching_the_api() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");

    let term = sandbox.tmux(&claude, &["--model", MODEL]);
    term.wait_for_text("? for shortcuts", Duration::from_secs(30));
    let prompt = "please greet the harness";
    term.submit(prompt);
    term.wait_for_text(ANSWER_TEXT, Duration::from_secs(30));
    term.exit_claude();
    let exit = term.wait_exit(Duration::from_secs(30));
    assert_eq!(
        exit.code,
        Some(0),
        "claude's exit; screen:\n{}",
        term.screen()
    );
    assert_eq!(api.unknown_requests(), Vec::<String>::new());

    assert_telemetry_matches_api(&api, &sink, 1);
    let prompts = sink.events("user_prompt");
    let exit_command = prompts
        .iter()
        .find(|e| e.attributes.contains_key("command_name"))
        .expect("/exit is reported as a user_prompt with command_name");
    assert_eq!(
        exit_command
            .attributes
            .get("command_name")
            .map(String::as_str),
        Some("exit")
    );
    let prompt_event = prompts
        .iter()
        .find(|e| !e.attributes.contains_key("command_name"))
        .expect("the typed prompt");
    assert_eq!(
        prompt_event.number("prompt_length"),
        Some(prompt.len() as f64)
    );
    assert_eq!(
        prompt_event.attributes.get("prompt").map(String::as_str),
        Some("<REDACTED>")
    );
}

#[test]
fn rotel_agent_receives_claude_telemetry_over_grpc() {
    let claude = claude_bin();
    let rotel = Rotel::start();
    let api = FakeAnthropic::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&rotel.grpc_endpoint(), "grpc");
    let output = sandbox
        .command(&claude)
        .args(["-p", "hello rotel", "--model", MODEL])
        .output()
        .expect("run claude -p");
    assert!(output.status.success(), "claude -p: {:?}", output.status);
    for needle in [
        "claude_code.token.usage",
        "claude_code.cost.usage",
        "claude_code.api_request",
    ] {
        assert!(
            rotel.wait_for_output(needle, Duration::from_secs(10)),
            "rotel-agent did not print {needle}; output:\n{}",
            rotel.output()
        );
    }
}

#[test]
fn print_mode_exports_over_http_protobuf_and_json_with_configured_headers() {
    let claude = claude_bin();
    for (protocol, transport) in [
        ("http/protobuf", Transport::HttpProtobuf),
        ("http/json", Transport::HttpJson),
    ] {
        let api = FakeAnthropic::start();
        let sink = OtlpSink::start();
        let mut sandbox = Sandbox::new(&api);
        sandbox
            .export_telemetry_to(&sink.http_endpoint(), protocol)
            .set_env("OTEL_EXPORTER_OTLP_HEADERS", "x-team=harness");
        let output = sandbox
            .command(&claude)
            .args(["-p", "hello over http", "--model", MODEL])
            .output()
            .expect("run claude -p");
        assert!(output.status.success(), "claude -p: {:?}", output.status);
        assert_telemetry_matches_api(&api, &sink, 1);
        let requests = sink.requests();
        assert!(
            requests.iter().all(|r| r.transport == transport),
            "{protocol}: every request over {transport:?}"
        );
        assert!(
            requests.iter().all(|r| r
                .headers
                .iter()
                .any(|(k, v)| k == "x-team" && v == "harness")),
            "{protocol}: OTEL_EXPORTER_OTLP_HEADERS sent on every request"
        );
    }
}

#[test]
fn print_mode_api_error_exits_nonzero_and_exports_api_error() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
    let output = sandbox
        .command(&claude)
        .args(["-p", "API_ERROR: 400", "--model", MODEL])
        .output()
        .expect("run claude -p");
    assert_eq!(
        output.status.code(),
        Some(1),
        "claude -p exits 1 on a non-retried API error; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        api.calls()
            .iter()
            .any(|c| matches!(c.reply, Reply::Error(400))),
        "the fake answered 400"
    );
    sink.wait_for(Duration::from_secs(10), "an api_error event", |s| {
        !s.events("api_error").is_empty()
    });
    let error = &sink.events("api_error")[0];
    assert_eq!(error.number("status_code"), Some(400.0));
    assert_eq!(sink.sum("claude_code.session.count", &[]), 1.0);
}

#[test]
fn interactive_ctrl_d_twice_exits_zero_and_flushes_session_count() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
    let term = sandbox.tmux(&claude, &["--model", MODEL]);
    term.wait_for_text("? for shortcuts", Duration::from_secs(30));
    term.exit_claude_with_ctrl_d();
    let exit = term.wait_exit(Duration::from_secs(30));
    assert_eq!(exit.code, Some(0), "screen:\n{}", term.screen());
    // No prompt, no API call: the session itself is still counted, flushed at exit.
    assert!(api.calls().is_empty());
    sink.wait_for(Duration::from_secs(5), "session.count", |s| {
        s.sum("claude_code.session.count", &[]) == 1.0
    });
}

#[test]
fn print_mode_with_collector_down_still_answers_and_exits_zero() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    sink.stop();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
    let output = sandbox
        .command(&claude)
        .args(["-p", "hello with nobody listening", "--model", MODEL])
        .output()
        .expect("run claude -p");
    assert!(output.status.success(), "claude -p: {:?}", output.status);
    assert!(String::from_utf8_lossy(&output.stdout).contains(ANSWER_TEXT));
    // Claude drops failed exports silently: nothing about telemetry on stderr.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.to_lowercase().contains("otlp"), "stderr: {stderr}");
}
