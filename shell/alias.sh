# claude-telemetry: run Claude Code through the telemetry relay.
# Add to ~/.bashrc or ~/.zshrc (fish: `alias claude 'claude-telemetry run --'; funcsave claude`).
alias claude='claude-telemetry run --'
