//! The report over what the real Claude Code exports: claude runs against the fake Anthropic
//! API and exports to the test sink; every request the sink accepted goes through
//! `Store::append`, and `report --json` must give back the usage the API answered and the
//! cost claude computed from it. Needs `CLAUDE_TELEMETRY_TEST_CLAUDE` (fails without it).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::checks::MODEL;
use support::sink::Decoded;
use support::{FakeAnthropic, OtlpSink, Sandbox, claude_bin};

use super::tests_support::report_json;
use crate::otlp::ExportRequest;
use crate::store::{Store, StoreBounds};

#[test]
fn report_totals_equal_the_usage_the_api_answered_and_the_cost_claude_computed() {
    let claude = claude_bin();
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::new(&api);
    sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
    sandbox.set_env("OTEL_RESOURCE_ATTRIBUTES", "project=demo,team.id=platform");
    let output = sandbox
        .command(&claude)
        .args(["-p", "RUN_BASH: echo store-report-check"])
        .args(["--allowedTools", "Bash", "--model", MODEL])
        .output()
        .expect("run claude -p");
    assert!(output.status.success(), "claude -p failed: {output:?}");
    let total = api.total_usage(None);
    sink.wait_for(
        Duration::from_secs(10),
        "token usage equal to the API's",
        |s| s.sum("claude_code.token.usage", &[("type", "input")]) == total.input as f64,
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let store = Store::open(&db, StoreBounds::default()).expect("open store");
    for received in sink.requests().into_iter().filter(|r| r.accepted) {
        let request = match received.decoded.expect("the sink decoded what it accepted") {
            Decoded::Metrics(r) => ExportRequest::Metrics(r),
            Decoded::Logs(r) => ExportRequest::Logs(r),
            Decoded::Traces(r) => ExportRequest::Traces(r),
        };
        store.append_blocking(request).expect("append");
    }
    store.close_blocking().expect("close");

    let j = report_json(&db, &["--utc", "--by", "project"]);
    let s = &j["summary"];
    let tokens = [
        ("input", total.input),
        ("output", total.output),
        ("cache_read", total.cache_read),
        ("cache_creation", total.cache_creation),
    ];
    for (field, expected) in tokens {
        assert_eq!(s["tokens"][field], expected, "tokens.{field}; report {s}");
        let from_events = &s["events"][format!("{field}_tokens")];
        assert_eq!(*from_events, expected, "events.{field}_tokens");
    }
    let expected_cost = api.expected_cost_usd(None);
    let cost = s["cost_usd"].as_f64().expect("cost");
    let event_cost = s["events"]["cost_usd"].as_f64().expect("event cost");
    assert!(
        (cost - expected_cost).abs() < 1e-9,
        "cost {cost} != {expected_cost}"
    );
    assert!(
        (event_cost - expected_cost).abs() < 1e-9,
        "api_request cost {event_cost}"
    );
    assert_eq!(s["sessions"], 1);
    assert_eq!(s["sessions_started"], 1);
    assert_eq!(s["api"]["requests"], api.calls().len());
    assert_eq!(s["prompts"], 1);
    assert!(
        s["tools"]["accepts"].as_u64() >= Some(1),
        "Bash was allowed: {s}"
    );
    assert!(s["tools"]["runs"].as_u64() >= Some(1), "Bash ran: {s}");
    let rows = j["breakdown"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "one project: {rows:?}");
    assert_eq!(rows[0]["key"], "demo");
}
