//! The durable local store through the whole program: nothing lost while the upstream is down
//! or when the launcher is killed, and `report` answering from the store alone.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::checks::MODEL;
use support::{FakeAnthropic, OtlpSink, Sandbox};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn sandbox(api: &FakeAnthropic, upstream: &str, data: &Path) -> Sandbox {
    let mut s = Sandbox::for_launcher(api, upstream);
    s.set_env("CLAUDE_TELEMETRY_DATA_DIR", data.display().to_string())
        .set_env("CLAUDE_TELEMETRY_STORE__DELIVERY_LEASE_MS", "1500");
    s
}

fn turn(s: &Sandbox, prompt: &str) -> std::process::Output {
    let out = s
        .command(LAUNCHER)
        .args(["-p", prompt, "--allowedTools", "Bash", "--model", MODEL])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn report_json(s: &Sandbox, args: &[&str]) -> serde_json::Value {
    let out = s
        .command(LAUNCHER)
        .arg("report")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn upstream_outage_loses_nothing_and_delivers_each_request_once() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    sink.stop();
    for i in 0..3 {
        let started = Instant::now();
        let out = turn(&s, &format!("turn {i}: RUN_BASH: echo outage-{i}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("wait in the local store"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert!(sink.requests().is_empty());
    // `status` says what waits, under the stack's table (whatever Docker's state here).
    let status = s.command(LAUNCHER).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let waiting: u64 = text
        .lines()
        .find(|l| l.starts_with("local store:"))
        .and_then(|l| l.split(": ").nth(2))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no local store line in status: {text}"));
    assert!(waiting >= 3, "three turns' requests wait: {text}");
    sink.restart();
    // The next launch delivers what the earlier ones kept, and its own.
    turn(&s, "after the outage");
    let calls = api.calls();
    let total = api.total_usage(None);
    sink.wait_for(Duration::from_secs(20), "every turn's tokens", |k| {
        k.sum("claude_code.token.usage", &[("type", "input")]) >= total.input as f64
    });
    assert_eq!(
        sink.sum("claude_code.token.usage", &[("type", "input")]),
        total.input as f64,
        "exactly once"
    );
    assert_eq!(
        sink.sum("claude_code.token.usage", &[("type", "output")]),
        total.output as f64
    );
    assert_eq!(sink.sum("claude_code.session.count", &[]), 4.0);
    let events = sink.events("api_request");
    assert_eq!(
        events.len(),
        calls.len(),
        "one api_request event per API call, none twice"
    );
    let cost = sink.sum("claude_code.cost.usage", &[]);
    assert!((cost - api.expected_cost_usd(None)).abs() < 1e-9, "{cost}");
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("0 request(s) waiting for the upstream"),
        "{text}"
    );
}

/// A stand-in claude that sends one event through the relay, says so, then waits to be killed
/// (its pid in `exporting-claude.pid` beside it, so the test stops it: a SIGKILLed launcher
/// leaves its child running). Asked `--help` (the launcher's grammar learner), it exits at once.
fn exporting_claude(dir: &Path, linger: bool) -> PathBuf {
    let body = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"claude-code"}}]},"scopeLogs":[{"logRecords":[{"body":{"stringValue":"claude_code.api_request"},"attributes":[{"key":"event.name","value":{"stringValue":"api_request"}},{"key":"session.id","value":{"stringValue":"crash-session"}},{"key":"request_id","value":{"stringValue":"req-crash-1"}},{"key":"model","value":{"stringValue":"claude-sonnet-4-6"}},{"key":"input_tokens","value":{"stringValue":"123"}}]}]}]}]}"#;
    let script = format!(
        "import os, sys, time, urllib.request\n\
         if '--version' in sys.argv: print('0.0.0'); sys.exit(0)\n\
         if '--help' in sys.argv: sys.exit(0)\n\
         open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'exporting-claude.pid'), 'w').write(str(os.getpid()))\n\
         req = urllib.request.Request(os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/logs',\n\
             data={body:?}.encode(), headers={{'content-type': 'application/json'}})\n\
         print(urllib.request.urlopen(req).status, flush=True)\n\
         if {linger}: time.sleep(60)\n",
        linger = if linger { "True" } else { "False" }
    );
    let path = dir.join("exporting-claude");
    std::fs::write(&path, format!("#!/usr/bin/env python3\n{script}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn launcher_killed_after_the_ack_loses_nothing() {
    use std::io::{BufRead, BufReader};
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    let fake = exporting_claude(&s.scratch(), true);
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    sink.stop();
    let mut child = s
        .command(LAUNCHER)
        .args(["-p", "x"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "200", "the relay acknowledged the export");
    child.kill().unwrap(); // SIGKILL: no drain, no goodbye
    child.wait().unwrap();
    // The launcher's claude outlives it; stop it, as a crashed launcher's user would.
    let pid = std::fs::read_to_string(s.scratch().join("exporting-claude.pid")).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();

    sink.restart();
    std::thread::sleep(Duration::from_millis(1600)); // any lease the killed launcher held expires
    let mut next = sandbox(&api, &sink.grpc_endpoint(), data.path());
    let quiet = next.scratch().join("quiet");
    std::fs::write(
        &quiet,
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 0.0.0\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&quiet, std::fs::Permissions::from_mode(0o755)).unwrap();
    next.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", quiet.display().to_string());
    next.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    sink.wait_for(
        Duration::from_secs(10),
        "the event the killed launcher kept",
        |k| {
            k.events("api_request")
                .iter()
                .any(|e| e.attributes.get("request_id").map(String::as_str) == Some("req-crash-1"))
        },
    );
    let delivered = sink
        .events("api_request")
        .iter()
        .filter(|e| e.attributes.get("request_id").map(String::as_str) == Some("req-crash-1"))
        .count();
    assert!(delivered >= 1, "at least once across a crash");
}

fn report_totals_equal_what_the_api_answered_with_no_upstream_at_all() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    let s = sandbox(&api, "", data.path());
    turn(&s, "first: RUN_BASH: echo report-1");
    turn(&s, "second question");
    let total = api.total_usage(None);
    let j = report_json(&s, &["--by", "project"]);
    let summary = &j["summary"];
    for (field, expected) in [
        ("input", total.input),
        ("output", total.output),
        ("cache_read", total.cache_read),
        ("cache_creation", total.cache_creation),
    ] {
        assert_eq!(
            summary["tokens"][field], expected,
            "tokens.{field}: {summary}"
        );
    }
    let cost = summary["cost_usd"].as_f64().unwrap();
    assert!((cost - api.expected_cost_usd(None)).abs() < 1e-9, "{cost}");
    assert_eq!(summary["sessions"], 2);
    assert_eq!(summary["api"]["requests"], api.calls().len());
    let rows = j["breakdown"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{j}");
    assert_eq!(
        rows[0]["key"], "project",
        "the project is the working directory's name: {j}"
    );
    // The table form answers the same question for a person.
    let out = s
        .command(LAUNCHER)
        .args(["report", "--by", "model"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("claude-sonnet-4-6"), "{table}");
}

#[test]
fn without_docker_the_default_is_local_only_and_report_still_answers() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    // The default upstream is the local stack's collector; Docker is unreachable here.
    let mut s = sandbox(&api, "http://localhost:4317", data.path());
    s.set_env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    s.set_env("CLAUDE_TELEMETRY_STACK__PORTS__COLLECTOR_HEALTH", "9");
    let fake = exporting_claude(&s.scratch(), false);
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("local-only mode"), "{stderr}");
    assert!(
        !stderr.contains("wait in the local store"),
        "nothing is queued for an upstream: {stderr}"
    );
    let j = report_json(&s, &[]);
    assert_eq!(j["summary"]["api"]["requests"], 1, "{j}");
    assert_eq!(j["summary"]["events"]["input_tokens"], 123, "{j}");
}

crate::on_each_release!(
    upstream_outage_loses_nothing_and_delivers_each_request_once,
    report_totals_equal_what_the_api_answered_with_no_upstream_at_all,
);

/// Claude 2.1.332 (the newest release checked), as `tests/install-tools.sh` exports it.
const LATEST_CLAUDE_ENV: &str = "CLAUDE_TELEMETRY_TEST_CLAUDE_LATEST";

#[test]
fn report_reads_the_5m_and_1h_cache_split_of_claude_2_1_332_without_double_counting() {
    let latest = support::tool_from_env(LATEST_CLAUDE_ENV, "Claude Code 2.1.332");
    // The real API's shape: cache_creation_input_tokens is the total of its 5m and 1h parts.
    let api = FakeAnthropic::with_usage(|i, _| {
        let h1 = 30 + i as u64;
        let m5 = 47 + 2 * i as u64;
        support::Usage {
            input: 1000 + i as u64,
            output: 20,
            cache_read: 500,
            cache_creation: m5 + h1,
            cache_creation_split: Some((m5, h1)),
        }
    });
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, "", data.path());
    s.set_env(
        "CLAUDE_TELEMETRY_CLAUDE__PATH",
        latest.display().to_string(),
    );
    turn(&s, "RUN_BASH: echo split-1");
    let total = api.total_usage(None);
    let (m5, h1) = total.cache_creation_split.expect("the plan gives a split");
    let summary = report_json(&s, &[])["summary"].clone();
    assert_eq!(summary["tokens"]["cache_creation"], total.cache_creation);
    assert_eq!(
        summary["events"]["cache_creation_tokens"],
        total.cache_creation
    );
    assert_eq!(
        summary["events"]["cache_creation_5m_tokens"], m5,
        "{summary}"
    );
    assert_eq!(
        summary["events"]["cache_creation_1h_tokens"], h1,
        "{summary}"
    );
    assert_eq!(
        summary["tokens"]["total"],
        total.input + total.output + total.cache_read + total.cache_creation,
        "the split is inside cache_creation, not added: {summary}"
    );
}
