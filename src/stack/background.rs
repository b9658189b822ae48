//! The run path's background `docker compose up`: what became of it, told truthfully.
//!
//! A session never waits for the stack, so the start runs detached and usually outlives the
//! launcher. Its output goes to `compose-up.log` and a small shell wrapper writes its exit
//! status to `compose-up.exit` when it ends; `compose-up.json` remembers how many starts in a
//! row failed. From these the next session (and `status`, `doctor`, `up`) can say in one line
//! why the stack is not up, and a failed start is not retried on every launch but after a
//! back-off that doubles with each failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// First wait after a failed background start; doubled per further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// The longest wait between two background starts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// How long a start that is still running, or that has just created the containers, is
/// given before it is judged: another session leaves it alone meanwhile.
pub const START_GRACE: Duration = Duration::from_secs(60);

/// The files of one stack data dir that record the background start.
#[derive(Debug, Clone)]
pub struct StartFiles {
    /// `docker compose up` output.
    pub log: PathBuf,
    /// Its exit status, written by the wrapper when it ends.
    pub exit: PathBuf,
    /// [`StartRecord`].
    pub record: PathBuf,
}

impl StartFiles {
    /// The files in the stack's data dir.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            log: dir.join("compose-up.log"),
            exit: dir.join("compose-up.exit"),
            record: dir.join("compose-up.json"),
        }
    }

    /// Forgets every start (after `down`, `clean`, or once the stack answers).
    pub fn forget(&self) {
        for f in [&self.log, &self.exit, &self.record] {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Notes that a start is being spawned now, carrying the failures before it.
    pub fn note_spawn(&self, failures_before: u32, now: SystemTime) -> std::io::Result<()> {
        let _ = std::fs::remove_file(&self.exit);
        let record = StartRecord {
            spawned_at: unix_secs(now),
            failures_before,
        };
        let text = serde_json::to_string(&record).map_err(std::io::Error::other)?;
        let tmp = self.record.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, &self.record)
    }

    /// Records a start that ran in the foreground (`up`) and failed, as if it had been a
    /// background one: the next sessions back off and name its cause. Best effort: a data dir
    /// that cannot be written only loses the record.
    pub fn record_failure(&self, output: &str, code: i32, now: SystemTime) {
        let failures_before = match self.outcome(now) {
            StartOutcome::Failed(f) => f.failures,
            _ => 0,
        };
        let _ = self.note_spawn(failures_before, now);
        let _ = std::fs::write(&self.log, output);
        let _ = std::fs::write(&self.exit, format!("{code}\n"));
    }

    /// What the last background start came to, judged at `now`.
    pub fn outcome(&self, now: SystemTime) -> StartOutcome {
        let record: Option<StartRecord> = std::fs::read_to_string(&self.record)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let Some(record) = record else {
            // No start of ours on record (or one from an older version, with a log only).
            return StartOutcome::None;
        };
        let spawned = UNIX_EPOCH + Duration::from_secs(record.spawned_at);
        let age = now.duration_since(spawned).unwrap_or_default();
        let exit = std::fs::read_to_string(&self.exit)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        let finished = std::fs::metadata(&self.exit)
            .and_then(|m| m.modified())
            .unwrap_or(spawned);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        match exit {
            None if age < START_GRACE => StartOutcome::Running,
            Some(0) if now.duration_since(finished).unwrap_or_default() < START_GRACE => {
                StartOutcome::Running
            }
            _ => {
                let failures = record.failures_before.saturating_add(1);
                let cause = match exit {
                    None => StartCause::Other(
                        "`docker compose up` has not finished after a minute".into(),
                    ),
                    Some(0) => StartCause::NotAnswering,
                    Some(_) => classify(&log),
                };
                StartOutcome::Failed(Failure {
                    cause,
                    failures,
                    next_try: finished + backoff(failures),
                    log: self.log.clone(),
                })
            }
        }
    }
}

/// What [`StartFiles`] keeps between sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StartRecord {
    /// When the start was spawned (seconds since the epoch).
    spawned_at: u64,
    /// How many starts in a row failed before this one.
    failures_before: u32,
}

/// The last background start, as far as the files tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// No start on record.
    None,
    /// Still running, or just done and the services are coming up.
    Running,
    /// It failed (or the stack never answered after it).
    Failed(Failure),
}

/// A failed background start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why, from its log.
    pub cause: StartCause,
    /// Starts in a row that failed, this one included.
    pub failures: u32,
    /// No background start before this time.
    pub next_try: SystemTime,
    /// The start's full output.
    pub log: PathBuf,
}

impl Failure {
    /// Whether the back-off is still running at `now`.
    pub fn backing_off(&self, now: SystemTime) -> bool {
        now < self.next_try
    }

    /// `HH:MM:SS UTC (in N min)`, for messages.
    pub fn next_try_text(&self, now: SystemTime) -> String {
        let secs = unix_secs(self.next_try);
        let left = self.next_try.duration_since(now).unwrap_or_default();
        format!(
            "{:02}:{:02}:{:02} UTC (in {} min)",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            left.as_secs().div_ceil(60)
        )
    }
}

/// Why a start failed, with the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCause {
    /// Images are missing locally and their registry cannot be reached.
    RegistryUnreachable,
    /// The registry answered that an image does not exist or may not be pulled.
    ImageNotFound(String),
    /// A host port of the stack is taken.
    PortInUse(String),
    /// compose succeeded but the collector never answered its readiness endpoint.
    NotAnswering,
    /// Anything else: the last line of compose's output.
    Other(String),
}

impl StartCause {
    /// The cause and the way out, in one line.
    pub fn describe(&self) -> String {
        match self {
            StartCause::RegistryUnreachable => {
                "images cannot be pulled: registry unreachable — set \
                 [stack.images] to local images, or `upstream.enabled = false`"
                    .to_string()
            }
            StartCause::ImageNotFound(line) => format!(
                "an image cannot be pulled ({line}) — set [stack.images] to images that exist, \
                 or `upstream.enabled = false`"
            ),
            StartCause::PortInUse(line) => format!(
                "a port of the stack is already in use ({line}) — free it or set [stack.ports]"
            ),
            StartCause::NotAnswering => "the containers were started but the collector does not \
                 answer — see `claude-telemetry status` and `claude-telemetry logs otel-collector`"
                .to_string(),
            StartCause::Other(line) => {
                format!("`docker compose up` failed: {line} — `claude-telemetry up` shows why")
            }
        }
    }
}

/// Reads compose's output for the reason it failed.
pub fn classify(log: &str) -> StartCause {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let lower = log.to_lowercase();
    let find = |needles: &[&str]| {
        lines
            .iter()
            .rev()
            .find(|l| {
                let l = l.to_lowercase();
                needles.iter().any(|n| l.contains(n))
            })
            .map(|l| shorten(l))
    };
    if let Some(line) = find(&["port is already allocated", "address already in use"]) {
        return StartCause::PortInUse(line);
    }
    if let Some(line) = find(&[
        "pull access denied",
        "manifest unknown",
        "repository does not exist",
        ": not found",
    ]) {
        return StartCause::ImageNotFound(line);
    }
    let pulling = lower.contains("pull") || lower.contains("/v2/");
    let network = [
        "dial tcp",
        "no such host",
        "i/o timeout",
        "connection refused",
        "network is unreachable",
        "tls handshake timeout",
        "server misbehaving",
        "temporary failure in name resolution",
    ]
    .iter()
    .any(|n| lower.contains(n));
    if pulling && network {
        return StartCause::RegistryUnreachable;
    }
    StartCause::Other(
        lines
            .last()
            .map_or_else(|| "(no output)".to_string(), |l| shorten(l)),
    )
}

fn shorten(line: &str) -> String {
    const MAX: usize = 160;
    let line = line.trim();
    if line.chars().count() <= MAX {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX).collect();
    format!("{cut}…")
}

/// The wait after `failures` failed starts in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_REGISTRY: &str = " grafana Pulling \n otel-collector Pulling \n grafana Error Get \
        \"https://registry.invalid/v2/\": dial tcp: lookup registry.invalid on 10.0.0.53:53: no such host\n \
        otel-collector  Interrupted\nError response from daemon: Get \"https://registry.invalid/v2/\": \
        dial tcp: lookup registry.invalid on 10.0.0.53:53: no such host\n";

    #[test]
    fn an_unreachable_registry_is_named_with_the_way_out() {
        let cause = classify(NO_REGISTRY);
        assert_eq!(cause, StartCause::RegistryUnreachable);
        let text = cause.describe();
        assert!(text.contains("registry unreachable"), "{text}");
        assert!(text.contains("[stack.images]"), "{text}");
        assert!(text.contains("upstream.enabled = false"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn a_taken_port_and_an_unknown_failure_are_told_apart() {
        let port = classify(
            "Error response from daemon: driver failed programming external connectivity: \
             Bind for 127.0.0.1:4317 failed: port is already allocated\n",
        );
        assert!(matches!(port, StartCause::PortInUse(_)), "{port:?}");
        let other = classify("something odd\nunexpected end\n");
        assert_eq!(other, StartCause::Other("unexpected end".into()));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(3), FIRST_BACKOFF * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_failed_start_backs_off_and_a_running_one_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = StartFiles::in_dir(dir.path());
        let now = SystemTime::now();
        assert_eq!(files.outcome(now), StartOutcome::None);
        files.note_spawn(0, now).expect("note");
        assert_eq!(files.outcome(now), StartOutcome::Running);
        std::fs::write(&files.log, NO_REGISTRY).expect("log");
        std::fs::write(&files.exit, "1\n").expect("exit");
        let StartOutcome::Failed(failure) = files.outcome(SystemTime::now()) else {
            panic!("not failed: {:?}", files.outcome(now));
        };
        assert_eq!(failure.cause, StartCause::RegistryUnreachable);
        assert_eq!(failure.failures, 1);
        assert!(failure.backing_off(SystemTime::now()));
        assert!(!failure.backing_off(SystemTime::now() + FIRST_BACKOFF + START_GRACE));
        // The next start carries the count: its failure waits twice as long.
        files.note_spawn(failure.failures, now).expect("note");
        assert!(!files.exit.exists(), "a new start clears the old status");
        std::fs::write(&files.exit, "1\n").expect("exit");
        let StartOutcome::Failed(second) = files.outcome(SystemTime::now()) else {
            panic!("not failed");
        };
        assert_eq!(second.failures, 2);
        files.forget();
        assert_eq!(files.outcome(now), StartOutcome::None);
    }
}
