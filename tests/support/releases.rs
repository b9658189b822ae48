//! The compatibility matrix: the Claude Code releases the whole-program tests run against, and
//! the learned grammar every launcher sandbox starts with.
//!
//! `src/claude/compat.rs` (`TESTED_RELEASES`) and `tests/install-tools.sh` (`CLAUDE_VERSIONS`)
//! name the same releases; `matrix_lists_the_releases_the_launcher_names` (tests/compat.rs)
//! checks that they agree.
//!
//! A test that must hold on every release is written once, without `#[test]`, and listed in
//! [`on_each_release!`], which makes one test per release named after it
//! (`on_claude_2_1_332::name`); inside, [`current`] is that release, and `claude_bin()`,
//! `Sandbox::new` and `Sandbox::for_launcher` follow it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One Claude Code release of the matrix.
#[derive(Debug)]
pub struct Release {
    /// `claude --version`'s first word.
    pub version: &'static str,
    /// The variable (set by tests/install-tools.sh) naming its native binary.
    pub env: &'static str,
    /// Its index in [`RELEASES`] (for per-release caches).
    index: usize,
}

/// The oldest supported release.
pub const OLDEST: Release = Release {
    version: "2.1.197",
    env: super::CLAUDE_ENV,
    index: 0,
};
/// The newest release checked.
pub const LATEST: Release = Release {
    version: "2.1.332",
    env: "CLAUDE_TELEMETRY_TEST_CLAUDE_LATEST",
    index: 1,
};
/// Every release, oldest first.
pub const RELEASES: [&Release; 2] = [&OLDEST, &LATEST];

impl Release {
    /// Its binary; panics (never skips) when the variable is missing, as [`super::claude_bin`].
    pub fn bin(&self) -> PathBuf {
        super::tool_from_env(self.env, &format!("Claude Code {}", self.version))
    }

    /// A directory holding the launcher's grammar cache for this release, learned once per
    /// build of the launcher (by the launcher's own background learner, run in the foreground),
    /// so that sandboxes start warm and no test leaves a learner running behind it.
    pub fn learned_cache(&self) -> PathBuf {
        static LEARNED: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
        LEARNED[self.index]
            .get_or_init(|| learn(&self.bin(), self.version))
            .clone()
    }

    /// Copies the learned grammar into `cache_dir` (a sandbox's `CLAUDE_TELEMETRY_CACHE_DIR`).
    pub fn seed_cache(&self, cache_dir: &Path) {
        let from = self.learned_cache().join("claude-grammar");
        let to = cache_dir.join("claude-grammar");
        std::fs::create_dir_all(&to).expect("create the sandbox's grammar cache");
        for entry in std::fs::read_dir(&from).expect("read the learned grammar") {
            let entry = entry.expect("read the learned grammar");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("seed the grammar");
        }
    }
}

/// Learns `claude`'s grammar with the launcher's learner into a directory under cargo's
/// per-target temp dir, keyed by the release and the launcher build (so a rebuilt launcher
/// relearns). A finished directory is renamed into place, so a reader never sees half of one.
fn learn(claude: &Path, version: &str) -> PathBuf {
    let launcher = super::launcher_bin();
    let stamp = std::fs::metadata(&launcher)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("claude-grammar-seed");
    let done = root.join(format!("{version}-{stamp}"));
    if done.join("claude-grammar").is_dir() {
        return done;
    }
    std::fs::create_dir_all(&root).expect("create the grammar seed dir");
    let work = tempfile::Builder::new()
        .prefix("learning-")
        .tempdir_in(&root)
        .expect("create a grammar work dir");
    let status = std::process::Command::new(&launcher)
        .env("CLAUDE_TELEMETRY_LEARN_CLAUDE", claude)
        .env("CLAUDE_TELEMETRY_LEARN_CACHE_DIR", work.path())
        .status()
        .expect("run the launcher's grammar learner");
    assert!(
        status.success(),
        "the launcher could not learn the grammar of {} ({status})",
        claude.display()
    );
    let work = work.keep();
    if std::fs::rename(&work, &done).is_err() {
        // Another process finished first; its copy is as good.
        let _ = std::fs::remove_dir_all(&work);
    }
    done
}

thread_local! {
    static CURRENT: std::cell::Cell<&'static Release> = const { std::cell::Cell::new(&OLDEST) };
}

/// The release the running test is on (the oldest unless [`run_on`] says otherwise): what
/// [`super::claude_bin`] and the launcher sandboxes use.
pub fn current() -> &'static Release {
    CURRENT.with(|c| c.get())
}

/// Runs `test` with `release` as the current release (each test runs on its own thread).
pub fn run_on(release: &'static Release, test: fn()) {
    CURRENT.with(|c| c.set(release));
    test();
}

/// Makes every listed test function (written without `#[test]`) one test per release of the
/// matrix, named after it: `on_claude_2_1_197::name`, `on_claude_2_1_332::name`.
///
/// ```text
/// fn print_mode_reaches_the_upstream() { … claude_bin() … Sandbox::for_launcher(…) … }
/// on_each_release!(print_mode_reaches_the_upstream, …);
/// ```
#[macro_export]
macro_rules! on_each_release {
    ($($test:ident),* $(,)?) => {
        mod on_claude_2_1_197 {
            $(
                #[test]
                fn $test() {
                    $crate::support::releases::run_on(&$crate::support::OLDEST, super::$test)
                }
            )*
        }
        mod on_claude_2_1_332 {
            $(
                #[test]
                fn $test() {
                    $crate::support::releases::run_on(&$crate::support::LATEST, super::$test)
                }
            )*
        }
    };
}
