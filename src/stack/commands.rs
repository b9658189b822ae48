//! The stack subcommands (`up`, `down`, `restart`, `status`, `logs`, `clean`, `validate`,
//! `setup`, `completions`) and the run path's background start.
//!
//! Each command is a clap `Args` struct plus a `run_*` function returning the process exit
//! code, so the CLI registers each with one line. Docker problems end a command with one
//! message saying what to do and a non-zero exit, never a backtrace.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::settings::stack::StackSettings;

use super::SERVICES;
use super::background::{self, StartFiles, StartOutcome};
use super::compose::Compose;
use super::docker::{self, ContainerInfo, DockerError};
use super::files;
use super::readiness::{self, Probe};
use super::validate::{self, Source};

/// Exit code for "Docker is not usable" (not installed, daemon down, permission denied).
pub const EXIT_NO_DOCKER: i32 = 69; // EX_UNAVAILABLE
/// Exit code for "the stack is not (all) healthy".
pub const EXIT_UNHEALTHY: i32 = 1;
/// Exit code for a refused confirmation (`clean` without `--yes` and no terminal).
pub const EXIT_REFUSED: i32 = 2;

/// `up`: write the files, start the stack, wait until every service answers.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Seconds to wait for every service to be ready (default: `[stack] ready_timeout_secs`).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Start the containers and return without waiting for readiness.
    #[arg(long)]
    pub no_wait: bool,
}

/// `down`: stop and remove the stack's containers (volumes are kept).
#[derive(Debug, Clone, Args)]
pub struct DownArgs {}

/// `restart`: `down` then `up`.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Seconds to wait for readiness after starting again.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

/// `status`: one row per service; exit code 0 only when all are running and ready.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `logs [service] [-f]`: the containers' logs, prefixed with the service name.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// One service (otel-collector, prometheus, loki, grafana); all when omitted.
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(super::SERVICES.map(|s| s.name)))]
    pub service: Option<String>,
    /// Keep following new output.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end of each log to start with ("all" for everything).
    #[arg(long, default_value = "200")]
    pub tail: String,
}

/// `clean`: remove the containers AND the volumes (all stored metrics, logs, Grafana state).
#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    /// Do not ask for confirmation (required when not run from a terminal).
    #[arg(short, long)]
    pub yes: bool,
}

/// `validate`: check the compose and config files.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Check this directory (holding `compose/` and `config/`) instead of the data dir.
    #[arg(long, value_name = "DIR", conflicts_with = "embedded")]
    pub dir: Option<PathBuf>,
    /// Check the files compiled into this binary.
    #[arg(long)]
    pub embedded: bool,
}

/// `setup`: print how to route plain `claude` through claude-telemetry, or the env alternative.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// Install `claude-telemetry statusline` as Claude Code's status line (backup, diff shown).
    #[arg(long)]
    pub statusline: bool,
    /// With --statusline: put back the status line that was there before.
    #[arg(long, requires = "statusline")]
    pub undo: bool,
}

/// `completions <shell>`: print a shell completion script.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Runs `fut` on a private runtime in its own thread, so the commands work whether or not the
/// caller is already inside a tokio runtime.
fn block_on<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(fut))
            })
            .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
}

/// Writes one line to stdout; a closed pipe (`| head`) ends output quietly instead of panicking.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

fn data_dir(settings: &StackSettings) -> anyhow::Result<PathBuf> {
    settings.resolved_data_dir().ok_or_else(|| {
        anyhow!("no data directory: set `[stack] data_dir` (no home directory could be determined)")
    })
}

fn report_docker_error(e: &DockerError) -> i32 {
    eprintln!("claude-telemetry: {e}");
    EXIT_NO_DOCKER
}

/// Writes the files and reports kept user edits; returns the compose project.
fn prepare(settings: &StackSettings) -> anyhow::Result<Compose> {
    let dir = data_dir(settings)?;
    let report = files::install(&dir)
        .with_context(|| format!("writing the stack files to {}", dir.display()))?;
    for notice in report.notices() {
        eprintln!("claude-telemetry: {notice}");
    }
    Ok(Compose::new(&dir, settings))
}

/// Checks the CLI, the compose plugin and the daemon, in that order.
fn docker_ready() -> Result<(), DockerError> {
    Compose::check_available()?;
    block_on(docker::connect(Duration::from_secs(3))).map(|_| ())
}

/// `claude-telemetry up`.
pub fn run_up(args: &UpArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let compose = prepare(settings)?;
    if let Err(e) = docker_ready() {
        return Ok(report_docker_error(&e));
    }
    let timeout = args.timeout.unwrap_or(settings.ready_timeout_secs);
    eprintln!(
        "Starting the telemetry stack ({})…",
        compose.file().display()
    );
    let (status, output) = compose
        .up_teed((!args.no_wait).then_some(timeout))
        .map_err(|e| anyhow!("{e}"))?;
    let files = StartFiles::in_dir(&data_dir(settings)?);
    if !status.success() {
        let code = status.code().unwrap_or(1).max(1);
        let cause = background::classify(&output);
        // Recorded like a background start's failure: sessions back off and say why,
        // `status` and `doctor` name it.
        files.record_failure(&output, code, std::time::SystemTime::now());
        eprintln!(
            "claude-telemetry: the stack is not up: {}",
            cause.describe()
        );
        return Ok(code);
    }
    files.forget();
    if args.no_wait {
        print_urls(settings);
        return Ok(0);
    }
    eprintln!("Waiting for the services to be ready (up to {timeout} s)…");
    let mut last_check = std::time::Instant::now();
    let outcome = readiness::wait_all_ready(
        &settings.ports,
        Duration::from_secs(timeout),
        |service, after| {
            eprintln!(
                "  ready: {:<15} after {:.1} s",
                service.name,
                after.as_secs_f64()
            );
        },
        || {
            // Ask the engine every 2 s whether a container has given up, to fail fast.
            if last_check.elapsed() < Duration::from_secs(2) {
                return None;
            }
            last_check = std::time::Instant::now();
            failed_container(settings)
        },
    );
    match outcome {
        readiness::WaitOutcome::Ready => {}
        readiness::WaitOutcome::Failed(reason) => {
            eprintln!("claude-telemetry: {reason}");
            return Ok(EXIT_UNHEALTHY);
        }
        readiness::WaitOutcome::TimedOut(pending) => {
            for (service, probe) in &pending {
                eprintln!(
                    "  NOT ready: {:<15} {} at {}",
                    service.name,
                    probe.describe(),
                    service.ready_url(&settings.ports)
                );
            }
            eprintln!(
                "claude-telemetry: the stack did not become ready within {timeout} s; see `claude-telemetry logs <service>`."
            );
            return Ok(EXIT_UNHEALTHY);
        }
    }
    print_urls(settings);
    Ok(0)
}

/// A container of the stack that exited or keeps restarting, with its last log lines.
fn failed_container(settings: &StackSettings) -> Option<String> {
    block_on(async {
        let docker = docker::connect(Duration::from_secs(2)).await.ok()?;
        let containers = docker::project_containers(&docker, &settings.project_name)
            .await
            .ok()?;
        let failed = containers
            .into_iter()
            .find(|c| matches!(c.state.as_str(), "exited" | "dead" | "restarting"))?;
        let mut tail = Vec::new();
        let _ = docker::write_logs(
            &docker,
            std::slice::from_ref(&failed),
            false,
            "5",
            &mut tail,
        )
        .await;
        Some(format!(
            "service `{}` is {} instead of running; its last log lines:\n{}\nFix the cause (`claude-telemetry validate`, `claude-telemetry logs {}`) and run `claude-telemetry up` again.",
            failed.service,
            failed.state,
            String::from_utf8_lossy(&tail).trim_end(),
            failed.service
        ))
    })
}

fn print_urls(settings: &StackSettings) {
    let p = &settings.ports;
    emit(&format!(
        "Grafana:     http://127.0.0.1:{}/d/claude-code-overview  (anonymous read-only; admin/admin to edit)",
        p.grafana
    ));
    emit(&format!("Prometheus:  http://127.0.0.1:{}", p.prometheus));
    emit(&format!("Loki:        http://127.0.0.1:{}", p.loki));
    emit(&format!(
        "OTLP:        grpc 127.0.0.1:{}  http http://127.0.0.1:{}",
        p.otlp_grpc, p.otlp_http
    ));
}

/// `claude-telemetry down`.
pub fn run_down(_args: &DownArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let compose = prepare(settings)?;
    if let Err(e) = docker_ready() {
        return Ok(report_docker_error(&e));
    }
    let status = compose.down(false).map_err(|e| anyhow!("{e}"))?;
    forget_background_start(settings);
    Ok(if status.success() {
        0
    } else {
        status.code().unwrap_or(1).max(1)
    })
}

/// `claude-telemetry restart`.
pub fn run_restart(args: &RestartArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let code = run_down(&DownArgs {}, settings)?;
    if code != 0 {
        return Ok(code);
    }
    run_up(
        &UpArgs {
            timeout: args.timeout,
            no_wait: false,
        },
        settings,
    )
}

/// One row of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Compose service.
    pub service: String,
    /// Container name, if a container exists.
    pub container: Option<String>,
    /// Container state (`running`, `exited`, …) or `missing`.
    pub state: String,
    /// Docker health when defined, else the HTTP readiness answer.
    pub health: String,
    /// Whether the service is running and answers its readiness endpoint.
    pub healthy: bool,
    /// Published ports.
    pub ports: Vec<String>,
    /// Where to reach it.
    pub url: String,
}

/// Gathers the status of every service.
pub fn collect_status(settings: &StackSettings) -> Result<Vec<ServiceStatus>, DockerError> {
    let containers: Vec<ContainerInfo> = block_on(async {
        let docker = docker::connect(Duration::from_secs(3)).await?;
        docker::project_containers(&docker, &settings.project_name).await
    })?;
    let probes = readiness::probe_all(&settings.ports, Duration::from_millis(1500));
    Ok(probes
        .into_iter()
        .map(|(service, probe)| {
            let container = containers.iter().find(|c| c.service == service.name);
            let state = container.map_or_else(|| "missing".to_string(), |c| c.state.clone());
            let running = state == "running";
            let docker_health_ok = container
                .and_then(|c| c.health.as_deref())
                .is_none_or(|h| h == "healthy");
            let health = match container.and_then(|c| c.health.clone()) {
                Some(h) => format!("{h}, {}", probe.describe()),
                None => probe.describe(),
            };
            ServiceStatus {
                service: service.name.to_string(),
                container: container.map(|c| c.name.clone()),
                state,
                healthy: running && docker_health_ok && probe == Probe::Ready,
                health,
                ports: container.map(|c| c.ports.clone()).unwrap_or_default(),
                url: service.url(&settings.ports),
            }
        })
        .collect())
}

/// `claude-telemetry status`.
pub fn run_status(args: &StatusArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let rows = match collect_status(settings) {
        Ok(rows) => rows,
        Err(e) => {
            if args.json {
                emit(&format!(
                    "{}",
                    serde_json::json!({ "healthy": false, "error": e.to_string() })
                ));
            }
            return Ok(report_docker_error(&e));
        }
    };
    let all_healthy = rows.iter().all(|r| r.healthy);
    let failure = (!all_healthy)
        .then(|| last_start_failure(settings))
        .flatten();
    if args.json {
        let now = std::time::SystemTime::now();
        let doc = serde_json::json!({
            "project": settings.project_name,
            "healthy": all_healthy,
            "services": rows,
            "last_start_failure": failure.as_ref().map(|f| serde_json::json!({
                "cause": f.cause.describe(),
                "failures_in_a_row": f.failures,
                "next_try_unix": f.next_try.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                "next_try": f.next_try_text(now),
                "log": f.log,
            })),
        });
        emit(&serde_json::to_string_pretty(&doc)?);
    } else {
        let mut table = Table::new();
        table.load_style(UTF8_FULL_CONDENSED);
        table.set_header(["service", "container", "state", "health", "port", "URL"]);
        for r in &rows {
            table.add_row([
                r.service.clone(),
                r.container.clone().unwrap_or_else(|| "-".to_string()),
                r.state.clone(),
                r.health.clone(),
                if r.ports.is_empty() {
                    "-".to_string()
                } else {
                    r.ports.join("\n")
                },
                r.url.clone(),
            ]);
        }
        emit(&table.to_string());
        if let Some(failure) = &failure {
            emit(&format!("stack: {}", describe_start_failure(failure)));
        } else if !all_healthy {
            eprintln!(
                "Not all services are healthy: `claude-telemetry up` starts them, `claude-telemetry logs <service>` shows why."
            );
        }
    }
    Ok(if all_healthy { 0 } else { EXIT_UNHEALTHY })
}

/// `claude-telemetry logs`.
pub fn run_logs(args: &LogsArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    if let Some(name) = &args.service
        && super::service(name).is_none()
    {
        let names: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
        eprintln!(
            "claude-telemetry: unknown service `{name}`; one of: {}",
            names.join(", ")
        );
        return Ok(EXIT_REFUSED);
    }
    let result = block_on(async {
        let docker = docker::connect(Duration::from_secs(3)).await?;
        let mut containers = docker::project_containers(&docker, &settings.project_name).await?;
        if let Some(name) = &args.service {
            containers.retain(|c| &c.service == name);
        }
        if containers.is_empty() {
            return Ok(false);
        }
        let mut out = std::io::stdout();
        docker::write_logs(&docker, &containers, args.follow, &args.tail, &mut out).await?;
        Ok(true)
    });
    match result {
        Ok(true) => Ok(0),
        Ok(false) => {
            match last_start_failure(settings) {
                // No container because the last start failed: say why, not "start it".
                Some(failure) => eprintln!(
                    "claude-telemetry: no container of the stack exists: {}",
                    describe_start_failure(&failure)
                ),
                None => eprintln!(
                    "claude-telemetry: no container of the stack exists; start it with `claude-telemetry up`."
                ),
            }
            Ok(EXIT_UNHEALTHY)
        }
        Err(e) => Ok(report_docker_error(&e)),
    }
}

/// `claude-telemetry clean`.
pub fn run_clean(args: &CleanArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            eprintln!(
                "claude-telemetry: `clean` deletes all stored metrics, logs and Grafana state; not run from a terminal, so nobody can confirm: run `claude-telemetry clean --yes`."
            );
            return Ok(EXIT_REFUSED);
        }
        eprint!(
            "Delete the stack's containers AND volumes `{0}_prometheus-data`, `{0}_loki-data`, `{0}_grafana-data` (all stored telemetry)? [y/N] ",
            settings.project_name
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("Nothing deleted.");
            return Ok(EXIT_REFUSED);
        }
    }
    let compose = prepare(settings)?;
    if let Err(e) = docker_ready() {
        return Ok(report_docker_error(&e));
    }
    let status = compose.down(true).map_err(|e| anyhow!("{e}"))?;
    forget_background_start(settings);
    Ok(if status.success() {
        0
    } else {
        status.code().unwrap_or(1).max(1)
    })
}

/// `claude-telemetry validate`.
pub fn run_validate(args: &ValidateArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let source = if args.embedded {
        Source::Embedded
    } else if let Some(dir) = &args.dir {
        Source::Dir(dir.clone())
    } else {
        validate::default_source(settings.resolved_data_dir().as_deref())
    };
    let where_ = match &source {
        Source::Dir(d) => d.display().to_string(),
        Source::Embedded => "the files built into this binary".to_string(),
    };
    let report = validate::validate(&source);
    if report.findings.is_empty() {
        emit(&format!(
            "ok: {} files in {where_} are valid",
            report.checked
        ));
        Ok(0)
    } else {
        for f in &report.findings {
            emit(&f.to_string());
        }
        eprintln!("{} problem(s) in {where_}", report.findings.len());
        Ok(1)
    }
}

/// The alias snippet shipped in `shell/alias.sh`.
pub const ALIAS_SNIPPET: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shell/alias.sh"));
/// The manual alternative shipped in `shell/setup-env.sh`.
pub const SETUP_ENV: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shell/setup-env.sh"));

/// `claude-telemetry setup`.
pub fn run_setup(_args: &SetupArgs, settings: &StackSettings) -> anyhow::Result<i32> {
    let p = &settings.ports;
    let mut text = String::from(
        "# 1. Recommended: run claude through claude-telemetry. Add to ~/.bashrc or ~/.zshrc:\n",
    );
    for line in ALIAS_SNIPPET
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(concat!(
        "\n# 2. Shell completions:\n",
        "#    bash: claude-telemetry completions bash > ~/.local/share/bash-completion/completions/claude-telemetry\n",
        "#    zsh:  claude-telemetry completions zsh > \"${fpath[1]}/_claude-telemetry\"\n",
        "#    fish: claude-telemetry completions fish > ~/.config/fish/completions/claude-telemetry.fish\n",
        "\n# 3. Alternative without the relay (no privacy policy, no local copy): plain claude\n",
        "#    exporting straight to the stack's collector. Source this in your shell:\n",
    ));
    text.push_str(&SETUP_ENV.replace(
        "${CLAUDE_TELEMETRY_OTLP_GRPC_PORT:-4317}",
        &p.otlp_grpc.to_string(),
    ));
    text.push_str(&format!(
        "\n# The stack: `claude-telemetry up`, then Grafana at http://127.0.0.1:{}/",
        p.grafana
    ));
    emit(&text);
    Ok(0)
}

/// `claude-telemetry completions <shell>`; `cmd` is the CLI's full clap command.
pub fn run_completions(args: &CompletionsArgs, cmd: &mut clap::Command) -> anyhow::Result<i32> {
    let script = completion_script(args.shell, cmd);
    std::io::stdout().write_all(script.as_bytes())?;
    Ok(0)
}

/// clap_complete's fish generator offers no values for positional arguments (`logs <TAB>`
/// would list files); one `complete` line per subcommand positional with known values adds
/// them (the service names of `logs`).
fn fish_positional_values(cmd: &clap::Command) -> String {
    let name = cmd.get_name();
    let helper = format!("__fish_{}_using_subcommand", name.replace('-', "_"));
    let mut out = String::new();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_positionals() {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if values.is_empty() {
                continue;
            }
            out.push_str(&format!(
                "complete -c {name} -n \"{helper} {}\" -f -a \"{}\"\n",
                sub.get_name(),
                values.join(" ")
            ));
        }
    }
    out
}

/// The completion script for `shell`.
///
/// clap_complete's bash generator spells a hyphenated binary's command path two ways: the word
/// loop sets `cmd="claude__telemetry__subcmd__report"` while the `case` arms that offer the
/// options read `claude__subcmd__telemetry__subcmd__report` (the hyphen treated as a subcommand
/// separator), so nothing below the top level ever completes. The arms are renamed to the
/// spelling the loop uses.
pub fn completion_script(shell: clap_complete::Shell, cmd: &mut clap::Command) -> String {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, cmd, name.clone(), &mut out);
    let mut script = String::from_utf8_lossy(&out).into_owned();
    if shell == clap_complete::Shell::Fish {
        script.push_str(&fish_positional_values(cmd));
    }
    if shell != clap_complete::Shell::Bash || !name.contains('-') {
        return script;
    }
    let loop_spelling = name.replace('-', "__");
    let arm_spelling = name.replace('-', "__subcmd__");
    script.replace(&arm_spelling, &loop_spelling)
}

/// What the run path did about the stack; [`StackNotice::message`] is the one line to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackNotice {
    /// `[stack] manage = false`: nothing was checked.
    NotManaged,
    /// The collector answered: the stack is up.
    Ready,
    /// The stack was down; `docker compose up -d` now runs in the background.
    Starting {
        /// Where its output goes.
        log: PathBuf,
    },
    /// Docker is not usable: telemetry stays in the local store.
    LocalOnly {
        /// Why, in a few words.
        reason: String,
    },
    /// The last background start failed and the back-off has not run out: nothing is started.
    Failed {
        /// The cause and the way out, one line.
        cause: String,
        /// When the next background start may happen.
        next_try: String,
    },
}

impl StackNotice {
    /// The one line to print before claude starts, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            StackNotice::NotManaged | StackNotice::Ready => None,
            StackNotice::Starting { log } => Some(format!(
                "claude-telemetry: starting the telemetry stack in the background (log: {}); telemetry is kept locally until it is ready",
                log.display()
            )),
            StackNotice::Failed { cause, next_try } => Some(format!(
                "claude-telemetry: the telemetry stack is not up: {cause}; telemetry is kept locally, next start attempt after {next_try}"
            )),
            StackNotice::LocalOnly { reason } => Some(format!(
                "claude-telemetry: local-only mode ({reason}); telemetry is stored locally, `claude-telemetry up` explains how to start the stack"
            )),
        }
    }
}

/// Why the engine cannot be used, judged in well under a millisecond without a runtime:
/// the CLI on PATH and a connectable unix socket (a TCP `DOCKER_HOST` is assumed usable and
/// left to `docker compose` to judge).
fn docker_quick_check() -> Result<(), String> {
    if !docker::docker_cli_on_path() {
        return Err("Docker is not installed".to_string());
    }
    let Some(socket) = docker::socket_path() else {
        return Ok(());
    };
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                format!("permission denied on {}", socket.display())
            }
            std::io::ErrorKind::NotFound => "the Docker daemon is not running".to_string(),
            _ => format!("the Docker daemon is not answering at {}", socket.display()),
        }),
    }
}

/// The run path: one fast readiness probe; when the stack is down, start it in the background
/// and return at once. Never waits for containers and never fails: claude must start anyway.
pub fn ensure_started_in_background(settings: &StackSettings) -> StackNotice {
    if settings.manage == Some(false) {
        return StackNotice::NotManaged;
    }
    let collector = &SERVICES[0];
    if readiness::probe_service(collector, &settings.ports, Duration::from_millis(300)).is_ready() {
        if let Some(dir) = settings.resolved_data_dir() {
            // Up: an old failure is history, the next one starts a fresh back-off.
            let files = StartFiles::in_dir(&dir);
            if matches!(
                files.outcome(std::time::SystemTime::now()),
                StartOutcome::Failed(_)
            ) {
                files.forget();
            }
        }
        return StackNotice::Ready;
    }
    if let Err(reason) = docker_quick_check() {
        return StackNotice::LocalOnly { reason };
    }
    let Some(dir) = settings.resolved_data_dir() else {
        return StackNotice::LocalOnly {
            reason: "no data directory for the stack files".to_string(),
        };
    };
    start_detached(&dir, settings)
}

/// After `down`/`clean` the next session may start the stack again at once.
fn forget_background_start(settings: &StackSettings) {
    if let Some(dir) = settings.resolved_data_dir() {
        StartFiles::in_dir(&dir).forget();
    }
}

/// The last background start's failure, if the stack is down because of it (for `status`,
/// `doctor`).
pub fn last_start_failure(settings: &StackSettings) -> Option<background::Failure> {
    let dir = settings.resolved_data_dir()?;
    match StartFiles::in_dir(&dir).outcome(std::time::SystemTime::now()) {
        StartOutcome::Failed(f) => Some(f),
        _ => None,
    }
}

/// One line about the last background start's failure, for `status` and `doctor`.
pub fn describe_start_failure(failure: &background::Failure) -> String {
    let now = std::time::SystemTime::now();
    let next = if failure.backing_off(now) {
        format!(
            "sessions start it again after {}",
            failure.next_try_text(now)
        )
    } else {
        "the next session starts it again".to_string()
    };
    format!(
        "the background start failed ({} time(s) in a row): {}; {next} (log: {})",
        failure.failures,
        failure.cause.describe(),
        failure.log.display()
    )
}

fn start_detached(dir: &Path, settings: &StackSettings) -> StackNotice {
    let files = StartFiles::in_dir(dir);
    let now = std::time::SystemTime::now();
    let failures_before = match files.outcome(now) {
        // Another session started it moments ago: compose is still at work.
        StartOutcome::Running => return StackNotice::Starting { log: files.log },
        StartOutcome::Failed(failure) if failure.backing_off(now) => {
            return StackNotice::Failed {
                cause: failure.cause.describe(),
                next_try: failure.next_try_text(now),
            };
        }
        StartOutcome::Failed(failure) => failure.failures,
        StartOutcome::None => 0,
    };
    if let Err(e) = files::install(dir) {
        return StackNotice::LocalOnly {
            reason: format!("cannot write the stack files: {e}"),
        };
    }
    if let Err(e) = files.note_spawn(failures_before, now) {
        return StackNotice::LocalOnly {
            reason: format!("cannot write {}: {e}", files.record.display()),
        };
    }
    match Compose::new(dir, settings).spawn_up_detached(&files.log, &files.exit) {
        Ok(()) => StackNotice::Starting { log: files.log },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StackNotice::LocalOnly {
            reason: "Docker is not installed".to_string(),
        },
        Err(e) => StackNotice::LocalOnly {
            reason: format!("cannot run docker compose: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_managed_checks_nothing_and_says_nothing() {
        let settings = StackSettings {
            manage: Some(false),
            ..StackSettings::default()
        };
        let notice = ensure_started_in_background(&settings);
        assert_eq!(notice, StackNotice::NotManaged);
        assert_eq!(notice.message(), None);
    }

    #[test]
    fn block_on_works_from_inside_a_running_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let value = rt.block_on(async { block_on(async { 41 + 1 }) });
        assert_eq!(value, 42);
    }

    #[test]
    fn completion_scripts_use_one_spelling_and_offer_positional_values() {
        use clap::{Arg, Command};
        let mut cmd = Command::new("claude-telemetry").subcommand(Command::new("logs").arg(
            Arg::new("service").value_parser(clap::builder::PossibleValuesParser::new([
                "loki", "grafana",
            ])),
        ));
        let bash = completion_script(clap_complete::Shell::Bash, &mut cmd);
        assert!(!bash.contains("claude__subcmd__telemetry"), "{bash}");
        assert!(bash.contains("claude__telemetry__subcmd__logs)"), "{bash}");
        let fish = completion_script(clap_complete::Shell::Fish, &mut cmd);
        assert!(
            fish.contains(
                "complete -c claude-telemetry -n \"__fish_claude_telemetry_using_subcommand logs\" -f -a \"loki grafana\""
            ),
            "{fish}"
        );
    }

    #[test]
    fn local_only_message_is_one_line() {
        let n = StackNotice::LocalOnly {
            reason: "Docker is not installed".into(),
        };
        let m = n.message().expect("a message");
        assert!(!m.contains('\n'));
        assert!(m.contains("local-only mode"));
    }
}
