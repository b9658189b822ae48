//! `setup --statusline [--undo]`: installs `claude-telemetry statusline` as Claude Code's status
//! line in its user settings, keeping the previous command chained, with a backup and a diff.
//! The file is edited in its text ([`settings_text`]): only the `statusLine` value changes.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use super::settings_text;

/// Claude Code's user settings file: `$CLAUDE_CONFIG_DIR/settings.json` or
/// `~/.claude/settings.json`.
fn settings_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("settings.json"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".claude").join("settings.json"))
}

/// Single-quotes `s` for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `--undo` needs, kept beside the settings file: the file as it was before the install
/// (`None`: there was none) and as the install wrote it, so an undo with nothing changed since
/// puts the exact bytes back; and the previous `statusLine` value's text for an undo after the
/// user changed other settings (only that value is then put back).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct UndoState {
    /// Marks this format (an older one held only the previous value).
    claude_telemetry_undo: u32,
    original: Option<String>,
    installed: String,
    previous_value: Option<String>,
}

/// Reads the undo state; the older format (the previous value alone, `null` for none) is
/// still understood.
fn read_undo(text: &str) -> anyhow::Result<UndoState> {
    let value: Value = serde_json::from_str(text)?;
    if value.get("claude_telemetry_undo").is_some() {
        return Ok(serde_json::from_value(value)?);
    }
    Ok(UndoState {
        claude_telemetry_undo: 0,
        original: None,
        installed: String::new(),
        previous_value: (!value.is_null()).then(|| value.to_string()),
    })
}

/// Installs (or with `undo`, removes) the status line; returns the exit code. Only the
/// `statusLine` value changes in the file: key order, spacing and everything else stay byte
/// for byte, and an undo right after an install restores the file exactly.
pub fn run(undo: bool) -> anyhow::Result<i32> {
    let path = settings_path()?;
    let saved = path.with_extension("json.claude-telemetry-statusline");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let bad = |e: settings_text::EditError| anyhow::anyhow!("{}: {e}", path.display());
    let current = match &text {
        Some(t) if !t.trim().is_empty() => t.clone(),
        _ => "{}\n".to_owned(),
    };
    let before_raw = settings_text::raw_value(&current, "statusLine").map_err(bad)?;
    let before: Option<Value> = before_raw
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok());
    if undo {
        let state = std::fs::read_to_string(&saved)
            .with_context(|| format!("nothing to undo: {} not found", saved.display()))?;
        let state =
            read_undo(&state).with_context(|| format!("{} is not valid", saved.display()))?;
        if state.claude_telemetry_undo > 0 && text.as_deref() == Some(state.installed.as_str()) {
            // Nothing changed since the install: the file as it was, byte for byte.
            match &state.original {
                Some(original) => std::fs::write(&path, original),
                None => std::fs::remove_file(&path),
            }
            .with_context(|| format!("cannot restore {}", path.display()))?;
        } else {
            // Other settings changed since: put back only the previous value.
            let restored = match &state.previous_value {
                Some(raw) => settings_text::set_member_raw(&current, "statusLine", raw),
                None => settings_text::remove_member(&current, "statusLine"),
            }
            .map_err(bad)?;
            std::fs::write(&path, restored)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let _ = std::fs::remove_file(&saved);
        let after = state
            .previous_value
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok());
        print_diff(&path, &before, &after);
        return Ok(0);
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let mut command = format!("{} statusline", shell_quote(&exe.to_string_lossy()));
    let old = before
        .as_ref()
        .and_then(|v| v.get("command"))
        .and_then(Value::as_str);
    if old.is_some_and(|c| c.contains(" statusline") && c.contains("claude-telemetry")) {
        println!(
            "{}: the status line is already claude-telemetry's",
            path.display()
        );
        return Ok(0);
    }
    if let Some(old) = old {
        command.push_str(&format!(" --chain {}", shell_quote(old)));
    }
    let after = json!({"type": "command", "command": command.clone()});
    let installed = settings_text::set_member_fields(
        &current,
        "statusLine",
        &[("type", json!("command")), ("command", json!(command))],
    )
    .map_err(bad)?;
    let state = UndoState {
        claude_telemetry_undo: 1,
        original: text.clone(),
        installed: installed.clone(),
        previous_value: before_raw,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&saved, serde_json::to_string(&state)?)
        .with_context(|| format!("cannot write {}", saved.display()))?;
    if let Some(t) = &text {
        let backup = path.with_extension("json.claude-telemetry-backup");
        std::fs::write(&backup, t).with_context(|| format!("cannot write {}", backup.display()))?;
        println!("backup: {}", backup.display());
    }
    std::fs::write(&path, &installed)
        .with_context(|| format!("cannot write {}", path.display()))?;
    print_diff(&path, &before, &Some(after));
    Ok(0)
}

/// The one-member diff: what `statusLine` was and is now.
fn print_diff(path: &std::path::Path, before: &Option<Value>, after: &Option<Value>) {
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_owned(), Value::to_string);
    println!(
        "{}:\n- \"statusLine\": {}\n+ \"statusLine\": {}",
        path.display(),
        show(before),
        show(after)
    );
}
