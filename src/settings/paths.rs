//! Where our files live: the user config file, the data dir (store, keys, last-run record), the
//! cache dir (what was learned about the installed claude).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Resolved directories. Both can be moved by environment variables, which tests use to stay
/// out of the real home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Rebuildable knowledge (the installed claude's learned grammar); safe to delete.
    pub cache_dir: PathBuf,
}

impl Paths {
    /// `CLAUDE_TELEMETRY_CONFIG_DIR` / `CLAUDE_TELEMETRY_DATA_DIR` / `CLAUDE_TELEMETRY_CACHE_DIR`, else the platform's dirs
    /// (`~/.config/claude-telemetry`, `~/.local/share/claude-telemetry`, `~/.cache/claude-telemetry`
    /// on Linux).
    pub fn resolve(env: &BTreeMap<String, String>) -> Paths {
        let dirs = directories::ProjectDirs::from("", "", "claude-telemetry");
        let home_fallback = || {
            env.get("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        let config_dir = env
            .get("CLAUDE_TELEMETRY_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.config_dir().to_path_buf()))
            .unwrap_or_else(|| home_fallback().join(".config/claude-telemetry"));
        let data_dir = env
            .get("CLAUDE_TELEMETRY_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.data_dir().to_path_buf()))
            .unwrap_or_else(|| home_fallback().join(".local/share/claude-telemetry"));
        let cache_dir = env
            .get("CLAUDE_TELEMETRY_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.cache_dir().to_path_buf()))
            .unwrap_or_else(|| home_fallback().join(".cache/claude-telemetry"));
        Paths {
            config_dir,
            data_dir,
            cache_dir,
        }
    }

    /// The user's settings file.
    pub fn user_config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    /// The store file: `[store] path`, else `store.db` in the data directory.
    pub fn store_file(&self, configured: &str) -> PathBuf {
        if configured.is_empty() {
            self.data_dir.join("store.db")
        } else {
            PathBuf::from(configured)
        }
    }

    /// The record of the last session run, read by `doctor`.
    pub fn last_run_file(&self) -> PathBuf {
        self.data_dir.join("last-run.json")
    }
}
