//! Splitting a request the upstream cannot take whole: halves by resource, then by scope, then
//! by record (log records, spans, metrics), each half keeping its resource and scope, so every
//! item still arrives with what describes it. A request of one item (one metric, one record)
//! cannot be split; the forwarder then drops it with its reason.

use crate::otlp::ExportRequest;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
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
/// single resource with a single scope with a single record.
pub fn halve(request: &ExportRequest) -> Option<(ExportRequest, ExportRequest)> {
    match request {
        ExportRequest::Logs(r) => {
            let (a, b) = halve_nested(
                &r.resource_logs,
                |rl| &rl.scope_logs,
                |rl, s| rl.scope_logs = s,
                |sl| &sl.log_records,
                |sl, v| sl.log_records = v,
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
/// records. Halves the first level with more than one element, copying the levels above.
fn halve_nested<R: Clone, S: Clone, I: Clone>(
    resources: &[R],
    scopes: impl Fn(&R) -> &Vec<S>,
    set_scopes: impl Fn(&mut R, Vec<S>),
    items: impl Fn(&S) -> &Vec<I>,
    set_items: impl Fn(&mut S, Vec<I>),
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
    if records.len() < 2 {
        return None;
    }
    let mid = records.len() / 2;
    let with_items = |v: Vec<I>| {
        let mut s = scope.clone();
        set_items(&mut s, v);
        with_scopes(vec![s])
    };
    Some((
        with_items(records[..mid].to_vec()),
        with_items(records[mid..].to_vec()),
    ))
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

    #[test]
    fn one_record_cannot_be_split() {
        assert!(halve(&logs(1, 1, 1)).is_none());
        assert!(halve(&logs(0, 0, 0)).is_none());
    }
}
