//! Whole-policy tests: realistic requests in, protobuf bytes out.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use proptest::prelude::*;

use super::explain::sample_requests;
use super::*;
use crate::settings::policy::{CardinalitySettings, IdentifierMode, PolicySettings, TextMode};

const SECRET: &str = "sk-ant-api03-FAKEfakeFAKEfake0123456789-abcdefAA";
const EMAIL: &str = "ada.lovelace@example.com";
const COMMAND: &str = "https://deploy.internal.example/run";
const PROMPT_WORDS: &str = "Deploy with key";
const ACCOUNT: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const ORG: &str = "5d7e9f10-2a3b-4c5d-8e9f-0a1b2c3d4e5f";

fn ctx() -> LaunchContext {
    LaunchContext {
        project_name: Some("billing-api".into()),
        git_branch: Some("main".into()),
        service_instance_id: Some("instance-1".into()),
        hash_key: b"a-fake-team-key-for-tests-0123456789".to_vec(),
    }
}

fn policy(settings: &PolicySettings) -> Policy {
    Policy::new(settings, &ctx()).expect("policy compiles")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn sample_bytes_after(settings: &PolicySettings) -> Vec<u8> {
    let (mut logs, mut metrics) = sample_requests().expect("fixtures");
    let p = policy(settings);
    p.apply(&mut logs);
    p.apply(&mut metrics);
    let mut bytes = logs.encode_to_vec();
    bytes.extend(metrics.encode_to_vec());
    bytes
}

#[test]
fn policy_can_be_shared_between_receiver_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Policy>();
}

#[test]
fn sample_carries_every_private_value_before_the_policy() {
    let (logs, metrics) = sample_requests().expect("fixtures");
    let mut bytes = logs.encode_to_vec();
    bytes.extend(metrics.encode_to_vec());
    for needle in [SECRET, EMAIL, COMMAND, PROMPT_WORDS, ACCOUNT, ORG] {
        assert!(contains(&bytes, needle), "fixture lacks {needle}");
    }
}

#[test]
fn default_policy_bytes_contain_no_prompt_command_secret_email_or_account() {
    let bytes = sample_bytes_after(&PolicySettings::default());
    for needle in [
        SECRET,
        "sk-ant-",
        EMAIL,
        "@example.com",
        COMMAND,
        PROMPT_WORDS,
        ACCOUNT,
        ORG,
    ] {
        assert!(!contains(&bytes, needle), "{needle} left the machine");
    }
    assert!(contains(&bytes, "claude_code.token.usage"));
    assert!(contains(&bytes, "billing-api"));
}

#[test]
fn keep_policy_bytes_keep_text_and_identifiers() {
    let mut settings = PolicySettings::default();
    settings.privacy.prompts = TextMode::Keep;
    settings.privacy.tool_details = TextMode::Keep;
    settings.privacy.identifiers = IdentifierMode::Keep;
    settings.privacy.builtin_redactions = false;
    let bytes = sample_bytes_after(&settings);
    for needle in [SECRET, EMAIL, COMMAND, PROMPT_WORDS, ACCOUNT, ORG] {
        assert!(contains(&bytes, needle), "{needle} was removed under keep");
    }
}

#[test]
fn keep_with_builtin_redactions_keeps_text_but_not_secrets() {
    let mut settings = PolicySettings::default();
    settings.privacy.prompts = TextMode::Keep;
    settings.privacy.tool_details = TextMode::Keep;
    let bytes = sample_bytes_after(&settings);
    assert!(contains(&bytes, PROMPT_WORDS));
    assert!(contains(&bytes, COMMAND));
    assert!(!contains(&bytes, SECRET));
    assert!(!contains(&bytes, EMAIL));
}

#[test]
fn team_key_gives_the_same_pseudonym_across_installations() {
    let mut settings = PolicySettings::default();
    settings.privacy.team_key = Some("shared-team-key-0123456789abcdef".into());
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let cwd = a.path();
    let ca = LaunchContext::detect(&settings, cwd, a.path()).expect("context a");
    let cb = LaunchContext::detect(&settings, cwd, b.path()).expect("context b");
    let pa = Policy::new(&settings, &ca).expect("a");
    let pb = Policy::new(&settings, &cb).expect("b");
    assert_eq!(pa.pseudonym(EMAIL), pb.pseudonym(EMAIL));
    assert_ne!(ca.service_instance_id, cb.service_instance_id);

    settings.privacy.team_key = None;
    let ca = LaunchContext::detect(&settings, cwd, a.path()).expect("context a");
    let cb = LaunchContext::detect(&settings, cwd, b.path()).expect("context b");
    let pa = Policy::new(&settings, &ca).expect("a");
    let pb = Policy::new(&settings, &cb).expect("b");
    assert_ne!(
        pa.pseudonym(EMAIL),
        pb.pseudonym(EMAIL),
        "per-installation secrets differ"
    );
    let again = LaunchContext::detect(&settings, cwd, a.path()).expect("again");
    assert_eq!(
        Policy::new(&settings, &again).expect("a2").pseudonym(EMAIL),
        pa.pseudonym(EMAIL)
    );
}

fn s(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(v) => Some(v.clone()),
            _ => None,
        }
    })
}

#[test]
fn spans_and_span_events_are_covered() {
    let mut req = ExportRequest::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    Span {
                        name: "claude_code.tool".into(),
                        attributes: vec![
                            s("tool_name", "Bash"),
                            s("full_command", "cat ~/.ssh/id_rsa"),
                            s("error", "permission denied: /home/ada/.ssh/id_rsa"),
                            s("user.email", EMAIL),
                        ],
                        events: vec![span::Event {
                            name: "tool.output".into(),
                            attributes: vec![
                                s("bash_command", "cat ~/.ssh/id_rsa"),
                                s("output", "-----BEGIN KEY-----"),
                            ],
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    Span {
                        name: "claude_code.interaction".into(),
                        attributes: vec![
                            s("user_prompt", "my secret plan"),
                            s("new_context", "ctx"),
                        ],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    policy(&PolicySettings::default()).apply(&mut req);
    let bytes = req.encode_to_vec();
    for needle in ["id_rsa", "BEGIN KEY", "my secret plan", EMAIL] {
        assert!(!contains(&bytes, needle), "{needle} left in a span");
    }
    let ExportRequest::Traces(t) = &req else {
        panic!("traces")
    };
    let rs = &t.resource_spans[0];
    assert_eq!(
        string_attr(
            &rs.resource.as_ref().expect("stamped").attributes,
            "service.instance.id"
        ),
        Some("instance-1".into())
    );
    let tool = &rs.scope_spans[0].spans[0];
    assert_eq!(
        string_attr(&tool.attributes, "tool_name").as_deref(),
        Some("Bash")
    );
    assert_eq!(
        string_attr(&tool.attributes, "error").as_deref(),
        Some(REDACTED)
    );
}

fn number_point(attrs: Vec<KeyValue>, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: 1,
        time_unix_nano: 2,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn metrics_request(metrics: Vec<Metric>) -> ExportRequest {
    ExportRequest::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn delta_sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

#[test]
fn dropping_identifiers_from_points_merges_what_became_identical() {
    let mut settings = PolicySettings::default();
    settings.privacy.identifiers = IdentifierMode::Drop;
    settings.cardinality = CardinalitySettings {
        drop_metric_attributes: vec!["model".into(), "session.id".into()],
    };
    let mut req = metrics_request(vec![delta_sum(
        "claude_code.cost.usage",
        vec![
            number_point(
                vec![
                    s("session.id", "s1"),
                    s("user.email", EMAIL),
                    s("model", "a"),
                ],
                0.25,
            ),
            number_point(
                vec![
                    s("session.id", "s1"),
                    s("user.email", EMAIL),
                    s("model", "b"),
                ],
                0.5,
            ),
            number_point(
                vec![
                    s("session.id", "s2"),
                    s("user.email", EMAIL),
                    s("model", "a"),
                ],
                1.0,
            ),
        ],
    )]);
    Policy::new(
        &settings,
        &LaunchContext {
            hash_key: Vec::new(),
            ..ctx()
        },
    )
    .expect("policy")
    .apply(&mut req);
    let ExportRequest::Metrics(m) = &req else {
        panic!("metrics")
    };
    let Some(Data::Sum(sum)) = &m.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!("sum")
    };
    let got: Vec<(Option<String>, Option<number_data_point::Value>, usize)> = sum
        .data_points
        .iter()
        .map(|p| {
            (
                string_attr(&p.attributes, "session.id"),
                p.value,
                p.attributes.len(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Some("s1".into()),
                Some(number_data_point::Value::AsDouble(0.75)),
                1
            ),
            (
                Some("s2".into()),
                Some(number_data_point::Value::AsDouble(1.0)),
                1
            ),
        ]
    );
}

#[test]
fn no_rules_keeps_requests_byte_identical_apart_from_the_resource() {
    let mut settings = PolicySettings::default();
    settings.privacy.prompts = TextMode::Keep;
    settings.privacy.tool_details = TextMode::Keep;
    settings.privacy.identifiers = IdentifierMode::Keep;
    settings.privacy.builtin_redactions = false;
    settings.resource.project_name = false;
    settings.resource.service_instance_id = false;
    let (mut logs, mut metrics) = sample_requests().expect("fixtures");
    let (logs0, metrics0) = (logs.clone(), metrics.clone());
    let p = Policy::new(
        &settings,
        &LaunchContext {
            hash_key: Vec::new(),
            ..ctx()
        },
    )
    .expect("p");
    p.apply(&mut logs);
    p.apply(&mut metrics);
    assert_eq!(logs, logs0);
    assert_eq!(metrics, metrics0);
}

// ---- property: dropping session-constant attributes keeps every counter's total ----

const DROPPABLE: [&str; 5] = [
    "app.version",
    "terminal.type",
    "user.email",
    "organization.id",
    "team.id",
];

#[derive(Debug, Clone)]
struct GenPoint {
    metric: usize,
    session: usize,
    kind: usize,
    value: u32,
}

/// A batch as claude sends it: one point per attribute set in each metric (generated points
/// that share metric, session and type are added together first).
fn build_batch(generated: &[GenPoint]) -> ExportRequest {
    let mut unique: Vec<GenPoint> = Vec::new();
    for g in generated {
        match unique
            .iter_mut()
            .find(|u| (u.metric, u.session, u.kind) == (g.metric, g.session, g.kind))
        {
            Some(u) => u.value += g.value,
            None => unique.push(g.clone()),
        }
    }
    let points = &unique;
    let names = [
        "claude_code.token.usage",
        "claude_code.cost.usage",
        "claude_code.session.count",
    ];
    let metrics = names
        .iter()
        .enumerate()
        .map(|(mi, name)| {
            let pts = points
                .iter()
                .filter(|p| p.metric == mi)
                .map(|p| {
                    // Session-constant attributes: a function of the session only.
                    let sess = p.session;
                    number_point(
                        vec![
                            s("session.id", &format!("s{sess}")),
                            s("app.version", &format!("2.1.{}", sess % 2)),
                            s("terminal.type", ["tmux", "vscode", "xterm"][sess % 3]),
                            s("user.email", &format!("u{}@example.com", sess % 2)),
                            s("organization.id", "org-1"),
                            s("team.id", &format!("t{}", sess % 3)),
                            s("type", ["input", "output", "cacheRead"][p.kind]),
                        ],
                        f64::from(p.value),
                    )
                })
                .collect();
            delta_sum(name, pts)
        })
        .collect();
    metrics_request(metrics)
}

/// (metric, session, type) → total, plus the number of points per attribute set.
fn totals(req: &ExportRequest) -> (BTreeMap<(String, String, String), f64>, usize, usize) {
    let ExportRequest::Metrics(m) = req else {
        panic!("metrics")
    };
    let mut out = BTreeMap::new();
    let mut points = 0;
    let mut sets = std::collections::HashSet::new();
    for metric in &m.resource_metrics[0].scope_metrics[0].metrics {
        let Some(Data::Sum(sum)) = &metric.data else {
            continue;
        };
        for p in &sum.data_points {
            points += 1;
            let mut attrs: Vec<String> = p
                .attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value))
                .collect();
            attrs.sort();
            sets.insert((metric.name.clone(), attrs));
            let key = (
                metric.name.clone(),
                string_attr(&p.attributes, "session.id").expect("session.id kept"),
                string_attr(&p.attributes, "type").unwrap_or_default(),
            );
            let Some(number_data_point::Value::AsDouble(v)) = p.value else {
                panic!("double")
            };
            *out.entry(key).or_insert(0.0) += v;
        }
    }
    (out, points, sets.len())
}

proptest! {
    #[test]
    fn dropping_session_constant_attributes_keeps_every_total(
        points in prop::collection::vec(
            (0usize..3, 0usize..4, 0usize..3, 0u32..10_000)
                .prop_map(|(metric, session, kind, value)| GenPoint { metric, session, kind, value }),
            0..60,
        ),
        rules in prop::collection::vec(prop::sample::select(DROPPABLE.to_vec()), 0..5),
        identifiers in prop::sample::select(vec![IdentifierMode::Hash, IdentifierMode::Keep, IdentifierMode::Drop]),
    ) {
        let mut settings = PolicySettings::default();
        settings.cardinality.drop_metric_attributes = rules.iter().map(|r| r.to_string()).collect();
        settings.privacy.identifiers = identifiers;
        let before = build_batch(&points);
        let mut after = before.clone();
        policy(&settings).apply(&mut after);
        let (t_before, _, _) = totals(&before);
        let (t_after, n_after, sets_after) = totals(&after);
        // Integer-valued doubles below 2^53: sums are exact in any order.
        prop_assert_eq!(t_before, t_after);
        prop_assert_eq!(n_after, sets_after, "duplicate attribute sets were emitted");
        let ExportRequest::Metrics(m) = &after else { panic!("metrics") };
        for metric in &m.resource_metrics[0].scope_metrics[0].metrics {
            let Some(Data::Sum(sum)) = &metric.data else { continue };
            for p in &sum.data_points {
                for rule in &rules {
                    prop_assert!(p.attributes.iter().all(|kv| kv.key != *rule));
                }
            }
        }
    }

    #[test]
    fn dropping_any_dimension_keeps_each_metric_total(
        points in prop::collection::vec(
            (0usize..3, 0usize..4, 0usize..3, 0u32..10_000)
                .prop_map(|(metric, session, kind, value)| GenPoint { metric, session, kind, value }),
            0..60,
        ),
        drop_type in any::<bool>(),
    ) {
        let mut settings = PolicySettings::default();
        settings.cardinality.drop_metric_attributes =
            if drop_type { vec!["type".into(), "team.id".into()] } else { vec!["terminal.type".into()] };
        let before = build_batch(&points);
        let mut after = before.clone();
        policy(&settings).apply(&mut after);
        let per_metric = |t: BTreeMap<(String, String, String), f64>| {
            let mut m: BTreeMap<(String, String), f64> = BTreeMap::new();
            for ((metric, session, _), v) in t {
                *m.entry((metric, session)).or_insert(0.0) += v;
            }
            m
        };
        let (t_before, _, _) = totals(&before);
        let (t_after, n_after, sets_after) = totals(&after);
        prop_assert_eq!(per_metric(t_before), per_metric(t_after));
        prop_assert_eq!(n_after, sets_after);
    }
}

#[test]
fn team_attributes_win_on_points_and_points_made_identical_are_merged() {
    let mut settings = PolicySettings::default();
    settings
        .resource
        .attributes
        .insert("team.id".into(), "platform".into());
    let mut req = metrics_request(vec![delta_sum(
        "claude_code.token.usage",
        vec![
            number_point(vec![s("session.id", "s1"), s("team.id", "rogue")], 2.0),
            number_point(vec![s("session.id", "s1"), s("team.id", "platform")], 3.0),
        ],
    )]);
    policy(&settings).apply(&mut req);
    let ExportRequest::Metrics(m) = &req else {
        panic!("metrics")
    };
    let rm = &m.resource_metrics[0];
    let resource = &rm.resource.as_ref().expect("stamped").attributes;
    assert_eq!(
        string_attr(resource, "team.id").as_deref(),
        Some("platform")
    );
    let Some(Data::Sum(sum)) = &rm.scope_metrics[0].metrics[0].data else {
        panic!("sum")
    };
    assert_eq!(sum.data_points.len(), 1);
    let point = &sum.data_points[0];
    assert_eq!(
        string_attr(&point.attributes, "team.id").as_deref(),
        Some("platform")
    );
    assert_eq!(point.value, Some(number_data_point::Value::AsDouble(5.0)));
}
