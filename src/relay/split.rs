//! Splitting a request the upstream cannot take whole: halves by resource, then by scope, then
//! by record (log records, spans, metrics), and a single metric by its data points, each half
//! keeping its resource, scope and metric description, so every item still arrives with what
//! describes it (one huge metric can still fit). A request of one item (one data point, one
//! record) cannot be split; the forwarder then drops it with its reason.

use crate::otlp::ExportRequest;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data};
use prost::Message;

/// The encoded size in bytes, as the upstream receives it (before any compression).
pub fn encoded_len(request: &ExportRequest) -> usize {
    match request {
        ExportRequest::Metrics(r) => r.encoded_len(),
        ExportRequest::Logs(r) => r.encoded_len(),
        ExportRequest::Traces(r) => r.encoded_len(),
    }
}

/// Two halves holding together exactly the items of `request`, or `None` when it holds a
/// single resource with a single scope with a single record (for metrics: a single data
/// point).
pub fn halve(request: &ExportRequest) -> Option<(ExportRequest, ExportRequest)> {
    match request {
        ExportRequest::Logs(r) => {
            let (a, b) = halve_nested(
                &r.resource_logs,
                |rl| &rl.scope_logs,
                |rl, s| rl.scope_logs = s,
                |sl| &sl.log_records,
                |sl, v| sl.log_records = v,
                |_| None,
            )?;
            Some((
                ExportRequest::Logs(ExportLogsServiceRequest { resource_logs: a }),
                ExportRequest::Logs(ExportLogsServiceRequest { resource_logs: b }),
            ))
        }
        ExportRequest::Traces(r) => {
            let (a, b) = halve_nested(
                &r.resource_spans,
                |rs| &rs.scope_spans,
                |rs, s| rs.scope_spans = s,
                |ss| &ss.spans,
                |ss, v| ss.spans = v,
                |_| None,
            )?;
            Some((
                ExportRequest::Traces(ExportTraceServiceRequest { resource_spans: a }),
                ExportRequest::Traces(ExportTraceServiceRequest { resource_spans: b }),
            ))
        }
        ExportRequest::Metrics(r) => {
            let (a, b) = halve_nested(
                &r.resource_metrics,
                |rm| &rm.scope_metrics,
                |rm, s| rm.scope_metrics = s,
                |sm| &sm.metrics,
                |sm, v| sm.metrics = v,
                halve_metric,
            )?;
            Some((
                ExportRequest::Metrics(ExportMetricsServiceRequest {
                    resource_metrics: a,
                }),
                ExportRequest::Metrics(ExportMetricsServiceRequest {
                    resource_metrics: b,
                }),
            ))
        }
    }
}

/// The three levels are the same shape for every signal: resources holding scopes holding
/// records. Halves the first level with more than one element, copying the levels above; a
/// lone record is then halved by `halve_item` (a metric's data points), if it can be.
fn halve_nested<R: Clone, S: Clone, I: Clone>(
    resources: &[R],
    scopes: impl Fn(&R) -> &Vec<S>,
    set_scopes: impl Fn(&mut R, Vec<S>),
    items: impl Fn(&S) -> &Vec<I>,
    set_items: impl Fn(&mut S, Vec<I>),
    halve_item: impl Fn(&I) -> Option<(I, I)>,
) -> Option<(Vec<R>, Vec<R>)> {
    if resources.len() > 1 {
        let mid = resources.len() / 2;
        return Some((resources[..mid].to_vec(), resources[mid..].to_vec()));
    }
    let resource = resources.first()?;
    let with_scopes = |s: Vec<S>| {
        let mut r = resource.clone();
        set_scopes(&mut r, s);
        vec![r]
    };
    let scope_list = scopes(resource);
    if scope_list.len() > 1 {
        let mid = scope_list.len() / 2;
        return Some((
            with_scopes(scope_list[..mid].to_vec()),
            with_scopes(scope_list[mid..].to_vec()),
        ));
    }
    let scope = scope_list.first()?;
    let records = items(scope);
    let with_items = |v: Vec<I>| {
        let mut s = scope.clone();
        set_items(&mut s, v);
        with_scopes(vec![s])
    };
    if records.len() < 2 {
        let (a, b) = halve_item(records.first()?)?;
        return Some((with_items(vec![a]), with_items(vec![b])));
    }
    let mid = records.len() / 2;
    Some((
        with_items(records[..mid].to_vec()),
        with_items(records[mid..].to_vec()),
    ))
}

/// Halves one metric by its data points; each half keeps the name, description, unit,
/// metadata and the kind's own fields (temporality, monotonicity). `None` for one point.
fn halve_metric(metric: &Metric) -> Option<(Metric, Metric)> {
    fn halves<P: Clone>(points: &[P]) -> Option<(Vec<P>, Vec<P>)> {
        (points.len() >= 2).then(|| {
            let mid = points.len() / 2;
            (points[..mid].to_vec(), points[mid..].to_vec())
        })
    }
    let with = |data: Data| Metric {
        data: Some(data),
        ..metric.clone()
    };
    let (a, b) = match metric.data.as_ref()? {
        Data::Gauge(g) => {
            let (a, b) = halves(&g.data_points)?;
            let (mut x, mut y) = (g.clone(), g.clone());
            (x.data_points, y.data_points) = (a, b);
            (Data::Gauge(x), Data::Gauge(y))
        }
        Data::Sum(m) => {
            let (a, b) = halves(&m.data_points)?;
            let (mut x, mut y) = (m.clone(), m.clone());
            (x.data_points, y.data_points) = (a, b);
            (Data::Sum(x), Data::Sum(y))
        }
        Data::Histogram(m) => {
            let (a, b) = halves(&m.data_points)?;
            let (mut x, mut y) = (m.clone(), m.clone());
            (x.data_points, y.data_points) = (a, b);
            (Data::Histogram(x), Data::Histogram(y))
        }
        Data::ExponentialHistogram(m) => {
            let (a, b) = halves(&m.data_points)?;
            let (mut x, mut y) = (m.clone(), m.clone());
            (x.data_points, y.data_points) = (a, b);
            (Data::ExponentialHistogram(x), Data::ExponentialHistogram(y))
        }
        Data::Summary(m) => {
            let (a, b) = halves(&m.data_points)?;
            let (mut x, mut y) = (m.clone(), m.clone());
            (x.data_points, y.data_points) = (a, b);
            (Data::Summary(x), Data::Summary(y))
        }
    };
    Some((with(a), with(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    fn logs(resources: usize, scopes: usize, records: usize) -> ExportRequest {
        let scope = ScopeLogs {
            log_records: (0..records)
                .map(|i| LogRecord {
                    time_unix_nano: i as u64,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ExportRequest::Logs(ExportLogsServiceRequest {
            resource_logs: (0..resources)
                .map(|_| ResourceLogs {
                    scope_logs: vec![scope.clone(); scopes],
                    ..Default::default()
                })
                .collect(),
        })
    }

    /// Splits down to single records and checks none is lost or doubled.
    fn leaves(request: ExportRequest) -> Vec<ExportRequest> {
        match halve(&request) {
            Some((a, b)) => {
                assert_eq!(a.item_count() + b.item_count(), request.item_count());
                let mut out = leaves(a);
                out.extend(leaves(b));
                out
            }
            None => vec![request],
        }
    }

    #[test]
    fn halving_keeps_every_record_once_down_to_single_records() {
        let request = logs(3, 2, 5);
        let parts = leaves(request.clone());
        assert_eq!(parts.len(), 30);
        assert!(parts.iter().all(|p| p.item_count() == 1));
        let mut times: Vec<u64> = parts
            .iter()
            .map(|p| match p {
                ExportRequest::Logs(r) => {
                    r.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano
                }
                _ => unreachable!(),
            })
            .collect();
        times.sort_unstable();
        assert_eq!(times.len(), 30);
        assert_eq!(times.iter().filter(|t| **t == 4).count(), 6);
    }

    /// One resource, one scope, one cumulative monotonic sum of `points` points valued 0, 1, …
    fn one_sum(points: usize) -> ExportRequest {
        use opentelemetry_proto::tonic::metrics::v1::{
            NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, number_data_point,
        };
        ExportRequest::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "claude_code.token.usage".into(),
                        unit: "tokens".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: (0..points)
                                .map(|i| NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(i as i64)),
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn one_metric_with_many_points_is_split_by_points_keeping_its_description() {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
        let request = one_sum(7);
        assert!(encoded_len(&request) > 0);
        let parts = leaves(request);
        assert_eq!(parts.len(), 7, "down to single points");
        let mut values = Vec::new();
        for part in &parts {
            let ExportRequest::Metrics(r) = part else {
                unreachable!()
            };
            let metrics = &r.resource_metrics[0].scope_metrics[0].metrics;
            assert_eq!(metrics.len(), 1);
            let m = &metrics[0];
            assert_eq!(
                (m.name.as_str(), m.unit.as_str()),
                ("claude_code.token.usage", "tokens")
            );
            let Some(Data::Sum(sum)) = &m.data else {
                panic!("still a sum: {m:?}")
            };
            assert_eq!((sum.aggregation_temporality, sum.is_monotonic), (2, true));
            assert_eq!(sum.data_points.len(), 1);
            match sum.data_points[0].value {
                Some(Value::AsInt(v)) => values.push(v),
                ref other => panic!("{other:?}"),
            }
        }
        values.sort_unstable();
        assert_eq!(
            values,
            (0..7).collect::<Vec<_>>(),
            "each point exactly once"
        );
        assert!(halve(&one_sum(1)).is_none(), "one point cannot be split");
    }

    #[test]
    fn one_record_cannot_be_split() {
        assert!(halve(&logs(1, 1, 1)).is_none());
        assert!(halve(&logs(0, 0, 0)).is_none());
    }
}
