//! Finding the real claude, never ourselves.
//!
//! A `claude` on PATH may be a symlink to claude-telemetry or a wrapper script that runs it (the
//! shell alias's cousin). Starting that would start us again, forever. Candidates that resolve to
//! our own executable, or small scripts that mention `claude-telemetry`, are skipped.

use std::fmt;
use std::path::{Path, PathBuf};

/// claude was not found; lists every place looked at so the user can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NotFound {
    pub looked_at: Vec<(PathBuf, &'static str)>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "claude-telemetry: cannot find the real `claude` executable. Looked at:"
        )?;
        for (path, why) in &self.looked_at {
            writeln!(f, "  {} ({why})", path.display())?;
        }
        write!(
            f,
            "Install Claude Code, or set its path: `[claude] path = \"/path/to/claude\"` in \
             ~/.config/claude-telemetry/config.toml, or CLAUDE_TELEMETRY_CLAUDE__PATH=/path/to/claude"
        )
    }
}

/// Resolves the claude executable: the configured path, else PATH (skipping ourselves), else the
/// usual install locations.
pub fn find_claude(
    configured: &str,
    path_var: Option<&str>,
    home: Option<&Path>,
    own_exe: Option<&Path>,
) -> Result<PathBuf, NotFound> {
    let own = own_exe.and_then(|p| p.canonicalize().ok());
    let mut looked_at = Vec::new();
    if !configured.is_empty() {
        let path = PathBuf::from(configured);
        match check(&path, own.as_deref()) {
            Ok(()) => return Ok(path),
            Err(why) => {
                looked_at.push((path, why));
                return Err(NotFound { looked_at });
            }
        }
    }
    let from_path = path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("claude"));
    let usual = home
        .into_iter()
        .flat_map(|h| [h.join(".claude/local/claude"), h.join(".local/bin/claude")]);
    for candidate in from_path.chain(usual) {
        match check(&candidate, own.as_deref()) {
            Ok(()) => return Ok(candidate),
            Err("not found") => {}
            Err(why) => looked_at.push((candidate, why)),
        }
    }
    if looked_at.is_empty() {
        looked_at.push((PathBuf::from("$PATH"), "no `claude` in any PATH directory"));
        if let Some(h) = home {
            looked_at.push((h.join(".claude/local/claude"), "not found"));
            looked_at.push((h.join(".local/bin/claude"), "not found"));
        }
    }
    Err(NotFound { looked_at })
}

fn check(candidate: &Path, own: Option<&Path>) -> Result<(), &'static str> {
    let meta = std::fs::metadata(candidate).map_err(|_| "not found")?;
    if !meta.is_file() {
        return Err("not a file");
    }
    if !is_executable(&meta) {
        return Err("not executable");
    }
    let resolved = candidate.canonicalize().map_err(|_| "not found")?;
    if Some(resolved.as_path()) == own {
        return Err("this is claude-telemetry itself, skipped");
    }
    if meta.len() < 16 * 1024 && mentions_launcher(&resolved) {
        return Err("a wrapper that runs claude-telemetry, skipped");
    }
    Ok(())
}

fn mentions_launcher(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        bytes.starts_with(b"#!") && bytes.windows(16).any(|w| w == b"claude-telemetry")
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn write_exe(path: &Path, body: &str) {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn skips_a_symlink_to_ourselves_and_a_wrapper_script() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("claude-telemetry");
        write_exe(&own, "\x7fELF pretend binary");
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
        }
        symlink(&own, a.join("claude")).unwrap();
        write_exe(
            &b.join("claude"),
            "#!/bin/sh\nexec claude-telemetry run -- \"$@\"\n",
        );
        write_exe(&c.join("claude"), "#!/bin/sh\necho real\n");
        let path = std::env::join_paths([&a, &b, &c]).unwrap();
        let found = find_claude("", path.to_str(), None, Some(&own)).unwrap();
        assert_eq!(found, c.join("claude"));
    }

    #[test]
    fn not_found_lists_where_it_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("claude-telemetry");
        write_exe(&own, "x");
        symlink(&own, tmp.path().join("claude")).unwrap();
        let err = find_claude("", tmp.path().to_str(), Some(tmp.path()), Some(&own)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("itself, skipped"), "{text}");
        assert!(text.contains("CLAUDE_TELEMETRY_CLAUDE__PATH"), "{text}");
    }

    #[test]
    fn configured_path_wins_and_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("my-claude");
        write_exe(&real, "#!/bin/sh\n");
        assert_eq!(
            find_claude(real.to_str().unwrap(), None, None, None).unwrap(),
            real
        );
        let missing = tmp.path().join("nope");
        assert!(find_claude(missing.to_str().unwrap(), Some("/usr/bin"), None, None).is_err());
    }
}
