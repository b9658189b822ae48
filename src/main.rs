//! claude-telemetry: run Claude Code with its telemetry relayed through a local OTLP relay.

mod budget;
mod claude;
mod cli;
mod commands;
mod definitions;
mod history;
mod launcher;
mod otlp;
mod relay;
mod report;
mod settings;
mod stack;
mod statusline;
mod store;

/// mimalloc instead of glibc's allocator: the relay allocates and frees every string of every
/// request it decodes, and glibc's free lists (`malloc_consolidate`, `unlink_chunk`) took a
/// seventh of its CPU under load (see README, "Relay vs rotel-agent").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // A background learner of the installed claude's grammar (started by the launcher itself).
    if let Some(code) = claude::grammar::learner_main() {
        std::process::exit(code);
    }
    std::process::exit(cli::main());
}
