//! The launcher as a user meets it: `claude-telemetry` in place of `claude`, driving the real
//! Claude Code against the fake Anthropic API, with a real OTLP receiver as the upstream.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::anthropic::{AFTER_TOOL_TEXT, ANSWER_TEXT};
use support::checks::{MODEL, assert_telemetry_matches_api};
use support::{FakeAnthropic, OtlpSink, Sandbox, claude_bin};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn launcher_sandbox(api: &FakeAnthropic, upstream: &str) -> Sandbox {
    Sandbox::for_launcher(api, upstream)
}

/// A local-only sandbox whose `claude` is a stand-in shell script with `body`.
fn sandbox_with_fake_claude(api: &FakeAnthropic, body: &str) -> Sandbox {
    let mut sandbox = launcher_sandbox(api, "");
    let fake = fake_claude(&sandbox.scratch(), body);
    sandbox.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    sandbox
}

/// A stand-in claude (a shell script) for the terminal-plumbing tests. It answers `--help` (the
/// launcher's grammar learner asks it once) with nothing, as a program that is not claude would,
/// so the learner gives up at once instead of waiting on a stand-in that never exits.
fn fake_claude(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-claude");
    std::fs::write(
        &path,
        format!("#!/bin/bash\n[ \"$1\" = --help ] && exit 0\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn print_mode_telemetry_reaches_the_upstream_through_the_relay() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
    let output = sandbox
        .command(LAUNCHER)
        .args(["-p", "RUN_BASH: echo launcher-marker-$((6*7))"])
        .args(["--allowedTools", "Bash", "--model", MODEL])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(AFTER_TOOL_TEXT), "stdout: {stdout}");
    assert!(stderr.is_empty(), "the launcher said something: {stderr}");
    assert_telemetry_matches_api(&api, &sink, 1);
    // Everything the upstream got passed through the relay: it stamps each resource with this
    // launch's service.instance.id (claude sends none) and the project name.
    let points = sink.points("claude_code.token.usage");
    let events = sink.all_events();
    assert!(!points.is_empty() && !events.is_empty());
    let instances: std::collections::BTreeSet<_> = points
        .iter()
        .map(|p| p.resource.get("service.instance.id").cloned())
        .chain(
            events
                .iter()
                .map(|e| e.resource.get("service.instance.id").cloned()),
        )
        .collect();
    assert_eq!(
        instances.len(),
        1,
        "one launch, one writer id: {instances:?}"
    );
    assert!(instances.iter().all(Option::is_some), "{instances:?}");
    assert!(
        events
            .iter()
            .all(|e| e.resource.get("project.name").map(String::as_str) == Some("project"))
    );
}

fn interactive_session_under_a_pty_reaches_the_upstream() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
    let term = sandbox.tmux(LAUNCHER, &["--model", MODEL]);
    term.wait_for_prompt(Duration::from_secs(30));
    term.submit("please greet the harness");
    term.wait_for_text(ANSWER_TEXT, Duration::from_secs(30));
    term.exit_claude();
    let exit = term.wait_exit(Duration::from_secs(30));
    assert_eq!(exit.code, Some(0), "screen:\n{}", term.screen());
    assert_telemetry_matches_api(&api, &sink, 1);
}

fn settings_json_env_pointing_elsewhere_does_not_divert_telemetry() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let decoy = OtlpSink::start();
    let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
    sandbox.write_user_settings(&serde_json::json!({"env": {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": decoy.grpc_endpoint(),
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": decoy.grpc_endpoint(),
    }}));
    let output = sandbox
        .command(LAUNCHER)
        .args(["-p", "hello", "--model", MODEL])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_telemetry_matches_api(&api, &sink, 1);
    assert!(
        decoy.requests().is_empty(),
        "telemetry was diverted: {}",
        decoy.summary()
    );
}

fn claudes_non_zero_exit_code_comes_back() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
    let direct = sandbox
        .command(claude_bin())
        .args(["-p", "x", "--no-such-option"])
        .output()
        .unwrap();
    let through = sandbox
        .command(LAUNCHER)
        .args(["-p", "x", "--no-such-option"])
        .output()
        .unwrap();
    assert_ne!(direct.status.code(), Some(0));
    assert_eq!(through.status.code(), direct.status.code());
    assert_eq!(through.stdout, direct.stdout);
}

fn piped_json_output_is_claudes_own() {
    let sink = OtlpSink::start();
    let run = |program: &Path| {
        // A fresh fake API per run, so both runs see the same answers and usage.
        let api = FakeAnthropic::start();
        let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
        let out = sandbox
            .command(program)
            .args([
                "-p",
                "hello json",
                "--output-format",
                "json",
                "--model",
                MODEL,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Per-run identifiers and timings; every other field must be the same.
        for volatile in [
            "session_id",
            "uuid",
            "duration_ms",
            "duration_api_ms",
            "ttft_ms",
            "ttft_stream_ms",
            "time_to_request_ms",
            "first_content_frame_ms", // 2.1.332
        ] {
            json[volatile] = serde_json::Value::Null;
        }
        (json, out.stdout.ends_with(b"\n"))
    };
    assert_eq!(run(&claude_bin()), run(Path::new(LAUNCHER)));
}

#[test]
fn piped_output_passes_every_byte_unchanged() {
    let api = FakeAnthropic::start();
    let mut sandbox = launcher_sandbox(&api, "");
    let scratch = sandbox.scratch();
    let blob = scratch.join("blob");
    let bytes: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, &bytes).unwrap();
    let fake = fake_claude(&scratch, &format!("cat {}", blob.display()));
    sandbox.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == bytes, "stdout differs from the child's bytes");
}

fn upstream_down_claude_runs_normally_and_the_loss_is_reported_once() {
    let api = FakeAnthropic::start();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut sandbox = launcher_sandbox(&api, &dead_endpoint);
    sandbox.set_env("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "1500");
    let direct_started = Instant::now();
    let direct = sandbox
        .command(claude_bin())
        .args(["-p", "hello", "--model", MODEL])
        .output()
        .unwrap();
    let direct_time = direct_started.elapsed();
    let started = Instant::now();
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "hello", "--model", MODEL])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, direct.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    assert!(
        lines[0].contains("wait in the local store") && lines[0].contains(&dead_endpoint),
        "{stderr}"
    );
    assert!(
        elapsed < direct_time + Duration::from_millis(1500 + 2000),
        "launcher took {elapsed:?}, claude alone {direct_time:?}, drain bound 1.5 s"
    );
}

#[test]
fn claude_not_found_exits_127_and_says_where_it_looked() {
    let api = FakeAnthropic::start();
    let mut sandbox = launcher_sandbox(&api, "");
    sandbox.remove_env("CLAUDE_TELEMETRY_CLAUDE__PATH");
    let empty = sandbox.scratch().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    // A `claude` on PATH that is really us must be skipped, not started.
    std::os::unix::fs::symlink(LAUNCHER, empty.join("claude")).unwrap();
    sandbox.set_env("PATH", empty.display().to_string());
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot find the real `claude`"), "{stderr}");
    assert!(
        stderr.contains("claude-telemetry itself, skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("CLAUDE_TELEMETRY_CLAUDE__PATH"), "{stderr}");
}

#[test]
fn a_wrapper_that_loops_back_to_us_is_stopped() {
    let api = FakeAnthropic::start();
    let mut sandbox = launcher_sandbox(&api, "");
    let scratch = sandbox.scratch();
    // Configured explicitly, so discovery cannot skip it: the loop must be caught at run time.
    let alias = scratch.join("ct");
    std::os::unix::fs::symlink(LAUNCHER, &alias).unwrap();
    let wrapper = fake_claude(&scratch, &format!("exec {} \"$@\"", alias.display()));
    sandbox.set_env(
        "CLAUDE_TELEMETRY_CLAUDE__PATH",
        wrapper.display().to_string(),
    );
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("loops back"));
}

fn version_and_claudes_subcommands_pass_through_untouched() {
    let api = FakeAnthropic::start();
    let sandbox = launcher_sandbox(&api, "");
    let direct = sandbox
        .command(claude_bin())
        .arg("--version")
        .output()
        .unwrap();
    let through = sandbox.command(LAUNCHER).arg("--version").output().unwrap();
    assert_eq!(through.stdout, direct.stdout);
    assert!(String::from_utf8_lossy(&through.stdout).contains(support::current_release().version));
}

#[test]
fn our_commands_win_only_as_the_first_word_and_double_dash_gives_claude_everything() {
    let api = FakeAnthropic::start();
    let sandbox = sandbox_with_fake_claude(&api, "printf '%s|' \"$@\"");
    let args_seen = |args: &[&str]| {
        let out = sandbox.command(LAUNCHER).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Passed through unchanged (pass-through invocations get no injected --settings).
    assert_eq!(args_seen(&["--", "doctor", "--x"]), "doctor|--x|");
    assert_eq!(args_seen(&["mcp", "list"]), "mcp|list|");
    assert_eq!(
        args_seen(&["run", "--", "config", "--json"]),
        "config|--json|"
    );
    // Session runs get our --settings first, then every word of the user's.
    let session = args_seen(&["-p", "run doctor", "--model", "m"]);
    assert!(session.starts_with("--settings|{"), "{session}");
    assert!(session.ends_with("|-p|run doctor|--model|m|"), "{session}");
    // Ours: `config` prints our settings, not claude's.
    let ours = args_seen(&["config"]);
    assert!(ours.contains("upstream.endpoint"), "{ours}");
}

#[test]
fn signals_and_window_size_reach_the_child_and_its_exit_status_comes_back() {
    let api = FakeAnthropic::start();
    let sandbox = sandbox_with_fake_claude(
        &api,
        "trap 'echo \"size $(stty size)\"' WINCH\n\
         trap 'echo got-HUP' HUP\n\
         trap 'echo got-TERM; exit 143' TERM\n\
         echo \"size $(stty size) tty=$([ -t 0 ] && echo yes)\"\n\
         while true; do sleep 0.05; done",
    );
    let term = sandbox.tmux(LAUNCHER, &[]);
    let first = term.wait_for_text("tty=yes", Duration::from_secs(10));
    assert!(first.contains("size "), "{first}");
    term.resize(100, 30);
    term.wait_for_text("size 30 100", Duration::from_secs(10));
    let launcher_pid = term.pid().expect("pane pid");
    let kill = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &launcher_pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    kill("-HUP");
    term.wait_for_text("got-HUP", Duration::from_secs(10));
    kill("-TERM");
    term.wait_for_text("got-TERM", Duration::from_secs(10));
    let exit = term.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code, Some(143), "screen:\n{}", term.screen());
}

#[test]
fn child_killed_by_a_signal_exits_128_plus_signal() {
    let api = FakeAnthropic::start();
    let sandbox = sandbox_with_fake_claude(&api, "kill -KILL $$");
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
    let term = sandbox.tmux(LAUNCHER, &[]);
    let exit = term.wait_exit(Duration::from_secs(10));
    assert_eq!(exit.code, Some(128 + 9));
}

#[test]
fn a_session_that_sends_nothing_is_reported_at_exit_and_in_doctor() {
    let api = FakeAnthropic::start();
    let sandbox = sandbox_with_fake_claude(
        &api,
        "[ \"$1\" = --version ] && echo '9.9.9 (Fake Code)'; exit 0",
    );
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("9.9.9 (Fake Code) sent no telemetry"),
        "{stderr}"
    );
    let doctor = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("sent no telemetry at all"), "{report}");
    assert!(report.contains("claude-telemetry -- doctor"), "{report}");
}

#[test]
fn a_version_probe_answered_with_more_than_a_pipe_buffer_is_read_not_blocked_on() {
    let api = FakeAnthropic::start();
    // 1 MiB after the version line: far more than a pipe buffer (64 KiB). A probe that did
    // not read it would block the stand-in until killed at its 5 s bound, and say nothing of
    // the version.
    let sandbox = sandbox_with_fake_claude(
        &api,
        "if [ \"$1\" = --version ]; then echo '9.9.9 (Chatty Code)'; \
         head -c 1048576 /dev/zero | tr '\\0' x; echo; fi; exit 0",
    );
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("claude 9.9.9 (Chatty Code) sent no telemetry"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(
        stderr.len() < 4096,
        "the probe's output is discarded, not shown"
    );
}

#[test]
fn the_outer_terminal_is_restored_after_claude_exits_or_is_killed() {
    let api = FakeAnthropic::start();
    for (body, code) in [("exit 3", 3), ("kill -TERM $$", 128 + 15)] {
        let sandbox = sandbox_with_fake_claude(&api, body);
        // A shell runs the launcher in a real terminal, then reports the terminal's mode.
        let script = format!(
            "{LAUNCHER}; echo \"launcher-exit=$?\"; stty -a | tr ' ' '\\n' | grep -xE -- '-?(icanon|echo|isig)' | tr '\\n' ' '; echo; sleep 30"
        );
        let term = sandbox.tmux("bash", &["-c", &script]);
        let screen = term.wait_for_text("launcher-exit=", Duration::from_secs(10));
        assert!(
            screen.contains(&format!("launcher-exit={code}")),
            "{screen}"
        );
        let screen = term.wait_for_text("isig", Duration::from_secs(5));
        let line = screen
            .lines()
            .find(|l| l.contains("isig"))
            .unwrap_or_default();
        let mut modes: Vec<&str> = line.split_whitespace().collect();
        modes.sort_unstable();
        assert_eq!(
            modes,
            ["echo", "icanon", "isig"],
            "raw mode left behind: {screen}"
        );
    }
}

#[test]
fn config_json_tells_each_value_and_the_layer_that_set_it() {
    let api = FakeAnthropic::start();
    let mut sandbox = launcher_sandbox(&api, "");
    sandbox.remove_env("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT");
    std::fs::write(
        sandbox.project().join(".claude-telemetry.toml"),
        "[upstream]\nendpoint = \"http://127.0.0.1:4999\"\ntimeout_ms = 1234\n[upstream.headers]\nauthorization = \"Bearer secret-token\"\n",
    )
    .unwrap();
    sandbox.set_env("CLAUDE_TELEMETRY_UPSTREAM__TIMEOUT_MS", "2345");
    let out = sandbox
        .command(LAUNCHER)
        .args(["config", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["settings"]["upstream.endpoint"],
        "http://127.0.0.1:4999"
    );
    assert!(
        json["sources"]["upstream.endpoint"]
            .as_str()
            .unwrap()
            .starts_with("project file ")
    );
    assert_eq!(json["settings"]["upstream.timeout_ms"], 2345);
    assert_eq!(
        json["sources"]["upstream.timeout_ms"],
        "env CLAUDE_TELEMETRY_UPSTREAM__TIMEOUT_MS"
    );
    assert_eq!(json["sources"]["relay.grpc_listen"], "default");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("secret-token"),
        "header values are never printed"
    );
}

fn doctor_fails_when_claude_cannot_be_found_and_says_how_to_run_claudes_own() {
    let api = FakeAnthropic::start();
    let mut sandbox = launcher_sandbox(&api, "");
    sandbox.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", "/nonexistent/claude");
    let out = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("[FAIL] claude"), "{report}");
    assert!(report.contains("claude-telemetry -- doctor"), "{report}");
    // With claude found, nothing blocks telemetry: exit 0.
    sandbox.set_env(
        "CLAUDE_TELEMETRY_CLAUDE__PATH",
        claude_bin().display().to_string(),
    );
    let out = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains(support::current_release().version),
        "{report}"
    );
}

fn batches_the_upstream_refuses_for_good_are_reported_not_dropped_silently() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    sink.set_behaviour(support::Behaviour::Fail {
        grpc: tonic::Code::InvalidArgument,
        http: 400,
    });
    let sandbox = launcher_sandbox(&api, &sink.grpc_endpoint());
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "hello", "--model", MODEL])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("were refused by") && stderr.contains("InvalidArgument"),
        "{stderr}"
    );
    assert!(!sink.requests().is_empty(), "the upstream was asked");
    let doctor = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("refused by the upstream"), "{report}");
}

crate::on_each_release!(
    print_mode_telemetry_reaches_the_upstream_through_the_relay,
    interactive_session_under_a_pty_reaches_the_upstream,
    settings_json_env_pointing_elsewhere_does_not_divert_telemetry,
    claudes_non_zero_exit_code_comes_back,
    piped_json_output_is_claudes_own,
    upstream_down_claude_runs_normally_and_the_loss_is_reported_once,
    version_and_claudes_subcommands_pass_through_untouched,
    doctor_fails_when_claude_cannot_be_found_and_says_how_to_run_claudes_own,
    batches_the_upstream_refuses_for_good_are_reported_not_dropped_silently,
);
