//! Relay CPU per request: policy rules versus pass-through (decode + encode only), on a busy
//! Claude Code flush (one logs request of 40 events with prompt/tool text switched on, one
//! metrics request of 24 points of a logged-in user).
//!
//! Run: `cargo bench --bench policy` (prints figures; no assertions). Target: rules add at most
//! 10% to the pass-through cost.

// The policy modules are compiled into this bench by path; what the bench does not call (and
// their test modules, compiled here without the test harness) would otherwise warn.
#![allow(dead_code, unused_imports)]

#[path = "../src/otlp/mod.rs"]
mod otlp;

#[path = "../src/settings"]
mod settings {
    pub mod budget;
    pub mod policy;
}

#[path = "../src/relay"]
mod relay {
    pub mod policy;
}

use std::hint::black_box;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};

use otlp::{ExportRequest, Signal};
use relay::policy::explain::sample_requests;
use relay::policy::{LaunchContext, Policy};
use settings::policy::{IdentifierMode, PolicySettings, TextMode};

fn s(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn set(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    attrs.retain(|kv| kv.key != key);
    attrs.push(s(key, value));
}

/// 40 events as one busy 5-second flush: prompts, API calls, responses, tool decisions and
/// results (Bash with parameters and input), an API error.
fn busy_logs(template: &ExportRequest) -> ExportRequest {
    let ExportRequest::Logs(mut req) = template.clone() else {
        unreachable!("logs template")
    };
    let records = &mut req.resource_logs[0].scope_logs[0].log_records;
    let prompt = records[0].clone();
    let tool_result = records[1].clone();
    let common: Vec<KeyValue> = prompt
        .attributes
        .iter()
        .filter(|kv| {
            matches!(
                kv.key.as_str(),
                "user.id"
                    | "session.id"
                    | "organization.id"
                    | "user.email"
                    | "user.account_uuid"
                    | "terminal.type"
                    | "prompt.id"
            )
        })
        .cloned()
        .collect();
    records.clear();
    for i in 0..40 {
        let seq = i.to_string();
        let mut rec = match i % 5 {
            0 => prompt.clone(),
            1 | 3 => tool_result.clone(),
            _ => {
                let mut r = prompt.clone();
                r.attributes = common.clone();
                r
            }
        };
        match i % 5 {
            2 => {
                let a = &mut rec.attributes;
                set(a, "event.name", "api_request");
                for (k, v) in [
                    ("model", "claude-opus-4-8"),
                    ("cost_usd", "0.0421"),
                    ("cost_usd_micros", "42100"),
                    ("input_tokens", "1834"),
                    ("output_tokens", "312"),
                    ("cache_read_tokens", "20480"),
                    ("cache_creation_tokens", "0"),
                    ("duration_ms", "4210"),
                    ("request_id", "req_011CV8hX3nJ6sQ2wE5rT7yU9"),
                    ("speed", "normal"),
                    ("query_source", "main"),
                    ("effort", "high"),
                    ("event.timestamp", "2025-11-25T15:05:02.000Z"),
                ] {
                    set(a, k, v);
                }
                rec.body = Some(AnyValue {
                    value: Some(Value::StringValue("claude_code.api_request".into())),
                });
            }
            4 => {
                let a = &mut rec.attributes;
                set(a, "event.name", "assistant_response");
                set(
                    a,
                    "response",
                    "I ran the deploy hook; it printed done. The result was mailed to ada.lovelace@example.com as asked. Next I will check the rate limits in src/limits.rs and update the tests.",
                );
                set(a, "response_length", "171");
                set(a, "model", "claude-opus-4-8");
                set(a, "request_id", "req_011CV8hX3nJ6sQ2wE5rT7yU9");
                set(a, "event.timestamp", "2025-11-25T15:05:03.000Z");
                rec.body = Some(AnyValue {
                    value: Some(Value::StringValue("claude_code.assistant_response".into())),
                });
            }
            _ => {}
        }
        set(&mut rec.attributes, "event.sequence", &seq);
        records.push(rec);
    }
    ExportRequest::Logs(req)
}

/// 24 points: the token, cost, active-time, lines and session metrics claude sends.
fn busy_metrics(template: &ExportRequest) -> ExportRequest {
    let ExportRequest::Metrics(mut req) = template.clone() else {
        unreachable!("metrics template")
    };
    let metrics = &mut req.resource_metrics[0].scope_metrics[0].metrics;
    let token = metrics[0].clone();
    let point = match &token.data {
        Some(Data::Sum(s)) => s.data_points[0].clone(),
        _ => unreachable!("sum template"),
    };
    let mut out: Vec<Metric> = Vec::new();
    let shapes: [(&str, &[&str]); 6] = [
        (
            "claude_code.token.usage",
            &["input", "output", "cacheRead", "cacheCreation"],
        ),
        ("claude_code.cost.usage", &["a", "b"]),
        ("claude_code.active_time.total", &["cli", "user"]),
        ("claude_code.lines_of_code.count", &["added", "removed"]),
        ("claude_code.session.count", &["x"]),
        ("claude_code.code_edit_tool.decision", &["accept"]),
    ];
    for (name, types) in shapes {
        let mut m = token.clone();
        m.name = name.into();
        let Some(Data::Sum(sum)) = &mut m.data else {
            unreachable!("sum")
        };
        sum.data_points.clear();
        for (mi, model) in ["claude-opus-4-8[1m]", "claude-haiku-4-5"]
            .iter()
            .enumerate()
        {
            for (ti, t) in types.iter().enumerate() {
                if sum.data_points.len() >= 4 {
                    break;
                }
                let mut p = point.clone();
                set(&mut p.attributes, "type", t);
                set(&mut p.attributes, "model", model);
                p.value = Some(number_data_point::Value::AsDouble(
                    (mi * 10 + ti) as f64 + 0.5,
                ));
                sum.data_points.push(p);
            }
        }
        out.push(m);
    }
    *metrics = out;
    ExportRequest::Metrics(req)
}

fn ctx() -> LaunchContext {
    LaunchContext {
        project_name: Some("billing-api".into()),
        git_branch: Some("main".into()),
        service_instance_id: Some("7c1e2f00-0000-4000-8000-000000000001".into()),
        hash_key: vec![7; 32],
    }
}

/// Decode (+ policy) + encode of one request: what the relay does per request.
fn one_request(signal: Signal, bytes: &[u8], policy: Option<&Policy>) {
    let Ok(mut req) = ExportRequest::decode(signal, black_box(bytes)) else {
        unreachable!("bench input decodes")
    };
    if let Some(p) = policy {
        p.apply(&mut req);
    }
    black_box(req.encode_to_vec());
}

/// Mean time per request of each configuration: rounds of ~0.1 s per configuration,
/// interleaved so that load from other work on a shared machine hits all of them alike, and
/// the fastest round of each kept (the least disturbed one).
fn time_interleaved(
    signal: Signal,
    bytes: &[u8],
    configs: &[(&str, Option<&Policy>)],
) -> Vec<Duration> {
    for &(_, p) in configs {
        for _ in 0..100 {
            one_request(signal, bytes, p);
        }
    }
    let mut best = vec![Duration::MAX; configs.len()];
    for _ in 0..15 {
        for (i, &(_, p)) in configs.iter().enumerate() {
            let mut iters: u32 = 0;
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(100) {
                for _ in 0..20 {
                    one_request(signal, bytes, p);
                }
                iters += 20;
            }
            best[i] = best[i].min(start.elapsed() / iters);
        }
    }
    best
}

fn main() {
    let Ok((logs_t, metrics_t)) = sample_requests() else {
        unreachable!("fixtures decode")
    };
    let logs = busy_logs(&logs_t).encode_to_vec();
    let metrics = busy_metrics(&metrics_t).encode_to_vec();

    let default = PolicySettings::default();
    let mut keep_redact = PolicySettings::default();
    keep_redact.privacy.prompts = TextMode::Keep;
    keep_redact.privacy.tool_details = TextMode::Keep;
    keep_redact.privacy.redact = vec![r"(?i)password\s*[:=]\s*\S+".into(), r"TICKET-\d+".into()];
    let mut heavy = default.clone();
    heavy.privacy.identifiers = IdentifierMode::Drop;
    heavy.cardinality.drop_metric_attributes =
        vec!["model".into(), "terminal.type".into(), "app.version".into()];

    let Ok(p_default) = Policy::new(&default, &ctx()) else {
        unreachable!("default policy compiles")
    };
    let Ok(p_keep) = Policy::new(&keep_redact, &ctx()) else {
        unreachable!("keep policy compiles")
    };
    let Ok(p_heavy) = Policy::new(&heavy, &ctx()) else {
        unreachable!("heavy policy compiles")
    };
    let configs: [(&str, Option<&Policy>); 4] = [
        ("pass-through (decode+encode)", None),
        ("default policy", Some(&p_default)),
        ("keep text + redaction", Some(&p_keep)),
        ("drop ids + merge points", Some(&p_heavy)),
    ];

    for (name, signal, bytes) in [
        ("logs: 40 events", Signal::Logs, &logs),
        ("metrics: 24 points", Signal::Metrics, &metrics),
    ] {
        // POLICY_BENCH_ONLY=<signal>/<label> + POLICY_BENCH_ITERS=<n>: run exactly n requests
        // of one configuration, untimed (benches/policy-instructions.sh counts instructions).
        if let (Ok(only), Some(n)) = (
            std::env::var("POLICY_BENCH_ONLY"),
            std::env::var("POLICY_BENCH_ITERS")
                .ok()
                .and_then(|n| n.parse::<u32>().ok()),
        ) {
            for &(label, p) in &configs {
                if only == format!("{}/{label}", signal.as_str()) {
                    for _ in 0..n {
                        one_request(signal, bytes, p);
                    }
                }
            }
            continue;
        }
        println!("{name} ({} bytes protobuf)", bytes.len());
        let times = time_interleaved(signal, bytes, &configs);
        for (&(label, _), d) in configs.iter().zip(&times) {
            let extra = (d.as_secs_f64() / times[0].as_secs_f64() - 1.0) * 100.0;
            println!(
                "  {label:<30} {:>8.2} µs/request  {extra:>+6.1} %",
                d.as_secs_f64() * 1e6
            );
        }
    }
}
