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

/// How an option consumes the words after it, as claude's parser (commander) reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arity {
    /// A switch (`--verbose`).
    Flag,
    /// Exactly one value (`<x>`).
    Value,
    /// Every following non-option word (`<x...>`).
    Variadic,
    /// The next word unless it is an option (`[x]`).
    OptionalValue,
}

/// What classification needs to know about one claude release: its first-word subcommands and
/// how each option consumes words. The built-in table (2.1.197) is one; the grammar learned from
/// the installed binary is the other.
pub trait ArgTable {
    /// Whether `word`, as the first positional word, is a subcommand of this claude.
    fn is_subcommand(&self, word: &str) -> bool;
    /// How `option` (`--model`, `-r`) consumes the words after it; unknown options are flags.
    fn arity(&self, option: &str) -> Arity;
}

/// The built-in table: claude 2.1.197's `--help`. Only a fallback when the installed claude's
/// own grammar cannot be learned.
pub struct BuiltIn;

impl ArgTable for BuiltIn {
    fn is_subcommand(&self, word: &str) -> bool {
        SUBCOMMANDS.contains(&word)
    }

    fn arity(&self, option: &str) -> Arity {
        if VALUE_OPTIONS.contains(&option) {
            Arity::Value
        } else if VARIADIC_OPTIONS.contains(&option) {
            Arity::Variadic
        } else if OPTIONAL_VALUE_OPTIONS.contains(&option) {
            Arity::OptionalValue
        } else {
            Arity::Flag
        }
    }
}

/// The outcome of reading an argument list against a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Decided: a session or a pass-through.
    Decided(Invocation),
    /// The first positional word is one bare word (no spaces, like a command name) that the
    /// table does not list: a prompt, unless it is a subcommand the help does not show.
    BareWord(String),
}

/// Classifies claude's argument list with the built-in table (the fallback).
pub fn classify(args: &[String]) -> Invocation {
    match read_args(args, &BuiltIn) {
        Reading::Decided(invocation) => invocation,
        Reading::BareWord(_) => Invocation::Session,
    }
}

/// Reads claude's argument list the way claude's own parser would: options (with the values
/// they take) are skipped until the first positional word, which is a subcommand or the prompt.
/// Help, version and background launches (`--bg`: the session outlives this process, so no relay
/// can serve it) pass through.
pub fn read_args(args: &[String], table: &dyn ArgTable) -> Reading {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if arg == "--" {
            return Reading::Decided(Invocation::Session);
        }
        if matches!(
            arg,
            "-h" | "--help" | "-v" | "--version" | "--bg" | "--background"
        ) {
            return Reading::Decided(Invocation::PassThrough);
        }
        if !arg.starts_with('-') || arg == "-" {
            if table.is_subcommand(arg) {
                return Reading::Decided(Invocation::PassThrough);
            }
            return if is_bare_word(arg) {
                Reading::BareWord(arg.to_string())
            } else {
                Reading::Decided(Invocation::Session)
            };
        }
        if arg.contains('=') {
            continue;
        }
        let takes_next = |i: usize| args.get(i).is_some_and(|next| !next.starts_with('-'));
        match table.arity(arg) {
            Arity::Flag => {}
            Arity::Value => i += 1,
            Arity::Variadic => {
                while takes_next(i) {
                    i += 1;
                }
            }
            Arity::OptionalValue => {
                if takes_next(i) {
                    i += 1;
                }
            }
        }
    }
    Reading::Decided(Invocation::Session)
}

/// A word that could be a command name: letters, digits, `-` and `_`, at most 64 characters.
pub fn is_bare_word(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 64
        && word.starts_with(|c: char| c.is_ascii_alphanumeric())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
        assert_eq!(c(&["--bg", "fix it"]), Invocation::PassThrough);
    }

    #[test]
    fn an_unlisted_bare_first_word_is_left_to_the_learned_grammar() {
        let r = |args: &[&str]| {
            read_args(
                &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &BuiltIn,
            )
        };
        assert_eq!(r(&["logs"]), Reading::BareWord("logs".into()));
        assert_eq!(
            r(&["--model", "x", "hello"]),
            Reading::BareWord("hello".into())
        );
        assert_eq!(r(&["fix the bug"]), Reading::Decided(Invocation::Session));
        assert_eq!(
            r(&["mcp", "list"]),
            Reading::Decided(Invocation::PassThrough)
        );
    }
}
