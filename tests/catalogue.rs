//! What the real Claude Code exports, checked against the harness: claude talks to the fake
//! Anthropic API and exports straight to the OTLP sink (no launcher involved). These pin the
//! catalogue in `claude-code-telemetry.md` that the relay and dashboards rely on, and prove
//! the harness measures what it claims.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::anthropic::{AFTER_TOOL_TEXT, ANSWER_TEXT};
use support::{FakeAnthropic, OtlpSink, QueryKind, Reply, Rotel, Sandbox, Transport, claude_bin};

const MODEL: &str = "claude-sonnet-4-6";
const TOKEN_TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

/// Asserts the sink's metrics and events agree exactly with what the fake API answered.
fn assert_telemetry_matches_api(api: &FakeAnthropic, sink: &OtlpSink, prompts: usize) {
    let calls = api.calls();
    assert!(!calls.is_empty(), "claude made no API call");
    let total = api.total_usage(None);
    // Claude flushes before it exits; allow a little slack for the last export anyway.
    sink.wait_for(
        Duration::from_secs(10),
        "token usage equal to the API's",
        |s| s.sum("claude_code.token.usage", &[("type", "input")]) == total.input as f64,
    );

    assert_eq!(
        sink.sum("claude_code.session.count", &[]),
        1.0,
        "one session; {}",
        sink.summary()
    );
    for kind in TOKEN_TYPES {
        let expected = total.by_metric_type(kind).unwrap_or_default() as f64;
        assert_eq!(
            sink.sum("claude_code.token.usage", &[("type", kind)]),
            expected,
            "claude_code.token.usage type={kind}"
        );
        for query in [QueryKind::Main, QueryKind::Auxiliary] {
            let expected = api
                .total_usage(Some(query))
                .by_metric_type(kind)
                .unwrap_or_default() as f64;
            assert_eq!(
                sink.sum(
                    "claude_code.token.usage",
                    &[("type", kind), ("query_source", query.metric_attribute())]
                ),
                expected,
                "claude_code.token.usage type={kind} query_source={}",
                query.metric_attribute()
            );
        }
    }
    let expected_cost = api.expected_cost_usd(None);
    let cost = sink.sum("claude_code.cost.usage", &[]);
    assert!(
        (cost - expected_cost).abs() < 1e-9,
        "claude_code.cost.usage {cost} != {expected_cost} derived from the usage answered"
    );
    for point in sink.points("claude_code.token.usage") {
        assert!(
            point
                .attributes
                .get("model")
                .is_some_and(|m| m.starts_with(MODEL)),
            "token point with model {:?}",
            point.attributes.get("model")
        );
        assert!(point.attributes.contains_key("session.id"));
        assert!(point.attributes.contains_key("user.id"));
    }

    // One api_request event per API call, carrying the call's request id and usage.
    let events = sink.events("api_request");
    let event_ids: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.attributes.get("request_id").cloned())
        .collect();
    let call_ids: BTreeSet<String> = calls.iter().map(|c| c.request_id.clone()).collect();
    assert_eq!(event_ids, call_ids, "api_request events vs API calls");
    assert_eq!(events.len(), calls.len());
    let mut event_cost = 0.0;
    for event in &events {
        let call = calls
            .iter()
            .find(|c| Some(&c.request_id) == event.attributes.get("request_id"))
            .expect("event for a recorded call");
        assert_eq!(
            event.attributes.get("model").map(String::as_str),
            Some(MODEL)
        );
        assert_eq!(event.number("input_tokens"), Some(call.usage.input as f64));
        assert_eq!(
            event.number("output_tokens"),
            Some(call.usage.output as f64)
        );
        assert_eq!(
            event.number("cache_read_tokens"),
            Some(call.usage.cache_read as f64)
        );
        assert_eq!(
            event.number("cache_creation_tokens"),
            Some(call.usage.cache_creation as f64)
        );
        assert_eq!(event.body, "claude_code.api_request");
        event_cost += event.number("cost_usd").expect("cost_usd on api_request");
    }
    assert!(
        (event_cost - expected_cost).abs() < 1e-9,
        "sum of api_request cost_usd {event_cost} != {expected_cost}"
    );
    // Typed prompts; slash commands (`/exit`) are user_prompt events too, with `command_name`.
    let typed = sink
        .events("user_prompt")
        .iter()
        .filter(|e| !e.attributes.contains_key("command_name"))
        .count();
    assert_eq!(typed, prompts, "user_prompt events without command_name");
    let resource = &events[0].resource;
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("claude-code")
    );
    assert_eq!(
        resource.get("service.version").map(String::as_str),
        Some(support::CLAUDE_VERSION)
    );
}

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
