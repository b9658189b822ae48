//! The configured budgets as telemetry, so the stack's alert rules can compare spend with
//! them: one gauge `claude_telemetry.budget` (unit `USD`; in Prometheus
//! `claude_telemetry_budget_USD`) with a point per limit, labelled `budget.period` (`day`,
//! `week`, `month`) and `budget.scope` (`machine`, `project`, `team`).
//!
//! The launcher sends it through its own relay (policy, store, upstream like any telemetry)
//! once per metrics export interval while a session runs, so Prometheus always has the limits
//! of the sessions that are spending. The resource carries a fixed `service.instance.id`: every
//! launch writes the same series instead of one per launch. The relay stamps `project.name` as
//! on claude's telemetry; a project-scoped limit is compared with that project's spend.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::{Plan, Scope};
use crate::otlp::ExportRequest;

/// The gauge's OTLP name; Prometheus stores it as `claude_telemetry_budget_USD`.
pub const BUDGET_METRIC: &str = "claude_telemetry.budget";

/// `service.instance.id` of every budget export: one series per limit, not per launch.
pub const BUDGET_INSTANCE: &str = "claude-telemetry-budget";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The gauge request for `plan` at `time_ns`; `None` when no limit is configured.
pub fn budget_gauges(plan: &Plan, time_ns: u64) -> Option<ExportRequest> {
    if plan.is_empty() {
        return None;
    }
    let points = plan
        .limits
        .iter()
        .map(|(period, limit, scope)| NumberDataPoint {
            attributes: vec![
                kv("budget.period", period.word()),
                kv(
                    "budget.scope",
                    match scope {
                        Scope::Machine => "machine",
                        Scope::Project(_) => "project",
                        Scope::Team => "team",
                    },
                ),
            ],
            time_unix_nano: time_ns,
            value: Some(number_data_point::Value::AsDouble(*limit)),
            ..Default::default()
        })
        .collect();
    Some(ExportRequest::Metrics(ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "claude-telemetry"),
                    kv("service.instance.id", BUDGET_INSTANCE),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "claude-telemetry.budget".to_owned(),
                    ..Default::default()
                }),
                metrics: vec![Metric {
                    name: BUDGET_METRIC.to_owned(),
                    description: "Spending limit of claude-telemetry's [budget] settings".into(),
                    unit: "USD".to_owned(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Period;
    use super::*;

    #[test]
    fn one_point_per_limit_with_period_and_scope() {
        let plan = Plan {
            limits: vec![
                (Period::Day, 10.0, Scope::Project("web".into())),
                (Period::Month, 300.0, Scope::Team),
            ],
        };
        let Some(ExportRequest::Metrics(req)) = budget_gauges(&plan, 7) else {
            panic!("a metrics request");
        };
        let metric = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(
            (metric.name.as_str(), metric.unit.as_str()),
            (BUDGET_METRIC, "USD")
        );
        let Some(metric::Data::Gauge(g)) = &metric.data else {
            panic!("a gauge");
        };
        assert_eq!(g.data_points.len(), 2);
        assert_eq!(g.data_points[1].attributes[0], kv("budget.period", "month"));
        assert_eq!(g.data_points[1].attributes[1], kv("budget.scope", "team"));
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(10.0))
        );
        assert!(budget_gauges(&Plan { limits: vec![] }, 7).is_none());
    }
}
