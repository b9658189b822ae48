//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.

mod claude;
mod cli;
mod commands;
mod definitions;
mod launcher;
mod otlp;
mod relay;
mod settings;
mod stack;
// TEMPORARY (store branch): store = durable outbox and usage rows, report = `report` command
// (issue 4). The allows go when the relay and the CLI call them.
#[allow(dead_code)]
mod report;
#[allow(dead_code)]
mod store;

fn main() {
    std::process::exit(cli::main());
}
