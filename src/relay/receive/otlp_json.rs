//! OTLP/JSON decoding that follows the proto3 JSON mapping where the generated serde code does
//! not: doubles may be the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (or a number in a
//! string), 64-bit integers may be numbers or strings, and anything out of range is an error.
//!
//! The generated code flattens the data point `value` oneofs, and serde turns any value it
//! cannot read there into "no value" — a point silently lost behind a 200. So the metric point
//! values (number points, exemplars) and the double fields of histogram and summary points are
//! taken out of the JSON before serde sees it, decoded here by the mapping's rules, and put
//! back into the decoded request. Everything else keeps the generated code's decoding, which
//! already rejects what it cannot read.

use crate::otlp::{ExportRequest, Signal};
use opentelemetry_proto::tonic::collector::{logs, metrics, trace};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{exemplar, number_data_point};
use serde_json::{Map, Value};

/// The values taken out of the JSON, in document order.
#[derive(Default)]
struct Taken {
    /// `asDouble` / `asInt` of every number point, then of every exemplar, in order.
    number_points: Vec<Option<number_data_point::Value>>,
    exemplars: Vec<Option<exemplar::Value>>,
    /// `sum`, `min`, `max` of histogram and exponential histogram points.
    histogram: Vec<[Option<f64>; 3]>,
    /// `sum` of summary points and `(quantile, value)` of their quantiles.
    summary_sums: Vec<f64>,
    quantiles: Vec<(f64, f64)>,
}

/// Decodes an OTLP/JSON body of `signal`, or says what is wrong and where.
pub fn decode(signal: Signal, body: &[u8]) -> Result<ExportRequest, String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let expected_key = match signal {
        Signal::Metrics => "resourceMetrics",
        Signal::Logs => "resourceLogs",
        Signal::Traces => "resourceSpans",
    };
    if let Value::Object(top) = &value
        && !top.is_empty()
        && !top.contains_key(expected_key)
    {
        return Err(format!(
            "no `{expected_key}` found (OTLP/JSON field names are lowerCamelCase)"
        ));
    }
    Ok(match signal {
        Signal::Metrics => {
            let taken = take_metric_values(&mut value)?;
            let mut request: metrics::v1::ExportMetricsServiceRequest =
                serde_json::from_value(value).map_err(|e| e.to_string())?;
            put_back(&mut request, taken)?;
            ExportRequest::Metrics(request)
        }
        Signal::Logs => ExportRequest::Logs(
            serde_json::from_value::<logs::v1::ExportLogsServiceRequest>(value)
                .map_err(|e| e.to_string())?,
        ),
        Signal::Traces => ExportRequest::Traces(
            serde_json::from_value::<trace::v1::ExportTraceServiceRequest>(value)
                .map_err(|e| e.to_string())?,
        ),
    })
}

/// A proto3 JSON `double`: a number, or a string holding a number, `NaN`, `Infinity` or
/// `-Infinity`. `null` is absent.
fn double(v: Option<Value>, at: &str) -> Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("{at}: {n} is not a double")),
        Some(Value::String(s)) => match s.as_str() {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            // Rust also parses "inf" and "nan", which the mapping does not allow.
            text if !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')) =>
            {
                match text.parse::<f64>() {
                    Ok(d) if d.is_finite() => Ok(Some(d)),
                    Ok(_) => Err(format!("{at}: {text:?} is out of range for a double")),
                    Err(_) => Err(format!("{at}: {text:?} is not a double")),
                }
            }
            text => Err(format!(
                "{at}: {text:?} is not a double (use a number, \"NaN\", \"Infinity\" or \"-Infinity\")"
            )),
        },
        Some(other) => Err(format!("{at}: {other} is not a double")),
    }
}

/// A proto3 JSON `int64`/`sfixed64`: a number or a decimal string, within range.
fn int64(v: Option<Value>, at: &str) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            if n.is_u64() {
                return Err(format!("{at}: {n} is out of range for a 64-bit integer"));
            }
            // Exponent or fraction notation is allowed when the value is integral.
            match n.as_f64() {
                Some(f)
                    if f.fract() == 0.0
                        && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) =>
                {
                    Ok(Some(f as i64))
                }
                Some(f) if f.fract() == 0.0 => {
                    Err(format!("{at}: {n} is out of range for a 64-bit integer"))
                }
                _ => Err(format!("{at}: {n} is not an integer")),
            }
        }
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|e| {
            if s.trim()
                .trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_digit())
            {
                format!("{at}: {s:?} is out of range for a 64-bit integer")
            } else {
                format!("{at}: {s:?} is not an integer ({e})")
            }
        }),
        Some(other) => Err(format!("{at}: {other} is not an integer")),
    }
}

fn array_mut<'a>(
    obj: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The oneof of a number point or an exemplar: at most one of `asDouble`, `asInt`.
fn point_value(
    point: &mut Map<String, Value>,
    at: &str,
) -> Result<Option<Result<f64, i64>>, String> {
    let d = double(point.remove("asDouble"), &format!("{at}.asDouble"))?;
    let i = int64(point.remove("asInt"), &format!("{at}.asInt"))?;
    match (d, i) {
        (Some(_), Some(_)) => Err(format!("{at}: both asDouble and asInt are set (a oneof)")),
        (Some(d), None) => Ok(Some(Ok(d))),
        (None, Some(i)) => Ok(Some(Err(i))),
        (None, None) => Ok(None),
    }
}

fn take_exemplars(
    point: &mut Map<String, Value>,
    at: &str,
    taken: &mut Taken,
) -> Result<(), String> {
    for (e, exemplar) in array_mut(point, "exemplars").enumerate() {
        let v = point_value(exemplar, &format!("{at}.exemplars[{e}]"))?;
        taken.exemplars.push(v.map(|v| match v {
            Ok(d) => exemplar::Value::AsDouble(d),
            Err(i) => exemplar::Value::AsInt(i),
        }));
    }
    Ok(())
}

fn take_metric_values(value: &mut Value) -> Result<Taken, String> {
    let mut taken = Taken::default();
    let Some(top) = value.as_object_mut() else {
        return Ok(taken);
    };
    for (r, rm) in array_mut(top, "resourceMetrics").enumerate() {
        for (s, sm) in array_mut(rm, "scopeMetrics").enumerate() {
            for (m, metric) in array_mut(sm, "metrics").enumerate() {
                let at = format!("resourceMetrics[{r}].scopeMetrics[{s}].metrics[{m}]");
                for kind in ["gauge", "sum"] {
                    let Some(data) = metric.get_mut(kind).and_then(Value::as_object_mut) else {
                        continue;
                    };
                    for (p, point) in array_mut(data, "dataPoints").enumerate() {
                        let at = format!("{at}.{kind}.dataPoints[{p}]");
                        let v = point_value(point, &at)?;
                        taken.number_points.push(v.map(|v| match v {
                            Ok(d) => number_data_point::Value::AsDouble(d),
                            Err(i) => number_data_point::Value::AsInt(i),
                        }));
                        take_exemplars(point, &at, &mut taken)?;
                    }
                }
                for kind in ["histogram", "exponentialHistogram"] {
                    let Some(data) = metric.get_mut(kind).and_then(Value::as_object_mut) else {
                        continue;
                    };
                    for (p, point) in array_mut(data, "dataPoints").enumerate() {
                        let at = format!("{at}.{kind}.dataPoints[{p}]");
                        let mut three = [None; 3];
                        for (slot, key) in three.iter_mut().zip(["sum", "min", "max"]) {
                            *slot = double(point.remove(key), &format!("{at}.{key}"))?;
                        }
                        taken.histogram.push(three);
                        take_exemplars(point, &at, &mut taken)?;
                    }
                }
                if let Some(data) = metric.get_mut("summary").and_then(Value::as_object_mut) {
                    for (p, point) in array_mut(data, "dataPoints").enumerate() {
                        let at = format!("{at}.summary.dataPoints[{p}]");
                        let sum = double(point.remove("sum"), &format!("{at}.sum"))?;
                        taken.summary_sums.push(sum.unwrap_or(0.0));
                        for (q, quantile) in array_mut(point, "quantileValues").enumerate() {
                            let at = format!("{at}.quantileValues[{q}]");
                            let qv =
                                double(quantile.remove("quantile"), &format!("{at}.quantile"))?;
                            let v = double(quantile.remove("value"), &format!("{at}.value"))?;
                            taken.quantiles.push((qv.unwrap_or(0.0), v.unwrap_or(0.0)));
                        }
                    }
                }
            }
        }
    }
    Ok(taken)
}

/// Puts the taken values back, walking the decoded request in the same document order.
fn put_back(
    request: &mut metrics::v1::ExportMetricsServiceRequest,
    taken: Taken,
) -> Result<(), String> {
    let mut numbers = taken.number_points.into_iter();
    let mut exemplars = taken.exemplars.into_iter();
    let mut histograms = taken.histogram.into_iter();
    let mut sums = taken.summary_sums.into_iter();
    let mut quantiles = taken.quantiles.into_iter();
    let mismatch = || "OTLP/JSON structure changed while decoding".to_string();
    let mut lost = 0;
    for metric in request
        .resource_metrics
        .iter_mut()
        .flat_map(|rm| &mut rm.scope_metrics)
        .flat_map(|sm| &mut sm.metrics)
    {
        match &mut metric.data {
            Some(Data::Gauge(g)) => {
                for p in &mut g.data_points {
                    p.value = numbers.next().ok_or_else(mismatch)?;
                    for e in &mut p.exemplars {
                        e.value = exemplars.next().ok_or_else(mismatch)?;
                    }
                }
            }
            Some(Data::Sum(s)) => {
                for p in &mut s.data_points {
                    p.value = numbers.next().ok_or_else(mismatch)?;
                    for e in &mut p.exemplars {
                        e.value = exemplars.next().ok_or_else(mismatch)?;
                    }
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &mut h.data_points {
                    [p.sum, p.min, p.max] = histograms.next().ok_or_else(mismatch)?;
                    for e in &mut p.exemplars {
                        e.value = exemplars.next().ok_or_else(mismatch)?;
                    }
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                for p in &mut h.data_points {
                    [p.sum, p.min, p.max] = histograms.next().ok_or_else(mismatch)?;
                    for e in &mut p.exemplars {
                        e.value = exemplars.next().ok_or_else(mismatch)?;
                    }
                }
            }
            Some(Data::Summary(s)) => {
                for p in &mut s.data_points {
                    p.sum = sums.next().ok_or_else(mismatch)?;
                    for q in &mut p.quantile_values {
                        (q.quantile, q.value) = quantiles.next().ok_or_else(mismatch)?;
                    }
                }
            }
            None => lost += 1,
        }
    }
    if lost > 0 {
        return Err(format!(
            "{lost} metric(s) have no recognisable data (enum values must be integers, ids hex)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(point: &str) -> String {
        format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{point}]}}}}]}}]}}]}}"#
        )
    }

    fn first_value(body: &str) -> Result<Option<number_data_point::Value>, String> {
        match decode(Signal::Metrics, body.as_bytes())? {
            ExportRequest::Metrics(m) => {
                match &m.resource_metrics[0].scope_metrics[0].metrics[0].data {
                    Some(Data::Gauge(g)) => Ok(g.data_points[0].value),
                    other => panic!("{other:?}"),
                }
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn special_double_strings_decode_as_the_mapping_says() {
        let nan = first_value(&gauge(r#"{"asDouble":"NaN"}"#)).unwrap();
        assert!(matches!(nan, Some(number_data_point::Value::AsDouble(d)) if d.is_nan()));
        assert_eq!(
            first_value(&gauge(r#"{"asDouble":"Infinity"}"#)).unwrap(),
            Some(number_data_point::Value::AsDouble(f64::INFINITY))
        );
        assert_eq!(
            first_value(&gauge(r#"{"asDouble":"-Infinity"}"#)).unwrap(),
            Some(number_data_point::Value::AsDouble(f64::NEG_INFINITY))
        );
        assert_eq!(
            first_value(&gauge(r#"{"asDouble":"1.5"}"#)).unwrap(),
            Some(number_data_point::Value::AsDouble(1.5))
        );
        assert_eq!(
            first_value(&gauge(r#"{"asDouble":2.25}"#)).unwrap(),
            Some(number_data_point::Value::AsDouble(2.25))
        );
    }

    #[test]
    fn int64_values_are_numbers_or_strings_and_out_of_range_is_an_error() {
        for (json, want) in [
            (r#"{"asInt":"9223372036854775807"}"#, i64::MAX),
            (r#"{"asInt":-9223372036854775808}"#, i64::MIN),
            (r#"{"asInt":"-42"}"#, -42),
            (r#"{"asInt":1e3}"#, 1000),
        ] {
            assert_eq!(
                first_value(&gauge(json)).unwrap(),
                Some(number_data_point::Value::AsInt(want)),
                "{json}"
            );
        }
        for json in [
            r#"{"asInt":"9223372036854775808"}"#,
            r#"{"asInt":9223372036854775808}"#,
            r#"{"asInt":1.5}"#,
            r#"{"asInt":"x"}"#,
            r#"{"asDouble":"nan"}"#,
            r#"{"asDouble":"inf"}"#,
            r#"{"asDouble":"1e999"}"#,
            r#"{"asDouble":true}"#,
            r#"{"asDouble":1,"asInt":2}"#,
        ] {
            let err = first_value(&gauge(json)).unwrap_err();
            assert!(err.contains("dataPoints[0]"), "{json}: {err}");
        }
    }

    #[test]
    fn histogram_and_summary_doubles_and_exemplars_take_the_special_strings() {
        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[
                {"count":"3","sum":"Infinity","min":"-Infinity","max":"NaN","bucketCounts":["1","2"],"explicitBounds":[1.0],
                 "exemplars":[{"asInt":"7"}]}]}},
            {"name":"s","summary":{"dataPoints":[{"count":1,"sum":"NaN","quantileValues":[{"quantile":0.5,"value":"Infinity"}]}]}},
            {"name":"g","gauge":{"dataPoints":[{"asInt":"5","exemplars":[{"asDouble":"-Infinity"}]}]}}
        ]}]}]}"#;
        let ExportRequest::Metrics(m) = decode(Signal::Metrics, body.as_bytes()).unwrap() else {
            unreachable!()
        };
        let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
        let Some(Data::Histogram(h)) = &metrics[0].data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, p.min),
            (3, Some(f64::INFINITY), Some(f64::NEG_INFINITY))
        );
        assert!(p.max.unwrap().is_nan());
        assert_eq!(p.exemplars[0].value, Some(exemplar::Value::AsInt(7)));
        let Some(Data::Summary(s)) = &metrics[1].data else {
            panic!()
        };
        assert!(s.data_points[0].sum.is_nan());
        assert_eq!(s.data_points[0].quantile_values[0].value, f64::INFINITY);
        let Some(Data::Gauge(g)) = &metrics[2].data else {
            panic!()
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsInt(5))
        );
        assert_eq!(
            g.data_points[0].exemplars[0].value,
            Some(exemplar::Value::AsDouble(f64::NEG_INFINITY))
        );
    }

    #[test]
    fn out_of_range_timestamps_and_attribute_ints_are_errors() {
        let ts = gauge(r#"{"asInt":1,"timeUnixNano":"18446744073709551616"}"#);
        assert!(decode(Signal::Metrics, ts.as_bytes()).is_err());
        let attr = gauge(
            r#"{"asInt":1,"attributes":[{"key":"k","value":{"intValue":"9223372036854775808"}}]}"#,
        );
        assert!(decode(Signal::Metrics, attr.as_bytes()).is_err());
        let negative = gauge(r#"{"asInt":1,"timeUnixNano":-1}"#);
        assert!(decode(Signal::Metrics, negative.as_bytes()).is_err());
    }

    #[test]
    fn a_metric_without_recognisable_data_is_an_error() {
        let body =
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":"x"}]}]}]}"#;
        assert!(decode(Signal::Metrics, body.as_bytes()).is_err());
    }
}
