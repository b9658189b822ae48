//! Proves the test harness itself (no claude needed): the OTLP sink decodes every transport,
//! injects failures, and comes back on the same ports after a stop; the fake Anthropic API
//! follows its script and reports the usage it answered.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use prost::Message;
use serde_json::{Value, json};
use support::anthropic::{AFTER_TOOL_TEXT, ANSWER_TEXT};
use support::{Behaviour, FakeAnthropic, OtlpSink, PyProtocol, QueryKind, Reply, Transport, Usage};

fn metrics_request(name: &str, value: f64, kind: &str) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.to_string(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![KeyValue {
                                key: "type".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(kind.into())),
                                }),
                                ..Default::default()
                            }],
                            value: Some(number_data_point::Value::AsDouble(value)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 1,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn grpc_export(
    endpoint: String,
    request: ExportMetricsServiceRequest,
) -> Result<(), tonic::Status> {
    let mut client = MetricsServiceClient::connect(endpoint)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client.export(request).await.map(|_| ())
}

async fn http_post(url: String, content_type: &str, gzip: bool, body: Vec<u8>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type);
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    request
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[test]
fn sink_keeps_its_data_and_ports_across_stop_and_restart() {
    let rt = runtime();
    let sink = OtlpSink::start();
    let (grpc, http) = (sink.grpc_addr(), sink.http_addr());
    rt.block_on(grpc_export(
        sink.grpc_endpoint(),
        metrics_request("t.count", 2.0, "a"),
    ))
    .expect("export to a running sink");
    assert_eq!(sink.sum("t.count", &[("type", "a")]), 2.0);

    sink.stop();
    let refused = rt.block_on(grpc_export(
        sink.grpc_endpoint(),
        metrics_request("t.count", 5.0, "a"),
    ));
    assert!(refused.is_err(), "a stopped sink must not answer");
    assert!(
        std::net::TcpStream::connect(http).is_err(),
        "HTTP port closed"
    );

    sink.restart();
    assert_eq!((sink.grpc_addr(), sink.http_addr()), (grpc, http));
    rt.block_on(grpc_export(
        sink.grpc_endpoint(),
        metrics_request("t.count", 3.0, "a"),
    ))
    .expect("export after restart");
    assert_eq!(sink.sum("t.count", &[("type", "a")]), 5.0);
    assert_eq!(sink.sum("t.count", &[("type", "b")]), 0.0);
}

#[test]
fn sink_decodes_http_protobuf_json_and_gzip_and_rejects_bad_bodies() {
    let rt = runtime();
    let sink = OtlpSink::start();
    let url = format!("{}/v1/metrics", sink.http_endpoint());
    let proto = metrics_request("t.http", 1.0, "secret-marker-proto").encode_to_vec();
    let json_body = serde_json::to_vec(&metrics_request("t.http", 10.0, "json")).expect("json");
    let statuses = rt.block_on(async {
        vec![
            http_post(url.clone(), "application/x-protobuf", false, proto.clone()).await,
            http_post(url.clone(), "application/json", false, json_body).await,
            http_post(url.clone(), "application/x-protobuf", true, gzip(&proto)).await,
            http_post(
                url.clone(),
                "application/x-protobuf",
                false,
                b"\xff\xffgarbage".to_vec(),
            )
            .await,
            http_post(url.clone(), "text/plain", false, proto.clone()).await,
        ]
    });
    assert_eq!(statuses, vec![200, 200, 200, 400, 415]);
    assert_eq!(sink.sum("t.http", &[]), 12.0);
    assert_eq!(sink.sum("t.http", &[("type", "json")]), 10.0);
    let transports: Vec<Transport> = sink.requests().iter().map(|r| r.transport).collect();
    assert_eq!(
        transports,
        vec![
            Transport::HttpProtobuf,
            Transport::HttpJson,
            Transport::HttpProtobuf,
            Transport::HttpProtobuf
        ]
    );
    // Found in the gzip request only after decompression, and in the plain one as sent.
    assert!(sink.raw_bytes_contain("secret-marker-proto"));
    assert!(!sink.raw_bytes_contain("never-sent"));
}

#[test]
fn sink_injected_failures_are_answered_and_not_counted() {
    let rt = runtime();
    let sink = OtlpSink::start();
    let url = format!("{}/v1/metrics", sink.http_endpoint());
    sink.set_behaviour(Behaviour::unavailable());
    let grpc = rt.block_on(grpc_export(
        sink.grpc_endpoint(),
        metrics_request("t.f", 1.0, "a"),
    ));
    assert_eq!(grpc.map_err(|s| s.code()), Err(tonic::Code::Unavailable));
    let body = metrics_request("t.f", 1.0, "a").encode_to_vec();
    let status = rt.block_on(http_post(
        url.clone(),
        "application/x-protobuf",
        false,
        body.clone(),
    ));
    assert_eq!(status, 503);
    assert_eq!(sink.sum("t.f", &[]), 0.0);
    assert_eq!(sink.requests().len(), 2);
    assert!(sink.requests().iter().all(|r| !r.accepted));

    sink.set_behaviour(Behaviour::Delay(Duration::from_millis(400)));
    let started = Instant::now();
    let status = rt.block_on(http_post(url, "application/x-protobuf", false, body));
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(sink.sum("t.f", &[]), 1.0);
}

async fn post_messages(base: &str, body: Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/messages?beta=true"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /v1/messages");
    let status = response.status().as_u16();
    (status, response.text().await.expect("response body"))
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("SSE data is JSON"))
        .collect()
}

#[test]
fn fake_api_follows_its_script_and_records_the_usage_it_answered() {
    let rt = runtime();
    let api = FakeAnthropic::with_usage(|i, kind| Usage {
        input: 100 + i as u64,
        output: if kind == QueryKind::Main { 10 } else { 1 },
        cache_read: 7,
        cache_creation: 3,
        cache_creation_split: None,
    });
    let base = api.base_url();
    let bash_tool = json!([{"name": "Bash", "input_schema": {"type": "object"}}]);
    let (status, sse) = rt.block_on(post_messages(
        &base,
        json!({"model": "claude-sonnet-4-6", "stream": true, "tools": bash_tool,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "RUN_BASH: echo hi"}]},
                            {"role": "system", "content": "agents"}]}),
    ));
    assert_eq!(status, 200);
    let events = sse_data(&sse);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], 100);
    assert_eq!(events[0]["message"]["usage"]["cache_read_input_tokens"], 7);
    assert_eq!(events[1]["content_block"]["name"], "Bash");
    let input: Value = serde_json::from_str(
        events[3]["delta"]["partial_json"]
            .as_str()
            .expect("json delta"),
    )
    .expect("tool input");
    assert_eq!(input["command"], "echo hi");
    assert_eq!(events[5]["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[5]["usage"]["output_tokens"], 10);

    let (_, sse) = rt.block_on(post_messages(
        &base,
        json!({"model": "claude-sonnet-4-6", "stream": true, "tools": bash_tool,
               "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_fake_0000", "content": "hi"}]}]}),
    ));
    assert_eq!(sse_data(&sse)[3]["delta"]["text"], AFTER_TOOL_TEXT);

    let (status, body) = rt.block_on(post_messages(
        &base,
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hello"}]}),
    ));
    assert_eq!(status, 200);
    let message: Value = serde_json::from_str(&body).expect("JSON message");
    assert_eq!(message["content"][0]["text"], ANSWER_TEXT);
    assert_eq!(message["usage"]["output_tokens"], 1);

    let calls = api.calls();
    assert_eq!(calls.len(), 3);
    assert!(matches!(&calls[0].reply, Reply::Bash { command, .. } if command == "echo hi"));
    assert_eq!(calls[2].query, QueryKind::Auxiliary);
    assert!(!calls[2].stream);
    assert_eq!(api.total_usage(None).input, 100 + 101 + 102);
    assert_eq!(api.total_usage(Some(QueryKind::Main)).output, 20);
    // Sonnet 3/15/3.75/0.3 and Haiku 1/5/1.25/0.1 USD per million tokens.
    let main_cost = (201.0 * 3.0 + 20.0 * 15.0 + 6.0 * 3.75 + 14.0 * 0.3) / 1e6;
    let aux_cost = (102.0 * 1.0 + 1.0 * 5.0 + 3.0 * 1.25 + 7.0 * 0.1) / 1e6;
    assert!((api.expected_cost_usd(Some(QueryKind::Main)) - main_cost).abs() < 1e-12);
    assert!((api.expected_cost_usd(None) - (main_cost + aux_cost)).abs() < 1e-12);

    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    });
    assert_eq!(status, 404);
    assert_eq!(api.unknown_requests(), vec!["GET /v1/models".to_string()]);
}

#[test]
fn missing_tool_variable_fails_with_instructions() {
    let result = std::panic::catch_unwind(|| {
        support::tool_from_env("CLAUDE_TELEMETRY_TEST_SURELY_UNSET", "a tool")
    });
    let message = result
        .expect_err("an unset tool variable must fail the test")
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(message.contains("tests/run.sh"), "{message}");
}

#[test]
fn sink_receives_gzip_from_the_python_sdk_over_http_and_grpc() {
    let sink = OtlpSink::start();
    for (protocol, endpoint, value) in [
        (PyProtocol::HttpProtobuf, sink.http_endpoint(), 2.0),
        (PyProtocol::Grpc, sink.grpc_endpoint(), 5.0),
    ] {
        assert!(
            support::python::send_metric(&endpoint, protocol, true, "py.sent", value),
            "{protocol:?} export reported failure"
        );
    }
    assert_eq!(sink.sum("py.sent", &[("sender", "python")]), 7.0);
    let http = sink
        .requests()
        .into_iter()
        .find(|r| r.transport == Transport::HttpProtobuf)
        .expect("an HTTP request");
    assert!(
        http.raw.starts_with(&[0x1f, 0x8b]),
        "the HTTP body arrived gzip-compressed"
    );
    assert!(
        http.headers
            .iter()
            .any(|(k, v)| k == "content-encoding" && v == "gzip")
    );
}

#[test]
fn tmux_reports_every_exit_code_and_a_killing_signal() {
    let api = FakeAnthropic::start();
    let sandbox = support::Sandbox::new(&api);
    // Many short programs: Debian's tmux loses SIGCHLD now and then (libutempter); the
    // helper must still report each status.
    for code in 0..16 {
        let term = sandbox.tmux("/bin/sh", &["-c", &format!("sleep 0.2; exit {code}")]);
        let exit = term.wait_exit(Duration::from_secs(10));
        assert_eq!((exit.code, exit.signal), (Some(code), None));
    }
    let term = sandbox.tmux("/bin/sh", &["-c", "kill -TERM $$"]);
    let exit = term.wait_exit(Duration::from_secs(10));
    assert_eq!((exit.code, exit.signal), (None, Some(15)));
}
