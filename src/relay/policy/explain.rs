//! `config --explain`: what leaves the machine under a policy, shown on a built-in sample of
//! Claude Code's real telemetry (a `user_prompt` event with prompt text, a `tool_result` event
//! with a Bash command in `tool_parameters`, one `claude_code.token.usage` point of a
//! logged-in user), as claude 2.1.197 sends it over OTLP/JSON, and the same prompt as 2.1.332
//! sends it (`prompt_text`) with one attribute no release has sent yet, to show the fail-closed
//! rule for keys the relay does not know.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value as Json, json};

use super::Policy;
use crate::otlp::ExportRequest;

const SAMPLE_LOGS: &str = include_str!("fixtures/claude-logs.json");
const SAMPLE_METRICS: &str = include_str!("fixtures/claude-metrics.json");

/// The sample as decoded requests: (logs, metrics). Also the realistic input of tests and the
/// benchmark.
pub fn sample_requests() -> Result<(ExportRequest, ExportRequest), serde_json::Error> {
    let logs: ExportLogsServiceRequest = serde_json::from_str(SAMPLE_LOGS)?;
    let metrics: ExportMetricsServiceRequest = serde_json::from_str(SAMPLE_METRICS)?;
    Ok((ExportRequest::Logs(logs), ExportRequest::Metrics(metrics)))
}

/// One sample item before and after the policy, as flat JSON objects
/// (`{"resource": {..}, "attributes": {..}, "body"|"value": ..}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedItem {
    /// What the item is (`event user_prompt`, `metric claude_code.token.usage`).
    pub title: String,
    /// As claude sent it.
    pub before: Json,
    /// As the relay forwards it; absent when the policy removed the item.
    pub after: Option<Json>,
}

/// The before/after of every sample item.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The rule for attribute keys the relay does not know, in one paragraph.
    pub unknown_keys_rule: String,
    /// Events first, then the metric point.
    pub items: Vec<ExplainedItem>,
}

/// The attribute of the sample that no Claude Code release sends: the relay cannot know it.
pub const SAMPLE_UNKNOWN_KEY: &str = "future_release.summary";

/// Adds to the sample logs the 2.1.332 form of the prompt event: `prompt_text`, `message.uuid`,
/// `anthropic.*`, an unknown free-text key and an unknown numeric one.
fn add_newer_release_prompt(logs: &mut ExportRequest) {
    let ExportRequest::Logs(r) = logs else {
        return;
    };
    let Some(mut rl) = r.resource_logs.first().cloned() else {
        return;
    };
    if let Some(res) = rl.resource.as_mut() {
        for kv in &mut res.attributes {
            if kv.key == "service.version" {
                kv.value = Some(text("2.1.332"));
            }
        }
    }
    let Some(sl) = rl.scope_logs.first_mut() else {
        return;
    };
    sl.log_records.truncate(1);
    let Some(record) = sl.log_records.first_mut() else {
        return;
    };
    let prompt = record
        .attributes
        .iter()
        .find(|kv| kv.key == "prompt")
        .and_then(|kv| kv.value.clone());
    let mut add = |key: &str, value: AnyValue| {
        record.attributes.push(KeyValue {
            key: key.into(),
            value: Some(value),
            ..Default::default()
        })
    };
    if let Some(prompt) = prompt {
        add("prompt_text", prompt);
    }
    add("message.uuid", text("4b7a3766-abbe-4cc6-b92d-9d10619c2f95"));
    add("anthropic.provider", text("firstParty"));
    add(
        "anthropic.custom_base_url",
        AnyValue {
            value: Some(Value::BoolValue(false)),
        },
    );
    add(
        SAMPLE_UNKNOWN_KEY,
        text("User wants to deploy billing-api to production tonight"),
    );
    add("future_release.score", text("0.87"));
    r.resource_logs.push(rl);
}

fn text(s: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(s.into())),
    }
}

/// [`Explanation::unknown_keys_rule`] for `policy`.
fn unknown_keys_rule(policy: &Policy) -> String {
    let allowed = policy.allowed_unknown_keys();
    let allowed = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    };
    format!(
        "Attribute keys the relay does not know (a field a newer Claude Code release added, or \
         another sender's): text is sent as <REDACTED> (fail closed), numbers, booleans and \
         number-like strings pass; a log body other than claude's constant `claude_code.<event>` \
         is withheld as key \"log.body\". Allowed by privacy.allow_attributes: {allowed}. \
         `claude-telemetry doctor` lists the keys the last session had withheld."
    )
}

/// Runs `policy` over the built-in sample.
pub fn explain(policy: &Policy) -> Result<Explanation, serde_json::Error> {
    let (mut logs, metrics) = sample_requests()?;
    add_newer_release_prompt(&mut logs);
    let mut logs_after = logs.clone();
    let mut metrics_after = metrics.clone();
    policy.apply(&mut logs_after);
    policy.apply(&mut metrics_after);

    let before = flatten(&logs).into_iter().chain(flatten(&metrics));
    let mut after = flatten(&logs_after)
        .into_iter()
        .chain(flatten(&metrics_after))
        .collect::<Vec<_>>();
    let items = before
        .map(|(title, before)| {
            let at = after.iter().position(|(t, _)| *t == title);
            ExplainedItem {
                after: at.map(|i| after.remove(i).1),
                title,
                before,
            }
        })
        .collect();
    Ok(Explanation {
        unknown_keys_rule: unknown_keys_rule(policy),
        items,
    })
}

fn flatten(request: &ExportRequest) -> Vec<(String, Json)> {
    let mut out = Vec::new();
    match request {
        ExportRequest::Logs(r) => {
            for rl in &r.resource_logs {
                for record in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
                    let name = record
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "event.name")
                        .map(|kv| render(kv.value.as_ref()))
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let version = rl
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.version")
                        .map(|kv| render(kv.value.as_ref()))
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let mut item = Map::new();
                    item.insert("resource".into(), resource(&rl.resource));
                    item.insert("attributes".into(), attributes(&record.attributes));
                    item.insert("body".into(), render(record.body.as_ref()));
                    out.push((format!("event {name} ({version})"), Json::Object(item)));
                }
            }
        }
        ExportRequest::Metrics(r) => {
            for rm in &r.resource_metrics {
                for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                    let Some(Data::Sum(sum)) = &metric.data else {
                        continue;
                    };
                    for point in &sum.data_points {
                        let value = match point.value {
                            Some(number_data_point::Value::AsDouble(d)) => json!(d),
                            Some(number_data_point::Value::AsInt(i)) => json!(i),
                            None => Json::Null,
                        };
                        let mut item = Map::new();
                        item.insert("resource".into(), resource(&rm.resource));
                        item.insert("attributes".into(), attributes(&point.attributes));
                        item.insert("value".into(), value);
                        out.push((format!("metric {}", metric.name), Json::Object(item)));
                    }
                }
            }
        }
        ExportRequest::Traces(_) => {}
    }
    out
}

fn resource(resource: &Option<Resource>) -> Json {
    resource
        .as_ref()
        .map(|r| attributes(&r.attributes))
        .unwrap_or(Json::Null)
}

fn attributes(attrs: &[KeyValue]) -> Json {
    Json::Object(
        attrs
            .iter()
            .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
            .collect(),
    )
}

fn render(value: Option<&AnyValue>) -> Json {
    match value.and_then(|v| v.value.as_ref()) {
        None => Json::Null,
        Some(Value::StringValue(s)) => json!(s),
        Some(Value::BoolValue(b)) => json!(b),
        Some(Value::IntValue(i)) => json!(i),
        Some(Value::DoubleValue(d)) => json!(d),
        Some(Value::BytesValue(b)) => json!(format!("<{} bytes>", b.len())),
        Some(Value::ArrayValue(a)) => {
            Json::Array(a.values.iter().map(|v| render(Some(v))).collect())
        }
        Some(Value::KvlistValue(l)) => attributes(&l.values),
        Some(Value::StringValueStrindex(i)) => json!(format!("<string table entry {i}>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::policy::{LaunchContext, REDACTED};
    use crate::settings::policy::{PolicySettings, TextMode};

    fn ctx() -> LaunchContext {
        LaunchContext {
            project_name: Some("billing-api".into()),
            git_branch: None,
            service_instance_id: Some("7c1e2f00-0000-4000-8000-000000000001".into()),
            hash_key: b"explain-test-key-0123456789".to_vec(),
        }
    }

    #[test]
    fn sample_is_real_claude_shape_and_decodes() {
        let (logs, metrics) = sample_requests().expect("fixtures decode");
        assert_eq!(logs.item_count(), 2);
        assert_eq!(metrics.item_count(), 1);
        let ExportRequest::Metrics(m) = &metrics else {
            panic!("metrics")
        };
        let metric = &m.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "claude_code.token.usage");
        let Some(Data::Sum(sum)) = &metric.data else {
            panic!("sum")
        };
        assert_eq!(sum.aggregation_temporality, 1, "DELTA, as claude sends");
        assert!(sum.is_monotonic);
    }

    #[test]
    fn default_policy_explanation_hides_text_and_shows_pseudonyms() {
        let settings = PolicySettings::default();
        let policy = Policy::new(&settings, &ctx()).expect("policy");
        let ex = explain(&policy).expect("explained");
        let titles: Vec<&str> = ex.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(
            titles,
            vec![
                "event user_prompt (2.1.197)",
                "event tool_result (2.1.197)",
                "event user_prompt (2.1.332)",
                "metric claude_code.token.usage"
            ]
        );
        let prompt = &ex.items[0];
        assert!(
            prompt.before["attributes"]["prompt"]
                .as_str()
                .is_some_and(|p| p.contains("sk-ant-api03"))
        );
        let after = prompt.after.as_ref().expect("kept");
        assert_eq!(after["attributes"]["prompt"], REDACTED);
        assert_eq!(after["resource"]["project.name"], "billing-api");
        let email = after["attributes"]["user.email"].as_str().expect("hashed");
        assert_eq!(
            email,
            policy.pseudonym("ada.lovelace@example.com").expect("hash")
        );
        let tool = ex.items[1].after.as_ref().expect("kept");
        assert_eq!(tool["attributes"]["tool_parameters"], REDACTED);
        let newer = ex.items[2].after.as_ref().expect("kept");
        assert_eq!(newer["attributes"]["prompt_text"], REDACTED);
        assert_eq!(newer["attributes"][SAMPLE_UNKNOWN_KEY], REDACTED);
        assert_eq!(newer["attributes"]["future_release.score"], "0.87");
        assert_eq!(newer["attributes"]["anthropic.provider"], "firstParty");
        assert_eq!(newer["attributes"]["anthropic.custom_base_url"], false);
        assert!(ex.unknown_keys_rule.contains("allow_attributes: none"));
        let point = ex.items[3].after.as_ref().expect("kept");
        assert_eq!(point["value"], 1834.0);
        assert_eq!(
            point["resource"]["service.instance.id"],
            "7c1e2f00-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn keep_policy_explanation_shows_redacted_text() {
        let mut settings = PolicySettings::default();
        settings.privacy.prompts = TextMode::Keep;
        let policy = Policy::new(&settings, &ctx()).expect("policy");
        let ex = explain(&policy).expect("explained");
        let after = ex.items[0].after.as_ref().expect("kept");
        let prompt = after["attributes"]["prompt"].as_str().expect("text");
        assert!(prompt.starts_with("Deploy with key <REDACTED>"), "{prompt}");
        assert!(!prompt.contains("ada.lovelace"));
    }

    #[test]
    fn allowed_unknown_key_is_sent_and_named_in_the_rule() {
        let mut settings = PolicySettings::default();
        settings.privacy.allow_attributes = vec!["future_release.*".into()];
        let policy = Policy::new(&settings, &ctx()).expect("policy");
        let ex = explain(&policy).expect("explained");
        let newer = ex.items[2].after.as_ref().expect("kept");
        assert_eq!(
            newer["attributes"][SAMPLE_UNKNOWN_KEY],
            "User wants to deploy billing-api to production tonight"
        );
        assert_eq!(
            newer["attributes"]["prompt_text"], REDACTED,
            "still conversation"
        );
        assert!(ex.unknown_keys_rule.contains("future_release.*"));
    }
}
