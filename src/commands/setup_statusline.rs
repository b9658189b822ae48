//! `setup --statusline [--undo]`: installs `claude-telemetry statusline` as Claude Code's status
//! line in its user settings, keeping the previous command chained, with a backup and a diff.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

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

/// Installs (or with `undo`, removes) the status line; returns the exit code.
pub fn run(undo: bool) -> anyhow::Result<i32> {
    let path = settings_path()?;
    let saved = path.with_extension("json.claude-telemetry-statusline");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut settings: Value = match &text {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t)
            .with_context(|| format!("{} is not valid JSON", path.display()))?,
        _ => json!({}),
    };
    let Some(map) = settings.as_object_mut() else {
        anyhow::bail!("{}: expected a JSON object", path.display());
    };
    let before = map.get("statusLine").cloned();
    let after = if undo {
        let previous = std::fs::read_to_string(&saved)
            .with_context(|| format!("nothing to undo: {} not found", saved.display()))?;
        let previous: Value = serde_json::from_str(&previous)
            .with_context(|| format!("{} is not valid JSON", saved.display()))?;
        (!previous.is_null()).then_some(previous)
    } else {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut command = format!("{} statusline", shell_quote(&exe.to_string_lossy()));
        let old = before
            .as_ref()
            .and_then(|v| v.get("command"))
            .and_then(Value::as_str);
        if old.is_some_and(|c| c.contains(" statusline"))
            && old.is_some_and(|c| c.contains("claude-telemetry"))
        {
            println!(
                "{}: the status line is already claude-telemetry's",
                path.display()
            );
            return Ok(0);
        }
        if let Some(old) = old {
            command.push_str(&format!(" --chain {}", shell_quote(old)));
        }
        std::fs::write(
            &saved,
            serde_json::to_string(&before.clone().unwrap_or(Value::Null))?,
        )
        .with_context(|| format!("cannot write {}", saved.display()))?;
        if let Some(t) = &text {
            let backup = path.with_extension("json.claude-telemetry-backup");
            std::fs::write(&backup, t)
                .with_context(|| format!("cannot write {}", backup.display()))?;
            println!("backup: {}", backup.display());
        }
        Some(json!({"type": "command", "command": command}))
    };
    match &after {
        Some(v) => map.insert("statusLine".into(), v.clone()),
        None => map.remove("statusLine"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&settings)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    if undo {
        let _ = std::fs::remove_file(&saved);
    }
    let show = |v: &Option<Value>| v.as_ref().map_or("(none)".to_owned(), Value::to_string);
    println!(
        "{}:\n- \"statusLine\": {}\n+ \"statusLine\": {}",
        path.display(),
        show(&before),
        show(&after)
    );
    Ok(0)
}
