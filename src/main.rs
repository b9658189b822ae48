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
mod statusline;
mod store;

fn main() {
    // A background learner of the installed claude's grammar (started by the launcher itself).
    if let Some(code) = claude::grammar::learner_main() {
        std::process::exit(code);
    }
    std::process::exit(cli::main());
}
