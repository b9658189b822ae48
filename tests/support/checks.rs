//! Assertions shared by the whole-program tests: what a person would check on the upstream.

use super::{FakeAnthropic, OtlpSink, QueryKind};
use std::collections::BTreeSet;
use std::time::Duration;

/// The model the tests ask claude for.
pub const MODEL: &str = "claude-sonnet-4-6";
/// Token types claude reports in `claude_code.token.usage`.
pub const TOKEN_TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

/// Asserts the sink's metrics and events agree exactly with what the fake API answered (by the
/// claude of the test's release).
pub fn assert_telemetry_matches_api(api: &FakeAnthropic, sink: &OtlpSink, prompts: usize) {
    let release = super::current_release();
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
        Some(release.version),
        "service.version of claude {}",
        release.version
    );
}
