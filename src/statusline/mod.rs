//! `claude-telemetry statusline`: Claude Code's status-line command. It reads the JSON Claude
//! Code pipes to it and prints one line: session cost, today's spend on this machine, the
//! budget in use, and each plan usage-limit window with a forecast at the current pace.
//!
//! Input shapes (verified in the 2.1.197 and 2.1.332 binaries): the status-line input has
//! `cost.total_cost_usd`, `session_id`, `model.display_name` and, only when a window is known,
//! `rate_limits: {five_hour|seven_day|spend_limit: {used_percentage, resets_at (Unix s)}}`;
//! 2.1.332's usage schema also has `rate_limits.limits[]` rows (`kind`, `group`, `percent`,
//! `resets_at` as ISO 8601) and `model_scoped[]` (`display_name`, `utilization`). Both are read.
//!
//! It never fails the status line: any error prints a plain fallback line and exits 0.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

use crate::settings::Loaded;
use crate::store::limits::{self, Sample};

/// Arguments of `claude-telemetry statusline`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatuslineArgs {
    /// A status-line command the user already had: run with the same input, its output kept.
    #[arg(long, value_name = "COMMAND")]
    pub chain: Option<String>,
}

/// What the status line reads from Claude Code's input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    /// `session_id`.
    pub session_id: Option<String>,
    /// `cost.total_cost_usd`.
    pub cost_usd: Option<f64>,
    /// Each limit window present (absent or null windows are left out).
    pub windows: Vec<Window>,
}

/// One plan usage-limit window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `five_hour`, `seven_day`, a `limits[]` row's `kind` (with its scope label), …
    pub name: String,
    /// Used share, 0–100.
    pub used_pct: f64,
    /// Reset time, Unix seconds.
    pub resets_at: Option<i64>,
}

/// Parses the input; unknown or missing fields are simply absent.
pub fn parse(json: &Value) -> Input {
    let mut windows = Vec::new();
    if let Some(rl) = json.get("rate_limits").and_then(Value::as_object) {
        for (name, w) in rl {
            if name == "limits" || name == "model_scoped" {
                continue;
            }
            let pct = w
                .get("used_percentage")
                .and_then(Value::as_f64)
                .or_else(|| w.get("utilization").and_then(Value::as_f64).map(fraction));
            if let Some(pct) = pct {
                windows.push(Window {
                    name: name.clone(),
                    used_pct: pct,
                    resets_at: w.get("resets_at").and_then(reset_secs),
                });
            }
        }
        for row in rl
            .get("limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(kind) = row.get("kind").and_then(Value::as_str) else {
                continue;
            };
            let Some(pct) = row
                .get("percent")
                .or_else(|| row.get("percentage"))
                .and_then(Value::as_f64)
            else {
                continue;
            };
            let scope = row.get("scope").and_then(|s| {
                ["model", "surface"]
                    .iter()
                    .find_map(|k| s.get(k)?.get("display_name")?.as_str())
            });
            windows.push(Window {
                name: match scope {
                    Some(label) => format!("{kind}:{label}"),
                    None => kind.to_owned(),
                },
                used_pct: pct,
                resets_at: row.get("resets_at").and_then(reset_secs),
            });
        }
        for row in rl
            .get("model_scoped")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(label), Some(u)) = (
                row.get("display_name").and_then(Value::as_str),
                row.get("utilization").and_then(Value::as_f64),
            ) {
                windows.push(Window {
                    name: format!("model_scoped:{label}"),
                    used_pct: fraction(u),
                    resets_at: row.get("resets_at").and_then(reset_secs),
                });
            }
        }
    }
    Input {
        session_id: json
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        cost_usd: json
            .get("cost")
            .and_then(|c| c.get("total_cost_usd"))
            .and_then(Value::as_f64),
        windows,
    }
}

/// `utilization` is a 0–1 fraction where the status line's `used_percentage` is 0–100.
fn fraction(u: f64) -> f64 {
    (u * 100.0).min(100.0)
}

/// `resets_at` as Unix seconds (a number) or ISO 8601 text (`2026-12-07T18:00:00Z`).
fn reset_secs(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_f64() {
        return Some(n as i64);
    }
    parse_iso(v.as_str()?)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` to Unix seconds, without a date crate.
fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |a: usize, n: usize| -> Option<i64> { s.get(a..a + n)?.parse().ok() };
    let (y, mo, d, h, mi, se) = (
        num(0, 4)?,
        num(5, 2)?,
        num(8, 2)?,
        num(11, 2)?,
        num(14, 2)?,
        num(17, 2)?,
    );
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z') | None => 0,
        Some(sign @ (b'+' | b'-')) => {
            let m = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' { -m } else { m }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se + offset)
}

/// When a window reaches 100 % at the pace since `base` (time s, used %), or `None` when it
/// does not grow, the span is too short to say, or it resets first.
pub fn forecast(
    base: (i64, f64),
    now: (i64, f64),
    resets_at: Option<i64>,
    min_span_s: i64,
) -> Option<i64> {
    let (t0, p0) = base;
    let (t1, p1) = now;
    if t1 - t0 < min_span_s || p1 <= p0 || p1 >= 100.0 {
        return None;
    }
    let rate = (p1 - p0) / (t1 - t0) as f64;
    let eta = t1 + ((100.0 - p1) / rate).ceil() as i64;
    match resets_at {
        Some(r) if eta >= r => None,
        _ => Some(eta),
    }
}

/// Short label of a window name.
fn label(name: &str) -> String {
    match name {
        "five_hour" | "session" => "5h".into(),
        "seven_day" | "weekly_all" => "7d".into(),
        "seven_day_opus" => "7d opus".into(),
        "seven_day_sonnet" => "7d sonnet".into(),
        other => other.replace('_', " "),
    }
}

/// The budget closest to its limit (`day $4.10/$10`, `over` appended past it), read from the
/// connection the line already holds; `None` without a `[budget]` or when it cannot be read
/// (the line never fails for a budget).
fn budget_segment(loaded: &Loaded, conn: &rusqlite::Connection, now: i64) -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    let plan = crate::budget::Plan::from_settings(loaded, &cwd);
    if plan.is_empty() {
        return None;
    }
    let standings = plan.standings(conn, now).ok()?;
    let most = standings.most_pressing()?;
    Some(match most.level() {
        crate::budget::Level::Over => format!("{} over", most.segment()),
        _ => most.segment(),
    })
}

/// Local `HH:MM` of Unix seconds, or `Mon HH:MM` when not today.
fn local_time(secs: i64, now: i64) -> String {
    // SAFETY: localtime_r writes into the tm we own.
    let tm = |t: i64| unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t = t as libc::time_t;
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let (a, b) = (tm(secs), tm(now));
    if a.tm_yday == b.tm_yday && a.tm_year == b.tm_year {
        format!("{:02}:{:02}", a.tm_hour, a.tm_min)
    } else {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        format!(
            "{} {:02}:{:02}",
            DAYS[a.tm_wday.clamp(0, 6) as usize],
            a.tm_hour,
            a.tm_min
        )
    }
}

/// Forecasts look back this far in the window's period for their base sample.
const PACE_LOOKBACK_S: i64 = 2 * 3600;
/// ... and need at least this span to say anything.
const MIN_PACE_SPAN_S: i64 = 60;

/// Builds the line from the input and the store, recording this refresh's samples.
fn line(input: &Input, loaded: &Loaded, now_ns: i64) -> anyhow::Result<String> {
    let now = now_ns / 1_000_000_000;
    let path = loaded.paths.store_file(&loaded.settings.store.path);
    let mut conn = limits::open(&path)?;
    let mut parts = vec![format!("${:.2} session", input.cost_usd.unwrap_or(0.0))];
    parts.push(format!(
        "${:.2} today",
        crate::budget::spent_today(&conn, now)?
    ));
    if let Some(budget) = budget_segment(loaded, &conn, now) {
        parts.push(budget);
    }
    let mut samples = Vec::new();
    for w in &input.windows {
        let base = limits::period_start(
            &conn,
            &w.name,
            w.resets_at,
            now_ns - PACE_LOOKBACK_S * 1_000_000_000,
        )?;
        let mut text = format!("{} {:.0}%", label(&w.name), w.used_pct);
        match base.and_then(|(t, p)| {
            forecast(
                (t / 1_000_000_000, p),
                (now, w.used_pct),
                w.resets_at,
                MIN_PACE_SPAN_S,
            )
        }) {
            Some(eta) => text.push_str(&format!(" full ~{}", local_time(eta, now))),
            None if w.used_pct >= 100.0 => {
                if let Some(r) = w.resets_at {
                    text.push_str(&format!(" until {}", local_time(r, now)));
                }
            }
            None => {}
        }
        parts.push(text);
        samples.push(Sample {
            time_ns: now_ns,
            window: w.name.clone(),
            used_pct: w.used_pct,
            resets_at: w.resets_at,
            session_id: input.session_id.clone(),
        });
    }
    limits::record(&mut conn, &samples)?;
    if let Ok(endpoint) = std::env::var(crate::launcher::RELAY_HTTP_ENV) {
        // Best effort: the status line is not the place to report a relay problem.
        let _ = send_gauges(&endpoint, &samples);
    }
    Ok(parts.join(" · "))
}

/// Sends the samples as OTLP gauges (`claude_code.rate_limit.used_percent{window}` and
/// `claude_code.rate_limit.resets_at{window}`) to the relay's OTLP/HTTP endpoint.
fn send_gauges(endpoint: &str, samples: &[Sample]) -> std::io::Result<()> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;
    if samples.is_empty() {
        return Ok(());
    }
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let gauge = |name: &str, unit: &str, value: &dyn Fn(&Sample) -> Option<f64>| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: samples
                .iter()
                .filter_map(|s| {
                    let mut attrs = vec![kv("window", &s.window)];
                    if let Some(id) = &s.session_id {
                        attrs.push(kv("session.id", id));
                    }
                    Some(NumberDataPoint {
                        attributes: attrs,
                        time_unix_nano: s.time_ns as u64,
                        value: Some(number_data_point::Value::AsDouble(value(s)?)),
                        ..Default::default()
                    })
                })
                .collect(),
        })),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "claude-code")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(Default::default()),
                metrics: vec![
                    gauge("claude_code.rate_limit.used_percent", "", &|s| {
                        Some(s.used_pct)
                    }),
                    gauge("claude_code.rate_limit.resets_at", "s", &|s| {
                        s.resets_at.map(|r| r as f64)
                    }),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let addr: std::net::SocketAddr = host
        .parse()
        .map_err(|_| std::io::Error::other("relay endpoint is not host:port"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_write_timeout(Some(Duration::from_millis(300)))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    write!(
        stream,
        "POST /v1/metrics HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    // Wait for the status line: the relay answers once the request is durable.
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(())
}

/// Runs a chained status-line command with the same input; its output, or nothing after 2 s.
fn chained(command: &str, input: &[u8]) -> Option<String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = rx.recv_timeout(Duration::from_secs(2)).ok();
    if out.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    out.map(|o| o.trim_end().to_owned())
        .filter(|o| !o.is_empty())
}

/// Entry point: always exit 0, always one line (a plain fallback on any error).
pub fn run(args: &StatuslineArgs, loaded: Result<&Loaded, String>) -> i32 {
    // A chained command that exits without reading its input must not kill us with SIGPIPE.
    // SAFETY: signal(2) with a valid signal number and SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut raw = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut raw);
    let json: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let input = parse(&json);
    let ours = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match loaded {
        Ok(loaded) => line(&input, loaded, crate::store::now_ns()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    }))
    .unwrap_or_else(|_| Err("internal error".into()))
    .unwrap_or_else(|_| match input.cost_usd {
        Some(c) => format!("${c:.2} session"),
        None => "claude-telemetry".into(),
    });
    let text = match args.chain.as_deref().and_then(|c| chained(c, &raw)) {
        Some(theirs) => format!("{theirs} | {ours}"),
        None => ours,
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    0
}

/// `claude-telemetry limits`: each window's samples, periods, how many reached 90 % and 100 %,
/// and when they first hit 100 %.
pub fn limits_view(path: &std::path::Path) -> anyhow::Result<i32> {
    if !path.exists() {
        println!(
            "No limit samples yet: configure `claude-telemetry statusline` as claude's status line."
        );
        return Ok(0);
    }
    let conn = limits::open(path)?;
    let rows = limits::history(&conn)?;
    if rows.is_empty() {
        println!(
            "No limit samples yet: configure `claude-telemetry statusline` as claude's status line."
        );
    }
    let now = crate::store::now_ns() / 1_000_000_000;
    for h in rows {
        let hits: Vec<String> = h.hit_at.iter().map(|t| local_time(*t, now)).collect();
        println!(
            "{:<20} samples {:>6}  periods {:>4}  >=90% {:>4}  100% {:>4}  max {:>3.0}%  last {:>3.0}% at {}{}",
            h.window,
            h.samples,
            h.periods,
            h.periods_high,
            h.periods_full,
            h.max_pct,
            h.last_pct,
            local_time(h.last_at, now),
            if hits.is_empty() {
                String::new()
            } else {
                format!("  hit 100% at {}", hits.join(", "))
            }
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_line_windows_object_is_parsed_and_null_windows_skipped() {
        let input = parse(&json!({
            "session_id": "abc",
            "cost": {"total_cost_usd": 1.25},
            "rate_limits": {
                "five_hour": {"used_percentage": 42.0, "resets_at": 1_800_000_000},
                "seven_day": null,
                "seven_day_opus": {"used_percentage": 7, "resets_at": "2027-01-15T08:00:00Z"}
            }
        }));
        assert_eq!(input.session_id.as_deref(), Some("abc"));
        assert_eq!(input.cost_usd, Some(1.25));
        assert_eq!(
            input.windows,
            vec![
                Window {
                    name: "five_hour".into(),
                    used_pct: 42.0,
                    resets_at: Some(1_800_000_000)
                },
                Window {
                    name: "seven_day_opus".into(),
                    used_pct: 7.0,
                    resets_at: Some(1_800_000_000)
                },
            ]
        );
    }

    #[test]
    fn usage_limits_rows_and_model_scoped_are_parsed() {
        let input = parse(&json!({
            "rate_limits": {
                "limits": [
                    {"kind": "session", "group": "session", "percent": 81.5,
                     "resets_at": "2026-12-07T18:30:00.000+05:30"},
                    {"kind": "weekly_scoped", "group": "weekly", "percent": 12,
                     "resets_at": null, "scope": {"model": {"display_name": "Opus"}}},
                    {"kind": "weekly_all", "group": "weekly"}
                ],
                "model_scoped": [{"display_name": "Fable", "utilization": 0.5, "resets_at": null}]
            }
        }));
        let names: Vec<_> = input.windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["session", "weekly_scoped:Opus", "model_scoped:Fable"]
        );
        assert_eq!(input.windows[0].resets_at, Some(1_796_648_400));
        assert_eq!(input.windows[2].used_pct, 50.0);
    }

    #[test]
    fn absent_or_null_rate_limits_give_no_windows() {
        for v in [
            json!({}),
            json!({"rate_limits": null}),
            json!(null),
            json!({"rate_limits": {}}),
        ] {
            assert!(parse(&v).windows.is_empty(), "{v}");
        }
    }

    #[test]
    fn forecast_extrapolates_the_pace_and_stops_at_the_reset() {
        // 20 % -> 50 % in 30 min: 1 %/min, the remaining 50 % takes 50 min.
        assert_eq!(
            forecast((0, 20.0), (1800, 50.0), None, 60),
            Some(1800 + 3000)
        );
        // Resets before it would fill.
        assert_eq!(forecast((0, 20.0), (1800, 50.0), Some(4000), 60), None);
        // Not growing, too short a span, already full.
        assert_eq!(forecast((0, 50.0), (1800, 50.0), None, 60), None);
        assert_eq!(forecast((0, 20.0), (30, 50.0), None, 60), None);
        assert_eq!(forecast((0, 20.0), (1800, 100.0), None, 60), None);
    }
}
