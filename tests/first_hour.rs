//! A new user's first hour: commands piped into `head`, a typo in a settings file, shell
//! completion, `version`. Through the real binary and, where claude runs, the real Claude Code.

mod common;
mod support;

use std::os::fd::FromRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use support::anthropic::ANSWER_TEXT;
use support::{FakeAnthropic, OtlpSink, Sandbox, claude_bin, wait_until};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The write end of a pipe whose reader is already gone: the first write fails (EPIPE), as
/// when `head -1` has read its line and exited.
fn closed_pipe() -> std::fs::File {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two-element array; close(2) on the read end we own.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
        libc::close(fds[0]);
        std::fs::File::from_raw_fd(fds[1])
    }
}

#[test]
fn every_command_ends_quietly_when_its_output_pipe_closes() {
    let api = FakeAnthropic::start();
    let sandbox = Sandbox::for_launcher(&api, "");
    for args in [
        &["doctor"][..],
        &["config"],
        &["config", "--explain"],
        &["report", "--by", "day"],
        &["status"],
        &["version"],
        &["--help"],
    ] {
        let mut child = sandbox
            .command(LAUNCHER)
            .args(args)
            .stdout(Stdio::from(closed_pipe()))
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read stderr");
        let status = child.wait().expect("wait");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe") && !err.contains("rror"),
            "{args:?} said: {err}"
        );
        // As `yes | head -1`: ended by SIGPIPE (the shell shows 141), or done before it wrote.
        assert!(
            status.signal() == Some(libc::SIGPIPE) || status.success(),
            "{args:?}: {status:?} {err}"
        );
    }
}

/// A typo in the project's `.claude-telemetry.toml`, and the same in an environment variable.
fn broken_project(sandbox: &Sandbox) {
    std::fs::write(
        sandbox.project().join(".claude-telemetry.toml"),
        "# team settings\n[upstream]\nendpont = \"http://127.0.0.1:1\"\n",
    )
    .expect("write .claude-telemetry.toml");
}

#[test]
fn a_broken_settings_file_passes_version_through_and_runs_sessions_with_telemetry_withheld() {
    let api = FakeAnthropic::start();
    let relay_upstream = OtlpSink::start();
    let direct = OtlpSink::start();
    let mut sandbox = Sandbox::for_launcher(&api, &relay_upstream.grpc_endpoint());
    // The user's shell also exports telemetry straight to a collector (as a pasted snippet
    // would): with the policy unreadable, not even that may leave the machine.
    sandbox.export_telemetry_to(&direct.grpc_endpoint(), "grpc");

    // Premise: plain claude with this environment does export (so silence below means
    // something).
    let plain = sandbox
        .command(claude_bin())
        .args(["-p", "hello"])
        .output()
        .expect("run claude");
    assert!(plain.status.success(), "{}", text(&plain));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || !direct
            .requests()
            .is_empty()),
        "plain claude exported nothing: the premise of this test does not hold"
    );
    direct.clear();

    broken_project(&sandbox);
    let claudes_version = sandbox
        .command(claude_bin())
        .arg("--version")
        .output()
        .expect("claude --version");
    for extra in [None, Some(("CLAUDE_TELEMETRY_UPSTREAM__ENDPONT", "x"))] {
        let mut command = sandbox.command(LAUNCHER);
        if let Some((k, v)) = extra {
            command.env(k, v);
        }
        let out = command.arg("--version").output().expect("--version");
        assert!(out.status.success(), "{extra:?}: {}", text(&out));
        assert_eq!(out.stdout, claudes_version.stdout, "{extra:?}");
        assert!(out.stderr.is_empty(), "{extra:?}: {}", text(&out));
    }

    // A session runs claude, says once and loudly why nothing is recorded, exports nothing.
    let out = sandbox
        .command(LAUNCHER)
        .args(["-p", "hello"])
        .output()
        .expect("session");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(ANSWER_TEXT),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    let file = sandbox.project().join(".claude-telemetry.toml");
    assert!(err.contains("TELEMETRY WITHHELD"), "{err}");
    assert!(
        err.contains(&format!("{}:3:1", file.display())),
        "no file:line:col in: {err}"
    );
    // claude flushes its exporters on exit: anything it sent has arrived by now.
    assert!(
        direct.requests().is_empty() && relay_upstream.requests().is_empty(),
        "telemetry left the machine: direct {} relay {}",
        direct.summary(),
        relay_upstream.summary()
    );
    assert!(api.calls().len() >= 2, "claude did not run its turn");

    // `config` and `doctor` still fail hard on the same file.
    let out = sandbox
        .command(LAUNCHER)
        .arg("config")
        .output()
        .expect("config");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:3:1", file.display())),
        "{}",
        text(&out)
    );
    let out = sandbox
        .command(LAUNCHER)
        .arg("doctor")
        .output()
        .expect("doctor");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[FAIL] settings"),
        "{}",
        text(&out)
    );
}

/// Runs the generated bash completion's function for the words typed so far (the last one
/// being completed) and returns what it offers.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         _claude__telemetry claude-telemetry \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words_q.join(" ")
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn completion(shell: &str) -> String {
    let out = Command::new(LAUNCHER)
        .args(["completions", shell])
        .output()
        .expect("completions");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8 script")
}

#[test]
fn bash_completion_offers_subcommands_flags_values_and_service_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("claude-telemetry.bash");
    let text = completion("bash");
    assert!(!text.contains("stack-check"), "a hidden command is listed");
    std::fs::write(&script, text).expect("write script");

    let top = bash_complete(&script, &["claude-telemetry", ""]);
    for word in ["report", "logs", "doctor", "version", "completions"] {
        assert!(top.iter().any(|w| w == word), "{word} missing: {top:?}");
    }
    let by = bash_complete(&script, &["claude-telemetry", "report", "--by", ""]);
    assert!(by.iter().any(|w| w == "day"), "{by:?}");
    let flags = bash_complete(&script, &["claude-telemetry", "report", "--"]);
    assert!(flags.iter().any(|w| w == "--json"), "{flags:?}");
    let services = bash_complete(&script, &["claude-telemetry", "logs", ""]);
    for service in ["otel-collector", "prometheus", "loki", "grafana"] {
        assert!(services.iter().any(|w| w == service), "{services:?}");
    }
    let doctor = bash_complete(&script, &["claude-telemetry", "doctor", "--"]);
    assert!(doctor.iter().any(|w| w == "--json"), "{doctor:?}");
}

#[test]
fn fish_completion_offers_values_and_service_names_and_zsh_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fish_script = dir.path().join("claude-telemetry.fish");
    let zsh_script = dir.path().join("_claude-telemetry");
    for (shell, path) in [("fish", &fish_script), ("zsh", &zsh_script)] {
        let script = completion(shell);
        assert!(!script.contains("stack-check"), "{shell}: a hidden command");
        std::fs::write(path, script).expect("write");
    }
    if let Some(fish) = common::require_tool("fish") {
        // fish's own completion engine, asked as the user's TAB would.
        let complete = |line: &str| -> Vec<String> {
            let out = Command::new(&fish)
                .arg("--no-config")
                .arg("-c")
                .arg(format!(
                    "source '{}'; complete -C '{line}'",
                    fish_script.display()
                ))
                .output()
                .expect("run fish");
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.split('\t').next().unwrap_or_default().to_string())
                .collect()
        };
        assert!(complete("claude-telemetry report --by ").contains(&"day".to_string()));
        assert!(complete("claude-telemetry report --j").contains(&"--json".to_string()));
        let services = complete("claude-telemetry logs ");
        for service in ["otel-collector", "prometheus", "loki", "grafana"] {
            assert!(services.iter().any(|w| w == service), "{services:?}");
        }
    }
    if let Some(zsh) = common::require_tool("zsh") {
        let out = Command::new(zsh)
            .arg("-n")
            .arg(&zsh_script)
            .output()
            .expect("run zsh");
        assert!(out.status.success(), "zsh -n: {}", text(&out));
    }
}

#[test]
fn version_prints_ours_and_double_dash_version_stays_claudes() {
    let out = Command::new(LAUNCHER)
        .arg("version")
        .output()
        .expect("version");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("claude-telemetry {}", env!("CARGO_PKG_VERSION"))
    );
    let api = FakeAnthropic::start();
    let sandbox = Sandbox::for_launcher(&api, "");
    let out = sandbox
        .command(LAUNCHER)
        .arg("--version")
        .output()
        .expect("--version");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(support::CLAUDE_VERSION),
        "{}",
        text(&out)
    );
}
