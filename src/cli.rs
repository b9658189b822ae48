//! The command line: our management commands when typed as the first word, everything else
//! passed to claude unchanged.
//!
//! `claude-telemetry [ARGS…]` behaves like `claude [ARGS…]`. Only a first word naming one of our
//! commands is ours; `claude-telemetry -- ARGS…` and `claude-telemetry run [OUR FLAGS] -- ARGS…`
//! always pass ARGS to claude, which is what the shell alias uses.

use crate::commands;
use crate::launcher;
use crate::settings::{self, FlagOverride};
use crate::stack;
use clap::{Args, Parser, Subcommand};

/// Words that are ours when they come first. Everything else goes to claude.
pub const OUR_COMMANDS: &[&str] = &[
    "run",
    "config",
    "doctor",
    "help",
    "up",
    "down",
    "restart",
    "status",
    "logs",
    "clean",
    "validate",
    "setup",
    "completions",
    "report",
    "import",
    "version",
    "stack-check",
    "statusline",
    "limits",
];

const AFTER_HELP: &str = "\
Anything that is not one of the commands above goes to claude unchanged:
  claude-telemetry                      interactive claude session, telemetry relayed
  claude-telemetry -p \"explain this\"    print mode, output byte-identical to claude's
  claude-telemetry -- doctor            claude's own `doctor` (the `--` makes every word claude's)
  claude-telemetry run --upstream https://otel.example.com -- --model opus

Shell alias (every word reaches claude, none is taken as ours):
  alias claude='claude-telemetry run --'

Settings, lowest to highest precedence: built-in defaults < ~/.config/claude-telemetry/config.toml
< .claude-telemetry.toml (nearest parent directory) < CLAUDE_TELEMETRY_<SECTION>__<KEY>
environment variables < flags of `run`. See `claude-telemetry config`.";

/// claude-telemetry: run Claude Code with its telemetry relayed, filtered and kept.
#[derive(Debug, Parser)]
#[command(
    name = "claude-telemetry",
    about = "Run Claude Code with its OpenTelemetry relayed through a local, policy-enforcing relay",
    after_help = AFTER_HELP,
    override_usage = "claude-telemetry [CLAUDE ARGS]...      (runs claude)\n       claude-telemetry <COMMAND> [OPTIONS]  (one of ours, below)\n       claude-telemetry -- [CLAUDE ARGS]...  (everything to claude)",
    disable_help_subcommand = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Our management commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run claude with our flags: `claude-telemetry run [FLAGS] -- [CLAUDE ARGS]`.
    Run(RunArgs),
    /// Print the effective settings and where each value came from.
    Config(commands::config::ConfigArgs),
    /// Check that telemetry can flow: claude, settings, Claude's own settings, upstream, relay.
    Doctor(commands::doctor::DoctorArgs),
    /// What did I spend, on what, where: totals and breakdowns from the local store.
    Report(crate::report::ReportArgs),
    /// Read Claude Code's transcripts into the local store: usage from before the launcher, and
    /// requests telemetry missed (runs in the background at every launch too).
    Import(commands::import::ImportArgs),
    /// Start the local observability stack (collector, Prometheus, Loki, Grafana) and wait until ready.
    Up(stack::UpArgs),
    /// Stop the stack (stored telemetry is kept).
    Down(stack::DownArgs),
    /// Restart the stack.
    Restart(stack::RestartArgs),
    /// Show each service's container, state, health, port and URL (exit 1 unless all healthy).
    Status(stack::StatusArgs),
    /// Show the stack's logs: `logs [service] [-f]`.
    Logs(stack::LogsArgs),
    /// Remove the stack and its volumes (all stored metrics, logs, Grafana state).
    Clean(stack::CleanArgs),
    /// Check the stack's compose, config and dashboard files.
    Validate(stack::ValidateArgs),
    /// Print setup instructions: the alias, completions, the plain-env alternative.
    Setup(stack::SetupArgs),
    /// Print a shell completion script: `completions bash|zsh|fish`.
    Completions(stack::CompletionsArgs),
    /// Claude Code status-line command: session cost, today's spend, limit windows (stdin: JSON).
    Statusline(crate::statusline::StatuslineArgs),
    /// Plan usage-limit windows' history: how often and when they were hit.
    Limits,
    /// Print claude-telemetry's own version (`--version` is passed to claude and prints claude's).
    Version,
}

/// Flags of `run`; they override every settings layer for this run only.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Upstream OTLP endpoint (e.g. http://localhost:4317 or https://otel.example.com).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Upstream protocol: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<String>,
    /// Keep telemetry local: forward nothing.
    #[arg(long)]
    pub local_only: bool,
    /// Path of the real claude executable.
    #[arg(long, value_name = "PATH")]
    pub claude_path: Option<String>,
    /// How long to keep delivering queued telemetry after claude exits, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Any setting, as a dotted key: `--set upstream.timeout_ms=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Arguments for claude, after `--`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CLAUDE ARGS"
    )]
    pub claude_args: Vec<String>,
}

impl RunArgs {
    fn overrides(&self) -> Result<Vec<FlagOverride>, String> {
        let mut out = Vec::new();
        let mut named = |flag: &str, key: &str, value: Option<String>| {
            if let Some(value) = value {
                out.push(FlagOverride {
                    flag: flag.into(),
                    key: key.into(),
                    value,
                });
            }
        };
        named("--upstream", "upstream.endpoint", self.upstream.clone());
        named("--protocol", "upstream.protocol", self.protocol.clone());
        named("--claude-path", "claude.path", self.claude_path.clone());
        named(
            "--drain-timeout-ms",
            "relay.drain_timeout_ms",
            self.drain_timeout_ms.map(|v| v.to_string()),
        );
        named(
            "--local-only",
            "upstream.enabled",
            self.local_only.then(|| "false".into()),
        );
        for raw in &self.set {
            let Some((key, value)) = raw.split_once('=') else {
                return Err(format!(
                    "--set {raw}: expected KEY=VALUE, e.g. --set upstream.timeout_ms=500"
                ));
            };
            out.push(FlagOverride {
                flag: format!("--set {key}"),
                key: key.trim().to_string(),
                value: value.to_string(),
            });
        }
        Ok(out)
    }
}

/// Entry point: returns the process exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let first = args.first().map(String::as_str);
    let ours = matches!(first, Some(w) if OUR_COMMANDS.contains(&w) || w == "-h" || w == "--help");
    if !ours {
        let claude_args = match first {
            Some("--") => args[1..].to_vec(),
            _ => args,
        };
        return run_claude(claude_args, &[]);
    }
    if first == Some("stack-check") {
        return stack_check();
    }
    if first != Some("run") {
        end_quietly_on_closed_pipe();
    }
    let cli = match Cli::try_parse_from(std::iter::once("claude-telemetry".to_string()).chain(args))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match cli.command {
        Command::Run(run) => match run.overrides() {
            Ok(flags) => run_claude(run.claude_args, &flags),
            Err(message) => {
                eprintln!("claude-telemetry: {message}");
                2
            }
        },
        Command::Config(args) => with_settings(&[], |loaded| commands::config::run(&args, loaded)),
        Command::Doctor(args) => commands::doctor::run(&args).unwrap_or_else(|e| {
            eprintln!("claude-telemetry: {e:#}");
            1
        }),
        Command::Report(args) => with_settings(&[], |loaded| {
            let path = loaded.paths.store_file(&loaded.settings.store.path);
            let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
            let budgets = budget_lines(&crate::budget::current(loaded, &cwd)?)?;
            // Buffered: a breakdown of 25,000 rows is as many lines, one write each otherwise.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::report::run_with_budgets(&args, &path, &budgets, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(0)
        }),
        Command::Import(args) => with_settings(&[], |loaded| {
            let code = commands::import::run(&args, loaded, &mut std::io::stdout().lock());
            crate::history::background::release_background_lock();
            code
        }),
        Command::Up(args) => with_stack(|s| stack::run_up(&args, s)),
        Command::Down(args) => with_stack(|s| stack::run_down(&args, s)),
        Command::Restart(args) => with_stack(|s| stack::run_restart(&args, s)),
        Command::Status(args) => with_settings(&[], |loaded| {
            let stack_settings = loaded
                .settings
                .stack
                .with_default_data_dir(&loaded.paths.data_dir);
            let code = stack::run_status(&args, &stack_settings)?;
            if !args.json {
                let (_, line) = commands::doctor::store_summary(loaded);
                println!("local store: {line}");
            }
            Ok(code)
        }),
        Command::Logs(args) => with_stack(|s| stack::run_logs(&args, s)),
        Command::Clean(args) => with_stack(|s| stack::run_clean(&args, s)),
        Command::Validate(args) => with_stack(|s| stack::run_validate(&args, s)),
        Command::Setup(args) if args.statusline => commands::setup_statusline::run(args.undo)
            .unwrap_or_else(|e| {
                eprintln!("claude-telemetry: {e:#}");
                1
            }),
        Command::Setup(args) => with_stack(|s| stack::run_setup(&args, s)),
        Command::Statusline(args) => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
            let loaded = settings::load(&cwd, &launcher::environment(), &[]);
            crate::statusline::run(&args, loaded.as_ref().map_err(|e| e.to_string()))
        }
        Command::Limits => with_settings(&[], |loaded| {
            let path = loaded.paths.store_file(&loaded.settings.store.path);
            crate::statusline::limits_view(&path)
        }),
        Command::Version => {
            println!("claude-telemetry {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Completions(args) => {
            use clap::CommandFactory;
            stack::run_completions(&args, &mut Cli::command()).unwrap_or(1)
        }
    }
}

/// `stack-check`, for tests: what the run path does about the stack (one readiness probe, a
/// background start when down), and how long it took. Not a clap command, so neither help nor
/// the completion scripts list it.
fn stack_check() -> i32 {
    with_stack(|s| {
        let started = std::time::Instant::now();
        let notice = stack::ensure_started_in_background(s);
        println!("{notice:?}");
        println!("elapsed_us={}", started.elapsed().as_micros());
        if let Some(message) = notice.message() {
            eprintln!("{message}");
        }
        Ok(0)
    })
}

/// Our commands print to stdout with `println!`; when the reader goes away (`doctor | head -1`)
/// they must end the way other command-line tools do, killed quietly by SIGPIPE (the shell sees
/// 141), not with a panic or an error line. Rust ignores SIGPIPE by default, so it is restored
/// here, for our commands only: the run path keeps ignoring it, since claude's pipes are not ours
/// to die of (its children get the default back from std when spawned).
fn end_quietly_on_closed_pipe() {
    // SAFETY: signal(2) with a valid signal number and SIG_DFL, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs a stack command with the `[stack]` settings, its data dir defaulting to
/// `<data dir>/stack` (so `CLAUDE_TELEMETRY_DATA_DIR` moves it too).
fn with_stack(body: impl FnOnce(&settings::stack::StackSettings) -> anyhow::Result<i32>) -> i32 {
    with_settings(&[], |loaded| {
        body(
            &loaded
                .settings
                .stack
                .with_default_data_dir(&loaded.paths.data_dir),
        )
    })
}

/// Runs claude. Settings that cannot be read never stop claude: the launcher then runs it
/// with telemetry withheld (or, for `--version` and claude's subcommands, exactly as is).
fn run_claude(claude_args: Vec<String>, flags: &[FlagOverride]) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let result = match settings::load(&cwd, &launcher::environment(), flags) {
        Ok(loaded) => launcher::run(&loaded, claude_args),
        Err(e) => launcher::run_without_settings(&e, claude_args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("claude-telemetry: {e:#}");
        1
    })
}

/// The budget standings as rows of `report`'s budget section (text, and JSON with `level`).
fn budget_lines(
    standings: &crate::budget::Standings,
) -> serde_json::Result<Vec<crate::report::BudgetLine>> {
    use crate::budget::Level;
    standings
        .0
        .iter()
        .map(|s| {
            let level = match s.level() {
                Level::Under => "under",
                Level::Near => "near",
                Level::Over => "over",
            };
            let mut json = serde_json::to_value(s)?;
            json["level"] = serde_json::Value::from(level);
            Ok(crate::report::BudgetLine {
                json,
                text: s.to_string(),
                level,
            })
        })
        .collect()
}

fn with_settings(
    flags: &[FlagOverride],
    body: impl FnOnce(&settings::Loaded) -> anyhow::Result<i32>,
) -> i32 {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let loaded = match settings::load(&cwd, &launcher::environment(), flags) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("claude-telemetry: settings error: {e}");
            return 2;
        }
    };
    match body(&loaded) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("claude-telemetry: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_claude_args_after_double_dash() {
        let cli = Cli::try_parse_from(["ct", "run", "--upstream", "http://x:1", "--", "-p", "hi"])
            .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.claude_args, ["-p", "hi"]);
        assert_eq!(run.upstream.as_deref(), Some("http://x:1"));
    }

    #[test]
    fn run_through_the_alias_keeps_words_that_look_like_ours() {
        let cli = Cli::try_parse_from(["ct", "run", "--", "doctor", "--upstream", "x"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.claude_args, ["doctor", "--upstream", "x"]);
        assert_eq!(run.upstream, None);
    }
}
