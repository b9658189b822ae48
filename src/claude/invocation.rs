//! Telling a session run (`claude`, `claude -p …`, `claude "fix the bug"`) from everything else
//! (`claude --version`, `claude mcp list`, …), so that only sessions get the relay and an injected
//! `--settings`, and every other invocation reaches claude untouched.

/// What an argument list asks claude to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// Runs a conversation (interactive or `-p`): telemetry is produced.
    Session,
    /// Help, version or one of claude's own subcommands: passed through untouched.
    PassThrough,
}

/// claude 2.1.197's subcommands (`claude --help`, "Commands:").
const SUBCOMMANDS: &[&str] = &[
    "agents",
    "auth",
    "auto-mode",
    "config",
    "doctor",
    "gateway",
    "install",
    "mcp",
    "migrate-installer",
    "plugin",
    "plugins",
    "project",
    "setup-token",
    "ultrareview",
    "update",
    "upgrade",
];

/// Options that take one value (`<x>`).
const VALUE_OPTIONS: &[&str] = &[
    "--agent",
    "--agents",
    "--append-system-prompt",
    "--append-system-prompt-file",
    "--debug-file",
    "--effort",
    "--fallback-model",
    "--input-format",
    "--json-schema",
    "--max-budget-usd",
    "--model",
    "-n",
    "--name",
    "--output-format",
    "--permission-mode",
    "--permission-prompt-tool",
    "--plugin-dir",
    "--plugin-url",
    "--remote-control-session-name-prefix",
    "--session-id",
    "--setting-sources",
    "--settings",
    "--system-prompt",
    "--system-prompt-file",
];

/// Options that take every following non-option word (`<x...>`).
const VARIADIC_OPTIONS: &[&str] = &[
    "--add-dir",
    "--allowedTools",
    "--allowed-tools",
    "--betas",
    "--disallowedTools",
    "--disallowed-tools",
    "--file",
    "--mcp-config",
    "--tools",
];

/// Options whose value is optional (`[x]`): they take the next word unless it is an option.
const OPTIONAL_VALUE_OPTIONS: &[&str] = &[
    "-d",
    "--debug",
    "--from-pr",
    "--prompt-suggestions",
    "--remote-control",
    "-r",
    "--resume",
    "-w",
    "--worktree",
];

/// Classifies claude's argument list the way claude's own parser would read it.
pub fn classify(args: &[String]) -> Invocation {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if arg == "--" {
            return Invocation::Session;
        }
        if matches!(arg, "-h" | "--help" | "-v" | "--version") {
            return Invocation::PassThrough;
        }
        if !arg.starts_with('-') || arg == "-" {
            return if SUBCOMMANDS.contains(&arg) {
                Invocation::PassThrough
            } else {
                Invocation::Session
            };
        }
        if arg.contains('=') {
            continue;
        }
        let takes_next = |i: usize| args.get(i).is_some_and(|next| !next.starts_with('-'));
        if VALUE_OPTIONS.contains(&arg) {
            i += 1;
        } else if VARIADIC_OPTIONS.contains(&arg) {
            while takes_next(i) {
                i += 1;
            }
        } else if OPTIONAL_VALUE_OPTIONS.contains(&arg) && takes_next(i) {
            i += 1;
        }
    }
    Invocation::Session
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(args: &[&str]) -> Invocation {
        classify(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sessions_are_recognised() {
        assert_eq!(c(&[]), Invocation::Session);
        assert_eq!(c(&["-p", "hello"]), Invocation::Session);
        assert_eq!(c(&["fix the bug"]), Invocation::Session);
        assert_eq!(c(&["--model", "opus", "-p", "x"]), Invocation::Session);
        // A prompt that happens to be a subcommand name, after `--`, is still a prompt.
        assert_eq!(c(&["--", "mcp"]), Invocation::Session);
        // Values of options are not subcommands.
        assert_eq!(c(&["--model", "mcp"]), Invocation::Session);
        assert_eq!(c(&["--add-dir", "a", "b", "-p", "hi"]), Invocation::Session);
        assert_eq!(c(&["-r", "abc", "-p", "x"]), Invocation::Session);
    }

    #[test]
    fn management_invocations_pass_through() {
        assert_eq!(c(&["--version"]), Invocation::PassThrough);
        assert_eq!(c(&["-v"]), Invocation::PassThrough);
        assert_eq!(c(&["-p", "--help"]), Invocation::PassThrough);
        assert_eq!(c(&["mcp", "list"]), Invocation::PassThrough);
        assert_eq!(c(&["doctor"]), Invocation::PassThrough);
        assert_eq!(c(&["--debug", "mcp"]), Invocation::Session);
        assert_eq!(c(&["--verbose", "update"]), Invocation::PassThrough);
    }
}
