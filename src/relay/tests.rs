//! Relay behaviour over real sockets: protocol errors, forwarding, draining.

use super::*;
use crate::relay::outbox::Outbox;
use crate::settings::Protocol;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use prost::Message;
use std::io::Write;
use std::sync::atomic::Ordering;

fn sample_metrics(value: f64) -> ExportMetricsServiceRequest {
    let point = NumberDataPoint {
        attributes: vec![KeyValue {
            key: "session.id".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("s1".into())),
            }),
            ..Default::default()
        }],
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.cost.usage".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![point],
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

/// The default policy, with a fixed hashing key (no data dir needed).
fn pass_policy() -> std::sync::Arc<policy::Policy> {
    let settings = crate::settings::policy::PolicySettings::default();
    let ctx = policy::LaunchContext {
        project_name: None,
        git_branch: None,
        service_instance_id: None,
        hash_key: vec![7; 32],
    };
    std::sync::Arc::new(policy::Policy::new(&settings, &ctx).unwrap())
}

fn local_only() -> UpstreamSettings {
    UpstreamSettings {
        enabled: false,
        ..Default::default()
    }
}

fn relay_settings(max: u64) -> RelaySettings {
    RelaySettings {
        max_request_bytes: max,
        ..Default::default()
    }
}

async fn post(
    addr: SocketAddr,
    path: &str,
    ctype: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("http://{addr}{path}"))
        .header("content-type", ctype)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned(),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn bad_http_requests_get_proper_errors_and_the_relay_keeps_serving() {
    let relay = start(
        &relay_settings(64 * 1024),
        &local_only(),
        pass_policy(),
        Outbox::memory(100),
    )
    .await
    .unwrap();
    let addr = relay.http_addr;
    let good = sample_metrics(1.0).encode_to_vec();
    let ok = |r: (u16, String)| assert_eq!(r.0, 200, "{}", r.1);

    ok(post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        good.clone(),
    )
    .await);
    let (status, body) = post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(status, 400, "garbage protobuf: {body}");
    ok(post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        good.clone(),
    )
    .await);

    let (status, body) = post(
        addr,
        "/v1/logs",
        "application/json",
        None,
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "bad json");
    assert!(
        body.contains("\"code\":3"),
        "JSON error body is a Status: {body}"
    );
    let (status, _) = post(
        addr,
        "/v1/metrics",
        "application/json",
        None,
        br#"{"resource_metrics":[{}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400, "snake_case JSON decodes to nothing");
    ok(post(
        addr,
        "/v1/logs",
        "application/json",
        None,
        br#"{"resourceLogs":[]}"#.to_vec(),
    )
    .await);

    let (status, _) = post(addr, "/v1/metrics", "text/plain", None, good.clone()).await;
    assert_eq!(status, 415, "wrong content type");
    let (status, _) = post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        Some("br"),
        good.clone(),
    )
    .await;
    assert_eq!(status, 415, "unsupported content encoding");

    let (status, _) = post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        vec![0u8; 70 * 1024],
    )
    .await;
    assert_eq!(status, 413, "oversize body");
    let bomb = gzip(&vec![0u8; 1024 * 1024]);
    let (status, _) = post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        Some("gzip"),
        bomb,
    )
    .await;
    assert_eq!(status, 413, "oversize after inflation");
    let (status, _) = post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "bad gzip");
    ok(post(
        addr,
        "/v1/metrics",
        "application/x-protobuf",
        Some("gzip"),
        gzip(&good),
    )
    .await);

    let stats = relay.stats.clone();
    relay.shutdown(Duration::from_millis(10)).await;
    assert_eq!(stats.received_requests.load(Ordering::Relaxed), 4);
    assert_eq!(stats.received_metric_points.load(Ordering::Relaxed), 3);
    assert_eq!(
        stats.shed.snapshot().too_large,
        2,
        "the oversize body and the oversize inflation are counted for the exit line"
    );
}

#[tokio::test]
async fn garbage_grpc_request_is_invalid_argument_and_serving_continues() {
    use crate::relay::rpc::RawCodec;
    let relay = start(
        &RelaySettings::default(),
        &local_only(),
        pass_policy(),
        Outbox::memory(100),
    )
    .await
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", relay.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    );
    let status = grpc
        .unary::<bytes::Bytes, bytes::Bytes, _>(
            tonic::Request::new(bytes::Bytes::from_static(&[0xff, 0xff])),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let mut client = opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::new(channel)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client.export(sample_metrics(2.0)).await.unwrap();
    assert_eq!(
        relay.stats.received_metric_points.load(Ordering::Relaxed),
        1
    );
    relay.shutdown(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn requests_are_forwarded_to_the_upstream_over_grpc_and_http() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let sink = start(
            &RelaySettings::default(),
            &local_only(),
            pass_policy(),
            Outbox::memory(100),
        )
        .await
        .unwrap();
        let endpoint = match protocol {
            Protocol::Grpc => format!("http://{}", sink.grpc_addr),
            Protocol::HttpProtobuf => format!("http://{}", sink.http_addr),
        };
        let upstream = UpstreamSettings {
            endpoint,
            protocol,
            ..Default::default()
        };
        let relay = start(
            &RelaySettings::default(),
            &upstream,
            pass_policy(),
            Outbox::memory(100),
        )
        .await
        .unwrap();
        let (status, _) = post(
            relay.http_addr,
            "/v1/metrics",
            "application/x-protobuf",
            None,
            sample_metrics(3.5).encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200);
        let report = relay.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report, DrainReport::default(), "{protocol:?}");
        assert_eq!(
            sink.stats.received_metric_points.load(Ordering::Relaxed),
            1,
            "{protocol:?}"
        );
        sink.shutdown(Duration::ZERO).await;
    }
}

#[tokio::test]
async fn upstream_down_is_bounded_by_the_drain_deadline_and_counted() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let upstream = UpstreamSettings {
        endpoint: format!("http://{dead_addr}"),
        ..Default::default()
    };
    let relay = start(
        &RelaySettings::default(),
        &upstream,
        pass_policy(),
        Outbox::memory(100),
    )
    .await
    .unwrap();
    for v in [1.0, 2.0] {
        let (status, _) = post(
            relay.http_addr,
            "/v1/metrics",
            "application/x-protobuf",
            None,
            sample_metrics(v).encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200, "accepted even though the upstream is down");
    }
    let started = std::time::Instant::now();
    let report = relay.shutdown(Duration::from_millis(400)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.undelivered_requests, 2);
    assert_eq!(report.undelivered_items, 2);
}

/// A logs request of one record whose body is `text`.
fn one_log(text: &str) -> ExportRequest {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    ExportRequest::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(text.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

#[tokio::test]
async fn rows_go_upstream_together_and_one_refused_row_does_not_take_the_others_with_it() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    // An OTLP/HTTP upstream that refuses (400, permanent) any request holding "poison".
    let accepted: Arc<std::sync::Mutex<Vec<ExportLogsServiceRequest>>> = Arc::default();
    let exports = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = {
        let (accepted, exports) = (accepted.clone(), exports.clone());
        axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move |body: bytes::Bytes| async move {
                exports.fetch_add(1, Ordering::Relaxed);
                if memchr::memmem::find(&body, b"poison").is_some() {
                    return http::StatusCode::BAD_REQUEST;
                }
                let request = ExportLogsServiceRequest::decode(body).expect("a logs request");
                accepted.lock().unwrap().push(request);
                http::StatusCode::OK
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), Default::default()).unwrap();
    let outbox = Arc::new(Outbox::durable(
        store,
        "a".into(),
        Duration::from_secs(30),
        false,
        10,
    ));
    for text in ["one", "two", "poison", "four", "five"] {
        outbox.push(one_log(text)).await.unwrap();
    }
    outbox.close();
    let upstream = forward::Upstream::connect(&UpstreamSettings {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::HttpProtobuf,
        ..Default::default()
    })
    .unwrap();
    let stats = Arc::new(RelayStats::default());
    forward::Forwarder::new(
        outbox.clone(),
        upstream,
        stats.clone(),
        Duration::from_secs(1),
    )
    .run(CancellationToken::new())
    .await;

    let texts: Vec<String> = accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .filter_map(|lr| match lr.body.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["one", "two", "four", "five"], "each once, in order");
    // One export of all five (refused), then each alone.
    assert_eq!(exports.load(Ordering::Relaxed), 6);
    assert_eq!(stats.rejected_requests.load(Ordering::Relaxed), 1);
    assert_eq!(stats.delivered_requests.load(Ordering::Relaxed), 5);
    assert_eq!(outbox.remaining().await.requests, 0);
    server.abort();
}

#[tokio::test]
async fn rows_of_one_signal_go_upstream_as_one_export() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    let exports: Arc<std::sync::Mutex<Vec<usize>>> = Arc::default();
    let app = {
        let exports = exports.clone();
        axum::Router::new().route(
            "/v1/logs",
            axum::routing::post(move |body: bytes::Bytes| async move {
                let request = ExportLogsServiceRequest::decode(body).expect("a logs request");
                exports.lock().unwrap().push(request.resource_logs.len());
                http::StatusCode::OK
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("s.db"), Default::default()).unwrap();
    let outbox = Arc::new(Outbox::durable(
        store,
        "a".into(),
        Duration::from_secs(30),
        false,
        10,
    ));
    for n in 0..3 {
        outbox.push(one_log(&n.to_string())).await.unwrap();
    }
    outbox.close();
    let upstream = forward::Upstream::connect(&UpstreamSettings {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::HttpProtobuf,
        ..Default::default()
    })
    .unwrap();
    let stats = Arc::new(RelayStats::default());
    forward::Forwarder::new(
        outbox.clone(),
        upstream,
        stats.clone(),
        Duration::from_secs(1),
    )
    .run(CancellationToken::new())
    .await;
    assert_eq!(*exports.lock().unwrap(), [3], "three rows, one export");
    assert_eq!(stats.delivered_requests.load(Ordering::Relaxed), 3);
    server.abort();
}

/// A durable outbox over a store that has already failed (closed under it).
async fn failed_store_outbox(dir: &std::path::Path, local_only: bool) -> Outbox {
    let store = crate::store::Store::open(&dir.join("s.db"), Default::default()).unwrap();
    store.close().await.unwrap();
    Outbox::durable(store, "a".into(), Duration::from_secs(30), local_only, 10)
}

#[tokio::test]
async fn a_failed_store_with_nowhere_else_to_go_answers_retryable_never_success() {
    let mut unusable = UpstreamSettings {
        endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    unusable.headers.insert("bad header".into(), "x".into());
    for (upstream, case) in [(local_only(), "local-only"), (unusable, "no upstream")] {
        let dir = tempfile::tempdir().unwrap();
        let outbox = failed_store_outbox(dir.path(), !upstream.is_active()).await;
        let relay = start(&RelaySettings::default(), &upstream, pass_policy(), outbox)
            .await
            .unwrap();
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/metrics", relay.http_addr))
            .header("content-type", "application/x-protobuf")
            .body(sample_metrics(1.0).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 503, "{case}: HTTP");
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(
            retry_after.as_deref(),
            Some(REFUSED_RETRY_AFTER_SECS.to_string().as_str()),
            "{case}"
        );
        let body = response.bytes().await.unwrap();
        let status = crate::relay::rpc::RpcStatus::decode(body).unwrap();
        assert_eq!(status.code, 14, "{case}: {}", status.message);
        assert!(status.message.contains("local store"), "{}", status.message);

        let mut client = opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::connect(
            format!("http://{}", relay.grpc_addr),
        )
        .await
        .unwrap();
        let status = client.export(sample_metrics(2.0)).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{case}: {status:?}"
        );
        assert_eq!(
            crate::relay::rpc::retry_delay(status.details()),
            Some(Duration::from_secs(REFUSED_RETRY_AFTER_SECS)),
            "{case}: a RetryInfo says when"
        );

        let stats = relay.stats.clone();
        let report = relay.shutdown(Duration::from_millis(100)).await;
        let failure = report.store_failure.expect("the failure is reported");
        assert_eq!((failure.to_memory, failure.refused), (0, 2), "{case}");
        assert_eq!(stats.refused_requests.load(Ordering::Relaxed), 2);
        assert_eq!(
            report.undelivered_in_memory, 0,
            "{case}: nothing held to be lost"
        );
    }
}

#[tokio::test]
async fn one_metric_too_large_for_the_upstream_arrives_split_by_its_data_points() {
    // An OTLP/HTTP upstream that answers 413 to any body over 8 KiB.
    const LIMIT: usize = 8 * 1024;
    let points: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let app = {
        let points = points.clone();
        axum::Router::new().route(
            "/v1/metrics",
            axum::routing::post(move |body: bytes::Bytes| async move {
                if body.len() > LIMIT {
                    return http::StatusCode::PAYLOAD_TOO_LARGE;
                }
                let request = ExportMetricsServiceRequest::decode(body).expect("metrics");
                for rm in &request.resource_metrics {
                    for sm in &rm.scope_metrics {
                        for m in &sm.metrics {
                            assert_eq!(m.name, "claude_code.cost.usage");
                            let Some(metric::Data::Sum(sum)) = &m.data else {
                                panic!("a sum stays a sum");
                            };
                            assert!(sum.is_monotonic && sum.aggregation_temporality == 1);
                            for p in &sum.data_points {
                                if let Some(number_data_point::Value::AsDouble(v)) = p.value {
                                    points.lock().unwrap().push(v);
                                }
                            }
                        }
                    }
                }
                http::StatusCode::OK
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // One metric of 4,000 points (over 10 times the limit): only its points can be split.
    let mut request = sample_metrics(0.0);
    let sum = match &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(metric::Data::Sum(sum)) => sum,
        _ => unreachable!(),
    };
    let point = sum.data_points[0].clone();
    sum.data_points = (0..4000)
        .map(|i| NumberDataPoint {
            value: Some(number_data_point::Value::AsDouble(f64::from(i))),
            ..point.clone()
        })
        .collect();
    assert!(request.encoded_len() > 10 * LIMIT);
    let outbox = Arc::new(Outbox::memory(10));
    outbox.push(ExportRequest::Metrics(request)).await.unwrap();
    outbox.close();
    let upstream = forward::Upstream::connect(&UpstreamSettings {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::HttpProtobuf,
        ..Default::default()
    })
    .unwrap();
    let stats = Arc::new(RelayStats::default());
    forward::Forwarder::new(outbox, upstream, stats.clone(), Duration::from_secs(1))
        .run(CancellationToken::new())
        .await;
    let mut got = points.lock().unwrap().clone();
    got.sort_by(f64::total_cmp);
    let want: Vec<f64> = (0..4000).map(f64::from).collect();
    assert_eq!(got, want, "every point once");
    assert_eq!(stats.dropped_too_large_items.load(Ordering::Relaxed), 0);
    assert_eq!(stats.split_requests.load(Ordering::Relaxed), 1);
    server.abort();
}

#[tokio::test]
async fn a_relay_whose_grpc_upstream_is_another_relay_with_a_smaller_limit_splits_not_drops() {
    // The upstream relay (a team relay) takes at most 64 KiB per request and answers larger
    // ones with its own RESOURCE_EXHAUSTED.
    let team = start(
        &relay_settings(64 * 1024),
        &local_only(),
        pass_policy(),
        Outbox::memory(10_000),
    )
    .await
    .unwrap();
    let relay = start(
        &RelaySettings::default(),
        &UpstreamSettings {
            endpoint: format!("http://{}", team.grpc_addr),
            protocol: Protocol::Grpc,
            ..Default::default()
        },
        pass_policy(),
        Outbox::memory(100),
    )
    .await
    .unwrap();
    // One metric of 4,000 points, each its own series (~300 KB).
    let mut request = sample_metrics(0.0);
    if let Some(metric::Data::Sum(sum)) =
        &mut request.resource_metrics[0].scope_metrics[0].metrics[0].data
    {
        let point = sum.data_points[0].clone();
        sum.data_points = (0..4000)
            .map(|i| {
                let mut p = point.clone();
                p.attributes.push(KeyValue {
                    key: "model".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("m{i}"))),
                    }),
                    ..Default::default()
                });
                p
            })
            .collect();
    }
    let mut forwarded = ExportRequest::Metrics(request.clone());
    pass_policy().apply(&mut forwarded);
    let expected = forwarded.item_count() as u64;
    let size = split::encoded_len(&forwarded);
    assert!(
        expected > 1000 && size > 2 * 64 * 1024,
        "{expected} points, {size} bytes"
    );
    let (status, body) = post(
        relay.http_addr,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stats = relay.stats.clone();
    let report = relay.shutdown(Duration::from_secs(20)).await;
    assert_eq!(report.undelivered_requests, 0, "{report:?}");
    assert_eq!(
        stats.rejected_requests.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.last_error.lock().unwrap()
    );
    assert_eq!(stats.dropped_too_large_items.load(Ordering::Relaxed), 0);
    assert_eq!(
        team.stats.received_metric_points.load(Ordering::Relaxed),
        expected,
        "every point arrived at the team relay"
    );
    team.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_relay_with_no_store_and_nothing_delivering_says_it_keeps_nothing() {
    let mut unusable = UpstreamSettings {
        endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    unusable.headers.insert("bad header".into(), "x".into());
    let reachable = UpstreamSettings {
        endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let durable = || {
        let store =
            crate::store::Store::open(&dir.path().join("s.db"), Default::default()).unwrap();
        Outbox::durable(store, "a".into(), Duration::from_secs(30), true, 10)
    };
    for (upstream, outbox, keeps_nothing, case) in [
        (local_only(), Outbox::memory(10), true, "memory, local-only"),
        (
            unusable.clone(),
            Outbox::memory(10),
            true,
            "memory, upstream unusable",
        ),
        (reachable, Outbox::memory(10), false, "memory, forwarded"),
        (local_only(), durable(), false, "store, local-only"),
        (unusable, durable(), false, "store, upstream unusable"),
    ] {
        let relay = start(&RelaySettings::default(), &upstream, pass_policy(), outbox)
            .await
            .unwrap();
        assert_eq!(relay.keeps_nothing(), keeps_nothing, "{case}");
        relay.shutdown(Duration::ZERO).await;
    }
}
