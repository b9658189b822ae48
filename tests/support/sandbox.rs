//! An isolated HOME and project directory in which the real claude runs without a login.
//!
//! What Claude Code 2.1.197 needs, found by running it in an empty HOME against the fake API:
//! - `-p` (print) mode: only `ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` (any value). No
//!   `~/.claude.json` is needed; claude creates one. Tools need permission: pass
//!   `--allowedTools Bash` (claude refuses `--dangerously-skip-permissions` as root).
//! - Interactive mode shows, in order: an onboarding screen that first checks
//!   api.anthropic.com (with no network it ends with "Unable to connect to Anthropic services",
//!   exit 1) — skipped by `"hasCompletedOnboarding": true`; the folder trust dialog — skipped by
//!   `projects["<cwd>"].hasTrustDialogAccepted = true`; "Detected a custom API key … Do you want
//!   to use this API key?" (default No) — skipped by `customApiKeyResponses.approved` holding
//!   the key's last 20 characters. `lastReleaseNotesSeen` avoids the what's-new notice.
//!   The prompt is ready when the footer shows `? for shortcuts`.
//! - `DISABLE_AUTOUPDATER=1` stops the background update attempt ("Auto-updating…").

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use tempfile::TempDir;

use super::anthropic::FakeAnthropic;
use super::releases::{Release, current};
use super::tmux::Tmux;

/// The API key the sandbox hands claude; any value works against the fake API.
pub const API_KEY: &str = "sk-ant-test-dummy-key-for-fake-api";

/// The OAuth token a subscription-style sandbox hands claude (`CLAUDE_CODE_OAUTH_TOKEN`); the
/// fake API accepts any bearer token.
pub const OAUTH_TOKEN: &str = "sk-ant-oat01-test-dummy-token-for-fake-api";

/// An isolated HOME (with XDG dirs inside it) and a trusted project directory, plus the exact
/// environment to run claude (or the launcher) with. Removed on drop.
pub struct Sandbox {
    dir: TempDir,
    home: PathBuf,
    project: PathBuf,
    env: BTreeMap<String, String>,
}

impl Drop for Sandbox {
    /// A detached process the launcher started (the grammar learner) may still be making or
    /// removing its own folder under `TMPDIR`, which is this sandbox's root, while the tree is
    /// removed: a removal racing it fails ("directory not empty") and used to leave an empty
    /// sandbox in the temp dir. Removal is tried again until the root is gone (10 s at most).
    fn drop(&mut self) {
        let root = self.dir.path();
        let started = std::time::Instant::now();
        while root.exists() && started.elapsed() < std::time::Duration::from_secs(10) {
            if std::fs::remove_dir_all(root).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Sandbox {
    /// A sandbox whose claude (the test's release) talks to `api`.
    pub fn new(api: &FakeAnthropic) -> Sandbox {
        Sandbox::for_release(api, current())
    }

    /// A sandbox for `release`'s claude talking to `api` (its what's-new notice marked seen).
    pub fn for_release(api: &FakeAnthropic, release: &Release) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("ct-sandbox-")
            .tempdir()
            .expect("create a sandbox directory");
        // Canonical paths: claude keys project trust by the real path of the working directory.
        let root = dir
            .path()
            .canonicalize()
            .expect("canonicalize the sandbox directory");
        let home = root.join("home");
        let project = root.join("project");
        for d in [&home, &project, &home.join(".config"), &home.join(".cache")] {
            std::fs::create_dir_all(d).expect("create sandbox directories");
        }
        let key_tail: String = {
            let chars: Vec<char> = API_KEY.chars().collect();
            chars[chars.len().saturating_sub(20)..].iter().collect()
        };
        let mut projects = serde_json::Map::new();
        projects.insert(
            project.display().to_string(),
            json!({"hasTrustDialogAccepted": true, "allowedTools": [], "projectOnboardingSeenCount": 1}),
        );
        let claude_json = json!({
            "hasCompletedOnboarding": true,
            "lastReleaseNotesSeen": release.version,
            "numStartups": 1,
            "customApiKeyResponses": {"approved": [key_tail], "rejected": []},
            "projects": projects,
        });
        std::fs::write(
            home.join(".claude.json"),
            serde_json::to_vec_pretty(&claude_json).expect("serialize .claude.json"),
        )
        .expect("write ~/.claude.json");

        let mut env = BTreeMap::new();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        for (k, v) in [
            ("PATH", path.as_str()),
            ("HOME", &home.display().to_string()),
            (
                "XDG_CONFIG_HOME",
                &home.join(".config").display().to_string(),
            ),
            ("XDG_CACHE_HOME", &home.join(".cache").display().to_string()),
            (
                "XDG_DATA_HOME",
                &home.join(".local/share").display().to_string(),
            ),
            (
                "XDG_STATE_HOME",
                &home.join(".local/state").display().to_string(),
            ),
            ("TMPDIR", &root.display().to_string()),
            ("USER", "tester"),
            ("SHELL", "/bin/bash"),
            ("LANG", "C.UTF-8"),
            ("TERM", "xterm-256color"),
            ("ANTHROPIC_BASE_URL", &api.base_url()),
            ("ANTHROPIC_API_KEY", API_KEY),
            ("DISABLE_AUTOUPDATER", "1"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Sandbox {
            dir,
            home,
            project,
            env,
        }
    }

    /// The isolated HOME.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The trusted working directory claude runs in.
    pub fn project(&self) -> &Path {
        &self.project
    }

    /// A scratch directory beside HOME and the project, removed with the sandbox.
    pub fn scratch(&self) -> PathBuf {
        let scratch = self.dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).expect("create scratch directory");
        scratch
    }

    /// The full environment commands get (nothing else is inherited).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Sets (or replaces) one environment variable.
    pub fn set_env(&mut self, key: &str, value: impl Into<String>) -> &mut Sandbox {
        self.env.insert(key.to_string(), value.into());
        self
    }

    /// Makes claude run as a subscription (claude.ai) session instead of with an API key:
    /// `CLAUDE_CODE_OAUTH_TOKEN` set, `ANTHROPIC_API_KEY` removed. Found by running 2.1.197 and
    /// 2.1.332 against the fake API: both then send `Authorization: Bearer <token>` to
    /// `ANTHROPIC_BASE_URL`, ask for nothing else offline (2.1.332 adds a `HEAD /api/hello`
    /// probe), and read the `anthropic-ratelimit-unified-*` answer headers into the status
    /// line's `rate_limits` (an API-key session ignores them).
    pub fn use_subscription_token(&mut self) -> &mut Sandbox {
        self.remove_env("ANTHROPIC_API_KEY");
        self.set_env("CLAUDE_CODE_OAUTH_TOKEN", OAUTH_TOKEN)
    }

    /// Removes one environment variable.
    pub fn remove_env(&mut self, key: &str) -> &mut Sandbox {
        self.env.remove(key);
        self
    }

    /// A sandbox for running claude-telemetry itself: the real claude as `[claude] path`,
    /// `upstream` as the relay's upstream (`""`: local-only), exports every second, and the
    /// launcher's config dir, data dir and managed-policy path inside the sandbox, so nothing of
    /// the machine's own (`~/.config`, `/etc/claude-telemetry/policy.toml`) leaks into a test.
    pub fn for_launcher(api: &FakeAnthropic, upstream: &str) -> Sandbox {
        Sandbox::for_launcher_on(api, upstream, current())
    }

    /// [`Sandbox::for_launcher`] with `release`'s claude. The launcher's cache dir is inside the
    /// sandbox and starts with the grammar learned from that binary (as after a user's first
    /// run of it); [`Sandbox::clear_launcher_cache`] makes it a first run.
    pub fn for_launcher_on(api: &FakeAnthropic, upstream: &str, release: &Release) -> Sandbox {
        let mut sandbox = Sandbox::for_release(api, release);
        let scratch = sandbox.scratch();
        let cache = scratch.join("cache");
        release.seed_cache(&cache);
        sandbox
            .set_env(
                "CLAUDE_TELEMETRY_CLAUDE__PATH",
                release.bin().display().to_string(),
            )
            .set_env("CLAUDE_TELEMETRY_CACHE_DIR", cache.display().to_string())
            .set_env("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT", upstream)
            .set_env("CLAUDE_TELEMETRY_EXPORT__METRICS_INTERVAL_MS", "1000")
            .set_env("CLAUDE_TELEMETRY_EXPORT__LOGS_INTERVAL_MS", "1000")
            .set_env(
                "CLAUDE_TELEMETRY_DATA_DIR",
                scratch.join("data").display().to_string(),
            )
            .set_env(
                "CLAUDE_TELEMETRY_CONFIG_DIR",
                scratch.join("config").display().to_string(),
            )
            .set_env(
                "CLAUDE_TELEMETRY_POLICY_FILE",
                scratch.join("no-managed-policy.toml").display().to_string(),
            )
            // No background history import unless a test asks (tests/history.rs): what a test
            // counts is then what telemetry alone stored, and no import outlives the test.
            .set_env("CLAUDE_TELEMETRY_AUTO_IMPORT", "0");
        sandbox
    }

    /// Empties the launcher's cache dir: the next launch meets the claude binary for the first
    /// time (and starts the background learner; see `wait_for_learner`).
    pub fn clear_launcher_cache(&self) -> PathBuf {
        let cache = PathBuf::from(
            self.env
                .get("CLAUDE_TELEMETRY_CACHE_DIR")
                .expect("a launcher sandbox"),
        );
        let _ = std::fs::remove_dir_all(&cache);
        cache
    }

    /// Makes claude export its telemetry straight to `endpoint` with `protocol`
    /// (`grpc`, `http/protobuf`, `http/json`), flushing every second.
    pub fn export_telemetry_to(&mut self, endpoint: &str, protocol: &str) -> &mut Sandbox {
        for (k, v) in [
            ("CLAUDE_CODE_ENABLE_TELEMETRY", "1"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_LOGS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_LOGS_EXPORT_INTERVAL", "1000"),
        ] {
            self.set_env(k, v);
        }
        self
    }

    /// Puts an executable named `name` on the front of PATH, as a symlink to `target` (e.g.
    /// `claude` → the real binary, so the launcher finds it through PATH).
    pub fn put_on_path(&mut self, name: &str, target: &Path) -> &mut Sandbox {
        let bin = self.dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("create sandbox bin directory");
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).expect("symlink into sandbox bin");
        let path = self.env.get("PATH").cloned().unwrap_or_default();
        let bin = bin.display().to_string();
        if !path.split(':').any(|p| p == bin) {
            self.set_env("PATH", format!("{bin}:{path}"));
        }
        self
    }

    /// Writes `~/.claude/settings.json` (e.g. an `env` block that would divert telemetry).
    pub fn write_user_settings(&self, settings: &serde_json::Value) {
        let dir = self.home.join(".claude");
        std::fs::create_dir_all(&dir).expect("create ~/.claude");
        std::fs::write(
            dir.join("settings.json"),
            serde_json::to_vec_pretty(settings).expect("serialize settings"),
        )
        .expect("write ~/.claude/settings.json");
    }

    /// A command for `program` with exactly the sandbox environment, run in the project dir.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(&self.env)
            .current_dir(&self.project);
        command
    }

    /// Runs `program args…` in a real terminal (tmux) with the sandbox environment.
    pub fn tmux(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Tmux {
        Tmux::spawn(
            program.as_ref(),
            args,
            &self.env,
            &self.project,
            &self.dir.path().join("tmux"),
        )
    }
}
