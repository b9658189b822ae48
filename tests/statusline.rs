//! `claude-telemetry statusline` through the real binary: the line it prints from JSON of the
//! shapes claude 2.1.197 / 2.1.332 declare, the samples it keeps in the store, the gauges it
//! sends to a real OTLP peer, its fallback and its chaining.
//!
//! Paths taken: the real claude (2.1.197 and 2.1.332) as a subscription session
//! (`CLAUDE_CODE_OAUTH_TOKEN`, no API key) against the fake API answering with the
//! `anthropic-ratelimit-unified-{5h,7d}-{utilization,reset,status}` headers: claude builds
//! `rate_limits.five_hour` / `seven_day` (`used_percentage` = utilization x 100, `resets_at` in
//! Unix seconds) itself and pipes them on every refresh. An API-key session sends no
//! `rate_limits` and no `rate_limits_available` key at all. The shapes no tested release sends
//! offline (2.1.332's `limits[]` rows, `model_scoped[]`) are fed by direct runs with JSON of
//! exactly the declared shapes (and unit tests in src/statusline).

mod common;
mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{FakeAnthropic, OtlpSink, Sandbox};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn statusline(sandbox: &Sandbox, extra: &[(&str, &str)], args: &[&str], input: &str) -> String {
    let mut command: Command = sandbox.command(LAUNCHER);
    command.arg("statusline").args(args);
    for (k, v) in extra {
        command.env(k, v);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn statusline");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write input");
    let out = child.wait_with_output().expect("statusline runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

fn store_path(sandbox: &Sandbox) -> std::path::PathBuf {
    std::path::PathBuf::from(&sandbox.env()["CLAUDE_TELEMETRY_DATA_DIR"]).join("store.db")
}

#[test]
fn limit_windows_show_percent_and_forecast_land_in_the_store_and_reach_the_upstream_as_gauges() {
    let api = FakeAnthropic::start();
    let sandbox = Sandbox::for_launcher(&api, "");
    let upstream = OtlpSink::start();
    let endpoint = upstream.http_endpoint();
    let env = [("CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT", endpoint.as_str())];
    let reset = 4_102_444_800i64; // 2100-01-01: never before the forecast
    let input = |pct: f64| {
        format!(
            r#"{{"session_id":"sess-1","cost":{{"total_cost_usd":0.4213}},"model":{{"id":"m"}},
               "rate_limits":{{"five_hour":{{"used_percentage":{pct},"resets_at":{reset}}},
               "seven_day":{{"used_percentage":12,"resets_at":{reset}}}}}}}"#
        )
    };
    let first = statusline(&sandbox, &env, &[], &input(20.0));
    assert!(
        first.starts_with("$0.42 session · $0.00 today · 5h 20%"),
        "{first}"
    );
    assert!(first.contains("7d 12%"), "{first}");
    // The first sample is half an hour old: 20 % -> 50 % in 30 min fills in 50 more minutes.
    let conn = rusqlite::Connection::open(store_path(&sandbox)).expect("store");
    conn.execute(
        "UPDATE limit_samples SET time_ns = time_ns - 1800000000000",
        [],
    )
    .expect("age the samples");
    let second = statusline(&sandbox, &env, &[], &input(50.0));
    assert!(second.contains("5h 50% full ~"), "{second}");
    assert!(
        !second.contains("7d 12% full"),
        "a flat window has no forecast: {second}"
    );
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM limit_samples WHERE window = 'five_hour' AND session_id = 'sess-1'
             AND resets_at = ?1",
            [reset],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(n, 2);
    let points = upstream.points("claude_code.rate_limit.used_percent");
    let mut seen: Vec<(String, f64)> = points
        .iter()
        .map(|p| (p.attributes["window"].clone(), p.value))
        .collect();
    seen.sort_by(|a, b| a.partial_cmp(b).expect("numbers"));
    assert_eq!(
        seen,
        [
            ("five_hour".to_owned(), 20.0),
            ("five_hour".to_owned(), 50.0),
            ("seven_day".to_owned(), 12.0),
            ("seven_day".to_owned(), 12.0)
        ]
    );
}

#[test]
fn bad_input_prints_a_plain_line_and_a_chained_command_keeps_its_output() {
    let api = FakeAnthropic::start();
    let sandbox = Sandbox::for_launcher(&api, "");
    let out = statusline(&sandbox, &[], &[], "not json");
    assert_eq!(out, "$0.00 session · $0.00 today\n");
    // An unreadable store: still one line, exit 0.
    let mut broken = Sandbox::for_launcher(&api, "");
    broken.set_env("CLAUDE_TELEMETRY_DATA_DIR", "/proc/no-such-dir");
    let out = statusline(&broken, &[], &[], r#"{"cost":{"total_cost_usd":2.5}}"#);
    assert_eq!(out, "$2.50 session\n");
    let out = statusline(
        &sandbox,
        &[],
        &["--chain", "read x; echo \"mine: $x\""],
        "{}\n",
    );
    assert_eq!(out, "mine: {} | $0.00 session · $0.00 today\n");
}

/// Settings as Claude Code writes them (JSON.stringify(settings, null, 2) and a newline; keys
/// in the order they were set, not sorted).
const CLAUDE_WRITTEN: &str = r#"{
  "model": "opus",
  "statusLine": {
    "type": "command",
    "command": "echo old"
  },
  "env": {
    "ZED": "1",
    "ALPHA": "2"
  },
  "permissions": {
    "allow": [],
    "deny": [
      "Bash(rm:*)"
    ]
  }
}
"#;

/// A sandbox whose Claude Code config dir holds `settings` (None: no settings file), and a
/// runner of `claude-telemetry <args>` in it.
fn settings_sandbox(api: &FakeAnthropic, settings: Option<&str>) -> (Sandbox, std::path::PathBuf) {
    let mut sandbox = Sandbox::for_launcher(api, "");
    let config = sandbox.scratch().join("claude-config");
    std::fs::create_dir_all(&config).expect("config dir");
    if let Some(text) = settings {
        std::fs::write(config.join("settings.json"), text).expect("write settings");
    }
    sandbox.set_env("CLAUDE_CONFIG_DIR", config.display().to_string());
    (sandbox, config)
}

fn run_launcher(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox
        .command(LAUNCHER)
        .args(args)
        .output()
        .expect("setup");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn setup_statusline_changes_only_the_status_line_value_chains_the_old_command_and_undo_restores_the_bytes()
 {
    let api = FakeAnthropic::start();
    let (sandbox, config) = settings_sandbox(&api, Some(CLAUDE_WRITTEN));
    let file = config.join("settings.json");
    let said = run_launcher(&sandbox, &["setup", "--statusline"]);
    assert!(
        said.contains("- \"statusLine\"") && said.contains("+ \"statusLine\""),
        "{said}"
    );
    let backup = config.join("settings.json.claude-telemetry-backup");
    assert_eq!(
        std::fs::read_to_string(&backup).expect("backup"),
        CLAUDE_WRITTEN
    );
    let installed = std::fs::read_to_string(&file).expect("read");
    let now: serde_json::Value = serde_json::from_str(&installed).expect("json");
    let command = now["statusLine"]["command"].as_str().expect("command");
    assert!(
        command.ends_with("statusline --chain 'echo old'"),
        "{command}"
    );
    // Byte for byte the same file apart from the command's text.
    let quoted = serde_json::Value::String(command.to_owned()).to_string();
    assert_eq!(
        installed,
        CLAUDE_WRITTEN.replace("\"echo old\"", &quoted),
        "only the statusLine value changes"
    );
    // The installed command runs and keeps the old one's output.
    let out = Command::new("sh")
        .args(["-c", command])
        .env_clear()
        .envs(sandbox.env())
        .stdin(Stdio::null())
        .output()
        .expect("run installed command");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("old | $0.00 session"),
        "{out:?}"
    );
    run_launcher(&sandbox, &["setup", "--statusline", "--undo"]);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        CLAUDE_WRITTEN,
        "undo restores the file byte for byte"
    );
}

#[test]
fn setup_statusline_undo_after_other_changes_keeps_them_and_removes_an_added_status_line() {
    let api = FakeAnthropic::start();
    let original = CLAUDE_WRITTEN.replace(
        "  \"statusLine\": {\n    \"type\": \"command\",\n    \"command\": \"echo old\"\n  },\n",
        "",
    );
    let (sandbox, config) = settings_sandbox(&api, Some(&original));
    let file = config.join("settings.json");
    run_launcher(&sandbox, &["setup", "--statusline"]);
    let installed = std::fs::read_to_string(&file).expect("read");
    let command = serde_json::from_str::<serde_json::Value>(&installed).expect("json")
        ["statusLine"]["command"]
        .as_str()
        .expect("command")
        .to_owned();
    // Appended after the last member, in the file's own layout.
    let quoted = serde_json::Value::String(command).to_string();
    assert_eq!(
        installed,
        original.replace(
            "  }\n}\n",
            &format!(
                "  }},\n  \"statusLine\": {{\n    \"type\": \"command\",\n    \"command\": {quoted}\n  }}\n}}\n"
            )
        )
    );
    // Claude Code changes the model meanwhile; undo keeps that and drops only our member.
    std::fs::write(&file, installed.replace("\"opus\"", "\"sonnet\"")).expect("edit");
    run_launcher(&sandbox, &["setup", "--statusline", "--undo"]);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        original.replace("\"opus\"", "\"sonnet\"")
    );
    // No settings file before: undo leaves none.
    let (sandbox, config) = settings_sandbox(&api, None);
    run_launcher(&sandbox, &["setup", "--statusline"]);
    let file = config.join("settings.json");
    let text = std::fs::read_to_string(&file).expect("created");
    assert!(
        text.starts_with("{\n  \"statusLine\": {\n    \"type\": \"command\","),
        "{text}"
    );
    run_launcher(&sandbox, &["setup", "--statusline", "--undo"]);
    assert!(!file.exists(), "undo removes the file it created");
}

/// The real claude, interactive under tmux through the launcher, with the status line that
/// `setup --statusline` installed (chaining a logger that keeps what claude pipes to it): the
/// pane shows the session cost claude reported and today's spend; the launcher's relay address
/// reaches the status-line command; a sample sent there reaches the upstream with its `window`
/// label intact (the relay's fail-closed privacy keeps it).
fn real_claude_shows_the_status_line_and_its_gauges_cross_the_relay() {
    use support::anthropic::ANSWER_TEXT;
    let api = FakeAnthropic::start();
    let upstream = OtlpSink::start();
    let sandbox = Sandbox::for_launcher(&api, &upstream.grpc_endpoint());
    let scratch = sandbox.scratch();
    let log = scratch.join("statusline-input.jsonl");
    let seen_endpoint = scratch.join("statusline-endpoint");
    // The user's own status line before setup: logs its input and the relay address it got.
    let old = format!(
        "cat >> \"{}\"; echo >> \"{}\"; printf %s \"$CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT\" > \"{}\"; echo old-line",
        log.display(),
        log.display(),
        seen_endpoint.display()
    );
    sandbox.write_user_settings(
        &serde_json::json!({"statusLine": {"type": "command", "command": old}}),
    );
    let setup = sandbox
        .command(LAUNCHER)
        .args(["setup", "--statusline"])
        .output()
        .expect("setup");
    assert!(setup.status.success(), "{setup:?}");
    let term = sandbox.tmux(LAUNCHER, &["--model", support::checks::MODEL]);
    term.wait_for_text("old-line | $", std::time::Duration::from_secs(60));
    term.submit("please greet the harness");
    term.wait_for_text(ANSWER_TEXT, std::time::Duration::from_secs(60));
    // After the turn claude refreshes the line with the turn's cost; wait for a line whose
    // session cost is the one claude last piped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (line, input) = loop {
        let screen = term.screen();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let last: Option<serde_json::Value> = logged
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok());
        if let (Some(input), Some(line)) =
            (last, screen.lines().find(|l| l.contains("old-line | $")))
        {
            let cost = input["cost"]["total_cost_usd"].as_f64().unwrap_or(0.0);
            if cost > 0.0 && line.contains(&format!("old-line | ${cost:.2} session · $")) {
                break (line.trim().to_owned(), input);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status line with claude's cost; screen:\n{screen}\ninput:\n{logged}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(line.contains(" today"), "{line}");
    assert!(input["session_id"].is_string(), "{input}");
    // An API-key session: claude declares no plan windows.
    assert!(
        input
            .get("rate_limits")
            .is_none_or(serde_json::Value::is_null),
        "{input}"
    );
    let endpoint = std::fs::read_to_string(&seen_endpoint).expect("endpoint file");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint:?}");
    // A limit sample sent to the launcher's relay arrives at the upstream with its window.
    let session = input["session_id"].as_str().expect("session id").to_owned();
    let sample = format!(
        r#"{{"session_id":"{session}","rate_limits":{{"five_hour":{{"used_percentage":37,"resets_at":4102444800}}}}}}"#
    );
    let out = statusline(
        &sandbox,
        &[("CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT", endpoint.as_str())],
        &[],
        &sample,
    );
    assert!(out.contains("5h 37%"), "{out}");
    upstream.wait_for(
        std::time::Duration::from_secs(30),
        "the rate-limit gauge through the relay",
        |s| {
            s.points("claude_code.rate_limit.used_percent")
                .iter()
                .any(|p| p.value == 37.0)
        },
    );
    let windows: Vec<String> = upstream
        .points("claude_code.rate_limit.used_percent")
        .iter()
        .map(|p| p.attributes.get("window").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        windows,
        ["five_hour"],
        "window label after the relay's policy"
    );
    term.exit_claude();
    let exit = term.wait_exit(std::time::Duration::from_secs(30));
    assert_eq!(exit.code, Some(0), "screen:\n{}", term.screen());
}

/// The status line the pane shows: the line holding `needle`, waited for.
fn wait_for_line(term: &support::Tmux, needle: &str, what: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let screen = term.screen();
        if let Some(line) = screen.lines().find(|l| l.contains(needle)) {
            return line.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status line with {what} ({needle:?}); screen:\n{screen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The real claude as a subscription session (an OAuth token instead of an API key) against
/// the fake API, which answers with the plan usage-limit headers a subscription gets. Claude
/// turns them into the status line's `rate_limits` itself (no hand-made JSON): the pane shows
/// each window's percentage and, after a second turn half an hour later (samples aged in the
/// store) at a faster pace, the forecast; the samples land in `limit_samples` with claude's
/// session id and reset times, and the gauges reach the upstream through the launcher's relay
/// with `window="five_hour"` / `"seven_day"`.
fn real_claude_subscription_session_shows_its_limit_windows_and_they_reach_store_and_upstream() {
    use support::anthropic::{ANSWER_TEXT, unified_limit_headers};
    let api = FakeAnthropic::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let (reset_5h, reset_7d) = (now + 3 * 3600, now + 4 * 86400);
    api.set_answer_headers(&unified_limit_headers((0.423, reset_5h), (0.083, reset_7d)));
    let upstream = OtlpSink::start();
    let mut sandbox = Sandbox::for_launcher(&api, &upstream.grpc_endpoint());
    sandbox.use_subscription_token();
    let log = sandbox.scratch().join("statusline-input.jsonl");
    // The user's status line before setup logs what claude pipes (chained after setup).
    let old = format!(
        "cat >> \"{}\"; echo >> \"{}\"; echo sub-line",
        log.display(),
        log.display()
    );
    sandbox.write_user_settings(
        &serde_json::json!({"statusLine": {"type": "command", "command": old}}),
    );
    let setup = sandbox
        .command(LAUNCHER)
        .args(["setup", "--statusline"])
        .output()
        .expect("setup");
    assert!(setup.status.success(), "{setup:?}");
    let term = sandbox.tmux(LAUNCHER, &["--model", support::checks::MODEL]);
    term.wait_for_text("sub-line | $", std::time::Duration::from_secs(60));
    term.submit("please greet the harness");
    term.wait_for_text(ANSWER_TEXT, std::time::Duration::from_secs(60));
    let line = wait_for_line(&term, "5h 42%", "the five-hour window");
    assert!(line.contains("7d 8%"), "{line}");
    assert!(line.starts_with("sub-line | $"), "{line}");
    // What claude itself piped: the windows from the headers, as 0-100 and Unix seconds.
    let logged = std::fs::read_to_string(&log).expect("status-line input log");
    let input: serde_json::Value = logged
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["rate_limits"].is_object())
        })
        .unwrap_or_else(|| panic!("claude piped no rate_limits:\n{logged}"));
    let five = &input["rate_limits"]["five_hour"];
    assert!(
        (five["used_percentage"].as_f64().expect("used_percentage") - 42.3).abs() < 1e-6,
        "{input}"
    );
    assert_eq!(five["resets_at"].as_i64(), Some(reset_5h), "{input}");
    assert_eq!(
        input["rate_limits"]["seven_day"]["resets_at"].as_i64(),
        Some(reset_7d),
        "{input}"
    );
    let session = input["session_id"].as_str().expect("session id").to_owned();
    // The samples in the store, under claude's session and reset times.
    let conn = rusqlite::Connection::open(store_path(&sandbox)).expect("store");
    let stored = |window: &str, reset: i64| -> Vec<f64> {
        let mut stmt = conn
            .prepare(
                "SELECT used_pct FROM limit_samples
                 WHERE window = ?1 AND resets_at = ?2 AND session_id = ?3 ORDER BY time_ns",
            )
            .expect("query");
        stmt.query_map(rusqlite::params![window, reset, session], |r| r.get(0))
            .expect("query")
            .collect::<rusqlite::Result<Vec<f64>>>()
            .expect("rows")
    };
    let five_rows = stored("five_hour", reset_5h);
    assert!(
        !five_rows.is_empty() && five_rows.iter().all(|p| (p - 42.3).abs() < 1e-6),
        "{five_rows:?}"
    );
    let seven_rows = stored("seven_day", reset_7d);
    assert!(
        !seven_rows.is_empty() && seven_rows.iter().all(|p| (p - 8.3).abs() < 1e-6),
        "{seven_rows:?}"
    );
    // The gauges at the upstream, through the launcher's relay.
    let reached = |window: &'static str, pct: f64| {
        move |s: &OtlpSink| {
            s.points("claude_code.rate_limit.used_percent")
                .iter()
                .any(|p| {
                    p.attributes.get("window").map(String::as_str) == Some(window)
                        && (p.value - pct).abs() < 1e-6
                })
        }
    };
    upstream.wait_for(
        std::time::Duration::from_secs(30),
        "the five-hour gauge",
        reached("five_hour", 42.3),
    );
    upstream.wait_for(
        std::time::Duration::from_secs(30),
        "the seven-day gauge",
        reached("seven_day", 8.3),
    );
    // Half an hour later (the samples aged) the next turn reports 52.3 %: 10 points per
    // 30 min leaves 47.7 points for about 143 min, before the reset in 3 h: a forecast.
    conn.execute(
        "UPDATE limit_samples SET time_ns = time_ns - 1800000000000",
        [],
    )
    .expect("age the samples");
    api.set_answer_headers(&unified_limit_headers((0.523, reset_5h), (0.083, reset_7d)));
    term.submit("please greet the harness again");
    let line = wait_for_line(&term, "5h 52% full ~", "the five-hour forecast");
    assert!(
        line.contains("7d 8%") && !line.contains("7d 8% full"),
        "a flat window has no forecast: {line}"
    );
    upstream.wait_for(
        std::time::Duration::from_secs(30),
        "the five-hour gauge after the second turn",
        reached("five_hour", 52.3),
    );
    term.exit_claude();
    let exit = term.wait_exit(std::time::Duration::from_secs(30));
    assert_eq!(exit.code, Some(0), "screen:\n{}", term.screen());
}

crate::on_each_release!(
    real_claude_shows_the_status_line_and_its_gauges_cross_the_relay,
    real_claude_subscription_session_shows_its_limit_windows_and_they_reach_store_and_upstream,
);
