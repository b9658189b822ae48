//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.

mod claude;
mod cli;
mod commands;
mod definitions;
mod launcher;
mod otlp;
mod relay;
mod report;
mod settings;
mod stack;
mod store;

fn main() {
    std::process::exit(cli::main());
}
