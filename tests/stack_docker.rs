//! `up` / `status` / `logs` / `down` / `clean` and the run path's background start against the
//! real Docker engine, with the stand-in image of `tests/stack-images/` (built locally: nothing
//! can be pulled) selected for every service through the `[stack.images]` override.
//!
//! Needs a running engine and `docker compose` v2; under CI=true their absence fails the test.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, in_ci, repo_root, require_tool};
use serde_json::Value;

const IMAGE: &str = "claude-telemetry-standin:test";

/// Whether the engine and compose v2 are usable; under CI anything missing panics.
fn docker_usable() -> bool {
    if require_tool("docker").is_none() {
        return false;
    }
    let ok = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&["compose", "version"]) {
        assert!(
            !in_ci(),
            "`docker compose` v2 is required (CI=true: failing, not skipping)"
        );
        eprintln!("SKIPPED: docker compose v2 missing");
        return false;
    }
    if !ok(&["info", "--format", "{{.ServerVersion}}"]) {
        assert!(
            !in_ci(),
            "the Docker daemon is not running (CI=true: failing, not skipping)"
        );
        eprintln!("SKIPPED: the Docker daemon is not running");
        return false;
    }
    true
}

fn build_standin() {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *built {
        return;
    }
    let out = Command::new("sh")
        .arg(repo_root().join("tests/stack-images/build.sh"))
        .arg(IMAGE)
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "building the stand-in image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

struct Stack {
    dir: tempfile::TempDir,
    /// The config dir holding `config.toml` (for `CLAUDE_TELEMETRY_CONFIG_DIR`).
    cfg: PathBuf,
    project: String,
    grafana_port: u16,
}

impl Stack {
    /// A stack with its own project name (`tag` keeps parallel tests apart) and free ports.
    fn new(tag: &str) -> Self {
        Self::with_loki_image(tag, IMAGE)
    }

    /// Like [`Stack::new`], with another image for the `loki` service.
    fn with_loki_image(tag: &str, loki_image: &str) -> Self {
        Self::with_images(tag, IMAGE, loki_image)
    }

    /// Like [`Stack::new`], with `image` for every service but `loki`, which gets `loki_image`.
    fn with_images(tag: &str, image: &str, loki_image: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = format!("cttest{}{tag}", std::process::id());
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
        let cfg = dir.path().join("config.toml");
        let text = format!(
            "[stack]\nproject_name = \"{project}\"\ndata_dir = \"{}\"\nready_timeout_secs = 90\n\
             [stack.ports]\notlp_grpc = {}\notlp_http = {}\ncollector_health = {}\nprometheus = {}\nloki = {}\ngrafana = {}\n\
             [stack.images]\ncollector = \"{image}\"\nprometheus = \"{image}\"\nloki = \"{loki_image}\"\ngrafana = \"{image}\"\n",
            dir.path().join("data").display(),
            ports[0],
            ports[1],
            ports[2],
            ports[3],
            ports[4],
            ports[5]
        );
        std::fs::write(&cfg, text).expect("write settings");
        Self {
            cfg: dir.path().to_path_buf(),
            dir,
            project,
            grafana_port: ports[5],
        }
    }

    /// The OTLP/gRPC port of this stack's collector, from the written settings.
    fn otlp_grpc_port(&self) -> u16 {
        let text = std::fs::read_to_string(self.cfg.join("config.toml")).expect("read settings");
        text.lines()
            .find_map(|l| l.strip_prefix("otlp_grpc = "))
            .and_then(|v| v.trim().parse().ok())
            .expect("otlp_grpc in settings")
    }

    /// Adds TOML tables to the settings file.
    fn append_config(&self, toml: &str) {
        let path = self.cfg.join("config.toml");
        let mut text = std::fs::read_to_string(&path).expect("read settings");
        text.push_str(toml);
        std::fs::write(&path, text).expect("write settings");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_claude-telemetry"))
            .args(args)
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", &self.cfg)
            .env(
                "CLAUDE_TELEMETRY_DATA_DIR",
                self.dir.path().join("launcher-data"),
            )
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run claude-telemetry")
    }

    fn status_json(&self) -> (Option<i32>, Value) {
        let out = self.run(&["status", "--json"]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    }

    fn volumes(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["volume", "ls", "--quiet", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.project))
            .output()
            .expect("docker volume ls");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stack {
    /// Removes whatever a failed test left behind (containers, volumes, network).
    fn drop(&mut self) {
        let compose = self.data().join("compose/docker-compose.yml");
        if compose.exists() {
            let _ = Command::new("docker")
                .args(["compose", "--file"])
                .arg(&compose)
                .args([
                    "--project-name",
                    &self.project,
                    "down",
                    "--volumes",
                    "--timeout",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn wait_healthy(stack: &Stack, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, v) = stack.status_json();
        if code == Some(0) && v["healthy"] == true {
            return v;
        }
        assert!(Instant::now() < deadline, "stack not healthy in time: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn assert_loopback_ports(v: &Value) {
    for s in v["services"].as_array().expect("services") {
        let ports = s["ports"].as_array().expect("ports");
        assert!(!ports.is_empty(), "{} publishes nothing", s["service"]);
        for p in ports {
            assert!(
                p.as_str().is_some_and(|p| p.starts_with("127.0.0.1:")),
                "{} publishes {p}",
                s["service"]
            );
        }
    }
}

#[test]
fn up_status_logs_down_clean_and_background_start_on_a_real_engine() {
    if !docker_usable() {
        return;
    }
    build_standin();
    let stack = Stack::new("full");

    // Not started yet: status is unhealthy (every service missing), exit non-zero.
    let (code, v) = stack.status_json();
    assert_eq!(code, Some(1), "{v}");
    assert!(
        v["services"]
            .as_array()
            .is_some_and(|s| s.len() == 4 && s.iter().all(|x| x["state"] == "missing")),
        "{v}"
    );

    // up: writes the files, starts the containers, waits for readiness, prints the URLs.
    let out = stack.run(&["up", "--timeout", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "http://127.0.0.1:{}/d/claude-code-overview",
            stack.grafana_port
        )),
        "{}",
        text(&out)
    );
    for svc in ["otel-collector", "prometheus", "loki", "grafana"] {
        assert!(
            text(&out).contains(&format!("ready: {svc}")),
            "no progress line for {svc}: {}",
            text(&out)
        );
    }
    assert!(
        stack
            .data()
            .join("config/grafana/dashboards/claude-code-overview.json")
            .exists()
    );

    // up again is idempotent.
    let out = stack.run(&["up", "--timeout", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // status: all running and ready, ports on loopback only; the table names every service.
    let (code, v) = stack.status_json();
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["healthy"], true);
    assert!(
        v["services"].as_array().is_some_and(|s| s
            .iter()
            .all(|x| x["state"] == "running" && x["healthy"] == true)),
        "{v}"
    );
    assert_loopback_ports(&v);
    let out = stack.run(&["status"]);
    assert_eq!(out.status.code(), Some(0));
    for svc in ["otel-collector", "prometheus", "loki", "grafana"] {
        assert!(text(&out).contains(svc), "{}", text(&out));
    }

    // logs: one service, prefixed, showing the arguments compose passed (the compose file's command).
    let out = stack.run(&["logs", "prometheus", "--tail", "all"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let logs = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        logs.lines().all(|l| l.starts_with("prometheus |")),
        "{logs}"
    );
    assert!(
        logs.contains("--web.enable-remote-write-receiver"),
        "{logs}"
    );
    let out = stack.run(&["logs"]);
    assert_eq!(out.status.code(), Some(0));
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    for svc in ["otel-collector", "prometheus", "loki", "grafana"] {
        assert!(
            all.lines().any(|l| l.starts_with(svc)),
            "no {svc} lines in {all}"
        );
    }
    let out = stack.run(&["logs", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));

    // Run path with the stack up: one probe, Ready, no message.
    let out = stack.run(&["stack-check"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Ready"),
        "{}",
        text(&out)
    );
    assert!(out.stderr.is_empty(), "{}", text(&out));

    // A user edit survives `up` and is reported.
    let prom = stack.data().join("config/prometheus.yml");
    let edited = format!(
        "{}\n# my edit\n",
        std::fs::read_to_string(&prom).expect("read")
    );
    std::fs::write(&prom, &edited).expect("edit");
    let out = stack.run(&["up", "--timeout", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("kept your edited"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&prom).expect("read"), edited);
    assert!(stack.data().join("config/prometheus.yml.new").exists());

    // logs -f follows new output (here: each stand-in's shutdown line) until the containers stop.
    // `--tail 1` makes each stream print its last line at once: once all four have, the
    // follower is attached (a condition, not a guess at how long attaching takes).
    let mut follower = Command::new(env!("CARGO_BIN_EXE_claude-telemetry"))
        .args(["logs", "--follow", "--tail", "1"])
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &stack.cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logs -f");
    let followed_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = followed_lines.clone();
        let stdout = follower.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("lines").push(line);
            }
        })
    };
    let services = ["otel-collector", "prometheus", "loki", "grafana"];
    let attached = Instant::now();
    while !services.iter().all(|svc| {
        followed_lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.starts_with(svc))
    }) {
        assert!(
            attached.elapsed() < Duration::from_secs(30),
            "logs -f did not attach to every service: {:?}",
            followed_lines.lock().expect("lines")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // down: containers gone, volumes kept; status exits non-zero.
    let out = stack.run(&["down"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let followed = follower
        .wait_with_output()
        .expect("logs -f ends when the containers stop");
    reader.join().expect("reader");
    assert_eq!(followed.status.code(), Some(0), "{}", text(&followed));
    let followed = followed_lines.lock().expect("lines").clone();
    for svc in services {
        assert!(
            followed
                .iter()
                .any(|l| l.starts_with(svc) && l.ends_with("stand-in stopping")),
            "logs -f missed {svc} stopping: {followed:?}"
        );
    }
    let (code, v) = stack.status_json();
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(stack.volumes().len(), 3, "down must keep the volumes");

    // Run path with the stack down: returns at once, the stack comes up in the background.
    let out = stack.run(&["stack-check"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.starts_with("Starting"), "{}", text(&out));
    let micros: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_us="))
        .and_then(|v| v.parse().ok())
        .expect("elapsed_us");
    assert!(micros < 500_000, "the run path waited {micros} µs");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out)
    );
    let v = wait_healthy(&stack, Duration::from_secs(90));
    assert_loopback_ports(&v);

    // clean without --yes and without a terminal refuses; with --yes removes the volumes.
    let out = stack.run(&["clean"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(stack.volumes().len(), 3);
    let out = stack.run(&["clean", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stack.volumes().is_empty(),
        "volumes left: {:?}",
        stack.volumes()
    );
    let (code, _) = stack.status_json();
    assert_eq!(code, Some(1));
}

#[test]
fn restart_brings_the_stack_back_healthy() {
    if !docker_usable() {
        return;
    }
    build_standin();
    let stack = Stack::new("restart");
    let out = stack.run(&["restart", "--timeout", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, v) = stack.status_json();
    assert_eq!(code, Some(0), "{v}");
    let out = stack.run(&["clean", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_crashing_service_fails_up_fast_with_its_last_log_lines() {
    if !docker_usable() {
        return;
    }
    build_standin();
    let stack = Stack::with_loki_image("crash", &format!("{IMAGE}-crash"));
    let started = Instant::now();
    let out = stack.run(&["up", "--timeout", "90"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("service `loki` is"), "{err}");
    assert!(
        err.contains("failing on purpose"),
        "the container's own log line is missing: {err}"
    );
    // Well before the 90 s readiness timeout: the engine's view ended the wait.
    assert!(took < Duration::from_secs(60), "up took {took:?}");
    let (code, v) = stack.status_json();
    assert_eq!(code, Some(1), "{v}");
    let out = stack.run(&["clean", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The run path (`claude-telemetry -p …`): with the stack down, claude starts at once, one line
/// says the stack is starting in the background, and the stack comes up; with the stack up,
/// nothing is said.
#[test]
fn run_path_starts_claude_immediately_and_the_stack_in_the_background() {
    if !docker_usable() {
        return;
    }
    build_standin();
    let stack = Stack::new("runpath");
    let fake = stack.dir.path().join("fake-claude");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake claude ran: $*\"\n").expect("write fake claude");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    stack.append_config(&format!(
        "[claude]\npath = \"{}\"\n[upstream]\nendpoint = \"http://127.0.0.1:{}\"\n",
        fake.display(),
        stack.otlp_grpc_port()
    ));

    let started = Instant::now();
    let out = stack.run(&["-p", "hello"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fake claude ran:"),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("starting the telemetry stack in the background"))
            .count(),
        1,
        "{err}"
    );
    // claude did not wait for containers (compose alone takes seconds to start four).
    assert!(took < Duration::from_secs(5), "the run took {took:?}");
    let v = wait_healthy(&stack, Duration::from_secs(90));
    assert_loopback_ports(&v);

    let out = stack.run(&["-p", "again"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("telemetry stack"),
        "{}",
        text(&out)
    );

    let out = stack.run(&["clean", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `docker compose config` (compose's own parser, no daemon needed) on the repository's compose
/// file: every bind-mounted file exists, every port is published on 127.0.0.1, every image tag
/// is pinned, and the image/port overrides reach the resolved file.
#[test]
fn compose_config_resolves_with_existing_mounts_loopback_ports_and_pinned_tags() {
    if require_tool("docker").is_none() {
        return;
    }
    let compose = repo_root().join("compose/docker-compose.yml");
    let resolve = |env: &[(&str, &str)]| -> Value {
        let out = Command::new("docker")
            .args(["compose", "--file"])
            .arg(&compose)
            .args(["config", "--format", "json"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("docker compose config");
        assert!(
            out.status.success(),
            "compose rejected the file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("compose config JSON")
    };
    let d = resolve(&[]);
    let services = d["services"].as_object().expect("services");
    assert_eq!(services.len(), 4);
    for (name, s) in services {
        let image = s["image"].as_str().expect("image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: image `{image}` not pinned"
        );
        for p in s["ports"].as_array().expect("ports") {
            assert_eq!(p["host_ip"], "127.0.0.1", "{name}: {p}");
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            if v["type"] == "bind" {
                let source = v["source"].as_str().expect("source");
                assert!(
                    std::path::Path::new(source).exists(),
                    "{name}: mounts missing {source}"
                );
            }
        }
    }
    let d = resolve(&[
        ("CLAUDE_TELEMETRY_LOKI_IMAGE", IMAGE),
        ("CLAUDE_TELEMETRY_GRAFANA_PORT", "3999"),
    ]);
    assert_eq!(d["services"]["loki"]["image"], IMAGE);
    assert_eq!(d["services"]["grafana"]["ports"][0]["published"], "3999");
    assert_eq!(d["services"]["grafana"]["ports"][0]["host_ip"], "127.0.0.1");
}

/// With a running engine and no image reachable (none of the stack's images is local and no
/// registry answers): the first session starts the stack in the background, the start's failure
/// is recorded, the second session says why in one line and starts nothing (back-off), `doctor`
/// and `status` name the cause and the next try, and `up` ends with the cause and the way out.
#[test]
fn a_stack_start_that_cannot_pull_is_explained_and_not_retried_within_the_backoff() {
    if !docker_usable() {
        return;
    }
    let absent = "claude-telemetry-test/never-built:0";
    let stack = Stack::with_images("nopull", absent, absent);
    let fake = stack.dir.path().join("fake-claude");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake claude ran: $*\"\n").expect("write fake claude");
    // A `docker` in front of the real one that counts `compose … up` runs.
    let real_docker = require_tool("docker").expect("docker");
    let bin = stack.dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let ups = stack.dir.path().join("compose-ups");
    std::fs::write(
        bin.join("docker"),
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" compose \"*\" up \"*) echo up >> '{}' ;; esac\nexec '{}' \"$@\"\n",
            ups.display(),
            real_docker.display()
        ),
    )
    .expect("write docker wrapper");
    use std::os::unix::fs::PermissionsExt;
    for f in [&fake, &bin.join("docker")] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    stack.append_config(&format!(
        "[claude]\npath = \"{}\"\n[upstream]\nendpoint = \"http://127.0.0.1:{}\"\n",
        fake.display(),
        stack.otlp_grpc_port()
    ));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_claude-telemetry"))
            .args(args)
            .env("PATH", &path)
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", &stack.cfg)
            .env(
                "CLAUDE_TELEMETRY_DATA_DIR",
                stack.dir.path().join("launcher-data"),
            )
            .current_dir(stack.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run claude-telemetry")
    };
    let up_count = || {
        std::fs::read_to_string(&ups)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let out = run(&["-p", "first"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("starting the telemetry stack in the background"),
        "{err}"
    );
    // The detached start ends on its own (the pull fails); its status is recorded.
    let exit_file = stack.data().join("compose-up.exit");
    let recorded = Instant::now();
    while !exit_file.exists() {
        assert!(
            recorded.elapsed() < Duration::from_secs(120),
            "the background start recorded no outcome; log: {}",
            std::fs::read_to_string(stack.data().join("compose-up.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(up_count(), 1);

    // The second session: one line with the cause and the way out; no second `compose up`.
    let out = run(&["-p", "second"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("fake claude ran:"),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let stack_lines: Vec<&str> = err.lines().filter(|l| l.contains("stack")).collect();
    assert_eq!(stack_lines.len(), 1, "{err}");
    let line = stack_lines[0];
    assert!(line.contains("cannot be pulled"), "{line}");
    assert!(line.contains("[stack.images]"), "{line}");
    assert!(line.contains("upstream.enabled = false"), "{line}");
    assert!(line.contains("next start attempt after"), "{line}");
    assert_eq!(up_count(), 1, "a second `compose up` within the back-off");

    // doctor and status name the cause and when the next start may happen.
    let out = run(&["doctor"]);
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let stack_line = report
        .lines()
        .find(|l| l.starts_with("[warn] stack:"))
        .unwrap_or_else(|| panic!("no stack finding: {report}"));
    assert!(stack_line.contains("cannot be pulled"), "{stack_line}");
    assert!(stack_line.contains("start it again after"), "{stack_line}");
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("stack: ") && l.contains("cannot be pulled")),
        "{status}"
    );
    let out = run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert!(
        v["last_start_failure"]["next_try_unix"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{v}"
    );
    assert_eq!(up_count(), 1);
    // `logs` has no container to show, and says why rather than "start it with up".
    let out = run(&["logs"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be pulled"),
        "{}",
        text(&out)
    );

    // `up` tries (it is asked to) and ends with its own summary: the cause and the way out.
    let out = run(&["up", "--timeout", "30"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("claude-telemetry: the stack is not up:")
            && last.contains("[stack.images]"),
        "{err}"
    );
    assert_eq!(up_count(), 2);
    // ...and its failure keeps the sessions backing off.
    let out = run(&["-p", "third"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be pulled"),
        "{}",
        text(&out)
    );
    assert_eq!(up_count(), 2);
}
