//! Cardinality rules: which attributes metric data points keep, and merging the points that
//! dropping made identical.
//!
//! Merging happens within one `Metric` message (one stream of one request), grouped by the
//! attribute set (order-insensitive). Per type:
//! - **Sum, DELTA** (what claude sends): all points of a set become one: values summed,
//!   earliest start time, latest time, exemplars concatenated. Totals are preserved exactly.
//! - **Sum, CUMULATIVE**: points of a set are merged only when they share `time_unix_nano`
//!   (values summed, earliest start); two samples of one series at different times stay apart,
//!   because adding two readings of one cumulative counter would double-count.
//! - **Histogram**: as Sum for the temporality; counts, sums and bucket counts added, min/max
//!   combined. Points with different bucket bounds cannot be added and stay apart.
//! - **Gauge**: the point with the latest `time_unix_nano` is kept (a later point wins a tie);
//!   gauges are readings, and adding readings has no meaning.
//! - **ExponentialHistogram, Summary**: left untouched by cardinality rules (neither mergeable
//!   in general; claude sends neither).
//!
//! Defaults (nothing dropped) and why they still fit claude 2.1.332's new point attributes:
//! see `CardinalitySettings` in `settings/policy.rs`.
//!
//! A point flagged "no recorded value" contributes nothing to a merged value; the merged point
//! keeps that flag only if every contributor had it.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint, metric::Data,
    number_data_point::Value,
};
use prost::Message;

use crate::settings::policy::{CardinalitySettings, SESSION_ID};

const NO_RECORDED_VALUE: u32 = 1;

/// The compiled `[cardinality]` section.
#[derive(Debug, Clone, Default)]
pub struct Cardinality {
    drop: Vec<String>,
}

impl Cardinality {
    /// Compiles the section; `session.id` is ignored even if validation was bypassed.
    pub fn new(settings: &CardinalitySettings) -> Self {
        let mut drop: Vec<String> = settings
            .drop_metric_attributes
            .iter()
            .filter(|k| k.as_str() != SESSION_ID)
            .cloned()
            .collect();
        drop.sort();
        drop.dedup();
        Cardinality { drop }
    }

    /// Removes the configured attributes from one point; returns whether any was removed.
    pub fn drop_attributes(&self, attrs: &mut Vec<KeyValue>) -> bool {
        if self.drop.is_empty() {
            return false;
        }
        let before = attrs.len();
        attrs.retain(|kv| self.drop.binary_search(&kv.key).is_err());
        attrs.len() != before
    }
}

/// The identity of an attribute set, independent of attribute order.
fn attribute_set_key(attrs: &[KeyValue]) -> Vec<u8> {
    let mut sorted: Vec<&KeyValue> = attrs.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut buf = Vec::new();
    for kv in sorted {
        // Encoding into a Vec cannot fail: the buffer grows as needed.
        let _ = kv.encode_length_delimited(&mut buf);
    }
    buf
}

/// Merges points of one metric that carry identical attribute sets, per the rules in the
/// module documentation. Returns how many points were merged away.
pub fn merge_identical_points(data: &mut Data) -> usize {
    match data {
        Data::Sum(sum) => {
            let cumulative =
                sum.aggregation_temporality == AggregationTemporality::Cumulative as i32;
            merge_by(
                &mut sum.data_points,
                |p| number_key(p, cumulative),
                |_, _| true,
                merge_sum,
            )
        }
        Data::Gauge(gauge) => merge_by(
            &mut gauge.data_points,
            |p| attribute_set_key(&p.attributes),
            |_, _| true,
            keep_latest,
        ),
        Data::Histogram(h) => {
            let cumulative = h.aggregation_temporality == AggregationTemporality::Cumulative as i32;
            merge_by(
                &mut h.data_points,
                |p| {
                    let mut key = attribute_set_key(&p.attributes);
                    if cumulative {
                        key.extend_from_slice(&p.time_unix_nano.to_le_bytes());
                    }
                    key
                },
                |a, b| {
                    a.explicit_bounds == b.explicit_bounds
                        && a.bucket_counts.len() == b.bucket_counts.len()
                },
                merge_histogram,
            )
        }
        Data::ExponentialHistogram(_) | Data::Summary(_) => 0,
    }
}

fn number_key(p: &NumberDataPoint, cumulative: bool) -> Vec<u8> {
    let mut key = attribute_set_key(&p.attributes);
    if cumulative {
        key.extend_from_slice(&p.time_unix_nano.to_le_bytes());
    }
    key
}

/// Groups `points` by `key`; `merge(into, from)` folds a point into the first earlier point
/// of its group that is `compatible`; a point with no compatible partner stays separate.
fn merge_by<P>(
    points: &mut Vec<P>,
    key: impl Fn(&P) -> Vec<u8>,
    compatible: impl Fn(&P, &P) -> bool,
    merge: impl Fn(&mut P, P),
) -> usize {
    if points.len() < 2 {
        return 0;
    }
    let before = points.len();
    let mut out: Vec<P> = Vec::with_capacity(points.len());
    let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for point in std::mem::take(points) {
        let indices = groups.entry(key(&point)).or_default();
        match indices.iter().find(|&&i| compatible(&out[i], &point)) {
            Some(&i) => merge(&mut out[i], point),
            None => {
                indices.push(out.len());
                out.push(point);
            }
        }
    }
    *points = out;
    before - points.len()
}

fn min_start(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

fn recorded(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE == 0
}

fn add_values(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    match (a, b) {
        (None, x) | (x, None) => x,
        (Some(Value::AsInt(x)), Some(Value::AsInt(y))) => Some(match x.checked_add(y) {
            Some(s) => Value::AsInt(s),
            None => Value::AsDouble(x as f64 + y as f64),
        }),
        (Some(x), Some(y)) => Some(Value::AsDouble(as_f64(x) + as_f64(y))),
    }
}

fn as_f64(v: Value) -> f64 {
    match v {
        Value::AsDouble(d) => d,
        Value::AsInt(i) => i as f64,
    }
}

fn merge_sum(into: &mut NumberDataPoint, from: NumberDataPoint) {
    let a = if recorded(into.flags) {
        into.value.take()
    } else {
        None
    };
    let b = if recorded(from.flags) {
        from.value
    } else {
        None
    };
    into.value = add_values(a, b);
    into.start_time_unix_nano = min_start(into.start_time_unix_nano, from.start_time_unix_nano);
    into.time_unix_nano = into.time_unix_nano.max(from.time_unix_nano);
    into.exemplars.extend(from.exemplars);
    into.flags &= from.flags;
}

fn keep_latest(into: &mut NumberDataPoint, from: NumberDataPoint) {
    if from.time_unix_nano >= into.time_unix_nano {
        *into = from;
    }
}

/// Adds two histograms whose bounds are equal (checked by the caller).
fn merge_histogram(into: &mut HistogramDataPoint, from: HistogramDataPoint) {
    if !recorded(from.flags) {
        into.start_time_unix_nano = min_start(into.start_time_unix_nano, from.start_time_unix_nano);
        into.time_unix_nano = into.time_unix_nano.max(from.time_unix_nano);
        return;
    }
    if !recorded(into.flags) {
        let start = min_start(into.start_time_unix_nano, from.start_time_unix_nano);
        let time = into.time_unix_nano.max(from.time_unix_nano);
        *into = from;
        into.start_time_unix_nano = start;
        into.time_unix_nano = time;
        return;
    }
    into.count = into.count.saturating_add(from.count);
    into.sum = match (into.sum, from.sum) {
        (Some(a), Some(b)) => Some(a + b),
        // A sum known for only part of the population is not the sum of the merged point.
        _ => None,
    };
    for (a, b) in into.bucket_counts.iter_mut().zip(from.bucket_counts) {
        *a = a.saturating_add(b);
    }
    into.min = match (into.min, from.min) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    into.max = match (into.max, from.max) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    into.start_time_unix_nano = min_start(into.start_time_unix_nano, from.start_time_unix_nano);
    into.time_unix_nano = into.time_unix_nano.max(from.time_unix_nano);
    into.exemplars.extend(from.exemplars);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Histogram, Sum};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn point(attrs: Vec<KeyValue>, start: u64, time: u64, value: Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(value),
            ..Default::default()
        }
    }

    fn sum(points: Vec<NumberDataPoint>, temporality: AggregationTemporality) -> Data {
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })
    }

    #[test]
    fn dropping_never_removes_session_id() {
        let c = Cardinality::new(&CardinalitySettings {
            drop_metric_attributes: vec!["session.id".into(), "app.version".into()],
        });
        let mut attrs = vec![
            kv("session.id", "s"),
            kv("app.version", "2.1"),
            kv("type", "input"),
        ];
        assert!(c.drop_attributes(&mut attrs));
        let keys: Vec<&str> = attrs.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, vec!["session.id", "type"]);
    }

    #[test]
    fn delta_points_that_became_identical_are_summed_into_one() {
        let s = || kv("session.id", "s");
        let mut data = sum(
            vec![
                point(
                    vec![s(), kv("type", "input")],
                    100,
                    200,
                    Value::AsDouble(1.5),
                ),
                point(vec![kv("type", "output")], 90, 210, Value::AsDouble(2.0)),
                point(
                    vec![kv("type", "input"), s()],
                    80,
                    190,
                    Value::AsDouble(3.0),
                ),
            ],
            AggregationTemporality::Delta,
        );
        assert_eq!(merge_identical_points(&mut data), 1);
        let Data::Sum(sum) = data else { panic!("sum") };
        assert_eq!(sum.data_points.len(), 2);
        let merged = &sum.data_points[0];
        assert_eq!(merged.value, Some(Value::AsDouble(4.5)));
        assert_eq!(merged.start_time_unix_nano, 80);
        assert_eq!(merged.time_unix_nano, 200);
        assert_eq!(sum.data_points[1].value, Some(Value::AsDouble(2.0)));
    }

    #[test]
    fn integer_sums_stay_integers_and_mixed_become_doubles() {
        let mut data = sum(
            vec![
                point(vec![], 1, 2, Value::AsInt(2)),
                point(vec![], 1, 2, Value::AsInt(3)),
            ],
            AggregationTemporality::Delta,
        );
        merge_identical_points(&mut data);
        let Data::Sum(s) = &data else { panic!("sum") };
        assert_eq!(s.data_points[0].value, Some(Value::AsInt(5)));
        let mut data = sum(
            vec![
                point(vec![], 1, 2, Value::AsInt(2)),
                point(vec![], 1, 2, Value::AsDouble(0.5)),
            ],
            AggregationTemporality::Delta,
        );
        merge_identical_points(&mut data);
        let Data::Sum(s) = &data else { panic!("sum") };
        assert_eq!(s.data_points[0].value, Some(Value::AsDouble(2.5)));
    }

    #[test]
    fn cumulative_points_merge_only_at_the_same_timestamp() {
        let mut data = sum(
            vec![
                point(vec![], 10, 100, Value::AsDouble(5.0)),
                point(vec![], 20, 100, Value::AsDouble(7.0)),
                point(vec![], 10, 200, Value::AsDouble(9.0)),
            ],
            AggregationTemporality::Cumulative,
        );
        assert_eq!(merge_identical_points(&mut data), 1);
        let Data::Sum(s) = &data else { panic!("sum") };
        assert_eq!(s.data_points.len(), 2);
        assert_eq!(s.data_points[0].value, Some(Value::AsDouble(12.0)));
        assert_eq!(s.data_points[0].start_time_unix_nano, 10);
        assert_eq!(s.data_points[1].value, Some(Value::AsDouble(9.0)));
    }

    #[test]
    fn no_recorded_value_points_add_nothing() {
        let mut empty = point(vec![], 1, 2, Value::AsDouble(100.0));
        empty.flags = NO_RECORDED_VALUE;
        let mut data = sum(
            vec![empty, point(vec![], 1, 3, Value::AsDouble(1.0))],
            AggregationTemporality::Delta,
        );
        merge_identical_points(&mut data);
        let Data::Sum(s) = &data else { panic!("sum") };
        assert_eq!(s.data_points[0].value, Some(Value::AsDouble(1.0)));
        assert_eq!(s.data_points[0].flags, 0);
    }

    #[test]
    fn gauge_keeps_the_latest_point() {
        let mut data = Data::Gauge(Gauge {
            data_points: vec![
                point(vec![kv("a", "1")], 0, 300, Value::AsDouble(3.0)),
                point(vec![kv("a", "1")], 0, 500, Value::AsDouble(5.0)),
                point(vec![kv("a", "1")], 0, 400, Value::AsDouble(4.0)),
            ],
        });
        assert_eq!(merge_identical_points(&mut data), 2);
        let Data::Gauge(g) = &data else {
            panic!("gauge")
        };
        assert_eq!(g.data_points.len(), 1);
        assert_eq!(g.data_points[0].value, Some(Value::AsDouble(5.0)));
        assert_eq!(g.data_points[0].time_unix_nano, 500);
    }

    fn hist(
        bounds: Vec<f64>,
        buckets: Vec<u64>,
        sum: f64,
        min: f64,
        max: f64,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            count: buckets.iter().sum(),
            sum: Some(sum),
            bucket_counts: buckets,
            explicit_bounds: bounds,
            min: Some(min),
            max: Some(max),
            ..Default::default()
        }
    }

    #[test]
    fn histograms_with_equal_bounds_are_added_and_different_bounds_stay_apart() {
        let mut data = Data::Histogram(Histogram {
            data_points: vec![
                hist(vec![1.0, 10.0], vec![1, 2, 0], 9.0, 0.5, 8.0),
                hist(vec![1.0, 10.0], vec![0, 1, 3], 80.0, 2.0, 30.0),
                hist(vec![5.0], vec![4, 4], 50.0, 1.0, 9.0),
            ],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        });
        assert_eq!(merge_identical_points(&mut data), 1);
        let Data::Histogram(h) = &data else {
            panic!("histogram")
        };
        assert_eq!(h.data_points.len(), 2);
        let m = &h.data_points[0];
        assert_eq!(m.bucket_counts, vec![1, 3, 3]);
        assert_eq!(m.count, 7);
        assert_eq!(m.sum, Some(89.0));
        assert_eq!((m.min, m.max), (Some(0.5), Some(30.0)));
        assert_eq!(h.data_points[1].explicit_bounds, vec![5.0]);
    }
}
