//! Budgets through the whole program: spend recorded by a real launch (a stand-in claude
//! exporting `claude_code.cost.usage` through the relay into the store), then the launch line
//! before claude starts and `report` saying over / near / under, per project where a
//! project's `.claude-telemetry.toml` sets the limit, and a team budget capping the user's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{FakeAnthropic, Sandbox};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

/// What the stand-in claude writes to stderr first thing, so a test can tell the launcher's
/// lines before claude started from those after.
const STARTED: &str = "stand-in claude started";

/// A stand-in claude: answers the grammar probes, says it started, and when `SEED_USD` is set
/// exports one delta cost point of that many USD (now, session `SEED_SESSION`) to the relay's
/// OTLP/HTTP endpoint, as Claude Code's metrics exporter does.
fn stand_in_claude(dir: &Path) -> PathBuf {
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, sys, time, urllib.request
if '--version' in sys.argv: print('0.0.0'); sys.exit(0)
if '--help' in sys.argv: print('Usage: claude [options]'); sys.exit(0)
print({STARTED:?}, file=sys.stderr, flush=True)
usd = os.environ.get('SEED_USD')
if usd:
    now = time.time_ns()
    attrs = lambda pairs: [{{'key': k, 'value': {{'stringValue': v}}}} for k, v in pairs]
    body = {{'resourceMetrics': [{{
        'resource': {{'attributes': attrs([('service.name', 'claude-code')])}},
        'scopeMetrics': [{{'scope': {{'name': 'com.anthropic.claude_code'}}, 'metrics': [{{
            'name': 'claude_code.cost.usage', 'unit': 'USD',
            'sum': {{'aggregationTemporality': 1, 'isMonotonic': True, 'dataPoints': [{{
                'attributes': attrs([('session.id', os.environ['SEED_SESSION']),
                                     ('model', 'claude-sonnet-4-6')]),
                'startTimeUnixNano': str(now - 1_000_000_000), 'timeUnixNano': str(now),
                'asDouble': float(usd)}}]}}}}]}}]}}]}}
    req = urllib.request.Request(os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/metrics',
        data=json.dumps(body).encode(), headers={{'content-type': 'application/json'}})
    assert urllib.request.urlopen(req).status == 200
"#
    );
    let path = dir.join("stand-in-claude");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A local-only launcher sandbox (no upstream) whose claude is the stand-in.
fn sandbox(api: &FakeAnthropic) -> Sandbox {
    let mut s = Sandbox::for_launcher(api, "");
    let fake = stand_in_claude(&s.scratch());
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    s
}

/// Runs one launch in `cwd` that spends `usd` in session `session`.
fn spend(s: &Sandbox, cwd: &Path, session: &str, usd: f64) {
    let out = s
        .command(LAUNCHER)
        .current_dir(cwd)
        .args(["-p", "x"])
        .env("SEED_USD", usd.to_string())
        .env("SEED_SESSION", session)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A launch (spending nothing) with `extra` environment; returns its output.
fn launch(s: &Sandbox, cwd: &Path, extra: &[(&str, &str)]) -> Output {
    let out = s
        .command(LAUNCHER)
        .current_dir(cwd)
        .args(["-p", "x"])
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

/// The launcher's stderr lines before claude started.
fn before_claude(out: &Output) -> Vec<String> {
    let text = String::from_utf8_lossy(&out.stderr);
    let (before, _) = text
        .split_once(STARTED)
        .unwrap_or_else(|| panic!("the stand-in claude ran: {text}"));
    before.lines().map(str::to_owned).collect()
}

fn budget_lines(out: &Output) -> Vec<String> {
    before_claude(out)
        .into_iter()
        .filter(|l| l.contains("budget"))
        .collect()
}

/// The status line Claude Code would show in `cwd` (its JSON piped in), with `extra` env.
fn status_line(s: &Sandbox, cwd: &Path, extra: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut child = s
        .command(LAUNCHER)
        .current_dir(cwd)
        .arg("statusline")
        .envs(extra.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"session_id":"s","cost":{"total_cost_usd":0.5}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn report(s: &Sandbox, cwd: &Path, extra: &[(&str, &str)], json: bool) -> Output {
    let mut cmd = s.command(LAUNCHER);
    cmd.current_dir(cwd)
        .arg("report")
        .envs(extra.iter().copied());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

#[test]
fn launch_line_and_report_say_over_near_and_under_the_daily_budget() {
    let api = FakeAnthropic::start();
    let s = sandbox(&api);
    let project = s.project().to_path_buf();
    spend(&s, &project, "budget-session-1", 6.0);
    spend(&s, &project, "budget-session-2", 2.5);

    // $8.50 of $10: near.
    let near = [("CLAUDE_TELEMETRY_BUDGET__DAILY", "10")];
    let lines = budget_lines(&launch(&s, &project, &near));
    assert_eq!(
        lines,
        vec!["claude-telemetry: near budget: day $8.50 of $10 (85%)".to_string()],
        "one line, before claude starts"
    );
    let text = String::from_utf8(report(&s, &project, &near, false).stdout).unwrap();
    assert!(text.contains("NEAR   day $8.50 of $10 (85%)"), "{text}");
    let line = status_line(&s, &project, &near);
    assert!(
        line.contains(" · day $8.50/$10"),
        "the status line shows it: {line}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&report(&s, &project, &near, true).stdout).unwrap();
    let b = &j["budgets"][0];
    assert_eq!(b["period"], "day");
    assert_eq!(b["limit_usd"], 10.0);
    assert!((b["spent_usd"].as_f64().unwrap() - 8.5).abs() < 1e-9, "{b}");
    assert_eq!(b["scope"]["kind"], "machine");

    // $8.50 of $8 a day and of $5 a week: over, both said on the one line.
    let over = [
        ("CLAUDE_TELEMETRY_BUDGET__DAILY", "8"),
        ("CLAUDE_TELEMETRY_BUDGET__WEEKLY", "5"),
        ("CLAUDE_TELEMETRY_BUDGET__MONTHLY", "1000"),
    ];
    let lines = budget_lines(&launch(&s, &project, &over));
    assert_eq!(
        lines,
        vec![
            "claude-telemetry: over budget: day $8.50 of $8 (106%), week $8.50 of $5 (170%)"
                .to_string()
        ]
    );
    let text = String::from_utf8(report(&s, &project, &over, false).stdout).unwrap();
    assert!(text.contains("OVER   day $8.50 of $8 (106%)"), "{text}");
    assert!(text.contains("OVER   week $8.50 of $5 (170%)"), "{text}");
    assert!(text.contains("under  month $8.50 of $1000 (1%)"), "{text}");
    let line = status_line(&s, &project, &over);
    assert!(
        line.contains(" · week $8.50/$5 over"),
        "the most pressing one: {line}"
    );

    // $8.50 of $50: under, no line at all.
    let under = [("CLAUDE_TELEMETRY_BUDGET__DAILY", "50")];
    assert!(budget_lines(&launch(&s, &project, &under)).is_empty());
    let text = String::from_utf8(report(&s, &project, &under, false).stdout).unwrap();
    assert!(text.contains("under  day $8.50 of $50 (17%)"), "{text}");
    let line = status_line(&s, &project, &under);
    assert!(line.contains(" · day $8.50/$50"), "{line}");
    assert!(
        !status_line(&s, &project, &[]).contains("day $"),
        "no budget, no segment"
    );

    // No budget: no line, no budget section, no `budgets` in JSON.
    assert!(budget_lines(&launch(&s, &project, &[])).is_empty());
    let j: serde_json::Value =
        serde_json::from_slice(&report(&s, &project, &[], true).stdout).unwrap();
    assert!(j.get("budgets").is_none(), "{j}");
}

#[test]
fn a_project_budget_counts_that_project_and_a_team_budget_caps_the_user() {
    let api = FakeAnthropic::start();
    let s = sandbox(&api);
    let project = s.project().to_path_buf();
    let other = s.scratch().join("other-repo");
    std::fs::create_dir_all(&other).unwrap();
    spend(&s, &project, "project-session", 3.0);
    spend(&s, &other, "other-session", 20.0);

    std::fs::write(
        project.join(".claude-telemetry.toml"),
        "[budget]\ndaily = 4\n",
    )
    .unwrap();
    let name = project.file_name().unwrap().to_str().unwrap().to_owned();
    let lines = budget_lines(&launch(&s, &project, &[]));
    assert!(
        lines.is_empty(),
        "$3 of the project's $4 is under: the other repository's $20 is not counted: {lines:?}"
    );
    std::fs::write(
        project.join(".claude-telemetry.toml"),
        "[budget]\ndaily = 3.5\n",
    )
    .unwrap();
    let lines = budget_lines(&launch(&s, &project, &[]));
    assert_eq!(
        lines,
        vec![format!(
            "claude-telemetry: near budget: day $3.00 of $3.50 (86%) for project {name}"
        )]
    );
    let j: serde_json::Value =
        serde_json::from_slice(&report(&s, &project, &[], true).stdout).unwrap();
    assert_eq!(j["budgets"][0]["scope"]["kind"], "project");
    assert_eq!(j["budgets"][0]["scope"]["name"], name.as_str());

    // A team budget of $15 a day in the managed policy: the user's $100 does not apply, the
    // whole machine's $23 counts, and the user is told.
    let policy = PathBuf::from(&s.env()["CLAUDE_TELEMETRY_POLICY_FILE"]);
    std::fs::write(&policy, "[budget]\ndaily = 15\n").unwrap();
    let out = launch(&s, &other, &[("CLAUDE_TELEMETRY_BUDGET__DAILY", "100")]);
    let before = before_claude(&out);
    assert!(
        before
            .iter()
            .any(|l| l.contains("budget.daily = 100 is not applied: locked to 15")),
        "{before:?}"
    );
    assert_eq!(
        budget_lines(&out)
            .into_iter()
            .filter(|l| l.contains("over budget"))
            .collect::<Vec<_>>(),
        vec!["claude-telemetry: over budget: day $23.00 of $15 (153%) (team budget)".to_string()]
    );
}

#[test]
fn a_bad_budget_names_the_file_line_and_key_and_claude_still_runs() {
    let api = FakeAnthropic::start();
    let s = sandbox(&api);
    let project = s.project().to_path_buf();
    std::fs::write(
        project.join(".claude-telemetry.toml"),
        "# team repo\n[budget]\nweekly = -20\n",
    )
    .unwrap();
    let out = s.command(LAUNCHER).arg("config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(".claude-telemetry.toml:3:1: budget.weekly: `-20` is not a budget"),
        "{err}"
    );
    // A session still starts (telemetry withheld, said in one line), as for any settings error.
    let out = launch(&s, &project, &[]);
    let before = before_claude(&out).join("\n");
    assert!(before.contains("budget.weekly"), "{before}");
}

#[test]
fn the_budgets_reach_the_upstream_as_a_gauge_for_the_alert_rules() {
    use support::OtlpSink;
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut s = Sandbox::for_launcher(&api, &sink.grpc_endpoint());
    let fake = stand_in_claude(&s.scratch());
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    let project = s.project().to_path_buf();
    std::fs::write(
        project.join(".claude-telemetry.toml"),
        "[budget]\nweekly = 40\n",
    )
    .unwrap();
    launch(&s, &project, &[("CLAUDE_TELEMETRY_BUDGET__DAILY", "12.5")]);
    let points = sink.points("claude_telemetry.budget");
    let of = |period: &str| {
        points
            .iter()
            .find(|p| p.attributes.get("budget.period").map(String::as_str) == Some(period))
            .unwrap_or_else(|| panic!("a {period} point in {points:?}"))
    };
    let day = of("day");
    assert_eq!(day.value, 12.5);
    assert_eq!(day.attributes["budget.scope"], "machine");
    let week = of("week");
    assert_eq!(week.value, 40.0);
    assert_eq!(week.attributes["budget.scope"], "project");
    let name = project.file_name().unwrap().to_str().unwrap();
    assert_eq!(week.resource["project.name"], name, "stamped by the relay");
    assert_eq!(
        week.resource["service.instance.id"],
        "claude-telemetry-budget"
    );
    assert!(
        !points
            .iter()
            .any(|p| p.attributes.contains_key("budget.period")
                && p.attributes["budget.period"] == "month"),
        "no monthly limit, no monthly point"
    );
}

/// `date` in the sandbox's zone with `args` (e.g. `-u -d '3 days ago' +%FT%TZ`).
fn date(s: &Sandbox, args: &[&str]) -> String {
    let out = s.command("date").args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// One assistant line of a Claude Code transcript (the shape 2.1.197 writes): a request only
/// the transcript saw.
fn transcript_line(cwd: &Path, session: &str, request: &str, at: &str, input: u64) -> String {
    serde_json::json!({
        "parentUuid": "p", "cwd": cwd.display().to_string(), "sessionId": session,
        "version": "2.1.197", "type": "assistant", "uuid": format!("u-{request}"),
        "timestamp": at, "requestId": request,
        "message": {"id": format!("msg_{request}"), "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-6", "content": [{"type": "text", "text": "hi"}],
                    "usage": {"input_tokens": input, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    })
    .to_string()
}

/// The status line's "today" is what `report` says today's spend is: claude's own cost from
/// telemetry plus the estimated cost of imported history (requests only a transcript saw),
/// and history from three days ago is not in it.
#[test]
fn the_status_line_today_counts_telemetry_and_imported_history_as_report_does() {
    let api = FakeAnthropic::start();
    let s = sandbox(&api);
    let project = s.project().to_path_buf();
    spend(&s, &project, "telemetry-session", 1.25);
    // Imported history: 200k input tokens of sonnet 4.6 now ($0.60 at $3/M), and a large
    // request three days ago that today must not count.
    let dir = s.home().join(".claude/projects/-sandbox-project");
    std::fs::create_dir_all(&dir).unwrap();
    let now = date(&s, &["-u", "+%Y-%m-%dT%H:%M:%S.000Z"]);
    let old = date(&s, &["-u", "-d", "3 days ago", "+%Y-%m-%dT%H:%M:%S.000Z"]);
    std::fs::write(
        dir.join("history-session.jsonl"),
        format!(
            "{}\n{}\n",
            transcript_line(&project, "history-session", "req_today", &now, 200_000),
            transcript_line(&project, "history-session", "req_old", &old, 3_000_000)
        ),
    )
    .unwrap();
    let import = s.command(LAUNCHER).args(["import"]).output().unwrap();
    assert!(import.status.success(), "{import:?}");

    let today = date(&s, &["+%Y-%m-%d"]);
    let out = s
        .command(LAUNCHER)
        .current_dir(&project)
        .args(["report", "--json", "--since", &today])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reported = j["summary"]["cost_usd"].as_f64().unwrap();
    let estimated = j["summary"]["cost_estimated_usd"].as_f64().unwrap();
    assert!((estimated - 0.60).abs() < 1e-9, "{j}");
    assert!((reported - 1.85).abs() < 1e-9, "{j}");
    let line = status_line(&s, &project, &[]);
    assert!(
        line.contains(&format!(" · ${reported:.2} today")),
        "report says ${reported:.2} today: {line}"
    );
}
