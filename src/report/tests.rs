//! Report output over a known data set: snapshots of the tables, exact JSON totals.

use std::path::PathBuf;

use clap::Parser;

use super::tests_support::{report, report_json};
use super::*;
use crate::store::fixtures::{self, Usage, kv, point, sum};
use crate::store::{Store, StoreBounds};

/// 2026-11-02T09:00:00Z in nanoseconds.
const NOV2_09: u64 = 1_793_610_000_000_000_000;
const DAY_NS: u64 = 86_400_000_000_000;
const MIN_NS: u64 = 60_000_000_000;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ReportArgs,
}

fn u(input: u64, output: u64, cache_read: u64, cache_creation: u64, cost_usd: f64) -> Usage {
    Usage {
        input,
        output,
        cache_read,
        cache_creation,
        cost_usd,
    }
}

/// One session: its API calls (as events and matching metric points) plus the given
/// extra metric points and events.
struct SessionSpec<'a> {
    id: &'a str,
    project: Option<&'a str>,
    start_ns: u64,
    model: &'a str,
    calls: Vec<Usage>,
    extra_metrics: Vec<opentelemetry_proto::tonic::metrics::v1::Metric>,
    extra_events: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
}

fn write_session(store: &Store, s: SessionSpec<'_>) {
    let resource = fixtures::resource(s.project);
    let mut metrics = vec![sum(
        "claude_code.session.count",
        vec![point(
            s.id,
            s.start_ns,
            1.0,
            vec![kv("start_type", "fresh")],
        )],
    )];
    let mut events = vec![fixtures::event(
        "user_prompt",
        s.id,
        s.start_ns,
        vec![kv("prompt_length", "42")],
    )];
    for (i, call) in s.calls.iter().enumerate() {
        let t = s.start_ns + (i as u64 + 1) * MIN_NS;
        metrics.extend(fixtures::usage_points(s.id, t, s.model, *call));
        events.push(fixtures::api_request(s.id, t, s.model, *call));
    }
    metrics.extend(s.extra_metrics);
    events.extend(s.extra_events);
    store
        .append_blocking(fixtures::metrics(resource.clone(), metrics))
        .expect("append metrics");
    store
        .append_blocking(fixtures::logs(resource, events))
        .expect("append logs");
}

fn typed(
    name: &str,
    session: &str,
    t: u64,
    value: f64,
    kind: &str,
    model: Option<&str>,
) -> opentelemetry_proto::tonic::metrics::v1::Metric {
    let mut attrs = vec![kv("type", kind)];
    if let Some(m) = model {
        attrs.push(kv("model", m));
    }
    sum(name, vec![point(session, t, value, attrs)])
}

fn tool(session: &str, t: u64, decision: &str) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
    fixtures::event(
        "tool_decision",
        session,
        t,
        vec![
            kv("tool_name", "Bash"),
            kv("decision", decision),
            kv("source", "config"),
        ],
    )
}

fn tool_result(
    session: &str,
    t: u64,
    success: bool,
) -> opentelemetry_proto::tonic::logs::v1::LogRecord {
    fixtures::event(
        "tool_result",
        session,
        t,
        vec![
            kv("tool_name", "Bash"),
            kv("success", if success { "true" } else { "false" }),
            kv("duration_ms", "12"),
        ],
    )
}

/// Three sessions over two weeks in two projects plus one without a project.
fn known_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let store = Store::open(&path, StoreBounds::default()).expect("open");
    let a = "aaaaaaaa-1111-4111-8111-111111111111";
    let t = NOV2_09;
    write_session(
        &store,
        SessionSpec {
            id: a,
            project: Some("alpha"),
            start_ns: t,
            model: "claude-opus-4-8",
            calls: vec![
                u(1200, 350, 10_000, 2_000, 0.0412),
                u(800, 1_200, 14_000, 500, 0.0633),
                u(300, 2_400, 18_000, 0, 0.0891),
            ],
            extra_metrics: vec![
                typed(
                    "claude_code.lines_of_code.count",
                    a,
                    t + 5 * MIN_NS,
                    120.0,
                    "added",
                    Some("claude-opus-4-8[1m]"),
                ),
                typed(
                    "claude_code.lines_of_code.count",
                    a,
                    t + 5 * MIN_NS,
                    30.0,
                    "removed",
                    Some("claude-opus-4-8[1m]"),
                ),
                typed(
                    "claude_code.active_time.total",
                    a,
                    t + 5 * MIN_NS,
                    300.0,
                    "user",
                    None,
                ),
                typed(
                    "claude_code.active_time.total",
                    a,
                    t + 5 * MIN_NS,
                    900.0,
                    "cli",
                    None,
                ),
                sum(
                    "claude_code.commit.count",
                    vec![point(a, t + 5 * MIN_NS, 1.0, vec![])],
                ),
                sum(
                    "claude_code.code_edit_tool.decision",
                    vec![point(
                        a,
                        t + 5 * MIN_NS,
                        2.0,
                        vec![kv("decision", "accept"), kv("tool_name", "Edit")],
                    )],
                ),
            ],
            extra_events: vec![
                tool(a, t + MIN_NS, "accept"),
                tool(a, t + MIN_NS, "accept"),
                tool(a, t + 2 * MIN_NS, "accept"),
                tool(a, t + 2 * MIN_NS, "reject"),
                tool_result(a, t + MIN_NS, true),
                tool_result(a, t + 2 * MIN_NS, false),
                fixtures::event(
                    "user_prompt",
                    a,
                    t + 3 * MIN_NS,
                    vec![kv("prompt_length", "7")],
                ),
            ],
        },
    );
    let b = "bbbbbbbb-2222-4222-8222-222222222222";
    let t = NOV2_09 + DAY_NS + 5 * 3_600_000_000_000;
    write_session(
        &store,
        SessionSpec {
            id: b,
            project: Some("beta"),
            start_ns: t,
            model: "claude-sonnet-4-6",
            calls: vec![
                u(5_000, 900, 0, 20_000, 0.0975),
                u(400, 600, 25_000, 0, 0.0172),
            ],
            extra_metrics: vec![
                sum(
                    "claude_code.pull_request.count",
                    vec![point(b, t + 4 * MIN_NS, 1.0, vec![])],
                ),
                typed(
                    "claude_code.active_time.total",
                    b,
                    t + 4 * MIN_NS,
                    95.0,
                    "user",
                    None,
                ),
                typed(
                    "claude_code.lines_of_code.count",
                    b,
                    t + 4 * MIN_NS,
                    12.0,
                    "added",
                    Some("claude-sonnet-4-6"),
                ),
            ],
            extra_events: vec![],
        },
    );
    let c = "cccccccc-3333-4333-8333-333333333333";
    let t = NOV2_09 + 8 * DAY_NS;
    write_session(
        &store,
        SessionSpec {
            id: c,
            project: None,
            start_ns: t,
            model: "claude-haiku-4-5",
            calls: vec![u(2_000, 150, 0, 0, 0.0031)],
            extra_metrics: vec![],
            extra_events: vec![fixtures::event(
                "api_error",
                c,
                t + 2 * MIN_NS,
                vec![
                    kv("model", "claude-haiku-4-5"),
                    kv("status_code", "529"),
                    kv("error", "overloaded"),
                ],
            )],
        },
    );
    (dir, path)
}

#[test]
fn summary_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "120"]));
}

#[test]
fn by_day_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "160", "--by", "day"]));
}

#[test]
fn by_week_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "160", "--by", "week"]));
}

#[test]
fn by_model_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "160", "--by", "model"]));
}

#[test]
fn by_session_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "160", "--by", "session"]));
}

#[test]
fn by_project_table_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_snapshot!(report(&db, &["--utc", "--width", "160", "--by", "project"]));
}

#[test]
fn narrow_terminal_drops_the_least_important_columns_first() {
    let (_dir, db) = known_store();
    let out = report(&db, &["--utc", "--width", "60", "--by", "month"]);
    assert!(
        out.lines().all(|l| l.chars().count() <= 60),
        "too wide:\n{out}"
    );
    let header = out
        .lines()
        .find(|l| l.contains("Month"))
        .expect("breakdown header");
    assert!(
        header.contains("Cost") && header.contains("Cache hit"),
        "{header}"
    );
    assert!(
        !header.contains("Tools") && !header.contains("PRs"),
        "{header}"
    );
    insta::assert_snapshot!(out);
}

#[test]
fn json_by_model_snapshot() {
    let (_dir, db) = known_store();
    insta::assert_json_snapshot!(report_json(&db, &["--utc", "--by", "model"]));
}

#[test]
fn json_totals_equal_the_sums_of_the_known_calls() {
    let (_dir, db) = known_store();
    let j = report_json(&db, &["--utc"]);
    let s = &j["summary"];
    let cost = 0.0412 + 0.0633 + 0.0891 + 0.0975 + 0.0172 + 0.0031;
    let f = |v: &serde_json::Value| v.as_f64().expect("number");
    assert!((f(&s["cost_usd"]) - cost).abs() < 1e-9, "{}", s["cost_usd"]);
    assert!(
        (f(&s["events"]["cost_usd"]) - cost).abs() < 1e-9,
        "events agree"
    );
    assert_eq!(s["tokens"]["input"], 1200 + 800 + 300 + 5000 + 400 + 2000);
    assert_eq!(s["tokens"]["output"], 350 + 1200 + 2400 + 900 + 600 + 150);
    assert_eq!(s["tokens"]["cache_read"], 10_000 + 14_000 + 18_000 + 25_000);
    assert_eq!(s["tokens"]["cache_creation"], 2_000 + 500 + 20_000);
    assert_eq!(s["events"]["input_tokens"], s["tokens"]["input"]);
    let cache = 67_000.0 / (67_000.0 + 9_700.0 + 22_500.0);
    assert!((f(&s["cache_hit_ratio"]) - cache).abs() < 1e-12);
    assert_eq!(s["sessions"], 3);
    assert_eq!(s["sessions_started"], 3);
    assert_eq!(
        (s["lines"]["added"].clone(), s["lines"]["removed"].clone()),
        (132.into(), 30.into())
    );
    assert_eq!(
        (s["commits"].clone(), s["pull_requests"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(s["tools"]["accepts"], 3);
    assert_eq!(s["tools"]["rejects"], 1);
    assert_eq!(s["tools"]["failures"], 1);
    assert_eq!(s["api"]["requests"], 6);
    assert_eq!(s["api"]["errors"], 1);
    assert_eq!(s["prompts"], 4);
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["empty"], false);
}

#[test]
fn since_and_until_dates_select_whole_days() {
    let (_dir, db) = known_store();
    let j = report_json(
        &db,
        &["--utc", "--since", "2026-11-03", "--until", "2026-11-03"],
    );
    assert_eq!(j["summary"]["sessions"], 1);
    assert_eq!(j["summary"]["tokens"]["input"], 5400);
    let j = report_json(&db, &["--utc", "--until", "2026-11-02"]);
    assert_eq!(j["summary"]["tokens"]["input"], 2300);
}

#[test]
fn relative_since_and_until_count_back_from_now() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let store = Store::open(&db, StoreBounds::default()).expect("open");
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    for (id, days_ago, input) in [("recent", 2, 111), ("old", 10, 2_222)] {
        write_session(
            &store,
            SessionSpec {
                id,
                project: None,
                start_ns: now_ns - days_ago * DAY_NS,
                model: "claude-opus-4-8",
                calls: vec![u(input, 1, 0, 0, 0.001)],
                extra_metrics: vec![],
                extra_events: vec![],
            },
        );
    }
    drop(store);
    let input = |argv: &[&str]| report_json(&db, argv)["summary"]["tokens"]["input"].clone();
    assert_eq!(input(&["--since", "7d"]), 111);
    assert_eq!(input(&["--since", "1w"]), 111);
    assert_eq!(input(&["--until", "7d"]), 2_222);
    assert_eq!(input(&["--since", "24h"]), 0);
    assert_eq!(input(&["--since", "2w"]), 2_333);
}

#[test]
fn project_filter_keeps_only_that_project() {
    let (_dir, db) = known_store();
    let j = report_json(&db, &["--utc", "--project", "alpha", "--by", "project"]);
    let rows = j["breakdown"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], "alpha");
    assert_eq!(j["summary"]["api"]["requests"], 3);
}

#[test]
fn a_missing_store_prints_a_friendly_message_not_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("never-created.db");
    let out = report(&db, &["--by", "day"]);
    assert!(out.starts_with("No usage recorded yet in "), "{out}");
    assert!(!db.exists(), "the report must not create a store");
    let j = report_json(&db, &[]);
    assert_eq!(j["empty"], true);
    assert_eq!(j["summary"]["cost_usd"], 0.0);
}

#[test]
fn an_empty_store_prints_a_friendly_message_not_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    drop(Store::open(&db, StoreBounds::default()).expect("open"));
    assert!(report(&db, &[]).starts_with("No usage recorded yet in "));
}

#[test]
fn an_invalid_date_is_an_error_naming_the_flag() {
    let (_dir, db) = known_store();
    let cli = Cli::try_parse_from(["report", "--since", "2026-02-30"]).expect("parses as a date");
    let err = run(&cli.args, &db, &mut Vec::new()).expect_err("invalid date");
    assert!(err.to_string().contains("--since 2026-02-30"), "{err}");
}

#[test]
fn time_specs_accept_dates_and_ages_and_name_the_forms_on_error() {
    assert_eq!(
        parse_time_spec("2026-11-02"),
        Ok(TimeSpec::Date("2026-11-02".to_owned()))
    );
    assert_eq!(
        parse_time_spec("24h"),
        Ok(TimeSpec::Ago(Duration::from_secs(86_400)))
    );
    assert_eq!(
        parse_time_spec("7d"),
        Ok(TimeSpec::Ago(Duration::from_secs(7 * 86_400)))
    );
    assert_eq!(
        parse_time_spec("2w"),
        Ok(TimeSpec::Ago(Duration::from_secs(14 * 86_400)))
    );
    let err = parse_time_spec("3 months").expect_err("not a form");
    assert!(err.contains("YYYY-MM-DD") && err.contains("7d"), "{err}");
    assert!(parse_time_spec("d").is_err());
    assert!(parse_time_spec("").is_err());
}

#[test]
fn number_formats_are_exact_and_compact_where_asked() {
    use super::render::{compact, duration, int, money, pct};
    assert_eq!(int(0), "0");
    assert_eq!(int(1_234_567), "1,234,567");
    assert_eq!(compact(9_999), "9,999");
    assert_eq!(compact(12_345), "12.3K");
    assert_eq!(compact(4_560_000), "4.56M");
    assert_eq!(money(0.0412), "$0.0412");
    assert_eq!(money(1234.5), "$1,234.50");
    assert_eq!(pct(Some(0.6789)), "67.9%");
    assert_eq!(pct(None), "-");
    assert_eq!(duration(45.0), "45s");
    assert_eq!(duration(200.0), "3m 20s");
    assert_eq!(duration(7500.0), "2h 05m");
}

#[test]
fn json_shows_the_cache_creation_split_inside_the_total_not_on_top_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let store = Store::open(&db, StoreBounds::default()).expect("store");
    let call = u(1000, 20, 500, 77, 0.0038);
    let resource = fixtures::resource(Some("alpha"));
    let mut event = fixtures::api_request("s1", NOV2_09, "claude-sonnet-4-6", call);
    event
        .attributes
        .push(fixtures::kv_int("cache_creation_5m_tokens", 47));
    event
        .attributes
        .push(fixtures::kv_int("cache_creation_1h_tokens", 30));
    store
        .append_blocking(fixtures::metrics(
            resource.clone(),
            fixtures::usage_points("s1", NOV2_09, "claude-sonnet-4-6", call),
        ))
        .expect("metrics");
    store
        .append_blocking(fixtures::logs(resource, vec![event]))
        .expect("logs");
    drop(store);
    let j = report_json(&db, &["--utc"]);
    let s = &j["summary"];
    assert_eq!(s["events"]["cache_creation_tokens"], 77);
    assert_eq!(s["events"]["cache_creation_5m_tokens"], 47);
    assert_eq!(s["events"]["cache_creation_1h_tokens"], 30);
    assert_eq!(s["tokens"]["cache_creation"], 77);
    assert_eq!(
        s["tokens"]["total"],
        1000 + 20 + 500 + 77,
        "no double count"
    );
}

#[test]
fn json_split_is_null_for_releases_that_do_not_send_it() {
    let (_dir, db) = known_store();
    let s = &report_json(&db, &["--utc"])["summary"];
    assert!(s["events"]["cache_creation_1h_tokens"].is_null(), "{s}");
    assert!(s["events"]["cache_creation_5m_tokens"].is_null(), "{s}");
}
