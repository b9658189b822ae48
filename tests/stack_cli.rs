//! The stack commands through the real binary, without a Docker engine: `validate`, `setup`,
//! `completions`, `clean` without confirmation, and every "Docker is not usable" path
//! (not installed, daemon down / dead socket, permission denied), each of which must end with
//! one clear message and a non-zero exit — and on the run path with a one-line local-only notice.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::repo_root;

const EXIT_NO_DOCKER: i32 = 69;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-telemetry"));
    cmd.stdin(Stdio::null())
        .current_dir(std::env::temp_dir())
        .env(
            "CLAUDE_TELEMETRY_DATA_DIR",
            std::env::temp_dir().join("claude-telemetry-stack-cli-test"),
        );
    cmd
}

/// Writes `config.toml` with `[stack]` pointing at `<dir>/data` and returns the config dir
/// (for `CLAUDE_TELEMETRY_CONFIG_DIR`).
fn settings_file(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[stack]\nproject_name = \"ctclitest\"\ndata_dir = \"{}\"\n{extra}",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write settings");
    dir.to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run claude-telemetry")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn validate_accepts_the_repository_and_the_embedded_files() {
    let out = run(bin().args(["validate", "--dir"]).arg(repo_root()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("ok: 12 files"), "{}", stdout(&out));
    let out = run(bin().args(["validate", "--embedded"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn validate_reports_a_dashboard_with_an_unknown_metric_and_a_missing_mount() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for sub in ["compose", "config"] {
        copy_dir(&repo_root().join(sub), &root.join(sub));
    }
    let dash = root.join("config/grafana/dashboards/claude-code-overview.json");
    let text = std::fs::read_to_string(&dash).expect("read");
    std::fs::write(
        &dash,
        text.replacen(
            "claude_code_cost_usage_USD{",
            "claude_code_cost_usd_total{",
            1,
        ),
    )
    .expect("write");
    std::fs::remove_file(root.join("config/prometheus.yml")).expect("remove");
    let out = run(bin().args(["validate", "--dir"]).arg(root));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("unknown metric `claude_code_cost_usd_total`"),
        "{text}"
    );
    assert!(
        text.contains("mounts `../config/prometheus.yml`, which does not exist"),
        "{text}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn setup_prints_the_alias_and_the_env_alternative_with_configured_ports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "[stack.ports]\notlp_grpc = 14317\n");
    let out = run(bin().arg("setup").env("CLAUDE_TELEMETRY_CONFIG_DIR", cfg));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("alias claude='claude-telemetry run --'"),
        "{text}"
    );
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_ENDPOINT=\"http://127.0.0.1:14317\""),
        "{text}"
    );
    assert!(text.contains("CLAUDE_CODE_ENABLE_TELEMETRY=1"), "{text}");
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef claude-telemetry"),
        ("fish", "complete -c claude-telemetry"),
    ] {
        let out = run(bin().args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.contains("status"),
            "{shell} completion lacks subcommands"
        );
    }
}

#[test]
fn clean_without_yes_and_without_a_terminal_refuses_and_touches_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "");
    // DOCKER_HOST at a dead socket: refusing must happen before Docker is even asked.
    let out = run(bin()
        .arg("clean")
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", cfg)
        .env(
            "DOCKER_HOST",
            format!("unix://{}/dead.sock", tmp.path().display()),
        ));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("clean --yes"), "{}", stderr(&out));
    assert!(
        !tmp.path().join("data").exists(),
        "clean wrote files before confirmation"
    );
}

/// Asserts one message line on stderr that contains every needle.
fn assert_one_message(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one message, got:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn daemon_down_gives_one_message_and_exit_69_for_every_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "");
    let dead = format!("unix://{}/dead.sock", tmp.path().display());
    if common::require_tool("docker").is_none() {
        return;
    }
    for args in [
        vec!["status"],
        vec!["up"],
        vec!["down"],
        vec!["logs"],
        vec!["clean", "--yes"],
    ] {
        let out = run(bin()
            .args(&args)
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
            .env("DOCKER_HOST", &dead));
        assert_eq!(
            out.status.code(),
            Some(EXIT_NO_DOCKER),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_one_message(&out, &["not running", "dead.sock", "Start it"]);
    }
    // A TCP DOCKER_HOST nobody listens on is honoured (not silently replaced by the local socket).
    let tcp = format!("tcp://127.0.0.1:{}", common::free_port());
    let out = run(bin()
        .arg("status")
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("DOCKER_HOST", &tcp));
    assert_eq!(out.status.code(), Some(EXIT_NO_DOCKER), "{}", stderr(&out));
    assert_one_message(&out, &["not running", &tcp]);
    let out = run(bin()
        .args(["status", "--json"])
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("DOCKER_HOST", &dead));
    assert_eq!(out.status.code(), Some(EXIT_NO_DOCKER));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&out)).expect("status --json prints JSON on failure too");
    assert_eq!(v["healthy"], false);
}

#[test]
fn stale_socket_file_without_a_daemon_is_daemon_down() {
    if common::require_tool("docker").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "");
    let sock = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    assert!(sock.exists());
    let out = run(bin()
        .arg("status")
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("DOCKER_HOST", format!("unix://{}", sock.display())));
    assert_eq!(out.status.code(), Some(EXIT_NO_DOCKER));
    assert_one_message(&out, &["not running", "stale.sock"]);
}

#[test]
fn no_docker_installed_gives_install_advice_and_local_only_on_the_run_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "");
    let empty_path = tmp.path().join("bin");
    std::fs::create_dir_all(&empty_path).expect("mkdir");
    let dead = format!("unix://{}/none.sock", tmp.path().display());
    for args in [vec!["status"], vec!["up"]] {
        let out = run(bin()
            .args(&args)
            .env("PATH", &empty_path)
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
            .env("DOCKER_HOST", &dead));
        assert_eq!(
            out.status.code(),
            Some(EXIT_NO_DOCKER),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_one_message(&out, &["Docker is not installed", "Install Docker"]);
    }
    let out = run(bin()
        .arg("stack-check")
        .env("PATH", &empty_path)
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("DOCKER_HOST", &dead));
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("LocalOnly"), "{}", stdout(&out));
    assert_one_message(&out, &["local-only mode", "Docker is not installed"]);
}

#[test]
fn run_path_with_daemon_down_is_local_only_and_fast() {
    if common::require_tool("docker").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    // A collector health port nobody listens on.
    let port = common::free_port();
    let cfg = settings_file(
        tmp.path(),
        &format!("[stack.ports]\ncollector_health = {port}\n"),
    );
    let dead = format!("unix://{}/dead.sock", tmp.path().display());
    let out = run(bin()
        .arg("stack-check")
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("DOCKER_HOST", &dead));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("LocalOnly"), "{text}");
    assert_one_message(&out, &["local-only mode", "not running"]);
    let micros: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_us="))
        .and_then(|v| v.parse().ok())
        .expect("elapsed_us line");
    // Not a benchmark: a bound that only a blocking wait (connect timeout, compose run) breaks.
    assert!(micros < 250_000, "the run path took {micros} µs");
}

#[test]
fn permission_denied_on_the_socket_says_how_to_get_access() {
    if common::require_tool("docker").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = settings_file(tmp.path(), "");
    std::fs::set_permissions(
        cfg.join("config.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let is_root = unsafe_free_euid_is_root();
    let mut cmd = if is_root {
        // Root ignores file modes: run the binary as `nobody` so the socket's 0600 applies.
        let Some(setpriv) = common::require_tool("setpriv") else {
            return;
        };
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_claude-telemetry"));
        c.stdin(Stdio::null());
        c
    } else {
        bin()
    };
    let out = run(cmd
        .arg("status")
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env("HOME", tmp.path())
        .env("DOCKER_HOST", format!("unix://{}", sock.display())));
    assert_eq!(out.status.code(), Some(EXIT_NO_DOCKER), "{}", stderr(&out));
    assert_one_message(&out, &["Permission denied", "docker.sock", "docker` group"]);
}

/// Whether this process runs as root, read from /proc (no libc call needed).
fn unsafe_free_euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// On a terminal, `clean` asks first; anything but yes deletes nothing (and asks before Docker is
/// even contacted, so this needs no engine).
#[test]
fn clean_on_a_terminal_asks_and_no_deletes_nothing() {
    use expectrl::process::unix::WaitStatus;
    use expectrl::{Expect, Session};
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = settings_file(tmp.path(), "");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-telemetry"));
    cmd.arg("clean")
        .current_dir(tmp.path())
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env(
            "CLAUDE_TELEMETRY_DATA_DIR",
            tmp.path().join("launcher-data"),
        )
        .env(
            "DOCKER_HOST",
            format!("unix://{}/dead.sock", tmp.path().display()),
        );
    let mut session = Session::spawn(cmd).expect("spawn under a PTY");
    session.set_expect_timeout(Some(std::time::Duration::from_secs(10)));
    session
        .expect("ctclitest_prometheus-data")
        .expect("the prompt names the volumes");
    session.expect("[y/N]").expect("the prompt asks");
    session.send_line("n").expect("answer");
    session
        .expect("Nothing deleted.")
        .expect("refusal acknowledged");
    let status = session.get_process().wait().expect("wait");
    assert_eq!(status, WaitStatus::Exited(session.get_process().pid(), 2));
    assert!(
        !tmp.path().join("data").exists(),
        "clean wrote files after a no"
    );
}
