//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.

mod claude;
mod cli;
mod commands;
mod launcher;
mod otlp;
mod relay;
mod settings;

fn main() {
    std::process::exit(cli::main());
}
