//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.
#![allow(dead_code)]
mod definitions;
mod otlp;
mod settings;
mod stack;

// ---- TEMPORARY (stack branch): wires the stack subcommands so tests/ can drive the real
// binary until the lead registers them in src/cli.rs. Settings come from the TOML file named
// by CLAUDE_TELEMETRY_CONFIG (only its `[stack]` table is read here).
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "claude-telemetry", version)]
struct TempCli {
    #[command(subcommand)]
    command: TempCommand,
}

#[derive(Subcommand)]
enum TempCommand {
    /// Start the observability stack and wait until it is ready.
    Up(stack::UpArgs),
    /// Stop the stack (data is kept).
    Down(stack::DownArgs),
    /// Restart the stack.
    Restart(stack::RestartArgs),
    /// Show the state of each service.
    Status(stack::StatusArgs),
    /// Show the services' logs.
    Logs(stack::LogsArgs),
    /// Remove the stack and its data volumes.
    Clean(stack::CleanArgs),
    /// Check the stack's configuration files.
    Validate(stack::ValidateArgs),
    /// Print setup instructions.
    Setup(stack::SetupArgs),
    /// Print a shell completion script.
    Completions(stack::CompletionsArgs),
    /// Test hook: the run path's background start, printing its notice.
    #[command(hide = true)]
    StackEnsure,
}

#[derive(serde::Deserialize, Default)]
struct TempRoot {
    #[serde(default)]
    stack: settings::stack::StackSettings,
}

fn temp_settings() -> anyhow::Result<settings::stack::StackSettings> {
    let Some(path) = std::env::var_os("CLAUDE_TELEMETRY_CONFIG") else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(&path)?;
    let root: TempRoot = toml::from_str(&text)?;
    Ok(root.stack)
}

fn main() -> std::process::ExitCode {
    let cli = TempCli::parse();
    let result = temp_settings().and_then(|s| match &cli.command {
        TempCommand::Up(a) => stack::run_up(a, &s),
        TempCommand::Down(a) => stack::run_down(a, &s),
        TempCommand::Restart(a) => stack::run_restart(a, &s),
        TempCommand::Status(a) => stack::run_status(a, &s),
        TempCommand::Logs(a) => stack::run_logs(a, &s),
        TempCommand::Clean(a) => stack::run_clean(a, &s),
        TempCommand::Validate(a) => stack::run_validate(a, &s),
        TempCommand::Setup(a) => stack::run_setup(a, &s),
        TempCommand::Completions(a) => stack::run_completions(a, &mut TempCli::command()),
        TempCommand::StackEnsure => {
            let started = std::time::Instant::now();
            let notice = stack::ensure_started_in_background(&s);
            println!("{notice:?}");
            println!("elapsed_us={}", started.elapsed().as_micros());
            if let Some(m) = notice.message() {
                eprintln!("{m}");
            }
            Ok(0)
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("claude-telemetry: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
// ---- end TEMPORARY
