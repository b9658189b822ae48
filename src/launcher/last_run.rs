//! The record of the last session run, so `doctor` can say "your last session sent nothing"
//! long after the terminal that showed the warning is gone.

use crate::relay::DrainReport;
use crate::relay::stats::{RelayStats, Shed};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the last session's telemetry did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub finished_unix: u64,
    pub claude_path: String,
    pub claude_version: Option<String>,
    pub metric_points: u64,
    pub log_records: u64,
    pub delivered_requests: u64,
    pub undelivered_requests: u64,
    /// Refused by the upstream for good (e.g. HTTP 400): dropped, not retried.
    #[serde(default)]
    pub rejected_requests: u64,
    /// Kept nowhere (the store failed): refused with a retryable error, never acknowledged.
    #[serde(default, alias = "lost_requests")]
    pub refused_requests: u64,
    /// Items dropped because even alone they were too large for the upstream.
    #[serde(default)]
    pub dropped_too_large_items: u64,
    /// The store failed during the run (its error); requests went on from memory.
    #[serde(default)]
    pub store_failure: Option<String>,
    /// What the receivers' bounds turned away, by reason.
    #[serde(default)]
    pub shed: Shed,
    pub last_error: Option<String>,
    /// Unknown attribute keys whose text the privacy policy withheld (names only), for
    /// `doctor` to list with how to allow them.
    #[serde(default)]
    pub withheld_keys: Vec<String>,
    /// The session ran with claude's exporters switched off, and why (no relay, or a relay
    /// that could keep nothing): `doctor` says so instead of "sent no telemetry".
    #[serde(default)]
    pub telemetry_off: Option<String>,
}

/// `HH:MM:SS UTC` of a Unix time, for one-line messages.
pub fn clock_time(unix_secs: u64) -> String {
    let s = unix_secs % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s % 3600 / 60, s % 60)
}

impl LastRun {
    /// Builds the record from the relay's counters.
    pub fn from_stats(program: &Path, stats: &RelayStats, drain: &DrainReport) -> LastRun {
        LastRun {
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            claude_path: program.display().to_string(),
            claude_version: None,
            metric_points: RelayStats::get(&stats.received_metric_points),
            log_records: RelayStats::get(&stats.received_log_records),
            delivered_requests: RelayStats::get(&stats.delivered_requests),
            undelivered_requests: drain.undelivered_requests,
            rejected_requests: RelayStats::get(&stats.rejected_requests),
            refused_requests: RelayStats::get(&stats.refused_requests),
            dropped_too_large_items: RelayStats::get(&stats.dropped_too_large_items),
            store_failure: drain.store_failure.as_ref().map(|f| f.error.clone()),
            shed: stats.shed.snapshot(),
            last_error: stats.last_error.lock().ok().and_then(|e| e.clone()),
            withheld_keys: stats.withheld(),
            telemetry_off: None,
        }
    }

    /// The record of a session whose telemetry was switched off, with why.
    pub fn telemetry_off(program: &Path, why: String) -> LastRun {
        let mut record =
            LastRun::from_stats(program, &RelayStats::default(), &DrainReport::default());
        record.telemetry_off = Some(why);
        record
    }

    /// Writes the record (creating the data dir).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// Reads the record, if there is one.
    pub fn load(path: &Path) -> Option<LastRun> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_telemetry_off_and_unused_connections_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-run.json");
        std::fs::write(
            &path,
            r#"{"finished_unix": 1, "claude_path": "/bin/claude", "claude_version": null,
                "metric_points": 3, "log_records": 4, "delivered_requests": 2,
                "undelivered_requests": 0, "last_error": null,
                "shed": {"connections": 0, "busy": 0, "slow_bodies": 0,
                         "stalled_connections": 1, "too_large": 0}}"#,
        )
        .unwrap();
        let record = LastRun::load(&path).expect("an older record loads");
        assert_eq!(record.telemetry_off, None);
        assert_eq!(record.shed.stalled_connections, 1);
        assert_eq!(record.shed.unused_connections, 0);
    }

    #[test]
    fn a_session_with_telemetry_off_is_recorded_with_why_and_nothing_received() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last-run.json");
        LastRun::telemetry_off(Path::new("/bin/claude"), "no store and no upstream".into())
            .save(&path)
            .unwrap();
        let record = LastRun::load(&path).unwrap();
        assert_eq!(
            record.telemetry_off.as_deref(),
            Some("no store and no upstream")
        );
        assert_eq!((record.metric_points, record.log_records), (0, 0));
    }
}
