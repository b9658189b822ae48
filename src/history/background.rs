//! The launcher's background import: `claude-telemetry import --quiet`, started detached at
//! every launch (own session, lowest priority, no terminal), like the grammar learner, so
//! claude never waits for it and a long first import outlives a short session.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set to `0` (or `false`) to keep the launcher from importing transcripts in the background
/// at launch (tests that count what telemetry alone stored set it).
pub const AUTO_IMPORT_ENV: &str = "CLAUDE_TELEMETRY_AUTO_IMPORT";

/// A background import's lock older than this is left by a process that died: taken over.
const STALE_LOCK: Duration = Duration::from_secs(10 * 60);

/// Starts `claude-telemetry import --quiet` detached (own session, lowest priority, no
/// terminal), unless one is already running or [`AUTO_IMPORT_ENV`] turns it off. Returns at
/// once: the session never waits for it. Best effort: any failure only skips this import.
pub fn start_in_background(data_dir: &Path) {
    if std::env::var(AUTO_IMPORT_ENV).is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("false")) {
        return;
    }
    let lock = data_dir.join("import.lock");
    if !take_lock(&lock) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        let _ = std::fs::remove_file(&lock);
        return;
    };
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(exe);
    command
        .args(["import", "--quiet"])
        .env(LOCK_ENV, &lock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, setpriority) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            Ok(())
        });
    }
    match command.spawn() {
        // Reaped by nobody: the child outlives us; init adopts it when we exit.
        Ok(child) => drop(child),
        Err(_) => {
            let _ = std::fs::remove_file(&lock);
        }
    }
}

/// The lock file a background import removes when it ends.
const LOCK_ENV: &str = "CLAUDE_TELEMETRY_IMPORT_LOCK";

/// Removes the background import's lock (called by the import process itself at its end).
pub fn release_background_lock() {
    if let Some(lock) = std::env::var_os(LOCK_ENV) {
        let _ = std::fs::remove_file(lock);
    }
}

fn take_lock(lock: &Path) -> bool {
    if let Some(dir) = lock.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(meta) = std::fs::metadata(lock) {
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age < STALE_LOCK);
        if fresh {
            return false;
        }
        let _ = std::fs::remove_file(lock);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(lock)
        .is_ok()
}
